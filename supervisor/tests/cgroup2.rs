//! cgroup v2 nesting (`cgroup::nest`) on a real cgroup2 hierarchy, where the kernel enforces
//! the "no internal processes" rule that the nesting exists for (issue 12).
//!
//! The test mounts cgroup2 itself. On a cgroup v1 host (this project's CI) the v2 hierarchy
//! still exists and holds the controllers no v1 hierarchy took (often `hugetlb`); one of them
//! is enough for the rule to apply. A sub-cgroup made here stands for the service container's
//! cgroup. Only `/proc/self/cgroup` is given as a file, to say where "we" are: the kernel's own
//! comes from the test process, which is elsewhere. Needs root, and fails with the reason when
//! the kernel offers no cgroup2 hierarchy or no controller on it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use dind_supervisor::cgroup::{nest, unified_path, CgroupOutcome, LEAF};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The tests share the hierarchy's root and may enable a controller there: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cgroup2 mount of our own, detached when dropped (also on a failed assertion).
struct Cgroup2 {
    dir: tempfile::TempDir,
    /// A controller this test enabled at the root, disabled again at the end.
    enabled_at_root: Option<String>,
}

impl Cgroup2 {
    fn mount() -> Cgroup2 {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts cgroup2 and needs root"
        );
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("none"),
            dir.path(),
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| {
            panic!("the kernel lets no cgroup2 mount here ({e}); cannot test on a real hierarchy")
        });
        Cgroup2 {
            dir,
            enabled_at_root: None,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A controller available to the root's children: enabled at the root if it was not.
    fn controller(&mut self) -> String {
        let available = fs::read_to_string(self.root().join("cgroup.controllers")).unwrap();
        let Some(c) = available.split_whitespace().next().map(str::to_owned) else {
            panic!("cgroup2 has no controller here (all are held by cgroup v1 hierarchies), so the no-internal-process rule cannot be shown");
        };
        let enabled = fs::read_to_string(self.root().join("cgroup.subtree_control")).unwrap();
        if !enabled.split_whitespace().any(|e| e == c) {
            // The root is exempt from the rule: this always works.
            fs::write(self.root().join("cgroup.subtree_control"), format!("+{c}")).unwrap();
            self.enabled_at_root = Some(c.clone());
        }
        c
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        if let Some(c) = &self.enabled_at_root {
            let _ = fs::write(self.root().join("cgroup.subtree_control"), format!("-{c}"));
        }
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

/// A cgroup of the test's, with a sleeping process in it; removed when dropped.
struct Group {
    dir: PathBuf,
    child: Child,
}

impl Group {
    fn new(parent: &Path, name: &str) -> Group {
        let dir = parent.join(format!("{name}-{}", std::process::id()));
        if let Err(e) = fs::create_dir(&dir) {
            assert_eq!(
                e.kind(),
                ErrorKind::AlreadyExists,
                "mkdir {}: {e}",
                dir.display()
            );
        }
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        Group { dir, child }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir(self.dir.join(LEAF));
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A `/proc` whose `self/cgroup` names `path` as our cgroup v2 path.
fn proc_at(path: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("self")).unwrap();
    fs::write(dir.path().join("self/cgroup"), format!("0::{path}\n")).unwrap();
    dir
}

fn words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn nesting_at_a_namespace_root_lets_the_kernel_enable_controllers_for_children() {
    let _serial = serial();
    let mut mnt = Cgroup2::mount();
    let controller = mnt.controller();
    let service = Group::new(mnt.root(), "dind-test-ns");

    // The kernel's rule, unmet: a cgroup with a process cannot enable a controller below it.
    let err = fs::write(
        service.dir.join("cgroup.subtree_control"),
        format!("+{controller}"),
    )
    .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(Errno::EBUSY as i32), "{err}");

    let proc = proc_at("/");
    let out = nest(proc.path(), &service.dir).unwrap();
    let CgroupOutcome::Nested {
        path,
        moved,
        controllers,
        ..
    } = &out
    else {
        panic!("{out:?}");
    };
    assert_eq!((path.as_str(), *moved), ("/", 1));
    assert!(
        controllers
            .split_whitespace()
            .any(|c| c == format!("+{controller}")),
        "{controllers}"
    );
    // Ground truth is the kernel's: the process lives in init, and the controller reaches it.
    assert!(words(&service.dir.join("cgroup.procs")).is_empty());
    assert_eq!(
        words(&service.dir.join("init/cgroup.procs")),
        [service.pid()]
    );
    assert!(words(&service.dir.join("cgroup.subtree_control")).contains(&controller));
    assert!(words(&service.dir.join("init/cgroup.controllers")).contains(&controller));
    assert_eq!(out.dockerd_cgroup_parent(), None);

    // Again (a restarted supervisor finds init there): nothing left to move, still fine.
    let again = nest(proc.path(), &service.dir).unwrap();
    assert!(
        matches!(again, CgroupOutcome::Nested { moved: 0, .. }),
        "{again:?}"
    );
}

#[test]
fn nesting_outside_a_namespace_root_stays_in_our_own_cgroup() {
    let _serial = serial();
    let mut mnt = Cgroup2::mount();
    let controller = mnt.controller();
    let service = Group::new(mnt.root(), "dind-test-host-ns");
    let name = service
        .dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let root_before = words(&mnt.root().join("cgroup.subtree_control"));

    let proc = proc_at(&format!("/{name}"));
    let out = nest(proc.path(), mnt.root()).unwrap();
    assert!(
        matches!(&out, CgroupOutcome::Nested { path, moved: 1, .. } if *path == format!("/{name}")),
        "{out:?}"
    );
    assert_eq!(
        words(&service.dir.join("init/cgroup.procs")),
        [service.pid()]
    );
    assert!(words(&service.dir.join("cgroup.subtree_control")).contains(&controller));
    // The hierarchy's root (the host's, in this shape) is not reorganised.
    assert!(!mnt.root().join(LEAF).exists());
    assert_eq!(
        words(&mnt.root().join("cgroup.subtree_control")),
        root_before
    );
    assert_eq!(out.dockerd_cgroup_parent(), Some(format!("/{name}/docker")));
}

/// The `/proc/self/cgroup` line the nesting reads, as a real cgroup namespace shows it: `/`
/// inside a namespace made in a cgroup, that cgroup's path outside one.
#[test]
fn a_real_cgroup_namespace_reads_as_its_root() {
    let _serial = serial();
    let mnt = Cgroup2::mount();
    let group = Group::new(mnt.root(), "dind-test-cgns");
    let name = group.dir.file_name().unwrap().to_str().unwrap().to_owned();
    let procs = group.dir.join("cgroup.procs");
    let run = |unshare: bool| {
        let script = format!(
            "echo $$ > {} && exec {} cat /proc/self/cgroup",
            procs.display(),
            if unshare { "unshare --cgroup" } else { "" }
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(unified_path(&run(true)), Some("/"));
    assert_eq!(unified_path(&run(false)), Some(format!("/{name}").as_str()));
}
