//! The client's TLS: certificate files read afresh for every attempt, and
//! the verifier for `DOCKER_TLS` without verification.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::*;

/// A client config from the files as they are now. Missing files are a
/// cause to retry on, not a configuration error: the service writes them
/// after the job may have started.
pub(super) fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, Cause> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Cause::Tls {
            addr: files.dir.display().to_string(),
            reason: e.to_string(),
        })?;
    let ca_path = files.dir.join("ca.pem");
    let cert_path = files.dir.join("cert.pem");
    let key_path = files.dir.join("key.pem");
    let builder = if files.verify {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&ca_path)? {
            roots.add(cert).map_err(|e| Cause::CertUnusable {
                path: ca_path.clone(),
                reason: e.to_string(),
            })?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
    };
    let with_client_cert = files.verify || (cert_path.exists() && key_path.exists());
    let config = if with_client_cert {
        let chain = read_certs(&cert_path)?;
        let key = read_key(&key_path)?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Cause::CertUnusable {
                path: key_path.clone(),
                reason: e.to_string(),
            })?
    } else {
        builder.with_no_client_auth()
    };
    Ok(Arc::new(config))
}

pub(super) fn read_pem(path: &Path) -> Result<Vec<u8>, Cause> {
    std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Cause::CertMissing {
            path: path.to_owned(),
        },
        _ => Cause::CertUnusable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })
}

pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Cause> {
    let data = read_pem(path)?;
    let unusable = |reason: String| Cause::CertUnusable {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    if certs.is_empty() {
        return Err(unusable("no PEM certificate in it".into()));
    }
    Ok(certs)
}

pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Cause> {
    let data = read_pem(path)?;
    let unusable = |reason: String| Cause::CertUnusable {
        path: path.to_owned(),
        reason,
    };
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        pem::Error::NoItemsFound => unusable("no PEM private key in it".into()),
        e => unusable(e.to_string()),
    })
}

/// `DOCKER_TLS` without `DOCKER_TLS_VERIFY`: encrypt, but accept any server
/// certificate (handshake signatures are still checked), as the docker CLI
/// does.
#[derive(Debug)]
pub(super) struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
