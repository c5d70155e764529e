//! Helpers shared by the integration tests: the real binary, a private
//! dockerd per test, and the docker CLI pointed at it.
//!
//! Every test runs as root against the real engine. A test that cannot run
//! (not root, no dockerd) fails with the reason; none passes silently.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The supervisor binary under test: `DIND_SUPERVISOR_BIN`, else the release
/// build, else the debug build of this workspace.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DIND_SUPERVISOR_BIN") {
        // Canonical, so it compares equal to /proc/PID/exe.
        return PathBuf::from(&p)
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(p));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-gnu");
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("dind-supervisor");
        if let Ok(p) = p.canonicalize() {
            return p;
        }
    }
    panic!("dind-supervisor is not built: run `cargo build --release -p dind-supervisor` first (or set DIND_SUPERVISOR_BIN)");
}

/// The debug build of the supervisor, for the hooks only debug builds have
/// (`X-Dind-Fault`): `DIND_SUPERVISOR_DEBUG_BIN`, else this workspace's.
/// scripts/test.sh builds it; a test that needs it fails loudly without.
pub fn debug_binary() -> PathBuf {
    let p = std::env::var_os("DIND_SUPERVISOR_DEBUG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/x86_64-unknown-linux-gnu/debug/dind-supervisor")
        });
    p.canonicalize().unwrap_or_else(|_| {
        panic!(
            "{} is missing: run `cargo build -p dind-supervisor` first",
            p.display()
        )
    })
}

/// Fails the test loudly when the machine cannot run it.
pub fn require_root_and_engine() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "integration tests need root (they start dockerd)"
    );
    assert!(
        which("dockerd").is_some(),
        "dockerd is not on PATH: install Debian's docker.io (the README's test command does)"
    );
    assert!(which("docker").is_some(), "the docker CLI is not on PATH");
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A scratch directory with a short path (unix socket paths are limited to
/// 108 bytes and containerd nests sockets under the exec root).
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dsv")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp")
}

/// One supervisor process with its own dockerd, data root, exec root,
/// sockets and certificates, so tests can run side by side.
pub struct Service {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// The threads copying the supervisor's stdout and stderr into `log`.
    readers: Vec<thread::JoinHandle<()>>,
    /// dockerd's raw socket.
    raw_socket: PathBuf,
    /// The proxy's TCP port on 127.0.0.1 (TLS unless TLS is off).
    pub port: u16,
    /// The health endpoint's port on 127.0.0.1.
    pub health_port: u16,
    /// The supervisor binary it runs.
    program: PathBuf,
}

/// How a [`Service`] is started.
#[derive(Default)]
pub struct ServiceOptions {
    pub env: Vec<(String, String)>,
    pub dockerd_args: Vec<String>,
    /// Wrap the supervisor so it runs as PID 1 of a new pid namespace.
    pub as_pid1: bool,
    /// Run in a mount namespace of its own where the image's policy file
    /// (`/etc/dind-supervisor/policy.toml`) holds this text, followed by a
    /// `[supervisor]` table that pins this service's run directory and
    /// data root. dockerd's socket is then the default one under the run
    /// directory, and DOCKER_HOST is not set.
    pub image_policy: Option<String>,
    /// Shell lines run in the service's mount namespace before it starts
    /// (`$D` is the service's directory): a bind mount that plays a shared
    /// volume. Implies the namespace of `image_policy`, without the file
    /// unless that is set.
    pub namespace_setup: Vec<String>,
    /// The service's whole `command:` instead of the leading dockerd
    /// flags (which then go nowhere).
    pub command: Option<Vec<String>>,
    /// Another supervisor binary than [`binary`] (the debug build, for
    /// hooks only it has).
    pub binary: Option<PathBuf>,
}

