//! The command line: the stock docker:dind entrypoint's rules first, then ours.
//!
//! The stock entrypoint treats no arguments or a leading flag as "run dockerd
//! with these extra flags", `dockerd ...` as "run exactly this", and anything
//! else as a command to exec. Pipelines depend on all three (GitLab passes
//! `command: ["--registry-mirror", "..."]` straight through;
//! actions-runner-controller runs `dockerd --host=… --group=…`), so they
//! come before our own subcommands. Here `dockerd FLAGS…` means the same as
//! `FLAGS…`: the user's dockerd flags, with the supervisor's features kept
//! (issue 12); dockerd with exactly those flags and nothing of ours needs
//! `DIND_BARE_DOCKERD`. Our settings are flags of `run` and, for the image,
//! `DIND_*` variables.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::certs::KeyType;
use crate::env::{self, Env};

/// What one start of the binary is asked to do.
#[derive(Debug)]
pub enum Invocation {
    /// Supervise dockerd. `dockerd_args` are the user's dockerd flags:
    /// appended to our defaults, or, with `DIND_BARE_DOCKERD`, dockerd's
    /// whole command line.
    Run {
        settings: Box<Settings>,
        /// Which settings were set, not defaulted: under a lock they are
        /// the job's.
        given: Given,
        dockerd_args: Vec<String>,
    },
    /// Mint or refresh the certificate set and exit.
    Certs(TlsArgs),
    /// Wait until the engine at DOCKER_HOST answers /_ping (for job scripts).
    Wait(WaitArgs),
    /// Probe the local /readyz once (for an image HEALTHCHECK).
    Health(HealthArgs),
    /// Not ours: replace this process with the command (client mode).
    Exec(Vec<OsString>),
}

#[derive(Debug, Parser)]
#[command(
    name = "dind-supervisor",
    version,
    about = "PID 1 for Docker-in-Docker service containers",
    long_about = "PID 1 for Docker-in-Docker service containers.\n\n\
        With no arguments, or with arguments that start with '-', it runs `run` \
        and passes those arguments to dockerd, like the docker:dind entrypoint. \
        `dind-supervisor dockerd FLAGS...` means the same; its --host and --group \
        name the proxy's endpoints. DIND_BARE_DOCKERD=1 runs dockerd with exactly \
        the given flags and nothing else. Any other command is executed as is."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint certificates, start dockerd and supervise it (the default).
    Run {
        #[command(flatten)]
        settings: Box<Settings>,
        /// Extra dockerd flags, after `--`.
        #[arg(last = true)]
        dockerd_args: Vec<String>,
    },
    /// Mint or refresh the certificate set in the certificate directory, then exit.
    Certs(TlsArgs),
    /// Wait until the engine answers /_ping, reading DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH like the docker CLI.
    Wait(WaitArgs),
    /// Exit 0 when the local health endpoint says ready, else 1 (an image HEALTHCHECK).
    Health(HealthArgs),
}

/// `health`: where the supervisor's health endpoint listens.
#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// The supervisor's health address; 0.0.0.0 and [::] are probed on loopback.
    #[arg(long, default_value = "0.0.0.0:2378")]
    pub health_addr: std::net::SocketAddr,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Subcommands of ours; every other non-flag first word is executed.
const OURS: &[&str] = &["run", "certs", "wait", "health", "help"];

/// The settings of `run` that came from the environment or the command
/// line rather than from their defaults, by argument id (the field name),
/// each with how it was spelled: `DIND_POLICY` or `--policy`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Given(BTreeMap<String, String>);

impl Given {
    /// How the setting `id` was given, or None when it was not.
    pub fn name(&self, id: &str) -> Option<&str> {
        self.0.get(id).map(String::as_str)
    }

