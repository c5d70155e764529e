//! The few file operations that install a certificate set, behind one
//! trait, so tests can fail any of them as a read-only volume, a full disk
//! or a denied permission would, without root or mounts (issue 11).
//! [`Real`] is std's; `tests.rs` has one that injects faults. Reads stay
//! on std: a file that cannot be read is already one clear error.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::atomic::Staged;

/// Every change [`super::ensure`] makes to the certificate directory.
/// `Sync`: files are synced from several threads at once.
pub(super) trait Disk: Sync {
    /// Creates `dir` (and its missing parents when `parents`), its mode
    /// still under the umask; AlreadyExists when it is there and not
    /// `parents`.
    fn make_dir(&self, dir: &Path, mode: u32, parents: bool) -> io::Result<()>;
    /// Sets exactly `mode`.
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Writes `bytes` to a temporary beside `dest` ([`Staged::write`]).
    fn stage(&self, dest: &Path, bytes: &[u8], mode: u32) -> io::Result<Staged>;
    /// fsyncs a staged file or a directory; `path` names it.
    fn sync(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Renames a staged file into place.
    fn commit(&self, staged: Staged) -> io::Result<()>;
    /// Unlinks a file (the client set's commit marker).
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The machine's own filesystem.
pub(super) struct Real;

impl Disk for Real {
    fn make_dir(&self, dir: &Path, mode: u32, parents: bool) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(parents)
            .mode(mode)
            .create(dir)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::set_permissions(path, Permissions::from_mode(mode))
    }

    fn stage(&self, dest: &Path, bytes: &[u8], mode: u32) -> io::Result<Staged> {
        Staged::write(dest, bytes, mode)
    }

    fn sync(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    fn commit(&self, staged: Staged) -> io::Result<()> {
        staged.commit()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}
