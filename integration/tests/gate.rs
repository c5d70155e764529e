//! The readiness gate against a real dockerd (issue 9): the public
//! endpoints open at once and hold requests until the engine answers, real
//! clients negotiate the API version dockerd really speaks under a long
//! hold, a dockerd that never answers gets held clients a clear 503, and
//! `DIND_LISTEN_WHEN=ready` keeps the old promise that nothing listens
//! before the API works.

mod support;

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{
    docker_clis, exchange, fake_dockerd, late_dockerd, metric, ok, until, Service, ServiceOptions,
};

/// A service whose dockerd starts `secs` late, serving a unix socket at
/// `shared/docker.sock` too; returns it and the socket's path.
fn late_service(secs: u32, env: &[(&str, &str)]) -> (Service, PathBuf) {
    let dir = support::short_tempdir();
    let late = late_dockerd(dir.path(), secs);
    let sock = dir.path().join("shared/docker.sock");
    let (late, host) = (
        late.display().to_string(),
        format!("unix://{}", sock.display()),
    );
    let mut all = vec![
        ("DIND_DOCKERD", late.as_str()),
        ("DOCKER_HOST", host.as_str()),
    ];
    all.extend_from_slice(env);
    (Service::start_with_env(dir, &all), sock)
}

/// The default: the TCP port and the unix socket exist long before the
/// engine answers, and a request sent while `/readyz` is 503 is held (the
/// gauge shows it waiting) and then answered by dockerd.
#[test]
fn a_request_that_comes_before_the_engine_is_held_then_answered() {
    let (svc, sock) = late_service(4, &[]);
    until(
        &svc,
        "the TCP port and the socket",
        Duration::from_secs(10),
        || TcpStream::connect(("127.0.0.1", svc.port)).is_ok() && sock.exists(),
    );
    assert_eq!(
        svc.health("/readyz").0,
        503,
        "the engine cannot be ready yet: dockerd starts 4 s late"
    );
    let mode = fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert!(mode == 0o660 || mode == 0o666, "mode {mode:o}");

    let held = {
        let stream =
            UnixStream::connect(&sock).expect("the socket accepts before the engine is ready");
        thread::spawn(move || exchange(stream, "GET", "/version"))
    };
    until(&svc, "the request held", Duration::from_secs(5), || {
        metric(&svc, "dind_proxy_held_requests") == 1
    });
    assert_eq!(
        svc.health("/readyz").0,
        503,
        "the request must have been held while not ready"
    );

    let (status, body) = held.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let version: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        version["ApiVersion"].is_string(),
        "not dockerd's answer: {body}"
    );
    assert_eq!(svc.health("/readyz").0, 200);
    assert_eq!(metric(&svc, "dind_proxy_held_requests"), 0);
    assert!(metric(&svc, "dind_proxy_held_requests_total") >= 1);
}

/// A docker CLI, with the service's client certificates, creating a volume:
/// a mutating call, so its API version is in the audit log.
fn cli_volume_create(svc: &Service, cli: &Path, name: &str) -> Command {
    let mut c = svc.tls_cli(cli);
    c.args(["volume", "create", name]);
    c
}

/// The Python Docker SDK (docker-py, `version="auto"` by default) doing the
/// same; `scripts/python-sdk.sh` provides it.
fn python_volume_create(svc: &Service, name: &str) -> Command {
    let python = std::env::var_os("DIND_TEST_PYTHON").expect(
        "DIND_TEST_PYTHON is not set: run the tests through `bash scripts/test.sh`, \
         which makes a Python environment with the Docker SDK (scripts/python-sdk.sh)",
    );
    let mut c = Command::new(python);
    c.args(["-c", "import docker, sys; c = docker.from_env(); c.volumes.create(sys.argv[1]); print(c.api.api_version)", name])
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", svc.port))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", svc.certs().join("client"))
        // requests prefers these to the SDK's own CA file (a known quirk):
        // with them set, the service's CA would never be asked.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .stdin(Stdio::null());
    c
}

