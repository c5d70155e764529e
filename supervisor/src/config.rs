//! Checked configuration: `run`'s settings plus the stock `DOCKER_*`
//! environment, validated once before anything starts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::certs::{self, CertSpec};
use crate::cli::{ListenWhenArg, OnOverlayArg, RestartPolicy, Settings, TlsArgs};
use crate::daemon_json::{flag_value, Entitlement};
use crate::mtu::MtuSetting;
use crate::storage::OnOverlay;

/// The stock image's certificate directory; set but empty turns TLS off.
pub const ENV_TLS_CERTDIR: &str = "DOCKER_TLS_CERTDIR";
/// Extra server SANs in OpenSSL syntax: `DNS:dind,IP:10.0.0.5`.
pub const ENV_TLS_SAN: &str = "DOCKER_TLS_SAN";
/// Only a `unix://` value is honoured: the socket path jobs use.
pub const ENV_DOCKER_HOST: &str = "DOCKER_HOST";
/// Set and non-empty: legacy iptables; set and empty: nft.
pub const ENV_IPTABLES_LEGACY: &str = "DOCKER_IPTABLES_LEGACY";

const DEFAULT_CERTDIR: &str = "/certs";
const DOCKERD_DEFAULT_SOCKET: &str = "/var/run/docker.sock";
const DOCKERD_DEFAULT_DATA_ROOT: &str = "/var/lib/docker";
const GROUP_FILE: &str = "/etc/group";

/// Where the `DOCKER_*` variables come from: the process, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

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
}

/// The authenticated API proxy's endpoints.
#[derive(Debug)]
pub struct Proxy {
    /// TCP addresses; mutual TLS on them when certificates are on.
    pub listen: Vec<SocketAddr>,
    /// `DOCKER_HOST=unix://...` naming a path other than dockerd's socket.
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
}

