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
//! | `h_a_job_network_in_a_pod_with_mtu_1400` | the service on a runner network of MTU 1400, `DOCKER_DRIVER: overlay2`; the job creates a network and downloads 2 MB over it from a server on the runner network, whose 1500-byte packets the pod network drops without a word; a control network of MTU 1500 must hang |
//! | `g_the_first_connect_is_always_answered` | an API call made at the first successful TCP connect to 2376 works; with `DIND_LISTEN_WHEN=ready` the port never opens before the API answers |

mod e2e_support;
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

/// The size of the download in [`h_a_job_network_in_a_pod_with_mtu_1400`].
const BLOB_BYTES: usize = 2 << 20;

/// h. The issue-12 case: a pod whose network has an MTU of 1400, a job that
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
fn h_a_job_network_in_a_pod_with_mtu_1400() {
    let scope = Scope::new("h");
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

/// What the job of [`h_a_job_network_in_a_pod_with_mtu_1400`] runs: an
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