/// Every client starts while dockerd is still 6 s away: both docker CLIs
/// (whose own first ping gives up after 2 s), the Python SDK and
/// `dind-supervisor wait`. Each succeeds on its first command and speaks
/// the API version dockerd really has, as the audit log shows.
#[test]
fn real_clients_under_a_long_hold_succeed_first_time_with_dockerds_api_version() {
    let dir = support::short_tempdir();
    let late = late_dockerd(dir.path(), 6);
    let audit = dir.path().join("audit.jsonl");
    let svc = Service::start_in(
        dir,
        ServiceOptions {
            env: vec![
                ("DIND_DOCKERD".into(), late.display().to_string()),
                ("DIND_AUDIT_LOG".into(), audit.display().to_string()),
            ],
            ..Default::default()
        },
    );
    until(&svc, "the TCP port", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", svc.port)).is_ok()
    });
    assert_eq!(svc.health("/readyz").0, 503);

    let mut clients: Vec<(String, Command)> = docker_clis()
        .iter()
        .enumerate()
        .map(|(i, cli)| {
            (
                format!("{} ", cli.display()),
                cli_volume_create(&svc, cli, &format!("held-cli{i}")),
            )
        })
        .collect();
    clients.push(("docker-py".into(), python_volume_create(&svc, "held-py")));
    let mut wait = Command::new(support::binary());
    wait.args([
        "wait",
        "--timeout",
        "60s",
        "--host",
        &format!("tcp://127.0.0.1:{}", svc.port),
    ])
    .env("DOCKER_TLS_VERIFY", "1")
    .env("DOCKER_CERT_PATH", svc.certs().join("client"));
    clients.push(("dind-supervisor wait".into(), wait));
    let started = Instant::now();
    let runs: Vec<(String, thread::JoinHandle<Output>)> = clients
        .into_iter()
        .map(|(name, mut cmd)| (name, thread::spawn(move || cmd.output().unwrap())))
        .collect();
    for (name, run) in runs {
        let out = run.join().unwrap();
        assert!(
            out.status.success(),
            "{name} failed on its first command ({}):\n{}{}\n--- supervisor log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            svc.log_text()
        );
    }
    eprintln!(
        "all clients done {:?} after they started",
        started.elapsed()
    );
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the clients finished before the engine could have been ready: nothing was held"
    );

    let (_, status) = svc.health("/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let api = status["dockerd"]["api_version"]
        .as_str()
        .expect("dockerd's API version in /status")
        .to_owned();
    let log = fs::read_to_string(&audit).unwrap();
    let creates: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/volumes/create"))
        })
        .collect();
    assert_eq!(
        creates.len(),
        docker_clis().len() + 1,
        "one create per client:\n{log}"
    );
    for e in &creates {
        assert_eq!(
            e["api_version"].as_str(),
            Some(api.as_str()),
            "a client guessed its API version: {e}"
        );
        assert_eq!(e["decision"], "allow", "{e}");
    }
    for name in ["held-cli0", "held-py"] {
        svc.docker_ok(&["volume", "inspect", name]);
    }
}

