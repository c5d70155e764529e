//! Where dockerd's raw endpoints may live: only on the container's own root
//! filesystem, which no other container shares (issue 10, item 4).
//!
//! dockerd's socket answers the whole API with no policy, containerd's
//! socket under the exec root does as much, and the run directory holds
//! the daemon.json and iptables shims dockerd runs with. A job that shares
//! any of them (actions-runner-controller shares `/var/run` with the runner
//! through an emptyDir) walks past the proxy. At start each directory is
//! looked up in `/proc/self/mountinfo`:
//!
//! - on the root mount (`/`): private. Every container has its own root
//!   filesystem; nothing else can see into it.
//! - on any other mount: refused (exit 78) unless the operator says
//!   `DIND_DOCKERD_SOCKET_SHARED=allow`. mountinfo cannot tell a volume
//!   shared with the job from one that is not: a host path, a named volume,
//!   an emptyDir, a memory-backed emptyDir (a tmpfs) all look alike from
//!   inside. So anything but the root mount counts as shared.
//!
//! A tmpfs the supervisor mounted itself on a directory *in* the shared
//! volume would not help: a job that removes or renames that directory
//! (empty from its side) detaches or moves the mount in our namespace too
//! (Linux removes mounts on unlinked directories lazily, in every
//! namespace), so the next dockerd start would bind its socket in the
//! shared directory again. A tmpfs over the volume's own mount point is
//! another matter: that is what `shared_run.rs` does when `/run` is shared,
//! and its mount counts as private here (`own`).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Where the kernel lists our mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// dockerd's exec root when no `--exec-root` is given: containerd's socket
/// lives under it.
pub const DOCKERD_DEFAULT_EXEC_ROOT: &str = "/var/run/docker";

/// One line of `/proc/self/mountinfo`, the fields we read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// The directory of the mounted filesystem that is mounted here: `/`
    /// for a whole filesystem, a subdirectory for a bind mount or volume.
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

/// The mounts in mountinfo's text; lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let mut h = head.split(' ');
            let id = h.next()?.parse().ok()?;
            let parent = h.next()?.parse().ok()?;
            let _dev = h.next()?;
            let root = unescape(h.next()?);
            let mount_point = unescape(h.next()?);
            let mut t = tail.split(' ');
            Some(Mount {
                id,
                parent,
                root,
                mount_point,
                fstype: t.next()?.to_owned(),
                source: unescape(t.next().unwrap_or("none")),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (absolute, symlinks resolved): the deepest
/// mount point at or above it, and of mounts stacked on that point the top
/// one (the one no other of them has as its parent).
pub fn containing<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    let under = |mp: &str| {
        mp == "/" || path == mp || path.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
    };
    let deepest = mounts
        .iter()
        .filter(|m| under(&m.mount_point))
        .map(|m| m.mount_point.len())
        .max()?;
    let stack: Vec<&Mount> = mounts
        .iter()
        .filter(|m| under(&m.mount_point) && m.mount_point.len() == deepest)
        .collect();
    stack
        .iter()
        .rev()
        .find(|m| !stack.iter().any(|o| o.parent == m.id))
        .or(stack.last())
        .copied()
}

/// Whether `path` is private: on the root mount. Otherwise the mount it
/// is on, for the refusal; `Err(None)` when no listed mount holds it (a
/// chroot whose root is not a mount point).
pub fn placement<'a>(mounts: &'a [Mount], path: &str) -> Result<(), Option<&'a Mount>> {
    match containing(mounts, path) {
        Some(m) if m.mount_point == "/" => Ok(()),
        other => Err(other),
    }
}

/// A directory that must be private, and how to name it in a refusal.
#[derive(Debug, Clone)]
pub struct Dir {
    pub path: PathBuf,
    /// `dockerd's socket directory`
    pub what: &'static str,
    /// The setting that moves it: `DIND_DOCKERD_SOCKET`.
    pub setting: &'static str,
    /// Ours to create with mode 0700 (the default socket directory).
    pub ours: bool,
}

