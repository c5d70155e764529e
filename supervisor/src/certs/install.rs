//! Writing the set: temporaries beside their targets, fsync, rename in
//! order (the CA key first), and the sweep of a crash's leftovers.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;

use super::*;

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

/// A file written under a temporary name, to be fsync'd and renamed into
/// place; removed on drop unless committed.
pub(super) struct Staged {
    pub(super) file: File,
    pub(super) tmp: PathBuf,
    pub(super) dest: PathBuf,
    pub(super) committed: bool,
}

impl Staged {
    pub(super) fn write(dest: &Path, bytes: &[u8], mode: u32) -> Result<Self, CertError> {
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

    pub(super) fn commit(mut self) -> Result<(), CertError> {
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
        file.commit()?;
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
