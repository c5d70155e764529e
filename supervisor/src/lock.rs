//! The lock: what a job may not change when the image's policy file says
//! `locked = true` (issue 10, item 3).
//!
//! Every environment variable and every argument is the job's to set:
//! GitLab passes job variables to service containers, and the job writes
//! the service's `command:`. So under a lock the supervisor believes only
//! the image: the policy file at the fixed path
//! [`proxy::policy::IMAGE_FILE`], its `[supervisor]` table, and the image's
//! own files (`/etc/docker/daemon.json`). What the job sets may tighten the
//! policy (see [`proxy::policy::Policy::tightened`]) and may not do
//! anything else that matters:
//!
//! - a command that is not ours (`sh -c …`) is refused, and so is
//!   `DIND_BARE_DOCKERD` (dockerd with exactly the command's flags, no
//!   proxy). `dockerd …` itself is the user's dockerd flags, as a leading
//!   flag is: its `--host` and `--group` are the proxy's endpoints
//!   (`host_flags.rs`), and its `--host unix://` may not name dockerd's
//!   raw socket;
//! - settings the `[supervisor]` table pins (or whose built-in default it
//!   keeps) must be left alone or equal the image's: where dockerd's raw
//!   socket, run directory and data root are, which program is dockerd,
//!   where audit lines go, and whether a shared raw-socket directory is
//!   allowed;
//! - `DOCKER_HOST` may not name dockerd's raw socket;
//! - dockerd flags pass only from a list known to be harmless
//!   ([`ACCEPTED`]); anything else is refused, with a reason for those
//!   known to loosen ([`REFUSED`]);
//! - dockerd and every helper run with a clean environment
//!   ([`scrub_environment`]): `LD_PRELOAD`, `PATH`, `DOCKER_RAMDISK` and
//!   the like are the job's too.
//!
//! Not pinned, because none of them lets a job past the policy: TLS
//! (`DOCKER_TLS_CERTDIR=""` turns authentication off, the policy still
//! applies), listen addresses, socket mode, timeouts, registry mirrors,
//! storage driver, MTU, log format.
//!
//! A refusal is exit 78 and one line: the file, the setting as it was
//! spelled, why, and the fix.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::cli::{Given, SharedArg};
use crate::dockerd_flags::{self, arity, Arity, Letter};

/// Why a locked service does not start.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("policy locked by {file}: {setting} is refused: {why}; {fix}")]
    Refused {
        file: String,
        setting: String,
        why: String,
        fix: String,
    },
    #[error("policy file {file}: supervisor.{key}: {why}")]
    Pin {
        file: String,
        key: String,
        why: String,
    },
}

fn refused(
    file: &str,
    setting: impl Into<String>,
    why: impl Into<String>,
    fix: impl Into<String>,
) -> LockError {
    LockError::Refused {
        file: file.to_owned(),
        setting: setting.into(),
        why: why.into(),
        fix: fix.into(),
    }
}

/// A setting as the job spelled it: `DIND_POLICY="permissive"` or
/// `--policy "permissive"`.
pub fn spelled(name: &str, value: &str) -> String {
    if name.starts_with("--") {
        format!("{name} {value:?}")
    } else {
        format!("{name}={value:?}")
    }
}

/// The image's `[supervisor]` table, checked: settings the job may not
/// change under a lock, and defaults when unlocked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pins {
    pub run_dir: Option<PathBuf>,
    pub dockerd_socket: Option<PathBuf>,
    pub data_root: Option<PathBuf>,
    pub dockerd: Option<PathBuf>,
    pub audit_log: Option<PathBuf>,
    pub dockerd_socket_shared: Option<SharedArg>,
}

/// Keys of the `[supervisor]` table, as named in the refusal of an unknown one.
const PIN_KEYS: &str =
    "run_dir, dockerd_socket, data_root, dockerd, audit_log, dockerd_socket_shared";