/// Runs `$@` in a fresh mount namespace (under `unshare -m`): /run (where
/// /var/run points) is a tmpfs, so /var/run/docker.sock is the service's
/// own; with `$D/image-policy.toml`, /etc is an overlay that adds it as
/// /etc/dind-supervisor/policy.toml (mounts under /etc kept), so the host's
/// /etc is never written. `$2` is extra setup, run with `$D` set.
const NAMESPACE_SCRIPT: &str = r#"set -e
D=$1; setup=$2; shift 2
mkdir -p "$D/ns"
mount -t tmpfs -o mode=0700 dsv-ns "$D/ns"
if [ -f "$D/image-policy.toml" ]; then
  mkdir -p "$D/ns/upper/dind-supervisor" "$D/ns/work" "$D/ns/etc"
  cp "$D/image-policy.toml" "$D/ns/upper/dind-supervisor/policy.toml"
  subs=$(awk '$5 ~ /^\/etc\// {print $5}' /proc/self/mountinfo)
  mount --rbind /etc "$D/ns/etc"
  mount -t overlay dsv-etc -o "lowerdir=/etc,upperdir=$D/ns/upper,workdir=$D/ns/work" /etc
  for m in $subs; do mount --bind "$D/ns/etc${m#/etc}" "$m"; done
fi
mount -t tmpfs -o mode=0755 dsv-run "$(readlink -f /var/run)"
eval "$setup"
exec "$@"
"#;

impl Service {
    pub fn start(opts: ServiceOptions) -> Service {
        require_root_and_engine();
        let dir = short_tempdir();
        Service::start_in(dir, opts)
    }

