//! Starting dockerd: host preparation, its command line, its output, and
//! the probe that tells when it answers.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

pub use proxy::upstream::Pong;

use crate::config;
use crate::daemon_json::{self, UserConfig};
use crate::dockerd_flags;
use crate::iptables;
use crate::mtu::{self, MtuSetting};
use crate::storage;

/// How many of dockerd's last stderr lines are kept for the crash report.
const TAIL_LINES: usize = 20;
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the probe reports that dockerd still does not answer.
const SLOW_START_REPORT: Duration = Duration::from_secs(10);

/// Everything needed to start (and restart) dockerd, decided once.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// PATH for dockerd, when the iptables choice needs shims in front.
    pub path_env: Option<String>,
    /// `DOCKER_DRIVER` for dockerd when ours was set: the storage choice,
    /// which replaces an overlay2 that cannot work (`storage::from_env`).
    pub docker_driver: Option<String>,
    /// The MTU the proxy adds to networks clients create, for a dockerd
    /// without `default-network-opts` (`mtu::networks`).
    pub proxy_network_mtu: Option<u32>,
    pub socket: PathBuf,
    pub stale_pid_dirs: Vec<PathBuf>,
    /// dockerd keeps containers running across its own restarts
    /// (`live-restore`); without it, what a dead dockerd left is stopped by
    /// the next one anyway.
    pub live_restore: bool,
}

/// A started dockerd. Its exit status is collected by the reaper, never here.
pub struct Running {
    pub pid: Pid,
    /// On tokio's clock, which the supervisor's tests pause.
    pub started: tokio::time::Instant,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Resolves when the stderr relay has read to the end of the pipe.
    stderr_closed: Option<oneshot::Receiver<()>>,
    /// The readiness probe; aborted when this dockerd is gone.
    probe: tokio::task::JoinHandle<()>,
}

impl Running {
    /// A dockerd that only a test's fake system (`system/fake.rs`) runs.
    #[cfg(test)]
    pub(crate) fn fake(pid: Pid) -> Running {
        Running {
            pid,
            started: tokio::time::Instant::now(),
            tail: Default::default(),
            stderr_closed: None,
            probe: tokio::spawn(async {}),
        }
    }

