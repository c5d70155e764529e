//! The runner host of the end-to-end tests: a private Docker engine
//! (`scripts/runner-engine.sh`) with our service image and a job image on it
//! (`images/build.sh debian job`), driven with the docker CLI as a CI runner
//! drives its engine.
//!
//! `scripts/test.sh` starts the engine, builds the images and exports:
//!
//! | variable | what |
//! |---|---|
//! | `DIND_E2E_DOCKER_HOST` | the runner engine, e.g. `unix:///run/dind-supervisor-runner/docker.sock` |
//! | `DIND_E2E_SERVICE_IMAGE` | the service image, e.g. `dind-supervisor:debian` |
//! | `DIND_E2E_JOB_IMAGE` | the job image (the docker client), e.g. `dind-supervisor-job:latest` |
//! | `DIND_E2E_DOCKER` | optional: the docker CLI that drives the runner (default: `docker` on PATH) |
//! | `DIND_E2E_PARALLEL` | optional: runs of a repeated scenario at a time (default 2) |
//!
//! Without them every test fails with the reason: these tests never pass by
//! not running.
//!
//! Everything a test creates on the runner (containers with their anonymous
//! volumes, networks, volumes, build contexts) belongs to a [`Scope`] and is
//! removed when it drops, also when the test fails half-way. Names carry the
//! test process id and a counter, so tests and test runs can share the
//! runner.

#![allow(dead_code)] // not every helper is used by every scenario

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const ENV_DOCKER_HOST: &str = "DIND_E2E_DOCKER_HOST";
pub const ENV_SERVICE_IMAGE: &str = "DIND_E2E_SERVICE_IMAGE";
pub const ENV_JOB_IMAGE: &str = "DIND_E2E_JOB_IMAGE";
pub const ENV_DOCKER: &str = "DIND_E2E_DOCKER";
pub const ENV_PARALLEL: &str = "DIND_E2E_PARALLEL";

/// What the built image prints: proof that `docker run` ran our build.
pub const BUILT_GREETING: &str = "hello from the built image";

/// GitLab Runner's service health check: a TCP connect to each port the
/// service exposes, once a second, passing at the first success; 30 s.
pub const RUNNER_WAIT_SECS: u32 = 30;

/// The runner engine and the images on it, checked once per test process.
pub struct Runner {
    pub host: String,
    pub service_image: String,
    pub job_image: String,
    pub cli: PathBuf,
    /// `--privileged`, or what replaces it where the kernel refuses it.
    pub privileged: Vec<String>,
    /// The TCP ports the service image EXPOSEs, as a runner reads them.
    pub exposed_ports: Vec<u16>,
}

static RUNNER: OnceLock<Runner> = OnceLock::new();

/// The runner, or a panic that says what is missing and how to get it.
pub fn runner() -> &'static Runner {
    RUNNER.get_or_init(|| {
        let how =
            "run the end-to-end tests through `bash scripts/test.sh`, which starts the runner \
                   engine (scripts/runner-engine.sh start) and builds the images (images/build.sh \
                   debian job), or export DIND_E2E_DOCKER_HOST, DIND_E2E_SERVICE_IMAGE and \
                   DIND_E2E_JOB_IMAGE yourself";
        let var = |name: &str| match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => panic!("{name} is not set, so the end-to-end tests cannot run: {how}"),
        };
        let host = var(ENV_DOCKER_HOST);
        let service_image = var(ENV_SERVICE_IMAGE);
        let job_image = var(ENV_JOB_IMAGE);
        let cli = std::env::var_os(ENV_DOCKER)
            .map(PathBuf::from)
            .or_else(|| which("docker"))
            .unwrap_or_else(|| {
                panic!("no docker CLI on PATH to drive the runner engine (set {ENV_DOCKER})")
            });
        let mut runner = Runner {
            host,
            service_image,
            job_image,
            cli,
            privileged: Vec::new(),
            exposed_ports: Vec::new(),
        };
        let version = runner.run(
            &["version", "--format", "{{.Server.Version}}"],
            Duration::from_secs(20),
        );
        assert!(
            version.success(),
            "the runner engine at {} does not answer ({}): {how}",
            runner.host,
            version.text()
        );
        for image in [&runner.service_image, &runner.job_image] {
            let out = runner.run(
                &["image", "inspect", "--format", "{{.Id}}", image],
                Duration::from_secs(20),
            );
            assert!(
                out.success(),
                "image {image} is not on the runner engine at {}: {how}",
                runner.host
            );
        }
        runner.exposed_ports = exposed_ports(&runner);
        runner.privileged = privileged_flags(&runner);
        runner
    })
}

