//! Checked configuration: `run`'s settings plus the stock `DOCKER_*`
//! environment, validated once before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use proxy::policy::{Policy, PolicyFile, IMAGE_FILE};

use crate::certs::{self, CertSpec};
use crate::cli::{Given, ListenWhenArg, OnOverlayArg, RestartPolicy, Settings, SharedArg, TlsArgs};
use crate::cli::{DEFAULT_DATA_ROOT, DEFAULT_DOCKERD, DEFAULT_RUN_DIR};
use crate::daemon_json::Entitlement;
use crate::dockerd_flags::{flag_value, flag_values};
use crate::env::{
    Env, DOCKER_DRIVER, DOCKER_HOST, DOCKER_IPTABLES_LEGACY, DOCKER_TLS_CERTDIR, DOCKER_TLS_SAN,
};
use crate::lock::{self, LockError, Pinning, Pins};
use crate::mtu::MtuSetting;
use crate::private;
use crate::storage::OnOverlay;

const DEFAULT_CERTDIR: &str = "/certs";
/// dockerd's own default socket: where it listens in exact mode when its
/// flags name none.
const DOCKERD_OWN_SOCKET: &str = "/var/run/docker.sock";
const DOCKERD_DEFAULT_DATA_ROOT: &str = "/var/lib/docker";
/// dockerd's raw socket lives in this directory of the run directory, made
/// 0700 at start: a directory of the supervisor's own (issue 10, item 4).
pub const DOCKERD_SOCKET_DIR: &str = "dockerd";
/// Where the proxy serves the API inside the service unless DOCKER_HOST
/// names another unix socket: where docker clients look by default, so
/// `docker exec <service> docker ps` keeps working, through the policy.
pub const DEFAULT_PUBLIC_SOCKET: &str = "/var/run/docker.sock";
const GROUP_FILE: &str = "/etc/group";

/// Everything `run` needs, checked.
#[derive(Debug)]
pub struct Config {
    /// None when TLS is off (`DOCKER_TLS_CERTDIR=""`).
    pub tls: Option<CertSpec>,
    pub dockerd: Dockerd,
    pub supervise: Supervise,
    pub health_addr: SocketAddr,
    /// The public API; None when dockerd runs with exactly the user's flags
    /// and so owns its endpoints itself.
    pub proxy: Option<Proxy>,
    /// The image's policy file when it locks the policy.
    pub locked_by: Option<&'static str>,
}

/// The authenticated API proxy's endpoints.
#[derive(Debug)]
pub struct Proxy {
    /// TCP addresses; mutual TLS on them when certificates are on.
    pub listen: Vec<SocketAddr>,
    /// `DOCKER_HOST=unix://...` naming a path other than dockerd's socket,
    /// else [`DEFAULT_PUBLIC_SOCKET`] unless that is dockerd's.
    pub socket: Option<PublicSocket>,
    /// At start (requests held until Ready), or only once Ready.
    pub listen_when: proxy::ListenWhen,
    pub hold: Duration,
    /// How long dockerd's `/_ping` answer is reused (zero: never).
    pub ping_cache: Duration,
    /// Client connections open at once, all endpoints together.
    pub max_connections: usize,
    /// Time to receive a whole body the policy reads.
    pub body_timeout: Duration,
    pub policy: proxy::policy::Policy,
    /// None: audit lines go to stderr.
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug)]
pub struct PublicSocket {
    pub path: PathBuf,
    pub mode: u32,
    pub gid: Option<u32>,
    /// The default path, not asked for: skipped with a warning when
    /// another server already answers there (a host's own dockerd).
    pub implicit: bool,
}

/// How dockerd is launched.
#[derive(Debug)]
pub struct Dockerd {
    pub program: PathBuf,
    /// The private socket we probe (and the proxy forwards to).
    pub socket: PathBuf,
    /// The socket is the default one, in a directory that is ours (0700).
    pub socket_is_ours: bool,
    /// `DIND_DOCKERD_SOCKET_SHARED=allow`: a shared mount is only a warning.
    pub allow_shared: bool,
    /// The user's dockerd flags: appended to ours, or all of them when `exact`.
    pub user_args: Vec<String>,
    pub exact: bool,
    pub data_root: PathBuf,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    /// Our setting; None means overlay2 with the overlay-on-overlay fallback.
    pub storage_driver: Option<String>,
    pub storage_on_overlay: OnOverlay,
    /// `DOCKER_DRIVER`, when set and not empty (dockerd ignores it empty).
    pub docker_driver: Option<String>,
    pub mtu: MtuSetting,
    pub iptables_legacy: Option<String>,
    pub run_dir: PathBuf,
    pub stale_pid_dirs: Vec<PathBuf>,
    /// BuildKit entitlements the request policy denies; dockerd is told not to grant them.
    pub deny_entitlements: Vec<Entitlement>,
}

/// How dockerd is kept running and stopped.
#[derive(Debug, Clone)]
pub struct Supervise {
    pub shutdown_timeout: Duration,
    pub restart: RestartPolicy,
    pub restart_max: u32,
}

impl Config {
    /// The configuration without an image policy file.
    #[cfg(test)]
    pub fn new(
        settings: Settings,
        dockerd_args: Vec<String>,
        exact: bool,
        env: &dyn Env,
    ) -> anyhow::Result<Config> {
        Config::build(settings, &Given::default(), dockerd_args, exact, env, None)
    }