impl Pins {
    pub fn parse(file: &str, table: &BTreeMap<String, String>) -> Result<Pins, LockError> {
        let mut pins = Pins::default();
        for (key, value) in table {
            let bad = |why: String| LockError::Pin {
                file: file.to_owned(),
                key: key.clone(),
                why,
            };
            let path = || {
                let p = PathBuf::from(value);
                if p.is_absolute() {
                    Ok(p)
                } else {
                    Err(bad(format!("{value:?} is not an absolute path")))
                }
            };
            match key.as_str() {
                "run_dir" => pins.run_dir = Some(path()?),
                "dockerd_socket" => pins.dockerd_socket = Some(path()?),
                "data_root" => pins.data_root = Some(path()?),
                "audit_log" => pins.audit_log = Some(path()?),
                "dockerd" if !value.is_empty() => pins.dockerd = Some(PathBuf::from(value)),
                "dockerd" => return Err(bad("name a program".into())),
                "dockerd_socket_shared" => {
                    pins.dockerd_socket_shared = Some(match value.as_str() {
                        "refuse" => SharedArg::Refuse,
                        "allow" => SharedArg::Allow,
                        _ => return Err(bad(format!("{value:?}: use \"refuse\" or \"allow\""))),
                    })
                }
                _ => return Err(bad(format!("unknown key (known: {PIN_KEYS})"))),
            }
        }
        Ok(pins)
    }
}

/// What the lock knows while pinning one setting.
pub struct Pinning<'a> {
    pub given: &'a Given,
    /// The locked file, or None when the image's file does not lock.
    pub locked: Option<&'a str>,
}

impl Pinning<'_> {
    /// One path setting: `value` is what clap produced (its default when
    /// not given), `id` its argument id, `pinned` the image's value,
    /// `default` the built-in one. Returns the value to use. A value set
    /// but empty counts as unset.
    pub fn path(
        &self,
        id: &str,
        what: &str,
        value: Option<PathBuf>,
        pinned: Option<&PathBuf>,
        default: Option<&Path>,
    ) -> Result<Option<PathBuf>, LockError> {
        let image = pinned.cloned().or_else(|| default.map(Path::to_owned));
        let set = value.filter(|v| !v.as_os_str().is_empty());
        match (self.given.name(id), set, self.locked) {
            // Path equality by components: `/x/` and `/x//` are `/x`.
            (Some(name), Some(v), Some(file)) if Some(&v) != image.as_ref() => Err(refused(
                file,
                spelled(name, &v.to_string_lossy()),
                match &image {
                    Some(i) => format!("the image sets {what} to {}", i.display()),
                    None => format!("the image keeps {what} at its default"),
                },
                format!("unset {name}"),
            )),
            (Some(_), Some(v), _) => Ok(Some(v)),
            // Not given: clap's default, unless the image pins one.
            (None, Some(v), _) if pinned.is_none() => Ok(Some(v)),
            _ => Ok(image),
        }
    }

    /// Whether a shared raw-socket directory is allowed.
    pub fn shared(
        &self,
        value: SharedArg,
        pinned: Option<SharedArg>,
    ) -> Result<SharedArg, LockError> {
        let Some(name) = self.given.name("dockerd_socket_shared") else {
            return Ok(pinned.unwrap_or(value));
        };
        let image = pinned.unwrap_or(SharedArg::Refuse);
        match self.locked {
            None => Ok(value),
            Some(_) if value == image => Ok(image),
            Some(file) => Err(refused(
                file,
                spelled(name, value.name()),
                "only the image may allow dockerd's raw socket on a shared mount",
                format!("unset {name}"),
            )),
        }
    }
}

/// Bare dockerd (`DIND_BARE_DOCKERD`, spelled `name`) would run dockerd
/// with exactly the command's flags, without the proxy and its policy.
pub fn refuse_bare(file: &str, name: &str) -> LockError {
    refused(
        file,
        spelled(name, "true"),
        "bare dockerd runs without the proxy and its policy",
        format!("unset {name}"),
    )
}

