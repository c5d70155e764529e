//! cgroup v2 nesting: move our processes into a leaf cgroup so dockerd can delegate controllers.
//!
//! On cgroup v2 a cgroup with processes in it cannot enable controllers for its children (the
//! "no internal processes" rule), and the container starts with everything in the namespace
//! root. The stock image's `dind` script moves every process to `/sys/fs/cgroup/init` and then
//! enables all controllers in `cgroup.subtree_control`, retrying because new processes keep
//! appearing. As PID 1 we do it before anything else runs, so one pass normally suffices;
//! EBUSY still gets a few retries in case something raced us.
//!
//! The stock script does this at the mount's root whatever it is. When the container shares
//! the host's cgroup namespace, that root is the host's: the script would reorganise the host,
//! and dockerd's containers (under `/docker`, from that root) would escape the service
//! container's limits. So there we nest at our own cgroup, the one `/proc/self/cgroup` names,
//! and [`CgroupOutcome::dockerd_cgroup_parent`] tells dockerd to put its containers beneath it:
//! a memory or pids limit on the service container then bounds them in both cases.
//!
//! cgroup v1 needs none of this: [`nest`] reports [`CgroupOutcome::V1`] and does nothing.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;

/// Where cgroupfs is mounted in a container.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The leaf cgroup our processes move into; the same name the stock `dind` script uses.
pub const LEAF: &str = "init";
const ATTEMPTS: u32 = 5;
const RETRY_DELAY: Duration = Duration::from_millis(20);

/// What [`nest`] did, for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupOutcome {
    /// No `cgroup.controllers` at the root: cgroup v1 or hybrid; nothing to do.
    V1,
    /// No cgroupfs at the root at all.
    Absent,
    /// cgroup v2, but we are not at the root of our cgroup namespace (the container runs with
    /// the host's cgroup namespace), and our own cgroup is not visible under the mount.
    NotNamespaceRoot { path: String },
    /// Processes moved into the leaf and `controllers` enabled for the subtree of `path`: `/`
    /// at the root of our cgroup namespace, else our own cgroup in the host's hierarchy.
    Nested {
        path: String,
        moved: usize,
        controllers: String,
        attempts: u32,
    },
}

impl CgroupOutcome {
    /// dockerd's `--cgroup-parent` when we nested outside a namespace root: absolute, so that
    /// runc places containers under our cgroup and not under the host's `/docker`.
    pub fn dockerd_cgroup_parent(&self) -> Option<String> {
        match self {
            CgroupOutcome::Nested { path, .. } if path != "/" => Some(format!("{path}/docker")),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} has no cgroup v2 (\"0::\") line", path.display())]
    NoUnifiedLine { path: PathBuf },
    #[error("cannot create the cgroup {}; run the container with --privileged", path.display())]
    CreateLeaf {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move process {pid} into {}; run the container with --privileged", path.display())]
    Move {
        pid: u32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enable cgroup controllers \"{line}\" in {}; run the container with --privileged", path.display())]
    Enable {
        path: PathBuf,
        line: String,
        #[source]
        source: io::Error,
    },
}

