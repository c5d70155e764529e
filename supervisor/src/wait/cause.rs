//! Why an attempt failed, worded for a CI log: the [`Cause`] taxonomy and
//! the classifiers that map a connect, TLS or HTTP error onto it.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::StatusCode;
use nix::errno::Errno;
use rustls::{AlertDescription, CertificateError};
use tokio::time::Instant;

use super::*;

/// What Go's net/http answers to plain HTTP on a TLS port.
pub(super) const GO_TLS_PORT_ANSWER: &str = "Client sent an HTTP request to an HTTPS server";

/// The stage an attempt was in when the peer hung up or went quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    TlsHandshake,
    Request,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::TlsHandshake => "the TLS handshake",
            Stage::Request => "the request",
        })
    }
}

/// Why one attempt failed. Display is one line for a CI log, with the fix
/// where one is obvious. `addr` is `host:port` as the user wrote it (plus
/// the IP when a name was resolved); `path` is a file or socket path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    #[error(
        "`{host}` does not resolve ({reason}): is the service running, and is its alias `{host}`?"
    )]
    Unresolvable { host: String, reason: String },
    #[error("`{host}` does not resolve (no answer from the name servers within {}): is the service running, and is its alias `{host}`?", fmt_duration(*.after))]
    ResolveTimeout { host: String, after: Duration },
    #[error("nothing listens on {addr} yet")]
    Refused { addr: String },
    #[error("{addr} did not accept the connection within {}: packets are dropped on the way (a firewall, or the wrong address?)", fmt_duration(*.after))]
    ConnectTimeout { addr: String, after: Duration },
    #[error("{addr} is unreachable ({reason}): this job has no route to the service's network")]
    Unreachable { addr: String, reason: String },
    #[error("{} does not exist yet", .path.display())]
    SocketMissing { path: PathBuf },
    #[error("permission denied on {}: run the job as root or in the socket's group", .path.display())]
    SocketDenied { path: PathBuf },
    #[error("{} exists but nothing accepts connections on it yet", .path.display())]
    SocketRefused { path: PathBuf },
    #[error("{} does not exist yet: with DOCKER_TLS_VERIFY set, the service writes the client certificates to the volume shared at DOCKER_CERT_PATH (is it mounted in the job?)", .path.display())]
    CertMissing { path: PathBuf },
    #[error("{} cannot be used: {reason}", .path.display())]
    CertUnusable { path: PathBuf, reason: String },
    #[error("the certificate of {addr} is not signed by {}: DOCKER_CERT_PATH holds the certificates of another service instance (a stale volume?)", .ca.display())]
    UnknownCa { addr: String, ca: PathBuf },
    #[error("the certificate of {addr} is not valid for `{host}`{}: connect by a name it lists, or add `{host}` to DOCKER_TLS_SAN on the service", listed(.presented))]
    NameMismatch {
        addr: String,
        host: String,
        presented: Vec<String>,
    },
    #[error("the certificate of {addr} {reason}: check the clocks, or let the service re-issue its certificates")]
    CertTime { addr: String, reason: String },
    #[error("{addr} rejected our client certificate (TLS alert {alert}): cert.pem in DOCKER_CERT_PATH is missing or not signed by the service's CA")]
    ClientCertRejected { addr: String, alert: String },
    #[error("{addr} does not speak TLS (a plain HTTP port?): use port 2375 and unset DOCKER_TLS_VERIFY, or the TLS port 2376")]
    NotTls { addr: String },
    #[error("{addr} expects TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or use the plain port 2375")]
    TlsRequired { addr: String },
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("{addr} accepted the connection but {stage} did not finish within {}", fmt_duration(*.after))]
    NoAnswer {
        addr: String,
        stage: Stage,
        after: Duration,
    },
    #[error("{addr} closed the connection during {stage}")]
    Closed { addr: String, stage: Stage },
    #[error("{addr} does not answer HTTP ({reason}){}", if *.tls { "" } else { ": a TLS port? then set DOCKER_TLS_VERIFY=1" })]
    NotHttp {
        addr: String,
        reason: String,
        tls: bool,
    },
    #[error("the engine answered {}{}", status_text(*.status), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        status: u16,
        message: Option<String>,
    },
    #[error("cannot reach {addr}: {reason}")]
    Io { addr: String, reason: String },
}