pub fn refuse_own_listen(file: &str, name: &str) -> LockError {
    refused(
        file,
        format!("{name} (dockerd listening for itself)"),
        "dockerd's own listeners have no policy",
        format!("unset {name}"),
    )
}

/// Any command that is not ours would replace the supervisor in a
/// privileged container.
pub fn refuse_exec(file: &str, first: &OsStr) -> LockError {
    refused(
        file,
        format!("the command {:?}", first.to_string_lossy()),
        "a locked service runs dind-supervisor only, never another program",
        "remove the service's command, or pass dockerd flags only",
    )
}

/// Under a lock `DOCKER_HOST` keeps its meaning (the proxy serves that
/// socket) but may not name dockerd's own: that used to mean "jobs use
/// dockerd directly".
pub fn check_docker_host(
    file: &str,
    docker_host: &str,
    same_as_raw: bool,
) -> Result<(), LockError> {
    if same_as_raw {
        return Err(refused(
            file,
            spelled(crate::env::DOCKER_HOST, docker_host),
            "it names dockerd's raw socket, which no job may reach",
            "point it at another path, or unset it (the proxy serves /var/run/docker.sock)",
        ));
    }
    Ok(())
}

/// A `--host unix://PATH` of the command is a socket the proxy serves, as
/// DOCKER_HOST's is; it may not be dockerd's own.
pub fn check_host_flag(file: &str, path: &Path, same_as_raw: bool) -> Result<(), LockError> {
    if same_as_raw {
        return Err(refused(
            file,
            format!("the dockerd flag --host=unix://{}", path.display()),
            "it names dockerd's raw socket, which no job may reach",
            "point it at another path, or remove it",
        ));
    }
    Ok(())
}

/// dockerd flags a locked service passes on (dockerd 20.10 to 28), read
/// after the endpoint flags (`--host`, `--group`, `--tls*`) were taken
/// for the proxy, so those entries are only a backstop. They
/// shape networking, storage, logging and registries, or can only tighten
/// (`--authorization-plugin`, `--userns-remap`, `--no-new-privileges`,
/// `--selinux-enabled`); `--tls*` does nothing without a TCP `--host`.
/// `--exec-root` holds containerd's socket: it passes, and the start-up
/// check of `private.rs` refuses it on a shared mount, as it does always.
/// `--data-root` must equal the data root the image keeps. dockerd
/// overwrites its `--pidfile` and removes it at exit, which would take the
/// image's daemon.json or this lock file away from the next start of a
/// reused service, so it must lie in the run directory. `--group` is the
/// group of a socket in a 0700 directory. Not here: `--storage-opt`, which
/// can hand dockerd a block device of the host (`dm.directlvm_device`).
const ACCEPTED: &[&str] = &[
    "debug",
    "icc",
    "ip-forward",
    "ip-forward-no-drop",
    "ip-masq",
    "iptables",
    "ip6tables",
    "ipv6",
    "live-restore",
    "no-new-privileges",
    "selinux-enabled",
    "userland-proxy",
    "init",
    "raw-logs",
    "tls",
    "tlsverify",
    "allow-nondistributable-artifacts",
    "authorization-plugin",
    "bip",
    "bridge",
    "data-root",
    "default-address-pool",
    "default-gateway",
    "default-gateway-v6",
    "default-network-opt",
    "default-shm-size",
    "default-ulimit",
    "dns",
    "dns-opt",
    "dns-search",
    "exec-opt",
    "exec-root",
    "fixed-cidr",
    "fixed-cidr-v6",
    "group",
    "host-gateway-ip",
    "http-proxy",
    "https-proxy",
    "insecure-registry",
    "ip",
    "label",
    "log-driver",
    "log-format",
    "log-level",
    "log-opt",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "max-download-attempts",
    "mtu",
    "network-control-plane-mtu",
    "no-proxy",
    "oom-score-adjust",
    "pidfile",
    "registry-mirror",
    "shutdown-timeout",
    "storage-driver",
    "tlscacert",
    "tlscert",
    "tlskey",
    "userns-remap",
];