    /// Reads clap's record of where each value of `run` came from. A
    /// default that [`command`] took from `env` was given by its variable.
    fn from_matches(cmd: &clap::Command, m: &ArgMatches, env: &dyn Env) -> Given {
        let mut out = BTreeMap::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let name = match m.value_source(id) {
                Some(ValueSource::DefaultValue) => variable(id)
                    .filter(|var| env.var(var).is_some())
                    .map(str::to_owned),
                Some(ValueSource::CommandLine) => arg.get_long().map(|l| format!("--{l}")),
                _ => None,
            };
            if let Some(name) = name {
                out.insert(id.to_owned(), name);
            }
        }
        Given(out)
    }

    #[cfg(test)]
    pub fn of(pairs: &[(&str, &str)]) -> Given {
        Given(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

/// Every setting that is also a variable, by argument id (the field name).
/// `health` and `run` share `health_addr`; `certs` and `run` the TLS ones.
const VARIABLES: &[(&str, &str)] = &[
    ("audit_log", env::DIND_AUDIT_LOG),
    ("bare_dockerd", env::DIND_BARE_DOCKERD),
    ("body_timeout", env::DIND_BODY_TIMEOUT),
    ("cert_validity_days", env::DIND_CERT_VALIDITY_DAYS),
    ("data_root", env::DIND_DATA_ROOT),
    ("dockerd", env::DIND_DOCKERD),
    ("dockerd_own_listen", env::DIND_DOCKERD_OWN_LISTEN),
    ("dockerd_socket", env::DIND_DOCKERD_SOCKET),
    ("dockerd_socket_shared", env::DIND_DOCKERD_SOCKET_SHARED),
    ("hang_timeout", env::DIND_HANG_TIMEOUT),
    ("health_addr", env::DIND_HEALTH_ADDR),
    ("hold_timeout", env::DIND_HOLD_TIMEOUT),
    ("insecure_registries", env::DIND_INSECURE_REGISTRIES),
    ("listen", env::DIND_LISTEN),
    ("listen_when", env::DIND_LISTEN_WHEN),
    ("log_format", env::DIND_LOG_FORMAT),
    ("log_level", env::DIND_LOG_LEVEL),
    ("max_connections", env::DIND_MAX_CONNECTIONS),
    ("mtu", env::DIND_MTU),
    ("ping_cache", env::DIND_PING_CACHE),
    ("policy", env::DIND_POLICY),
    ("policy_allow_binds", env::DIND_POLICY_ALLOW_BINDS),
    ("registry_mirrors", env::DIND_REGISTRY_MIRRORS),
    ("restart", env::DIND_RESTART),
    ("restart_max", env::DIND_RESTART_MAX),
    ("run_dir", env::DIND_RUN_DIR),
    ("shutdown_timeout", env::DIND_SHUTDOWN_TIMEOUT),
    ("socket_group", env::DIND_SOCKET_GROUP),
    ("socket_mode", env::DIND_SOCKET_MODE),
    ("stale_pid_dirs", env::DIND_STALE_PID_DIRS),
    ("storage_driver", env::DIND_STORAGE_DRIVER),
    ("storage_on_overlay", env::DIND_STORAGE_ON_OVERLAY),
    ("tls_key_type", env::DIND_TLS_KEY_TYPE),
];

/// The variable of the setting `id`, if it has one.
fn variable(id: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, var)| *var)
}

/// The command line, with each setting's variable named in the help and,
/// when `env` has it, as the setting's default: a flag still wins.
///
/// Not clap's `env` feature: it reads the process environment itself, as
/// the command is built, so tests could only pass variables by setting
/// them process-wide, where every other test reads them too.
fn command(env: Option<&dyn Env>) -> clap::Command {
    let with_variable = |arg: clap::Arg| {
        let Some(var) = variable(arg.get_id().as_str()) else {
            return arg;
        };
        let help = arg.get_help().map(|h| format!("{h} [env: {var}]"));
        let long = arg.get_long_help().map(|h| format!("{h}\n\n[env: {var}]"));
        let arg = match (help, long) {
            (Some(h), Some(l)) => arg.help(h).long_help(l),
            (Some(h), None) => arg.help(h),
            (None, _) => arg,
        };
        match env.and_then(|e| e.var(var)) {
            Some(value) => arg.default_value(value),
            None => arg,
        }
    };
    let mut cmd = Cli::command();
    for sub in ["run", "certs", "health"] {
        cmd = cmd.mut_subcommand(sub, |s| s.mut_args(with_variable));
    }
    cmd
}

