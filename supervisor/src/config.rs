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
use crate::env::{Env, DIND_BARE_DOCKERD, DIND_DOCKERD_OWN_LISTEN, DOCKER_DRIVER, DOCKER_HOST};
use crate::env::{DOCKER_IPTABLES_LEGACY, PATH, STANDARD_PATH};
use crate::env::{DOCKER_TLS_CERTDIR, DOCKER_TLS_SAN};
use crate::host_flags::{self, Group, Host, Taken, TlsFlags};
use crate::lock::{self, LockError, Pinning, Pins};
use crate::mtu::MtuSetting;
use crate::private;
use crate::storage::OnOverlay;

const DEFAULT_CERTDIR: &str = "/certs";
/// dockerd's own default socket: where bare dockerd listens when its flags
/// name none.
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
    /// The public API; None when dockerd runs bare, with exactly the user's
    /// flags, and so owns its endpoints itself.
    pub proxy: Option<Proxy>,
    /// The image's policy file when it locks the policy.
    pub locked_by: Option<&'static str>,
}

/// The authenticated API proxy's endpoints.
#[derive(Debug)]
pub struct Proxy {
    /// TCP addresses; mutual TLS on them when certificates are on.
    pub listen: Vec<SocketAddr>,
    /// The unix sockets: the paths of the command's `--host unix://…` and
    /// `DOCKER_HOST=unix://…`, other than dockerd's socket; with none of
    /// them and no `--host` at all, [`DEFAULT_PUBLIC_SOCKET`] unless that
    /// is dockerd's.
    pub sockets: Vec<PublicSocket>,
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
    /// The user's dockerd flags without the endpoint flags the proxy took
    /// (`host_flags.rs`): appended to ours; when `bare`, all of them, as given.
    pub user_args: Vec<String>,
    /// `DIND_BARE_DOCKERD`: dockerd with exactly the user's flags, nothing of ours.
    pub bare: bool,
    /// `DIND_DOCKERD_OWN_LISTEN`: dockerd's own TCP listeners, outside the
    /// proxy (with the server certificate when TLS is on).
    pub own_listen: Vec<SocketAddr>,
    /// The certificate layout those listeners serve with; None: TLS off.
    pub own_tls: Option<certs::Paths>,
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
    /// Where dockerd and its helpers are looked for: `PATH`, else the
    /// stock image's.
    pub path: String,
    pub run_dir: PathBuf,
    pub stale_pid_dirs: Vec<PathBuf>,
    /// BuildKit entitlements the request policy denies; dockerd is told not to grant them.
    pub deny_entitlements: Vec<Entitlement>,
}

/// Where dockerd and its helpers are looked for. Under a lock the job's
/// `PATH` could put its own `dockerd`, `iptables` or `runc` first, so the
/// lock's fixed one is used, as the environment dockerd gets is scrubbed.
fn search_path(env: &dyn Env, locked: Option<&str>) -> String {
    match locked {
        Some(_) => lock::LOCKED_PATH.to_owned(),
        None => env.var(PATH).unwrap_or_else(|| STANDARD_PATH.to_owned()),
    }
}

/// How dockerd is kept running and stopped.
#[derive(Debug, Clone)]
pub struct Supervise {
    pub shutdown_timeout: Duration,
    pub restart: RestartPolicy,
    pub restart_max: u32,
    /// How long dockerd may not answer after Ready before it is killed and
    /// restarted (see `watchdog`); None: never.
    pub hang_timeout: Option<Duration>,
}

impl Config {
    /// The configuration without an image policy file.
    #[cfg(test)]
    pub fn new(
        settings: Settings,
        dockerd_args: Vec<String>,
        env: &dyn Env,
    ) -> anyhow::Result<Config> {
        Config::build(settings, &Given::default(), dockerd_args, env, None)
    }

