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

use crate::env::DOCKER_TLS_SAN;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::{PEMError, X509Error};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

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

/// The algorithm of newly generated keys; existing keys are kept whatever
/// their type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    #[value(name = "rsa-2048")]
    Rsa2048,
    #[value(name = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::EcdsaP256 => None,
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa4096 => Some(4096),
        }
    }

    fn generate(self) -> Result<KeyPair, CertError> {
        let keygen = |source: Box<dyn std::error::Error + Send + Sync>| CertError::Keygen {
            key_type: self,
            source,
        };
        match self.rsa_bits() {
            None => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| keygen(e.into()))
            }
            Some(bits) => {
                // ring signs RSA but cannot generate RSA keys: generate with
                // `rsa`, then load the PKCS#8 into ring so signing goes there.
                use rsa::pkcs8::EncodePrivateKey;
                let mut rng = RingRng::new()?;
                let key = rsa::RsaPrivateKey::new(&mut rng, bits).map_err(|e| keygen(e.into()))?;
                let der = key.to_pkcs8_der().map_err(|e| keygen(e.into()))?;
                KeyPair::try_from(der.as_bytes()).map_err(|e| keygen(e.into()))
            }
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        })
    }
}

/// `rsa` wants a `rand_core` RNG; ring's `SystemRandom` is the kernel's
/// `getrandom`, which is what we want anyway.
struct RingRng(SystemRandom);

impl RingRng {
    /// Probes the source once, so `fill_bytes` (which cannot return an error)
    /// only panics if the kernel stops answering mid-generation.
    fn new() -> Result<Self, CertError> {
        let rng = SystemRandom::new();
        rng.fill(&mut [0u8; 1]).map_err(|_| CertError::Entropy)?;
        Ok(RingRng(rng))
    }
}

impl rsa::rand_core::RngCore for RingRng {
    fn next_u32(&mut self) -> u32 {
        rsa::rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rsa::rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(e) = self.try_fill_bytes(dest) {
            panic!("kernel random source failed after a successful probe: {e}");
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.0
            .fill(dest)
            .map_err(|_| rsa::rand_core::Error::new(io::Error::other("getrandom failed")))
    }
}

impl rsa::rand_core::CryptoRng for RingRng {}

/// A subject alternative name of the server certificate.
///
/// DNS names are kept lowercase, so sets compare as DNS does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    fn to_rcgen(&self) -> Result<SanType, rcgen::Error> {
        Ok(match self {
            San::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }

    /// Lowercases DNS names, so a set built from any source compares as DNS does.
    fn normalized(&self) -> San {
        match self {
            San::Dns(name) => San::Dns(name.to_ascii_lowercase()),
            San::Ip(ip) => San::Ip(*ip),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// Parses `DOCKER_TLS_SAN` in OpenSSL syntax: `DNS:dind,IP:10.0.0.5`, entries
/// separated by commas and/or whitespace, prefixes case-insensitive.
pub fn parse_openssl_sans(s: &str) -> Result<Vec<San>, CertError> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let bad = |reason| CertError::BadSan {
                entry: entry.to_owned(),
                reason,
            };
            let (kind, value) = entry
                .split_once(':')
                .ok_or_else(|| bad("missing DNS: or IP: prefix"))?;
            if kind.eq_ignore_ascii_case("DNS") {
                if is_dns_name(value) {
                    Ok(San::Dns(value.to_ascii_lowercase()))
                } else {
                    Err(bad("not a valid DNS name"))
                }
            } else if kind.eq_ignore_ascii_case("IP") {
                // Accept the bracketed form people paste from URLs, `IP:[::1]`.
                let value = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .unwrap_or(value);
                IpAddr::from_str(value)
                    .map(San::Ip)
                    .map_err(|_| bad("not a valid IP address"))
            } else {
                Err(bad("unsupported prefix"))
            }
        })
        .collect()
}

/// A hostname a certificate can carry: LDH labels (underscores tolerated, as
/// container names use them), a leading `*` label allowed, at most 253 bytes.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').enumerate().all(|(i, label)| {
            (i == 0 && label == "*")
                || (!label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        })
}

/// The server SANs docker:dind would use: `docker`, `localhost`, the hostname,
/// its fully qualified form from `/etc/hosts`, every interface address (and
/// both loopbacks), then `extra`; sorted and deduplicated.
///
/// IPv6 link-local addresses are left out: a SAN cannot carry their zone, so no
/// client can name them, and they only cause needless re-issues.
///
/// Reads no NSS: the binary is static, so `gethostname`, `/etc/hosts` and
/// `getifaddrs` are all it has.
pub fn default_sans(extra: &[San]) -> Vec<San> {
    let hostname = match nix::unistd::gethostname() {
        Ok(name) => name.into_string().ok(),
        Err(error) => {
            tracing::warn!(%error, "gethostname failed; leaving the hostname out of the server SANs");
            None
        }
    };
    let hosts = match fs::read_to_string("/etc/hosts") {
        Ok(hosts) => hosts,
        Err(error) => {
            tracing::debug!(%error, "no /etc/hosts; no fully qualified name in the server SANs");
            String::new()
        }
    };
    let addrs: Vec<IpAddr> = match nix::ifaddrs::getifaddrs() {
        Ok(ifaddrs) => ifaddrs
            .filter_map(|ifaddr| {
                let addr = ifaddr.address?;
                if let Some(v4) = addr.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "getifaddrs failed; no interface addresses in the server SANs");
            Vec::new()
        }
    };
    assemble_sans(hostname.as_deref(), &hosts, addrs, extra)
}

/// [`default_sans`] without the system calls, for tests.
fn assemble_sans(
    hostname: Option<&str>,
    hosts: &str,
    addrs: impl IntoIterator<Item = IpAddr>,
    extra: &[San],
) -> Vec<San> {
    let mut sans = vec![
        San::Dns("docker".into()),
        San::Dns("localhost".into()),
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    if let Some(hostname) = hostname.filter(|h| is_dns_name(h)) {
        sans.push(San::Dns(hostname.to_ascii_lowercase()));
        if let Some(fqdn) = fqdn_from_hosts(hosts, hostname) {
            sans.push(San::Dns(fqdn));
        }
    }
    sans.extend(
        addrs
            .into_iter()
            .filter(|ip| !is_ipv6_link_local(ip))
            .map(San::Ip),
    );
    sans.extend(extra.iter().map(San::normalized));
    sans.sort();
    sans.dedup();
    sans
}

/// `Ipv6Addr::is_unicast_link_local` needs Rust 1.84; fe80::/10.
fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// The canonical (first) name of the first `/etc/hosts` line naming
/// `hostname`, if it is qualified: what glibc's `hostname -f` would find
/// through the files backend.
fn fqdn_from_hosts(hosts: &str, hostname: &str) -> Option<String> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if !names.iter().any(|n| n.eq_ignore_ascii_case(hostname)) {
            return None;
        }
        // The first matching line decides, as in glibc; a non-qualified
        // canonical name there means there is no FQDN to add.
        let canonical = names[0];
        Some(
            (canonical.contains('.') && is_dns_name(canonical))
                .then(|| canonical.to_ascii_lowercase()),
        )
    })?
}

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

/// The files of the layout, for dockerd's flags and the TLS code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    dir: PathBuf,
}

impl Paths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Paths { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    pub fn server_dir(&self) -> PathBuf {
        self.dir.join("server")
    }

    pub fn client_dir(&self) -> PathBuf {
        self.dir.join("client")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca/cert.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca/key.pem")
    }

    pub fn server_ca(&self) -> PathBuf {
        self.dir.join("server/ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server/cert.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server/key.pem")
    }

