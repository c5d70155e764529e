//! `/run` made private when it is a volume shared with another container
//! (issue 12, item 1).
//!
//! actions-runner-controller mounts one emptyDir at `/var/run` (that is,
//! `/run`) in both its dind container and the runner container, so that
//! the runner finds `/var/run/docker.sock`. Everything else dockerd and
//! containerd keep under `/run` would then be the runner's to reach too,
//! and much of it cannot be moved by any flag:
//!
//! - containerd's shim sockets, `/run/containerd/s/…`, a path fixed in
//!   containerd: each answers the shim API, which starts processes in any
//!   container as root (CVE-2020-15257 was the same sockets, reachable
//!   through the host network);
//! - dockerd's plugin directory, `/run/docker/plugins`, also fixed: a
//!   socket planted there is a volume plugin dockerd would trust to name
//!   any directory of the service as a mount source;
//! - dockerd's default exec root (`/var/run/docker`, containerd's socket),
//!   pid file, and the supervisor's run directory with dockerd's raw socket.
//!
//! So the supervisor, as PID 1 of that container and before anything
//! else runs, mounts a tmpfs of its own over `/run` in the container's
//! mount namespace, and keeps the volume reachable for itself alone at
//! [`VIEW`] (a bind mount of the volume's root, made through a descriptor
//! opened before the tmpfs hid it). The public sockets the user named
//! under `/run` are served in the volume through that view, where the
//! runner finds them, and also at their own paths on the private tmpfs, so
//! that a docker CLI inside the service (ARC's startup probe `docker info`)
//! still meets the proxy. Nothing else is ever written to the volume.
//!
//! Why this holds where a tmpfs on a directory of the volume would not
//! (`private.rs`): the mount point here is the volume's own root, the mount
//! point of the runner's volume too. The runner cannot remove or rename
//! the root of its own mount, so it cannot detach our tmpfs; and the mount
//! namespace is the container's own, with private propagation, so the
//! runner never sees our tmpfs. Only PID 1 does this: elsewhere (a test on
//! a host, a pod that shares its process namespace) the mount namespace
//! may be someone else's, and the start-up check then refuses a shared
//! `/run` with its usual line. `DIND_DOCKERD_SOCKET_SHARED=allow` (the
//! operator wanting it shared) leaves `/run` alone too.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::config::{Config, PublicSocket};
use crate::private::{self, Mount};

/// The directory whose shared mount is made private: where `/var/run`
/// leads (`/run` in every common image).
pub const VAR_RUN: &str = "/var/run";
/// Where the supervisor alone sees the shared volume once its tmpfs covers
/// `/run`: on that tmpfs, so no other container can reach or move it.
pub const VIEW: &str = "/run/dind-supervisor-shared";
/// The source name of our tmpfs in mountinfo, so that a reader knows it.
const TMPFS_SOURCE: &str = "dind-supervisor-run";

/// Why `/run` could not be made private; the start-up check then refuses.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the shared {} private ({step}): {source}", run.display())]
pub struct Error {
    run: PathBuf,
    step: &'static str,
    #[source]
    source: io::Error,
}

/// Makes `/run` private when it is shared and this start may (see the
/// module doc), and moves the public sockets under it into the view.
/// Returns what was done, for the start-up check; on failure it warns and
/// leaves the decision to that check.
pub fn apply(config: &mut Config) -> Option<Privatized> {
    let proxy = config.proxy.as_mut()?;
    if config.dockerd.allow_shared || nix::unistd::getpid().as_raw() != 1 {
        return None;
    }
    let run = private::resolve(Path::new(VAR_RUN));
    let mounts = private::parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?);
    if !is_shared(&mounts, &run) {
        return None;
    }
    match privatize(&run, Path::new(VIEW)) {
        Ok(p) => {
            remap(&mut proxy.sockets, &p);
            tracing::info!(run = %p.run.display(), view = %p.view.display(), "the shared /run is covered by a private tmpfs: dockerd's and containerd's sockets stay out of the volume");
            Some(p)
        }
        Err(e) => {
            tracing::warn!(error = %e, "a shared /run stays shared");
            None
        }
    }
}

/// `/run` as a mount of its own that is not the root filesystem: a volume,
/// host path or emptyDir, shared as far as anyone inside can tell.
pub fn is_shared(mounts: &[Mount], run: &Path) -> bool {
    let run = run.to_string_lossy();
    private::containing(mounts, &run).is_some_and(|m| m.mount_point == run && m.mount_point != "/")
}

/// What was done: the directory covered, and where its volume is seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privatized {
    pub run: PathBuf,
    pub view: PathBuf,
}

