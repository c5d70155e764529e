//! iptables backend choice (legacy or nft), made the way the stock docker:dind entrypoint does.
//!
//! Both backends feed the same netfilter hooks through different kernel interfaces: rules made
//! with one are invisible to the other's tools, mixing both in one network namespace filters
//! confusingly, and a host kernel may lack the modules for one of them. The stock image's rule:
//! `DOCKER_IPTABLES_LEGACY` wins when set (non-empty → legacy, empty → nft); otherwise legacy
//! when legacy tables are already loaded here (someone uses them, and the kernel has them),
//! else nft. dockerd runs whatever `iptables` is first on its PATH, so we steer it with a
//! directory of symlinks put first on PATH.
//!
//! [`probe`] looks at `/proc` and PATH, [`decide`] is pure, [`install_shim`] writes the symlinks,
//! [`choose`] does all three against the real `/proc`.

use crate::env::DOCKER_IPTABLES_LEGACY;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The programs dockerd runs; each gets a shim link.
const TOOLS: [&str; 6] = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

/// Non-empty in any of these means legacy (x_tables) tables are loaded in this network
/// namespace. Reading them loads no module, unlike `iptables-legacy -nL`.
const LEGACY_TABLE_FILES: [&str; 3] = [
    "net/ip_tables_names",
    "net/ip6_tables_names",
    "net/arp_tables_names",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
    /// No iptables at all; dockerd will complain itself.
    Missing,
}

impl Backend {
    /// The infix in variant names: `iptables-legacy-save`, `xtables-nft-multi`.
    fn variant(self) -> Option<&'static str> {
        match self {
            Backend::Legacy => Some("legacy"),
            Backend::Nft => Some("nft"),
            Backend::Missing => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
            Backend::Missing => "none found",
        })
    }
}

/// What plain `iptables` on PATH turns out to be after following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Legacy,
    Nft,
    Absent,
}

/// What the system offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The first `/proc/net/*_tables_names` file found non-empty.
    pub legacy_tables_in: Option<PathBuf>,
    /// `iptables-legacy` or `xtables-legacy-multi` on PATH, or `iptables` is legacy.
    pub legacy: bool,
    /// `iptables-nft` or `xtables-nft-multi` on PATH, or `iptables` is nft.
    pub nft: bool,
    pub iptables: Resolved,
}

/// The decision before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backend: Backend,
    pub reason: String,
    /// Plain `iptables` on PATH is not the chosen backend, so dockerd needs the shim.
    pub shim: bool,
}