/// Whether `--privileged` works on the runner engine. Where the kernel's
/// capability bounding set lacks CAP_SYS_RESOURCE, runc fails with "unable to
/// apply caps"; then everything else privileged mode grants is asked for one
/// by one.
fn privileged_flags(runner: &Runner) -> Vec<String> {
    let probe = runner.run(
        &[
            "run",
            "--rm",
            "--privileged",
            "--network",
            "none",
            &runner.job_image,
            "true",
        ],
        Duration::from_secs(60),
    );
    let flags: &[&str] = if probe.success() {
        eprintln!("e2e: --privileged works on the runner engine");
        &["--privileged"]
    } else {
        eprintln!(
            "e2e: --privileged is refused on the runner engine ({}); using capabilities instead",
            probe.stderr.trim()
        );
        &[
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "systempaths=unconfined",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        ]
    };
    flags.iter().map(|s| s.to_string()).collect()
}

/// `Config.ExposedPorts` of the service image, TCP only, as a runner reads
/// them to decide what to wait for.
fn exposed_ports(runner: &Runner) -> Vec<u16> {
    let out = runner.ok(
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.ExposedPorts}}",
            &runner.service_image,
        ],
        Duration::from_secs(20),
    );
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| {
            panic!(
                "ExposedPorts of {} is not a JSON object ({e}): {out}",
                runner.service_image
            )
        });
    let ports: BTreeSet<u16> = map
        .keys()
        .filter_map(|k| k.strip_suffix("/tcp").and_then(|p| p.parse().ok()))
        .collect();
    assert!(
        !ports.is_empty(),
        "{} exposes no TCP port: a runner would not know what to wait for",
        runner.service_image
    );
    ports.into_iter().collect()
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// How many runs of a repeated scenario go at a time.
pub fn parallelism() -> usize {
    std::env::var(ENV_PARALLEL)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

/// A finished command: status (None when it was killed at its time limit),
/// output and how long it took.
#[derive(Debug)]
pub struct Ran {
    pub what: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Everything it printed, for failure messages.
    pub fn text(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {:?}", self.elapsed),
        };
        format!(
            "`{}`: {status}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to the end or until `limit`, then kills it.
pub fn run_for(mut cmd: Command, limit: Duration) -> Ran {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for a child") {
            break Some(s);
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ran {
        what,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

impl Runner {
    /// The docker CLI pointed at the runner engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.env("DOCKER_HOST", &self.host)
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT");
        c
    }

    pub fn run(&self, args: &[&str], limit: Duration) -> Ran {
        let mut c = self.docker();
        c.args(args);
        run_for(c, limit)
    }

    /// Like [`Runner::run`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str], limit: Duration) -> String {
        let out = self.run(args, limit);
        assert!(out.success(), "{}", out.text());
        out.stdout
    }
}

/// The machine's static busybox, which containers with no tools of their
/// own get by copy or bind mount.
pub fn busybox() -> &'static Path {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("busybox is not installed: apt-get install busybox-static (scripts/install-deps.sh does)")
}

/// Unique names for one test process: pid and a counter.
fn unique(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "dsv-e2e-{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A service container as a runner starts it.
#[derive(Default, Clone)]
pub struct ServiceSpec {
    /// A user-defined network, with the alias [`ServiceSpec::alias`] on it.
    pub network: Option<String>,
    /// The service's name on that network (default `docker`).
    pub alias: Option<String>,
    /// More `docker run` flags, as a runner passes a service's options.
    pub extra_args: Vec<String>,
    /// A fixed address on that network.
    pub ip: Option<Ipv4Addr>,
    pub env: Vec<(String, String)>,
    /// `-v` arguments: `volume:/path` or `/host/dir:/path`.
    pub volumes: Vec<String>,
    /// The service's `command:`, after the image name.
    pub command: Vec<String>,
}

/// A job container: the job image, a script and its environment.
#[derive(Default, Clone)]
pub struct JobSpec {
    /// `--network` value: a network name or `container:<name>`.
    pub network: Option<String>,
    pub env: Vec<(String, String)>,
    pub volumes: Vec<String>,
    pub script: String,
    /// `--user`, e.g. ARC's runner `1001:1001`; None: the image's (root).
    pub user: Option<String>,
    /// `--group-add`: supplementary groups, e.g. ARC's `docker` group.
    pub group_add: Vec<String>,
    /// The job's command instead of `bash -c script`.
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
}

/// What one test created on the runner; all of it goes when this drops.
pub struct Scope {
    pub id: String,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl Scope {
    pub fn new(tag: &str) -> Scope {
        Scope {
            id: unique(tag),
            containers: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
            volumes: Mutex::new(Vec::new()),
            dirs: Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.id)
    }

    /// A user-defined bridge network, as the docker executor creates per job.
    pub fn network(&self) -> String {
        self.network_with(&[])
    }

    /// [`Scope::network`] with driver options (`key=value`), e.g. the lower
    /// MTU of a pod network.
    pub fn network_with(&self, opts: &[&str]) -> String {
        let name = self.name("net");
        self.networks.lock().unwrap().push(name.clone());
        let mut args = vec!["network", "create"];
        for o in opts {
            args.extend(["-o", o]);
        }
        args.push(&name);
        runner().ok(&args, Duration::from_secs(30));
        name
    }

    /// `docker run -d --name <scope>-<role> <args…>` on the runner, removed
    /// with the scope; returns the container name.
    pub fn start_helper(&self, role: &str, args: &[&str]) -> String {
        let name = self.name(role);
        self.track(&name);
        let mut all = vec!["run", "-d", "--name", &name];
        all.extend(args);
        runner().ok(&all, Duration::from_secs(60));
        name
    }

    /// An address on `network` that the engine has not handed out: the
    /// tenth of its IPv4 subnet.
    pub fn address_on(&self, network: &str) -> Ipv4Addr {
        let subnet = runner().ok(
            &[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                network,
            ],
            Duration::from_secs(20),
        );
        let v4 = subnet
            .split_whitespace()
            .find_map(|s| {
                s.split_once('/')
                    .and_then(|(a, _)| a.parse::<Ipv4Addr>().ok())
            })
            .unwrap_or_else(|| panic!("network {network} has no IPv4 subnet: {subnet}"));
        Ipv4Addr::from(u32::from(v4) + 10)
    }

    pub fn volume(&self, role: &str) -> String {
        self.volume_with(role, &[])
    }

    /// A volume created with driver options (`type=tmpfs`, …).
    pub fn volume_with(&self, role: &str, opts: &[&str]) -> String {
        let name = self.name(role);
        self.volumes.lock().unwrap().push(name.clone());
        let mut args = vec!["volume", "create"];
        for o in opts {
            args.extend(["--opt", o]);
        }
        args.push(&name);
        runner().ok(&args, Duration::from_secs(30));
        name
    }

    /// A host directory that goes with the scope (bind-mounted into
    /// containers: the runner engine runs on this machine).
    pub fn dir(&self) -> PathBuf {
        let d = tempfile::Builder::new()
            .prefix("dsv-e2e")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // The service writes into it as root, the job reads it as root; the
        // mode only matters for non-root jobs.
        let path = d.path().to_path_buf();
        self.dirs.lock().unwrap().push(d);
        path
    }

    /// A build context for the job: a static busybox and a Dockerfile `FROM
    /// scratch`, so the engine inside the service needs no base image and no
    /// registry. The RUN step makes the build start a container.
    pub fn build_context(&self) -> PathBuf {
        let dir = self.dir();
        fs::copy(busybox(), dir.join("busybox")).expect("copy busybox into the build context");
        fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM scratch\n\
                 COPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\", \"true\"]\n\
                 CMD [\"/bin/busybox\", \"echo\", \"{BUILT_GREETING}\"]\n"
            ),
        )
        .expect("write the Dockerfile");
        dir
    }

    fn track(&self, name: &str) {
        self.containers.lock().unwrap().push(name.to_owned());
    }

    /// `docker run -d` of the service image; returns the container name.
    pub fn start_service(&self, role: &str, spec: &ServiceSpec) -> String {
        let r = runner();
        let name = self.name(role);
        self.track(&name);
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
        args.extend(r.privileged.iter().cloned());
        if let Some(net) = &spec.network {
            args.extend([
                "--network".into(),
                net.clone(),
                "--network-alias".into(),
                spec.alias.clone().unwrap_or_else(|| "docker".into()),
            ]);
        }
        if let Some(ip) = spec.ip {
            args.extend(["--ip".into(), ip.to_string()]);
        }
        for (k, v) in &spec.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        for v in &spec.volumes {
            args.extend(["-v".into(), v.clone()]);
        }
        args.extend(spec.extra_args.iter().cloned());
        args.push(r.service_image.clone());
        args.extend(spec.command.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = r.run(&args, Duration::from_secs(60));
        assert!(out.success(), "the service did not start: {}", out.text());
        name
    }

    /// The runner's wait for a service on `network` under the alias
    /// `docker`: a helper container tries a TCP connect to every exposed
    /// port once a second and passes at the first success (GitLab Runner's
    /// service health check). Err with the helper's output on timeout.
    pub fn runner_wait(&self, network: &str) -> Result<Duration, String> {
        let r = runner();
        let name = self.name("wait");
        self.track(&name);
        let ports: Vec<String> = r.exposed_ports.iter().map(u16::to_string).collect();
        let script = format!(
            r#"for i in $(seq 1 {RUNNER_WAIT_SECS}); do
                 for p in {ports}; do
                   if (exec 3<>/dev/tcp/docker/$p) 2>/dev/null; then echo "service is up: port $p, try $i"; exit 0; fi
                 done
                 sleep 1
               done
               echo "service did not come up within {RUNNER_WAIT_SECS} s (ports {ports})"; exit 1"#,
            ports = ports.join(" ")
        );
        let out = r.run(
            &[
                "run",
                "--rm",
                "--name",
                &name,
                "--network",
                network,
                &r.job_image,
                "bash",
                "-c",
                &script,
            ],
            Duration::from_secs(RUNNER_WAIT_SECS as u64 + 30),
        );
        if out.success() {
            Ok(out.elapsed)
        } else {
            Err(out.text())
        }
    }

    /// `docker run --rm` of the job image with `spec`; the job's output.
    pub fn run_job(&self, role: &str, spec: &JobSpec) -> Ran {
        let r = runner();
        let name = self.name(role);
        self.track(&name);
        let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name];
        if let Some(net) = &spec.network {
            args.extend(["--network".into(), net.clone()]);
        }
        for (k, v) in &spec.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        for v in &spec.volumes {
            args.extend(["-v".into(), v.clone()]);
        }
        if let Some(user) = &spec.user {
            args.extend(["--user".into(), user.clone()]);
        }
        for g in &spec.group_add {
            args.extend(["--group-add".into(), g.clone()]);
        }
        if let Some(dir) = &spec.workdir {
            args.extend(["--workdir".into(), dir.clone()]);
        }
        args.push(r.job_image.clone());
        match &spec.command {
            Some(command) => args.extend(command.iter().cloned()),
            None => args.extend(["bash".into(), "-c".into(), spec.script.clone()]),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        r.run(&args, Duration::from_secs(180))
    }

    /// The service's log (stdout and stderr), for assertions and failure
    /// messages.
    pub fn logs(&self, container: &str) -> String {
        let out = runner().run(&["logs", container], Duration::from_secs(30));
        format!("{}{}", out.stdout, out.stderr)
    }

    /// The last lines of a container's log, for failure messages.
    pub fn log_tail(&self, container: &str, lines: usize) -> String {
        let log = self.logs(container);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn inspect(&self, container: &str, format: &str) -> String {
        runner()
            .ok(
                &["inspect", "--format", format, container],
                Duration::from_secs(20),
            )
            .trim()
            .to_owned()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Nothing can have been created before the runner was checked; and
        // a panic here, while a failed test unwinds, would abort.
        let Some(r) = RUNNER.get() else { return };
        let limit = Duration::from_secs(60);
        let containers = std::mem::take(&mut *self.containers.lock().unwrap());
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().rev().map(String::as_str));
            let out = r.run(&args, limit);
            // "No such container" is expected for --rm jobs and unstarted
            // roles; anything else is worth a line.
            for line in out
                .stderr
                .lines()
                .filter(|l| !l.contains("No such container"))
            {
                eprintln!("e2e cleanup: {line}");
            }
        }
        for net in std::mem::take(&mut *self.networks.lock().unwrap()) {
            let out = r.run(&["network", "rm", &net], limit);
            if !out.success() && !out.stderr.contains("not found") {
                eprintln!("e2e cleanup: network {net}: {}", out.stderr.trim());
            }
        }
        for vol in std::mem::take(&mut *self.volumes.lock().unwrap()) {
            let out = r.run(&["volume", "rm", "-f", &vol], limit);
            if !out.success() {
                eprintln!("e2e cleanup: volume {vol}: {}", out.stderr.trim());
            }
        }
        // TempDirs go with the Vec.
    }
}
