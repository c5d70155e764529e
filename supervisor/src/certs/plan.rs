//! Deciding, before any write, which keys and certificates to keep and
//! which to (re-)issue.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use rcgen::{Issuer, KeyPair};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

/// A file as it must end up: `bytes` is `None` when the file on disk stays.
pub(super) struct Output {
    pub(super) path: PathBuf,
    pub(super) bytes: Option<Vec<u8>>,
    pub(super) mode: u32,
}

/// One of the three sets, ready to install.
pub(super) struct SetPlan {
    pub(super) dir: PathBuf,
    /// In commit order.
    pub(super) outputs: Vec<Output>,
    /// Hide the last output while the others change (the client protocol).
    pub(super) last_is_marker: bool,
}

/// Everything [`ensure`] will write for a PKI whose CA key it holds, decided
/// and signed before the first write.
pub(super) struct Managed {
    pub(super) sets: [SetPlan; 3],
    pub(super) report: Report,
}

/// A key as it will be on disk; `pem` is the file's own bytes when kept.
pub(super) struct PlannedKey {
    pub(super) key: KeyPair,
    pub(super) pem: Vec<u8>,
    pub(super) new: bool,
}

/// A leaf certificate's fate; `pem` is `Some` when it is (re-)issued.
pub(super) struct PlannedCert {
    pub(super) action: Action,
    pub(super) pem: Option<Vec<u8>>,
    pub(super) info: CertInfo,
}

/// Which leaf, and what it differs in.
#[derive(Clone, Copy)]
pub(super) enum Leaf {
    Server,
    Client,
}

/// The fix each error names, per file of the set.
struct Fixes {
    ca_key: String,
    ca_cert: String,
    server: String,
    client: String,
}

impl Fixes {
    fn new(paths: &Paths) -> Self {
        let leaf = |dir: PathBuf| {
            format!(
                "remove {} to have it re-issued, or fix your PKI",
                dir.display()
            )
        };
        Fixes {
            ca_key: format!(
                "restore it, or remove {} to have a new CA minted (clients must then use the new ca.pem)",
                paths.ca_dir().display()
            ),
            ca_cert: format!("remove it to have it re-issued from {}", paths.ca_key().display()),
            server: leaf(paths.server_dir()),
            client: leaf(paths.client_dir()),
        }
    }
}

/// The CA certificate's fate: its PEM as it will be on disk.
struct PlannedCa {
    action: Action,
    pem: Vec<u8>,
}

impl PlannedCa {
    fn written(&self) -> bool {
        self.action != Action::Reused
    }
}

/// What signing a leaf needs: the CA as parsed from its certificate.
struct Signer<'a> {
    spec: &'a CertSpec,
    now: OffsetDateTime,
    ca_path: PathBuf,
    ca_x509: &'a X509Certificate<'a>,
    issuer: &'a Issuer<'a, &'a KeyPair>,
    /// Every leaf is re-issued under a re-issued CA certificate.
    ca_written: bool,
    wanted_sans: BTreeSet<San>,
}

impl Managed {
    pub(super) fn plan(
        spec: &CertSpec,
        paths: &Paths,
        now: OffsetDateTime,
    ) -> Result<Self, CertError> {
        let fixes = Fixes::new(paths);
        let [ca_key, server_key, client_key] = plan_keys(spec, paths, &fixes)?;
        let ca = plan_ca(spec, paths, now, &ca_key, &fixes.ca_cert)?;
        let ca_malformed = |e| malformed(&paths.ca_cert(), "certificate", fixes.ca_cert.clone(), e);
        let ca_der = parse_cert_pem(&ca.pem)
            .map_err(ca_malformed)?
            .swap_remove(0);
        let ca_x509 = parse_x509(&ca_der).map_err(ca_malformed)?;
        // Built from the certificate, not from our parameters, so leaves name
        // their issuer exactly as a user-provided CA certificate does.
        let issuer =
            Issuer::from_ca_cert_der(&ca_der.as_slice().into(), &ca_key.key).map_err(|source| {
                CertError::Issue {
                    path: paths.ca_cert(),
                    source,
                }
            })?;
        let signer = Signer {
            spec,
            now,
            ca_path: paths.ca_cert(),
            ca_x509: &ca_x509,
            issuer: &issuer,
            ca_written: ca.written(),
            wanted_sans: spec.sans.iter().map(San::normalized).collect(),
        };
        let server = signer.leaf(
            Leaf::Server,
            &server_key,
            paths.server_cert(),
            &fixes.server,
        )?;
        let client = signer.leaf(
            Leaf::Client,
            &client_key,
            paths.client_cert(),
            &fixes.client,
        )?;
        let report = Report {
            ca: ca.action,
            server: server.action,
            client: client.action,
            elapsed: Duration::ZERO,
            server_cert: server.info,
            ca_cert: CertInfo::new(paths.ca_cert(), &ca_der, &fixes.ca_cert)?,
        };
        let sets = layout(
            paths,
            &fixes,
            &ca,
            [ca_key, server_key, client_key],
            [server.pem, client.pem],
        )?;
        Ok(Managed { sets, report })
    }
}