/// The outcome, for the caller to log and to build dockerd's environment from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesChoice {
    pub backend: Backend,
    /// E.g. "legacy (legacy tables already in use: /proc/net/ip_tables_names is non-empty)".
    pub reason: String,
    /// PATH for dockerd with the shim directory first; `None` means keep PATH as it is.
    pub path_env: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("{DOCKER_IPTABLES_LEGACY} asks for {backend} iptables but neither iptables-{backend} nor xtables-{backend}-multi is on PATH; install them or change {DOCKER_IPTABLES_LEGACY}")]
    NotInstalled { backend: Backend },
    #[error("cannot create the iptables shim {}", path.display())]
    Shim {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Finds an executable named `name` in `path_env` (a `PATH` value), like `command -v`.
/// Empty and relative entries are skipped: PID 1 must not run programs from its cwd.
pub fn find_program(path_env: &str, name: &str) -> Option<PathBuf> {
    path_env
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Looks at `<proc_root>/net/*_tables_names` and at the iptables programs on `path_env`.
pub fn probe(proc_root: &Path, path_env: &str) -> Probe {
    let legacy_tables_in = LEGACY_TABLE_FILES
        .iter()
        .map(|f| proc_root.join(f))
        .find(|p| fs::read_to_string(p).is_ok_and(|s| !s.trim().is_empty()));
    let iptables = match find_program(path_env, "iptables") {
        None => Resolved::Absent,
        Some(p) => {
            // Debian: iptables -> /etc/alternatives/iptables -> iptables-nft -> xtables-nft-multi;
            // Alpine: iptables -> xtables-nft-multi. The final name tells the flavour.
            let real = fs::canonicalize(&p).unwrap_or(p);
            let name = real
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // nft only ever ships as `xtables-nft-multi`/`iptables-nft`; anything else
            // (`xtables-legacy-multi`, the pre-1.8 `xtables-multi`, a plain binary) is legacy.
            if name.contains("nft") {
                Resolved::Nft
            } else {
                Resolved::Legacy
            }
        }
    };
    let has = |backend: &str| {
        find_program(path_env, &format!("iptables-{backend}")).is_some()
            || find_program(path_env, &format!("xtables-{backend}-multi")).is_some()
    };
    Probe {
        legacy_tables_in,
        legacy: has("legacy") || iptables == Resolved::Legacy,
        nft: has("nft") || iptables == Resolved::Nft,
        iptables,
    }
}

/// Chooses the backend from `DOCKER_IPTABLES_LEGACY` (`env_legacy`) and what [`probe`] found.
pub fn decide(env_legacy: Option<&str>, probe: &Probe) -> Result<Decision, IptablesError> {
    let (backend, reason) = match env_legacy {
        Some(v) => {
            let backend = if v.is_empty() {
                Backend::Nft
            } else {
                Backend::Legacy
            };
            let available = match backend {
                Backend::Legacy => probe.legacy,
                _ => probe.nft,
            };
            if !available {
                return Err(IptablesError::NotInstalled { backend });
            }
            let why = if v.is_empty() {
                "set but empty"
            } else {
                "set"
            };
            (backend, format!("{backend} ({DOCKER_IPTABLES_LEGACY} is {why})"))
        }
        None => match (&probe.legacy_tables_in, probe.legacy, probe.nft) {
            (Some(f), true, _) => (
                Backend::Legacy,
                format!(
                    "legacy (legacy tables already in use: {} is non-empty)",
                    f.display()
                ),
            ),
            (Some(f), false, true) => (
                Backend::Nft,
                format!(
                    "nft (legacy tables are in use ({} is non-empty) but iptables-legacy is not installed)",
                    f.display()
                ),
            ),
            (None, _, true) => (
                Backend::Nft,
                "nft (default; no legacy tables in use)".to_owned(),
            ),
            (_, true, false) => (
                Backend::Legacy,
                "legacy (iptables-nft is not installed)".to_owned(),
            ),
            // An `iptables` on PATH would have counted as one of the two.
            (_, false, false) => (
                Backend::Missing,
                "none found (no iptables, iptables-nft or iptables-legacy on PATH)".to_owned(),
            ),
        },
    };
    let shim = match backend {
        Backend::Legacy => probe.iptables != Resolved::Legacy,
        Backend::Nft => probe.iptables != Resolved::Nft,
        Backend::Missing => false,
    };
    Ok(Decision {
        backend,
        reason,
        shim,
    })
}

/// The program a shim link named `tool` should point to: `iptables-legacy-save` for
/// `iptables-save`, else the multi binary, which dispatches on the link's own name.
fn shim_target(tool: &str, variant: &str, path_env: &str) -> Option<PathBuf> {
    let family = if tool.starts_with("ip6tables") {
        "ip6tables"
    } else {
        "iptables"
    };
    let suffix = &tool[family.len()..];
    find_program(path_env, &format!("{family}-{variant}{suffix}"))
        .or_else(|| find_program(path_env, &format!("xtables-{variant}-multi")))
}

/// Makes `shim_dir` hold `iptables`, `iptables-save`, ... links to the `backend` variants on
/// `path_env`, replacing what a previous run left. Tools without a variant lose their link, so
/// dockerd falls through to PATH rather than a stale target. Returns how many links exist.
pub fn install_shim(
    shim_dir: &Path,
    backend: Backend,
    path_env: &str,
) -> Result<usize, IptablesError> {
    let shim_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IptablesError::Shim { path, source }
    };
    let Some(variant) = backend.variant() else {
        return Ok(0);
    };
    fs::create_dir_all(shim_dir).map_err(shim_err(shim_dir))?;
    // Never link to our own links from an earlier run.
    let search = path_without(path_env, shim_dir);
    let mut linked = 0;
    for tool in TOOLS {
        let link = shim_dir.join(tool);
        match shim_target(tool, variant, &search) {
            Some(target) => {
                // Build the link beside the real name and rename it over: dockerd never sees
                // a missing `iptables`, and a rerun replaces rather than fails with EEXIST.
                let tmp = shim_dir.join(format!(".{tool}.tmp"));
                match fs::remove_file(&tmp) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(shim_err(&tmp)(e)),
                    _ => {}
                }
                std::os::unix::fs::symlink(&target, &tmp).map_err(shim_err(&tmp))?;
                fs::rename(&tmp, &link).map_err(shim_err(&link))?;
                linked += 1;
            }
            None => match fs::remove_file(&link) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(shim_err(&link)(e)),
                _ => {}
            },
        }
    }
    Ok(linked)
}

/// `path_env` without `dir`, so a PATH inherited from an earlier run does not list it twice.
fn path_without(path_env: &str, dir: &Path) -> String {
    path_env
        .split(':')
        .filter(|d| Path::new(d) != dir)
        .collect::<Vec<_>>()
        .join(":")
}