    pub fn client_ca(&self) -> PathBuf {
        self.dir.join("client/ca.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client/cert.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client/key.pem")
    }
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

/// Why a PEM file could not be used; the `#[source]` of [`CertError::Malformed`].
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("bad PEM encoding")]
    Pem(#[source] PEMError),
    #[error("no {0} PEM block")]
    NoBlock(&'static str),
    #[error("bad X.509 certificate")]
    X509(#[source] X509Error),
    #[error("encrypted private keys are not supported")]
    Encrypted,
    #[error("unsupported or invalid private key")]
    Key(#[source] rcgen::Error),
    #[error("invalid PKCS#1 RSA private key")]
    Pkcs1(#[source] rsa::pkcs1::Error),
    #[error("cannot convert the PKCS#1 RSA key to PKCS#8")]
    Pkcs8(#[source] rsa::pkcs8::Error),
    #[error("invalid SEC1 EC private key, or a curve other than P-256/P-384")]
    Sec1,
}

/// Everything that stops the TLS bootstrap. Each message is one line naming
/// the file and what to do; the OS or parser cause is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid {DOCKER_TLS_SAN} entry {entry:?} ({reason}): use DNS:<name> or IP:<address>, separated by commas or spaces")]
    BadSan { entry: String, reason: &'static str },
    #[error("certificate validity of {} days is out of range", .validity.as_secs() / DAY)]
    BadValidity { validity: Duration },
    #[error("cannot create certificate directory {}: make it a writable directory (is the volume read-only?)", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {} against a concurrent supervisor: put it on a local filesystem that supports flock", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}: {fix}", .path.display())]
    Read {
        path: PathBuf,
        fix: String,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid PEM {what}: {fix}", .path.display())]
    Malformed {
        path: PathBuf,
        what: &'static str,
        fix: String,
        #[source]
        source: Box<Malformed>,
    },
    #[error("{} is missing: {fix}", .path.display())]
    Missing { path: PathBuf, fix: String },
    #[error("certificate {} does not match key {}: {fix}", .cert.display(), .key.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        fix: String,
    },
    #[error("certificate {} is not signed by {}: {fix}", .cert.display(), .ca.display())]
    NotSignedBy {
        cert: PathBuf,
        ca: PathBuf,
        fix: String,
    },
    #[error("certificate {} expired on {}: {fix}", .path.display(), .not_after.date())]
    Expired {
        path: PathBuf,
        not_after: OffsetDateTime,
        fix: String,
    },
    #[error("cannot generate a {key_type} key")]
    Keygen {
        key_type: KeyType,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// ring's error says nothing more than this.
    #[error("cannot read random bytes from the kernel (getrandom failed)")]
    Entropy,
    #[error("cannot issue certificate {}: check the SANs (and {DOCKER_TLS_SAN}) and the CA key", .path.display())]
    Issue {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {}: make its directory writable and check free space (is the volume read-only?)", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn malformed(path: &Path, what: &'static str, fix: String, source: Malformed) -> CertError {
    CertError::Malformed {
        path: path.to_owned(),
        what,
        fix,
        source: Box::new(source),
    }
}

/// Makes `spec.dir` hold a valid CA, server and client set, minting or
/// re-issuing only what is needed (see the module docs). Blocks on the
/// directory lock while another supervisor holds it.
#[tracing::instrument(skip_all, fields(dir = %spec.dir.display()))]
pub fn ensure(spec: &CertSpec) -> Result<Report, CertError> {
    let started = Instant::now();
    let paths = Paths::new(&spec.dir);
    create_root(&spec.dir)?;
    let _lock = lock(&spec.dir)?;
    let now = OffsetDateTime::now_utc();
    let mut report = if !exists(&paths.ca_key()) && looks_user_managed(&paths) {
        verify_user_managed(&paths, now)?
    } else {
        Managed::plan(spec, &paths, now)?.install(&paths)?
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

fn looks_user_managed(paths: &Paths) -> bool {
    [
        paths.server_ca(),
        paths.server_cert(),
        paths.server_key(),
        paths.ca_cert(),
    ]
    .iter()
    .any(|p| exists(p))
}

fn create_root(dir: &Path) -> Result<(), CertError> {
    let create_err = |source| CertError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(create_err(io::Error::from_raw_os_error(
            Errno::ENOTDIR as i32,
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(create_err)?;
            // The mode above went through the umask.
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(create_err)
        }
        Err(e) => Err(create_err(e)),
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

/// A PEM file of one or more certificates, as read from disk.
struct CertFile {
    path: PathBuf,
    pem: Vec<u8>,
    ders: Vec<Vec<u8>>,
    /// What to tell the operator if this file turns out to be unusable.
    fix: String,
}

impl CertFile {
    /// `Ok(None)` if the file does not exist.
    fn read(path: PathBuf, fix: &str) -> Result<Option<Self>, CertError> {
        let Some(pem) = read_opt(&path, fix)? else {
            return Ok(None);
        };
        let ders =
            parse_cert_pem(&pem).map_err(|e| malformed(&path, "certificate", fix.into(), e))?;
        Ok(Some(CertFile {
            path,
            pem,
            ders,
            fix: fix.into(),
        }))
    }

    /// The first certificate; any others are its chain (or a CA bundle).
    fn leaf(&self) -> Result<X509Certificate<'_>, CertError> {
        self.nth(0)
    }

    /// Every block parsed once already in [`CertFile::read`]; this cannot fail
    /// unless that changes, but it is not worth a panic.
    fn nth(&self, i: usize) -> Result<X509Certificate<'_>, CertError> {
        parse_x509(self.der(i)?)
            .map_err(|e| malformed(&self.path, "certificate", self.fix.clone(), e))
    }

    fn der(&self, i: usize) -> Result<&[u8], CertError> {
        self.ders.get(i).map(Vec::as_slice).ok_or_else(|| {
            malformed(
                &self.path,
                "certificate",
                self.fix.clone(),
                Malformed::NoBlock("CERTIFICATE"),
            )
        })
    }

    fn info(&self, i: usize) -> Result<CertInfo, CertError> {
        CertInfo::new(self.path.clone(), self.der(i)?, &self.fix)
    }
}

/// A private key as read from disk; its bytes are written back unchanged.
struct KeyFile {
    pem: Vec<u8>,
    key: KeyPair,
}

impl KeyFile {
    fn read(path: &Path, fix: &str) -> Result<Option<Self>, CertError> {
        let Some(pem) = read_opt(path, fix)? else {
            return Ok(None);
        };
        let key = parse_key_pem(&pem).map_err(|e| malformed(path, "private key", fix.into(), e))?;
        Ok(Some(KeyFile { pem, key }))
    }
}

fn read_opt(path: &Path, fix: &str) -> Result<Option<Vec<u8>>, CertError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CertError::Read {
            path: path.to_owned(),
            fix: fix.into(),
            source,
        }),
    }
}

fn pem_blocks(pem: &[u8]) -> impl Iterator<Item = Result<Pem, Malformed>> + '_ {
    Pem::iter_from_buffer(pem).map(|block| block.map_err(Malformed::Pem))
}

/// The DER of every CERTIFICATE block, each checked to parse.
fn parse_cert_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, Malformed> {
    let mut ders = Vec::new();
    for block in pem_blocks(pem) {
        let block = block?;
        if block.label == "CERTIFICATE" {
            parse_x509(&block.contents)?;
            ders.push(block.contents);
        }
    }
    if ders.is_empty() {
        return Err(Malformed::NoBlock("CERTIFICATE"));
    }
    Ok(ders)
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, Malformed> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| {
            Malformed::X509(match e {
                x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
                x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
            })
        })
}

/// Loads the first private key block. Besides PKCS#8 (what we and OpenSSL 3
/// write) it takes PKCS#1 `RSA PRIVATE KEY` (docker:dind volumes made with
/// OpenSSL 1.1) and SEC1 `EC PRIVATE KEY` (`openssl ecparam -genkey`), which
/// ring cannot read directly, by converting them to PKCS#8 in memory.
fn parse_key_pem(pem: &[u8]) -> Result<KeyPair, Malformed> {
    for block in pem_blocks(pem) {
        let block = block?;
        match block.label.as_str() {
            "PRIVATE KEY" => {
                return KeyPair::try_from(block.contents.as_slice()).map_err(Malformed::Key)
            }
            "RSA PRIVATE KEY" => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&block.contents)
                    .map_err(Malformed::Pkcs1)?;
                let der = key.to_pkcs8_der().map_err(Malformed::Pkcs8)?;
                return KeyPair::try_from(der.as_bytes()).map_err(Malformed::Key);
            }
            "EC PRIVATE KEY" => {
                return [OID_P256, OID_P384]
                    .iter()
                    .filter_map(|curve| sec1_to_pkcs8(&block.contents, curve))
                    .find_map(|der| KeyPair::try_from(der.as_slice()).ok())
                    .ok_or(Malformed::Sec1);
            }
            "ENCRYPTED PRIVATE KEY" => return Err(Malformed::Encrypted),
            // `EC PARAMETERS` precedes the key in `openssl ecparam` output.
            _ => continue,
        }
    }
    Err(Malformed::NoBlock("PRIVATE KEY"))
}

/// DER of the namedCurve OIDs prime256v1 and secp384r1.
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of id-ecPublicKey.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// Wraps a SEC1 ECPrivateKey in a PKCS#8 PrivateKeyInfo for `curve` (RFC 5915
/// section 2); ring then checks the curve and the embedded public key.
fn sec1_to_pkcs8(sec1: &[u8], curve: &[u8]) -> Option<Vec<u8>> {
    let algorithm = der_tlv(0x30, &[OID_EC_PUBLIC_KEY, curve].concat())?;
    let private_key = der_tlv(0x04, sec1)?;
    der_tlv(
        0x30,
        &[&[0x02, 0x01, 0x00][..], &algorithm, &private_key].concat(),
    )
}

/// One DER element; `None` past 64 KiB, which no key comes near.
fn der_tlv(tag: u8, content: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(content.len()).ok()?;
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    Some(out)
}

fn key_matches(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.der_bytes() == &*cert.public_key().subject_public_key.data
}

fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn expires_soon(cert: &X509Certificate<'_>, now: OffsetDateTime) -> bool {
    cert.validity().not_after.to_datetime() <= now + RENEW_BEFORE
}

/// DNS names and IP addresses of a certificate; other SAN kinds are ignored.
fn cert_sans(cert: &X509Certificate<'_>) -> BTreeSet<San> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return BTreeSet::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(San::Dns(dns.to_ascii_lowercase())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| San::Ip(IpAddr::from(b))),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| San::Ip(IpAddr::from(b))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Verifies a user-managed server set; writes nothing.
fn verify_user_managed(paths: &Paths, now: OffsetDateTime) -> Result<Report, CertError> {
    let remove = if exists(&paths.ca_cert()) {
        format!(
            "{} and {}",
            paths.server_dir().display(),
            paths.ca_cert().display()
        )
    } else {
        paths.server_dir().display().to_string()
    };
    let fix = format!("fix your PKI, or remove {remove} to have a new one minted");
    let missing_fix = format!(
        "without {} this is taken for a user-managed PKI; \
         provide the file, or remove {remove} to have a new one minted",
        paths.ca_key().display(),
    );
    let missing = |path: PathBuf| CertError::Missing {
        path,
        fix: missing_fix.clone(),
    };
    let ca = CertFile::read(paths.server_ca(), &fix)?.ok_or_else(|| missing(paths.server_ca()))?;
    let cert =
        CertFile::read(paths.server_cert(), &fix)?.ok_or_else(|| missing(paths.server_cert()))?;
    let key =
        KeyFile::read(&paths.server_key(), &fix)?.ok_or_else(|| missing(paths.server_key()))?;

    let leaf = cert.leaf()?;
    if !key_matches(&key.key, &leaf) {
        return Err(CertError::KeyMismatch {
            cert: cert.path.clone(),
            key: paths.server_key(),
            fix,
        });
    }
    let anchor = chain_anchor(&cert, &ca)?.ok_or_else(|| CertError::NotSignedBy {
        cert: cert.path.clone(),
        ca: ca.path.clone(),
        fix: fix.clone(),
    })?;
    for (file, i) in [(&cert, 0), (&ca, anchor)] {
        let info = file.info(i)?;
        if info.not_after <= now {
            return Err(CertError::Expired {
                path: info.path,
                not_after: info.not_after,
                fix,
            });
        }
        if info.not_after <= now + RENEW_BEFORE {
            tracing::warn!(path = %info.path.display(), not_after = %info.not_after, "user-managed certificate expires soon");
        }
    }
    Ok(Report {
        ca: Action::UserManaged,
        server: Action::UserManaged,
        client: Action::UserManaged,
        elapsed: Duration::ZERO,
        server_cert: cert.info(0)?,
        ca_cert: ca.info(anchor)?,
    })
}

/// Walks from the leaf of `cert` through the intermediates bundled after it
/// to a certificate of `ca`; the index of that one, `None` if there is no path.
fn chain_anchor(cert: &CertFile, ca: &CertFile) -> Result<Option<usize>, CertError> {
    let anchors = (0..ca.ders.len())
        .map(|i| ca.nth(i))
        .collect::<Result<Vec<_>, _>>()?;
    let chain = (0..cert.ders.len())
        .map(|i| cert.nth(i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut used = vec![false; chain.len()];
    let mut current = 0;
    used[0] = true;
    loop {
        if let Some(i) = anchors.iter().position(|a| signed_by(&chain[current], a)) {
            return Ok(Some(i));
        }
        match (0..chain.len()).find(|&j| !used[j] && signed_by(&chain[current], &chain[j])) {
            Some(j) => {
                used[j] = true;
                current = j;
            }
            None => return Ok(None),
        }
    }
}

/// A file as it must end up: `bytes` is `None` when the file on disk stays.
struct Output {
    path: PathBuf,
    bytes: Option<Vec<u8>>,
    mode: u32,
}

/// One of the three sets, ready to install.
struct SetPlan {
    dir: PathBuf,
    /// In commit order.
    outputs: Vec<Output>,
    /// Hide the last output while the others change (the client protocol).
    last_is_marker: bool,
}

/// Everything [`ensure`] will write for a PKI whose CA key it holds, decided
/// and signed before the first write.
struct Managed {
    sets: [SetPlan; 3],
    report: Report,
}

/// A key as it will be on disk; `pem` is the file's own bytes when kept.
struct PlannedKey {
    key: KeyPair,
    pem: Vec<u8>,
    new: bool,
}

/// A leaf certificate's fate; `pem` is `Some` when it is (re-)issued.
struct PlannedCert {
    action: Action,
    pem: Option<Vec<u8>>,
    info: CertInfo,
}

/// Which leaf, and what it differs in.
#[derive(Clone, Copy)]
enum Leaf {
    Server,
    Client,
}

impl Managed {
    fn plan(spec: &CertSpec, paths: &Paths, now: OffsetDateTime) -> Result<Self, CertError> {
        let ca_key_fix = format!(
            "restore it, or remove {} to have a new CA minted (clients must then use the new ca.pem)",
            paths.ca_dir().display()
        );
        let ca_cert_fix = format!(
            "remove it to have it re-issued from {}",
            paths.ca_key().display()
        );
        let leaf_fix = |dir: PathBuf| {
            format!(
                "remove {} to have it re-issued, or fix your PKI",
                dir.display()
            )
        };
        let server_fix = leaf_fix(paths.server_dir());
        let client_fix = leaf_fix(paths.client_dir());

        // Read every key first, then generate the missing ones together: RSA
        // generation takes seconds and the keys are independent.
        let ca_key = KeyFile::read(&paths.ca_key(), &ca_key_fix)?;
        let server_key = KeyFile::read(&paths.server_key(), &server_fix)?;
        let client_key = KeyFile::read(&paths.client_key(), &client_fix)?;
        let missing = [&ca_key, &server_key, &client_key]
            .iter()
            .filter(|k| k.is_none())
            .count();
        let mut fresh = generate_keys(spec.key_type, missing)?.into_iter();
        let mut resolve = |loaded: Option<KeyFile>| match loaded {
            Some(file) => Ok(PlannedKey {
                key: file.key,
                pem: file.pem,
                new: false,
            }),
            None => {
                let key = fresh.next().ok_or_else(|| CertError::Keygen {
                    key_type: spec.key_type,
                    source: "generated fewer keys than asked for".into(),
                })?;
                Ok::<_, CertError>(PlannedKey {
                    pem: key.serialize_pem().into_bytes(),
                    key,
                    new: true,
                })
            }
        };
        let ca_key = resolve(ca_key)?;
        let server_key = resolve(server_key)?;
        let client_key = resolve(client_key)?;

        // The CA certificate. A new CA key never meets an old ca/cert.pem:
        // that combination is routed to the user-managed path.
        let existing_ca = if ca_key.new {
            None
        } else {
            CertFile::read(paths.ca_cert(), &ca_cert_fix)?
        };
        let ca_action = match &existing_ca {
            None if ca_key.new => Action::Minted,
            None => Action::Reissued("missing"),
            Some(file) => {
                let cert = file.leaf()?;
                if !key_matches(&ca_key.key, &cert) {
                    return Err(CertError::KeyMismatch {
                        cert: file.path.clone(),
                        key: paths.ca_key(),
                        fix: ca_cert_fix,
                    });
                }
                if expires_soon(&cert, now) {
                    Action::Reissued("expiring")
                } else {
                    Action::Reused
                }
            }
        };
        let ca_pem = match existing_ca {
            Some(file) if ca_action == Action::Reused => file.pem,
            _ => issue_ca(&ca_key.key, spec.validity, now)
                .map_err(|e| e.at(paths.ca_cert()))?
                .pem()
                .into_bytes(),
        };
        let ca_written = ca_action != Action::Reused;
        let ca_ders = parse_cert_pem(&ca_pem)
            .map_err(|e| malformed(&paths.ca_cert(), "certificate", ca_cert_fix.clone(), e))?;
        let ca_der = ca_ders[0].as_slice();
        let ca_x509 = parse_x509(ca_der)
            .map_err(|e| malformed(&paths.ca_cert(), "certificate", ca_cert_fix.clone(), e))?;
        // Built from the certificate, not from our parameters, so leaves name
        // their issuer exactly as a user-provided CA certificate does.
        let issuer = Issuer::from_ca_cert_der(&ca_der.into(), &ca_key.key).map_err(|source| {
            CertError::Issue {
                path: paths.ca_cert(),
                source,
            }
        })?;

        let wanted_sans: BTreeSet<San> = spec.sans.iter().map(San::normalized).collect();
        let leaf = |kind: Leaf, key: &PlannedKey, path: PathBuf, fix: &str| {
            let action = if key.new {
                Action::Minted
            } else if ca_written {
                Action::Reissued("CA re-issued")
            } else if let Some(file) = CertFile::read(path.clone(), fix)? {
                let cert = file.leaf()?;
                if !key_matches(&key.key, &cert) {
                    return Err(CertError::KeyMismatch {
                        key: path.with_file_name("key.pem"),
                        cert: path,
                        fix: fix.into(),
                    });
                }
                if !signed_by(&cert, &ca_x509) {
                    return Err(CertError::NotSignedBy {
                        cert: path,
                        ca: paths.ca_cert(),
                        fix: fix.into(),
                    });
                }
                if expires_soon(&cert, now) {
                    Action::Reissued("expiring")
                } else if matches!(kind, Leaf::Server) && cert_sans(&cert) != wanted_sans {
                    Action::Reissued("SANs changed")
                } else {
                    let info = file.info(0)?;
                    return Ok(PlannedCert {
                        action: Action::Reused,
                        pem: None,
                        info,
                    });
                }
            } else {
                Action::Reissued("missing")
            };
            let cert = issue_leaf(kind, &key.key, &issuer, &spec.sans, spec.validity, now)
                .map_err(|e| e.at(path.clone()))?;
            Ok(PlannedCert {
                action,
                info: CertInfo::new(path, cert.der(), fix)?,
                pem: Some(cert.pem().into_bytes()),
            })
        };
        let server = leaf(Leaf::Server, &server_key, paths.server_cert(), &server_fix)?;
        let client = leaf(Leaf::Client, &client_key, paths.client_cert(), &client_fix)?;

        // A ca.pem copy is rewritten whenever it differs in any byte.
        let copy_of_ca = |path: PathBuf, fix: &str| -> Result<Output, CertError> {
            let current = read_opt(&path, fix)?;
            Ok(Output {
                bytes: (current.as_deref() != Some(ca_pem.as_slice())).then(|| ca_pem.clone()),
                path,
                mode: CERT_MODE,
            })
        };
        let new_if = |new: bool, bytes: Vec<u8>| new.then_some(bytes);
        let ca_set = SetPlan {
            dir: paths.ca_dir(),
            outputs: vec![
                // The key goes first: see "Writes" in the module docs.
                Output {
                    path: paths.ca_key(),
                    bytes: new_if(ca_key.new, ca_key.pem),
                    mode: KEY_MODE,
                },
                Output {
                    path: paths.ca_cert(),
                    bytes: new_if(ca_written, ca_pem.clone()),
                    mode: CERT_MODE,
                },
            ],
            last_is_marker: false,
        };
        let server_set = SetPlan {
            dir: paths.server_dir(),
            outputs: vec![
                Output {
                    path: paths.server_key(),
                    bytes: new_if(server_key.new, server_key.pem),
                    mode: KEY_MODE,
                },
                Output {
                    path: paths.server_cert(),
                    bytes: server.pem,
                    mode: CERT_MODE,
                },
                copy_of_ca(paths.server_ca(), &server_fix)?,
            ],
            last_is_marker: false,
        };
        let mut client_outputs = vec![
            copy_of_ca(paths.client_ca(), &client_fix)?,
            Output {
                path: paths.client_cert(),
                bytes: client.pem,
                mode: CERT_MODE,
            },
            Output {
                path: paths.client_key(),
                bytes: None,
                mode: CLIENT_KEY_MODE,
            },
        ];
        // Any change to the client set re-installs the key, last: it is the
        // commit marker (module docs, "The client/ protocol").
        if client_key.new || client_outputs.iter().any(|o| o.bytes.is_some()) {
            client_outputs[2].bytes = Some(client_key.pem);
        }
        let client_set = SetPlan {
            dir: paths.client_dir(),
            outputs: client_outputs,
            last_is_marker: true,
        };

        Ok(Managed {
            sets: [ca_set, server_set, client_set],
            report: Report {
                ca: ca_action,
                server: server.action,
                client: client.action,
                elapsed: Duration::ZERO,
                server_cert: server.info,
                ca_cert: CertInfo::new(paths.ca_cert(), ca_der, &ca_cert_fix)?,
            },
        })
    }

    /// Writes the plan. fsync latency is nearly all of a fresh mint (about
    /// 0.5 ms of CPU against 11 fsyncs), and under I/O load each sequential
    /// fsync is a separate journal commit; so files and directories are
    /// synced in two concurrent rounds, which the journal folds into few
    /// commits. Renames reach the journal in the order they are made, so the
    /// crash-safe order of the module docs holds without a sync per set.
    fn install(self, paths: &Paths) -> Result<Report, CertError> {
        for set in &self.sets {
            create_subdir(&set.dir)?;
            sweep_stale_temporaries(&set.dir);
        }
        // Every new file is written before anything visible changes, so a
        // full disk or a read-only volume leaves the directory as it was.
        let staged = self
            .sets
            .iter()
            .map(|set| {
                set.outputs
                    .iter()
                    .filter_map(|o| {
                        o.bytes
                            .as_ref()
                            .map(|bytes| Staged::write(&o.path, bytes, o.mode))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        sync_concurrently(staged.iter().flatten().map(|s| (&s.file, s.dest.as_path())))?;
        let mut changed_dirs = Vec::new();
        for (set, staged) in self.sets.iter().zip(staged) {
            if !staged.is_empty() {
                commit_set(set, staged)?;
                changed_dirs.push(&set.dir);
            }
        }
        let dirs = changed_dirs
            .iter()
            .map(|dir| {
                File::open(dir)
                    .map(|file| (file, dir.as_path()))
                    .map_err(|source| CertError::Write {
                        path: dir.to_path_buf(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        sync_concurrently(dirs.iter().map(|(file, dir)| (file, *dir)))?;
        for set in &self.sets {
            fix_modes(set)?;
        }
        tracing::debug!(dir = %paths.dir().display(), "certificate sets installed");
        Ok(self.report)
    }
}

fn is_rsa(key: &KeyPair) -> bool {
    key.algorithm() == &rcgen::PKCS_RSA_SHA256
}

fn generate_keys(key_type: KeyType, count: usize) -> Result<Vec<KeyPair>, CertError> {
    if count > 1 && key_type.rsa_bits().is_some() {
        // Finding RSA primes dominates (seconds for 4096 bits); use the cores.
        thread::scope(|scope| {
            let handles: Vec<_> = (0..count)
                .map(|_| scope.spawn(|| key_type.generate()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    } else {
        (0..count).map(|_| key_type.generate()).collect()
    }
}

#[derive(Debug)]
enum IssueError {
    Rcgen(rcgen::Error),
    Other(CertError),
}

impl IssueError {
    fn at(self, path: PathBuf) -> CertError {
        match self {
            IssueError::Rcgen(source) => CertError::Issue { path, source },
            IssueError::Other(e) => e,
        }
    }
}

impl From<rcgen::Error> for IssueError {
    fn from(e: rcgen::Error) -> Self {
        IssueError::Rcgen(e)
    }
}

impl From<CertError> for IssueError {
    fn from(e: CertError) -> Self {
        IssueError::Other(e)
    }
}

/// Validity, a random serial and a CN; the rest is per certificate.
fn base_params(
    cn: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<CertificateParams, CertError> {
    let bad_validity = || CertError::BadValidity { validity };
    let mut params = CertificateParams::default();
    params.not_before = now - BACKDATE;
    params.not_after = time::Duration::try_from(validity)
        .ok()
        .and_then(|v| now.checked_add(v))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(bad_validity)?;
    // rcgen's default serial is a hash of the public key: every re-issue for
    // a kept key would repeat it, which clients reject as a reused
    // issuer+serial. RFC 5280 wants positive and at most 20 bytes.
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CertError::Entropy)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    Ok(params)
}

fn issue_ca(
    key: &KeyPair,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<rcgen::Certificate, IssueError> {
    let mut params = base_params(CA_CN, validity, now)?;
    // pathlen 0: this CA signs leaves only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params.self_signed(key)?)
}

fn issue_leaf(
    kind: Leaf,
    key: &KeyPair,
    issuer: &Issuer<'_, &KeyPair>,
    sans: &[San],
    validity: Duration,
    now: OffsetDateTime,
) -> Result<rcgen::Certificate, IssueError> {
    let (cn, eku) = match kind {
        Leaf::Server => (SERVER_CN, ExtendedKeyUsagePurpose::ServerAuth),
        Leaf::Client => (CLIENT_CN, ExtendedKeyUsagePurpose::ClientAuth),
    };
    let mut params = base_params(cn, validity, now)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![eku];
    // keyEncipherment only means something for RSA key exchange (TLS 1.2).
    params.key_usages = if is_rsa(key) {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    params.use_authority_key_identifier_extension = true;
    if let Leaf::Server = kind {
        params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    }
    Ok(params.signed_by(key, issuer)?)
}

fn create_subdir(dir: &Path) -> Result<(), CertError> {
    let create_err = |source| CertError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        // The mode above went through the umask.
        Ok(()) => fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(create_err),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create_err(e)),
    }
}

/// Removes `.NAME.pem.tmp-PID` files a killed supervisor left behind; we hold
/// the lock, so none of them is being written.
fn sweep_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".pem.tmp-") {
            if let Err(error) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "cannot remove stale temporary file");
            }
        }
    }
}

/// A file written under a temporary name, to be fsync'd and renamed into
/// place; removed on drop unless committed.
struct Staged {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staged {
    fn write(dest: &Path, bytes: &[u8], mode: u32) -> Result<Self, CertError> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let write_err = |source| CertError::Write {
            path: dest.to_owned(),
            source,
        };
        let remove_tmp = |e| {
            let _ = fs::remove_file(&tmp);
            write_err(e)
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            // Only we write here, under the lock: never follow a planted link.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(write_err)?;
        // The mode above went through the umask; a truncated leftover kept its own.
        file.set_permissions(Permissions::from_mode(mode))
            .and_then(|()| file.write_all(bytes))
            .map_err(remove_tmp)?;
        Ok(Staged {
            file,
            tmp,
            dest: dest.to_owned(),
            committed: false,
        })
    }

    fn commit(mut self) -> Result<(), CertError> {
        fs::rename(&self.tmp, &self.dest).map_err(|source| CertError::Write {
            path: self.dest.clone(),
            source,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Renames a set's staged (and synced) files into place, in order.
fn commit_set(set: &SetPlan, staged: Vec<Staged>) -> Result<(), CertError> {
    // The plan always stages the marker when anything in its set changes;
    // never hide one that would not come back.
    let marker = set
        .outputs
        .last()
        .filter(|o| set.last_is_marker && o.bytes.is_some());
    if let Some(marker) = marker {
        match fs::remove_file(&marker.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CertError::Write {
                    path: marker.path.clone(),
                    source,
                })
            }
        }
    }
    for file in staged {
        file.commit()?;
    }
    Ok(())
}

/// Files we keep get our modes too: a job container must be able to read
/// client/key.pem even if an older supervisor or a user wrote it 0600.
fn fix_modes(set: &SetPlan) -> Result<(), CertError> {
    for output in set.outputs.iter().filter(|o| o.bytes.is_none()) {
        let write_err = |source| CertError::Write {
            path: output.path.clone(),
            source,
        };
        let meta = fs::metadata(&output.path).map_err(write_err)?;
        if meta.mode() & 0o7777 != output.mode {
            fs::set_permissions(&output.path, Permissions::from_mode(output.mode))
                .map_err(write_err)?;
        }
    }
    Ok(())
}

/// fsyncs every file at once, one thread each: concurrent fsyncs share
/// journal commits. If a thread cannot be had, that file is synced inline.
fn sync_concurrently<'a>(
    files: impl IntoIterator<Item = (&'a File, &'a Path)>,
) -> Result<(), CertError> {
    let sync = |file: &File, path: &Path| {
        file.sync_all().map_err(|source| CertError::Write {
            path: path.to_owned(),
            source,
        })
    };
    thread::scope(|scope| {
        let mut results = Vec::new();
        let mut handles = Vec::new();
        for (file, path) in files {
            match thread::Builder::new().spawn_scoped(scope, move || sync(file, path)) {
                Ok(handle) => handles.push(handle),
                Err(_) => results.push(sync(file, path)),
            }
        }
        results.extend(handles.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }));
        results.into_iter().collect()
    })
}

#[cfg(test)]
mod tests {
    //! Imports used by one test live in that test: the bench compiles this
    //! module with `cfg(test)` but without the `#[test]` functions.

    use std::collections::BTreeMap;

    use super::*;

    /// docker:dind's default, as the CLI passes it.
    const DEFAULT_VALIDITY: Duration = Duration::from_secs(825 * DAY);

    /// `openssl ecparam -name prime256v1 -genkey`: SEC1, after an EC PARAMETERS block.
    const SEC1_P256_KEY: &str = "-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIH3v/CNMDbYGJpa3HGMAwFXil+92/T83+60671sh0oDvoAoGCCqGSM49
AwEHoUQDQgAEZQIrS6Q61d3xF02Rwnjp/bX8O8AdQUYAwFk8nVLb0IR5/Q22XZdF
OdbEZGCbhR6RsobxwYfyX47yA37n1kaRaw==
-----END EC PRIVATE KEY-----
";

    /// `openssl genrsa -traditional 2048`: PKCS#1, as OpenSSL 1.1 wrote it in
    /// older docker:dind volumes.
    const PKCS1_RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA1jOhS5xwPwrrPxNibm7GWQZMlojDoAq4IgEkSTFiWAYZyqSa
fZZ561EpwLIfWnTFqn6wbDJ7E80VWotca7b3vvYip7ymKxdk0nB5eJkoeQEE2zK3
lP9bru45LQUrEl+YF9lU3+9EuzDLeSEYEXb9AbVIVX2cNW6xirrM5ON7x6GeCzxe
mtYGhY9kZ2FVAmgIgu9Kt4sm55WUgcnj7KE5sqSXPIO74ojd9M155qzJlju6KZJj
e+R0r7lyeQMpctSVWUQCZXjpumNmSn0wj/53KXXZ5I9WYrGriUgOqGCTgy9gTggX
fQtXAWQJ2D5Qm8WkMKSYmHMqmO7B7LS1g4fgFwIDAQABAoIBAAWelngHWKKEGiaD
eazwAbV1htjZfwMEhPl6EjD2t1/GeTK/HWvMtidy76d7L3tjXjQviAKuqFqdTMFy
r9qw6CWoYMG0dJ+OHjpZx7YJk+2Ta0SHkMK7QvUp5sdu6pxcHv9b15rbChs8bSTL
tiKZ0+ARmMjgDL28yQecsvdmSGm09XOneoL0pn6TlP2R0Tgmt2eSty1ieWh82bXb
WhlDmDAgmV+b88txmtVtfoUt1fiRrHQIqIOuCDEpeZgyfIyHPIL98+DEFFFSMRX3
2UenFkinUxHq7iRGWY3javt8MYGYZSo6uv2+7dUa/p4GOs0uILAJyPgU+cTtn2rj
yxVMXcECgYEA65pue6pKd+CjEX2XZyVo4vf1I3Te8QJJP8FCDNQiQdr6HF2Tmpob
KfC91SKBA3MHwBDmrVXZ4hf2pegy7sDubrdIYbdsLctYq/1L9Mh0/5KgqrZgbXLH
uUz4S8sI50z3OeeGd/bx3BtWO5z4Bg8uQhuRLiFUqD4D5zIpEWBus9ECgYEA6L7i
m5qb0amtKFs5x9mhm4YYaovISINi1Zb6yzEPR342N7zkTqMLycyflUe9t+Hw0m9C
6DnpcBHng1uyCpmDIT0P8kQ9zq89MTH0TG4+odCQI2GzauRTfRHICbQSiYBIz/LH
6xduz13XQIfHm4lgNmG8aRhuI/hXGWMDdLmp12cCgYEAsU+WGoe8Z5+t2bn1OfFT
kI0f9kE8j5Ey40JknRcBeSJ93N8n+NBF5TiDBWZkRd5KVOfjU0wrIBb8zzuDKWAV
kUlqte+/AG/rGfUVNvGt67HELPX4eCZL3U7qBtCUsM6huPhfoOU+fHIuYcrudlDy
dVod1uPKvJt/gH2lnqg+aCECgYAdEkrH2OYBqEoCsnJjLiHrhTJjjJY1yIN93l/x
JW2dJnyrNaLm16LPUAnW4aEm6Mfl4RPgYetwnivm0ntIq6gfbLsjLbbyrBzemjjD
mzmjiKOYZ8m7Xk23X5M28xElr6ponxCtor2qlTQf0VXzbZNg95BLKEwJnily+FUk
LVSznQKBgQDQDG/37TUaeIlWa4VHWZujLeFajKDl3VjvP+x+UXd8iAOQsG84mq0I
i1jpoV8pP2f1e2TJPb2lOuumvVZoPUO9suzZF8wl+4cog9xg/e6jx85nBDRG5/Ox
qPIgpm1HXB6fOlhF24GjuZv9u/uu6ycaNVUe3lsb6ejXHCoILpDukQ==
-----END RSA PRIVATE KEY-----
";

    fn test_sans() -> Vec<San> {
        assemble_sans(
            Some("testhost"),
            "127.0.0.1 localhost\n10.1.2.3 testhost.example.com testhost\n",
            [
                IpAddr::from([10, 1, 2, 3]),
                "fe80::1".parse().unwrap(),
                "fd00::3".parse().unwrap(),
            ],
            &[
                San::Dns("Extra.Example".into()),
                San::Ip("192.0.2.7".parse().unwrap()),
            ],
        )
    }

    fn spec(tmp: &Path) -> CertSpec {
        CertSpec {
            dir: tmp.join("certs"),
            key_type: KeyType::EcdsaP256,
            validity: DEFAULT_VALIDITY,
            sans: test_sans(),
        }
    }

    /// Every file and directory under `dir`, hidden ones included, with
    /// contents and mode.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        let mut out = BTreeMap::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let bytes = if meta.is_dir() {
                    todo.push(path.clone());
                    Vec::new()
                } else {
                    fs::read(&path).unwrap()
                };
                out.insert(path, (bytes, meta.mode() & 0o7777));
            }
        }
        out
    }

    fn temporaries(dir: &Path) -> Vec<PathBuf> {
        snapshot(dir)
            .into_keys()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn ders(path: &Path) -> Vec<Vec<u8>> {
        parse_cert_pem(&fs::read(path).unwrap()).unwrap()
    }

    fn key(path: &Path) -> KeyPair {
        parse_key_pem(&fs::read(path).unwrap()).unwrap()
    }

    /// The message, checked to be the one line the operator sees.
    fn one_line(err: &CertError) -> String {
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg}");
        msg
    }

    /// Checks `cert` against `ca` and `key` the way a TLS peer would care.
    fn assert_chain(cert: &Path, key_path: &Path, ca: &Path) {
        let ca_der = ders(ca).remove(0);
        let cert_der = ders(cert).remove(0);
        let ca = parse_x509(&ca_der).unwrap();
        let leaf = parse_x509(&cert_der).unwrap();
        leaf.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{} does not verify: {e}", cert.display()));
        assert!(
            key_matches(&key(key_path), &leaf),
            "{} does not match {}",
            cert.display(),
            key_path.display()
        );
    }

    fn reissue_server_cert(paths: &Paths, sans: &[San], validity: Duration) {
        let ca_key = key(&paths.ca_key());
        let ca_der = ders(&paths.ca_cert()).remove(0);
        let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), &ca_key).unwrap();
        let cert = issue_leaf(
            Leaf::Server,
            &key(&paths.server_key()),
            &issuer,
            sans,
            validity,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        fs::write(paths.server_cert(), cert.pem()).unwrap();
    }

    /// A CA that is not ours, as a user-managed PKI would have.
    struct Foreign {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn foreign_ca(cn: &str, parent: Option<&Foreign>) -> Foreign {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = match parent {
            None => params.self_signed(&key).unwrap(),
            Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
        };
        Foreign {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Server key and certificate PEMs signed by `ca`.
    fn foreign_leaf(ca: &Foreign, not_after: Option<OffsetDateTime>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["docker".to_owned()]).unwrap();
        if let Some(not_after) = not_after {
            params.not_before = not_after - Duration::from_secs(2 * DAY);
            params.not_after = not_after;
        }
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (key.serialize_pem(), cert.pem())
    }

    fn write_user_pki(paths: &Paths, ca_pem: &str, cert_pem: &str, key_pem: &str) {
        fs::create_dir_all(paths.server_dir()).unwrap();
        fs::write(paths.server_ca(), ca_pem).unwrap();
        fs::write(paths.server_cert(), cert_pem).unwrap();
        fs::write(paths.server_key(), key_pem).unwrap();
    }

    #[test]
    fn fresh_mint_writes_the_docker_dind_layout_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);

        let report = ensure(&spec).unwrap();

        assert_eq!(
            (report.ca, report.server, report.client),
            (Action::Minted, Action::Minted, Action::Minted)
        );
        for (path, want) in [
            (paths.ca_key(), 0o600),
            (paths.ca_cert(), 0o644),
            (paths.server_key(), 0o600),
            (paths.server_cert(), 0o644),
            (paths.server_ca(), 0o644),
            (paths.client_key(), 0o644),
            (paths.client_cert(), 0o644),
            (paths.client_ca(), 0o644),
            (paths.dir().to_owned(), 0o755),
            (paths.ca_dir(), 0o755),
            (paths.server_dir(), 0o755),
            (paths.client_dir(), 0o755),
        ] {
            assert_eq!(mode(&path), want, "mode of {}", path.display());
        }
        // Exactly the stock layout: 9 files in 3 directories, no lock file,
        // no leftovers.
        let files: Vec<_> = snapshot(paths.dir())
            .into_iter()
            .filter(|(p, _)| p.is_file())
            .map(|(p, _)| p.strip_prefix(paths.dir()).unwrap().to_owned())
            .collect();
        let want: Vec<PathBuf> = [
            "ca/cert.pem",
            "ca/key.pem",
            "client/ca.pem",
            "client/cert.pem",
            "client/key.pem",
            "server/ca.pem",
            "server/cert.pem",
            "server/key.pem",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(files, want);
        let ca = fs::read(paths.ca_cert()).unwrap();
        assert_eq!(fs::read(paths.server_ca()).unwrap(), ca);
        assert_eq!(fs::read(paths.client_ca()).unwrap(), ca);
        assert_eq!(report.server_cert.path, paths.server_cert());
        assert_eq!(report.ca_cert.path, paths.ca_cert());
        let now = OffsetDateTime::now_utc();
        let days_left = (report.server_cert.not_after - now).whole_days();
        assert!((823..=825).contains(&days_left), "{days_left} days");
    }

    #[test]
    fn minted_certificates_chain_and_carry_the_right_extensions() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let report = ensure(&spec).unwrap();

        assert_chain(
            &paths.server_cert(),
            &paths.server_key(),
            &paths.server_ca(),
        );
        assert_chain(
            &paths.client_cert(),
            &paths.client_key(),
            &paths.client_ca(),
        );
        assert_chain(&paths.ca_cert(), &paths.ca_key(), &paths.ca_cert());

        let ca_der = ders(&paths.ca_cert()).remove(0);
        let ca = parse_x509(&ca_der).unwrap();
        let bc = ca.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert_eq!(ca.subject().to_string(), format!("CN={CA_CN}"));

        let server_der = ders(&paths.server_cert()).remove(0);
        let server = parse_x509(&server_der).unwrap();
        let eku = server.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!server.is_ca());
        let sans = cert_sans(&server);
        for want in [
            "DNS:docker",
            "DNS:localhost",
            "DNS:testhost",
            "DNS:testhost.example.com",
            "DNS:extra.example",
            "IP:127.0.0.1",
            "IP:::1",
            "IP:10.1.2.3",
            "IP:fd00::3",
            "IP:192.0.2.7",
        ] {
            assert!(
                sans.iter().any(|s| s.to_string() == want),
                "{want} missing from {sans:?}"
            );
        }
        assert!(!sans.contains(&San::Ip("fe80::1".parse().unwrap())));
        assert_eq!(sans, spec.sans.iter().cloned().collect());

        let client_der = ders(&paths.client_cert()).remove(0);
        let client = parse_x509(&client_der).unwrap();
        let eku = client.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(client.subject().to_string(), format!("CN={CLIENT_CN}"));

        // Fresh serials, not rcgen's hash of the public key.
        assert_ne!(server.raw_serial(), client.raw_serial());
        assert_eq!(
            report.server_cert.sha256_fingerprint,
            fingerprint(&server_der)
        );
        let fp = &report.ca_cert.sha256_fingerprint;
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.split(':').all(|b| b.len() == 2
            && b.bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))));
    }

    #[test]
    fn second_ensure_reuses_every_file_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let first = ensure(&spec).unwrap();
        let before = snapshot(&spec.dir);

        let second = ensure(&spec).unwrap();

        assert_eq!(
            (second.ca, second.server, second.client),
            (Action::Reused, Action::Reused, Action::Reused)
        );
        assert_eq!(snapshot(&spec.dir), before);
        assert_eq!(second.ca_cert, first.ca_cert);
        assert_eq!(second.server_cert, first.server_cert);
    }

    #[test]
    fn sans_in_another_order_are_the_same_set() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = spec(tmp.path());
        ensure(&spec).unwrap();
        spec.sans.reverse();
        spec.sans.push(San::Dns("DOCKER".into()));

        assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
    }

    #[test]
    fn changed_sans_reissue_only_the_server_cert_with_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        let before = snapshot(&spec.dir);

        spec.sans.push(San::Dns("new.example".into()));
        let report = ensure(&spec).unwrap();

        assert_eq!(
            (report.ca, report.server, report.client),
            (
                Action::Reused,
                Action::Reissued("SANs changed"),
                Action::Reused
            )
        );
        let after = snapshot(&spec.dir);
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, v)| before.get(*p) != Some(v))
            .map(|(p, _)| p.clone())
            .collect();
        assert_eq!(changed, [paths.server_cert()]);
        assert_chain(
            &paths.server_cert(),
            &paths.server_key(),
            &paths.server_ca(),
        );
        let server_der = ders(&paths.server_cert()).remove(0);
        assert!(
            cert_sans(&parse_x509(&server_der).unwrap()).contains(&San::Dns("new.example".into()))
        );
    }

    #[test]
    fn server_cert_expiring_within_30_days_is_reissued() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        reissue_server_cert(&paths, &spec.sans, Duration::from_secs(29 * DAY));
        let key_before = fs::read(paths.server_key()).unwrap();

        let report = ensure(&spec).unwrap();

        assert_eq!(report.server, Action::Reissued("expiring"));
        assert_eq!((report.ca, report.client), (Action::Reused, Action::Reused));
        assert_eq!(fs::read(paths.server_key()).unwrap(), key_before);
        assert!(
            report.server_cert.not_after
                > OffsetDateTime::now_utc() + Duration::from_secs(800 * DAY)
        );
        assert_chain(
            &paths.server_cert(),
            &paths.server_key(),
            &paths.server_ca(),
        );

        // 31 days left is not "expiring".
        reissue_server_cert(&paths, &spec.sans, Duration::from_secs(31 * DAY));
        assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
    }

    #[test]
    fn expiring_ca_cert_is_reissued_from_its_key_and_leaves_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        spec.validity = Duration::from_secs(10 * DAY);
        ensure(&spec).unwrap();
        let keys: Vec<_> = [paths.ca_key(), paths.server_key(), paths.client_key()]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();

        spec.validity = DEFAULT_VALIDITY;
        let report = ensure(&spec).unwrap();

        assert_eq!(
            (report.ca, report.server, report.client),
            (
                Action::Reissued("expiring"),
                Action::Reissued("CA re-issued"),
                Action::Reissued("CA re-issued")
            )
        );
        for (path, before) in [paths.ca_key(), paths.server_key(), paths.client_key()]
            .iter()
            .zip(keys)
        {
            assert_eq!(
                fs::read(path).unwrap(),
                before,
                "{} changed",
                path.display()
            );
        }
        assert!(
            report.ca_cert.not_after > OffsetDateTime::now_utc() + Duration::from_secs(800 * DAY)
        );
    }

    #[test]
    fn missing_ca_cert_is_reissued_from_the_same_key_and_leaves_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let first = ensure(&spec).unwrap();
        let before = snapshot(&spec.dir);
        fs::remove_file(paths.ca_cert()).unwrap();

        let report = ensure(&spec).unwrap();

        assert_eq!(
            (report.ca, report.server, report.client),
            (
                Action::Reissued("missing"),
                Action::Reissued("CA re-issued"),
                Action::Reissued("CA re-issued")
            )
        );
        assert_ne!(
            report.ca_cert.sha256_fingerprint,
            first.ca_cert.sha256_fingerprint
        );
        let after = snapshot(&spec.dir);
        for key in [paths.ca_key(), paths.server_key(), paths.client_key()] {
            assert_eq!(after[&key], before[&key], "{} changed", key.display());
        }
        let ca = fs::read(paths.ca_cert()).unwrap();
        assert_eq!(fs::read(paths.server_ca()).unwrap(), ca);
        assert_eq!(fs::read(paths.client_ca()).unwrap(), ca);
        assert_chain(&paths.ca_cert(), &paths.ca_key(), &paths.ca_cert());
        assert_chain(
            &paths.server_cert(),
            &paths.server_key(),
            &paths.server_ca(),
        );
        assert_chain(
            &paths.client_cert(),
            &paths.client_key(),
            &paths.client_ca(),
        );
    }

    #[test]
    fn stale_ca_copy_and_wrong_modes_are_repaired_without_reissuing() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        let before = snapshot(&spec.dir);
        fs::write(paths.client_ca(), "stale").unwrap();
        fs::set_permissions(paths.client_key(), Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(paths.server_key(), Permissions::from_mode(0o644)).unwrap();
        fs::write(
            paths.client_dir().join(".cert.pem.tmp-4242"),
            "left by a crash",
        )
        .unwrap();

        let report = ensure(&spec).unwrap();

        assert_eq!(
            (report.ca, report.server, report.client),
            (Action::Reused, Action::Reused, Action::Reused)
        );
        let after = snapshot(&spec.dir);
        assert_eq!(after, before, "the set was not restored exactly");
        // The key went through the commit-marker dance: same bytes, new inode.
        assert_eq!(mode(&paths.client_key()), 0o644);
    }

    #[test]
    fn user_managed_pki_is_verified_and_left_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let root = foreign_ca("corp root", None);
        let (key_pem, cert_pem) = foreign_leaf(&root, None);
        write_user_pki(&paths, &root.pem, &cert_pem, &key_pem);
        fs::set_permissions(paths.server_key(), Permissions::from_mode(0o640)).unwrap();
        let before = snapshot(&spec.dir);

        let report = ensure(&spec).unwrap();

        assert_eq!(
            (report.ca, report.server, report.client),
            (
                Action::UserManaged,
                Action::UserManaged,
                Action::UserManaged
            )
        );
        assert_eq!(
            snapshot(&spec.dir),
            before,
            "a user-managed PKI was written to"
        );
        assert_eq!(report.ca_cert.path, paths.server_ca());
        assert_eq!(
            report.ca_cert.sha256_fingerprint,
            fingerprint(&ders(&paths.server_ca())[0])
        );
    }

    #[test]
    fn user_managed_chain_through_a_bundled_intermediate_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let root = foreign_ca("corp root", None);
        let other = foreign_ca("unrelated", None);
        let intermediate = foreign_ca("corp issuing", Some(&root));
        let (key_pem, cert_pem) = foreign_leaf(&intermediate, None);
        // A CA bundle whose second certificate is the anchor.
        let bundle = format!("{}{}", other.pem, root.pem);
        write_user_pki(
            &paths,
            &bundle,
            &format!("{cert_pem}{}", intermediate.pem),
            &key_pem,
        );

        let report = ensure(&spec).unwrap();

        assert_eq!(report.server, Action::UserManaged);
        assert_eq!(
            report.ca_cert.sha256_fingerprint,
            fingerprint(&ders(&paths.server_ca())[1])
        );
    }

    #[test]
    fn user_managed_cert_not_signed_by_its_ca_is_one_clear_line() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let (key_pem, cert_pem) = foreign_leaf(&foreign_ca("signer", None), None);
        write_user_pki(
            &paths,
            &foreign_ca("someone else", None).pem,
            &cert_pem,
            &key_pem,
        );
        let before = snapshot(&spec.dir);

        let err = ensure(&spec).unwrap_err();

        assert!(matches!(err, CertError::NotSignedBy { .. }), "{err:?}");
        let msg = one_line(&err);
        assert!(
            msg.starts_with(&format!(
                "certificate {} is not signed by {}: ",
                paths.server_cert().display(),
                paths.server_ca().display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("remove {}", paths.server_dir().display())),
            "{msg}"
        );
        assert_eq!(snapshot(&spec.dir), before);
    }

    #[test]
    fn user_managed_key_not_matching_its_cert_is_one_clear_line() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let root = foreign_ca("corp root", None);
        let (_, cert_pem) = foreign_leaf(&root, None);
        let (other_key, _) = foreign_leaf(&root, None);
        write_user_pki(&paths, &root.pem, &cert_pem, &other_key);

        let err = ensure(&spec).unwrap_err();

        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
        let msg = one_line(&err);
        assert!(
            msg.contains(&paths.server_cert().display().to_string()),
            "{msg}"
        );
        assert!(
            msg.contains(&paths.server_key().display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn user_managed_expired_cert_is_one_clear_line() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let root = foreign_ca("corp root", None);
        let yesterday = OffsetDateTime::now_utc() - Duration::from_secs(DAY);
        let (key_pem, cert_pem) = foreign_leaf(&root, Some(yesterday));
        write_user_pki(&paths, &root.pem, &cert_pem, &key_pem);

        let err = ensure(&spec).unwrap_err();

        assert!(matches!(err, CertError::Expired { .. }), "{err:?}");
        assert!(one_line(&err).contains(&paths.server_cert().display().to_string()));
    }

    #[test]
    fn incomplete_user_managed_pki_names_the_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        let root = foreign_ca("corp root", None);
        let (_, cert_pem) = foreign_leaf(&root, None);
        fs::create_dir_all(paths.server_dir()).unwrap();
        fs::write(paths.server_ca(), &root.pem).unwrap();
        fs::write(paths.server_cert(), cert_pem).unwrap();
        let before = snapshot(&spec.dir);

        let err = ensure(&spec).unwrap_err();

        assert!(
            matches!(&err, CertError::Missing { path, .. } if *path == paths.server_key()),
            "{err:?}"
        );
        one_line(&err);
        assert_eq!(snapshot(&spec.dir), before);
    }

    #[test]
    fn corrupt_ca_key_names_the_file_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        fs::write(
            paths.ca_key(),
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        // Something must be due, or a lazy implementation could pass by not looking.
        fs::remove_file(paths.server_cert()).unwrap();
        let before = snapshot(&spec.dir);

        let err = ensure(&spec).unwrap_err();

        assert!(
            matches!(&err, CertError::Malformed { path, .. } if *path == paths.ca_key()),
            "{err:?}"
        );
        let msg = one_line(&err);
        assert!(
            msg.starts_with(&format!(
                "{} is not a valid PEM private key: ",
                paths.ca_key().display()
            )),
            "{msg}"
        );
        assert_eq!(snapshot(&spec.dir), before);
        assert!(temporaries(&spec.dir).is_empty());

        // Garbage that is not PEM at all fails the same way.
        fs::write(paths.ca_key(), b"\x00\xffgarbage").unwrap();
        assert!(matches!(
            ensure(&spec).unwrap_err(),
            CertError::Malformed { .. }
        ));
    }

    #[test]
    fn corrupt_server_cert_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        fs::write(
            paths.server_cert(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let before = snapshot(&spec.dir);

        let err = ensure(&spec).unwrap_err();

        let msg = one_line(&err);
        assert!(
            msg.starts_with(&format!(
                "{} is not a valid PEM certificate",
                paths.server_cert().display()
            )),
            "{msg}"
        );
        assert_eq!(snapshot(&spec.dir), before);
    }

    #[test]
    fn managed_leaf_signed_by_a_foreign_ca_is_an_error_not_a_silent_reissue() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        // A certificate for the right key, signed by someone else.
        let foreign = foreign_ca("someone else", None);
        let server_key = key(&paths.server_key());
        let cert = CertificateParams::new(vec!["docker".to_owned()])
            .unwrap()
            .signed_by(&server_key, &foreign.issuer)
            .unwrap();
        fs::write(paths.server_cert(), cert.pem()).unwrap();
        let before = snapshot(&spec.dir);

        let err = ensure(&spec).unwrap_err();

        assert!(matches!(err, CertError::NotSignedBy { .. }), "{err:?}");
        assert_eq!(
            one_line(&err),
            format!(
                "certificate {} is not signed by {}: remove {} to have it re-issued, or fix your PKI",
                paths.server_cert().display(),
                paths.ca_cert().display(),
                paths.server_dir().display()
            )
        );
        assert_eq!(snapshot(&spec.dir), before);
    }

    #[test]
    fn managed_ca_cert_for_another_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        fs::write(paths.ca_cert(), foreign_ca("other", None).pem).unwrap();

        let err = ensure(&spec).unwrap_err();

        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
        assert!(one_line(&err).contains(&paths.ca_key().display().to_string()));
    }

    #[test]
    fn openssl_pkcs1_and_sec1_keys_are_kept_and_used() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        // As a docker:dind volume made with OpenSSL 1.1 plus a hand-made server key.
        fs::create_dir_all(paths.ca_dir()).unwrap();
        fs::create_dir_all(paths.server_dir()).unwrap();
        fs::write(paths.ca_key(), PKCS1_RSA_KEY).unwrap();
        fs::write(paths.server_key(), SEC1_P256_KEY).unwrap();

        let report = ensure(&spec).unwrap();

        assert_eq!(
            (report.ca, report.server, report.client),
            (
                Action::Reissued("missing"),
                Action::Reissued("CA re-issued"),
                Action::Minted
            )
        );
        assert_eq!(fs::read_to_string(paths.ca_key()).unwrap(), PKCS1_RSA_KEY);
        assert_eq!(
            fs::read_to_string(paths.server_key()).unwrap(),
            SEC1_P256_KEY
        );
        assert_chain(&paths.ca_cert(), &paths.ca_key(), &paths.ca_cert());
        assert_chain(
            &paths.server_cert(),
            &paths.server_key(),
            &paths.server_ca(),
        );
        assert_chain(
            &paths.client_cert(),
            &paths.client_key(),
            &paths.client_ca(),
        );
        assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
    }

    #[test]
    fn encrypted_keys_are_rejected_by_name() {
        let err = parse_key_pem(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(matches!(err, Malformed::Encrypted), "{err:?}");
    }

    #[test]
    fn rsa_2048_mints_a_working_set() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = spec(tmp.path());
        spec.key_type = KeyType::Rsa2048;
        let paths = Paths::new(&spec.dir);

        let report = ensure(&spec).unwrap();

        assert_eq!(report.server, Action::Minted);
        for key_path in [paths.ca_key(), paths.server_key(), paths.client_key()] {
            let key = key(&key_path);
            assert!(is_rsa(&key), "{} is not RSA", key_path.display());
            // 2048-bit modulus: the DER RSAPublicKey is 270 bytes.
            assert_eq!(key.der_bytes().len(), 270);
        }
        assert_chain(
            &paths.server_cert(),
            &paths.server_key(),
            &paths.server_ca(),
        );
        assert_chain(
            &paths.client_cert(),
            &paths.client_key(),
            &paths.client_ca(),
        );
        let server_der = ders(&paths.server_cert()).remove(0);
        let server = parse_x509(&server_der).unwrap();
        assert!(server
            .key_usage()
            .unwrap()
            .unwrap()
            .value
            .key_encipherment());
        assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
    }

    #[test]
    fn concurrent_ensure_on_one_empty_dir_mints_one_ca() {
        use std::sync::Barrier;

        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let barrier = Barrier::new(4);

        let reports: Vec<Report> = thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        ensure(&spec).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        let fingerprints: BTreeSet<_> = reports
            .iter()
            .map(|r| &r.ca_cert.sha256_fingerprint)
            .collect();
        assert_eq!(fingerprints.len(), 1, "{reports:#?}");
        assert_eq!(reports.iter().filter(|r| r.ca == Action::Minted).count(), 1);
        assert_eq!(
            reports
                .iter()
                .filter(|r| (r.ca, r.server, r.client)
                    == (Action::Reused, Action::Reused, Action::Reused))
                .count(),
            3
        );
        assert!(temporaries(&spec.dir).is_empty());
    }

    /// A job container polling client/ while the supervisor re-issues it,
    /// including across a CA change (which changes ca.pem and cert.pem) and a
    /// lost client key (which changes key.pem and cert.pem), must never read a
    /// set whose key, cert and CA disagree.
    #[test]
    fn client_set_is_never_seen_mismatched_during_reissues() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        ensure(&spec).unwrap();
        let stop = AtomicBool::new(false);
        let checked = AtomicUsize::new(0);

        thread::scope(|s| {
            let reader = s.spawn(|| {
                let identity = |m: &fs::Metadata| (m.ino(), m.ctime(), m.ctime_nsec());
                while !stop.load(Ordering::Relaxed) {
                    // The reader protocol from the module docs: key.pem is the
                    // commit marker and must be the same file before and after.
                    let Ok(before) = fs::metadata(paths.client_key()) else {
                        continue;
                    };
                    let (Ok(ca), Ok(cert), Ok(key_pem)) = (
                        fs::read(paths.client_ca()),
                        fs::read(paths.client_cert()),
                        fs::read(paths.client_key()),
                    ) else {
                        continue;
                    };
                    let Ok(after) = fs::metadata(paths.client_key()) else {
                        continue;
                    };
                    if identity(&before) != identity(&after) {
                        continue;
                    }
                    let ca = parse_cert_pem(&ca).expect("client/ca.pem is always complete");
                    let cert = parse_cert_pem(&cert).expect("client/cert.pem is always complete");
                    let key = parse_key_pem(&key_pem).expect("client/key.pem is always complete");
                    let ca = parse_x509(&ca[0]).unwrap();
                    let cert = parse_x509(&cert[0]).unwrap();
                    assert!(key_matches(&key, &cert), "client key and cert disagree");
                    assert!(
                        signed_by(&cert, &ca),
                        "client cert not signed by client/ca.pem"
                    );
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            });
            for i in 0..40 {
                if i % 2 == 0 {
                    // A new CA: ca.pem and cert.pem change, the client key stays.
                    fs::remove_dir_all(paths.ca_dir()).unwrap();
                    fs::remove_dir_all(paths.server_dir()).unwrap();
                } else {
                    // A lost client key: key.pem and cert.pem change.
                    fs::remove_file(paths.client_key()).unwrap();
                }
                let report = ensure(&spec).unwrap();
                assert_ne!(report.client, Action::Reused);
                thread::sleep(Duration::from_millis(2));
            }
            stop.store(true, Ordering::Relaxed);
            reader.join().unwrap();
        });

        assert!(
            checked.load(Ordering::Relaxed) > 0,
            "the reader never saw a complete set"
        );
    }

    /// A read-only bind mount of `src` at `dst`, undone on drop. Needs root,
    /// which the test suite runs as; without it the test fails saying so.
    struct ReadOnlyBind(PathBuf);

    impl ReadOnlyBind {
        fn new(src: &Path, dst: &Path) -> Self {
            use nix::mount::{mount, MsFlags};
            let none = None::<&str>;
            fs::create_dir_all(dst).unwrap();
            mount(Some(src), dst, none, MsFlags::MS_BIND, none)
                .unwrap_or_else(|e| panic!("bind mount needs root (CAP_SYS_ADMIN): {e}"));
            let guard = ReadOnlyBind(dst.to_owned());
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(none, dst, none, ro, none)
                .unwrap_or_else(|e| panic!("read-only remount needs root (CAP_SYS_ADMIN): {e}"));
            guard
        }
    }

    impl Drop for ReadOnlyBind {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[test]
    fn read_only_volume_works_until_something_is_due_then_fails_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let rw = spec(&tmp.path().join("rw"));
        let ro = CertSpec {
            dir: tmp.path().join("ro"),
            ..rw.clone()
        };
        ensure(&rw).unwrap();
        let _mount = ReadOnlyBind::new(&rw.dir, &ro.dir);

        // Locking the directory needs no write, so a valid set is usable.
        let report = ensure(&ro).unwrap();
        assert_eq!(
            (report.ca, report.server, report.client),
            (Action::Reused, Action::Reused, Action::Reused)
        );

        fs::remove_file(Paths::new(&rw.dir).server_cert()).unwrap();
        let before = snapshot(&rw.dir);
        let err = ensure(&ro).unwrap_err();

        let ro_paths = Paths::new(&ro.dir);
        assert!(
            matches!(&err, CertError::Write { path, source } if *path == ro_paths.server_cert()
                && source.raw_os_error() == Some(Errno::EROFS as i32)),
            "{err:?}"
        );
        let msg = one_line(&err);
        assert!(msg.contains("read-only"), "{msg}");
        assert_eq!(snapshot(&rw.dir), before);
        assert!(temporaries(&rw.dir).is_empty());
    }

    #[test]
    fn empty_read_only_volume_is_one_clear_line() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("empty");
        fs::create_dir(&src).unwrap();
        let spec = spec(&tmp.path().join("ro"));
        let _mount = ReadOnlyBind::new(&src, &spec.dir);

        let err = ensure(&spec).unwrap_err();

        assert!(matches!(err, CertError::CreateDir { .. }), "{err:?}");
        assert!(one_line(&err).contains(&spec.dir.join("ca").display().to_string()));
        assert!(snapshot(&src).is_empty());
    }

    #[test]
    fn user_managed_pki_on_a_read_only_volume_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let rw = Paths::new(tmp.path().join("rw"));
        let root = foreign_ca("corp root", None);
        let (key_pem, cert_pem) = foreign_leaf(&root, None);
        write_user_pki(&rw, &root.pem, &cert_pem, &key_pem);
        let spec = spec(&tmp.path().join("ro"));
        let _mount = ReadOnlyBind::new(rw.dir(), &spec.dir);

        assert_eq!(ensure(&spec).unwrap().server, Action::UserManaged);
    }

    #[test]
    fn target_under_a_regular_file_is_one_clear_line() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let spec = CertSpec {
            dir: file.join("certs"),
            ..spec(tmp.path())
        };

        let err = ensure(&spec).unwrap_err();

        assert!(matches!(err, CertError::CreateDir { .. }), "{err:?}");
        assert!(one_line(&err).contains(&spec.dir.display().to_string()));
        assert_eq!(fs::read(&file).unwrap(), b"x");
        assert_eq!(snapshot(tmp.path()).len(), 1);
    }

    #[test]
    fn failed_write_removes_its_temporaries_and_installs_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec(tmp.path());
        let paths = Paths::new(&spec.dir);
        // A directory where the client key's temporary file must go, the last
        // one written: every write before it succeeds, that one fails.
        let blocker = paths
            .client_dir()
            .join(format!(".key.pem.tmp-{}", std::process::id()));
        fs::create_dir_all(&blocker).unwrap();

        let err = ensure(&spec).unwrap_err();

        assert!(
            matches!(&err, CertError::Write { path, .. } if *path == paths.client_key()),
            "{err:?}"
        );
        assert!(one_line(&err).contains(&paths.client_key().display().to_string()));
        assert_eq!(temporaries(&spec.dir), std::slice::from_ref(&blocker));
        let files: Vec<_> = snapshot(&spec.dir)
            .into_keys()
            .filter(|p| p.is_file())
            .collect();
        assert!(files.is_empty(), "installed despite the failure: {files:?}");

        fs::remove_dir(&blocker).unwrap();
        let report = ensure(&spec).unwrap();
        assert_eq!(
            (report.ca, report.server, report.client),
            (Action::Minted, Action::Minted, Action::Minted)
        );
        assert_chain(
            &paths.client_cert(),
            &paths.client_key(),
            &paths.client_ca(),
        );
    }

    #[test]
    fn parse_openssl_sans_accepts_the_docker_dind_syntax() {
        assert_eq!(
            parse_openssl_sans("DNS:dind,IP:10.0.0.5").unwrap(),
            [
                San::Dns("dind".into()),
                San::Ip("10.0.0.5".parse().unwrap())
            ]
        );
        assert_eq!(
            parse_openssl_sans(" dns:Build.Example.COM  ip:::1,,IP:[fd00::1]\tDns:*.svc.local ")
                .unwrap(),
            [
                San::Dns("build.example.com".into()),
                San::Ip("::1".parse().unwrap()),
                San::Ip("fd00::1".parse().unwrap()),
                San::Dns("*.svc.local".into()),
            ]
        );
        assert_eq!(parse_openssl_sans("").unwrap(), []);
        assert_eq!(parse_openssl_sans(" , ").unwrap(), []);
        assert_eq!(San::Ip("::1".parse().unwrap()).to_string(), "IP:::1");
        assert_eq!(San::Dns("dind".into()).to_string(), "DNS:dind");
    }

    #[test]
    fn parse_openssl_sans_names_the_bad_entry() {
        for (input, bad) in [
            ("DNS:ok,dind", "dind"),
            ("URI:http://x", "URI:http://x"),
            ("email:a@b", "email:a@b"),
            ("IP:300.1.1.1", "IP:300.1.1.1"),
            ("IP:dind", "IP:dind"),
            ("DNS:", "DNS:"),
            ("DNS:-bad.example", "DNS:-bad.example"),
            ("DNS:a..b", "DNS:a..b"),
            ("DNS:caf\u{e9}.example", "DNS:caf\u{e9}.example"),
        ] {
            let err = parse_openssl_sans(input).unwrap_err();
            assert!(
                matches!(&err, CertError::BadSan { entry, .. } if entry == bad),
                "{input}: {err:?}"
            );
            let msg = one_line(&err);
            assert!(
                msg.contains(&format!("{bad:?}")) && msg.contains(DOCKER_TLS_SAN),
                "{msg}"
            );
        }
    }

    #[test]
    fn fqdn_comes_from_the_first_hosts_line_naming_the_hostname() {
        let hosts = "# comment testhost.wrong\n\
                     127.0.0.1\tlocalhost\n\
                     10.0.0.2 node7.ci.example.com node7 # the container\n\
                     10.0.0.3 node7.other.example node7\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "node7").as_deref(),
            Some("node7.ci.example.com")
        );
        assert_eq!(
            fqdn_from_hosts(hosts, "NODE7").as_deref(),
            Some("node7.ci.example.com")
        );
        assert_eq!(fqdn_from_hosts(hosts, "testhost"), None);
        // docker's own /etc/hosts: the canonical name is the bare hostname.
        assert_eq!(fqdn_from_hosts("172.17.0.3\tabc123\n", "abc123"), None);
        assert_eq!(fqdn_from_hosts("", "abc123"), None);
    }

    #[test]
    fn assembled_sans_are_sorted_deduplicated_and_skip_link_local() {
        let sans = assemble_sans(
            Some("Host_1"),
            "",
            ["127.0.0.1".parse().unwrap(), "fe80::42".parse().unwrap()],
            &[San::Dns("DOCKER".into())],
        );
        assert_eq!(
            sans.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "DNS:docker",
                "DNS:host_1",
                "DNS:localhost",
                "IP:127.0.0.1",
                "IP:::1"
            ]
        );
        // An unusable hostname is left out rather than failing the bootstrap.
        assert!(!assemble_sans(Some("bad host"), "", [], &[])
            .iter()
            .any(|s| s.to_string().contains("bad")));
    }

    #[test]
    fn default_sans_on_this_machine_cover_the_loopbacks_and_hostname() {
        let extra = San::Dns("extra.example".into());
        let sans = default_sans(std::slice::from_ref(&extra));
        for want in [
            San::Dns("docker".into()),
            San::Dns("localhost".into()),
            San::Ip(Ipv4Addr::LOCALHOST.into()),
            San::Ip(Ipv6Addr::LOCALHOST.into()),
            extra,
        ] {
            assert!(sans.contains(&want), "{want} missing from {sans:?}");
        }
        let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
        if is_dns_name(&hostname) {
            assert!(sans.contains(&San::Dns(hostname.to_ascii_lowercase())));
        }
        assert!(
            sans.windows(2).all(|w| w[0] < w[1]),
            "not sorted and unique: {sans:?}"
        );
    }

    #[test]
    fn out_of_range_validity_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = spec(tmp.path());
        spec.validity = Duration::from_secs(u64::MAX);
        let err = ensure(&spec).unwrap_err();
        assert!(matches!(err, CertError::BadValidity { .. }), "{err:?}");
        assert!(temporaries(&spec.dir).is_empty());
    }
}