    /// Checks the settings against the image's policy file `image` (read
    /// from [`IMAGE_FILE`]): with `locked = true` what was `given` may only
    /// tighten (see `lock.rs`); otherwise the file is the default policy
    /// and its `[supervisor]` table gives defaults.
    pub fn build(
        mut settings: Settings,
        given: &Given,
        dockerd_args: Vec<String>,
        exact: bool,
        env: &dyn Env,
        image: Option<&PolicyFile>,
    ) -> anyhow::Result<Config> {
        let pins = match image {
            Some(f) => Pins::parse(IMAGE_FILE, &f.supervisor)?,
            None => Pins::default(),
        };
        let locked = image.filter(|f| f.locked).map(|_| IMAGE_FILE);
        if let (Some(file), true) = (locked, exact) {
            return Err(lock::refuse_exact(file).into());
        }
        let pin = Pinning { given, locked };
        let pinned = pin_paths(&mut settings, &pins, &pin)?;
        if let Some(file) = locked {
            lock::check_dockerd_args(file, &dockerd_args, &settings.data_root, &settings.run_dir)?;
        }
        check_bounds(&settings)?;

        let tls = tls_spec(&settings.tls, env)?;
        let socket = if exact {
            unix_host(&dockerd_args).unwrap_or_else(|| PathBuf::from(DOCKERD_OWN_SOCKET))
        } else {
            pinned.dockerd_socket.clone().expect("has a default")
        };
        let data_root = effective_data_root(&dockerd_args, exact, &settings.data_root);
        let public_path = public_socket_path(env, locked, &socket, exact)?;
        let policy = policy(&settings, given, image, locked)?;
        // Exact mode has no proxy and so no policy; its flags are the user's alone.
        let deny_entitlements = if exact {
            Vec::new()
        } else {
            denied_entitlements(&policy)
        };
        let proxy = (!exact).then(|| proxy_settings(&settings, public_path, tls.is_some(), policy));
        Ok(Config {
            tls,
            dockerd: Dockerd {
                program: settings.dockerd,
                socket_is_ours: !exact && socket == pinned.own_socket,
                allow_shared: pinned.shared == SharedArg::Allow,
                socket,
                user_args: dockerd_args,
                exact,
                data_root,
                registry_mirrors: split_list(&settings.registry_mirrors),
                insecure_registries: split_list(&settings.insecure_registries),
                storage_driver: settings.storage_driver,
                storage_on_overlay: match settings.storage_on_overlay {
                    OnOverlayArg::Fallback => OnOverlay::Fallback,
                    OnOverlayArg::Exit => OnOverlay::Exit,
                },
                mtu: settings
                    .mtu
                    .parse::<MtuSetting>()
                    .with_context(|| format!("DIND_MTU={:?}", settings.mtu))?,
                docker_driver: env.var(DOCKER_DRIVER).filter(|d| !d.is_empty()),
                iptables_legacy: env.var(DOCKER_IPTABLES_LEGACY),
                run_dir: settings.run_dir,
                stale_pid_dirs: settings.stale_pid_dirs,
                deny_entitlements,
            },
            supervise: Supervise {
                shutdown_timeout: settings.shutdown_timeout,
                restart: settings.restart,
                restart_max: settings.restart_max,
            },
            health_addr: settings.health_addr,
            proxy,
            locked_by: locked,
        })
    }

    /// The directories that must not lie on a shared mount (`private.rs`):
    /// dockerd's socket directory, the run directory, dockerd's exec root
    /// (containerd's socket). None in exact mode, where dockerd's socket is
    /// the API clients use by choice.
    pub fn private_dirs(&self) -> Vec<private::Dir> {
        let d = &self.dockerd;
        if d.exact {
            return Vec::new();
        }
        let mut dirs = vec![
            private::Dir {
                path: d.socket.parent().unwrap_or(Path::new("/")).to_owned(),
                what: "dockerd's socket directory",
                setting: "DIND_DOCKERD_SOCKET",
                ours: d.socket_is_ours,
            },
            private::Dir {
                path: d.run_dir.clone(),
                what: "the supervisor's run directory",
                setting: "DIND_RUN_DIR",
                ours: false,
            },
        ];
        let mut exec_roots = flag_values(&d.user_args, "--exec-root", None);
        if exec_roots.is_empty() {
            exec_roots.push(private::DOCKERD_DEFAULT_EXEC_ROOT.to_owned());
        }
        dirs.extend(exec_roots.into_iter().map(|p| private::Dir {
            path: PathBuf::from(p),
            what: "dockerd's exec root (containerd's socket)",
            setting: "--exec-root",
            ours: false,
        }));
        dirs
    }
}

/// The request policy: the image's when it locks (tightened by what was
/// given), the image's by default when it does not, else `DIND_POLICY`.
fn policy(
    settings: &Settings,
    given: &Given,
    image: Option<&PolicyFile>,
    locked: Option<&str>,
) -> anyhow::Result<Policy> {
    let spec = given.name("policy").map(|_| settings.policy.as_str());
    let binds = settings.policy_allow_binds.as_deref();
    match (image, locked) {
        (Some(f), Some(file)) => f.policy.tightened(file, spec, binds).map_err(|e| {
            let (id, value) = if e.is_allow_binds() {
                ("policy_allow_binds", binds.unwrap_or_default())
            } else {
                ("policy", spec.unwrap_or_default())
            };
            let name = given.name(id).unwrap_or(id);
            let fix = if e.is_allow_binds() {
                format!("unset {name}, or list only directories under the locked ones")
            } else {
                format!("unset {name}, or set it to ci-safe to tighten")
            };
            LockError::Refused {
                file: file.to_owned(),
                setting: lock::spelled(name, value),
                why: e.to_string(),
                fix,
            }
            .into()
        }),
        (Some(f), None)
            if spec.is_none_or(|s| s.is_empty() || Path::new(s) == Path::new(IMAGE_FILE)) =>
        {
            match binds {
                Some(b) => Ok(f.policy.clone().with_allow_binds(b)?),
                None => Ok(f.policy.clone()),
            }
        }
        _ => Policy::load(&settings.policy, binds)
            .with_context(|| format!("DIND_POLICY={:?}", settings.policy)),
    }
}

