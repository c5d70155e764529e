//! Writing a file so that a reader sees the old bytes or the new, never a
//! part of them: a temporary beside the target, synced, then renamed. The
//! certificates and the generated daemon.json both write this way.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file written under a temporary name (`.NAME.tmp-PID` beside `dest`),
/// to be synced and renamed into place; removed on drop unless committed.
pub struct Staged {
    /// Open, so the caller can sync several files at once before any
    /// rename (certs does, to fold the fsyncs into few journal commits).
    pub file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staged {
    /// Writes `bytes` with exactly `mode` (not through the umask, and not
    /// a leftover's mode). Never follows a link planted at the temporary
    /// name. Not synced: see [`Staged::file`].
    pub fn write(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<Staged> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        let staged = Staged {
            file,
            tmp,
            dest: dest.to_owned(),
            committed: false,
        };
        staged.file.set_permissions(Permissions::from_mode(mode))?;
        (&staged.file).write_all(bytes)?;
        Ok(staged)
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames the file into place.
    pub fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.dest)?;
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

/// Writes, syncs and renames one file.
pub fn write(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let staged = Staged::write(dest, bytes, mode)?;
    staged.file.sync_all()?;
    staged.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_file_appears_whole_with_its_mode_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("daemon.json");
        fs::write(&dest, "old").unwrap();
        write(&dest, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_uncommitted_file_leaves_the_target_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("key.pem");
        fs::write(&dest, "old").unwrap();
        drop(Staged::write(&dest, b"new", 0o600).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let dest = dir.path().join("cert.pem");
        let tmp = dir
            .path()
            .join(format!(".cert.pem.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(Staged::write(&dest, b"new", 0o644).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }
}