/// dockerd flags known to loosen, with the reason a refusal gives.
const REFUSED: &[(&str, &str)] = &[
    ("host", "it opens an API endpoint without the policy"),
    ("config-file", "dockerd would read a configuration the image did not choose (hosts, runtimes, plugins)"),
    ("containerd", "dockerd would drive a containerd the image did not choose"),
    ("containerd-namespace", "dockerd would drive a containerd the image did not choose"),
    ("containerd-plugins-namespace", "dockerd would drive a containerd the image did not choose"),
    ("add-runtime", "a runtime is a program dockerd runs as root for containers"),
    ("default-runtime", "a runtime is a program dockerd runs as root for every container"),
    ("userland-proxy-path", "it names a program dockerd runs as root"),
    ("init-path", "dockerd would mount that file of the service into containers"),
    ("seccomp-profile", "it replaces the seccomp profile of every container"),
    ("default-cgroupns-mode", "it changes every container's default cgroup namespace"),
    ("default-ipc-mode", "it changes every container's default IPC namespace"),
    ("cgroup-parent", "it moves every container's cgroup"),
    ("experimental", "experimental API features (checkpoint restore from a directory the job names) are outside the policy"),
    ("metrics-addr", "it opens a network endpoint that shows dockerd's internals"),
    ("graph", "it is the old name of --data-root, which the image keeps"),
];

enum Found {
    Accepted(Arity),
    Refused(&'static str),
    Unknown,
}

/// What a lock makes of dockerd's long flag `name`.
fn find(name: &str) -> Found {
    match (arity(name), REFUSED.iter().find(|(f, _)| *f == name)) {
        (_, Some((_, why))) => Found::Refused(why),
        (Some(arity), None) if ACCEPTED.contains(&name) => Found::Accepted(arity),
        _ => Found::Unknown,
    }
}

/// Checks dockerd's flags from the service command under a lock, read the
/// way dockerd's flag parser (spf13/pflag) reads them: `--name=value`,
/// `--name value`, `-H value`, `-Hvalue`, `-H=value` and shorthand
/// clusters (`-DH value`). `data_root` and `run_dir` are the ones the
/// image keeps.
// long: one pass over pflag's grammar, where long flags and shorthand
// clusters both move the same index; split, the index would be shared state.
pub fn check_dockerd_args(
    file: &str,
    args: &[String],
    data_root: &Path,
    run_dir: &Path,
) -> Result<(), LockError> {
    let unknown = |shown: &str| {
        refused(
            file,
            format!("the dockerd flag {shown:?}"),
            "a locked service passes dockerd only flags known to be harmless",
            "remove it, or set it in the image's /etc/docker/daemon.json",
        )
    };
    let loosens = |shown: &str, why: &str| {
        refused(
            file,
            format!("the dockerd flag {shown:?}"),
            why,
            "remove it",
        )
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            match args.get(i) {
                Some(rest) => return Err(unknown(rest)),
                None => break,
            }
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let arity = match find(name) {
                Found::Unknown => return Err(unknown(a)),
                Found::Refused(why) => return Err(loosens(a, why)),
                Found::Accepted(arity) => arity,
            };
            let value = match (arity, inline) {
                (Arity::Value, None) => {
                    let v = args.get(i).cloned();
                    i += 1;
                    v
                }
                (_, v) => v,
            };
            match name {
                "data-root" => check_data_root(file, a, value.as_deref(), data_root)?,
                "pidfile" => check_pidfile(file, a, value.as_deref(), run_dir)?,
                _ => {}
            }
            continue;
        }
        let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) else {
            return Err(unknown(a));
        };
        for (c, letter) in dockerd_flags::cluster(cluster) {
            let (long, inline) = match letter {
                Letter::Unknown => return Err(unknown(&format!("-{c}"))),
                Letter::Bool { long, .. } => (long, None),
                Letter::Value { long, inline } => (long, Some(inline)),
            };
            match find(long) {
                Found::Unknown => return Err(unknown(&format!("-{c}"))),
                Found::Refused(why) => return Err(loosens(a, why)),
                Found::Accepted(_) => {}
            }
            let Some(inline) = inline else { continue };
            let value = match inline {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    args.get(i - 1).map(String::as_str)
                }
            };
            if long == "pidfile" {
                check_pidfile(file, a, value, run_dir)?;
            }
        }
    }
    Ok(())
}