/// Whether two socket paths name one file: symlinks resolved as far as
/// they exist (`/var/run` is usually `/run`).
fn same_socket(a: &Path, b: &Path) -> bool {
    private::resolve(a) == private::resolve(b)
}

/// The BuildKit entitlements `policy` denies. A BuildKit Solve travels inside `/grpc`, where
/// the proxy cannot read it, so dockerd itself must refuse (issue 10). Each entitlement
/// follows the rule that denies the same thing elsewhere: `network.host` is a build step in
/// the host's network namespace (`host_network`, as `/build?networkmode=host`), and
/// `security.insecure` a step without the sandbox, i.e. privileged (`privileged`).
fn denied_entitlements(policy: &proxy::policy::Policy) -> Vec<Entitlement> {
    use proxy::policy::Rule;
    [
        (Rule::HostNetwork, Entitlement::NetworkHost),
        (Rule::Privileged, Entitlement::SecurityInsecure),
    ]
    .into_iter()
    .filter(|(rule, _)| policy.denies(*rule))
    .map(|(_, e)| e)
    .collect()
}

/// The certificate set to keep, or None when TLS is off. The flag wins over
/// `DOCKER_TLS_CERTDIR`; unset means `/certs`, set but empty means off, as in
/// the stock image.
pub fn tls_spec(tls: &TlsArgs, env: &dyn Env) -> anyhow::Result<Option<CertSpec>> {
    let dir = match &tls.tls_certdir {
        Some(d) => d.clone(),
        None => PathBuf::from(
            env.var(DOCKER_TLS_CERTDIR)
                .unwrap_or_else(|| DEFAULT_CERTDIR.into()),
        ),
    };
    if dir.as_os_str().is_empty() {
        return Ok(None);
    }
    let extra = match env.var(DOCKER_TLS_SAN) {
        Some(s) => {
            certs::parse_openssl_sans(&s).with_context(|| format!("{DOCKER_TLS_SAN}={s:?}"))?
        }
        None => Vec::new(),
    };
    Ok(Some(CertSpec {
        dir,
        key_type: tls.tls_key_type,
        validity: Duration::from_secs(u64::from(tls.cert_validity_days) * 86_400),
        sans: certs::default_sans(&extra),
    }))
}