/// PATH for dockerd: `shim_dir` first, then `path_env` without it.
pub fn shimmed_path(shim_dir: &Path, path_env: &str) -> String {
    let rest = path_without(path_env, shim_dir);
    if rest.is_empty() {
        shim_dir.display().to_string()
    } else {
        format!("{}:{rest}", shim_dir.display())
    }
}

/// Probe, decide and, when needed, install the shim. `proc_root` is `/proc` in production.
pub fn choose_in(
    proc_root: &Path,
    env_legacy: Option<&str>,
    path_env: &str,
    shim_dir: &Path,
) -> Result<IptablesChoice, IptablesError> {
    // A PATH inherited from an earlier run may already list the shim; judge without it.
    let clean = path_without(path_env, shim_dir);
    let probed = probe(proc_root, &clean);
    let decision = decide(env_legacy, &probed)?;
    let path = if decision.shim && install_shim(shim_dir, decision.backend, &clean)? > 0 {
        Some(shimmed_path(shim_dir, &clean))
    } else if clean != path_env {
        // No shim this time: make sure a stale one is not used.
        Some(clean)
    } else {
        None
    };
    Ok(IptablesChoice {
        backend: decision.backend,
        reason: decision.reason,
        path_env: path,
    })
}

/// [`choose_in`] with the real `/proc`; warns when no iptables was found.
pub fn choose(
    env_legacy: Option<&str>,
    path_env: &str,
    shim_dir: &Path,
) -> Result<IptablesChoice, IptablesError> {
    let choice = choose_in(Path::new("/proc"), env_legacy, path_env, shim_dir)?;
    if choice.backend == Backend::Missing {
        tracing::warn!(reason = %choice.reason, "no usable iptables; dockerd will fail to set up container networking unless started with --iptables=false");
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A fake system: `sbin/` with programs, `proc/net/` with table lists.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Self {
            let f = Fake {
                dir: tempfile::tempdir().unwrap(),
            };
            fs::create_dir_all(f.sbin()).unwrap();
            fs::create_dir_all(f.proc().join("net")).unwrap();
            f
        }
        fn sbin(&self) -> PathBuf {
            self.dir.path().join("sbin")
        }
        fn proc(&self) -> PathBuf {
            self.dir.path().join("proc")
        }
        fn shim(&self) -> PathBuf {
            self.dir.path().join("run/shim")
        }
        fn path_env(&self) -> String {
            format!("/nonexistent:{}", self.sbin().display())
        }
        fn exe(&self, name: &str) -> &Self {
            let p = self.sbin().join(name);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            self
        }
        fn link(&self, name: &str, target: &str) -> &Self {
            symlink(target, self.sbin().join(name)).unwrap();
            self
        }
        /// Alpine 3.19+ layout: both multis, plain names point at nft.
        fn alpine(&self) -> &Self {
            self.exe("xtables-nft-multi").exe("xtables-legacy-multi");
            for t in TOOLS {
                self.link(t, "xtables-nft-multi");
                let (family, suffix) = if t.starts_with("ip6") {
                    ("ip6tables", &t[9..])
                } else {
                    ("iptables", &t[8..])
                };
                self.link(&format!("{family}-legacy{suffix}"), "xtables-legacy-multi");
                self.link(&format!("{family}-nft{suffix}"), "xtables-nft-multi");
            }
            self
        }
        fn tables(&self, file: &str, content: &str) -> &Self {
            fs::write(self.proc().join("net").join(file), content).unwrap();
            self
        }
        fn choose(&self, env: Option<&str>) -> Result<IptablesChoice, IptablesError> {
            choose_in(&self.proc(), env, &self.path_env(), &self.shim())
        }
    }

    #[test]
    fn nft_by_default_when_no_legacy_tables_are_loaded() {
        let f = Fake::new();
        f.alpine().tables("ip_tables_names", "");
        let c = f.choose(None).unwrap();
        assert_eq!(c.backend, Backend::Nft);
        assert_eq!(c.reason, "nft (default; no legacy tables in use)");
        assert_eq!(c.path_env, None);
        assert!(!f.shim().exists());
    }

    #[test]
    fn legacy_when_legacy_tables_are_in_use_with_a_shim_first_on_path() {
        let f = Fake::new();
        f.alpine().tables("ip_tables_names", "nat\nfilter\n");
        let c = f.choose(None).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
        assert!(
            c.reason.contains("ip_tables_names is non-empty"),
            "{}",
            c.reason
        );
        assert_eq!(
            c.path_env.as_deref(),
            Some(format!("{}:{}", f.shim().display(), f.path_env()).as_str())
        );
        for t in TOOLS {
            let target = fs::read_link(f.shim().join(t)).unwrap();
            let want = t.replacen("tables", "tables-legacy", 1);
            assert_eq!(target, f.sbin().join(&want), "{t}");
        }
    }

    #[test]
    fn ip6_tables_alone_also_count_as_legacy_in_use() {
        let f = Fake::new();
        f.alpine().tables("ip6_tables_names", "filter\n");
        assert_eq!(f.choose(None).unwrap().backend, Backend::Legacy);
    }

    #[test]
    fn env_non_empty_forces_legacy_and_empty_forces_nft() {
        let f = Fake::new();
        f.alpine().tables("ip_tables_names", "filter\n");
        let c = f.choose(Some("1")).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
        assert_eq!(c.reason, "legacy (DOCKER_IPTABLES_LEGACY is set)");

        let c = f.choose(Some("")).unwrap();
        assert_eq!(c.backend, Backend::Nft);
        assert_eq!(c.reason, "nft (DOCKER_IPTABLES_LEGACY is set but empty)");
        assert_eq!(c.path_env, None, "iptables already is nft");
    }

    #[test]
    fn explicit_nft_shims_an_iptables_that_resolves_to_legacy() {
        let f = Fake::new();
        f.exe("xtables-legacy-multi").exe("xtables-nft-multi");
        f.link("iptables", "xtables-legacy-multi")
            .link("iptables-nft", "xtables-nft-multi");
        let c = f.choose(Some("")).unwrap();
        assert_eq!(c.backend, Backend::Nft);
        assert!(c.path_env.is_some());
        assert_eq!(
            fs::read_link(f.shim().join("iptables")).unwrap(),
            f.sbin().join("iptables-nft")
        );
        // No ip6tables-nft: the multi binary stands in, dispatching on the link name.
        assert_eq!(
            fs::read_link(f.shim().join("ip6tables-save")).unwrap(),
            f.sbin().join("xtables-nft-multi")
        );
    }

    #[test]
    fn legacy_only_install_uses_legacy() {
        let f = Fake::new();
        f.exe("xtables-legacy-multi")
            .link("iptables", "xtables-legacy-multi")
            .link("iptables-legacy", "xtables-legacy-multi");
        let c = f.choose(None).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
        assert_eq!(c.reason, "legacy (iptables-nft is not installed)");
        assert_eq!(c.path_env, None, "iptables already is legacy");
    }

    #[test]
    fn no_iptables_at_all_is_missing_not_an_error() {
        let f = Fake::new();
        let c = f.choose(None).unwrap();
        assert_eq!(c.backend, Backend::Missing);
        assert!(c.reason.starts_with("none found"));
        assert_eq!(c.path_env, None);
    }

    #[test]
    fn an_iptables_of_old_unsuffixed_flavour_is_used_as_legacy_without_a_shim() {
        let f = Fake::new();
        f.exe("xtables-multi").link("iptables", "xtables-multi");
        let c = f.choose(None).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
        assert_eq!(c.path_env, None);
        assert!(!f.shim().exists());
    }

    #[test]
    fn env_asking_for_an_uninstalled_backend_is_a_one_line_error() {
        let f = Fake::new();
        f.exe("xtables-nft-multi")
            .link("iptables", "xtables-nft-multi");
        let msg = f.choose(Some("1")).unwrap_err().to_string();
        assert!(msg.contains("iptables-legacy"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn shim_is_recreated_idempotently_and_path_lists_it_once() {
        let f = Fake::new();
        f.alpine().tables("ip_tables_names", "filter\n");
        let first = f.choose(None).unwrap();
        // A rerun with the shimmed PATH (e.g. inherited) must not link the shim to itself.
        let again = choose_in(
            &f.proc(),
            None,
            first.path_env.as_deref().unwrap(),
            &f.shim(),
        )
        .unwrap();
        assert_eq!(first.path_env, again.path_env);
        let target = fs::read_link(f.shim().join("iptables")).unwrap();
        assert_eq!(target, f.sbin().join("iptables-legacy"));
        let leftovers: Vec<_> = fs::read_dir(f.shim())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Legacy tables gone: nft, and the inherited PATH loses the stale shim.
        f.tables("ip_tables_names", "");
        let nft = choose_in(
            &f.proc(),
            None,
            first.path_env.as_deref().unwrap(),
            &f.shim(),
        )
        .unwrap();
        assert_eq!(nft.backend, Backend::Nft);
        assert_eq!(nft.path_env, Some(f.path_env()));
    }

    #[test]
    fn find_program_skips_relative_entries_and_non_executables() {
        let f = Fake::new();
        fs::write(f.sbin().join("plain"), "").unwrap();
        assert_eq!(find_program(&f.path_env(), "plain"), None);
        f.exe("tool");
        assert_eq!(
            find_program(&format!(".::{}", f.sbin().display()), "tool"),
            Some(f.sbin().join("tool"))
        );
        assert_eq!(find_program("sbin", "tool"), None);
    }
}
