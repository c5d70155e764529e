//! Storage driver choice: overlay2, unless the data root sits on overlayfs, where it cannot mount.
//!
//! A container's root filesystem is usually overlayfs, so `/var/lib/docker` lands on overlayfs
//! whenever nobody mounted a volume there, and the kernel refuses an overlay whose upper dir is on
//! overlayfs. We find that out here, before dockerd fails with a cryptic mount error, and fall
//! back to a driver that works (or stop, if the user asked us to).
//!
//! [`probe`] and [`fallbacks`] look at the system; [`decide`] is pure; [`choose`] wires them to
//! the real `/dev` and logs the warnings.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::statfs::statfs;

use crate::iptables::find_program;

/// Where dockerd keeps its state unless `--data-root` says otherwise.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/docker";
/// The driver we ask for when nobody chose one.
pub const DEFAULT_DRIVER: &str = "overlay2";

/// What to do when overlay2 is wanted but the data root is on overlayfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnOverlay {
    /// Use fuse-overlayfs if possible, else vfs, and warn loudly.
    #[default]
    Fallback,
    /// Refuse to start: a slow vfs daemon can be worse than none.
    Exit,
}

impl FromStr for OnOverlay {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fallback" => Ok(Self::Fallback),
            "exit" => Ok(Self::Exit),
            _ => Err(StorageError::InvalidOnOverlay(s.to_owned())),
        }
    }
}

/// A filesystem's `statfs` magic number (`f_type`), kept as the low 32 bits so comparisons
/// do not depend on the libc's signedness of `f_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsMagic(pub u64);

impl FsMagic {
    pub const OVERLAYFS: FsMagic = FsMagic(0x794c_7630);

    /// A short name for logs: the usual filesystems by name, anything else as hex.
    pub fn name(self) -> Cow<'static, str> {
        let name = match self.0 {
            0x794c_7630 => "overlayfs",
            // ext2, ext3 and ext4 share one magic; ext4 is what anyone runs today.
            0xef53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683e => "btrfs",
            0x0102_1994 => "tmpfs",
            0x2fc1_2fc1 => "zfs",
            0x6175_6673 => "aufs",
            0x6573_5546 => "fuse",
            0x6969 => "nfs",
            0xf2f5_2010 => "f2fs",
            0x7371_7368 => "squashfs",
            0x8584_58f6 => "ramfs",
            0xff53_4d42 | 0xfe53_4d42 => "cifs",
            _ => return Cow::Owned(format!("{:#x}", self.0)),
        };
        Cow::Borrowed(name)
    }
}

impl fmt::Display for FsMagic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The filesystem found under the data root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The path actually examined: the data root or its nearest existing ancestor, because on
    /// first start `/var/lib/docker` does not exist yet and will be created on that filesystem.
    pub checked: PathBuf,
    pub fs: FsMagic,
}

/// What the overlayfs fallback can use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fallbacks {
    /// The `fuse-overlayfs` binary found on PATH.
    pub fuse_overlayfs: Option<PathBuf>,
    /// Whether `/dev/fuse` exists; fuse-overlayfs cannot mount without it.
    pub dev_fuse: bool,
}

/// What the user and our settings asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// `DOCKER_DRIVER` from our environment, when set and not empty. dockerd reads it from its
    /// environment before `--storage-driver` and daemon.json (moby `daemon/daemon.go`), so it
    /// wins over every other setting here too.
    pub env: Option<&'a str>,
    /// A driver set in the user's dockerd flags (`--storage-driver`, `-s`) or daemon.json.
    /// It is passed to dockerd by the user's own config, so the caller must not pass it again.
    pub explicit: Option<&'a str>,
    /// Our own setting; `None` means overlay2.
    pub requested: Option<&'a str>,
    pub on_overlay: OnOverlay,
}

/// The driver to run with and why, for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageChoice {
    pub driver: String,
    /// E.g. "overlay2 (default; /var/lib/docker is on ext4)".
    pub reason: String,
    /// True when the driver came from the user's dockerd flags or daemon.json; then the caller
    /// adds no `--storage-driver` flag of its own.
    pub explicit: bool,
    /// Lines to log at warn level, in order.
    pub warnings: Vec<String>,
    /// What dockerd must find in `DOCKER_DRIVER`: set whenever our environment set it, to the
    /// driver chosen (the fallback, when `DOCKER_DRIVER=overlay2` cannot work), because dockerd
    /// would read the variable over any flag we give.
    pub env: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{data_root} is on overlayfs, where overlay2 cannot work; mount a volume at {data_root} (or allow the fallback driver)")]
    OverlayOnOverlay { data_root: String },
    #[error("DOCKER_DRIVER=overlay2, but {data_root} is on overlayfs, where overlay2 cannot work, and DIND_STORAGE_ON_OVERLAY=exit; mount a volume at {data_root} (or unset DOCKER_DRIVER)")]
    EnvOverlayOnOverlay { data_root: String },
    #[error("cannot check the filesystem of {}", path.display())]
    Statfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid overlay policy {0:?}; use \"fallback\" or \"exit\"")]
    InvalidOnOverlay(String),
}

