//! Client authentication: mutual TLS against the service's own CA.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};

use crate::metrics::HandshakeFailure;

/// Why the TLS endpoint cannot be set up; each names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not valid PEM: {source}; re-create the certificate set (dind-supervisor certs)", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{} holds no {what}; re-create the certificate set (dind-supervisor certs)", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("TLS configuration from {} is unusable: {source}", dir.display())]
    Rustls {
        dir: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Where the server side of the certificate set lives (`server/` of the
/// stock layout).
#[derive(Clone, Debug)]
pub struct ServerFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A rustls server that requires a client certificate signed by `files.ca`,
/// TLS 1.2 and 1.3, ring as the one crypto provider.
pub fn server_config(files: &ServerFiles) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca)? {
        roots
            .add(ca)
            .map_err(|source| rustls_err(&files.ca, source))?;
    }
    let dir = files.cert.parent().unwrap_or(Path::new("/")).to_owned();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError::Rustls {
            dir: dir.clone(),
            source: rustls::Error::General(e.to_string()),
        })?;
    let key = key(&files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsSetupError::Rustls {
            dir: dir.clone(),
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key)
        .map_err(|source| TlsSetupError::Rustls { dir, source })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn rustls_err(path: &Path, source: rustls::Error) -> TlsSetupError {
    TlsSetupError::Rustls {
        dir: path.to_owned(),
        source,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsSetupError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsSetupError::Empty {
            path: path.to_owned(),
            what: "private key",
        },
        source => TlsSetupError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

/// The subject of a client certificate (`CN=docker-client`), for the audit
/// log. The verifier already accepted the certificate; this only reads it.
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// Names why a handshake failed, from the rustls error in the io::Error's
/// source chain (tokio-rustls wraps it), never from message text.
pub fn classify(err: &io::Error) -> HandshakeFailure {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            io::ErrorKind::TimedOut => HandshakeFailure::Timeout,
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                HandshakeFailure::Protocol
            }
            _ => HandshakeFailure::Other,
        };
    };
    match tls {
        rustls::Error::NoCertificatesPresented => HandshakeFailure::NoClientCert,
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                HandshakeFailure::UnknownCa
            }
            CertificateError::Expired | CertificateError::NotValidYet => HandshakeFailure::Expired,
            CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYetContext { .. } => HandshakeFailure::Expired,
            _ => HandshakeFailure::BadCert,
        },
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. }
        | rustls::Error::PeerIncompatible(_)
        | rustls::Error::PeerMisbehaved(_)
        | rustls::Error::AlertReceived(_) => HandshakeFailure::Protocol,
        _ => HandshakeFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_reads_the_typed_cause() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            classify(&wrap(rustls::Error::NoCertificatesPresented)),
            HandshakeFailure::NoClientCert
        );
        assert_eq!(
            classify(&wrap(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))),
            HandshakeFailure::UnknownCa
        );
        assert_eq!(
            classify(&wrap(rustls::Error::InvalidCertificate(
                CertificateError::Expired
            ))),
            HandshakeFailure::Expired
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::TimedOut)),
            HandshakeFailure::Timeout
        );
    }

    #[test]
    fn missing_files_name_the_path() {
        let files = ServerFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = server_config(&files).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
