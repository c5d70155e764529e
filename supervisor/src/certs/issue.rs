//! Issuing the CA and leaf certificates with rcgen.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

#[derive(Debug)]
pub(super) enum IssueError {
    Rcgen(rcgen::Error),
    Other(CertError),
}

impl IssueError {
    pub(super) fn at(self, path: PathBuf) -> CertError {
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
pub(super) fn base_params(
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

pub(super) fn issue_ca(
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

pub(super) fn issue_leaf(
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
