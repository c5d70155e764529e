//! TLS bootstrap: mints, reuses or verifies the CA, server and client
//! certificates that dockerd and the job containers use.
//!
//! # Layout
//! Exactly the stock docker:dind one (`dockerd-entrypoint.sh`), so job configs
//! that mount `$DOCKER_TLS_CERTDIR/client` keep working:
//!
//! ```text
//! $DIR/ca/{cert,key}.pem            the CA; key 0600
//! $DIR/server/{ca,cert,key}.pem     dockerd's --tlscacert/--tlscert/--tlskey; key 0600
//! $DIR/client/{ca,cert,key}.pem     for job containers; key 0644, read from a shared volume
//! ```
//!
//! Certificates are 0644, directories 0755; `server/ca.pem` and `client/ca.pem`
//! are byte copies of `ca/cert.pem`.
//!
//! # What [`ensure`] decides
//! It holds an exclusive `flock` on `$DIR` itself (not on a lock file, so a
//! read-only user-managed PKI still locks without writing), which makes a second
//! supervisor on the same volume wait and then reuse what the first one minted.
//! - `ca/key.pem` exists (ours, stock docker:dind's, or a CA the user dropped in):
//!   every existing key is kept. A certificate is (re-)issued only when it is
//!   missing, expires within [`RENEW_BEFORE`], its CA certificate was re-issued,
//!   or (server only) its SAN set differs from the wanted one. A missing or
//!   expiring CA certificate is re-issued from the same CA key.
//! - no `ca/key.pem` but any of `server/{ca,cert,key}.pem` or `ca/cert.pem`: a
//!   user-managed PKI. The server set is verified (parses, key matches, chains
//!   to `server/ca.pem`, not expired) and used untouched; nothing is written.
//! - otherwise everything is minted.
//!
//! Everything is read and checked before the first write, so bad input (corrupt
//! PEM, mismatched key, foreign signature) fails with one line naming the file
//! and the fix, and leaves the directory as it was.
//!
//! # Writes
//! Each file goes to `.NAME.tmp-PID` beside its target, is fsync'd and renamed
//! into place; temporaries are removed on every error path, and stale ones from a
//! crash are swept on the next run. `ca/key.pem` is always the first file
//! written, so a crash can never leave a half-minted directory that looks like a
//! user-managed PKI. Then `ca/cert.pem`, `server/`, and `client/` last.
//!
//! Every new file is written and synced before the first rename, so a
//! read-only volume, a full disk or a denied permission stops the run with
//! one line naming the path and the fix (exit 78) and changes nothing a
//! reader sees. A rename that fails midway (or a crash) can leave a set
//! part old, part new, never one the next run cannot complete: in a leaf
//! set the key, the only file that can make the others wrong, is renamed
//! last. Every change goes through [`Disk`] (`disk.rs`), whose tests fail
//! each one in turn (`tests/faults.rs`).
//!
//! ## The client/ protocol
//! Job containers poll `client/` on a shared volume while a supervisor may be
//! re-issuing it, so `client/key.pem` doubles as the commit marker:
//! 1. all new client files (the key too, with its unchanged bytes if reused) are
//!    written and fsync'd under temporary names;
//! 2. `client/key.pem` is unlinked;
//! 3. `ca.pem` then `cert.pem` are renamed into place;
//! 4. the key is renamed into place, always as a new inode.
//!
//! So whenever all three files exist they are one matching, final set, and a
//! reader that sees the same `key.pem` inode before and after reading the other
//! two has read one set. The price: a crash between steps 2 and 4 loses the
//! client key, and the next run mints a new one (clients get a new set anyway).

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use time::OffsetDateTime;

mod disk;
mod error;
mod install;
mod issue;
mod keys;
mod paths;
mod plan;
mod read;
mod san;
mod user_managed;
use disk::*;
pub use error::*;
use install::*;
use issue::*;
pub use keys::*;
pub use paths::*;
use plan::*;
use read::*;
pub use san::*;
use user_managed::*;

const DAY: u64 = 24 * 60 * 60;

/// Certificates closer than this to their end are re-issued at startup; a
/// service container rarely lives longer than a day, so this is ample margin.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * DAY);

/// Job containers' clocks may lag the host's by a little; a certificate that
/// is "not yet valid" fails hard, so every certificate starts an hour early.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

const CA_CN: &str = "dind-supervisor CA";

const SERVER_CN: &str = "dind-supervisor server";

const CLIENT_CN: &str = "docker-client";

const KEY_MODE: u32 = 0o600;