/// Parses one of our subcommands, keeping clap's record of which settings
/// of `run` were given.
fn parse_ours(argv: Vec<OsString>, env: &dyn Env) -> Result<(Command, Given), clap::Error> {
    // Taken for unset, such a value would quietly become the default.
    if let Some((_, var)) = VARIABLES.iter().find(|(_, var)| env.is_not_unicode(var)) {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::InvalidUtf8,
            format!("{var} is not valid UTF-8; set it to a UTF-8 value or unset it\n"),
        ));
    }
    let cmd = command(Some(env));
    let mut matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if e.use_stderr() => return Err(name_the_variable(e, &cmd, &argv, env)),
        // Help shows the defaults, not what the environment made of them.
        Err(_) => return Err(command(None).try_get_matches_from(argv).unwrap_err()),
    };
    let given = match (
        matches.subcommand_matches("run"),
        cmd.find_subcommand("run"),
    ) {
        (Some(m), Some(run)) => Given::from_matches(run, m, env),
        _ => Given::default(),
    };
    let cli = Cli::from_arg_matches_mut(&mut matches)?;
    Ok((cli.command, given))
}

/// clap names the flag of a bad value; when the value came from the
/// flag's variable, the operator has to be told the variable instead.
fn name_the_variable(
    e: clap::Error,
    cmd: &clap::Command,
    argv: &[OsString],
    env: &dyn Env,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let Some(flag) = arg.split([' ', '=']).next().filter(|f| f.starts_with("--")) else {
        return e;
    };
    let on_command_line = argv.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    let var = cmd
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .find(|a| a.get_long() == Some(&flag[2..]))
        .and_then(|a| variable(a.get_id().as_str()));
    let (Some(var), false) = (var, on_command_line) else {
        return e;
    };
    if env.var(var).is_none() {
        return e;
    }
    let what = e.to_string();
    let what = what.lines().next().unwrap_or_default();
    let what = what.strip_prefix("error: ").unwrap_or(what);
    let valid = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(v)) if !v.is_empty() => format!(" (one of: {})", v.join(", ")),
        _ => String::new(),
    };
    clap::Error::raw(
        e.kind(),
        format!("{var}: {what}{valid}; set {var} to a valid value or unset it\n"),
    )
}

/// Sorts `argv` (with the program name first) into an [`Invocation`];
/// settings not on the command line are read from `env`.
pub fn parse(argv: Vec<OsString>, env: &dyn Env) -> Result<Invocation, clap::Error> {
    let first = argv.get(1).map(|a| a.to_string_lossy().into_owned());
    match first.as_deref() {
        None => run_with(argv[..1].to_vec(), Vec::new(), env),
        // A lone help or version flag is for us, not dockerd: nobody asks a
        // CI service for dockerd's help, and starting the whole supervisor
        // (certificates, sockets) by surprise is worse.
        Some("-h" | "--help" | "-V" | "--version") if argv.len() == 2 => {
            Err(command(None).try_get_matches_from(argv).unwrap_err())
        }
        Some(a) if a.starts_with('-') => run_with(argv[..1].to_vec(), lossy(&argv[1..]), env),
        Some("dockerd") => run_with(argv[..1].to_vec(), lossy(&argv[2..]), env),
        Some(a) if OURS.contains(&a) => match parse_ours(argv, env)? {
            (
                Command::Run {
                    settings,
                    dockerd_args,
                },
                given,
            ) => Ok(Invocation::Run {
                settings,
                given,
                dockerd_args,
            }),
            (Command::Certs(tls), _) => Ok(Invocation::Certs(tls)),
            (Command::Wait(w), _) => Ok(Invocation::Wait(w)),
            (Command::Health(h), _) => Ok(Invocation::Health(h)),
        },
        Some(_) => Ok(Invocation::Exec(argv[1..].to_vec())),
    }
}

/// `run` with settings from the environment only: the stock forms leave no
/// room for our flags on the command line.
fn run_with(
    prog: Vec<OsString>,
    dockerd_args: Vec<String>,
    env: &dyn Env,
) -> Result<Invocation, clap::Error> {
    let mut argv = prog;
    argv.push("run".into());
    let (Command::Run { settings, .. }, given) = parse_ours(argv, env)? else {
        unreachable!("parsed `run`")
    };
    Ok(Invocation::Run {
        settings,
        given,
        dockerd_args,
    })
}