/// Finds the filesystem of `data_root`, walking up to the nearest existing ancestor.
pub fn probe(data_root: &Path) -> Result<Probe, StorageError> {
    let mut path = data_root;
    loop {
        match statfs(path) {
            Ok(st) => {
                // f_type is signed on some libcs; the magics are 32-bit.
                #[allow(clippy::unnecessary_cast)]
                let magic = (st.filesystem_type().0 as u64) & 0xffff_ffff;
                return Ok(Probe {
                    checked: path.to_path_buf(),
                    fs: FsMagic(magic),
                });
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) if path.parent().is_some() => {
                path = path.parent().unwrap_or(path);
            }
            // The walk ended at "/" (or "" for a relative path) without an answer.
            Err(e) => {
                return Err(StorageError::Statfs {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
}

/// Looks for the fuse-overlayfs binary on `path_env` and for `<dev_root>/fuse`.
pub fn fallbacks(path_env: &str, dev_root: &Path) -> Fallbacks {
    Fallbacks {
        fuse_overlayfs: find_program(path_env, "fuse-overlayfs"),
        dev_fuse: dev_root.join("fuse").exists(),
    }
}

/// Picks the driver. `probe` is `None` when the filesystem could not be checked; then we keep
/// the wanted driver and let dockerd speak for itself.
// long: one decision table (DOCKER_DRIVER, explicit, requested,
// overlay-on-overlay), each row with the reason logged; read top to bottom.
pub fn decide(
    req: &Request<'_>,
    data_root: &Path,
    probe: Option<&Probe>,
    fallbacks: &Fallbacks,
) -> Result<StorageChoice, StorageError> {
    let root = data_root.display().to_string();
    let on_overlay = probe.is_some_and(|p| p.fs == FsMagic::OVERLAYFS);
    let fs_note = match probe {
        Some(p) => format!("{root} is on {}", p.fs),
        None => format!("filesystem of {root} unknown"),
    };

    if let Some(driver) = req.env {
        return from_env(driver, req, &root, on_overlay, &fs_note, fallbacks);
    }
    if let Some(driver) = req.explicit {
        let mut warnings = Vec::new();
        if driver == DEFAULT_DRIVER && on_overlay {
            if req.on_overlay == OnOverlay::Exit {
                return Err(StorageError::OverlayOnOverlay { data_root: root });
            }
            // The user's own config names overlay2; overriding an explicit choice would be
            // surprising, so we keep it and let dockerd fail with our hint already in the log.
            warnings.push(format!(
                "{root} is on overlayfs, where overlay2 cannot work, but overlay2 is set explicitly in dockerd's flags or daemon.json; mount a volume at {root}"
            ));
        }
        return Ok(StorageChoice {
            driver: driver.to_owned(),
            reason: format!("{driver} (set in dockerd flags or daemon.json; {fs_note})"),
            explicit: true,
            warnings,
            env: None,
        });
    }

    let (driver, origin) = match req.requested {
        Some(d) => (d, "requested"),
        None => (DEFAULT_DRIVER, "default"),
    };
    if driver != DEFAULT_DRIVER || !on_overlay {
        return Ok(StorageChoice {
            driver: driver.to_owned(),
            reason: format!("{driver} ({origin}; {fs_note})"),
            explicit: false,
            warnings: Vec::new(),
            env: None,
        });
    }

    if req.on_overlay == OnOverlay::Exit {
        return Err(StorageError::OverlayOnOverlay { data_root: root });
    }
    let (driver, reason, cost) = fallback(&root, fallbacks);
    Ok(StorageChoice {
        driver: driver.to_owned(),
        reason,
        explicit: false,
        warnings: vec![
            format!("{root} is on overlayfs, where overlay2 cannot work; mount a volume at {root}"),
            cost,
        ],
        env: None,
    })
}

/// `DOCKER_DRIVER` decides, as in dockerd; only an overlay2 that cannot work on the data root
/// follows `DIND_STORAGE_ON_OVERLAY`. The stock image's users set `DOCKER_DRIVER: overlay2`
/// out of habit (GitLab's docs did for years), so it must not stop a service that works.
fn from_env(
    driver: &str,
    req: &Request<'_>,
    root: &str,
    on_overlay: bool,
    fs_note: &str,
    fallbacks: &Fallbacks,
) -> Result<StorageChoice, StorageError> {
    if driver != DEFAULT_DRIVER || !on_overlay {
        // Our own flag would lose to the variable in dockerd: add none, say what wins.
        let overrides = match (req.explicit, req.requested) {
            (Some(other), _) if other != driver => {
                format!("; over {other} from dockerd flags or daemon.json, as dockerd reads it")
            }
            (None, Some(other)) if other != driver => {
                format!("; over DIND_STORAGE_DRIVER={other}, as dockerd reads it")
            }
            _ => String::new(),
        };
        return Ok(StorageChoice {
            driver: driver.to_owned(),
            reason: format!("{driver} (DOCKER_DRIVER{overrides}; {fs_note})"),
            explicit: true,
            warnings: Vec::new(),
            env: Some(driver.to_owned()),
        });
    }
    if req.on_overlay == OnOverlay::Exit {
        return Err(StorageError::EnvOverlayOnOverlay {
            data_root: root.to_owned(),
        });
    }
    // One line: the variable, why it cannot be followed, what runs instead and at what cost.
    let (driver, reason, cost) = fallback(root, fallbacks);
    Ok(StorageChoice {
        driver: driver.to_owned(),
        reason: format!("{reason}; DOCKER_DRIVER=overlay2 replaced"),
        explicit: true,
        warnings: vec![format!(
            "DOCKER_DRIVER=overlay2 cannot work with {root} on overlayfs: dockerd gets DOCKER_DRIVER={driver} instead (DIND_STORAGE_ON_OVERLAY=fallback); {cost}"
        )],
        env: Some(driver.to_owned()),
    })
}

/// The driver used when overlay2 cannot work on the data root: fuse-overlayfs where it can
/// mount, else vfs. The reason, and a warning on what the fallback costs.
fn fallback(root: &str, fallbacks: &Fallbacks) -> (&'static str, String, String) {
    let (driver, why) = match (&fallbacks.fuse_overlayfs, fallbacks.dev_fuse) {
        (Some(_), true) => ("fuse-overlayfs", ""),
        (Some(_), false) => ("vfs", " and /dev/fuse is missing"),
        (None, _) => ("vfs", " and fuse-overlayfs is not installed"),
    };
    let reason = format!("{driver} (fallback: {root} is on overlayfs{why})");
    let cost = if driver == "vfs" {
        // vfs copies every layer in full: builds get slow and disks fill up; say so loudly.
        format!("FALLING BACK TO THE vfs STORAGE DRIVER: every image layer is a full copy, slow and disk-hungry; mount a volume at {root} to get overlay2")
    } else {
        format!("falling back to the fuse-overlayfs storage driver, slower than overlay2; mount a volume at {root} to get overlay2")
    };
    (driver, reason, cost)
}

/// [`decide`] against the real system: statfs on `data_root`, fuse-overlayfs on `path_env`,
/// and `/dev/fuse`. Logs the warnings; the caller logs `reason`.
pub fn choose(
    req: &Request<'_>,
    data_root: &Path,
    path_env: &str,
) -> Result<StorageChoice, StorageError> {
    let probed = match probe(data_root) {
        Ok(p) => Some(p),
        Err(e) => {
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            tracing::warn!(error = %e, cause, "storage driver check skipped; keeping the wanted driver");
            None
        }
    };
    let choice = decide(
        req,
        data_root,
        probed.as_ref(),
        &fallbacks(path_env, Path::new("/dev")),
    )?;
    for w in &choice.warnings {
        tracing::warn!("{w}");
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn on(fs: FsMagic) -> Probe {
        Probe {
            checked: PathBuf::from("/var/lib"),
            fs,
        }
    }

    const ROOT: &str = "/var/lib/docker";

    #[test]
    fn default_is_overlay2_and_names_the_filesystem() {
        let c = decide(
            &Request::default(),
            Path::new(ROOT),
            Some(&on(FsMagic(0xef53))),
            &Fallbacks::default(),
        )
        .unwrap();
        assert_eq!(c.driver, "overlay2");
        assert_eq!(c.reason, "overlay2 (default; /var/lib/docker is on ext4)");
        assert!(!c.explicit);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn overlay_on_overlay_falls_back_to_vfs_without_fuse_overlayfs() {
        let c = decide(
            &Request::default(),
            Path::new(ROOT),
            Some(&on(FsMagic::OVERLAYFS)),
            &Fallbacks {
                fuse_overlayfs: None,
                dev_fuse: true,
            },
        )
        .unwrap();
        assert_eq!(c.driver, "vfs");
        assert_eq!(
            c.reason,
            "vfs (fallback: /var/lib/docker is on overlayfs and fuse-overlayfs is not installed)"
        );
        assert_eq!(c.warnings.len(), 2);
        assert!(c.warnings[0].contains("mount a volume at /var/lib/docker"));
        assert!(c.warnings[1].contains("vfs"));
    }

    #[test]
    fn overlay_on_overlay_uses_fuse_overlayfs_when_installed_with_dev_fuse() {
        let fb = Fallbacks {
            fuse_overlayfs: Some(PathBuf::from("/usr/bin/fuse-overlayfs")),
            dev_fuse: true,
        };
        let c = decide(
            &Request::default(),
            Path::new(ROOT),
            Some(&on(FsMagic::OVERLAYFS)),
            &fb,
        )
        .unwrap();
        assert_eq!(c.driver, "fuse-overlayfs");

        let no_dev = Fallbacks {
            dev_fuse: false,
            ..fb
        };
        let c = decide(
            &Request::default(),
            Path::new(ROOT),
            Some(&on(FsMagic::OVERLAYFS)),
            &no_dev,
        )
        .unwrap();
        assert_eq!(c.driver, "vfs");
        assert!(c.reason.contains("/dev/fuse is missing"));
    }

    #[test]
    fn overlay_on_overlay_with_exit_policy_is_a_one_line_error_naming_the_fix() {
        let req = Request {
            on_overlay: OnOverlay::Exit,
            ..Request::default()
        };
        let err = decide(
            &req,
            Path::new(ROOT),
            Some(&on(FsMagic::OVERLAYFS)),
            &Fallbacks::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mount a volume at /var/lib/docker"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn explicit_driver_is_respected_even_on_overlayfs() {
        let req = Request {
            explicit: Some("vfs"),
            ..Request::default()
        };
        let c = decide(
            &req,
            Path::new(ROOT),
            Some(&on(FsMagic::OVERLAYFS)),
            &Fallbacks::default(),
        )
        .unwrap();
        assert_eq!(c.driver, "vfs");
        assert!(c.explicit);
        assert!(c.warnings.is_empty());

        // Explicit overlay2 on overlayfs: kept, but the log says why dockerd will fail.
        let req = Request {
            explicit: Some("overlay2"),
            ..Request::default()
        };
        let c = decide(
            &req,
            Path::new(ROOT),
            Some(&on(FsMagic::OVERLAYFS)),
            &Fallbacks::default(),
        )
        .unwrap();
        assert_eq!(c.driver, "overlay2");
        assert_eq!(c.warnings.len(), 1);
    }

    /// [`decide`] for `req` with the data root on `fs`, nothing to fall back on.
    fn decided(req: &Request<'_>, fs: FsMagic) -> Result<StorageChoice, StorageError> {
        decide(req, Path::new(ROOT), Some(&on(fs)), &Fallbacks::default())
    }

    fn on_overlayfs(req: &Request<'_>) -> Result<StorageChoice, StorageError> {
        decided(req, FsMagic::OVERLAYFS)
    }

    #[test]
    fn docker_driver_wins_over_flags_daemon_json_and_ours_as_in_dockerd() {
        let req = Request {
            env: Some("btrfs"),
            explicit: Some("zfs"),
            requested: Some("vfs"),
            ..Request::default()
        };
        let c = decided(&req, FsMagic(0x9123_683e)).unwrap();
        assert_eq!(c.driver, "btrfs");
        // dockerd reads the variable over any flag: we add none, and it keeps the value.
        assert!(c.explicit);
        assert_eq!(c.env.as_deref(), Some("btrfs"));
        assert!(
            c.reason.contains("DOCKER_DRIVER") && c.reason.contains("zfs"),
            "{}",
            c.reason
        );
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn docker_driver_overlay2_on_ext4_is_kept() {
        let req = Request {
            env: Some("overlay2"),
            ..Request::default()
        };
        let c = decided(&req, FsMagic(0xef53)).unwrap();
        assert_eq!(
            (c.driver.as_str(), c.env.as_deref()),
            ("overlay2", Some("overlay2"))
        );
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn docker_driver_overlay2_on_overlayfs_falls_back_with_one_line() {
        let req = Request {
            env: Some("overlay2"),
            ..Request::default()
        };
        let c = on_overlayfs(&req).unwrap();
        assert_eq!(c.driver, "vfs");
        // dockerd must see the fallback in the variable, or it would still try overlay2.
        assert_eq!(c.env.as_deref(), Some("vfs"));
        assert!(
            c.explicit,
            "no --storage-driver flag of ours: the variable carries it"
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("DOCKER_DRIVER=overlay2"));
        assert!(c.warnings[0].contains("mount a volume at /var/lib/docker"));

        let fuse = Fallbacks {
            fuse_overlayfs: Some(PathBuf::from("/usr/bin/fuse-overlayfs")),
            dev_fuse: true,
        };
        let c = decide(&req, Path::new(ROOT), Some(&on(FsMagic::OVERLAYFS)), &fuse).unwrap();
        assert_eq!(c.env.as_deref(), Some("fuse-overlayfs"));
    }

    #[test]
    fn docker_driver_overlay2_on_overlayfs_with_exit_is_one_line_naming_it() {
        let req = Request {
            env: Some("overlay2"),
            on_overlay: OnOverlay::Exit,
            ..Request::default()
        };
        let err = on_overlayfs(&req).unwrap_err();
        assert!(
            matches!(err, StorageError::EnvOverlayOnOverlay { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("DOCKER_DRIVER=overlay2") && msg.contains("mount a volume"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn without_docker_driver_dockerd_gets_no_variable_from_us() {
        for req in [
            Request::default(),
            Request {
                explicit: Some("vfs"),
                ..Request::default()
            },
        ] {
            assert_eq!(on_overlayfs(&req).unwrap().env, None);
        }
    }

    #[test]
    fn requested_non_overlay2_driver_skips_the_fallback() {
        let req = Request {
            requested: Some("btrfs"),
            ..Request::default()
        };
        let c = decide(
            &req,
            Path::new(ROOT),
            Some(&on(FsMagic::OVERLAYFS)),
            &Fallbacks::default(),
        )
        .unwrap();
        assert_eq!(c.driver, "btrfs");
        assert_eq!(
            c.reason,
            "btrfs (requested; /var/lib/docker is on overlayfs)"
        );
    }

    #[test]
    fn unknown_filesystem_keeps_overlay2() {
        let c = decide(
            &Request::default(),
            Path::new(ROOT),
            None,
            &Fallbacks::default(),
        )
        .unwrap();
        assert_eq!(c.driver, "overlay2");
        assert!(c.reason.contains("unknown"));
    }

    #[test]
    fn filesystem_names() {
        assert_eq!(FsMagic::OVERLAYFS.name(), "overlayfs");
        assert_eq!(FsMagic(0xef53).to_string(), "ext4");
        assert_eq!(FsMagic(0x5846_5342).name(), "xfs");
        assert_eq!(FsMagic(0x9123_683e).name(), "btrfs");
        assert_eq!(FsMagic(0x0102_1994).name(), "tmpfs");
        assert_eq!(FsMagic(0x2fc1_2fc1).name(), "zfs");
        assert_eq!(FsMagic(0x1234).name(), "0x1234");
    }

    #[test]
    fn probe_walks_up_to_the_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("var/lib/docker");
        let p = probe(&missing).unwrap();
        assert_eq!(p.checked, dir.path());
        assert_eq!(p.fs, probe(dir.path()).unwrap().fs);
    }

    #[test]
    fn fallbacks_find_fuse_overlayfs_on_path_and_dev_fuse() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let dev = dir.path().join("dev");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&dev).unwrap();
        let path_env = format!("/nonexistent:{}", bin.display());

        assert_eq!(fallbacks(&path_env, &dev), Fallbacks::default());

        let exe = bin.join("fuse-overlayfs");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dev.join("fuse"), "").unwrap();
        assert_eq!(
            fallbacks(&path_env, &dev),
            Fallbacks {
                fuse_overlayfs: Some(exe),
                dev_fuse: true,
            }
        );
    }

    #[test]
    fn on_overlay_parses() {
        assert_eq!(
            "fallback".parse::<OnOverlay>().unwrap(),
            OnOverlay::Fallback
        );
        assert_eq!("Exit".parse::<OnOverlay>().unwrap(), OnOverlay::Exit);
        assert!("maybe".parse::<OnOverlay>().is_err());
    }
}