fn check_data_root(
    file: &str,
    shown: &str,
    value: Option<&str>,
    data_root: &Path,
) -> Result<(), LockError> {
    if value.map(Path::new) == Some(data_root) {
        return Ok(());
    }
    Err(refused(
        file,
        format!("the dockerd flag {shown:?}"),
        format!(
            "the image keeps dockerd's data root at {}",
            data_root.display()
        ),
        "remove it",
    ))
}

fn check_pidfile(
    file: &str,
    shown: &str,
    value: Option<&str>,
    run_dir: &Path,
) -> Result<(), LockError> {
    let inside = value.map(Path::new).is_some_and(|p| {
        p.strip_prefix(run_dir).is_ok_and(|rest| {
            !rest.as_os_str().is_empty()
                && rest
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        })
    });
    if inside {
        return Ok(());
    }
    Err(refused(
        file,
        format!("the dockerd flag {shown:?}"),
        "dockerd overwrites its pid file and removes it at exit, so it must lie in the run directory",
        format!("remove it, or put it under {}", run_dir.display()),
    ))
}

/// `PATH` under a lock: the standard one, since the job's could put its
/// own `dockerd`, `iptables` or `runc` first.
pub const LOCKED_PATH: &str = crate::env::STANDARD_PATH;

/// Variables dockerd may still see under a lock: proxies only steer image
/// pulls, as a registry mirror does; `TZ` only log times.
const KEPT: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "TZ",
];

/// Set under a lock whatever the job says: a standard root environment.
const FIXED: &[(&str, &str)] = &[("PATH", LOCKED_PATH), ("HOME", "/root")];

