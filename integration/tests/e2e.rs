//! End-to-end CI scenarios (issue 4): a private Docker engine plays the
//! runner host, starts our service image as a runner does, waits for it as a
//! runner does, and a job container builds and runs an image through it.
//!
//! The runner engine and the images come from `scripts/test.sh` (see
//! `e2e_support`); without them every test here fails with the reason.
//!
//! | test | scenario |
//! |---|---|
//! | `a_gitlab_docker_executor_with_tls` | alias `docker`, shared `/certs/client`, runner TCP wait, `tcp://docker:2376`; 20 runs, half with `DIND_LISTEN_WHEN=ready`, job times compared |
//! | `b_gitlab_docker_executor_without_tls` | `DOCKER_TLS_CERTDIR=""`, `tcp://docker:2375` |
//! | `c_unix_socket_on_a_shared_volume` | `unix:///runner/services/docker/docker.sock` in both containers; the job starts with the service, no wait |
//! | `d_registry_mirror_from_service_command_and_env` | `command: [--registry-mirror, …]` and `DIND_REGISTRY_MIRRORS` |
//! | `e_kubernetes_pod_without_runner_wait` | the job in the service's network namespace, starting with it, no wait of any kind; 20 runs |
//! | `f_docker_stop_ends_in_the_grace_period` | `docker stop` with an inner container that ignores SIGTERM |
//! | `g_the_first_connect_is_always_answered` | an API call made at the first successful TCP connect to 2376 works; with `DIND_LISTEN_WHEN=ready` the port never opens before the API answers |
//! | `h_gitlab_docker_executor_from_the_kit` | `examples/gitlab-docker`: `.gitlab-ci.yml` and the runner's `config.toml` as the runner reads them, the job's own script |
//! | `i_kubernetes_pod_from_the_kit` | `examples/kubernetes-pod/pod.yaml` as the kubelet runs it: emptyDirs, native sidecar, its probes, the build container's command, the stop in the grace period |
//! | `j_github_actions_service_from_the_kit` | `examples/github-actions`: the service with its `options:`, healthy by its `--health-cmd`, then the steps |
//! | `k_arc_runner_pod_from_the_example_values` | actions-runner-controller's runner pod from `examples/arc/values.yaml`: ARC's dind args, `/var/run` shared, the runner (uid 1001, numeric group) builds and runs; ci-safe refuses through the socket; no raw socket in the shared volume |
//! | `l_a_job_network_in_a_pod_with_mtu_1400` | the service on a runner network of MTU 1400, `DOCKER_DRIVER: overlay2`; the job creates a network and downloads 2 MB over it from a server on the runner network, whose 1500-byte packets the pod network drops without a word; a control network of MTU 1500 must hang |
//! | `s_job_soak` | `DIND_SOAK_JOBS` (default 5) whole service lives in a row: start, wait, job, `docker stop`; first tries, stop codes and times, time to Ready |

mod e2e_support;
mod kit;
mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use e2e_support::{parallelism, run_for, runner, JobSpec, Scope, ServiceSpec, BUILT_GREETING};

/// What every job runs: `docker info` first (it must succeed on its first
/// try: no retry loop, no sleep), then a build whose RUN step starts a
/// container, then a run of the result.
const JOB_SCRIPT: &str = r#"
set -u
if ! docker info >/tmp/first.out 2>&1; then
  echo "FIRST COMMAND FAILED: docker info"; cat /tmp/first.out; exit 101
fi
echo "first command succeeded: docker info"
docker build -q -t e2e-built /ctx || { echo "docker build failed"; exit 102; }
docker run --rm e2e-built || { echo "docker run failed"; exit 103; }
"#;

const NO_DAEMON: &str = "Cannot connect to the Docker daemon";

/// The three ways a GitLab job reaches a docker executor's service.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// Mutual TLS on 2376, client certificates from a shared `/certs/client`.
    Tls,
    /// `DOCKER_TLS_CERTDIR=""`: plain TCP on 2375.
    Plain,
    /// The service's socket on a volume both containers mount.
    Socket,
}

const SOCKET_DIR: &str = "/runner/services/docker";

/// Timings of one successful run.
#[derive(Debug)]
struct RunTimes {
    wait: Duration,
    job: Duration,
    /// From `docker run` of the service to the job's end: what a pipeline
    /// waits for.
    total: Duration,
}

/// How the job comes to the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// After GitLab Runner's TCP wait on every exposed port.
    RunnerWait,
    /// At once, as a pod's containers or a runner without the wait do.
    AtOnce,
}

/// One GitLab docker-executor job: a network, the service with alias
/// `docker`, the runner's wait, then the job. `Err` says what went wrong,
/// with the job's output and the end of the service's log.
fn gitlab_job(
    scope: &Scope,
    transport: Transport,
    arrival: Arrival,
    command: &[&str],
    service_env: &[(&str, &str)],
    script: &str,
) -> Result<(RunTimes, String), String> {
    let job = Job {
        transport,
        arrival,
        command,
        service_env,
        script,
    };
    gitlab_job_on(scope, &scope.network(), &job)
}

/// What a GitLab job is, besides the network it runs on.
struct Job<'a> {
    transport: Transport,
    arrival: Arrival,
    command: &'a [&'a str],
    service_env: &'a [(&'a str, &'a str)],
    script: &'a str,
}

