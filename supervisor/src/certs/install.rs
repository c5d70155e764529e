//! Writing the set: temporaries beside their targets, fsync, rename in
//! order (the CA key first), and the sweep of a crash's leftovers. Every
//! change goes through [`Disk`], so tests can fail any one of them.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;

use super::*;
use crate::atomic::Staged;

impl Managed {
    /// Writes the plan. fsync latency is nearly all of a fresh mint (about
    /// 0.5 ms of CPU against 11 fsyncs), and under I/O load each sequential
    /// fsync is a separate journal commit; so files and directories are
    /// synced in two concurrent rounds, which the journal folds into few
    /// commits. Renames reach the journal in the order they are made, so the
    /// crash-safe order of the module docs holds without a sync per set.
    pub(super) fn install(self, paths: &Paths, disk: &dyn Disk) -> Result<Report, CertError> {
        for set in &self.sets {
            create_subdir(disk, &set.dir)?;
            sweep_stale_temporaries(&set.dir);
        }
        // Every new file is written before anything visible changes, so a
        // full disk or a read-only volume leaves the directory as it was.
        let staged = self
            .sets
            .iter()
            .map(|set| {
                set.outputs
                    .iter()
                    .filter_map(|o| {
                        let bytes = o.bytes.as_ref()?;
                        Some(
                            disk.stage(&o.path, bytes, o.mode)
                                .map_err(write_err(&o.path)),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        sync_concurrently(disk, staged.iter().flatten().map(|s| (&s.file, s.dest())))?;
        let mut changed_dirs = Vec::new();
        for (set, staged) in self.sets.iter().zip(staged) {
            if !staged.is_empty() {
                commit_set(disk, set, staged)?;
                changed_dirs.push(&set.dir);
            }
        }
        let dirs = changed_dirs
            .iter()
            .map(|dir| {
                File::open(dir)
                    .map(|file| (file, dir.as_path()))
                    .map_err(write_err(dir))
            })
            .collect::<Result<Vec<_>, _>>()?;
        sync_concurrently(disk, dirs.iter().map(|(file, dir)| (file, *dir)))?;
        for set in &self.sets {
            fix_modes(disk, set)?;
        }
        tracing::debug!(dir = %paths.dir().display(), "certificate sets installed");
        Ok(self.report)
    }
}

/// [`CertError::Write`] for `path`, from the OS error.
fn write_err(path: &Path) -> impl Fn(io::Error) -> CertError + '_ {
    move |source| CertError::Write {
        path: path.to_owned(),
        source,
    }
}

/// `dir` with exactly `mode`, and its missing parents when `parents`; an
/// existing directory is left as it is.
pub(super) fn make_dir(disk: &dyn Disk, dir: &Path, parents: bool) -> Result<(), CertError> {
    let create_err = |source| CertError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match disk.make_dir(dir, DIR_MODE, parents) {
        // The mode above went through the umask.
        Ok(()) => disk.set_mode(dir, DIR_MODE).map_err(create_err),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create_err(e)),
    }
}

fn create_subdir(disk: &dyn Disk, dir: &Path) -> Result<(), CertError> {
    make_dir(disk, dir, false)
}

/// Removes `.NAME.pem.tmp-PID` files a killed supervisor left behind; we hold
/// the lock, so none of them is being written.
fn sweep_stale_temporaries(dir: &Path) {
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

/// Renames a set's staged (and synced) files into place, in order.
fn commit_set(disk: &dyn Disk, set: &SetPlan, staged: Vec<Staged>) -> Result<(), CertError> {
    // The plan always stages the marker when anything in its set changes;
    // never hide one that would not come back.
    let marker = set
        .outputs
        .last()
        .filter(|o| set.last_is_marker && o.bytes.is_some());
    if let Some(marker) = marker {
        match disk.remove(&marker.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(write_err(&marker.path)(source)),
        }
    }
    for file in staged {
        let dest = file.dest().to_owned();
        disk.commit(file).map_err(write_err(&dest))?;
    }
    Ok(())
}

/// Files we keep get our modes too: a job container must be able to read
/// client/key.pem even if an older supervisor or a user wrote it 0600.
fn fix_modes(disk: &dyn Disk, set: &SetPlan) -> Result<(), CertError> {
    for output in set.outputs.iter().filter(|o| o.bytes.is_none()) {
        let meta = fs::metadata(&output.path).map_err(write_err(&output.path))?;
        if meta.mode() & 0o7777 != output.mode {
            disk.set_mode(&output.path, output.mode)
                .map_err(write_err(&output.path))?;
        }
    }
    Ok(())
}

/// fsyncs every file at once, one thread each: concurrent fsyncs share
/// journal commits. If a thread cannot be had, that file is synced inline.
fn sync_concurrently<'a>(
    disk: &dyn Disk,
    files: impl IntoIterator<Item = (&'a File, &'a Path)>,
) -> Result<(), CertError> {
    let sync = |file: &File, path: &Path| disk.sync(file, path).map_err(write_err(path));
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