/// `cgroup.controllers` content to a `cgroup.subtree_control` write: "cpu memory" → "+cpu +memory".
pub fn subtree_control_line(controllers: &str) -> String {
    controllers
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Our cgroup v2 path from `/proc/self/cgroup` content: the path of the `0::` line.
pub fn unified_path(self_cgroup: &str) -> Option<&str> {
    self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// PIDs from `cgroup.procs` content; junk lines are skipped.
pub fn parse_pids(procs: &str) -> Vec<u32> {
    procs
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn is_errno(e: &io::Error, errno: Errno) -> bool {
    e.raw_os_error() == Some(errno as i32)
}

/// Runs `op` up to `attempts` times while its error is `busy`, sleeping `delay` between tries.
/// Returns the result and the number of attempts made.
fn retry_busy<T, E>(
    attempts: u32,
    delay: Duration,
    busy: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> (Result<T, E>, u32) {
    let mut n = 1;
    loop {
        match op() {
            Err(e) if busy(&e) && n < attempts => {
                thread::sleep(delay);
                n += 1;
            }
            r => return (r, n),
        }
    }
}

/// Writes each pid in `<root>/cgroup.procs` to `<root>/init/cgroup.procs`, one write per pid
/// as the kernel wants; pids that exited meanwhile (ESRCH) are skipped. Returns how many moved.
fn move_procs(root: &Path, leaf_procs: &Path) -> Result<usize, CgroupError> {
    let mut moved = 0;
    for pid in parse_pids(&read(&root.join("cgroup.procs"))?) {
        // A fresh open and a single write per pid; append, so the fake tree in tests (a plain
        // file) keeps every pid, which cgroupfs ignores.
        let written = OpenOptions::new()
            .append(true)
            .open(leaf_procs)
            .and_then(|mut f| f.write_all(format!("{pid}\n").as_bytes()));
        match written {
            Ok(()) => moved += 1,
            Err(e) if is_errno(&e, Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Move {
                    pid,
                    path: leaf_procs.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(moved)
}

/// Our cgroup's directory under the mount, for a `/proc/self/cgroup` path outside the
/// namespace root: None unless it is a plain absolute path to a cgroup that is there.
fn own_dir(cgroup_root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/')?;
    let plain = Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    let dir = cgroup_root.join(rel);
    (plain && !rel.is_empty() && dir.join("cgroup.controllers").is_file()).then_some(dir)
}

/// Nests our processes under `init` in our cgroup and enables every available controller for
/// its subtree: at `<cgroup_root>` itself when it is our namespace's root, else at our own
/// cgroup beneath it. `proc_root` is `/proc` and `cgroup_root` `/sys/fs/cgroup` in production.
pub fn nest(proc_root: &Path, cgroup_root: &Path) -> Result<CgroupOutcome, CgroupError> {
    if !cgroup_root.exists() {
        return Ok(CgroupOutcome::Absent);
    }
    if !cgroup_root.join("cgroup.controllers").exists() {
        return Ok(CgroupOutcome::V1);
    }
    let self_cgroup_path = proc_root.join("self/cgroup");
    let self_cgroup = read(&self_cgroup_path)?;
    let (path, dir) = match unified_path(&self_cgroup) {
        Some("/") => ("/", cgroup_root.to_path_buf()),
        Some(path) => match own_dir(cgroup_root, path) {
            Some(dir) => (path, dir),
            None => {
                return Ok(CgroupOutcome::NotNamespaceRoot {
                    path: path.to_owned(),
                })
            }
        },
        None => {
            return Err(CgroupError::NoUnifiedLine {
                path: self_cgroup_path,
            })
        }
    };
    let (moved, controllers, attempts) = nest_at(&dir)?;
    Ok(CgroupOutcome::Nested {
        path: path.to_owned(),
        moved,
        controllers,
        attempts,
    })
}

/// The stock script's loop at `dir`: every process into `dir/init`, then every controller of
/// `dir` enabled for its children, again while the kernel answers EBUSY (a process appeared).
/// Returns how many processes moved, the controllers line and the attempts.
fn nest_at(cgroup_root: &Path) -> Result<(usize, String, u32), CgroupError> {
    let line = subtree_control_line(&read(&cgroup_root.join("cgroup.controllers"))?);
    let leaf = cgroup_root.join(LEAF);
    match fs::create_dir(&leaf) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(CgroupError::CreateLeaf {
                path: leaf,
                source: e,
            })
        }
        _ => {}
    }
    let leaf_procs = leaf.join("cgroup.procs");
    let subtree = cgroup_root.join("cgroup.subtree_control");

    let mut moved = 0;
    // EBUSY on subtree_control means a process is (again) in the root: move and try again.
    let busy = |e: &CgroupError| match e {
        CgroupError::Enable { source, .. } => is_errno(source, Errno::EBUSY),
        _ => false,
    };
    let (result, attempts) = retry_busy(ATTEMPTS, RETRY_DELAY, busy, || {
        moved += move_procs(cgroup_root, &leaf_procs)?;
        if line.is_empty() {
            return Ok(());
        }
        fs::write(&subtree, &line).map_err(|source| CgroupError::Enable {
            path: subtree.clone(),
            line: line.clone(),
            source,
        })
    });
    result?;
    Ok((moved, line, attempts))
}

/// [`nest`] on the real `/proc` and `/sys/fs/cgroup`.
pub fn nest_default() -> Result<CgroupOutcome, CgroupError> {
    nest(Path::new("/proc"), Path::new(DEFAULT_CGROUP_ROOT))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        /// A fake v2 host: plain files where cgroupfs would be.
        fn v2(self_cgroup: &str, procs: &str, controllers: &str) -> Self {
            let t = Tree {
                dir: tempfile::tempdir().unwrap(),
            };
            fs::create_dir_all(t.proc().join("self")).unwrap();
            fs::create_dir_all(t.cg()).unwrap();
            fs::write(t.proc().join("self/cgroup"), self_cgroup).unwrap();
            fs::write(t.cg().join("cgroup.procs"), procs).unwrap();
            fs::write(t.cg().join("cgroup.controllers"), controllers).unwrap();
            fs::write(t.cg().join("cgroup.subtree_control"), "").unwrap();
            // cgroupfs creates this file with the directory; pre-create the leaf to mimic it.
            fs::create_dir_all(t.cg().join(LEAF)).unwrap();
            fs::write(t.cg().join(LEAF).join("cgroup.procs"), "").unwrap();
            t
        }
        fn proc(&self) -> PathBuf {
            self.dir.path().join("proc")
        }
        fn cg(&self) -> PathBuf {
            self.dir.path().join("sys/fs/cgroup")
        }
        fn file(&self, rel: &str) -> String {
            fs::read_to_string(self.cg().join(rel)).unwrap()
        }
    }

    #[test]
    fn controllers_become_a_subtree_control_line() {
        assert_eq!(
            subtree_control_line("cpuset cpu io memory hugetlb pids rdma misc\n"),
            "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc"
        );
        assert_eq!(subtree_control_line("\n"), "");
    }

    #[test]
    fn unified_path_reads_the_0_line() {
        assert_eq!(unified_path("0::/\n"), Some("/"));
        assert_eq!(
            unified_path("1:name=systemd:/\n0::/system.slice/docker-abc.scope\n"),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(unified_path("9:name=systemd:/\n8:pids:/\n"), None);
    }

    #[test]
    fn v2_at_namespace_root_moves_each_pid_and_enables_controllers() {
        let t = Tree::v2("0::/\n", "1\n42\n", "cpu memory pids\n");
        let out = nest(&t.proc(), &t.cg()).unwrap();
        assert_eq!(
            out,
            CgroupOutcome::Nested {
                path: "/".into(),
                moved: 2,
                controllers: "+cpu +memory +pids".into(),
                attempts: 1,
            }
        );
        assert_eq!(t.file("init/cgroup.procs"), "1\n42\n");
        assert_eq!(t.file("cgroup.subtree_control"), "+cpu +memory +pids");
        // dockerd's own /docker is inside our namespace, so beneath our limits already.
        assert_eq!(out.dockerd_cgroup_parent(), None);
    }

    #[test]
    fn v2_outside_namespace_root_nests_at_our_own_cgroup_and_leaves_the_host_alone() {
        let t = Tree::v2("0::/kubepods/pod1/abc\n", "1\n", "cpu memory\n");
        let own = t.cg().join("kubepods/pod1/abc");
        fs::create_dir_all(own.join(LEAF)).unwrap();
        fs::write(own.join("cgroup.procs"), "7\n8\n").unwrap();
        fs::write(own.join("cgroup.controllers"), "memory pids\n").unwrap();
        fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        fs::write(own.join(LEAF).join("cgroup.procs"), "").unwrap();

        let out = nest(&t.proc(), &t.cg()).unwrap();
        assert_eq!(
            out,
            CgroupOutcome::Nested {
                path: "/kubepods/pod1/abc".into(),
                moved: 2,
                controllers: "+memory +pids".into(),
                attempts: 1,
            }
        );
        assert_eq!(t.file("kubepods/pod1/abc/init/cgroup.procs"), "7\n8\n");
        assert_eq!(
            t.file("kubepods/pod1/abc/cgroup.subtree_control"),
            "+memory +pids"
        );
        // The host's root is untouched, and dockerd's containers go beneath our cgroup.
        assert_eq!(t.file("init/cgroup.procs"), "");
        assert_eq!(t.file("cgroup.subtree_control"), "");
        assert_eq!(
            out.dockerd_cgroup_parent().as_deref(),
            Some("/kubepods/pod1/abc/docker")
        );
    }

    #[test]
    fn v2_outside_namespace_root_without_our_cgroup_in_view_is_skipped() {
        for path in ["/kubepods/pod1/abc", "/../../etc", "/a/./b", "relative"] {
            let t = Tree::v2(&format!("0::{path}\n"), "1\n", "cpu\n");
            // A directory that is no cgroup (no cgroup.controllers) is not ours either.
            fs::create_dir_all(t.cg().join("a/b")).unwrap();
            let out = nest(&t.proc(), &t.cg()).unwrap();
            assert_eq!(
                out,
                CgroupOutcome::NotNamespaceRoot { path: path.into() },
                "{path}"
            );
            assert_eq!(t.file("init/cgroup.procs"), "");
            assert_eq!(t.file("cgroup.subtree_control"), "");
            assert_eq!(out.dockerd_cgroup_parent(), None);
        }
    }

    #[test]
    fn v1_tree_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("cgroup");
        fs::create_dir_all(cg.join("memory")).unwrap();
        fs::create_dir_all(cg.join("unified")).unwrap();
        let out = nest(Path::new("/nonexistent"), &cg).unwrap();
        assert_eq!(out, CgroupOutcome::V1);
        assert!(!cg.join(LEAF).exists());
        assert_eq!(
            nest(Path::new("/nonexistent"), &dir.path().join("none")).unwrap(),
            CgroupOutcome::Absent
        );
    }

    #[test]
    fn missing_leaf_file_is_an_error_naming_it() {
        let t = Tree::v2("0::/\n", "1\n", "cpu\n");
        fs::remove_dir_all(t.cg().join(LEAF)).unwrap();
        // Plain mkdir creates no cgroup.procs, so the move fails: the error names the file.
        let err = nest(&t.proc(), &t.cg()).unwrap_err();
        assert!(matches!(err, CgroupError::Move { pid: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("init/cgroup.procs"), "{err}");
    }

    fn is_busy(e: &io::Error) -> bool {
        is_errno(e, Errno::EBUSY)
    }

    #[test]
    fn busy_is_retried_then_succeeds() {
        let calls = Cell::new(0);
        let (r, n) = retry_busy(5, Duration::ZERO, is_busy, || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(io::Error::from_raw_os_error(Errno::EBUSY as i32))
            } else {
                Ok(())
            }
        });
        assert!(r.is_ok());
        assert_eq!(n, 3);
    }

    #[test]
    fn busy_gives_up_after_the_last_attempt_and_other_errors_are_not_retried() {
        let (r, n) = retry_busy(3, Duration::ZERO, is_busy, || -> io::Result<()> {
            Err(io::Error::from_raw_os_error(Errno::EBUSY as i32))
        });
        assert!(r.is_err());
        assert_eq!(n, 3);
        let (r, n) = retry_busy(3, Duration::ZERO, is_busy, || -> io::Result<()> {
            Err(io::Error::from_raw_os_error(Errno::EINVAL as i32))
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
    }

    #[test]
    fn parse_pids_skips_junk() {
        assert_eq!(parse_pids("1\n\n 7 \nx\n"), vec![1, 7]);
    }
}