    /// [`Service::start_in`] with only environment variables.
    pub fn start_with_env(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Service {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Service::start_in(
            dir,
            ServiceOptions {
                env,
                ..Default::default()
            },
        )
    }

    pub fn start_in(dir: tempfile::TempDir, opts: ServiceOptions) -> Service {
        let d = dir.path();
        for sub in ["run", "exec", "data"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let namespace = opts.image_policy.is_some() || !opts.namespace_setup.is_empty();
        let program = opts.binary.clone().unwrap_or_else(binary);
        let mut cmd = if namespace {
            if let Some(text) = &opts.image_policy {
                let pins = format!(
                    "\n[supervisor]\nrun_dir = {:?}\ndata_root = {:?}\n",
                    d.join("run").display().to_string(),
                    d.join("data").display().to_string()
                );
                fs::write(d.join("image-policy.toml"), format!("{text}{pins}")).unwrap();
            }
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                NAMESPACE_SCRIPT,
                "sh",
            ])
            .arg(d)
            .arg(opts.namespace_setup.join("\n"))
            .arg(&program);
            c
        } else if opts.as_pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let raw_socket = if opts.image_policy.is_some() {
            d.join("run/dockerd/docker.sock")
        } else {
            // Never the host's /var/run/docker.sock: the proxy's default.
            cmd.env("DIND_DOCKERD_SOCKET", d.join("docker.sock")).env(
                "DOCKER_HOST",
                format!("unix://{}", d.join("api.sock").display()),
            );
            d.join("docker.sock")
        };
        match &opts.command {
            Some(command) => {
                cmd.args(command);
            }
            None => {
                // The leading-flag form: exactly how a GitLab service passes flags.
                cmd.arg(format!("--exec-root={}", d.join("exec").display()))
                    .arg(format!("--pidfile={}", d.join("run/docker.pid").display()))
                    .arg("--bridge=none")
                    .arg("--iptables=false")
                    .args(&opts.dockerd_args);
            }
        }
        if opts.image_policy.is_some() {
            cmd.env_remove("DOCKER_HOST");
        }
        cmd.env("DOCKER_TLS_CERTDIR", d.join("certs"))
            .env("DIND_DATA_ROOT", d.join("data"))
            .env("DIND_RUN_DIR", d.join("run"))
            .env("DIND_STALE_PID_DIRS", d.join("run"))
            .env("DIND_LOG_LEVEL", "info")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let [(port, api), (health_port, health)] = [held_port(), held_port()];
        cmd.env("DIND_LISTEN", format!("127.0.0.1:{port}"))
            .env("DIND_HEALTH_ADDR", format!("127.0.0.1:{health_port}"));
        hand_over(&mut cmd, [api, health]);
        let mut child = cmd.spawn().expect("start dind-supervisor");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            readers.push(thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("DIND_TEST_ECHO").is_some() {
                        eprintln!("[svc] {line}");
                    }
                    log.lock().unwrap().push(line);
                }
            }));
        }
        Service {
            dir,
            child: Some(child),
            log,
            readers,
            raw_socket,
            port,
            health_port,
            program,
        }
    }

    /// dockerd's raw socket (tests reach it directly, jobs never).
    pub fn socket(&self) -> PathBuf {
        self.raw_socket.clone()
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// The pid of the supervisor itself (inside `unshare`, it is the
    /// wrapper's child).
    pub fn supervisor_pid(&self) -> Pid {
        let outer = self.pid();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let exe = fs::read_link(format!("/proc/{outer}/exe")).ok();
            if exe.as_deref() == Some(self.program.as_path()) {
                return outer;
            }
            if let Some(c) = children(outer).first() {
                return *c;
            }
            assert!(
                Instant::now() < deadline,
                "no supervisor process under {outer}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The dockerd the supervisor runs now (its child named `dockerd`).
    pub fn dockerd_pid(&self) -> Pid {
        children(self.supervisor_pid())
            .into_iter()
            .find(|p| {
                fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "dockerd")
            })
            .expect("dockerd is a child of the supervisor")
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until the log has `n` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.log_count(needle) < n {
            assert!(
                Instant::now() < deadline,
                "no {n}× {needle:?} in the supervisor log within {limit:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn wait_ready(&self) {
        self.wait_log("engine ready", 1, Duration::from_secs(60));
    }

    /// Runs the docker CLI against this service's private socket.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .stdin(Stdio::null())
            .output()
            .expect("run docker CLI")
    }

    /// Like [`Service::docker`], asserting success; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n{}\n--- supervisor log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads the tiny busybox test image into this engine.
    pub fn load_busybox(&self) -> &'static str {
        let tar = busybox_rootfs_tar();
        let out = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["import", "--change", "CMD [\"sh\"]"])
            .arg(tar)
            .arg(BUSYBOX_IMAGE)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        BUSYBOX_IMAGE
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.supervisor_pid(), sig).expect("signal supervisor");
    }

    /// Waits for the supervisor (or its unshare wrapper) to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                let took = started.elapsed();
                // Let the readers take in the last lines (bounded: a leftover
                // descendant could hold the pipe open).
                let until = Instant::now() + Duration::from_secs(2);
                while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(10));
                }
                return (status, took);
            }
            assert!(
                started.elapsed() < limit,
                "supervisor still running after {limit:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Leave nothing behind, even when a test failed half-way.
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd may leave mounts under the data and exec roots.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

impl Service {
    /// The docker CLI `cli` against the proxy's mutual-TLS port with the
    /// client certificates the service minted, as a CI job would use it.
    pub fn tls_cli(&self, cli: &Path) -> Command {
        let mut c = Command::new(cli);
        c.env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", self.port))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", self.certs().join("client"))
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    /// `GET path` on the health endpoint: (status, body).
    pub fn health(&self, path: &str) -> (u16, String) {
        http_get(&format!("127.0.0.1:{}", self.health_port), path)
    }
}

/// A minimal HTTP/1.0 GET with std only: status and body; status 0 when
/// nothing listens.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A loopback TCP socket, bound but not listening, and its port: the port
/// is held from here on, so no test running beside this one can take it
/// (a port found free and released could be), and it refuses connections
/// until the service listens on it.
fn held_port() -> (u16, OwnedFd) {
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd()).unwrap().port();
    (port, fd)
}