/// How dockerd is launched.
#[derive(Debug)]
pub struct Dockerd {
    pub program: PathBuf,
    /// The private socket we probe (and the proxy forwards to).
    pub socket: PathBuf,
    /// The user's dockerd flags: appended to ours, or all of them when `exact`.
    pub user_args: Vec<String>,
    pub exact: bool,
    pub data_root: PathBuf,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    /// Our setting; None means overlay2 with the overlay-on-overlay fallback.
    pub storage_driver: Option<String>,
    pub storage_on_overlay: OnOverlay,
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
    pub fn new(
        settings: Settings,
        dockerd_args: Vec<String>,
        exact: bool,
        env: &dyn Env,
    ) -> anyhow::Result<Config> {
        let tls = tls_spec(&settings.tls, env)?;
        let socket = if exact {
            unix_host(&dockerd_args).unwrap_or_else(|| PathBuf::from(DOCKERD_DEFAULT_SOCKET))
        } else {
            settings.dockerd_socket.clone()
        };
        let data_root = flag_value(&dockerd_args, "--data-root", None)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if exact {
                    PathBuf::from(DOCKERD_DEFAULT_DATA_ROOT)
                } else {
                    settings.data_root.clone()
                }
            });
        let public_path = env
            .var(ENV_DOCKER_HOST)
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .filter(|p| p != &socket);
        let policy = proxy::policy::Policy::load(&settings.policy, settings.policy_allow_binds.as_deref())
            .with_context(|| format!("DIND_POLICY={:?}", settings.policy))?;
        // Exact mode has no proxy and so no policy; its flags are the user's alone.
        let deny_entitlements = if exact { Vec::new() } else { denied_entitlements(&policy) };
        let proxy = (!exact).then(|| Proxy {
            listen: if settings.listen.is_empty() {
                vec![SocketAddr::from(([0, 0, 0, 0], if tls.is_some() { 2376 } else { 2375 }))]
            } else {
                settings.listen.clone()
            },
            socket: public_path.map(|path| {
                let gid = group_id(Path::new(GROUP_FILE), &settings.socket_group);
                PublicSocket {
                    path,
                    // Without the group, 0660 would lock the job out.
                    mode: if gid.is_some() { settings.socket_mode } else { 0o666 },
                    gid,
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
        });
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
        Ok(Config {
            tls,
            dockerd: Dockerd {
                program: settings.dockerd,
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
                iptables_legacy: env.var(ENV_IPTABLES_LEGACY),
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
        })
    }
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
        None => PathBuf::from(env.var(ENV_TLS_CERTDIR).unwrap_or_else(|| DEFAULT_CERTDIR.into())),
    };
    if dir.as_os_str().is_empty() {
        return Ok(None);
    }
    let extra = match env.var(ENV_TLS_SAN) {
        Some(s) => certs::parse_openssl_sans(&s).with_context(|| format!("{ENV_TLS_SAN}={s:?}"))?,
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
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then_some(())?;
            f.nth(1)?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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

        let off = HashMap::from([(ENV_TLS_CERTDIR, "")]);
        assert!(Config::new(settings(&[]), vec![], false, &off).unwrap().tls.is_none());
    }

    #[test]
    fn tls_san_is_parsed_and_bad_san_names_the_variable() {
        let env = HashMap::from([(ENV_TLS_SAN, "DNS:dind,IP:10.0.0.5")]);
        let spec = Config::new(settings(&[]), vec![], false, &env).unwrap().tls.unwrap();
        let sans: Vec<String> = spec.sans.iter().map(|s| s.to_string()).collect();
        assert!(sans.contains(&"DNS:dind".to_string()), "{sans:?}");
        assert!(sans.contains(&"IP:10.0.0.5".to_string()), "{sans:?}");

        let bad = HashMap::from([(ENV_TLS_SAN, "URI:x")]);
        let err = Config::new(settings(&[]), vec![], false, &bad).unwrap_err();
        assert!(format!("{err:#}").contains(ENV_TLS_SAN), "{err:#}");
    }

    fn public_socket(env: &HashMap<&str, &str>) -> Option<PathBuf> {
        let c = Config::new(settings(&[]), vec![], false, env).unwrap();
        c.proxy.unwrap().socket.map(|s| s.path)
    }

    #[test]
    fn docker_host_unix_path_becomes_the_public_socket_unless_it_is_dockerds() {
        let env = HashMap::from([(ENV_DOCKER_HOST, "unix:///runner/services/docker/docker.sock")]);
        assert_eq!(
            public_socket(&env).as_deref(),
            Some(Path::new("/runner/services/docker/docker.sock"))
        );
        let same = HashMap::from([(ENV_DOCKER_HOST, "unix:///var/run/docker.sock")]);
        assert!(public_socket(&same).is_none());
        let tcp = HashMap::from([(ENV_DOCKER_HOST, "tcp://docker:2376")]);
        assert!(public_socket(&tcp).is_none());
    }

    #[test]
    fn default_port_follows_tls() {
        let on = Config::new(settings(&[]), vec![], false, &HashMap::new()).unwrap();
        assert_eq!(on.proxy.unwrap().listen, ["0.0.0.0:2376".parse().unwrap()]);
        let off = HashMap::from([(ENV_TLS_CERTDIR, "")]);
        let c = Config::new(settings(&[]), vec![], false, &off).unwrap();
        assert_eq!(c.proxy.unwrap().listen, ["0.0.0.0:2375".parse().unwrap()]);
        let c = Config::new(settings(&["--listen", "[::]:2376,127.0.0.1:12376"]), vec![], false, &HashMap::new()).unwrap();
        assert_eq!(c.proxy.unwrap().listen.len(), 2);
        assert!(Config::new(settings(&[]), vec![], true, &HashMap::new()).unwrap().proxy.is_none());
    }

    #[test]
    fn policy_is_checked_before_start() {
        let c = Config::new(settings(&["--policy", "ci-safe"]), vec![], false, &HashMap::new()).unwrap();
        assert_eq!(c.proxy.unwrap().policy.name(), "ci-safe");
        let err = Config::new(settings(&["--policy", "/nonexistent/policy.toml"]), vec![], false, &HashMap::new()).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/policy.toml"), "{err:#}");
    }

    #[test]
    fn buildkit_entitlements_follow_the_policy_rules_that_deny_the_same_thing() {
        let denied = |args: &[&str], exact| {
            Config::new(settings(args), vec![], exact, &HashMap::new()).unwrap().dockerd.deny_entitlements
        };
        assert_eq!(denied(&["--policy", "ci-safe"], false), [Entitlement::NetworkHost, Entitlement::SecurityInsecure]);
        assert!(denied(&[], false).is_empty());
        assert!(denied(&["--policy", "ci-safe"], true).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, "profile = \"ci-safe\"\n[rules]\nhost_network = \"allow\"\n").unwrap();
        assert_eq!(denied(&["--policy", file.to_str().unwrap()], false), [Entitlement::SecurityInsecure]);
        std::fs::write(&file, "profile = \"permissive\"\n[rules]\nhost_network = \"deny\"\n").unwrap();
        assert_eq!(denied(&["--policy", file.to_str().unwrap()], false), [Entitlement::NetworkHost]);
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
        let s = settings(&["--registry-mirror", "https://a, https://b https://c", "--registry-mirror", "https://d"]);
        let c = Config::new(s, vec![], false, &HashMap::new()).unwrap();
        assert_eq!(c.dockerd.registry_mirrors, ["https://a", "https://b", "https://c", "https://d"]);
    }

    #[test]
    fn exact_mode_probes_the_socket_dockerd_was_told_to_use() {
        let args: Vec<String> = ["--data-root=/d", "-H", "tcp://0.0.0.0:2375", "--host=unix:///x/d.sock"]
            .map(String::from)
            .to_vec();
        let c = Config::new(settings(&[]), args, true, &HashMap::new()).unwrap();
        assert_eq!(c.dockerd.socket, PathBuf::from("/x/d.sock"));
        assert_eq!(c.dockerd.data_root, PathBuf::from("/d"));
    }

    #[test]
    fn bounds_have_defaults_and_the_body_timeout_may_only_be_shortened() {
        let none = HashMap::new();
        let p = Config::new(settings(&[]), vec![], false, &none).unwrap().proxy.unwrap();
        assert_eq!((p.max_connections, p.body_timeout), (1024, Duration::from_secs(60)));
        let p = Config::new(settings(&["--max-connections", "8", "--body-timeout", "2s"]), vec![], false, &none).unwrap().proxy.unwrap();
        assert_eq!((p.max_connections, p.body_timeout), (8, Duration::from_secs(2)));
        for bad in [["--max-connections", "0"], ["--body-timeout", "61s"], ["--body-timeout", "500ms"]] {
            let err = Config::new(settings(&bad), vec![], false, &none).unwrap_err();
            let name = if bad[0] == "--max-connections" { "DIND_MAX_CONNECTIONS" } else { "DIND_BODY_TIMEOUT" };
            assert!(format!("{err:#}").contains(name), "{bad:?}: {err:#}");
        }
    }

    #[test]
    fn bad_mtu_is_rejected_before_start() {
        assert!(Config::new(settings(&["--mtu", "jumbo"]), vec![], false, &HashMap::new()).is_err());
    }
}