    /// Waits, at most `limit`, until the relay has read dockerd's stderr to
    /// its end, so that the tail holds its last words: the reaper can see
    /// dockerd's exit before the relay has read what it wrote just before
    /// (on a loaded machine). A process that inherited the pipe
    /// (containerd) may hold it open, hence the limit.
    pub async fn stderr_drained(&mut self, limit: Duration) {
        if let Some(closed) = self.stderr_closed.take() {
            let _ = tokio::time::timeout(limit, closed).await;
        }
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// dockerd's last complaint on stderr: what a held client is told
    /// (`proxy::respond`) when this dockerd is gone.
    pub fn last_error(&self) -> Option<String> {
        last_error(&self.stderr_tail())
    }
}

/// Longest error line passed on to clients; dockerd's are one sentence.
const LAST_ERROR_MAX: usize = 300;

/// The last line at level error or worse, or the last plain-text line (a
/// Go panic, a wrapper script's message); never ordinary chatter, which
/// would mislead more than it tells.
fn last_error(tail: &[String]) -> Option<String> {
    let text = tail.iter().rev().find_map(|line| {
        let line = line.trim();
        let (level, text) = parse_logrus(line);
        let plain = !line.starts_with("time=") && !line.starts_with("level=");
        (!text.is_empty() && (plain || matches!(level, "error" | "fatal" | "panic")))
            .then_some(text)
    })?;
    // logrus quotes the message: `msg="failed to start daemon: …"`.
    let text = text
        .strip_prefix("msg=\"")
        .map(|m| m.strip_suffix('"').unwrap_or(m))
        .unwrap_or(text);
    Some(text.chars().take(LAST_ERROR_MAX).collect())
}

impl Drop for Running {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

/// Time dockerd keeps for itself after its containers' stop timeout: stopping
/// containerd, unmounting, removing the socket.
const DOCKERD_OWN_SHUTDOWN: Duration = Duration::from_secs(2);

/// Readies the host and decides dockerd's command line: stale pid files,
/// iptables backend, storage driver, MTU, registries, BuildKit entitlements
/// and daemon.json merge.
/// Runs before supervision starts, so the helper processes it may run are
/// waited for here and never meet the reaper.
/// `cgroup_parent` is where the cgroup nesting wants dockerd's containers.
pub fn prepare(
    cfg: &config::Dockerd,
    shutdown_timeout: Duration,
    cgroup_parent: Option<String>,
) -> anyhow::Result<Prepared> {
    remove_stale_pid_files(&cfg.stale_pid_dirs);
    let path = &cfg.path;

    let ipt = iptables::choose(
        cfg.iptables_legacy.as_deref(),
        path,
        &cfg.run_dir.join("iptables"),
    )
    .context("choosing the iptables backend")?;
    tracing::info!(backend = %ipt.backend, reason = %ipt.reason, "iptables backend");

    // Read once: the storage choice, the merge and our own flags all
    // decide on the same file.
    let user_config = daemon_json::load(&cfg.user_args, Path::new(daemon_json::DEFAULT_CONFIG));
    if cfg.bare {
        // The file is dockerd's alone here: a bad one is for it to report.
        let live_restore = daemon_json::live_restore(&cfg.user_args, user_config.as_ref().ok());
        tracing::warn!(args = ?cfg.user_args, "DIND_BARE_DOCKERD: running dockerd with exactly the given flags, without the proxy, its policy and the readiness gate");
        return Ok(Prepared {
            program: cfg.program.clone(),
            args: cfg.user_args.clone(),
            path_env: ipt.path_env,
            docker_driver: None,
            proxy_network_mtu: None,
            socket: cfg.socket.clone(),
            stale_pid_dirs: cfg.stale_pid_dirs.clone(),
            live_restore,
        });
    }
    let user_config = user_config?;
    let live_restore = daemon_json::live_restore(&cfg.user_args, Some(&user_config));
    let helpers_path = ipt.path_env.as_deref().unwrap_or(path);
    let storage = choose_storage(cfg, &user_config, helpers_path)?;
    let (mtu, networks) = choose_mtu(cfg, helpers_path);
    let explicit_mtu = cfg.mtu != MtuSetting::Auto;

    let wanted = daemon_json::Wanted {
        registry_mirrors: cfg.registry_mirrors.clone(),
        insecure_registries: cfg.insecure_registries.clone(),
        storage_driver: (!storage.explicit).then(|| {
            daemon_json::Scalar::new(storage.driver.clone(), cfg.storage_driver.is_some())
        }),
        mtu: mtu.mtu.map(|n| daemon_json::Scalar::new(n, explicit_mtu)),
        network_mtu: match networks {
            mtu::NetworkMtu::Dockerd(n) => Some(daemon_json::Scalar::new(n, explicit_mtu)),
            _ => None,
        },
        cgroup_parent: cgroup_parent.map(|p| daemon_json::Scalar::new(p, false)),
        deny_entitlements: cfg.deny_entitlements.clone(),
    };
    let plan = daemon_json::plan(
        &wanted,
        &cfg.user_args,
        &user_config,
        &cfg.run_dir.join("daemon.json"),
    )?;
    apply_plan(&plan)?;

    let mut args = our_flags(cfg, &user_config, shutdown_timeout);
    args.extend(plan.dockerd_args(&cfg.user_args));
    tracing::info!(?args, "dockerd command line");
    Ok(Prepared {
        program: cfg.program.clone(),
        args,
        path_env: ipt.path_env,
        docker_driver: storage.env,
        proxy_network_mtu: match networks {
            mtu::NetworkMtu::Proxy(n) => Some(n),
            _ => None,
        },
        socket: cfg.socket.clone(),
        stale_pid_dirs: cfg.stale_pid_dirs.clone(),
        live_restore,
    })
}

/// The storage driver, from `DOCKER_DRIVER`, the user's flags and
/// daemon.json, our setting and the data root's filesystem.
fn choose_storage(
    cfg: &config::Dockerd,
    user_config: &UserConfig,
    path_env: &str,
) -> anyhow::Result<storage::StorageChoice> {
    let storage = storage::choose(
        &storage::Request {
            env: cfg.docker_driver.as_deref(),
            explicit: daemon_json::explicit_storage_driver(&cfg.user_args, user_config)?.as_deref(),
            requested: cfg.storage_driver.as_deref(),
            on_overlay: cfg.storage_on_overlay,
        },
        &cfg.data_root,
        path_env,
    )?;
    tracing::info!(driver = %storage.driver, reason = %storage.reason, "storage driver");
    Ok(storage)
}

/// The default bridge's MTU, and who gives it to networks created later
/// (dockerd's version is asked only when there is an MTU to give).
fn choose_mtu(cfg: &config::Dockerd, path_env: &str) -> (mtu::MtuChoice, mtu::NetworkMtu) {
    let mtu = mtu::choose(cfg.mtu, mtu::detect());
    tracing::info!(reason = %mtu.reason, "mtu");
    let major = mtu.mtu.and_then(|_| dockerd_major(&cfg.program, path_env));
    let networks = mtu::networks(mtu.mtu, major);
    log_network_mtu(networks, major);
    (mtu, networks)
}

/// Logs the plan's decisions and writes its config file, if any.
fn apply_plan(plan: &daemon_json::Plan) -> anyhow::Result<()> {
    for note in &plan.notes {
        tracing::info!("{note}");
    }
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    Ok(daemon_json::apply(plan)?)
}

/// How long `dockerd --version` may take; a wrapper script that ignores
/// its arguments must not hold up the start.
const VERSION_TIMEOUT: Duration = Duration::from_secs(3);

/// dockerd's major version from `dockerd --version` (well under a second);
/// None when it cannot be read in [`VERSION_TIMEOUT`].
fn dockerd_major(program: &Path, path_env: &str) -> Option<u32> {
    let mut child = Command::new(program)
        .arg("--version")
        .env("PATH", path_env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    // One short line: it fits the pipe, so the child never blocks on it.
    while child.try_wait().ok()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut line = String::new();
    io::Read::read_to_string(&mut child.stdout.take()?, &mut line).ok()?;
    mtu::dockerd_major(&line)
}

/// One line on how networks created later get the MTU.
fn log_network_mtu(networks: mtu::NetworkMtu, major: Option<u32>) {
    let version = major.map_or_else(|| "of unknown version".to_owned(), |v| v.to_string());
    match networks {
        mtu::NetworkMtu::Keep => {}
        mtu::NetworkMtu::Dockerd(n) => tracing::info!(
            mtu = n,
            "networks created later get this MTU from dockerd {version} (default-network-opts)"
        ),
        mtu::NetworkMtu::Proxy(n) => tracing::info!(
            mtu = n,
            "dockerd {version} has no default-network-opts: the proxy adds {} to bridge networks created through it; networks created on dockerd's own socket keep 1500",
            proxy::network_mtu::MTU_OPTION
        ),
    }
}

/// The flags we always give dockerd: its private socket, and the data root
/// and stop timeout unless the user's flags or daemon.json set them.
pub(crate) fn our_flags(
    cfg: &config::Dockerd,
    user_config: &UserConfig,
    shutdown_timeout: Duration,
) -> Vec<String> {
    let unset = |flag: &str, key: &str| {
        dockerd_flags::flag_value(&cfg.user_args, flag, None).is_none()
            && user_config.get(key).is_none()
    };
    let mut args = vec![format!("--host=unix://{}", cfg.socket.display())];
    args.extend(cfg.own_listen.iter().map(|a| format!("--host=tcp://{a}")));
    if let (false, Some(p)) = (cfg.own_listen.is_empty(), &cfg.own_tls) {
        args.push("--tlsverify".into());
        for (flag, path) in [
            ("--tlscacert", p.server_ca()),
            ("--tlscert", p.server_cert()),
            ("--tlskey", p.server_key()),
        ] {
            args.push(format!("{flag}={}", path.display()));
        }
    }
    if unset("--data-root", "data-root") && cfg.data_root != Path::new(storage::DEFAULT_DATA_ROOT) {
        args.push(format!("--data-root={}", cfg.data_root.display()));
    }
    // dockerd stops containers with its own timeout (15 s by default), which
    // would outlast `docker stop`'s 10 s grace; give it our deadline minus
    // the time it needs for itself, unless the user chose one.
    if unset("--shutdown-timeout", "shutdown-timeout") {
        let secs = shutdown_timeout
            .saturating_sub(DOCKERD_OWN_SHUTDOWN)
            .as_secs()
            .max(1);
        args.push(format!("--shutdown-timeout={secs}"));
    }
    args
}

/// Starts dockerd in its own process group (a terminal's Ctrl-C must reach
/// it once, through us) with its output piped into our log. Returns the
/// process and a receiver that fires when it first answers `/_ping`.
pub fn spawn(p: &Prepared) -> io::Result<(Running, oneshot::Receiver<Pong>)> {
    let mut cmd = Command::new(&p.program);
    cmd.args(&p.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(path) = &p.path_env {
        cmd.env("PATH", path);
    }
    if let Some(driver) = &p.docker_driver {
        cmd.env(crate::env::DOCKER_DRIVER, driver);
    }
    // std's Child is dropped without waiting: the reaper owns the status.
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    // dockerd runs from here on: a relay that cannot be set up costs its
    // log lines, never a second dockerd.
    // The stderr relay drops `closed_tx` at the pipe's end; so does a relay
    // that cannot be set up, at once.
    let (closed_tx, closed_rx) = oneshot::channel();
    let streams = [
        (child.stdout.take().map(OwnedFd::from), "stdout", None, None),
        (
            child.stderr.take().map(OwnedFd::from),
            "stderr",
            Some(tail.clone()),
            Some(closed_tx),
        ),
    ];
    for (fd, name, tail, closed) in streams {
        match fd.map(pipe::Receiver::from_owned_fd) {
            Some(Ok(rx)) => relay(rx, tail, closed),
            Some(Err(e)) => {
                tracing::warn!(stream = name, error = %e, "cannot relay dockerd's output")
            }
            None => {}
        }
    }
    let (tx, rx) = oneshot::channel();
    let probe = tokio::spawn(probe(p.socket.clone(), tx));
    Ok((
        Running {
            pid,
            started: tokio::time::Instant::now(),
            tail,
            stderr_closed: Some(closed_rx),
            probe,
        },
        rx,
    ))
}

/// Polls `/_ping` until dockerd answers, then reports once.
async fn probe(socket: PathBuf, tx: oneshot::Sender<Pong>) {
    let started = Instant::now();
    let mut next_report = started + SLOW_START_REPORT;
    loop {
        let err = match proxy::upstream::ping(&socket, PROBE_TIMEOUT).await {
            Ok(pong) => {
                let _ = tx.send(pong);
                return;
            }
            Err(e) => e,
        };
        if Instant::now() >= next_report {
            tracing::warn!(
                waited_s = started.elapsed().as_secs(),
                last_error = %err,
                "dockerd does not answer yet"
            );
            next_report += SLOW_START_REPORT;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Re-emits one of dockerd's output streams line by line, marked as
/// dockerd's, at the level dockerd gave the line. The task ends at EOF,
/// and drops `closed` then.
fn relay(
    rx: pipe::Receiver,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    closed: Option<oneshot::Sender<()>>,
) {
    tokio::spawn(async move {
        let _closed = closed;
        let mut lines = BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let (level, text) = parse_logrus(&line);
            // containerd's gRPC chatter says nothing a CI user needs.
            let level = if text.contains("module=grpc") {
                "debug"
            } else {
                level
            };
            match level {
                "error" | "fatal" | "panic" => tracing::error!(target: "dockerd", "{text}"),
                "warning" | "warn" => tracing::warn!(target: "dockerd", "{text}"),
                "debug" | "trace" => tracing::debug!(target: "dockerd", "{text}"),
                _ => tracing::info!(target: "dockerd", "{text}"),
            }
            if let Some(tail) = &tail {
                if let Ok(mut t) = tail.lock() {
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        }
    });
}

/// Splits a logrus text line (`time="..." level=info msg="..."`) into its
/// level and the rest without the timestamp, which our own log adds.
fn parse_logrus(line: &str) -> (&str, &str) {
    let rest = match line.strip_prefix("time=\"") {
        Some(r) => r.split_once("\" ").map_or(line, |(_, r)| r),
        None => line,
    };
    match rest.strip_prefix("level=") {
        Some(r) => r.split_once(' ').unwrap_or((r, "")),
        None => ("info", rest),
    }
}

/// Removes `docker*.pid` files below `dirs`, as the stock entrypoint does
/// with `find /run /var/run -iname 'docker*.pid' -delete`: a pid file left
/// by a killed dockerd or containerd can stop the next one from starting.
pub fn remove_stale_pid_files(dirs: &[PathBuf]) {
    for dir in dirs {
        walk_pid_files(dir, 0);
    }
}

fn walk_pid_files(dir: &Path, depth: usize) {
    // /var/run is usually a symlink to /run; symlinks are not followed, so
    // each file is seen once. Depth is bounded against pathological trees.
    if depth > 8 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            walk_pid_files(&path, depth + 1);
        } else if ft.is_file() && is_docker_pid_file(&entry.file_name()) {
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed stale pid file"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove stale pid file")
                }
            }
        }
    }
}

fn is_docker_pid_file(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_lowercase();
    name.starts_with("docker") && name.ends_with(".pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("dockerd");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn dockerd_major_asks_dockerd_and_a_hung_wrapper_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(
            dir.path(),
            r#"[ "$1" = --version ] && echo "Docker version 24.0.7, build 311b9ff""#,
        );
        assert_eq!(dockerd_major(&ok, "/usr/bin:/bin"), Some(24));
        // A wrapper that ignores its arguments (a test's late dockerd).
        let hung = script(dir.path(), "exec sleep 600");
        assert_eq!(dockerd_major(&hung, "/usr/bin:/bin"), None);
        assert_eq!(
            dockerd_major(Path::new("/nonexistent/dockerd"), "/usr/bin:/bin"),
            None
        );
    }

    #[test]
    fn logrus_lines_keep_level_and_drop_timestamp() {
        assert_eq!(
            parse_logrus(r#"time="2026-11-26T10:00:00Z" level=warning msg="no bridge""#),
            ("warning", r#"msg="no bridge""#)
        );
        assert_eq!(parse_logrus("plain text"), ("info", "plain text"));
    }

    #[test]
    fn the_last_error_is_dockerds_last_complaint_not_its_last_chatter() {
        let tail = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert_eq!(
            last_error(&tail(&[
                r#"time="t" level=info msg="Starting up""#,
                r#"time="t" level=fatal msg="failed to start daemon: error initializing graphdriver: no space left""#,
                r#"time="t" level=info msg="stopping event stream""#,
            ])),
            Some("failed to start daemon: error initializing graphdriver: no space left".into())
        );
        assert_eq!(
            last_error(&tail(&["exec: boom", ""])),
            Some("exec: boom".into())
        );
        assert_eq!(
            last_error(&tail(&[r#"time="t" level=info msg="API listen on /x""#])),
            None
        );
        assert_eq!(last_error(&[]), None);
        let long = "x".repeat(1000);
        assert_eq!(
            last_error(&tail(&[&long])).map(|l| l.len()),
            Some(LAST_ERROR_MAX)
        );
    }

    /// Regression: under load the reaper saw a failing dockerd's exit before
    /// the relay had read its last line, and held clients were told only
    /// "dockerd exit status 1" instead of why.
    #[tokio::test]
    async fn a_dead_dockerds_last_words_are_read_before_its_tail_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = Prepared {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                r#"echo 'level=fatal msg="disk quota exceeded"' >&2; exit 1"#.into(),
            ],
            path_env: None,
            docker_driver: None,
            proxy_network_mtu: None,
            socket: dir.path().join("docker.sock"),
            stale_pid_dirs: Vec::new(),
            live_restore: false,
        };
        let (mut running, _ready) = spawn(&p).unwrap();
        // Blocks this runtime's only thread: the relay has not run yet, as
        // when the exit and the last write reach the loop in one wake-up.
        let status = nix::sys::wait::waitpid(running.pid, None).unwrap();
        assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 1)));
        running.stderr_drained(Duration::from_secs(5)).await;
        assert_eq!(running.last_error().as_deref(), Some("disk quota exceeded"));
    }

    #[test]
    fn stale_pid_files_are_removed_recursively_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("docker/containerd");
        fs::create_dir_all(&nested).unwrap();
        for f in ["docker.pid", "Docker-Foo.PID"] {
            fs::write(dir.path().join(f), "1").unwrap();
        }
        fs::write(nested.join("dockerd.pid"), "1").unwrap();
        fs::write(dir.path().join("containerd.pid"), "1").unwrap();
        fs::write(dir.path().join("docker.sock.pid.bak"), "1").unwrap();
        remove_stale_pid_files(&[dir.path().to_owned()]);
        assert!(!dir.path().join("docker.pid").exists());
        assert!(!dir.path().join("Docker-Foo.PID").exists());
        assert!(!nested.join("dockerd.pid").exists());
        assert!(dir.path().join("containerd.pid").exists());
        assert!(dir.path().join("docker.sock.pid.bak").exists());
    }
}