fn lossy(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Certificate settings, shared by `run` and `certs`.
#[derive(Debug, Args, Clone)]
pub struct TlsArgs {
    /// Certificate directory; empty turns TLS off. Default: $DOCKER_TLS_CERTDIR, else /certs.
    #[arg(long, value_name = "DIR")]
    pub tls_certdir: Option<PathBuf>,
    /// Key type of the CA, server and client keys.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub tls_key_type: KeyType,
    /// Validity of newly issued certificates, in days.
    #[arg(long, default_value_t = 825,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub cert_validity_days: u32,
}

/// Everything `run` can be told; checked into a `Config` by `config.rs`.
#[derive(Debug, Args)]
pub struct Settings {
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Registry mirrors for dockerd (repeat, or comma/space separated).
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// Registries dockerd may reach without TLS verification (repeat, or comma/space separated).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Storage driver [default: overlay2, with a fallback when the data root sits on overlayfs].
    #[arg(long)]
    pub storage_driver: Option<String>,
    /// What to do when overlay2 cannot work because the data root is on overlayfs.
    #[arg(long, value_enum, default_value = "fallback")]
    pub storage_on_overlay: OnOverlayArg,
    /// MTU for dockerd's bridge: `auto` (the default route's, when below 1500) or a number.
    #[arg(long, default_value = "auto")]
    pub mtu: String,

    /// How long a stop may take before dockerd and everything left are killed.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// When to restart dockerd after it exits on its own.
    #[arg(long, value_enum, default_value = "on-failure")]
    pub restart: RestartPolicy,
    /// Restarts allowed in a row (a run Ready for 60 s resets the count); then exit non-zero.
    #[arg(long, default_value_t = 5)]
    pub restart_max: u32,
    /// How long dockerd may not answer its ping after Ready before it is killed and restarted; 0 = never.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub hang_timeout: Duration,

    /// Log format of the supervisor (dockerd's lines are re-emitted in it too).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Public API addresses (repeat, or comma separated) [default: 0.0.0.0:2376 with TLS, 0.0.0.0:2375 without].
    #[arg(long = "listen", value_delimiter = ',', value_name = "ADDR:PORT")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Mode of the unix socket served at DOCKER_HOST's path (octal).
    #[arg(long, default_value = "0660", value_parser = parse_mode)]
    pub socket_mode: u32,
    /// Group of that socket: a gid, or a name read from /etc/group (when it lacks the name, the socket is made 0666).
    #[arg(long, default_value = "docker")]
    pub socket_group: String,
    /// When the public API starts accepting: `start` (at once; requests wait until the engine answers)
    /// or `ready` (only once it answers, so that a TCP connect means the API works).
    #[arg(long, value_enum, default_value = "start")]
    pub listen_when: ListenWhenArg,
    /// How long a request waits for the engine to be ready (at start or after a restart), before 503.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub hold_timeout: Duration,
    /// How long dockerd's answer to an unversioned /_ping is reused (0s: forward every ping).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub ping_cache: Duration,
    /// Client connections open at once on all public endpoints together; more are closed at once.
    #[arg(long, default_value_t = proxy::forward::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Time to receive a whole request body the policy reads (at most 60s); slower ones get 408.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Request policy: `permissive`, `ci-safe`, or a TOML policy file that starts from one of them.
    #[arg(long, default_value = "permissive")]
    pub policy: String,
    /// Host paths that ci-safe allows to bind-mount (comma separated).
    #[arg(long, value_name = "DIRS")]
    pub policy_allow_binds: Option<String>,
    /// Audit log file (JSON lines); default: stderr.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,

    /// Plain-HTTP health endpoint (/livez, /readyz, /metrics, /status).
    #[arg(long, default_value = "0.0.0.0:2378")]
    pub health_addr: std::net::SocketAddr,

    /// Run dockerd with exactly the given flags: no proxy, policy, readiness gate, MTU, mirrors or
    /// private socket (what `dockerd FLAGS...` did before). Refused under a locked policy.
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new(),
          default_value = "false", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub bare_dockerd: bool,

    /// TCP addresses where dockerd itself listens, beside the proxy, with the service's server
    /// certificate: no policy, readiness gate or audit there. For benchmarks against dockerd's own
    /// TLS and for debugging; refused under a locked policy. `--host tcp://...` names the proxy's.
    #[arg(long, value_delimiter = ',', value_name = "ADDR:PORT")]
    pub dockerd_own_listen: Vec<std::net::SocketAddr>,

    /// dockerd binary, looked up on PATH.
    #[arg(long, default_value = DEFAULT_DOCKERD)]
    pub dockerd: PathBuf,
    /// dockerd's raw socket; jobs reach the engine through the proxy [default: <run dir>/dockerd/docker.sock, in a 0700 directory].
    #[arg(long)]
    pub dockerd_socket: Option<PathBuf>,
    /// Whether dockerd's socket, run directory and exec root may lie on a mount shared with other containers.
    #[arg(long, value_enum, default_value = "refuse")]
    pub dockerd_socket_shared: SharedArg,
    /// dockerd's data root (checked for overlay-on-overlay).
    #[arg(long, default_value = DEFAULT_DATA_ROOT)]
    pub data_root: PathBuf,
    /// Where the supervisor keeps generated files (daemon.json, iptables shims, dockerd's socket).
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// Directories searched (recursively) for stale docker*.pid files at start.
    #[arg(long, value_delimiter = ',', default_value = "/run,/var/run")]
    pub stale_pid_dirs: Vec<PathBuf>,
}

/// Defaults a lock compares against when the image pins nothing.
pub const DEFAULT_DOCKERD: &str = "dockerd";
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/docker";
pub const DEFAULT_RUN_DIR: &str = "/run/dind-supervisor";

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode like 0660"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOverlayArg {
    /// Use fuse-overlayfs if installed, else vfs, with a warning.
    Fallback,
    /// Refuse to start.
    Exit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SharedArg {
    /// Refuse to start (exit 78).
    Refuse,
    /// Start, with a warning: the operator wants it.
    Allow,
}

impl SharedArg {
    pub fn name(self) -> &'static str {
        match self {
            SharedArg::Refuse => "refuse",
            SharedArg::Allow => "allow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListenWhenArg {
    /// At once: requests are held until the engine answers.
    Start,
    /// Only once the engine answers.
    Ready,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `dind-supervisor wait`: wait until the Docker engine answers `/_ping`.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// The engine's address, overriding DOCKER_HOST: unix:///path or tcp://host[:port].
    #[arg(short = 'H', long, value_name = "URL")]
    pub host: Option<String>,
    /// Give up after this long (e.g. 90s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("dind-supervisor")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// Parses with no variables set.
    fn parse_bare(argv: Vec<OsString>) -> Result<Invocation, clap::Error> {
        parse(argv, &HashMap::new())
    }

    fn run_args(inv: Invocation) -> (Vec<String>, bool) {
        match inv {
            Invocation::Run {
                dockerd_args,
                settings,
                ..
            } => (dockerd_args, settings.bare_dockerd),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_runs_dockerd_with_defaults() {
        assert_eq!(run_args(parse_bare(argv(&[])).unwrap()), (vec![], false));
    }

    #[test]
    fn leading_flag_is_passed_to_dockerd_as_gitlab_command_does() {
        let (args, bare) = run_args(
            parse_bare(argv(&[
                "--registry-mirror",
                "https://mirror.example",
                "--debug",
            ]))
            .unwrap(),
        );
        assert_eq!(
            args,
            ["--registry-mirror", "https://mirror.example", "--debug"]
        );
        assert!(!bare);
    }

    #[test]
    fn a_lone_help_or_version_flag_is_ours() {
        for flag in ["--help", "-h", "--version", "-V"] {
            let err = parse_bare(argv(&[flag])).unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ),
                "{flag}"
            );
        }
        // With more flags they still go to dockerd.
        assert!(matches!(
            parse_bare(argv(&["--debug", "--help"])).unwrap(),
            Invocation::Run { .. }
        ));
    }

    #[test]
    fn dockerd_first_means_the_same_flags_with_our_features() {
        let (args, bare) =
            run_args(parse_bare(argv(&["dockerd", "-H", "unix:///x.sock"])).unwrap());
        assert_eq!(args, ["-H", "unix:///x.sock"]);
        assert!(!bare, "bare only when asked for");
        // The bare setting is a flag of `run` too, and boolish.
        for (flag, bare) in [
            (&["--bare-dockerd"][..], true),
            (&["--bare-dockerd=1"], true),
            (&["--bare-dockerd", "false"], false),
        ] {
            let mut a = vec!["run"];
            a.extend(flag);
            assert_eq!(run_args(parse_bare(argv(&a)).unwrap()).1, bare, "{flag:?}");
        }
        assert!(parse_bare(argv(&["run", "--bare-dockerd=maybe"])).is_err());
    }

    #[test]
    fn other_commands_are_executed() {
        match parse_bare(argv(&["sh", "-c", "echo hi"])).unwrap() {
            Invocation::Exec(a) => assert_eq!(a, ["sh", "-c", "echo hi"]),
            other => panic!("expected exec, got {other:?}"),
        }
        // A word that merely resembles ours is still a client command.
        assert!(matches!(
            parse_bare(argv(&["docker", "ps"])).unwrap(),
            Invocation::Exec(_)
        ));
    }

    #[test]
    fn run_takes_our_flags_and_dockerd_flags_after_the_separator() {
        let inv = parse_bare(argv(&[
            "run",
            "--mtu",
            "1400",
            "--restart",
            "never",
            "--shutdown-timeout",
            "3s",
            "--",
            "--debug",
        ]))
        .unwrap();
        let Invocation::Run {
            settings,
            dockerd_args,
            ..
        } = inv
        else {
            panic!()
        };
        assert_eq!(settings.mtu, "1400");
        assert_eq!(settings.restart, RestartPolicy::Never);
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(dockerd_args, ["--debug"]);
        assert!(!settings.bare_dockerd);
    }

    #[test]
    fn certs_subcommand_parses() {
        let inv = parse_bare(argv(&[
            "certs",
            "--tls-key-type",
            "rsa-2048",
            "--tls-certdir",
            "/tmp/c",
        ]))
        .unwrap();
        let Invocation::Certs(tls) = inv else {
            panic!()
        };
        assert_eq!(tls.tls_key_type, KeyType::Rsa2048);
        assert_eq!(
            tls.tls_certdir.as_deref(),
            Some(std::path::Path::new("/tmp/c"))
        );
    }

    fn given(inv: Invocation) -> Given {
        match inv {
            Invocation::Run { given, .. } => given,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn settings_given_on_the_command_line_are_told_from_defaults() {
        let g = given(
            parse_bare(argv(&[
                "run",
                "--policy",
                "ci-safe",
                "--policy-allow-binds=/builds",
                "--",
                "--debug",
            ]))
            .unwrap(),
        );
        assert_eq!(g.name("policy"), Some("--policy"));
        assert_eq!(g.name("policy_allow_binds"), Some("--policy-allow-binds"));
        assert_eq!(g.name("run_dir"), None, "a default is not given");
        assert_eq!(g.name("dockerd_args"), None);
    }

    #[test]
    fn settings_from_the_environment_are_named_by_their_variable_even_when_empty() {
        let env = HashMap::from([
            (env::DIND_POLICY, "ci-safe"),
            (env::DIND_POLICY_ALLOW_BINDS, ""),
            (env::DIND_LISTEN, "127.0.0.1:1,127.0.0.1:2"),
            (env::DIND_SHUTDOWN_TIMEOUT, "3s"),
            (env::DIND_BARE_DOCKERD, "1"),
            (env::DIND_TLS_KEY_TYPE, "rsa-2048"),
        ]);
        let Invocation::Run {
            settings, given, ..
        } = parse(argv(&["--debug"]), &env).unwrap()
        else {
            panic!("expected run")
        };
        assert_eq!(settings.policy, "ci-safe");
        assert_eq!(settings.policy_allow_binds.as_deref(), Some(""));
        assert_eq!(
            settings.listen,
            [
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            ],
            "split as on the command line"
        );
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(3));
        assert!(settings.bare_dockerd);
        assert_eq!(settings.tls.tls_key_type, KeyType::Rsa2048);
        assert_eq!(given.name("policy"), Some("DIND_POLICY"));
        assert_eq!(
            given.name("policy_allow_binds"),
            Some("DIND_POLICY_ALLOW_BINDS")
        );
        assert_eq!(given.name("tls_key_type"), Some("DIND_TLS_KEY_TYPE"));
        assert_eq!(given.name("mtu"), None);
    }

    #[test]
    fn a_flag_wins_over_its_variable() {
        let env = HashMap::from([(env::DIND_POLICY, "permissive"), (env::DIND_MTU, "1400")]);
        let Invocation::Run {
            settings, given, ..
        } = parse(argv(&["run", "--policy", "ci-safe"]), &env).unwrap()
        else {
            panic!("expected run")
        };
        assert_eq!(settings.policy, "ci-safe");
        assert_eq!(given.name("policy"), Some("--policy"));
        assert_eq!(settings.mtu, "1400");
        assert_eq!(given.name("mtu"), Some("DIND_MTU"));
    }

    #[test]
    fn other_subcommands_read_their_variables_from_the_same_env() {
        let env = HashMap::from([
            (env::DIND_HEALTH_ADDR, "127.0.0.1:9"),
            (env::DIND_CERT_VALIDITY_DAYS, "30"),
        ]);
        let Invocation::Health(h) = parse(argv(&["health"]), &env).unwrap() else {
            panic!("expected health")
        };
        assert_eq!(h.health_addr, "127.0.0.1:9".parse().unwrap());
        let Invocation::Certs(t) = parse(argv(&["certs"]), &env).unwrap() else {
            panic!("expected certs")
        };
        assert_eq!(t.cert_validity_days, 30);
    }

    #[test]
    fn a_bad_variable_stops_parsing_as_a_bad_flag_does() {
        for (var, value) in [
            (env::DIND_RESTART, "sometimes"),
            (env::DIND_RUN_DIR, ""),
            (env::DIND_AUDIT_LOG, ""),
            (env::DIND_CERT_VALIDITY_DAYS, "0"),
            (env::DIND_BARE_DOCKERD, "maybe"),
        ] {
            let env = HashMap::from([(var, value)]);
            let err = parse(argv(&[]), &env).unwrap_err();
            assert!(err.use_stderr(), "{var}={value:?}");
            assert!(
                err.to_string().starts_with(&format!("error: {var}: ")),
                "{err}"
            );
            assert_eq!(err.to_string().lines().count(), 1, "{err}");
        }
        // The flag's value is the flag's fault, whatever the variable says.
        let env = HashMap::from([(env::DIND_RESTART, "never")]);
        let err = parse(argv(&["run", "--restart", "sometimes"]), &env).unwrap_err();
        assert!(!err.to_string().contains("DIND_RESTART"), "{err}");
    }

    #[test]
    fn a_variable_that_is_not_unicode_stops_parsing_instead_of_reading_as_unset() {
        struct Bad;
        impl Env for Bad {
            fn var(&self, _: &str) -> Option<String> {
                None
            }
            fn is_not_unicode(&self, name: &str) -> bool {
                name == env::DIND_DATA_ROOT
            }
        }
        let err = parse(argv(&[]), &Bad).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidUtf8);
        assert!(err.to_string().contains("DIND_DATA_ROOT"), "{err}");
    }

    #[test]
    fn every_variable_is_a_setting_named_in_the_help() {
        let cmd = command(None);
        let mut help = String::new();
        for sub in ["run", "certs", "health"] {
            let mut s = cmd.find_subcommand(sub).unwrap().clone();
            help.push_str(&s.render_long_help().to_string());
        }
        for (id, var) in VARIABLES {
            assert!(
                help.contains(&format!("[env: {var}]")),
                "{id}: {var} not in help"
            );
        }
        // The help shows the defaults, not what a variable made of them.
        let env = HashMap::from([(env::DIND_MTU, "1234")]);
        let err = parse(argv(&["run", "--help"]), &env).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = err.to_string();
        assert!(text.contains("[default: auto]") && !text.contains("1234"));
    }

    #[test]
    fn bad_setting_is_a_clap_error_not_a_panic() {
        assert!(parse_bare(argv(&["run", "--restart", "sometimes"])).is_err());
        // An empty path (DIND_RUN_DIR="" too) stops here: nothing starts.
        assert!(parse_bare(argv(&["run", "--run-dir", ""])).is_err());
        assert!(parse_bare(argv(&["run", "--dockerd-socket", ""])).is_err());
    }
}