/// Covers `run` with a private tmpfs and binds the volume that was there
/// at `view` (see the module doc). Nothing is left half done that matters:
/// a failure after the tmpfs is mounted leaves `/run` private, and the
/// start-up check decides with the mount table as it then is.
pub fn privatize(run: &Path, view: &Path) -> Result<Privatized, Error> {
    let err = |step| {
        move |source| Error {
            run: run.to_owned(),
            step,
            source,
        }
    };
    // Opened before the tmpfs hides it: the only way back to the volume.
    let volume = File::open(run).map_err(err("opening it"))?;
    let none: Option<&str> = None;
    mount(
        Some(TMPFS_SOURCE),
        run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| err("mounting a tmpfs over it")(e.into()))?;
    // Nothing mounted under it later may reach the volume's peers.
    mount(none, run, none, MsFlags::MS_PRIVATE, none)
        .map_err(|e| err("making the tmpfs private")(e.into()))?;
    fs::create_dir_all(view).map_err(err("creating the view"))?;
    let fd_path = format!("/proc/self/fd/{}", volume.as_raw_fd());
    mount(Some(fd_path.as_str()), view, none, MsFlags::MS_BIND, none)
        .map_err(|e| err("binding the volume to the view")(e.into()))?;
    Ok(Privatized {
        run: run.to_owned(),
        view: view.to_owned(),
    })
}

/// `path` moved into the view when it lies in the covered directory
/// (symlinks resolved as they were before the tmpfs: `/var/run/x` is
/// `/run/x`); None otherwise.
pub fn in_view(p: &Privatized, path: &Path) -> Option<PathBuf> {
    let resolved = private::resolve(path);
    let rest = resolved.strip_prefix(&p.run).ok()?;
    Some(p.view.join(rest))
}

/// Each public socket under the covered directory is served in the volume
/// (through the view) for the other containers, and at its own path on the
/// private tmpfs for clients inside the service.
pub fn remap(sockets: &mut Vec<PublicSocket>, p: &Privatized) {
    let mut extra = Vec::new();
    for s in sockets.iter_mut() {
        if let Some(shared) = in_view(p, &s.path) {
            extra.push(PublicSocket {
                path: std::mem::replace(&mut s.path, shared),
                mode: s.mode,
                gid: s.gid,
                implicit: s.implicit,
            });
            // The volume is ours to serve in: nothing else answers there.
            s.implicit = false;
        }
    }
    sockets.extend(extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ARC's dind container: an emptyDir at /run with the service
    /// account's token mounted inside it, as the kubelet does.
    const ARC: &str = "\
1501 1400 0:310 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1502 1501 259:1 /var/lib/kubelet/pods/0c1d/volumes/kubernetes.io~empty-dir/dind-sock /run rw,relatime - xfs /dev/nvme0n1p1 rw
1503 1502 0:312 / /run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw
1504 1501 259:1 /var/lib/kubelet/pods/0c1d/volumes/kubernetes.io~empty-dir/work /home/runner/_work rw,relatime - xfs /dev/nvme0n1p1 rw
";
    /// GitLab's docker executor: /run is part of the container's root.
    const DOCKER: &str = "\
812 640 0:52 / / rw,relatime - overlay overlay rw
821 812 254:1 /var/lib/docker/volumes/certs/_data /certs/client rw,relatime - ext4 /dev/vda1 rw
";

    #[test]
    fn only_a_run_that_is_a_mount_of_its_own_is_shared() {
        let arc = private::parse_mountinfo(ARC);
        assert!(is_shared(&arc, Path::new("/run")));
        assert!(!is_shared(&arc, Path::new("/home/runner")));
        assert!(!is_shared(
            &private::parse_mountinfo(DOCKER),
            Path::new("/run")
        ));
        // A mount below /run (a secret) does not make /run itself shared.
        let below =
            "1 0 0:1 / / rw - overlay overlay rw\n2 1 0:2 / /run/secrets rw - tmpfs tmpfs rw\n";
        assert!(!is_shared(
            &private::parse_mountinfo(below),
            Path::new("/run")
        ));
    }

    fn socket(path: &str) -> PublicSocket {
        PublicSocket {
            path: path.into(),
            mode: 0o660,
            gid: Some(123),
            implicit: false,
        }
    }

    #[test]
    fn sockets_under_the_covered_directory_are_served_in_the_volume_and_privately() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().canonicalize().unwrap().join("run");
        fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&run, t.path().join("var-run")).unwrap();
        let p = Privatized {
            run: run.clone(),
            view: run.join("shared"),
        };
        let via_link = t.path().join("var-run/docker.sock");
        assert_eq!(in_view(&p, &via_link), Some(run.join("shared/docker.sock")));
        assert_eq!(in_view(&p, Path::new("/builds/docker.sock")), None);

        let mut sockets = vec![
            socket(&via_link.to_string_lossy()),
            socket("/builds/api.sock"),
        ];
        remap(&mut sockets, &p);
        let paths: Vec<(PathBuf, u32, Option<u32>)> = sockets
            .iter()
            .map(|s| (s.path.clone(), s.mode, s.gid))
            .collect();
        assert_eq!(
            paths,
            [
                (run.join("shared/docker.sock"), 0o660, Some(123)),
                (PathBuf::from("/builds/api.sock"), 0o660, Some(123)),
                (via_link, 0o660, Some(123)),
            ]
        );
    }
}