/// Engine that never answers: the held request gets the Docker-shaped 503
/// within the hold limit, saying the engine is still starting, and the
/// client's later requests on that connection do not wait again. dockerd that
/// keeps failing: the 503 carries dockerd's last error line, and the
/// supervisor gives up and exits 1 as before.
#[test]
fn a_dockerd_that_never_answers_gets_held_clients_a_clear_503_in_time() {
    let dir = support::short_tempdir();
    let hung = fake_dockerd(dir.path(), "hung-dockerd", "exec sleep 600");
    let svc = Service::start_in(
        dir,
        ServiceOptions {
            env: vec![
                ("DIND_DOCKERD".into(), hung.display().to_string()),
                ("DIND_HOLD_TIMEOUT".into(), "3s".into()),
            ],
            ..Default::default()
        },
    );
    until(&svc, "the TCP port", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", svc.port)).is_ok()
    });
    let cli = docker_clis().pop().unwrap();
    let started = Instant::now();
    let out = svc.tls_cli(&cli).args(["volume", "ls"]).output().unwrap();
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("still starting"), "{said}");
    assert!(!said.contains("Cannot connect"), "{said}");
    // The CLI's own first ping gives up after 2 s; then its HEAD ping, GET
    // ping and request share one 3 s hold on their connection (about 5 s in
    // all) instead of 3 s each (11 s in all).
    assert!(
        took < Duration::from_secs(9),
        "held {took:?}: each request waited the whole limit"
    );

    let dir = support::short_tempdir();
    let failing = fake_dockerd(
        dir.path(),
        "failing-dockerd",
        "echo 'failed to start daemon: disk quota exceeded (test)' >&2\nexit 1",
    );
    let mut svc = Service::start_in(
        dir,
        ServiceOptions {
            env: vec![
                ("DIND_DOCKERD".into(), failing.display().to_string()),
                ("DIND_HOLD_TIMEOUT".into(), "2s".into()),
                ("DIND_RESTART_MAX".into(), "3".into()),
            ],
            ..Default::default()
        },
    );
    until(&svc, "the TCP port", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", svc.port)).is_ok()
    });
    let out = svc.tls_cli(&cli).args(["volume", "ls"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("disk quota exceeded (test)"),
        "the 503 must say why dockerd is gone: {said}"
    );
    let (status, _) = svc.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", svc.log_text());
}

/// `DIND_LISTEN_WHEN=ready`: the port refuses connections until the engine
/// is Ready and the unix socket appears only then, so a TCP probe means
/// "the API answers"; a connect that succeeds is answered.
#[test]
fn listen_when_ready_opens_nothing_before_the_engine_answers() {
    let (svc, sock) = late_service(2, &[("DIND_LISTEN_WHEN", "ready")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            svc.log_text()
        );
        let tcp_up = TcpStream::connect(("127.0.0.1", svc.port)).is_ok();
        let sock_up = sock.exists();
        if tcp_up || sock_up {
            break;
        }
        refused += 1;
        let (status, _) = svc.health("/readyz");
        assert_ne!(status, 200, "ready while nothing listens");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(refused > 10, "the test never saw the not-ready phase");
    // Whatever appeared first, the engine already answered: the state says
    // so at once, and no request was ever held.
    let (_, status) = svc.health("/status");
    assert!(status.contains("\"state\":\"ready\""), "{status}");
    until(&svc, "the socket", Duration::from_secs(5), || sock.exists());
    ok(Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .arg("version"));
    assert_eq!(svc.health("/readyz").0, 200);
    assert_eq!(metric(&svc, "dind_proxy_held_requests_total"), 0);
}

/// While dockerd is killed and restarted, a request is held (the gauge
/// shows it waiting while `/readyz` is 503) and then succeeds.
#[test]
fn a_request_during_a_dockerd_restart_is_held_and_succeeds() {
    let svc = Service::start(ServiceOptions::default());
    svc.wait_ready();
    let cli = docker_clis().pop().unwrap();
    nix::sys::signal::kill(svc.dockerd_pid(), Signal::SIGKILL).unwrap();
    until(
        &svc,
        "not ready after the kill",
        Duration::from_secs(10),
        || svc.health("/readyz").0 == 503,
    );
    let mut cmd = svc.tls_cli(&cli);
    cmd.args(["version", "--format", "{{.Server.Version}}"]);
    let client = thread::spawn(move || cmd.output().unwrap());
    until(&svc, "the request held", Duration::from_secs(10), || {
        metric(&svc, "dind_proxy_held_requests") >= 1 || client.is_finished()
    });
    assert!(!client.is_finished(), "answered before the engine was back");
    let out = client.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert_eq!(svc.health("/readyz").0, 200);
    assert!(metric(&svc, "dind_dockerd_restarts_total") == 1);
}