/// Job containers read the client key from a shared volume, often as another
/// user, exactly as with docker:dind.
const CLIENT_KEY_MODE: u32 = 0o644;

const CERT_MODE: u32 = 0o644;

const DIR_MODE: u32 = 0o755;

/// What [`ensure`] should produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    /// `$DOCKER_TLS_CERTDIR`.
    pub dir: PathBuf,
    /// Type of keys generated now; existing keys are kept whatever their type.
    pub key_type: KeyType,
    /// Lifetime of every certificate issued now, the CA's included (docker:dind
    /// uses 825 days). Values up to [`RENEW_BEFORE`] make every start re-issue
    /// everything.
    pub validity: Duration,
    /// Wanted server SANs, usually [`default_sans`]; compared as a set.
    pub sans: Vec<San>,
}

/// What [`ensure`] did with one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// New key and certificate.
    Minted,
    /// Left as it was.
    Reused,
    /// New certificate for the existing key, and why: `"missing"`,
    /// `"expiring"`, `"SANs changed"` or `"CA re-issued"`.
    Reissued(&'static str),
    /// Part of a user-managed PKI: verified, never written.
    UserManaged,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Minted => f.write_str("minted"),
            Action::Reused => f.write_str("reused"),
            Action::Reissued(why) => write!(f, "re-issued ({why})"),
            Action::UserManaged => f.write_str("user-managed"),
        }
    }
}

/// A certificate as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub path: PathBuf,
    /// SHA-256 of the DER, as `openssl x509 -fingerprint -sha256` prints it.
    pub sha256_fingerprint: String,
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    fn new(path: PathBuf, der: &[u8], fix: &str) -> Result<Self, CertError> {
        let not_after = parse_x509(der)
            .map_err(|source| malformed(&path, "certificate", fix.into(), source))?
            .validity()
            .not_after
            .to_datetime();
        Ok(CertInfo {
            path,
            sha256_fingerprint: fingerprint(der),
            not_after,
        })
    }
}

/// The outcome of [`ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub ca: Action,
    pub server: Action,
    pub client: Action,
    /// Wall time including the wait for the lock.
    pub elapsed: Duration,
    pub server_cert: CertInfo,
    /// `ca/cert.pem`, or for a user-managed PKI the `server/ca.pem` certificate
    /// the server chain ends in.
    pub ca_cert: CertInfo,
}

/// Makes `spec.dir` hold a valid CA, server and client set, minting or
/// re-issuing only what is needed (see the module docs). Blocks on the
/// directory lock while another supervisor holds it.
#[tracing::instrument(skip_all, fields(dir = %spec.dir.display()))]
pub fn ensure(spec: &CertSpec) -> Result<Report, CertError> {
    ensure_on(spec, &Real)
}

/// [`ensure`], every change made through `disk`.
fn ensure_on(spec: &CertSpec, disk: &dyn Disk) -> Result<Report, CertError> {
    let started = Instant::now();
    let paths = Paths::new(&spec.dir);
    create_root(disk, &spec.dir)?;
    let _lock = lock(&spec.dir)?;
    let now = OffsetDateTime::now_utc();
    let mut report = if !exists(&paths.ca_key()) && looks_user_managed(&paths) {
        verify_user_managed(&paths, now)?
    } else {
        Managed::plan(spec, &paths, now)?.install(&paths, disk)?
    };
    report.elapsed = started.elapsed();
    tracing::debug!(
        ca = %report.ca,
        server = %report.server,
        client = %report.client,
        ca_fingerprint = %report.ca_cert.sha256_fingerprint,
        elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
        "TLS certificates ready"
    );
    Ok(report)
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn create_root(disk: &dyn Disk, dir: &Path) -> Result<(), CertError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(CertError::CreateDir {
            path: dir.to_owned(),
            source: io::Error::from_raw_os_error(Errno::ENOTDIR as i32),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(disk, dir, true),
        Err(source) => Err(CertError::CreateDir {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Locks the directory itself: works on a read-only user-managed PKI, and
/// leaves no lock file behind in the docker:dind layout.
fn lock(dir: &Path) -> Result<Flock<File>, CertError> {
    let lock_err = |source| CertError::Lock {
        path: dir.to_owned(),
        source,
    };
    let mut file = File::open(dir).map_err(lock_err)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            // PID 1 takes signals while it waits for another supervisor.
            Err((f, Errno::EINTR)) => file = f,
            Err((_, errno)) => return Err(lock_err(errno.into())),
        }
    }
}

#[cfg(test)]
mod tests;