/// Lists given as repeated flags or as one comma/space separated variable.
fn split_list(items: &[String]) -> Vec<String> {
    items
        .iter()
        .flat_map(|i| i.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first `unix://` socket among dockerd's `-H`/`--host` flags.
fn unix_host(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if a == "-H" || a == "--host" {
            it.next().map(String::as_str)
        } else {
            a.strip_prefix("--host=").or_else(|| a.strip_prefix("-H="))
        };
        if let Some(p) = value.and_then(|v| v.strip_prefix("unix://")) {
            return Some(PathBuf::from(p));
        }
    }
    None
}

/// The gid of `name`, read from a group file directly: the binary is static
/// and must not go through NSS.
fn group_id(group_file: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(group_file).ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// The paths a locked image may pin, resolved: each setting's value is
/// checked against the pin (or defaulted from it) in place.
struct PinnedPaths {
    /// dockerd's socket in our own run directory.
    own_socket: PathBuf,
    dockerd_socket: Option<PathBuf>,
    shared: SharedArg,
}

fn pin_paths(settings: &mut Settings, pins: &Pins, pin: &Pinning) -> anyhow::Result<PinnedPaths> {
    let run_dir = pin.path(
        "run_dir",
        "the run directory",
        Some(std::mem::take(&mut settings.run_dir)),
        pins.run_dir.as_ref(),
        Some(Path::new(DEFAULT_RUN_DIR)),
    )?;
    settings.run_dir = run_dir.expect("has a default");
    let own_socket = settings
        .run_dir
        .join(DOCKERD_SOCKET_DIR)
        .join("docker.sock");
    let dockerd_socket = pin.path(
        "dockerd_socket",
        "dockerd's raw socket",
        settings.dockerd_socket.take(),
        pins.dockerd_socket.as_ref(),
        Some(&own_socket),
    )?;
    let data_root = pin.path(
        "data_root",
        "dockerd's data root",
        Some(std::mem::take(&mut settings.data_root)),
        pins.data_root.as_ref(),
        Some(Path::new(DEFAULT_DATA_ROOT)),
    )?;
    settings.data_root = data_root.expect("has a default");
    let program = pin.path(
        "dockerd",
        "the dockerd program",
        Some(std::mem::take(&mut settings.dockerd)),
        pins.dockerd.as_ref(),
        Some(Path::new(DEFAULT_DOCKERD)),
    )?;
    settings.dockerd = program.expect("has a default");
    settings.audit_log = pin.path(
        "audit_log",
        "the audit log",
        settings.audit_log.take(),
        pins.audit_log.as_ref(),
        None,
    )?;
    let shared = pin.shared(settings.dockerd_socket_shared, pins.dockerd_socket_shared)?;
    Ok(PinnedPaths {
        own_socket,
        dockerd_socket,
        shared,
    })
}

/// The data root dockerd will use: its own flag, else ours, else (exact
/// mode) dockerd's default.
fn effective_data_root(dockerd_args: &[String], exact: bool, ours: &Path) -> PathBuf {
    match flag_value(dockerd_args, "--data-root", None) {
        Some(flag) => PathBuf::from(flag),
        None if exact => PathBuf::from(DOCKERD_DEFAULT_DATA_ROOT),
        None => ours.to_path_buf(),
    }
}

/// Settings out of any sensible range, refused with the fix.
fn check_bounds(settings: &Settings) -> anyhow::Result<()> {
    if settings.max_connections == 0 {
        bail!("DIND_MAX_CONNECTIONS=0 would refuse every client: set 1 or more");
    }
    // Only shorter: a longer wait has no honest use (the bodies read
    // whole are a few KiB) and would let a job variable loosen a bound.
    let body_timeout = settings.body_timeout;
    if body_timeout < Duration::from_secs(1) || body_timeout > proxy::forward::BODY_TIMEOUT {
        bail!(
            "DIND_BODY_TIMEOUT={} is out of range: set 1s to {}",
            humantime::format_duration(body_timeout),
            humantime::format_duration(proxy::forward::BODY_TIMEOUT)
        );
    }
    if settings.shutdown_timeout < Duration::from_secs(1) {
        bail!(
            "shutdown timeout {:?} is too short: set DIND_SHUTDOWN_TIMEOUT to 1s or more",
            settings.shutdown_timeout
        );
    }
    Ok(())
}

/// Where the proxy serves the API on a unix socket: DOCKER_HOST's path,
/// else the default one (`true`: implicit), unless that is dockerd's own.
fn public_socket_path(
    env: &dyn Env,
    locked: Option<&'static str>,
    socket: &Path,
    exact: bool,
) -> anyhow::Result<Option<(PathBuf, bool)>> {
    let docker_host = env.var(DOCKER_HOST);
    let host_path = docker_host
        .as_deref()
        .and_then(|h| h.strip_prefix("unix://"))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if let (Some(file), Some(p), Some(h)) = (locked, &host_path, &docker_host) {
        lock::check_docker_host(file, h, same_socket(p, socket))?;
    }
    Ok(match host_path {
        Some(p) if !same_socket(&p, socket) => Some((p, false)),
        _ if !same_socket(Path::new(DEFAULT_PUBLIC_SOCKET), socket) => {
            Some((PathBuf::from(DEFAULT_PUBLIC_SOCKET), true))
        }
        _ => {
            if !exact {
                tracing::warn!(socket = %socket.display(), "dockerd's raw socket is where docker clients look first: whatever uses it bypasses the policy and the audit log");
            }
            None
        }
    })
}

/// The proxy's settings: its listeners (2376 with TLS, 2375 without, by
/// default), the public socket, the bounds and the policy.
fn proxy_settings(
    settings: &Settings,
    public_path: Option<(PathBuf, bool)>,
    tls: bool,
    policy: Policy,
) -> Proxy {
    Proxy {
        listen: if settings.listen.is_empty() {
            vec![SocketAddr::from((
                [0, 0, 0, 0],
                if tls { 2376 } else { 2375 },
            ))]
        } else {
            settings.listen.clone()
        },
        socket: public_path.map(|(path, implicit)| {
            let gid = group_id(Path::new(GROUP_FILE), &settings.socket_group);
            PublicSocket {
                path,
                // Without the group, 0660 would lock the job out.
                mode: if gid.is_some() {
                    settings.socket_mode
                } else {
                    0o666
                },
                gid,
                implicit,
            }
        }),
        listen_when: match settings.listen_when {
            ListenWhenArg::Start => proxy::ListenWhen::Start,
            ListenWhenArg::Ready => proxy::ListenWhen::Ready,
        },
        hold: settings.hold_timeout,
        ping_cache: settings.ping_cache,
        max_connections: settings.max_connections,
        body_timeout: settings.body_timeout,
        policy,
        audit_log: settings.audit_log.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: Settings,
    }

    fn settings(args: &[&str]) -> Settings {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .s
    }

    #[test]
    fn certdir_unset_is_stock_default_and_empty_turns_tls_off() {
        let none: HashMap<&str, &str> = HashMap::new();
        let c = Config::new(settings(&[]), vec![], false, &none).unwrap();
        assert_eq!(c.tls.unwrap().dir, PathBuf::from("/certs"));

        let off = HashMap::from([(DOCKER_TLS_CERTDIR, "")]);
        assert!(Config::new(settings(&[]), vec![], false, &off)
            .unwrap()
            .tls
            .is_none());
    }

    #[test]
    fn docker_driver_is_read_and_empty_is_unset_as_in_dockerd() {
        let driver = |env: HashMap<&str, &str>| {
            Config::new(settings(&[]), vec![], false, &env)
                .unwrap()
                .dockerd
                .docker_driver
        };
        assert_eq!(
            driver(HashMap::from([(DOCKER_DRIVER, "overlay2")])).as_deref(),
            Some("overlay2")
        );
        assert_eq!(driver(HashMap::from([(DOCKER_DRIVER, "")])), None);
        assert_eq!(driver(HashMap::new()), None);
    }

    #[test]
    fn tls_san_is_parsed_and_bad_san_names_the_variable() {
        let env = HashMap::from([(DOCKER_TLS_SAN, "DNS:dind,IP:10.0.0.5")]);
        let spec = Config::new(settings(&[]), vec![], false, &env)
            .unwrap()
            .tls
            .unwrap();
        let sans: Vec<String> = spec.sans.iter().map(|s| s.to_string()).collect();
        assert!(sans.contains(&"DNS:dind".to_string()), "{sans:?}");
        assert!(sans.contains(&"IP:10.0.0.5".to_string()), "{sans:?}");

        let bad = HashMap::from([(DOCKER_TLS_SAN, "URI:x")]);
        let err = Config::new(settings(&[]), vec![], false, &bad).unwrap_err();
        assert!(format!("{err:#}").contains(DOCKER_TLS_SAN), "{err:#}");
    }

    fn public_socket(env: &HashMap<&str, &str>) -> Option<PathBuf> {
        let c = Config::new(settings(&[]), vec![], false, env).unwrap();
        c.proxy.unwrap().socket.map(|s| s.path)
    }

    #[test]
    fn docker_host_unix_path_becomes_the_public_socket_else_var_run_docker_sock() {
        let env = HashMap::from([(DOCKER_HOST, "unix:///runner/services/docker/docker.sock")]);
        assert_eq!(
            public_socket(&env).as_deref(),
            Some(Path::new("/runner/services/docker/docker.sock"))
        );
        // dockerd's socket is elsewhere now: the well-known path is the
        // proxy's, so `docker exec <service> docker ps` meets the policy.
        for host in [
            "unix:///var/run/docker.sock",
            "tcp://docker:2376",
            "unix://",
            "",
        ] {
            let env = HashMap::from([(DOCKER_HOST, host)]);
            assert_eq!(
                public_socket(&env).as_deref(),
                Some(Path::new(DEFAULT_PUBLIC_SOCKET)),
                "{host}"
            );
        }
        let c = Config::new(settings(&[]), vec![], false, &HashMap::new()).unwrap();
        assert!(c.proxy.unwrap().socket.unwrap().implicit);
    }

    #[test]
    fn dockerds_socket_is_in_a_directory_of_its_own_under_the_run_dir() {
        let c = Config::new(
            settings(&["--run-dir", "/r"]),
            vec![],
            false,
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(c.dockerd.socket, PathBuf::from("/r/dockerd/docker.sock"));
        assert!(c.dockerd.socket_is_ours);
        let dirs = c.private_dirs();
        let paths: Vec<_> = dirs
            .iter()
            .map(|d| (d.path.to_str().unwrap(), d.ours))
            .collect();
        assert_eq!(
            paths,
            [
                ("/r/dockerd", true),
                ("/r", false),
                (private::DOCKERD_DEFAULT_EXEC_ROOT, false)
            ]
        );
        // The exec roots the user gives are checked instead.
        let args = ["--exec-root=/x", "--exec-root", "/y"]
            .map(String::from)
            .to_vec();
        let c = Config::new(
            settings(&["--dockerd-socket", "/s/d.sock"]),
            args,
            false,
            &HashMap::new(),
        )
        .unwrap();
        assert!(!c.dockerd.socket_is_ours);
        let paths: Vec<_> = c
            .private_dirs()
            .iter()
            .map(|d| d.path.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(paths, ["/s", "/run/dind-supervisor", "/x", "/y"]);
        assert!(Config::new(settings(&[]), vec![], true, &HashMap::new())
            .unwrap()
            .private_dirs()
            .is_empty());
    }

    #[test]
    fn dockerd_at_the_well_known_path_means_the_proxy_does_not_serve_it() {
        // The old layout, asked for explicitly: then the path is dockerd's.
        for host in [None, Some("unix:///var/run/docker.sock")] {
            let env: HashMap<&str, &str> = host.map(|h| (DOCKER_HOST, h)).into_iter().collect();
            let c = Config::new(
                settings(&["--dockerd-socket", "/var/run/docker.sock"]),
                vec![],
                false,
                &env,
            )
            .unwrap();
            assert!(c.proxy.unwrap().socket.is_none(), "{host:?}");
        }
    }

    #[test]
    fn default_port_follows_tls() {
        let on = Config::new(settings(&[]), vec![], false, &HashMap::new()).unwrap();
        assert_eq!(on.proxy.unwrap().listen, ["0.0.0.0:2376".parse().unwrap()]);
        let off = HashMap::from([(DOCKER_TLS_CERTDIR, "")]);
        let c = Config::new(settings(&[]), vec![], false, &off).unwrap();
        assert_eq!(c.proxy.unwrap().listen, ["0.0.0.0:2375".parse().unwrap()]);
        let c = Config::new(
            settings(&["--listen", "[::]:2376,127.0.0.1:12376"]),
            vec![],
            false,
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(c.proxy.unwrap().listen.len(), 2);
        assert!(Config::new(settings(&[]), vec![], true, &HashMap::new())
            .unwrap()
            .proxy
            .is_none());
    }

    #[test]
    fn policy_is_checked_before_start() {
        let c = Config::new(
            settings(&["--policy", "ci-safe"]),
            vec![],
            false,
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(c.proxy.unwrap().policy.name(), "ci-safe");
        let err = Config::new(
            settings(&["--policy", "/nonexistent/policy.toml"]),
            vec![],
            false,
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/policy.toml"),
            "{err:#}"
        );
    }

    /// The image's policy file with `text`, as the supervisor reads it.
    fn image(text: &str) -> PolicyFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        fs_write(&path, text);
        proxy::policy::load_image(path.to_str().unwrap())
            .unwrap()
            .unwrap()
    }

    fn fs_write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    const LOCKED: &str = "locked = true\nprofile = \"ci-safe\"\n";

    /// A start under the image file `text`: `flags` give the values, and
    /// `given` says how the job spelled them (`("policy", "DIND_POLICY")`).
    fn start(
        text: &str,
        flags: &[&str],
        given: &[(&str, &str)],
        dockerd_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Config, String> {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let args = dockerd_args.iter().map(|a| a.to_string()).collect();
        Config::build(
            settings(flags),
            &Given::of(given),
            args,
            false,
            &env,
            Some(&image(text)),
        )
        .map_err(|e| format!("{e:#}"))
    }

    fn refused(
        text: &str,
        flags: &[&str],
        given: &[(&str, &str)],
        dockerd_args: &[&str],
        env: &[(&str, &str)],
    ) -> String {
        let e = match start(text, flags, given, dockerd_args, env) {
            Ok(c) => panic!(
                "{flags:?} {given:?} {dockerd_args:?} {env:?} started: {:?}",
                c.proxy.map(|p| p.policy)
            ),
            Err(e) => e,
        };
        assert!(
            e.starts_with(&format!("policy locked by {IMAGE_FILE}: ")),
            "{e}"
        );
        assert!(!e.contains('\n'), "more than one line: {e}");
        e
    }

    fn started(
        text: &str,
        flags: &[&str],
        given: &[(&str, &str)],
        dockerd_args: &[&str],
        env: &[(&str, &str)],
    ) -> Config {
        start(text, flags, given, dockerd_args, env)
            .unwrap_or_else(|e| panic!("{flags:?} {given:?}: {e}"))
    }

    fn policy_of(c: &Config) -> &Policy {
        &c.proxy.as_ref().unwrap().policy
    }

    #[test]
    fn a_locked_policy_refuses_every_loosening_of_the_policy_itself() {
        let e = refused(
            LOCKED,
            &["--policy", "permissive"],
            &[("policy", "DIND_POLICY")],
            &[],
            &[],
        );
        assert!(e.contains("DIND_POLICY=\"permissive\" is refused: permissive allows what the locked policy denies (privileged,"), "{e}");
        assert!(
            e.ends_with("; unset DIND_POLICY, or set it to ci-safe to tighten"),
            "{e}"
        );
        // The same on the command line of `run`, named as it was spelled.
        let e = refused(
            LOCKED,
            &["--policy", "permissive"],
            &[("policy", "--policy")],
            &[],
            &[],
        );
        assert!(e.contains("--policy \"permissive\" is refused"), "{e}");
        let e = refused(
            LOCKED,
            &["--policy", "/builds/p.toml"],
            &[("policy", "DIND_POLICY")],
            &[],
            &[],
        );
        assert!(e.contains("is another policy file"), "{e}");
        let e = refused(
            LOCKED,
            &["--policy", "nonsense"],
            &[("policy", "DIND_POLICY")],
            &[],
            &[],
        );
        assert!(e.contains("is neither a profile nor a policy file"), "{e}");
        for wider in ["/", "/builds,/etc", "/builds2", "/var/run"] {
            let e = refused(
                LOCKED,
                &["--policy-allow-binds", wider],
                &[("policy_allow_binds", "DIND_POLICY_ALLOW_BINDS")],
                &[],
                &[],
            );
            assert!(
                e.contains(&format!("DIND_POLICY_ALLOW_BINDS={wider:?} is refused: ")),
                "{e}"
            );
            assert!(e.ends_with("; unset DIND_POLICY_ALLOW_BINDS, or list only directories under the locked ones"), "{e}");
        }
    }

    #[test]
    fn a_locked_policy_may_be_tightened() {
        let text = "locked = true\nprofile = \"ci-safe\"\n[rules]\nprivileged = \"allow\"\n";
        let c = started(text, &[], &[], &[], &[]);
        assert_eq!(c.locked_by, Some(IMAGE_FILE));
        assert!(!policy_of(&c).denies(proxy::policy::Rule::Privileged));
        let c = started(
            text,
            &["--policy", "ci-safe"],
            &[("policy", "DIND_POLICY")],
            &[],
            &[],
        );
        assert!(policy_of(&c).denies(proxy::policy::Rule::Privileged));
        // Empty, or the locked file named again: nothing changes.
        for spec in ["", IMAGE_FILE] {
            let c = started(
                text,
                &["--policy", spec],
                &[("policy", "DIND_POLICY")],
                &[],
                &[],
            );
            assert!(
                !policy_of(&c).denies(proxy::policy::Rule::Privileged),
                "{spec:?}"
            );
        }
        let c = started(
            text,
            &["--policy-allow-binds", "/builds/project"],
            &[("policy_allow_binds", "DIND_POLICY_ALLOW_BINDS")],
            &[],
            &[],
        );
        assert_eq!(policy_of(&c).allow_binds(), ["/builds/project"]);
        let c = started(
            text,
            &["--policy-allow-binds", ""],
            &[("policy_allow_binds", "DIND_POLICY_ALLOW_BINDS")],
            &[],
            &[],
        );
        assert_eq!(policy_of(&c).allow_binds(), [] as [String; 0]);
    }

    #[test]
    fn a_locked_policy_keeps_the_raw_socket_and_the_supervisors_own_paths() {
        for (flag, id, var, value) in [
            (
                "--dockerd-socket",
                "dockerd_socket",
                "DIND_DOCKERD_SOCKET",
                "/builds/raw.sock",
            ),
            (
                "--dockerd-socket",
                "dockerd_socket",
                "DIND_DOCKERD_SOCKET",
                "/var/run/docker.sock",
            ),
            ("--run-dir", "run_dir", "DIND_RUN_DIR", "/builds/run"),
            (
                "--data-root",
                "data_root",
                "DIND_DATA_ROOT",
                "/builds/docker",
            ),
            ("--dockerd", "dockerd", "DIND_DOCKERD", "/builds/evil"),
            ("--audit-log", "audit_log", "DIND_AUDIT_LOG", "/dev/null"),
            (
                "--dockerd-socket-shared",
                "dockerd_socket_shared",
                "DIND_DOCKERD_SOCKET_SHARED",
                "allow",
            ),
        ] {
            let e = refused(LOCKED, &[flag, value], &[(id, var)], &[], &[]);
            assert!(e.contains(&format!("{var}={value:?} is refused: ")), "{e}");
            assert!(e.ends_with(&format!("; unset {var}")), "{e}");
        }
        // Equal to the image's: no change, so started. (Set but empty, a
        // path is a clap error before any of this: exit 2, nothing runs.)
        for (flag, id, value) in [
            (
                "--dockerd-socket",
                "dockerd_socket",
                "/run/dind-supervisor/dockerd/docker.sock",
            ),
            (
                "--dockerd-socket",
                "dockerd_socket",
                "/run/dind-supervisor/dockerd//docker.sock",
            ),
            ("--run-dir", "run_dir", "/run/dind-supervisor/"),
            ("--data-root", "data_root", "/var/lib/docker"),
            ("--dockerd", "dockerd", "dockerd"),
            ("--dockerd-socket-shared", "dockerd_socket_shared", "refuse"),
        ] {
            let c = started(LOCKED, &[flag, value], &[(id, "X")], &[], &[]);
            assert_eq!(
                c.dockerd.socket,
                PathBuf::from("/run/dind-supervisor/dockerd/docker.sock"),
                "{flag} {value:?}"
            );
            assert!(c.dockerd.socket_is_ours && !c.dockerd.allow_shared);
        }
    }

    #[test]
    fn the_image_pins_settings_that_the_job_may_then_only_repeat() {
        let text = "locked = true\nprofile = \"ci-safe\"\n[supervisor]\nrun_dir = \"/srv/dsv\"\ndata_root = \"/srv/docker\"\naudit_log = \"/var/log/audit.json\"\ndockerd_socket_shared = \"allow\"\n";
        let c = started(text, &[], &[], &[], &[]);
        assert_eq!(
            c.dockerd.socket,
            PathBuf::from("/srv/dsv/dockerd/docker.sock")
        );
        assert_eq!(c.dockerd.data_root, PathBuf::from("/srv/docker"));
        assert_eq!(
            c.proxy.as_ref().unwrap().audit_log.as_deref(),
            Some(Path::new("/var/log/audit.json"))
        );
        assert!(c.dockerd.allow_shared);
        started(
            text,
            &["--run-dir", "/srv/dsv"],
            &[("run_dir", "DIND_RUN_DIR")],
            &[],
            &[],
        );
        started(text, &[], &[], &["--data-root=/srv/docker"], &[]);
        // Back to the built-in default is a change too.
        let e = refused(
            text,
            &["--run-dir", "/run/dind-supervisor"],
            &[("run_dir", "DIND_RUN_DIR")],
            &[],
            &[],
        );
        assert!(
            e.contains("the image sets the run directory to /srv/dsv"),
            "{e}"
        );
        let e = refused(text, &[], &[], &["--data-root", "/var/lib/docker"], &[]);
        assert!(
            e.contains("keeps dockerd's data root at /srv/docker"),
            "{e}"
        );
        // An unknown key in the image's table stops the start too.
        let e = start(
            "locked = true\nprofile = \"ci-safe\"\n[supervisor]\npath = \"/x\"\n",
            &[],
            &[],
            &[],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("supervisor.path: unknown key"), "{e}");
    }

    #[test]
    fn a_locked_policy_refuses_exact_mode_and_loosening_dockerd_flags() {
        let e = Config::build(
            settings(&[]),
            &Given::default(),
            vec!["-H".into(), "tcp://0.0.0.0:2375".into()],
            true,
            &HashMap::new(),
            Some(&image(LOCKED)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the command \"dockerd …\" is refused"), "{e}");
        for args in [
            &["-H", "tcp://0.0.0.0:2375"][..],
            &["--host=unix:///builds/raw.sock"],
            &["--config-file", "/builds/d.json"],
        ] {
            refused(LOCKED, &[], &[], args, &[]);
        }
        let c = started(
            LOCKED,
            &[],
            &[],
            &["--registry-mirror", "https://m.example", "--mtu=1400", "-D"],
            &[],
        );
        assert_eq!(c.dockerd.user_args.len(), 4);
    }

    #[test]
    fn a_locked_docker_host_may_not_name_the_raw_socket_in_any_spelling() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("dockerd")).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
        let text = format!(
            "{LOCKED}[supervisor]\nrun_dir = {:?}\n",
            real.display().to_string()
        );
        for host in [
            format!("unix://{}/dockerd/docker.sock", real.display()),
            format!("unix://{}/dockerd//docker.sock", real.display()),
            format!(
                "unix://{}/dockerd/docker.sock",
                t.path().join("link").display()
            ),
        ] {
            let e = refused(&text, &[], &[], &[], &[(DOCKER_HOST, &host)]);
            assert!(
                e.contains(&format!(
                    "DOCKER_HOST={host:?} is refused: it names dockerd's raw socket"
                )),
                "{e}"
            );
        }
        for host in [
            "tcp://docker:2376",
            "unix:///var/run/docker.sock",
            "unix:///runner/services/docker/docker.sock",
            "",
        ] {
            started(&text, &[], &[], &[], &[(DOCKER_HOST, host)]);
        }
    }

    #[test]
    fn an_unlocked_image_file_is_the_default_the_job_may_change() {
        let text = "profile = \"ci-safe\"\n[supervisor]\nrun_dir = \"/srv/dsv\"\n";
        let c = started(text, &[], &[], &[], &[]);
        assert_eq!(c.locked_by, None);
        assert!(policy_of(&c).name().ends_with("(ci-safe)"));
        assert_eq!(c.dockerd.run_dir, PathBuf::from("/srv/dsv"));
        let c = started(
            text,
            &["--policy", "permissive", "--run-dir", "/x"],
            &[("policy", "DIND_POLICY"), ("run_dir", "DIND_RUN_DIR")],
            &[],
            &[],
        );
        assert_eq!(policy_of(&c).name(), "permissive");
        assert_eq!(c.dockerd.run_dir, PathBuf::from("/x"));
        let c = started(
            text,
            &["--policy-allow-binds", "/"],
            &[("policy_allow_binds", "DIND_POLICY_ALLOW_BINDS")],
            &[],
            &[],
        );
        assert_eq!(policy_of(&c).allow_binds(), ["/"]);
        started(text, &[], &[], &["-H", "tcp://0.0.0.0:2375"], &[]);
    }

    #[test]
    fn buildkit_entitlements_follow_the_policy_rules_that_deny_the_same_thing() {
        let denied = |args: &[&str], exact| {
            Config::new(settings(args), vec![], exact, &HashMap::new())
                .unwrap()
                .dockerd
                .deny_entitlements
        };
        assert_eq!(
            denied(&["--policy", "ci-safe"], false),
            [Entitlement::NetworkHost, Entitlement::SecurityInsecure]
        );
        assert!(denied(&[], false).is_empty());
        assert!(denied(&["--policy", "ci-safe"], true).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.toml");
        std::fs::write(
            &file,
            "profile = \"ci-safe\"\n[rules]\nhost_network = \"allow\"\n",
        )
        .unwrap();
        assert_eq!(
            denied(&["--policy", file.to_str().unwrap()], false),
            [Entitlement::SecurityInsecure]
        );
        std::fs::write(
            &file,
            "profile = \"permissive\"\n[rules]\nhost_network = \"deny\"\n",
        )
        .unwrap();
        assert_eq!(
            denied(&["--policy", file.to_str().unwrap()], false),
            [Entitlement::NetworkHost]
        );
    }

    #[test]
    fn group_file_is_parsed_without_nss() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("group");
        std::fs::write(&f, "root:x:0:\n# comment\ndocker:x:998:gitlab\n").unwrap();
        assert_eq!(group_id(&f, "docker"), Some(998));
        assert_eq!(group_id(&f, "dock"), None);
        assert_eq!(group_id(&dir.path().join("none"), "docker"), None);
    }

    #[test]
    fn registry_lists_split_on_commas_and_spaces() {
        let s = settings(&[
            "--registry-mirror",
            "https://a, https://b https://c",
            "--registry-mirror",
            "https://d",
        ]);
        let c = Config::new(s, vec![], false, &HashMap::new()).unwrap();
        assert_eq!(
            c.dockerd.registry_mirrors,
            ["https://a", "https://b", "https://c", "https://d"]
        );
    }

    #[test]
    fn exact_mode_probes_the_socket_dockerd_was_told_to_use() {
        let args: Vec<String> = [
            "--data-root=/d",
            "-H",
            "tcp://0.0.0.0:2375",
            "--host=unix:///x/d.sock",
        ]
        .map(String::from)
        .to_vec();
        let c = Config::new(settings(&[]), args, true, &HashMap::new()).unwrap();
        assert_eq!(c.dockerd.socket, PathBuf::from("/x/d.sock"));
        assert_eq!(c.dockerd.data_root, PathBuf::from("/d"));
    }

    #[test]
    fn bounds_have_defaults_and_the_body_timeout_may_only_be_shortened() {
        let none = HashMap::new();
        let p = Config::new(settings(&[]), vec![], false, &none)
            .unwrap()
            .proxy
            .unwrap();
        assert_eq!(
            (p.max_connections, p.body_timeout),
            (1024, Duration::from_secs(60))
        );
        let p = Config::new(
            settings(&["--max-connections", "8", "--body-timeout", "2s"]),
            vec![],
            false,
            &none,
        )
        .unwrap()
        .proxy
        .unwrap();
        assert_eq!(
            (p.max_connections, p.body_timeout),
            (8, Duration::from_secs(2))
        );
        for bad in [
            ["--max-connections", "0"],
            ["--body-timeout", "61s"],
            ["--body-timeout", "500ms"],
        ] {
            let err = Config::new(settings(&bad), vec![], false, &none).unwrap_err();
            let name = if bad[0] == "--max-connections" {
                "DIND_MAX_CONNECTIONS"
            } else {
                "DIND_BODY_TIMEOUT"
            };
            assert!(format!("{err:#}").contains(name), "{bad:?}: {err:#}");
        }
    }

    #[test]
    fn bad_mtu_is_rejected_before_start() {
        assert!(Config::new(
            settings(&["--mtu", "jumbo"]),
            vec![],
            false,
            &HashMap::new()
        )
        .is_err());
    }
}