/// Reads every key first, then generates the missing ones together: RSA
/// generation takes seconds and the keys are independent.
fn plan_keys(spec: &CertSpec, paths: &Paths, fixes: &Fixes) -> Result<[PlannedKey; 3], CertError> {
    let loaded = [
        KeyFile::read(&paths.ca_key(), &fixes.ca_key)?,
        KeyFile::read(&paths.server_key(), &fixes.server)?,
        KeyFile::read(&paths.client_key(), &fixes.client)?,
    ];
    let missing = loaded.iter().filter(|k| k.is_none()).count();
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
    let [ca, server, client] = loaded;
    Ok([resolve(ca)?, resolve(server)?, resolve(client)?])
}

/// The CA certificate: kept, or (re-)issued from the CA key. A new CA key
/// never meets an old ca/cert.pem: that combination is routed to the
/// user-managed path.
fn plan_ca(
    spec: &CertSpec,
    paths: &Paths,
    now: OffsetDateTime,
    ca_key: &PlannedKey,
    fix: &str,
) -> Result<PlannedCa, CertError> {
    let existing = if ca_key.new {
        None
    } else {
        CertFile::read(paths.ca_cert(), fix)?
    };
    let action = match &existing {
        None if ca_key.new => Action::Minted,
        None => Action::Reissued("missing"),
        Some(file) => {
            let cert = file.leaf()?;
            if !key_matches(&ca_key.key, &cert) {
                return Err(CertError::KeyMismatch {
                    cert: file.path.clone(),
                    key: paths.ca_key(),
                    fix: fix.into(),
                });
            }
            if expires_soon(&cert, now) {
                Action::Reissued("expiring")
            } else {
                Action::Reused
            }
        }
    };
    let pem = match existing {
        Some(file) if action == Action::Reused => file.pem,
        _ => issue_ca(&ca_key.key, spec.validity, now)
            .map_err(|e| e.at(paths.ca_cert()))?
            .pem()
            .into_bytes(),
    };
    Ok(PlannedCa { action, pem })
}

impl Signer<'_> {
    /// A leaf certificate: kept when its key matches, the CA signed it, it
    /// is not expiring and (server) its SANs are the wanted ones; else
    /// (re-)issued.
    fn leaf(
        &self,
        kind: Leaf,
        key: &PlannedKey,
        path: PathBuf,
        fix: &str,
    ) -> Result<PlannedCert, CertError> {
        let action = if key.new {
            Action::Minted
        } else if self.ca_written {
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
            if !signed_by(&cert, self.ca_x509) {
                return Err(CertError::NotSignedBy {
                    cert: path,
                    ca: self.ca_path.clone(),
                    fix: fix.into(),
                });
            }
            if expires_soon(&cert, self.now) {
                Action::Reissued("expiring")
            } else if matches!(kind, Leaf::Server) && cert_sans(&cert) != self.wanted_sans {
                Action::Reissued("SANs changed")
            } else {
                return Ok(PlannedCert {
                    action: Action::Reused,
                    pem: None,
                    info: file.info(0)?,
                });
            }
        } else {
            Action::Reissued("missing")
        };
        let cert = issue_leaf(
            kind,
            &key.key,
            self.issuer,
            &self.spec.sans,
            self.spec.validity,
            self.now,
        )
        .map_err(|e| e.at(path.clone()))?;
        Ok(PlannedCert {
            action,
            info: CertInfo::new(path, cert.der(), fix)?,
            pem: Some(cert.pem().into_bytes()),
        })
    }
}

/// The three sets as they must end up on disk, in commit order.
fn layout(
    paths: &Paths,
    fixes: &Fixes,
    ca: &PlannedCa,
    [ca_key, server_key, client_key]: [PlannedKey; 3],
    [server_pem, client_pem]: [Option<Vec<u8>>; 2],
) -> Result<[SetPlan; 3], CertError> {
    // A ca.pem copy is rewritten whenever it differs in any byte.
    let copy_of_ca = |path: PathBuf, fix: &str| -> Result<Output, CertError> {
        let current = read_opt(&path, fix)?;
        Ok(Output {
            bytes: (current.as_deref() != Some(ca.pem.as_slice())).then(|| ca.pem.clone()),
            path,
            mode: CERT_MODE,
        })
    };
    let output = |path, bytes, mode| Output { path, bytes, mode };
    let new_if = |new: bool, bytes: Vec<u8>| new.then_some(bytes);
    let ca_set = SetPlan {
        dir: paths.ca_dir(),
        outputs: vec![
            // The key goes first: see "Writes" in the module docs.
            output(paths.ca_key(), new_if(ca_key.new, ca_key.pem), KEY_MODE),
            output(
                paths.ca_cert(),
                new_if(ca.written(), ca.pem.clone()),
                CERT_MODE,
            ),
        ],
        last_is_marker: false,
    };
    // A new key comes last: renamed before its certificate, it would sit
    // beside the old one, a mismatch the next run refuses to guess about.
    // After it, a failure leaves a certificate without its key, which the
    // next run re-issues (tests/faults.rs).
    let server_set = SetPlan {
        dir: paths.server_dir(),
        outputs: vec![
            copy_of_ca(paths.server_ca(), &fixes.server)?,
            output(paths.server_cert(), server_pem, CERT_MODE),
            output(
                paths.server_key(),
                new_if(server_key.new, server_key.pem),
                KEY_MODE,
            ),
        ],
        last_is_marker: false,
    };
    let mut client_outputs = vec![
        copy_of_ca(paths.client_ca(), &fixes.client)?,
        output(paths.client_cert(), client_pem, CERT_MODE),
        output(paths.client_key(), None, CLIENT_KEY_MODE),
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
    Ok([ca_set, server_set, client_set])
}