/// Hands `sockets` to the service as descriptors 3, 4, … with
/// `DIND_LISTEN_FDS`, which it takes in place of binding those addresses.
fn hand_over<const N: usize>(cmd: &mut Command, sockets: [OwnedFd; N]) {
    use std::os::unix::process::CommandExt;
    cmd.env("DIND_LISTEN_FDS", N.to_string());
    let raw = sockets.each_ref().map(|fd| fd.as_raw_fd());
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only fcntl and dup2 calls, which are async-signal-safe; `sockets`
    // stays open in the parent until the closure has run, because it is
    // moved into the closure.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &sockets;
            // First above the targets, so no dup2 overwrites a source.
            let mut high = [0; N];
            for (h, fd) in high.iter_mut().zip(raw) {
                *h = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(16))?;
            }
            for (i, fd) in high.into_iter().enumerate() {
                // dup2 leaves the new descriptor without close-on-exec.
                nix::unistd::dup2(fd, 3 + i as i32)?;
            }
            Ok(())
        });
    }
}

/// The docker CLIs on this machine: Debian's docker.io client (20.10, with
/// BuildKit built in) and the newer static CLI, when present.
pub fn docker_clis() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    out.dedup();
    assert!(!out.is_empty(), "no docker CLI installed");
    out
}

/// Runs `cmd`, asserting success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Direct children of `pid` (of any of its threads), from /proc.
pub fn children(pid: Pid) -> Vec<Pid> {
    children_with_state(pid)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// `(pid, state)` of every process whose parent is `parent`.
pub fn children_with_state(parent: Pid) -> Vec<(Pid, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent.as_raw()) {
            out.push((Pid::from_raw(pid), state));
        }
    }
    out
}

pub const BUSYBOX_IMAGE: &str = "dind-test/busybox:latest";

/// A rootfs tarball holding only a static busybox: no registry can be
/// reached here, so test images are imported. Made once, in the cargo
/// target's scratch directory, and reused by later runs: built under a
/// name of this process and renamed into place, so test binaries running
/// at once never see a half-written tarball, and nothing is left in /tmp.
pub fn busybox_rootfs_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("busybox is not installed: apt-get install busybox-static");
        let applets = [
            "sh",
            "sleep",
            "cat",
            "echo",
            "true",
            "ls",
            "sha256sum",
            "head",
            "trap",
            "wc",
            "dd",
        ];
        // The name changes with the applet list, so an old tarball is never
        // reused for a new list.
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let tar = scratch.join(format!("busybox-rootfs-{}.tar", applets.join("-")));
        if tar.exists() {
            return tar;
        }
        let root = scratch.join(format!("busybox-rootfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        for applet in applets {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let partial = root.with_extension("tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-cf"])
            .arg(&partial)
            .arg(".")
            .status()
            .unwrap()
            .success();
        let _ = fs::remove_dir_all(&root);
        assert!(ok, "tar of the busybox rootfs failed");
        fs::rename(&partial, &tar).unwrap();
        tar
    })
}

/// A stand-in for dockerd: a shell script that may end by running the real
/// one, so the engine is late, hangs or fails as a test needs.
pub fn fake_dockerd(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A dockerd that starts `secs` seconds late: longer than any client's own
/// first-ping timeout (the docker CLI gives up its first ping after 2 s).
pub fn late_dockerd(dir: &Path, secs: u32) -> PathBuf {
    fake_dockerd(
        dir,
        "late-dockerd",
        &format!("sleep {secs}\nexec dockerd \"$@\""),
    )
}

/// Waits until `up()` holds; panics with the service log after `limit`.
pub fn until(svc: &Service, what: &str, limit: Duration, mut up: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !up() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {limit:?}:\n{}",
            svc.log_text()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The value of a metric without labels in `/metrics`.
pub fn metric(svc: &Service, name: &str) -> u64 {
    let (_, text) = svc.health("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// One raw HTTP/1.1 exchange on `stream`; (status, body). A connection
/// cut before or during the answer (a reset, a read timeout) reads as
/// status 0 with what came.
pub fn exchange(mut stream: impl Read + Write, method: &str, path: &str) -> (u16, String) {
    let mut out = Vec::new();
    if write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .is_ok()
    {
        let _ = stream.read_to_end(&mut out);
    }
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Reads one HTTP/1.1 answer with a Content-Length from a keep-alive
/// connection: status and body.
pub fn read_answer(r: &mut impl BufRead) -> (u16, String) {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&body).into_owned())
}
