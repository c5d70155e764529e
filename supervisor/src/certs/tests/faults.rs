//! The install under a failing filesystem, through the [`Disk`] seam and
//! without root: each change `ensure` makes is failed in turn, as a
//! read-only volume, a full disk or a denied permission fails it. Every
//! failure is one line naming the path and the fix, leaves no temporary,
//! changes nothing visible when it comes before the first rename, never
//! shows a mismatched client set, and the next run completes the set.

use std::sync::Mutex;

use nix::errno::Errno;

use super::*;
use crate::atomic::Staged;

/// One change asked of the [`Disk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    MakeDir,
    SetMode,
    Stage,
    Sync,
    Commit,
    Remove,
}

/// The real filesystem, with one chosen change failing.
#[derive(Default)]
struct Faulty {
    /// Every change asked for, in order (files sync on threads of their
    /// own, so syncs may come in any order among themselves).
    log: Mutex<Vec<(Op, PathBuf)>>,
    /// The change to fail, and how.
    fault: Option<(Op, PathBuf, Errno)>,
}

impl Faulty {
    fn failing(op: Op, path: PathBuf, errno: Errno) -> Self {
        Faulty {
            fault: Some((op, path, errno)),
            ..Faulty::default()
        }
    }

    /// Logs the change; its error when it is the one to fail.
    fn check(&self, op: Op, path: &Path) -> io::Result<()> {
        self.log.lock().unwrap().push((op, path.to_owned()));
        match &self.fault {
            Some((o, p, errno)) if *o == op && p == path => {
                Err(io::Error::from_raw_os_error(*errno as i32))
            }
            _ => Ok(()),
        }
    }

    fn log(&self) -> Vec<(Op, PathBuf)> {
        self.log.lock().unwrap().clone()
    }
}

impl Disk for Faulty {
    fn make_dir(&self, dir: &Path, mode: u32, parents: bool) -> io::Result<()> {
        self.check(Op::MakeDir, dir)?;
        Real.make_dir(dir, mode, parents)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.check(Op::SetMode, path)?;
        Real.set_mode(path, mode)
    }

    fn stage(&self, dest: &Path, bytes: &[u8], mode: u32) -> io::Result<Staged> {
        if let Err(e) = self.check(Op::Stage, dest) {
            // As a full disk does: part of the file written, then the error.
            drop(Real.stage(dest, &bytes[..bytes.len() / 2], mode)?);
            return Err(e);
        }
        Real.stage(dest, bytes, mode)
    }

    fn sync(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(Op::Sync, path)?;
        Real.sync(file, path)
    }

    fn commit(&self, staged: Staged) -> io::Result<()> {
        self.check(Op::Commit, staged.dest())?;
        Real.commit(staged)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Remove, path)?;
        Real.remove(path)
    }
}

/// The regular files under `dir`, with contents and modes; none when
/// `dir` is not there.
fn files(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    if !dir.exists() {
        return BTreeMap::new();
    }
    snapshot(dir)
        .into_iter()
        .filter(|(p, _)| p.is_file())
        .collect()
}

/// `path` under `from`, as the same path under `to`.
fn moved(path: &Path, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from).unwrap() {
        rel if rel.as_os_str().is_empty() => to.to_owned(),
        rel => to.join(rel),
    }
}

/// Puts `files` back under an empty `dir`, as they were.
fn restore(files: &BTreeMap<PathBuf, (Vec<u8>, u32)>, from: &Path, dir: &Path) {
    for (path, (bytes, mode)) in files {
        let to = moved(path, from, dir);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::write(&to, bytes).unwrap();
        fs::set_permissions(&to, Permissions::from_mode(*mode)).unwrap();
    }
}

/// A state of the directory before a run: made once, restored per case.
struct Before {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    files: BTreeMap<PathBuf, (Vec<u8>, u32)>,
}

/// A set minted and then changed by `change`; `None`: nothing at all.
fn before(change: Option<fn(&Paths)>) -> Before {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    if let Some(change) = change {
        ensure(&spec).unwrap();
        change(&Paths::new(&spec.dir));
    }
    Before {
        files: files(&spec.dir),
        dir: spec.dir,
        _tmp: tmp,
    }
}