/// The environment a locked service runs its children with: [`FIXED`]
/// plus [`KEPT`]; and the names of the variables dropped.
pub fn scrubbed(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> (Vec<(OsString, OsString)>, Vec<String>) {
    let mut kept: Vec<(OsString, OsString)> =
        FIXED.iter().map(|(k, v)| (k.into(), v.into())).collect();
    let mut dropped = Vec::new();
    for (k, v) in vars {
        if KEPT.iter().any(|n| k == *n) {
            kept.push((k, v));
        } else if !FIXED.iter().any(|(n, _)| k == *n) {
            dropped.push(k.to_string_lossy().into_owned());
        }
    }
    dropped.sort();
    (kept, dropped)
}

/// Replaces this process's environment with [`scrubbed`]'s, so dockerd,
/// containerd, runc and the iptables helpers inherit nothing the job set
/// (`LD_PRELOAD`, `DOCKER_RAMDISK`, `PATH`, …). Call it before any thread
/// starts. Returns the names dropped, for the log.
pub fn scrub_environment() -> Vec<String> {
    let (kept, dropped) = scrubbed(std::env::vars_os());
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    for (k, v) in kept {
        std::env::set_var(k, v);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/dind-supervisor/policy.toml";

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn check(a: &[&str]) -> Result<(), String> {
        check_dockerd_args(
            FILE,
            &args(a),
            Path::new("/var/lib/docker"),
            Path::new("/run/dind-supervisor"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn every_flag_the_lock_judges_is_one_dockerd_has() {
        for name in ACCEPTED.iter().chain(REFUSED.iter().map(|(n, _)| n)) {
            assert!(
                arity(name).is_some(),
                "{name} is not in dockerd_flags::FLAGS"
            );
        }
        // And the lock judges every flag dockerd has that we know of, but
        // help and version, which nobody passes a service.
        for (name, _, _) in dockerd_flags::FLAGS {
            let judged = ACCEPTED.contains(name) || REFUSED.iter().any(|(n, _)| n == name);
            assert!(judged || ["help", "version"].contains(name), "{name}");
        }
    }

    #[test]
    fn harmless_dockerd_flags_pass_in_every_spelling() {
        for a in [
            &[
                "--registry-mirror",
                "https://m.example",
                "--mtu=1400",
                "--debug",
            ][..],
            &[
                "-D",
                "-l",
                "debug",
                "-s",
                "vfs",
                "--iptables=false",
                "--bridge=none",
            ],
            &["-Dl", "debug"],
            &["-Dldebug", "-sfoo", "-s=bar", "-D=false", "-l=info"],
            &[
                "--exec-root=/x/exec",
                "--pidfile",
                "/run/dind-supervisor/docker.pid",
                "-p",
                "/run/dind-supervisor/d.pid",
            ],
            &[
                "-p/run/dind-supervisor/a.pid",
                "-Dp=/run/dind-supervisor/b.pid",
                "--pidfile=/run/dind-supervisor/x/c.pid",
            ],
            &[
                "--data-root=/var/lib/docker",
                "--data-root",
                "/var/lib/docker/",
            ],
            &[
                "--authorization-plugin",
                "authz",
                "--userns-remap=default",
                "--no-new-privileges",
            ],
            // A value that looks like a flag is a value.
            &["--log-opt", "-H", "--dns", "--host=x"],
            &["--debug", "--"],
            &[],
        ] {
            assert_eq!(check(a), Ok(()), "{a:?}");
        }
    }

    #[test]
    fn flags_that_open_an_endpoint_are_refused_in_every_spelling() {
        for a in [
            &["--host=tcp://0.0.0.0:2375"][..],
            &["--host", "unix:///builds/raw.sock"],
            &["-H", "tcp://0.0.0.0:2375"],
            &["-Htcp://0.0.0.0:2375"],
            &["-H=tcp://0.0.0.0:2375"],
            &["-DH", "tcp://0.0.0.0:2375"],
            &["--debug", "-H", "x"],
            &["--host="],
        ] {
            let e = check(a).unwrap_err();
            assert!(
                e.contains("it opens an API endpoint without the policy; remove it"),
                "{a:?}: {e}"
            );
            assert!(
                e.starts_with(&format!("policy locked by {FILE}: the dockerd flag ")),
                "{e}"
            );
        }
        // The value of a refused flag is not mistaken for the next flag.
        assert!(check(&["-l", "debug", "-H", "x"])
            .unwrap_err()
            .contains("\"-H\""));
    }

    #[test]
    fn flags_that_loosen_are_refused_with_their_reason() {
        for (a, why) in [
            (
                &["--config-file=/builds/daemon.json"][..],
                "configuration the image did not choose",
            ),
            (
                &["--config-file", "/builds/daemon.json"],
                "configuration the image did not choose",
            ),
            (&["--default-runtime=evil"], "runtime"),
            (&["--add-runtime", "evil=/builds/evil"], "runtime"),
            (&["--userland-proxy-path=/builds/evil"], "runs as root"),
            (&["--init-path", "/certs/ca/key.pem"], "mount that file"),
            (&["--seccomp-profile=unconfined"], "seccomp"),
            (&["--default-cgroupns-mode=host"], "cgroup namespace"),
            (&["--default-ipc-mode", "host"], "IPC namespace"),
            (&["--cgroup-parent=/"], "cgroup"),
            (&["--experimental"], "experimental"),
            (&["--metrics-addr=0.0.0.0:9323"], "network endpoint"),
            (&["--containerd=/builds/c.sock"], "containerd"),
            (&["-g", "/builds/docker"], "--data-root"),
            (
                &["--data-root=/builds/docker"],
                "keeps dockerd's data root at /var/lib/docker",
            ),
            (
                &["--data-root", "/builds/docker"],
                "keeps dockerd's data root",
            ),
            (
                &["--pidfile=/etc/dind-supervisor/policy.toml"],
                "must lie in the run directory",
            ),
            (
                &["--pidfile", "/etc/docker/daemon.json"],
                "removes it at exit",
            ),
            (
                &["-p", "/run/dind-supervisor/../../etc/docker/daemon.json"],
                "pid file",
            ),
            (&["-Dp/etc/docker/daemon.json"], "pid file"),
            (&["-p=/etc/docker/daemon.json"], "pid file"),
            (&["--pidfile=/run/dind-supervisor"], "pid file"),
            (&["--pidfile"], "pid file"),
            (
                &["--storage-opt", "dm.directlvm_device=/dev/vda"],
                "known to be harmless",
            ),
        ] {
            let e = check(a).unwrap_err();
            assert!(e.contains(why), "{a:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn unknown_flags_and_positional_words_are_refused() {
        for (a, shown) in [
            (&["--no-such-flag"][..], "\"--no-such-flag\""),
            (&["--Host=x"], "\"--Host=x\""),
            (&["--hos=x"], "\"--hos=x\""),
            (&["-X"], "\"-X\""),
            (&["-DX"], "\"-X\""),
            (&["sh"], "\"sh\""),
            (&["-"], "\"-\""),
            (&["--", "x"], "\"x\""),
            (&["--debug", "true"], "\"true\""),
        ] {
            let e = check(a).unwrap_err();
            assert!(
                e.contains(shown) && e.contains("known to be harmless"),
                "{a:?}: {e}"
            );
        }
    }

    #[test]
    fn other_commands_and_bare_dockerd_are_one_line() {
        assert_eq!(
            refuse_exec(FILE, OsStr::new("sh")).to_string(),
            format!("policy locked by {FILE}: the command \"sh\" is refused: a locked service runs dind-supervisor only, never another program; remove the service's command, or pass dockerd flags only")
        );
        assert_eq!(
            refuse_bare(FILE, "DIND_BARE_DOCKERD").to_string(),
            format!("policy locked by {FILE}: DIND_BARE_DOCKERD=\"true\" is refused: bare dockerd runs without the proxy and its policy; unset DIND_BARE_DOCKERD")
        );
    }

    #[test]
    fn the_pins_table_is_checked() {
        let t = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let p = Pins::parse(
            FILE,
            &t(&[
                ("run_dir", "/r"),
                ("dockerd_socket_shared", "allow"),
                ("dockerd", "dockerd"),
            ]),
        )
        .unwrap();
        assert_eq!(p.run_dir, Some(PathBuf::from("/r")));
        assert_eq!(p.dockerd_socket_shared, Some(SharedArg::Allow));
        for (pairs, want) in [
            (
                &[("run_dir", "r")][..],
                "supervisor.run_dir: \"r\" is not an absolute path",
            ),
            (
                &[("dockerd_socket_shared", "yes")],
                "use \"refuse\" or \"allow\"",
            ),
            (
                &[("policy", "x")],
                "supervisor.policy: unknown key (known: run_dir,",
            ),
            (&[("dockerd", "")], "name a program"),
        ] {
            let e = Pins::parse(FILE, &t(pairs)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("policy file {FILE}: ")) && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn the_environment_keeps_only_proxies_and_a_fixed_path() {
        let vars = [
            ("PATH", "/builds/bin:/usr/bin"),
            ("HOME", "/builds"),
            ("LD_PRELOAD", "/builds/evil.so"),
            ("DOCKER_RAMDISK", "1"),
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("DIND_POLICY", "permissive"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let (kept, dropped) = scrubbed(vars);
        assert_eq!(
            kept,
            [
                ("PATH", LOCKED_PATH),
                ("HOME", "/root"),
                ("HTTPS_PROXY", "http://proxy:3128")
            ]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        );
        assert_eq!(dropped, ["DIND_POLICY", "DOCKER_RAMDISK", "LD_PRELOAD"]);
    }
}