    /// Checks the settings against the image's policy file `image` (read
    /// from [`IMAGE_FILE`]): with `locked = true` what was `given` may only
    /// tighten (see `lock.rs`); otherwise the file is the default policy
    /// and its `[supervisor]` table gives defaults.
    ///
    /// `dockerd_args` are the user's dockerd flags, whatever the command's
    /// form (`FLAGS…`, `dockerd FLAGS…`, `run -- FLAGS…`): their endpoint
    /// flags become the proxy's (`host_flags.rs`), the rest goes to dockerd
    /// after ours. Only `DIND_BARE_DOCKERD` gives dockerd them as they are.
    pub fn build(
        mut settings: Settings,
        given: &Given,
        dockerd_args: Vec<String>,
        env: &dyn Env,
        image: Option<&PolicyFile>,
    ) -> anyhow::Result<Config> {
        let pins = match image {
            Some(f) => Pins::parse(IMAGE_FILE, &f.supervisor)?,
            None => Pins::default(),
        };
        let locked = image.filter(|f| f.locked).map(|_| IMAGE_FILE);
        let bare = settings.bare_dockerd;
        if let Some(file) = locked {
            refuse_unlocked_dockerd(file, &settings, given)?;
        }
        let pin = Pinning { given, locked };
        let pinned = pin_paths(&mut settings, &pins, &pin)?;
        let taken = user_flags(dockerd_args, bare, locked, &settings)?;
        check_bounds(&settings)?;

        let tls = tls_spec(&settings.tls, env)?;
        check_tls_flags(&taken.tls, tls.as_ref())?;
        let socket = if bare {
            unix_host(&taken.rest).unwrap_or_else(|| PathBuf::from(DOCKERD_OWN_SOCKET))
        } else {
            pinned.dockerd_socket.clone().expect("has a default")
        };
        let data_root = effective_data_root(&taken.rest, bare, &settings.data_root);
        let policy = policy(&settings, given, image, locked)?;
        // Bare dockerd has no proxy and so no policy; its flags are the user's alone.
        let sockets = (!bare).then(|| public_sockets(env, locked, &socket, &taken));
        let proxy = match sockets.transpose()? {
            Some(s) => Some(proxy_settings(&settings, &taken, s, tls.is_some(), policy)?),
            None => None,
        };
        let deny_entitlements = proxy
            .as_ref()
            .map(|p| denied_entitlements(&p.policy))
            .unwrap_or_default();
        let own_tls = tls.as_ref().map(|t| certs::Paths::new(&t.dir));
        let supervise = Supervise::from(&settings);
        Ok(Config {
            tls,
            dockerd: Dockerd {
                program: settings.dockerd,
                socket_is_ours: !bare && socket == pinned.own_socket,
                allow_shared: pinned.shared == SharedArg::Allow,
                socket,
                user_args: taken.rest,
                bare,
                own_listen: settings.dockerd_own_listen,
                own_tls,
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
                path: search_path(env, locked),
                run_dir: settings.run_dir,
                stale_pid_dirs: settings.stale_pid_dirs,
                deny_entitlements,
            },
            supervise,
            health_addr: settings.health_addr,
            proxy,
            locked_by: locked,
        })
    }

