//! What can go wrong with the certificate set, each error naming the file
//! and the fix.

use crate::env::{DOCKER_TLS_CERTDIR, DOCKER_TLS_SAN};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use time::OffsetDateTime;
use x509_parser::error::X509Error;

/// Why a PEM file could not be used; the `#[source]` of [`CertError::Malformed`].
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("bad PEM encoding")]
    Pem(#[source] rustls::pki_types::pem::Error),
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
    #[error("cannot create certificate directory {}: {}", .path.display(), io_fix(.source))]
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
    #[error("cannot write {}: {}", .path.display(), io_fix(.source))]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The fix for a change the OS refused, chosen by its errno (never by its
/// text): a read-only volume, a full disk and a denied permission each need
/// another.
pub(super) fn io_fix(source: &io::Error) -> String {
    match source.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EROFS) => "the volume is read-only: mount it read-write, or put a complete set on it beforehand (a user-managed PKI is only read)".into(),
        Some(Errno::ENOSPC | Errno::EDQUOT) => "the volume is full: free space on it, or raise its quota".into(),
        Some(Errno::EACCES | Errno::EPERM) => format!(
            "permission denied: make the directory writable by uid {}",
            nix::unistd::geteuid()
        ),
        Some(Errno::ENOTDIR) => {
            format!("a file is in the way: point {DOCKER_TLS_CERTDIR} at a directory")
        }
        _ => "make the directory writable and check free space".into(),
    }
}

pub(super) fn malformed(
    path: &Path,
    what: &'static str,
    fix: String,
    source: Malformed,
) -> CertError {
    CertError::Malformed {
        path: path.to_owned(),
        what,
        fix,
        source: Box::new(source),
    }
}