/// Whenever the three client files are there, they are one set.
fn assert_client_set_whole_or_absent(paths: &Paths) {
    let there = [paths.client_ca(), paths.client_cert(), paths.client_key()]
        .iter()
        .all(|p| p.exists());
    if there {
        assert_chain(
            &paths.client_cert(),
            &paths.client_key(),
            &paths.client_ca(),
        );
    }
}

/// Runs `ensure` from `before` with one change of a clean run failing
/// with `errno`, and checks everything the module promises.
fn fail_one(before: &Before, (op, at): &(Op, PathBuf), errno: Errno) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    restore(&before.files, &before.dir, &spec.dir);
    let at = moved(at, &before.dir, &spec.dir);
    let disk = Faulty::failing(*op, at.clone(), errno);

    let err = ensure_on(&spec, &disk).unwrap_err();

    let case = format!("{op:?} {} {errno}", at.display());
    let (CertError::Write { path, source } | CertError::CreateDir { path, source }) = &err else {
        panic!("{case}: {err:?}");
    };
    assert_eq!(
        (path, source.raw_os_error()),
        (&at, Some(errno as i32)),
        "{case}"
    );
    let line = one_line(&err);
    assert!(line.contains(&at.display().to_string()), "{case}: {line}");
    assert!(line.contains(&io_fix(source)), "{case}: {line}");
    let left = files(&spec.dir).into_keys();
    assert_eq!(
        left.filter(|p| p.to_string_lossy().contains(".tmp-"))
            .count(),
        0,
        "{case}"
    );
    let renamed = disk
        .log()
        .iter()
        .any(|(o, p)| matches!(o, Op::Commit | Op::Remove) && (o, p) != (op, &at));
    if !renamed {
        // Failed before the first rename: nothing a reader sees changed.
        let was: BTreeMap<_, _> = before
            .files
            .iter()
            .map(|(p, v)| (moved(p, &before.dir, &spec.dir), v.clone()))
            .collect();
        assert_eq!(files(&spec.dir), was, "{case}");
    }
    assert_client_set_whole_or_absent(&paths);

    // The next run on a sound disk completes what this one left.
    ensure(&spec).unwrap_or_else(|e| panic!("{case}: the next run failed: {e}"));
    assert_leaves_chain(&paths);
    let again = ensure(&spec).unwrap();
    assert_eq!(
        (again.ca, again.server, again.client),
        (Action::Reused, Action::Reused, Action::Reused),
        "{case}"
    );
}

/// Every change a clean run from `before` makes, failed in turn, each
/// with one of the three errors a volume gives.
fn fail_each(before: &Before) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    restore(&before.files, &before.dir, &spec.dir);
    let clean = Faulty::default();
    ensure_on(&spec, &clean).unwrap();
    let mut changes = Vec::new();
    for (op, path) in clean.log() {
        let at = moved(&path, &spec.dir, &before.dir);
        if !changes.contains(&(op, at.clone())) {
            changes.push((op, at));
        }
    }
    assert!(!changes.is_empty());
    let errnos = [Errno::EROFS, Errno::ENOSPC, Errno::EACCES];
    for (i, change) in changes.iter().enumerate() {
        fail_one(before, change, errnos[i % errnos.len()]);
    }
}

#[test]
fn a_fresh_mint_that_fails_anywhere_is_one_line_and_recovers() {
    fail_each(&before(None));
}

#[test]
fn a_ca_reissue_that_fails_anywhere_is_one_line_and_recovers() {
    // Every certificate and every copy of the CA changes; no key does.
    fail_each(&before(Some(|paths| {
        fs::remove_file(paths.ca_cert()).unwrap()
    })));
}

#[test]
fn a_lost_server_key_replaced_with_a_failure_anywhere_recovers() {
    // A new server key and certificate, beside the old certificate.
    fail_each(&before(Some(|paths| {
        fs::remove_file(paths.server_key()).unwrap()
    })));
}

#[test]
fn modes_repaired_with_a_failure_is_one_line() {
    // Only a mode changes: the seam's set_mode is the one change.
    fail_each(&before(Some(|paths| {
        fs::set_permissions(paths.client_key(), Permissions::from_mode(0o600)).unwrap()
    })));
}
