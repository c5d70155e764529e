//! Reading what is already on disk: PEM, certificates, keys, and the
//! checks that decide whether they can be kept.

use std::collections::BTreeSet;
use std::fs::{self};
use std::io::{self};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::*;
use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::pem::{PemObject, SectionKind};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

/// A PEM file of one or more certificates, as read from disk.
pub(super) struct CertFile {
    pub(super) path: PathBuf,
    pub(super) pem: Vec<u8>,
    pub(super) ders: Vec<Vec<u8>>,
    /// What to tell the operator if this file turns out to be unusable.
    pub(super) fix: String,
}

impl CertFile {
    /// `Ok(None)` if the file does not exist.
    pub(super) fn read(path: PathBuf, fix: &str) -> Result<Option<Self>, CertError> {
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
    pub(super) fn leaf(&self) -> Result<X509Certificate<'_>, CertError> {
        self.nth(0)
    }

    /// Every block parsed once already in [`CertFile::read`]; this cannot fail
    /// unless that changes, but it is not worth a panic.
    pub(super) fn nth(&self, i: usize) -> Result<X509Certificate<'_>, CertError> {
        parse_x509(self.der(i)?)
            .map_err(|e| malformed(&self.path, "certificate", self.fix.clone(), e))
    }

    pub(super) fn der(&self, i: usize) -> Result<&[u8], CertError> {
        self.ders.get(i).map(Vec::as_slice).ok_or_else(|| {
            malformed(
                &self.path,
                "certificate",
                self.fix.clone(),
                Malformed::NoBlock("CERTIFICATE"),
            )
        })
    }

    pub(super) fn info(&self, i: usize) -> Result<CertInfo, CertError> {
        CertInfo::new(self.path.clone(), self.der(i)?, &self.fix)
    }
}

/// A private key as read from disk; its bytes are written back unchanged.
pub(super) struct KeyFile {
    pub(super) pem: Vec<u8>,
    pub(super) key: KeyPair,
}

impl KeyFile {
    pub(super) fn read(path: &Path, fix: &str) -> Result<Option<Self>, CertError> {
        let Some(pem) = read_opt(path, fix)? else {
            return Ok(None);
        };
        let key = parse_key_pem(&pem).map_err(|e| malformed(path, "private key", fix.into(), e))?;
        Ok(Some(KeyFile { pem, key }))
    }
}

pub(super) fn read_opt(path: &Path, fix: &str) -> Result<Option<Vec<u8>>, CertError> {
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

/// Every PEM section of a kind we know, in order; others (`EC PARAMETERS`
/// before an `openssl ecparam` key) are skipped.
pub(super) fn pem_sections(
    pem: &[u8],
) -> impl Iterator<Item = Result<(SectionKind, Vec<u8>), Malformed>> + '_ {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).map(|section| section.map_err(Malformed::Pem))
}

/// The DER of every CERTIFICATE block, each checked to parse.
pub(super) fn parse_cert_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, Malformed> {
    let mut ders = Vec::new();
    for section in pem_sections(pem) {
        if let (SectionKind::Certificate, der) = section? {
            parse_x509(&der)?;
            ders.push(der);
        }
    }
    if ders.is_empty() {
        return Err(Malformed::NoBlock("CERTIFICATE"));
    }
    Ok(ders)
}

pub(super) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, Malformed> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| {
            Malformed::X509(match e {
                x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
                x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
            })
        })
}

const ENCRYPTED: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";

/// Loads the first private key block. Besides PKCS#8 (what we and OpenSSL 3
/// write) it takes PKCS#1 `RSA PRIVATE KEY` (docker:dind volumes made with
/// OpenSSL 1.1) and SEC1 `EC PRIVATE KEY` (`openssl ecparam -genkey`), which
/// ring cannot read directly, by converting them to PKCS#8 in memory.
pub(super) fn parse_key_pem(pem: &[u8]) -> Result<KeyPair, Malformed> {
    // Not a section kind the PEM reader knows, so it would be skipped and
    // reported as no key at all; say what it is instead.
    if pem.windows(ENCRYPTED.len()).any(|w| w == ENCRYPTED) {
        return Err(Malformed::Encrypted);
    }
    for section in pem_sections(pem) {
        match section? {
            (SectionKind::PrivateKey, der) => {
                return KeyPair::try_from(der.as_slice()).map_err(Malformed::Key)
            }
            (SectionKind::RsaPrivateKey, der) => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&der).map_err(Malformed::Pkcs1)?;
                let der = key.to_pkcs8_der().map_err(Malformed::Pkcs8)?;
                return KeyPair::try_from(der.as_bytes()).map_err(Malformed::Key);
            }
            (SectionKind::EcPrivateKey, der) => {
                let der = sec1_to_pkcs8(&der).ok_or(Malformed::Sec1)?;
                return KeyPair::try_from(der.as_slice()).map_err(|_| Malformed::Sec1);
            }
            _ => continue,
        }
    }
    Err(Malformed::NoBlock("PRIVATE KEY"))
}

pub(super) fn key_matches(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.der_bytes() == &*cert.public_key().subject_public_key.data
}

pub(super) fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.verify_signature(Some(issuer.public_key())).is_ok()
}

pub(super) fn expires_soon(cert: &X509Certificate<'_>, now: OffsetDateTime) -> bool {
    cert.validity().not_after.to_datetime() <= now + RENEW_BEFORE
}

/// DNS names and IP addresses of a certificate; other SAN kinds are ignored.
pub(super) fn cert_sans(cert: &X509Certificate<'_>) -> BTreeSet<San> {
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

pub(super) fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
