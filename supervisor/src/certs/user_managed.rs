//! A PKI the user put in place (no CA key): verified and used untouched,
//! never written.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use time::OffsetDateTime;

pub(super) fn looks_user_managed(paths: &Paths) -> bool {
    [
        paths.server_ca(),
        paths.server_cert(),
        paths.server_key(),
        paths.ca_cert(),
    ]
    .iter()
    .any(|p| exists(p))
}

/// Verifies a user-managed server set; writes nothing.
pub(super) fn verify_user_managed(paths: &Paths, now: OffsetDateTime) -> Result<Report, CertError> {
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
pub(super) fn chain_anchor(cert: &CertFile, ca: &CertFile) -> Result<Option<usize>, CertError> {
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
