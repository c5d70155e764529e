//! Writing the set: temporaries beside their targets, fsync, rename in
//! order (the CA key first), and the sweep of a crash's leftovers.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::thread;

use super::*;
use crate::atomic::Staged;

pub(super) fn create_subdir(dir: &Path) -> Result<(), CertError> {
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
pub(super) fn sweep_stale_temporaries(dir: &Path) {
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

/// Stages one output; its errors name the target.
pub(super) fn stage(dest: &Path, bytes: &[u8], mode: u32) -> Result<Staged, CertError> {
    Staged::write(dest, bytes, mode).map_err(|source| CertError::Write {
        path: dest.to_owned(),
        source,
    })
}

/// Renames a set's staged (and synced) files into place, in order.
pub(super) fn commit_set(set: &SetPlan, staged: Vec<Staged>) -> Result<(), CertError> {
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
        let dest = file.dest().to_owned();
        file.commit()
            .map_err(|source| CertError::Write { path: dest, source })?;
    }
    Ok(())
}

/// Files we keep get our modes too: a job container must be able to read
/// client/key.pem even if an older supervisor or a user wrote it 0600.
pub(super) fn fix_modes(set: &SetPlan) -> Result<(), CertError> {
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
pub(super) fn sync_concurrently<'a>(
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