/// Why start-up stops; each is one line with the fix.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("{what} {} is on {on}, a mount from outside the container's root filesystem: a job that shares it would reach dockerd without the policy; move it onto the container's own filesystem ({setting}), or set DIND_DOCKERD_SOCKET_SHARED=allow if that is wanted", path.display())]
    Shared {
        what: &'static str,
        path: PathBuf,
        on: String,
        setting: &'static str,
    },
    #[error("cannot read {MOUNTINFO} to check that {what} {} is private: mount /proc, or set DIND_DOCKERD_SOCKET_SHARED=allow", path.display())]
    Mountinfo {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {what} {}: {source}", path.display())]
    Create {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {} is not a directory the supervisor owns (a symlink or a file): remove it", path.display())]
    NotOurs { what: &'static str, path: PathBuf },
}

/// Checks every directory against the kernel's mount table (with
/// `allow_shared` a shared one is only a warning), then creates the ones
/// that are ours, mode 0700: nothing is written before the check passes.
/// `own` is the mount point of the supervisor's own tmpfs (`shared_run.rs`), if any.
pub fn ensure(dirs: &[Dir], allow_shared: bool, own: Option<&Path>) -> Result<(), PrivateError> {
    let Some(first) = dirs.first() else {
        return Ok(());
    };
    match fs::read_to_string(MOUNTINFO) {
        Ok(text) => check(&parse_mountinfo(&text), dirs, allow_shared, own)?,
        Err(_) if allow_shared => {}
        Err(source) => {
            let d = first;
            return Err(PrivateError::Mountinfo {
                what: d.what,
                path: d.path.clone(),
                source,
            });
        }
    }
    dirs.iter().filter(|d| d.ours).try_for_each(create_ours)
}

/// [`ensure`] without the file system: the decision on a mount table.
pub fn check(
    mounts: &[Mount],
    dirs: &[Dir],
    allow_shared: bool,
    own: Option<&Path>,
) -> Result<(), PrivateError> {
    for d in dirs {
        let resolved = resolve(&d.path);
        let Err(on) = placement(mounts, &resolved.to_string_lossy()) else {
            continue;
        };
        if on.is_some_and(|m| own.is_some_and(|o| Path::new(&m.mount_point) == o)) {
            continue;
        }
        let on = match on {
            Some(m) if m.root == "/" => format!("{} ({} {})", m.mount_point, m.fstype, m.source),
            Some(m) => format!("{} ({} {}, {})", m.mount_point, m.fstype, m.source, m.root),
            None => "no mount this process can see".to_owned(),
        };
        if allow_shared {
            tracing::warn!(dir = %d.path.display(), on = %on, "{} is on a shared mount; allowed by DIND_DOCKERD_SOCKET_SHARED=allow", d.what);
            continue;
        }
        return Err(PrivateError::Shared {
            what: d.what,
            path: d.path.clone(),
            on,
            setting: d.setting,
        });
    }
    Ok(())
}

/// `path` with symlinks resolved as far as it exists, the rest appended
/// lexically: the mount table names real paths, and `/var/run` is usually
/// a link to `/run`.
pub fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return out;
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => {
                return path
                    .components()
                    .filter(|c| !matches!(c, Component::CurDir))
                    .collect()
            }
        }
    }
}