impl Cause {
    /// A deadline ran out, as opposed to a definite answer.
    pub(super) fn is_timeout(&self) -> bool {
        matches!(
            self,
            Cause::ResolveTimeout { .. } | Cause::ConnectTimeout { .. } | Cause::NoAnswer { .. }
        )
    }
}

pub(super) fn fmt_duration(d: Duration) -> humantime::FormattedDuration {
    // Whole milliseconds: nanosecond noise helps nobody.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

pub(super) fn listed(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it lists {})", names.join(", "))
    }
}

pub(super) fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// Finds a `T` in `err`'s source chain, looking inside `io::Error`s too
/// (their `source()` skips the wrapped error itself).
pub(super) fn find_in_chain<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(t) = find_in_chain::<T>(inner) {
                return Some(t);
            }
        }
        next = e.source();
    }
    None
}

pub(super) fn tls_cause(err: &rustls::Error, addr: &str, host: &Host, files: &TlsFiles) -> Cause {
    let addr = addr.to_owned();
    let host_text = || match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.clone(),
    };
    match err {
        // BadSignature: a CA with the same name but another key, as when a
        // volume keeps the client files of an earlier service instance.
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            Cause::UnknownCa {
                addr,
                ca: files.dir.join("ca.pem"),
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => Cause::NameMismatch {
            addr,
            host: host_text(),
            presented: Vec::new(),
        },
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => {
            Cause::NameMismatch {
                addr,
                host: host_text(),
                presented: presented.clone(),
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            Cause::CertTime {
                addr,
                reason: "has expired".into(),
            }
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => Cause::CertTime {
            addr,
            reason: "is not valid yet".into(),
        },
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied
            // The signature on our certificate did not verify: a client
            // certificate from a CA with the same name but another key.
            | AlertDescription::DecryptError),
        ) => Cause::ClientCertRejected {
            addr,
            alert: format!("{alert:?}"),
        },
        // Bytes that are no TLS record: typically "HTTP/1.1 400 Bad Request"
        // from a plain HTTP server answering our ClientHello.
        rustls::Error::InvalidMessage(_) => Cause::NotTls { addr },
        other => Cause::Tls {
            addr,
            reason: other.to_string(),
        },
    }
}

pub(super) fn unix_cause(path: &Path, err: &io::Error) -> Cause {
    let path = path.to_owned();
    match err.kind() {
        io::ErrorKind::NotFound => Cause::SocketMissing { path },
        io::ErrorKind::PermissionDenied => Cause::SocketDenied { path },
        io::ErrorKind::ConnectionRefused => Cause::SocketRefused { path },
        _ => Cause::Io {
            addr: path.display().to_string(),
            reason: err.to_string(),
        },
    }
}

pub(super) fn tcp_cause(addr: String, err: &io::Error, started: Instant) -> Cause {
    let errno = err.raw_os_error().map(Errno::from_raw);
    match (err.kind(), errno) {
        (io::ErrorKind::ConnectionRefused, _) => Cause::Refused { addr },
        (_, Some(Errno::EHOSTUNREACH | Errno::ENETUNREACH | Errno::EADDRNOTAVAIL)) => {
            Cause::Unreachable {
                addr,
                reason: err.to_string(),
            }
        }
        (io::ErrorKind::TimedOut, _) => Cause::ConnectTimeout {
            addr,
            after: started.elapsed(),
        },
        _ => Cause::Io {
            addr,
            reason: err.to_string(),
        },
    }
}