    /// The directories that must not lie on a shared mount (`private.rs`):
    /// dockerd's socket directory, the run directory, dockerd's exec root
    /// (containerd's socket). None for bare dockerd, whose socket is the
    /// API clients use by choice.
    pub fn private_dirs(&self) -> Vec<private::Dir> {
        let d = &self.dockerd;
        if d.bare {
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

impl From<&Settings> for Supervise {
    fn from(settings: &Settings) -> Supervise {
        Supervise {
            shutdown_timeout: settings.shutdown_timeout,
            restart: settings.restart,
            restart_max: settings.restart_max,
            hang_timeout: Some(settings.hang_timeout).filter(|t| !t.is_zero()),
        }
    }
}

/// Under a lock: the settings that put dockerd's API outside the proxy.
fn refuse_unlocked_dockerd(
    file: &str,
    settings: &Settings,
    given: &Given,
) -> Result<(), LockError> {
    if settings.bare_dockerd {
        let name = given.name("bare_dockerd");
        return Err(lock::refuse_bare(file, name.unwrap_or(DIND_BARE_DOCKERD)));
    }
    if !settings.dockerd_own_listen.is_empty() {
        let name = given.name("dockerd_own_listen");
        return Err(lock::refuse_own_listen(
            file,
            name.unwrap_or(DIND_DOCKERD_OWN_LISTEN),
        ));
    }
    Ok(())
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

/// The user's dockerd flags with the endpoint flags taken for the proxy
/// (all of them left to dockerd when `bare`); under a lock, what is left
/// must pass its list.
fn user_flags(
    dockerd_args: Vec<String>,
    bare: bool,
    locked: Option<&str>,
    settings: &Settings,
) -> anyhow::Result<Taken> {
    let taken = if bare {
        Taken {
            rest: dockerd_args,
            ..Taken::default()
        }
    } else {
        host_flags::take(&dockerd_args)?
    };
    if let Some(file) = locked {
        lock::check_dockerd_args(file, &taken.rest, &settings.data_root, &settings.run_dir)?;
    }
    Ok(taken)
}

/// The data root dockerd will use: its own flag, else ours, else (bare)
/// dockerd's default.
fn effective_data_root(dockerd_args: &[String], bare: bool, ours: &Path) -> PathBuf {
    match flag_value(dockerd_args, "--data-root", None) {
        Some(flag) => PathBuf::from(flag),
        None if bare => PathBuf::from(DOCKERD_DEFAULT_DATA_ROOT),
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

/// Where the proxy serves the API on unix sockets (`implicit` marks the
/// default path, which steps aside for another server): the paths of the
/// command's `--host unix://…`, then DOCKER_HOST's; with none of them and no
/// `--host` at all, the default path. Never dockerd's own socket: under a
/// lock naming it is refused, otherwise it is left to dockerd.
fn public_sockets(
    env: &dyn Env,
    locked: Option<&'static str>,
    raw: &Path,
    taken: &Taken,
) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let docker_host = env.var(DOCKER_HOST);
    let host_path = docker_host
        .as_deref()
        .and_then(|h| h.strip_prefix("unix://"))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if let (Some(file), Some(p), Some(h)) = (locked, &host_path, &docker_host) {
        lock::check_docker_host(file, h, same_socket(p, raw))?;
    }
    let mut asked = Vec::new();
    for h in &taken.hosts {
        if let Host::Unix(p) = h {
            if let Some(file) = locked {
                lock::check_host_flag(file, p, same_socket(p, raw))?;
            }
            asked.push(p.clone());
        }
    }
    asked.extend(host_path);
    let mut out: Vec<(PathBuf, bool)> = Vec::new();
    for p in asked {
        if !same_socket(&p, raw) && !out.iter().any(|(o, _)| same_socket(o, &p)) {
            out.push((p, false));
        }
    }
    if out.is_empty() && taken.hosts.is_empty() {
        let default = Path::new(DEFAULT_PUBLIC_SOCKET);
        if same_socket(default, raw) {
            tracing::warn!(socket = %raw.display(), "dockerd's raw socket is where docker clients look first: whatever uses it bypasses the policy and the audit log");
        } else {
            out.push((default.to_owned(), true));
        }
    }
    Ok(out)
}

/// The TLS flags of the command, checked against what the proxy serves:
/// mutual TLS with the certificates in `DOCKER_TLS_CERTDIR`, or plain TCP
/// when that is empty. Flags that say the same are accepted (a copy of the
/// stock entrypoint's `--tlsverify --tlscacert=/certs/server/ca.pem …`);
/// `--tls` without `--tlsverify` is served with client verification too,
/// since the proxy never serves TLS without it. Anything else would be
/// silently different from what the user wrote, so it is refused.
fn check_tls_flags(flags: &TlsFlags, tls: Option<&CertSpec>) -> anyhow::Result<()> {
    let on = flags.tls == Some(true) || flags.verify == Some(true);
    let off = !on && (flags.tls == Some(false) || flags.verify == Some(false));
    match tls {
        Some(spec) if off => bail!(
            "the dockerd flag --tls=false/--tlsverify=false asks for plain TCP, but the proxy serves mutual TLS with the certificates in {}: set DOCKER_TLS_CERTDIR=\"\" to turn TLS off, or remove the flag",
            spec.dir.display()
        ),
        None if on => bail!("the dockerd flag --tls/--tlsverify asks for TLS, but DOCKER_TLS_CERTDIR is empty: set it (e.g. /certs) so the proxy serves mutual TLS, or remove the flag"),
        _ => {}
    }
    let paths = tls.map(|spec| certs::Paths::new(&spec.dir));
    for (flag, given, ours) in [
        (
            "--tlscacert",
            &flags.ca,
            paths.as_ref().map(certs::Paths::server_ca),
        ),
        (
            "--tlscert",
            &flags.cert,
            paths.as_ref().map(certs::Paths::server_cert),
        ),
        (
            "--tlskey",
            &flags.key,
            paths.as_ref().map(certs::Paths::server_key),
        ),
    ] {
        let Some(given) = given else { continue };
        match ours {
            // Compared by components: `/certs//server/ca.pem` is ours too.
            Some(ours) if ours == *given => {}
            Some(ours) => bail!(
                "the dockerd flag {flag} {}: the proxy serves the certificates in DOCKER_TLS_CERTDIR ({}); put yours in that layout, or remove the flag",
                given.display(),
                ours.display()
            ),
            None => bail!(
                "the dockerd flag {flag} {}: TLS is off (DOCKER_TLS_CERTDIR is empty); set it, or remove the flag",
                given.display()
            ),
        }
    }
    Ok(())
}

/// The gid of the public sockets: the command's `--group` (a number, or a
/// name that must be in /etc/group, as dockerd requires), else
/// `DIND_SOCKET_GROUP` (a number, or a name; None when /etc/group lacks it).
fn socket_gid(
    group_file: &Path,
    flag: Option<&Group>,
    setting: &str,
) -> anyhow::Result<Option<u32>> {
    match flag {
        Some(Group::Id(id)) => Ok(Some(*id)),
        Some(Group::Name(name)) => match group_id(group_file, name) {
            Some(id) => Ok(Some(id)),
            None => bail!(
                "the dockerd flag --group {name:?}: no such group in {}: give its number, or add it to the image",
                group_file.display()
            ),
        },
        None => Ok(setting.parse().ok().or_else(|| group_id(group_file, setting))),
    }
}

/// The proxy's settings: its listeners, the public sockets, the bounds and
/// the policy. TCP listeners are `DIND_LISTEN`'s and the command's `--host
/// tcp://…` (no port: 2376 with TLS, 2375 without, as dockerd); with
/// neither, and no `--host` at all, the default port on every address.
fn proxy_settings(
    settings: &Settings,
    taken: &Taken,
    public: Vec<(PathBuf, bool)>,
    tls: bool,
    policy: Policy,
) -> anyhow::Result<Proxy> {
    let default_port = if tls { 2376 } else { 2375 };
    let mut listen = settings.listen.clone();
    for h in &taken.hosts {
        if let Host::Tcp { ip, port } = h {
            let addr = SocketAddr::new(*ip, port.unwrap_or(default_port));
            if !listen.contains(&addr) {
                listen.push(addr);
            }
        }
    }
    if listen.is_empty() && taken.hosts.is_empty() {
        listen.push(SocketAddr::from(([0, 0, 0, 0], default_port)));
    }
    let gid = socket_gid(
        Path::new(GROUP_FILE),
        taken.group.as_ref(),
        &settings.socket_group,
    )?;
    Ok(Proxy {
        listen,
        sockets: public
            .into_iter()
            .map(|(path, implicit)| PublicSocket {
                path,
                // Without the group, 0660 would lock the job out.
                mode: if gid.is_some() {
                    settings.socket_mode
                } else {
                    0o666
                },
                gid,
                implicit,
            })
            .collect(),
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
    })
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
    fn dockerd_is_looked_for_on_the_path_of_the_env_else_the_stock_one() {
        let none: HashMap<&str, &str> = HashMap::new();
        let c = Config::new(settings(&[]), vec![], &none).unwrap();
        assert_eq!(c.dockerd.path, STANDARD_PATH);
        let env = HashMap::from([(PATH, "/opt/docker/bin")]);
        let c = Config::new(settings(&[]), vec![], &env).unwrap();
        assert_eq!(c.dockerd.path, "/opt/docker/bin");
    }

    /// Under a lock the job's PATH would choose the dockerd, iptables and
    /// runc a root service runs: the lock's own is used instead.
    #[test]
    fn a_locked_service_does_not_search_the_jobs_path() {
        let env = [(PATH, "/builds/evil/bin:/usr/bin")];
        let c = start(LOCKED, &[], &[], &[], &env).unwrap();
        assert_eq!(c.dockerd.path, lock::LOCKED_PATH);
        let c = start("profile = \"ci-safe\"\n", &[], &[], &[], &env).unwrap();
        assert_eq!(
            c.dockerd.path, "/builds/evil/bin:/usr/bin",
            "unlocked: the service's own"
        );
    }

    #[test]
    fn certdir_unset_is_stock_default_and_empty_turns_tls_off() {
        let none: HashMap<&str, &str> = HashMap::new();
        let c = Config::new(settings(&[]), vec![], &none).unwrap();
        assert_eq!(c.tls.unwrap().dir, PathBuf::from("/certs"));

        let off = HashMap::from([(DOCKER_TLS_CERTDIR, "")]);
        assert!(Config::new(settings(&[]), vec![], &off)
            .unwrap()
            .tls
            .is_none());
    }

    #[test]
    fn dockerds_own_listeners_serve_the_server_certificate_beside_the_proxy() {
        let none: HashMap<&str, &str> = HashMap::new();
        let own = ["--dockerd-own-listen", "127.0.0.1:2377"];
        let c = Config::new(settings(&own), vec![], &none).unwrap();
        let user = crate::daemon_json::load(&[], Path::new("/nonexistent/daemon.json")).unwrap();
        let flags = crate::dockerd::our_flags(&c.dockerd, &user, Duration::from_secs(8));
        for f in [
            "--host=tcp://127.0.0.1:2377",
            "--tlsverify",
            "--tlscacert=/certs/server/ca.pem",
            "--tlscert=/certs/server/cert.pem",
            "--tlskey=/certs/server/key.pem",
        ] {
            assert!(flags.iter().any(|a| a == f), "{f} missing: {flags:?}");
        }
        // The proxy keeps its own default listener.
        assert_eq!(c.proxy.unwrap().listen, ["0.0.0.0:2376".parse().unwrap()]);
        let off = HashMap::from([(DOCKER_TLS_CERTDIR, "")]);
        let c = Config::new(settings(&own), vec![], &off).unwrap();
        let flags = crate::dockerd::our_flags(&c.dockerd, &user, Duration::from_secs(8));
        assert!(!flags.iter().any(|a| a.starts_with("--tls")), "{flags:?}");
    }

    #[test]
    fn docker_driver_is_read_and_empty_is_unset_as_in_dockerd() {
        let driver = |env: HashMap<&str, &str>| {
            Config::new(settings(&[]), vec![], &env)
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
        let spec = Config::new(settings(&[]), vec![], &env)
            .unwrap()
            .tls
            .unwrap();
        let sans: Vec<String> = spec.sans.iter().map(|s| s.to_string()).collect();
        assert!(sans.contains(&"DNS:dind".to_string()), "{sans:?}");
        assert!(sans.contains(&"IP:10.0.0.5".to_string()), "{sans:?}");

        let bad = HashMap::from([(DOCKER_TLS_SAN, "URI:x")]);
        let err = Config::new(settings(&[]), vec![], &bad).unwrap_err();
        assert!(format!("{err:#}").contains(DOCKER_TLS_SAN), "{err:#}");
    }

    fn public_socket(env: &HashMap<&str, &str>) -> Option<PathBuf> {
        let c = Config::new(settings(&[]), vec![], env).unwrap();
        let mut sockets = c.proxy.unwrap().sockets;
        assert!(sockets.len() <= 1, "{sockets:?}");
        sockets.pop().map(|s| s.path)
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
        let c = Config::new(settings(&[]), vec![], &HashMap::new()).unwrap();
        assert!(c.proxy.unwrap().sockets[0].implicit);
    }

    #[test]
    fn dockerds_socket_is_in_a_directory_of_its_own_under_the_run_dir() {
        let c = Config::new(settings(&["--run-dir", "/r"]), vec![], &HashMap::new()).unwrap();
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
        assert!(
            Config::new(settings(&["--bare-dockerd"]), vec![], &HashMap::new())
                .unwrap()
                .private_dirs()
                .is_empty()
        );
    }

    #[test]
    fn dockerd_at_the_well_known_path_means_the_proxy_does_not_serve_it() {
        // The old layout, asked for explicitly: then the path is dockerd's.
        for host in [None, Some("unix:///var/run/docker.sock")] {
            let env: HashMap<&str, &str> = host.map(|h| (DOCKER_HOST, h)).into_iter().collect();
            let c = Config::new(
                settings(&["--dockerd-socket", "/var/run/docker.sock"]),
                vec![],
                &env,
            )
            .unwrap();
            assert!(c.proxy.unwrap().sockets.is_empty(), "{host:?}");
        }
    }

    #[test]
    fn default_port_follows_tls() {
        let on = Config::new(settings(&[]), vec![], &HashMap::new()).unwrap();
        assert_eq!(on.proxy.unwrap().listen, ["0.0.0.0:2376".parse().unwrap()]);
        let off = HashMap::from([(DOCKER_TLS_CERTDIR, "")]);
        let c = Config::new(settings(&[]), vec![], &off).unwrap();
        assert_eq!(c.proxy.unwrap().listen, ["0.0.0.0:2375".parse().unwrap()]);
        let c = Config::new(
            settings(&["--listen", "[::]:2376,127.0.0.1:12376"]),
            vec![],
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(c.proxy.unwrap().listen.len(), 2);
        assert!(
            Config::new(settings(&["--bare-dockerd"]), vec![], &HashMap::new())
                .unwrap()
                .proxy
                .is_none()
        );
    }

    #[test]
    fn policy_is_checked_before_start() {
        let c = Config::new(settings(&["--policy", "ci-safe"]), vec![], &HashMap::new()).unwrap();
        assert_eq!(c.proxy.unwrap().policy.name(), "ci-safe");
        let err = Config::new(
            settings(&["--policy", "/nonexistent/policy.toml"]),
            vec![],
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
    fn a_locked_policy_refuses_bare_dockerd_and_loosening_dockerd_flags() {
        let e = refused(
            LOCKED,
            &["--bare-dockerd"],
            &[("bare_dockerd", "DIND_BARE_DOCKERD")],
            &["-H", "tcp://0.0.0.0:2375"],
            &[],
        );
        assert!(e.contains("DIND_BARE_DOCKERD=\"true\" is refused"), "{e}");
        assert!(e.ends_with("; unset DIND_BARE_DOCKERD"), "{e}");
        let e = refused(
            LOCKED,
            &["--dockerd-own-listen", "127.0.0.1:2377"],
            &[("dockerd_own_listen", "DIND_DOCKERD_OWN_LISTEN")],
            &[],
            &[],
        );
        assert!(e.ends_with("; unset DIND_DOCKERD_OWN_LISTEN"), "{e}");
        for args in [
            &["--config-file", "/builds/d.json"][..],
            &["--host=unix:///run/dind-supervisor/dockerd/docker.sock"],
            &["-DH", "unix:///run/dind-supervisor/dockerd//docker.sock"],
        ] {
            refused(LOCKED, &[], &[], args, &[]);
        }
        // Endpoint flags are the proxy's, so the lock lets them through:
        // ARC's command, and a TCP listener of the proxy.
        let c = started(
            LOCKED,
            &[],
            &[],
            &[
                "--host=unix:///var/run/docker.sock",
                "--group=123",
                "-H",
                "tcp://0.0.0.0:2376",
            ],
            &[],
        );
        assert!(c.dockerd.user_args.is_empty(), "{:?}", c.dockerd.user_args);
        assert_eq!(c.proxy.unwrap().listen, ["0.0.0.0:2376".parse().unwrap()]);
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
        let c = started(text, &[], &[], &["-H", "tcp://0.0.0.0:2375"], &[]);
        assert_eq!(c.proxy.unwrap().listen, ["0.0.0.0:2375".parse().unwrap()]);
    }

    #[test]
    fn buildkit_entitlements_follow_the_policy_rules_that_deny_the_same_thing() {
        let denied = |args: &[&str], bare: bool| {
            let mut args = args.to_vec();
            if bare {
                args.push("--bare-dockerd");
            }
            Config::new(settings(&args), vec![], &HashMap::new())
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
        let c = Config::new(s, vec![], &HashMap::new()).unwrap();
        assert_eq!(
            c.dockerd.registry_mirrors,
            ["https://a", "https://b", "https://c", "https://d"]
        );
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bare_dockerd_probes_the_socket_dockerd_was_told_to_use() {
        let args = strings(&[
            "--data-root=/d",
            "-H",
            "tcp://0.0.0.0:2375",
            "--host=unix:///x/d.sock",
        ]);
        let c = Config::new(settings(&["--bare-dockerd"]), args.clone(), &HashMap::new()).unwrap();
        assert_eq!(c.dockerd.socket, PathBuf::from("/x/d.sock"));
        assert_eq!(c.dockerd.data_root, PathBuf::from("/d"));
        assert_eq!(c.dockerd.user_args, args, "dockerd gets them as they are");
        assert!(c.proxy.is_none() && c.dockerd.bare);
    }

    /// ARC's dind container: `dockerd --host=unix:///var/run/docker.sock
    /// --group=$(DOCKER_GROUP_GID)`, no DOCKER_HOST.
    #[test]
    fn arcs_command_keeps_the_proxy_on_the_socket_it_names() {
        let c = Config::new(
            settings(&[]),
            strings(&[
                "--host=unix:///var/run/docker.sock",
                "--group=123",
                "--debug",
            ]),
            &HashMap::new(),
        )
        .unwrap();
        assert!(!c.dockerd.bare);
        assert_eq!(
            c.dockerd.user_args,
            ["--debug"],
            "the endpoint flags are ours"
        );
        assert_eq!(
            c.dockerd.socket,
            PathBuf::from("/run/dind-supervisor/dockerd/docker.sock")
        );
        let p = c.proxy.unwrap();
        assert_eq!(p.sockets.len(), 1);
        let s = &p.sockets[0];
        assert_eq!(
            (s.path.as_path(), s.gid, s.mode, s.implicit),
            (Path::new("/var/run/docker.sock"), Some(123), 0o660, false)
        );
        // dockerd's semantics: the hosts named are all of them.
        assert!(p.listen.is_empty(), "{:?}", p.listen);
        assert_eq!(p.policy.name(), "permissive");
    }

    #[test]
    fn tcp_hosts_are_the_proxys_listeners_with_dockerds_default_ports() {
        let listen = |args: &[&str], flags: &[&str], env: &[(&str, &str)]| {
            let env: HashMap<&str, &str> = env.iter().copied().collect();
            let c = Config::new(settings(flags), strings(args), &env).unwrap();
            let p = c.proxy.unwrap();
            let sockets: Vec<PathBuf> = p.sockets.into_iter().map(|s| s.path).collect();
            (
                p.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                sockets,
            )
        };
        assert_eq!(
            listen(&["-H", "tcp://0.0.0.0:2376", "-H", "tcp://"], &[], &[]),
            (
                vec!["0.0.0.0:2376".to_owned(), "127.0.0.1:2376".to_owned()],
                vec![]
            )
        );
        assert_eq!(
            listen(&["-H", "tcp://"], &[], &[(DOCKER_TLS_CERTDIR, "")]).0,
            ["127.0.0.1:2375"]
        );
        // DIND_LISTEN, when given, stays; DOCKER_HOST's socket too.
        assert_eq!(
            listen(
                &["-H", "tcp://0.0.0.0:2376"],
                &["--listen", "127.0.0.1:9"],
                &[(DOCKER_HOST, "unix:///s/api.sock")]
            ),
            (
                vec!["127.0.0.1:9".to_owned(), "0.0.0.0:2376".to_owned()],
                vec![PathBuf::from("/s/api.sock")]
            )
        );
    }

    #[test]
    fn the_socket_group_is_a_number_or_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("group");
        std::fs::write(
            &f,
            "docker:x:998:
ci:x:1500:
",
        )
        .unwrap();
        let name = |n: &str| Group::Name(n.into());
        assert_eq!(socket_gid(&f, None, "docker").unwrap(), Some(998));
        assert_eq!(socket_gid(&f, None, "123").unwrap(), Some(123));
        assert_eq!(socket_gid(&f, None, "nobody-here").unwrap(), None);
        assert_eq!(
            socket_gid(&f, Some(&Group::Id(7)), "docker").unwrap(),
            Some(7)
        );
        assert_eq!(
            socket_gid(&f, Some(&name("ci")), "docker").unwrap(),
            Some(1500)
        );
        let e = socket_gid(&f, Some(&name("nope")), "docker")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--group \"nope\": no such group") && e.ends_with("add it to the image"),
            "{e}"
        );
        // DIND_SOCKET_GROUP as a number reaches the socket.
        let c = Config::new(
            settings(&["--socket-group", "4242"]),
            vec![],
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(c.proxy.unwrap().sockets[0].gid, Some(4242));
    }

    #[test]
    fn tls_flags_that_agree_with_the_certificates_pass_and_others_are_one_line() {
        let run = |args: &[&str], env: &[(&str, &str)]| {
            let env: HashMap<&str, &str> = env.iter().copied().collect();
            Config::new(settings(&[]), strings(args), &env).map_err(|e| format!("{e:#}"))
        };
        // The stock entrypoint's own line, copied into a command.
        let c = run(
            &[
                "--host=tcp://0.0.0.0:2376",
                "--tlsverify",
                "--tlscacert",
                "/certs/server/ca.pem",
                "--tlscert=/certs/server/cert.pem",
                "--tlskey=/certs//server/key.pem",
            ],
            &[],
        )
        .unwrap();
        assert!(c.dockerd.user_args.is_empty());
        run(&["--tls"], &[]).unwrap();
        run(&["--tls=false"], &[(DOCKER_TLS_CERTDIR, "")]).unwrap();
        for (args, env, says) in [
            (
                &["--tlsverify=false"][..],
                &[][..],
                "set DOCKER_TLS_CERTDIR=\"\" to turn TLS off",
            ),
            (
                &["--tlsverify"],
                &[(DOCKER_TLS_CERTDIR, "")],
                "DOCKER_TLS_CERTDIR is empty",
            ),
            (
                &["--tlscert=/etc/my/cert.pem"],
                &[],
                "(/certs/server/cert.pem); put yours in that layout",
            ),
            (
                &["--tlskey=/certs/server/key.pem"],
                &[(DOCKER_TLS_CERTDIR, "")],
                "TLS is off",
            ),
            (&["-H", "fd://"], &[], "socket activation"),
        ] {
            let e = run(args, env).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn bounds_have_defaults_and_the_body_timeout_may_only_be_shortened() {
        let none = HashMap::new();
        let p = Config::new(settings(&[]), vec![], &none)
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
            let err = Config::new(settings(&bad), vec![], &none).unwrap_err();
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
        assert!(Config::new(settings(&["--mtu", "jumbo"]), vec![], &HashMap::new()).is_err());
    }
}