/// Creates `d` (and its parents) and makes it 0700, refusing a symlink or
/// a file in its place.
fn create_ours(d: &Dir) -> Result<(), PrivateError> {
    let err = |source| PrivateError::Create {
        what: d.what,
        path: d.path.clone(),
        source,
    };
    fs::create_dir_all(&d.path).map_err(err)?;
    let meta = fs::symlink_metadata(&d.path).map_err(err)?;
    if !meta.file_type().is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(PrivateError::NotOurs {
            what: d.what,
            path: d.path.clone(),
        });
    }
    fs::set_permissions(&d.path, fs::Permissions::from_mode(0o700)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A docker:dind service container as GitLab's docker executor starts
    /// it: overlay root, the anonymous /var/lib/docker volume, the shared
    /// /certs/client and /builds volumes, docker's own /etc/hosts binds.
    const DOCKER: &str = "\
812 640 0:52 / / rw,relatime master:285 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,upperdir=/var/lib/docker/overlay2/x/diff,workdir=/var/lib/docker/overlay2/x/work
813 812 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
814 812 0:56 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
820 812 254:1 /var/lib/docker/volumes/3f2a/_data /var/lib/docker rw,relatime master:1 - ext4 /dev/vda1 rw
821 812 254:1 /var/lib/docker/volumes/runner-certs/_data /certs/client rw,relatime master:1 - ext4 /dev/vda1 rw
822 812 254:1 /var/lib/docker/volumes/runner-builds/_data /builds rw,relatime master:1 - ext4 /dev/vda1 rw
823 812 254:1 /var/lib/docker/containers/abc/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw
824 812 254:1 /var/lib/docker/containers/abc/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
825 814 0:57 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
";

    /// An actions-runner-controller dind sidecar: /run (where /var/run
    /// points) is an emptyDir the runner container mounts too; /tmp is a
    /// memory-backed emptyDir, a tmpfs.
    const ARC: &str = "\
1501 1400 0:310 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1502 1501 259:1 /var/lib/kubelet/pods/0c1d/volumes/kubernetes.io~empty-dir/var-run /run rw,relatime - xfs /dev/nvme0n1p1 rw
1503 1501 0:311 / /tmp rw,relatime - tmpfs tmpfs rw,size=1048576k
1504 1501 259:1 /var/lib/kubelet/pods/0c1d/volumes/kubernetes.io~empty-dir/work /runner/_work rw,relatime - xfs /dev/nvme0n1p1 rw
";

    fn mounts(text: &str) -> Vec<Mount> {
        parse_mountinfo(text)
    }

    fn on(text: &str, path: &str) -> Option<String> {
        match placement(&mounts(text), path) {
            Ok(()) => None,
            Err(m) => Some(m.map_or("none".to_owned(), |m| m.mount_point.clone())),
        }
    }

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let m = mounts("36 35 98:0 /mnt\\0401 /a\\040b\\134c rw,noatime master:1 shared:2 - ext3 /dev/ro\\040ot rw\ngarbage\n");
        assert_eq!(
            m,
            [Mount {
                id: 36,
                parent: 35,
                root: "/mnt 1".into(),
                mount_point: "/a b\\c".into(),
                fstype: "ext3".into(),
                source: "/dev/ro ot".into(),
            }]
        );
        assert_eq!(mounts(DOCKER).len(), 9);
    }

    #[test]
    fn the_containers_own_root_filesystem_is_private() {
        for path in [
            "/run/dind-supervisor/dockerd",
            "/var/run/docker",
            "/run",
            "/",
            "/builds2/x",
            "/certs/ca",
            "/etc",
        ] {
            assert_eq!(on(DOCKER, path), None, "{path}");
        }
    }

    #[test]
    fn volumes_and_binds_are_shared() {
        for (path, mount) in [
            ("/builds/raw.sock.d", "/builds"),
            ("/builds", "/builds"),
            ("/certs/client", "/certs/client"),
            // The data root's anonymous volume looks like any other: the
            // rule is never applied to the data root.
            ("/var/lib/docker/x", "/var/lib/docker"),
            ("/dev/shm/x", "/dev/shm"),
        ] {
            assert_eq!(on(DOCKER, path).as_deref(), Some(mount), "{path}");
        }
    }

    #[test]
    fn arcs_shared_var_run_and_a_memory_emptydir_are_shared() {
        // /var/run/docker.sock resolves to /run/docker.sock here.
        assert_eq!(
            on(ARC, "/run/dind-supervisor/dockerd").as_deref(),
            Some("/run")
        );
        assert_eq!(on(ARC, "/run/docker").as_deref(), Some("/run"));
        assert_eq!(on(ARC, "/tmp/x").as_deref(), Some("/tmp"));
        assert_eq!(on(ARC, "/var/lib/dind-supervisor/dockerd"), None);
        // A prefix of a name is not a parent directory.
        assert_eq!(on(ARC, "/running/x"), None);
        assert_eq!(on(ARC, "/runner/_workspace"), None);
    }

    #[test]
    fn the_top_of_stacked_mounts_decides() {
        // A tmpfs stacked on a volume at /run, listed before it.
        let stacked = "1 0 0:1 / / rw - overlay overlay rw\n3 2 0:9 / /run rw - tmpfs tmpfs rw\n2 1 254:1 /vol /run rw - ext4 /dev/vda rw\n";
        let m = mounts(stacked);
        assert_eq!(
            containing(&m, "/run/x").map(|m| m.fstype.as_str()),
            Some("tmpfs")
        );
    }

    #[test]
    fn a_root_that_is_no_listed_mount_is_not_private() {
        // In a chroot, mountinfo lists only mounts below the new root.
        assert_eq!(
            on("5 4 0:9 / /proc rw - proc proc rw\n", "/run/x").as_deref(),
            Some("none")
        );
        assert_eq!(on("", "/run/x").as_deref(), Some("none"));
    }

    fn dir(path: &str) -> Dir {
        Dir {
            path: path.into(),
            what: "dockerd's socket directory",
            setting: "DIND_DOCKERD_SOCKET",
            ours: false,
        }
    }

    #[test]
    fn a_shared_directory_is_one_line_naming_the_mount_and_the_fix() {
        let e = check(
            &mounts(ARC),
            &[dir("/run/dind-supervisor/dockerd")],
            false,
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "dockerd's socket directory /run/dind-supervisor/dockerd is on /run (xfs /dev/nvme0n1p1, \
             /var/lib/kubelet/pods/0c1d/volumes/kubernetes.io~empty-dir/var-run), a mount from outside the \
             container's root filesystem: a job that shares it would reach dockerd without the policy; move \
             it onto the container's own filesystem (DIND_DOCKERD_SOCKET), or set \
             DIND_DOCKERD_SOCKET_SHARED=allow if that is wanted"
        );
        // The operator's explicit word turns it into a warning.
        assert!(check(
            &mounts(ARC),
            &[dir("/run/dind-supervisor/dockerd")],
            true,
            None
        )
        .is_ok());
        assert!(check(
            &mounts(ARC),
            &[dir("/var/lib/dind-supervisor/dockerd")],
            false,
            None
        )
        .is_ok());
        // The supervisor's own tmpfs over the shared /run, stacked on the
        // volume, is private; the volume seen through its view is not.
        let covered = format!(
            "{ARC}1505 1502 0:320 / /run rw - tmpfs dind-supervisor-run rw\n\
             1506 1505 259:1 /var/lib/kubelet/pods/0c1d/volumes/kubernetes.io~empty-dir/var-run /run/dind-supervisor-shared rw - xfs /dev/nvme0n1p1 rw\n"
        );
        let own = Some(Path::new("/run"));
        for private in ["/run/dind-supervisor/dockerd", "/run/docker"] {
            assert!(
                check(&mounts(&covered), &[dir(private)], false, own).is_ok(),
                "{private}"
            );
            assert!(
                check(&mounts(&covered), &[dir(private)], false, None).is_err(),
                "{private}"
            );
        }
        assert!(check(
            &mounts(&covered),
            &[dir("/run/dind-supervisor-shared/d")],
            false,
            own
        )
        .is_err());
    }

    #[test]
    fn paths_are_resolved_through_symlinks_before_the_lookup() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().canonicalize().unwrap().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
        assert_eq!(resolve(&t.path().join("link/a/b")), real.join("a/b"));
        assert_eq!(
            resolve(Path::new("/nonexistent-dsv/./x")),
            PathBuf::from("/nonexistent-dsv/x")
        );
        // A link from a private path into a volume is judged by the volume.
        let table = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n2 1 254:1 /v {} rw - ext4 /dev/vda rw\n",
            real.display()
        );
        let e = check(
            &mounts(&table),
            &[dir(&t.path().join("link/d").to_string_lossy())],
            false,
            None,
        );
        assert!(matches!(e, Err(PrivateError::Shared { .. })), "{e:?}");
    }

    #[test]
    fn our_directory_is_made_0700_and_a_symlink_in_its_place_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut d = dir(&t.path().join("run/dockerd").to_string_lossy());
        d.ours = true;
        create_ours(&d).unwrap();
        assert_eq!(
            fs::metadata(&d.path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&d.path, fs::Permissions::from_mode(0o755)).unwrap();
        create_ours(&d).unwrap();
        assert_eq!(
            fs::metadata(&d.path).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &link).unwrap();
        d.path = link;
        assert!(matches!(create_ours(&d), Err(PrivateError::NotOurs { .. })));
    }
}