/// [`gitlab_job`] on the runner network `net`.
fn gitlab_job_on(scope: &Scope, net: &str, job: &Job<'_>) -> Result<(RunTimes, String), String> {
    let Job {
        transport,
        arrival,
        command,
        service_env,
        script,
    } = *job;
    let net = net.to_owned();
    let mut service = ServiceSpec {
        network: Some(net.clone()),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: service_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut job = JobSpec {
        network: Some(net.clone()),
        script: script.to_owned(),
        volumes: vec![format!("{}:/ctx:ro", scope.build_context().display())],
        ..Default::default()
    };
    match transport {
        Transport::Tls => {
            let certs = scope.volume("certs");
            service.volumes.push(format!("{certs}:/certs/client"));
            job.volumes.push(format!("{certs}:/certs/client"));
            job.env.extend([
                ("DOCKER_HOST".into(), "tcp://docker:2376".into()),
                ("DOCKER_TLS_VERIFY".into(), "1".into()),
                ("DOCKER_CERT_PATH".into(), "/certs/client".into()),
            ]);
        }
        Transport::Plain => {
            service
                .env
                .push(("DOCKER_TLS_CERTDIR".into(), String::new()));
            job.env
                .push(("DOCKER_HOST".into(), "tcp://docker:2375".into()));
        }
        Transport::Socket => {
            let shared = scope.volume("sock");
            let host = format!("unix://{SOCKET_DIR}/docker.sock");
            service.volumes.push(format!("{shared}:{SOCKET_DIR}"));
            service.env.push(("DOCKER_HOST".into(), host.clone()));
            job.volumes.push(format!("{shared}:{SOCKET_DIR}"));
            job.env.push(("DOCKER_HOST".into(), host));
        }
    }
    let started = Instant::now();
    let svc = scope.start_service("svc", &service);
    let wait = match arrival {
        Arrival::RunnerWait => scope.runner_wait(&net).map_err(|e| {
            format!(
                "the runner's wait failed: {e}\n--- service log ---\n{}",
                scope.log_tail(&svc, 40)
            )
        })?,
        Arrival::AtOnce => Duration::ZERO,
    };
    let out = scope.run_job("job", &job);
    let printed = format!("{}{}", out.stdout, out.stderr);
    if !out.success() || printed.contains(NO_DAEMON) {
        return Err(format!(
            "{}\n--- service log ---\n{}",
            out.text(),
            scope.log_tail(&svc, 40)
        ));
    }
    Ok((
        RunTimes {
            wait,
            job: out.elapsed,
            total: started.elapsed(),
        },
        printed,
    ))
}

/// The full job of [`JOB_SCRIPT`]: its first command worked at once, and the
/// image it built ran.
fn check_full_job(printed: &str) -> Result<(), String> {
    if !printed.contains("first command succeeded") {
        return Err(format!("the first command did not succeed:\n{printed}"));
    }
    if !printed.contains(BUILT_GREETING) {
        return Err(format!("the built image did not run:\n{printed}"));
    }
    Ok(())
}

/// Runs `scenario` `runs` times, [`parallelism`] at a time, each in a fresh
/// [`Scope`] (and told its run number); asserts every run passed, reports
/// and returns the timings in run order.
fn repeat(
    tag: &str,
    runs: usize,
    scenario: impl Fn(&Scope, usize) -> Result<RunTimes, String> + Sync,
) -> Vec<RunTimes> {
    runner();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..parallelism().min(runs) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    break;
                }
                let scope = Scope::new(&format!("{tag}{i}"));
                let result = scenario(&scope, i);
                drop(scope);
                match &result {
                    Ok(t) => eprintln!(
                        "{tag} run {}/{runs}: ok (runner wait {:?}, job {:?}, total {:?})",
                        i + 1,
                        t.wait,
                        t.job,
                        t.total
                    ),
                    Err(_) => eprintln!("{tag} run {}/{runs}: FAILED", i + 1),
                }
                results.lock().unwrap().push((i, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let passed = results.iter().filter(|(_, r)| r.is_ok()).count();
    eprintln!(
        "{tag}: {passed}/{runs} runs passed in {:?}",
        started.elapsed()
    );
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(i, r)| {
            r.as_ref()
                .err()
                .map(|e| format!("=== run {} ===\n{e}", i + 1))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{tag}: {passed}/{runs} runs passed; failures:\n{}",
        failures.join("\n")
    );
    results.into_iter().filter_map(|(_, r)| r.ok()).collect()
}

/// The median of some durations.
fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

/// a. GitLab's docker executor with TLS, as `.gitlab-ci.yml` writes it:
/// `services: [{name: ..., alias: docker}]`, `DOCKER_HOST=tcp://docker:2376`,
/// `DOCKER_TLS_CERTDIR=/certs` and the runner's `/certs/client` volume. The
/// job's first command succeeds on its first try, 20 runs out of 20: every
/// other run with `DIND_LISTEN_WHEN=ready` (the port opens only when the API
/// answers), the rest with the default (open at once, requests held). The
/// runner's wait passes sooner with the default, and the medians of both
/// are printed side by side.
#[test]
fn a_gitlab_docker_executor_with_tls() {
    let ready_env: &[(&str, &str)] = &[("DIND_LISTEN_WHEN", "ready")];
    let times = repeat("a", 20, |scope, i| {
        let env = if i % 2 == 0 { &[][..] } else { ready_env };
        let (times, printed) = gitlab_job(
            scope,
            Transport::Tls,
            Arrival::RunnerWait,
            &[],
            env,
            JOB_SCRIPT,
        )?;
        check_full_job(&printed)?;
        Ok(times)
    });
    let (open_at_once, when_ready): (Vec<_>, Vec<_>) =
        times.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (how, runs) in [
        ("open at once (default)", &open_at_once),
        ("DIND_LISTEN_WHEN=ready", &when_ready),
    ] {
        let of = |f: fn(&RunTimes) -> Duration| median(runs.iter().map(|(_, t)| f(t)).collect());
        eprintln!(
            "a: {how}: median runner wait {:?}, job {:?}, service start to job end {:?} ({} runs)",
            of(|t| t.wait),
            of(|t| t.job),
            of(|t| t.total),
            runs.len()
        );
    }
}

/// b. TLS off (`DOCKER_TLS_CERTDIR: ""`): plain TCP on 2375, same job.
#[test]
fn b_gitlab_docker_executor_without_tls() {
    repeat("b", 2, |scope, _| {
        let (times, printed) = gitlab_job(
            scope,
            Transport::Plain,
            Arrival::RunnerWait,
            &[],
            &[],
            JOB_SCRIPT,
        )?;
        check_full_job(&printed)?;
        Ok(times)
    });
}

/// c. The service's socket on a volume both containers mount, named by
/// `DOCKER_HOST` in both (GitLab Runner's `/runner/services/docker`, ARC's
/// shared `/var/run`). The job starts at the same instant as the service,
/// with no wait: the socket is there and holds its first command.
#[test]
fn c_unix_socket_on_a_shared_volume() {
    repeat("c", 4, |scope, _| {
        let (times, printed) = gitlab_job(
            scope,
            Transport::Socket,
            Arrival::AtOnce,
            &[],
            &[],
            JOB_SCRIPT,
        )?;
        check_full_job(&printed)?;
        Ok(times)
    });
}

/// The entries under "Registry Mirrors:" in `docker info`'s text output.
fn registry_mirrors(info: &str) -> Vec<String> {
    let mut lines = info.lines().skip_while(|l| l.trim() != "Registry Mirrors:");
    let Some(head) = lines.next() else {
        return Vec::new();
    };
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.len() - l.trim_start().len() > indent && !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

/// d. A registry mirror given as the service's `command:` (arguments after
/// the image name, which the stock entrypoint passes to dockerd) and as
/// `DIND_REGISTRY_MIRRORS` shows up under "Registry Mirrors" in the job's
/// `docker info`.
#[test]
fn d_registry_mirror_from_service_command_and_env() {
    const MIRROR: &str = "http://mirror.internal:5000";
    let script = "docker info";
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 2] = [
        ("command", &["--registry-mirror", MIRROR], &[]),
        ("env", &[], &[("DIND_REGISTRY_MIRRORS", MIRROR)]),
    ];
    runner();
    thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(how, command, env)| {
                s.spawn(move || {
                    let scope = Scope::new(&format!("d{how}"));
                    let (_, info) = gitlab_job(&scope, Transport::Tls, Arrival::RunnerWait, command, env, script)
                        .unwrap_or_else(|e| panic!("mirror from the service {how}: {e}"));
                    let mirrors = registry_mirrors(&info);
                    assert!(
                        mirrors.iter().any(|m| m.trim_end_matches('/') == MIRROR),
                        "mirror from the service {how}: {MIRROR} is not under Registry Mirrors ({mirrors:?}):\n{info}"
                    );
                })
            })
            .collect();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// e. A Kubernetes runner pod: the job shares the service's network
/// namespace and starts right after it, with no wait of any kind: its first
/// `docker info` is held until the engine answers. "Cannot connect to the
/// Docker daemon" must never appear, over 20 runs.
#[test]
fn e_kubernetes_pod_without_runner_wait() {
    repeat("e", 20, |scope, _| {
        let started = Instant::now();
        let certs = scope.volume("certs");
        let svc = scope.start_service(
            "svc",
            &ServiceSpec {
                volumes: vec![format!("{certs}:/certs/client")],
                ..Default::default()
            },
        );
        let job = scope.run_job(
            "job",
            &JobSpec {
                network: Some(format!("container:{svc}")),
                env: vec![
                    ("DOCKER_HOST".into(), "tcp://localhost:2376".into()),
                    ("DOCKER_TLS_VERIFY".into(), "1".into()),
                    ("DOCKER_CERT_PATH".into(), "/certs/client".into()),
                ],
                volumes: vec![
                    format!("{certs}:/certs/client:ro"),
                    format!("{}:/ctx:ro", scope.build_context().display()),
                ],
                script: JOB_SCRIPT.to_owned(),
                ..Default::default()
            },
        );
        let printed = format!("{}{}", job.stdout, job.stderr);
        if !job.success() || printed.contains(NO_DAEMON) {
            return Err(format!(
                "{}\n--- service log ---\n{}",
                job.text(),
                scope.log_tail(&svc, 40)
            ));
        }
        check_full_job(&printed)?;
        Ok(RunTimes {
            wait: Duration::ZERO,
            job: job.elapsed,
            total: started.elapsed(),
        })
    });
}

/// The number after `key=` in `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// f. `docker stop` of the service while an inner container runs that
/// ignores SIGTERM (busybox `sleep` as PID 1 has no handler): the service
/// exits 0 inside docker's default 10 s grace period, not by SIGKILL, and
/// its log says how long the shutdown took.
#[test]
fn f_docker_stop_ends_in_the_grace_period() {
    let r = runner();
    let scope = Scope::new("f");
    let script = "set -e\n\
                  docker build -q -t e2e-built /ctx\n\
                  docker run -d --name sleeper e2e-built /bin/busybox sleep 1000\n\
                  echo \"sleeper running: $(docker inspect -f '{{.State.Running}}' sleeper)\"";
    let (_, printed) = gitlab_job(
        &scope,
        Transport::Tls,
        Arrival::RunnerWait,
        &[],
        &[],
        script,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        printed.contains("sleeper running: true"),
        "the inner container is not running:\n{printed}"
    );
    let svc = scope.name("svc");

    let stop = r.run(&["stop", &svc], Duration::from_secs(30));
    assert!(stop.success(), "{}", stop.text());
    let log = scope.logs(&svc);
    let exit_code = scope.inspect(&svc, "{{.State.ExitCode}}");
    eprintln!(
        "f: docker stop took {:?}, exit code {exit_code}",
        stop.elapsed
    );
    assert_eq!(
        exit_code, "0",
        "the service did not exit 0 after docker stop ({:?}):\n{log}",
        stop.elapsed
    );
    assert!(
        stop.elapsed < Duration::from_secs(10),
        "docker stop took {:?}: the service outlived the 10 s grace period:\n{log}",
        stop.elapsed
    );
    let line = log
        .lines()
        .find(|l| l.contains("shutdown complete") && l.contains("shutdown_ms="))
        .unwrap_or_else(|| panic!("the log does not report the shutdown:\n{log}"));
    let ms = field(line, "shutdown_ms").unwrap_or_else(|| panic!("no shutdown_ms in {line:?}"));
    eprintln!("f: the service reports: {}", line.trim());
    assert!(ms < 10_000, "shutdown_ms={ms}: over the grace period");
}

/// What the outside observer saw while one service started.
#[derive(Debug)]
struct Opening {
    /// Connects refused before the first that succeeded: the service was up
    /// but not listening, so the moment of opening was watched.
    refused: u32,
    /// From `docker run` returning to the first successful connect.
    connect_after: Duration,
    /// The API call made right after that connect.
    api: e2e_support::Ran,
}

/// g. Readiness honesty, from outside the service (the runner host, over
/// the network's bridge): poll a TCP connect to 2376 every 10 ms; at the
/// first that succeeds, make one TLS API call at once. It must succeed in
/// both modes. By default the port opens almost at once and the call is
/// held until the engine answers; with `DIND_LISTEN_WHEN=ready` the port
/// never opens before the API answers, so a refused connect must have been
/// seen first. Three services in each mode.
#[test]
fn g_the_first_connect_is_always_answered() {
    let r = runner();
    for round in 1..=6 {
        let when_ready = round % 2 == 0;
        let scope = Scope::new(&format!("g{round}"));
        let net = scope.network();
        let certs = scope.dir();
        let mut env = Vec::new();
        if when_ready {
            env.push(("DIND_LISTEN_WHEN".to_owned(), "ready".to_owned()));
        }
        let svc = scope.start_service(
            "svc",
            &ServiceSpec {
                network: Some(net.clone()),
                volumes: vec![format!("{}:/certs/client", certs.display())],
                env,
                ..Default::default()
            },
        );
        let started = Instant::now();
        let ip = scope.inspect(
            &svc,
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        );
        let addr: SocketAddr = format!("{ip}:2376")
            .parse()
            .unwrap_or_else(|e| panic!("service address {ip:?}: {e}"));
        let seen =
            watch_opening(r, addr, &certs, started, Duration::from_secs(60)).unwrap_or_else(|e| {
                panic!(
                    "round {round}: {e}\n--- service log ---\n{}",
                    scope.log_tail(&svc, 40)
                )
            });
        let mode = if when_ready {
            "DIND_LISTEN_WHEN=ready"
        } else {
            "default"
        };
        eprintln!(
            "g round {round} ({mode}): first connect {:?} after docker run ({} refused before), API call right after: {} in {:?}",
            seen.connect_after,
            seen.refused,
            if seen.api.success() { "ok" } else { "FAILED" },
            seen.api.elapsed
        );
        assert!(
            seen.api.success(),
            "round {round} ({mode}): TCP 2376 accepted a connection but the API call made right after failed:\n{}\n--- service log ---\n{}",
            seen.api.text(),
            scope.log_tail(&svc, 40)
        );
        if when_ready {
            assert!(
                seen.refused > 0,
                "round {round}: the port was already open at the first poll, so its opening was not observed; \
                 the service became ready within {:?} of docker run returning",
                seen.connect_after
            );
        }
    }
}

/// Polls `addr` every 10 ms until a connect succeeds, then makes one API
/// call over mutual TLS with the client certificates in `certs`.
fn watch_opening(
    r: &e2e_support::Runner,
    addr: SocketAddr,
    certs: &Path,
    since: Instant,
    limit: Duration,
) -> Result<Opening, String> {
    let deadline = Instant::now() + limit;
    let mut refused = 0;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(conn) => {
                let connect_after = since.elapsed();
                drop(conn);
                let mut api = Command::new(&r.cli);
                api.env_remove("DOCKER_HOST")
                    .env_remove("DOCKER_CONTEXT")
                    .env("DOCKER_TLS_VERIFY", "1")
                    .env("DOCKER_CERT_PATH", certs)
                    .args([
                        "-H",
                        &format!("tcp://{addr}"),
                        "version",
                        "--format",
                        "{{.Server.Version}}",
                    ]);
                let api = run_for(api, Duration::from_secs(20));
                return Ok(Opening {
                    refused,
                    connect_after,
                    api,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing accepted a connection on {addr} within {limit:?} ({refused} refused)"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What the soak's job adds to [`JOB_SCRIPT`]: the service's own time to
/// Ready, read from its `/metrics` on the health port (bash's /dev/tcp: the
/// job image has no HTTP client).
const SOAK_SCRIPT_TAIL: &str = r#"
exec 3<>/dev/tcp/docker/2378
printf 'GET /metrics HTTP/1.0\r\nHost: docker\r\n\r\n' >&3
sed -n 's/^dind_seconds_to_ready /seconds_to_ready=/p' <&3
"#;

/// Jobs in a row for [`s_job_soak`]: `DIND_SOAK_JOBS`, default 5 (the
/// README's figure is 500, from `reliability/job-soak.sh`).
fn soak_jobs() -> usize {
    std::env::var("DIND_SOAK_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// s. The job soak (issue 13, item 3): GitLab docker-executor jobs one after
/// another, each a whole service life: start, the runner's wait, `docker
/// info` (first try), build and run, then `docker stop`. Every job must
/// succeed on its first try and every stop must exit 0 inside docker's 10 s
/// grace period; the report gives the service's own time to Ready (p50, p99,
/// max) and the stop times.
#[test]
fn s_job_soak() {
    let r = runner();
    let jobs = soak_jobs();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut bad_stops = Vec::new();
    let mut to_ready = Vec::new();
    let mut stops = Vec::new();
    for i in 0..jobs {
        let scope = Scope::new(&format!("s{i}"));
        let script = format!("{JOB_SCRIPT}{SOAK_SCRIPT_TAIL}");
        let printed = match gitlab_job(
            &scope,
            Transport::Tls,
            Arrival::RunnerWait,
            &[],
            &[],
            &script,
        )
        .and_then(|(_, printed)| check_full_job(&printed).map(|()| printed))
        {
            Ok(printed) => printed,
            Err(e) => {
                eprintln!("s job {}/{jobs}: FAILED", i + 1);
                failures.push(format!("=== job {} ===\n{e}", i + 1));
                continue;
            }
        };
        if let Some(s) = printed
            .lines()
            .find_map(|l| l.strip_prefix("seconds_to_ready="))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            to_ready.push(s);
        }
        let svc = scope.name("svc");
        let stop = r.run(&["stop", &svc], Duration::from_secs(30));
        let code = scope.inspect(&svc, "{{.State.ExitCode}}");
        stops.push(stop.elapsed);
        if !stop.success() || code != "0" || stop.elapsed >= Duration::from_secs(10) {
            bad_stops.push(format!(
                "job {}: docker stop took {:?}, exit code {code}\n{}",
                i + 1,
                stop.elapsed,
                scope.log_tail(&svc, 20)
            ));
        }
        if (i + 1) % 25 == 0 || i + 1 == jobs {
            eprintln!("s: {}/{jobs} jobs done in {:?}", i + 1, started.elapsed());
        }
    }
    to_ready.sort_by(f64::total_cmp);
    stops.sort();
    eprintln!(
        "s: {jobs} jobs in {:?}: {} first-try failures; stops: {} not 0 inside 10 s, median {:?}, max {:?}; \
         time to Ready: p50 {:.3} s, p99 {:.3} s, max {:.3} s ({} read)",
        started.elapsed(),
        failures.len(),
        bad_stops.len(),
        stops.get(stops.len() / 2).copied().unwrap_or_default(),
        stops.last().copied().unwrap_or_default(),
        quantile(&to_ready, 0.5),
        quantile(&to_ready, 0.99),
        to_ready.last().copied().unwrap_or(f64::NAN),
        to_ready.len()
    );
    assert!(
        failures.is_empty() && bad_stops.is_empty(),
        "{} of {jobs} jobs failed, {} stops were not 0 inside 10 s:\n{}\n{}",
        failures.len(),
        bad_stops.len(),
        failures.join("\n"),
        bad_stops.join("\n")
    );
    assert_eq!(
        to_ready.len(),
        jobs,
        "the service's time to Ready was not read from every job"
    );
}

/// ARC's runner pod as `examples/arc/values.yaml` writes it: the parts a
/// runner engine can re-enact, read from the file itself so that the
/// example cannot drift from what is tested.
struct ArcPod {
    /// The dind container's `args`, `$(VAR)` expanded from its `env` as
    /// the kubelet does.
    dind_args: Vec<String>,
    dind_env: Vec<(String, String)>,
    /// `(volume, mountPath)` of each container.
    dind_mounts: Vec<(String, String)>,
    runner_env: Vec<(String, String)>,
    runner_mounts: Vec<(String, String)>,
    /// The pod's emptyDir volumes.
    empty_dirs: Vec<String>,
}

const ARC_VALUES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/arc/values.yaml");

fn arc_pod() -> ArcPod {
    use serde_yaml::Value;
    let text = std::fs::read_to_string(ARC_VALUES)
        .unwrap_or_else(|e| panic!("cannot read {ARC_VALUES}: {e}"));
    let values: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{ARC_VALUES}: {e}"));
    let spec = &values["template"]["spec"];
    let named = |list: &str, name: &str| -> Value {
        spec[list]
            .as_sequence()
            .and_then(|s| s.iter().find(|c| c["name"].as_str() == Some(name)))
            .cloned()
            .unwrap_or_else(|| panic!("{ARC_VALUES}: no {list} entry named {name}"))
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .map(|x| x.as_str().expect("a string").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let pairs = |v: &Value, k: &str, val: &str| -> Vec<(String, String)> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .map(|e| {
                        let get = |f: &str| {
                            e[f].as_str()
                                .unwrap_or_else(|| panic!("{f} of {e:?}"))
                                .to_owned()
                        };
                        (get(k), get(val))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // ARC's dind container is a native sidecar; ARC's own mode and older
    // charts put it among the containers.
    let dind = spec["initContainers"]
        .as_sequence()
        .and_then(|s| s.iter().find(|c| c["name"].as_str() == Some("dind")))
        .cloned()
        .unwrap_or_else(|| named("containers", "dind"));
    let runner = named("containers", "runner");
    let dind_env = pairs(&dind["env"], "name", "value");
    let mut dind_args = strings(&dind["command"]);
    dind_args.extend(strings(&dind["args"]));
    for a in &mut dind_args {
        for (k, v) in &dind_env {
            *a = a.replace(&format!("$({k})"), v);
        }
    }
    let empty_dirs = spec["volumes"]
        .as_sequence()
        .expect("template.spec.volumes")
        .iter()
        .filter(|v| v.get("emptyDir").is_some())
        .map(|v| v["name"].as_str().expect("a volume name").to_owned())
        .collect();
    ArcPod {
        dind_args,
        dind_env,
        dind_mounts: pairs(&dind["volumeMounts"], "name", "mountPath"),
        runner_env: pairs(&runner["env"], "name", "value"),
        runner_mounts: pairs(&runner["volumeMounts"], "name", "mountPath"),
        empty_dirs,
    }
}

/// What the runner's job in the ARC pod runs after [`JOB_SCRIPT`]: what
/// ci-safe refuses, tried through the shared socket, then what the shared
/// volume holds while an inner container runs (so that containerd's shim
/// sockets exist somewhere).
const ARC_CHECKS: &str = r#"
for how in "-v /:/host" "--privileged"; do
  if docker run --rm --name escape $how e2e-built /bin/busybox true 2>/tmp/refused.out; then
    echo "NOT REFUSED: $how"
  else
    echo "refused: $how: $(tr '\n' ' ' </tmp/refused.out)"
  fi
  docker inspect escape >/dev/null 2>&1 && echo "ESCAPE EXISTS: $how"
done
docker run -d --name sleeper e2e-built /bin/busybox sleep 1000 >/dev/null || { echo "sleeper failed"; exit 104; }
echo "socket mode and group: $(stat -L -c '%a %g' /var/run/docker.sock)"
echo "shared entries: $(ls -A /var/run/ | tr '\n' ' ')"
echo "shared sockets: $(find /var/run/ -type s | tr '\n' ' ')"
"#;

/// The value after `label` on its own line of `printed`.
fn line_after<'a>(printed: &'a str, label: &str) -> Option<&'a str> {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
}

/// k. actions-runner-controller's runner pod, started from
/// `examples/arc/values.yaml`: the dind container with ARC's own args
/// (`dockerd --host=unix:///var/run/docker.sock --group=<gid>`), env and
/// mounts (`/var/run` an emptyDir shared with the runner), and the runner
/// container on that socket in the pod's network namespace, as ARC's
/// runner user (1001, in the numeric group), started with the service and
/// without a wait. Its `docker build` and `docker run` work; a bind of `/`
/// and `--privileged` are refused by ci-safe through that socket and leave
/// no container; the shared volume holds the proxy's socket (mode 0660,
/// the numeric group) and nothing else, while dockerd's and containerd's
/// sockets, shim sockets included, live on the service's private /run.
#[test]
fn k_arc_runner_pod_from_the_example_values() {
    let pod = arc_pod();
    assert_eq!(
        pod.dind_args.first().map(String::as_str),
        Some("dockerd"),
        "ARC's dind command: {:?}",
        pod.dind_args
    );
    let gid = pod
        .dind_args
        .iter()
        .find_map(|a| a.strip_prefix("--group="))
        .unwrap_or_else(|| panic!("no --group in {:?}", pod.dind_args))
        .to_owned();
    assert!(gid.parse::<u32>().is_ok(), "ARC's group is numeric: {gid}");
    let r = runner();
    let scope = Scope::new("k");
    let volumes: std::collections::HashMap<&str, String> = pod
        .empty_dirs
        .iter()
        .map(|name| (name.as_str(), scope.volume(name)))
        .collect();
    // `nocopy`: an emptyDir starts empty, where a new docker volume would
    // first get a copy of the image's directory.
    let mounts = |m: &[(String, String)]| -> Vec<String> {
        m.iter()
            .map(|(name, path)| format!("{}:{path}:nocopy", volumes[name.as_str()]))
            .collect()
    };
    let svc = scope.start_service(
        "dind",
        &ServiceSpec {
            env: pod.dind_env.clone(),
            volumes: mounts(&pod.dind_mounts),
            command: pod.dind_args.clone(),
            ..Default::default()
        },
    );
    let mut env = pod.runner_env.clone();
    env.push(("HOME".into(), "/tmp".into()));
    let mut volumes = mounts(&pod.runner_mounts);
    volumes.push(format!("{}:/ctx:ro", scope.build_context().display()));
    let job = scope.run_job(
        "runner",
        &JobSpec {
            network: Some(format!("container:{svc}")),
            env,
            volumes,
            script: format!("{JOB_SCRIPT}{ARC_CHECKS}"),
            user: Some("1001:1001".into()),
            group_add: vec![gid.clone()],
            ..Default::default()
        },
    );
    let printed = format!("{}{}", job.stdout, job.stderr);
    let context = || {
        format!(
            "{}\n--- service log ---\n{}",
            job.text(),
            scope.log_tail(&svc, 40)
        )
    };
    assert!(
        job.success() && !printed.contains(NO_DAEMON),
        "{}",
        context()
    );
    check_full_job(&printed).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    let refused: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("refused: "))
        .collect();
    assert_eq!(refused.len(), 2, "{}", context());
    for line in &refused {
        assert!(
            line.contains("policy ci-safe"),
            "not the policy's refusal: {line}"
        );
    }
    assert!(
        !printed.contains("NOT REFUSED") && !printed.contains("ESCAPE EXISTS"),
        "{}",
        context()
    );
    assert_eq!(
        line_after(&printed, "socket mode and group:"),
        Some(format!("660 {gid}").as_str()),
        "{}",
        context()
    );
    assert_eq!(
        line_after(&printed, "shared entries:"),
        Some("docker.sock"),
        "{}",
        context()
    );
    assert_eq!(
        line_after(&printed, "shared sockets:"),
        Some("/var/run/docker.sock"),
        "{}",
        context()
    );
    // The raw sockets exist, on the service's private /run: the check
    // above could have found them.
    let inside = r.run(
        &["exec", &svc, "sh", "-c", "find /run/dind-supervisor/dockerd /run/docker /run/containerd -type s; docker info --format '{{.ID}}' >/dev/null && echo 'inside: ok'"],
        Duration::from_secs(30),
    );
    assert!(inside.success(), "{}", inside.text());
    let raw: Vec<&str> = inside
        .stdout
        .lines()
        .filter(|l| l.starts_with("/run/"))
        .collect();
    assert!(
        raw.contains(&"/run/dind-supervisor/dockerd/docker.sock")
            && raw.contains(&"/run/docker/containerd/containerd.sock")
            && raw.iter().any(|s| s.starts_with("/run/containerd/s/")),
        "dockerd's socket and a shim socket are on the private /run: {raw:?}"
    );
    assert!(
        inside.stdout.contains("inside: ok"),
        "a docker CLI inside the service meets the proxy: {}",
        inside.text()
    );
}

// ---------------------------------------------------------------------------
// The kit (examples/, issue 12), re-enacted from its own files: what a runner
// or the kubelet would read there is read there, and only what this runner
// host cannot be (a registry, a GitLab checkout) is put in by the test.

/// A job or build container of the kit runs as the job image (it has the
/// docker CLI), whatever image the file names, but never as ours.
fn job_container_image(image: &str) {
    assert!(
        !image.is_empty() && !kit::is_our_image(image),
        "{image:?}: not a job image"
    );
}

/// Whether a GitLab `allowed_*` list admits `image`: the entries are globs;
/// the kit uses exact names and `*` at the end.
fn gitlab_allows(list: &serde_json::Value, image: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => p == image,
        })
}

/// Runs a kit job to its end: it must succeed without meeting "Cannot
/// connect", and its image must have been built and run. Its output.
fn kit_job(scope: &Scope, what: &str, svc: &str, spec: &JobSpec) -> String {
    let out = scope.run_job("job", spec);
    let printed = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.success() && printed.contains(BUILT_GREETING) && !printed.contains(NO_DAEMON),
        "{what} failed:\n{}\n--- service log ---\n{}",
        out.text(),
        scope.log_tail(svc, 40)
    );
    eprintln!("{what} passed in {:?}", out.elapsed);
    printed
}

/// h. GitLab's docker executor as `examples/gitlab-docker` sets it up:
/// the service (image, alias, variables, command) from `.gitlab-ci.yml`,
/// what the runner allows, privileges and shares from `config.toml`, then
/// the runner's TCP wait and the job's own `script:` in a checkout of the
/// build context. Its `docker run` prints the built image's greeting, and
/// its `docker info` shows the mirror the service command gave dockerd.
#[test]
fn h_gitlab_docker_executor_from_the_kit() {
    runner();
    let ci = kit::load_one(&kit::example("gitlab-docker/.gitlab-ci.yml"));
    let config = kit::load_one(&kit::example("gitlab-docker/config.toml"));
    let docker = &config["runners"][0]["docker"];
    assert_eq!(kit::text(&config["runners"][0], "executor"), "docker");
    let [(job_name, service)] = &kit::gitlab_services(&ci)[..] else {
        panic!("expected one job with our service in .gitlab-ci.yml");
    };
    let job = &ci[job_name];
    let service_name = kit::text(service, "name");
    assert!(
        gitlab_allows(&docker["allowed_services"], service_name),
        "config.toml does not allow {service_name}"
    );
    assert!(
        gitlab_allows(&docker["allowed_images"], kit::text(job, "image")),
        "config.toml does not allow the job image"
    );
    let privileged_service = docker["services_privileged"]
        .as_bool()
        .or(docker["privileged"].as_bool())
        == Some(true)
        && gitlab_allows(&docker["allowed_privileged_services"], service_name);
    assert!(
        privileged_service,
        "config.toml does not run {service_name} privileged"
    );
    assert_eq!(
        docker["privileged"].as_bool(),
        Some(false),
        "the job would run privileged"
    );
    job_container_image(kit::text(job, "image"));

    let scope = Scope::new("h");
    let net = scope.network();
    // Global and job variables go to the job and to every service; service
    // variables to that service only.
    let mut job_env = kit::variables(ci.get("variables"));
    job_env.extend(kit::variables(job.get("variables")));
    let mut service_env = job_env.clone();
    service_env.extend(kit::variables(service.get("variables")));
    // The runner's volumes: a path alone is a volume of the job's, mounted
    // in the job and in its services.
    let mut volumes = Vec::new();
    for v in kit::strings(docker.get("volumes")) {
        assert!(
            !v.contains(':'),
            "{v}: the re-enactment mounts container paths only"
        );
        volumes.push(format!("{}:{v}", scope.volume("vol")));
    }
    let svc = scope.start_service(
        "svc",
        &ServiceSpec {
            network: Some(net.clone()),
            alias: Some(kit::text(service, "alias").to_owned()),
            env: service_env,
            volumes: volumes.clone(),
            command: kit::strings(service.get("command")),
            ..Default::default()
        },
    );
    scope
        .runner_wait(&net)
        .unwrap_or_else(|e| panic!("{e}\n--- service log ---\n{}", scope.log_tail(&svc, 40)));
    // The checkout: the build context as the project directory, and the
    // variables GitLab predefines that the script uses.
    let checkout = "/builds/kit/project";
    job_env.extend([
        (
            "CI_REGISTRY_IMAGE".to_owned(),
            "registry.example/kit/project".to_owned(),
        ),
        ("CI_COMMIT_SHORT_SHA".to_owned(), "0badc0de".to_owned()),
    ]);
    volumes.push(format!("{}:{checkout}:ro", scope.build_context().display()));
    let script = format!(
        "set -eo pipefail\n{}",
        kit::strings(job.get("script")).join("\n")
    );
    let printed = kit_job(
        &scope,
        "h: the kit's GitLab job",
        &svc,
        &JobSpec {
            network: Some(net),
            env: job_env,
            volumes,
            script,
            workdir: Some(checkout.to_owned()),
            ..Default::default()
        },
    );
    for arg in kit::strings(service.get("command")) {
        if let Some(mirror) = arg.strip_prefix("--registry-mirror=") {
            assert!(
                printed.contains(mirror.trim_end_matches('/')),
                "dockerd does not show the mirror {mirror}:\n{printed}"
            );
        }
    }
}

/// An httpGet probe of a pod spec: its path and port.
fn http_probe(container: &serde_json::Value, probe: &str) -> (String, u64) {
    let get = &container[probe]["httpGet"];
    let port = get["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("{probe}: the kit's probes use a numeric port"));
    (kit::text(get, "path").to_owned(), port)
}

/// Polls an httpGet probe as the kubelet does: every `periodSeconds`, up to
/// `failureThreshold` failures (Kubernetes' defaults 10 s and 3). Ok with
/// the number of the try that passed.
fn kubelet_probe(container: &serde_json::Value, probe: &str, ip: &str) -> Result<u64, String> {
    let (path, port) = http_probe(container, probe);
    let spec = &container[probe];
    let period = Duration::from_secs(spec["periodSeconds"].as_u64().unwrap_or(10));
    let tries = spec["failureThreshold"].as_u64().unwrap_or(3);
    let mut last = (0, String::new());
    for n in 1..=tries {
        last = support::http_get(&format!("{ip}:{port}"), &path);
        if (200..400).contains(&last.0) {
            return Ok(n);
        }
        thread::sleep(period);
    }
    Err(format!(
        "{probe} {path} on {ip}:{port} failed {tries} times; last answer {last:?}"
    ))
}

/// A pod's volumeMounts as `docker run -v` arguments, with the pod's
/// emptyDir volumes made docker volumes (tmpfs for `medium: Memory`).
fn pod_mounts(
    container: &serde_json::Value,
    volumes: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let vol = &volumes[kit::text(m, "name")];
            let ro = if m["readOnly"].as_bool() == Some(true) {
                ":ro"
            } else {
                ""
            };
            format!("{vol}:{}{ro}", kit::text(m, "mountPath"))
        })
        .collect()
}

/// i. The pod of `examples/kubernetes-pod` as the kubelet runs it: the
/// emptyDir volumes (a tmpfs for `medium: Memory`), the native sidecar
/// started first with its env and args, its startupProbe polled at the
/// file's period until it passes, then the build container in the
/// sidecar's network namespace with its own command, env and mounts. The
/// readiness and liveness probes pass while it runs; once it has exited,
/// the sidecar is stopped with the pod's grace period, and ends in it, with
/// exit code 0.
#[test]
fn i_kubernetes_pod_from_the_kit() {
    let r = runner();
    let pod = kit::load_one(&kit::example("kubernetes-pod/pod.yaml"));
    let spec = &pod["spec"];
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    let scope = Scope::new("i");
    let mut volumes = std::collections::HashMap::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let empty = v
            .get("emptyDir")
            .unwrap_or_else(|| panic!("{v}: only emptyDir volumes are re-enacted"));
        let opts: &[&str] = if kit::text(empty, "medium") == "Memory" {
            &["type=tmpfs", "device=tmpfs"]
        } else {
            &[]
        };
        let name = kit::text(v, "name");
        volumes.insert(name.to_owned(), scope.volume_with(name, opts));
    }
    let sidecars: Vec<&serde_json::Value> = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| kit::text(c, "restartPolicy") == "Always")
        .collect();
    let [sidecar] = sidecars[..] else {
        panic!("expected one native sidecar in pod.yaml")
    };
    assert!(kit::is_our_image(kit::text(sidecar, "image")));
    assert!(
        sidecar.get("command").is_none(),
        "the sidecar keeps the image's entrypoint"
    );
    assert_eq!(
        sidecar["securityContext"]["privileged"].as_bool(),
        Some(true)
    );
    let started = Instant::now();
    let svc = scope.start_service(
        "dind",
        &ServiceSpec {
            env: kit::container_env(sidecar),
            volumes: pod_mounts(sidecar, &volumes),
            command: kit::strings(sidecar.get("args")),
            ..Default::default()
        },
    );
    let ip = scope.inspect(&svc, "{{.NetworkSettings.IPAddress}}");
    let log = |scope: &Scope| scope.log_tail(&svc, 40);
    let tries = kubelet_probe(sidecar, "startupProbe", &ip)
        .unwrap_or_else(|e| panic!("{e}\n{}", log(&scope)));
    eprintln!(
        "i: startupProbe passed on try {tries}, {:?} after the sidecar started",
        started.elapsed()
    );

    let [main] = &spec["containers"].as_array().expect("containers")[..] else {
        panic!("expected one build container in pod.yaml")
    };
    job_container_image(kit::text(main, "image"));
    let mut command = kit::strings(main.get("command"));
    command.extend(kit::strings(main.get("args")));
    assert!(
        !command.is_empty(),
        "the build container's command is the job: it must be in pod.yaml"
    );
    let build = thread::scope(|s| {
        let build = s.spawn(|| {
            scope.run_job(
                "build",
                &JobSpec {
                    network: Some(format!("container:{svc}")),
                    env: kit::container_env(main),
                    volumes: pod_mounts(main, &volumes),
                    command: Some(command.clone()),
                    ..Default::default()
                },
            )
        });
        for probe in ["readinessProbe", "livenessProbe"] {
            kubelet_probe(sidecar, probe, &ip).unwrap_or_else(|e| panic!("{e}\n{}", log(&scope)));
        }
        build.join().unwrap()
    });
    let printed = format!("{}{}", build.stdout, build.stderr);
    assert!(
        build.success() && !printed.contains(NO_DAEMON),
        "the kit pod's build container failed:\n{}\n--- sidecar log ---\n{}",
        build.text(),
        log(&scope)
    );
    // The build container has exited: the kubelet stops the sidecar with
    // what is left of the grace period, all of it here.
    let stop = r.run(
        &["stop", "--time", &grace.to_string(), &svc],
        Duration::from_secs(grace + 30),
    );
    assert!(stop.success(), "{}", stop.text());
    let exit = scope.inspect(&svc, "{{.State.ExitCode}}");
    eprintln!(
        "i: build container {:?}, sidecar stopped in {:?} (exit {exit}, grace {grace} s)",
        build.elapsed, stop.elapsed
    );
    assert_eq!(
        exit,
        "0",
        "the sidecar did not stop cleanly:\n{}",
        log(&scope)
    );
    assert!(
        stop.elapsed < Duration::from_secs(grace),
        "the sidecar outlived the {grace} s grace period"
    );
}

/// j. The workflow of `examples/github-actions` as the Actions runner runs
/// a container job: a network, the service under its label with the
/// workflow's env, volumes and `options:` (`--privileged` as this runner
/// host grants it, the rest as written, its `--health-cmd` among them),
/// then the runner's wait until docker reports the service healthy, then
/// the job container with its env and volumes running the steps, the
/// checkout being the build context.
#[test]
fn j_github_actions_service_from_the_kit() {
    runner();
    let wf = kit::load_one(&kit::example("github-actions/docker-build.yml"));
    let (_, job) = wf["jobs"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, j)| {
            j["services"]
                .as_object()
                .is_some_and(|s| s.values().any(|v| kit::is_our_image(kit::text(v, "image"))))
        })
        .expect("a job with our image as a service");
    let [(label, service)] = &job["services"]
        .as_object()
        .unwrap()
        .iter()
        .collect::<Vec<_>>()[..]
    else {
        panic!("expected one service")
    };
    let scope = Scope::new("j");
    let net = scope.network();
    let mut named = std::collections::HashMap::new();
    let mut mounts = |list: &serde_json::Value| -> Vec<String> {
        kit::strings(Some(list))
            .iter()
            .map(|v| {
                let (name, path) = v.split_once(':').expect("volume as name:path");
                assert!(
                    !name.starts_with('/'),
                    "{v}: the re-enactment mounts named volumes only"
                );
                let vol = named
                    .entry(name.to_owned())
                    .or_insert_with(|| scope.volume(name))
                    .clone();
                format!("{vol}:{path}")
            })
            .collect()
    };
    let service_volumes = mounts(&service["volumes"]);
    let container = &job["container"];
    let mut job_volumes = mounts(&container["volumes"]);
    let options = kit::shell_words(kit::text(service, "options"));
    assert!(
        options.iter().any(|o| o == "--health-cmd"),
        "the service has no --health-cmd"
    );
    let extra_args: Vec<String> = options
        .into_iter()
        .filter(|o| o != "--privileged")
        .collect();
    let svc = scope.start_service(
        "svc",
        &ServiceSpec {
            network: Some(net.clone()),
            alias: Some((*label).clone()),
            env: kit::variables(service.get("env")),
            volumes: service_volumes,
            extra_args,
            ..Default::default()
        },
    );
    let started = Instant::now();
    let healthy = loop {
        let status = scope.inspect(&svc, "{{if .State.Health}}{{.State.Health.Status}}{{end}}");
        match status.as_str() {
            "healthy" => break started.elapsed(),
            "starting" if started.elapsed() < Duration::from_secs(120) => {
                thread::sleep(Duration::from_millis(250))
            }
            _ => panic!(
                "the service is {status:?}, not healthy:\n{}",
                scope.log_tail(&svc, 40)
            ),
        }
    };
    eprintln!("j: the service reported healthy {healthy:?} after it started");

    job_container_image(kit::text(container, "image"));
    let workspace = "/__w/kit/kit";
    let mut steps = vec!["set -e".to_owned()];
    for step in job["steps"].as_array().expect("steps") {
        if let Some(uses) = step["uses"].as_str() {
            assert!(
                uses.starts_with("actions/checkout@"),
                "{uses}: only the checkout is re-enacted"
            );
            job_volumes.push(format!(
                "{}:{workspace}:ro",
                scope.build_context().display()
            ));
            continue;
        }
        let run = kit::text(step, "run").replace("${{ github.sha }}", "0badc0de");
        assert!(
            !run.contains("${{"),
            "{run}: an expression the re-enactment does not know"
        );
        steps.push(run);
    }
    kit_job(
        &scope,
        "j: the kit's workflow job",
        &svc,
        &JobSpec {
            network: Some(net),
            env: kit::variables(container.get("env")),
            volumes: job_volumes,
            script: steps.join("\n"),
            workdir: Some(workspace.to_owned()),
            ..Default::default()
        },
    );
}

/// The size of the download in [`l_a_job_network_in_a_pod_with_mtu_1400`].
const BLOB_BYTES: usize = 2 << 20;

/// l. The issue-12 case: a pod whose network has an MTU of 1400, a job that
/// creates its own network (as `docker network create` or compose do) and a
/// transfer over it. GitLab's docs set `DOCKER_DRIVER: overlay2`, and jobs
/// pass their variables to services, so the service gets it too.
///
/// A path MTU black hole, made faithfully on one host: the server sits on
/// the 1400 network with its own link at 1500 (as a server across an
/// overlay sees 1500), and sends one packet per segment (no segmentation
/// offload, which would carry big packets past the MTU check). It answers
/// a client's MSS 1460 with 1500-byte packets; the 1400 link drops them and
/// says nothing, as overlays whose ICMP is filtered do. A client whose link
/// has MTU 1400 offers MSS 1360 and gets its bytes. The job's network must
/// get 1400 from the service. A control network created with MTU 1500 must
/// hang: if it does not, this host cannot show a black hole and the test
/// fails rather than pass without proof.
#[test]
fn l_a_job_network_in_a_pod_with_mtu_1400() {
    let scope = Scope::new("l");
    let net = scope.network_with(&["com.docker.network.driver.mtu=1400"]);
    let (server, server_ip, sha) = blob_server(&scope, &net);
    let script = POD_MTU_SCRIPT.replace("SERVER", &server_ip.to_string());
    let job = Job {
        transport: Transport::Tls,
        arrival: Arrival::RunnerWait,
        command: &[],
        service_env: &[("DOCKER_DRIVER", "overlay2")],
        script: &script,
    };
    let (_, printed) = gitlab_job_on(&scope, &net, &job).unwrap_or_else(|e| {
        panic!(
            "the job failed: {e}\n--- server log ---\n{}",
            scope.log_tail(&server, 20)
        )
    });
    eprintln!("h: {printed}");
    let (job_part, control) = printed
        .split_once("== control network")
        .unwrap_or_else(|| panic!("the job did not reach its control network:\n{printed}"));
    assert!(
        control.contains("eth0 mtu: 1500") && control.contains("download failed"),
        "the control network (MTU 1500) got the blob: this host shows no black hole, so the test cannot tell the fix from none:\n{printed}"
    );
    assert!(
        job_part.contains("network option: 1400"),
        "the job's network has no MTU 1400 option:\n{printed}"
    );
    assert!(
        job_part.contains("job network eth0 mtu: 1400"),
        "a container on the job's network has no MTU 1400:\n{printed}"
    );
    assert!(
        job_part.contains("default bridge eth0 mtu: 1400"),
        "a container on the default bridge has no MTU 1400:\n{printed}"
    );
    assert!(
        job_part.contains(&format!("sha256: {sha}")),
        "the 2 MB download over the job's network did not complete intact (want sha256 {sha}):\n{printed}"
    );
    let driver = printed
        .lines()
        .find_map(|l| l.strip_prefix("storage driver: "))
        .unwrap_or_default();
    assert!(!driver.trim().is_empty(), "no storage driver:\n{printed}");
}

/// What the job of [`l_a_job_network_in_a_pod_with_mtu_1400`] runs: an
/// image with busybox built in the service, a network of its own, and the
/// download from SERVER over it; then the same over a network created with
/// MTU 1500.
const POD_MTU_SCRIPT: &str = r#"
set -u
docker build -q -t pod-mtu /ctx >/dev/null || { echo "docker build failed"; exit 102; }
echo "storage driver: $(docker info --format '{{.Driver}}')"
echo "default bridge eth0 mtu: $(docker run --rm pod-mtu /bin/busybox cat /sys/class/net/eth0/mtu)"
fetch() {
  docker run --rm --network "$1" pod-mtu /bin/busybox sh -c '
    echo "$0 eth0 mtu: $(/bin/busybox cat /sys/class/net/eth0/mtu)"
    /bin/busybox timeout 20 /bin/busybox wget -O /blob http://SERVER:8080/blob 2>/dev/null \
      || { echo "download failed"; exit 0; }
    echo "sha256: $(/bin/busybox sha256sum /blob | /bin/busybox cut -d" " -f1)"' "$2"
}
docker network create jobnet >/dev/null || { echo "network create failed"; exit 104; }
echo "network option: $(docker network inspect jobnet --format '{{index .Options "com.docker.network.driver.mtu"}}')"
fetch jobnet "job network"
docker network create -o com.docker.network.driver.mtu=1500 control >/dev/null || exit 105
echo "== control network"
fetch control "control network"
"#;

/// A server of [`BLOB_BYTES`] random bytes on `net`, port 8080, whose own
/// link has MTU 1500 and sends one packet per TCP segment. Returns its
/// name, address and the blob's sha256.
fn blob_server(scope: &Scope, net: &str) -> (String, std::net::Ipv4Addr, String) {
    let r = runner();
    let bb = format!("{}:/bin/busybox:ro", e2e_support::busybox().display());
    let serve = format!(
        "busybox mkdir -p /www && busybox head -c {BLOB_BYTES} /dev/urandom > /www/blob \
         && busybox sha256sum /www/blob > /www/sum && exec busybox httpd -f -p 8080 -h /www"
    );
    let name = scope.start_helper(
        "blob",
        &[
            "--network",
            net,
            "-v",
            &bb,
            &r.job_image,
            "/bin/busybox",
            "sh",
            "-c",
            &serve,
        ],
    );
    let ip = scope
        .inspect(
            &name,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        )
        .parse()
        .expect("the blob server has an IPv4 address");
    // The runner engine runs on this machine: its containers' network
    // namespaces are reachable with nsenter (the tests run as root).
    let pid = scope.inspect(&name, "{{.State.Pid}}");
    let set = Command::new("nsenter")
        .args([
            "-t",
            &pid,
            "-n",
            "ip",
            "link",
            "set",
            "eth0",
            "mtu",
            "1500",
            "gso_max_segs",
            "1",
        ])
        .output()
        .expect("nsenter and ip (iproute2) are needed to shape the server's link");
    assert!(
        set.status.success(),
        "cannot set the server's link: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = r.run(
            &["exec", &name, "busybox", "cat", "/www/sum"],
            Duration::from_secs(10),
        );
        if let Some(sha) = out
            .stdout
            .split_whitespace()
            .next()
            .filter(|s| s.len() == 64)
        {
            return (name, ip, sha.to_owned());
        }
        assert!(
            Instant::now() < deadline,
            "the blob server did not come up: {}\n{}",
            out.text(),
            scope.log_tail(&name, 20)
        );
        thread::sleep(Duration::from_millis(200));
    }
}
