//! The fault matrix (issue 13): a real dockerd under the real supervisor,
//! clients through the proxy (mutual TLS and the unix socket), and one
//! fault per test. Each row asserts what the client sees (an answer, a
//! Docker-shaped error or EOF within the hold timeout plus a margin, never
//! a hang), that the service is Ready again, that no zombie is left, and
//! that the supervisor's fds and RSS are back near a baseline.
//!
//! Each row prints `fault-row NAME: took …, recovered in …` for the
//! README's table (`--nocapture`).
//!
//! The `docker save` row moves `DIND_FAULTS_SAVE_MIB` MiB (64 by default,
//! to keep CI short; 1024 in the long mode the README names).

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{children_with_state, Service, ServiceOptions};

/// The hold timeout these services run with: short, so a client that
/// would wait for it shows up fast.
const HOLD: Duration = Duration::from_secs(10);
/// What a client may take beyond the hold: its own connect and the answer
/// on a loaded two-core machine.
const CLIENT_MARGIN: Duration = Duration::from_secs(10);
/// How long a killed dockerd may take to be Ready again: backoff (1 s) and
/// its start, which takes several seconds under other tests' load.
const RECOVERY: Duration = Duration::from_secs(60);
/// Fds that may differ from the baseline once settled: the new dockerd's
/// stdout and stderr relays replace the old ones, and a connection task may
/// still be closing; more than this is a leak.
const FD_MARGIN: usize = 4;
/// RSS growth allowed over the baseline. The allocator keeps freed pages
/// for reuse (a fault's buffers, its error answers): growth beyond this
/// is what a leak of buffers per request would show.
const RSS_MARGIN_KIB: u64 = 16 << 10;

fn hold_env() -> Vec<(String, String)> {
    vec![("DIND_HOLD_TIMEOUT".into(), format!("{}s", HOLD.as_secs()))]
}

fn start_with(extra: &[(&str, &str)], namespace_setup: &[&str]) -> Service {
    let mut env = hold_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Service::start(ServiceOptions {
        env,
        namespace_setup: namespace_setup.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn start() -> Service {
    let svc = start_with(&[], &[]);
    svc.wait_ready();
    svc
}

/// The public unix socket (`DOCKER_HOST`), as a job reaches it.
fn api_sock(svc: &Service) -> PathBuf {
    svc.dir.path().join("api.sock")
}

/// The docker CLI on the public unix socket.
fn unix_cli(svc: &Service) -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", format!("unix://{}", api_sock(svc).display()))
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null());
    c
}

fn tls_cli(svc: &Service) -> Command {
    svc.tls_cli(Path::new("docker"))
}

/// The supervisor's open fds: sockets, and everything else.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fds {
    sockets: usize,
    other: usize,
}

fn fds(pid: Pid) -> Fds {
    let mut out = Fds {
        sockets: 0,
        other: 0,
    };
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        match fs::read_link(e.path()) {
            Ok(t) if t.to_string_lossy().starts_with("socket:") => out.sockets += 1,
            Ok(_) => out.other += 1,
            Err(_) => {}
        }
    }
    out
}

fn rss_kib(pid: Pid) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Baseline {
    fds: Fds,
    rss_kib: u64,
}

/// `n` concurrent requests on the public unix socket: (status, body) each,
/// status 0 for EOF without an answer.
fn burst(svc: &Service, n: usize, path: &str) -> Vec<thread::JoinHandle<(u16, String)>> {
    (0..n)
        .map(|_| {
            let sock = api_sock(svc);
            let path = path.to_owned();
            thread::spawn(move || match UnixStream::connect(&sock) {
                Ok(s) => {
                    s.set_read_timeout(Some(HOLD + CLIENT_MARGIN)).unwrap();
                    support::exchange(s, "GET", &path)
                }
                Err(_) => (0, String::new()),
            })
        })
        .collect()
}

/// The baseline, after a warm-up that fills the proxy's pool of idle
/// dockerd connections as far as a burst of 200 does (it keeps up to 128):
/// after a fault the pool refills to no more than that.
fn baseline(svc: &Service) -> Baseline {
    for h in burst(svc, 200, "/version") {
        assert_eq!(h.join().unwrap().0, 200);
    }
    thread::sleep(Duration::from_millis(300));
    let pid = svc.supervisor_pid();
    Baseline {
        fds: fds(pid),
        rss_kib: rss_kib(pid),
    }
}

/// The restarts counted so far.
fn restarts(health: &str) -> u64 {
    let (_, text) = support::http_get(health, "/metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("dind_dockerd_restarts_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Measures the time to recover from a fault that restarts dockerd; call
/// it just before the fault. From then until the restart is counted and
/// then a request on the public unix socket is answered 200 with
/// `/readyz` 200.
fn watch_back(svc: &Service) -> thread::JoinHandle<Duration> {
    let health = format!("127.0.0.1:{}", svc.health_port);
    let sock = api_sock(svc);
    let before = restarts(&health);
    let start = Instant::now();
    thread::spawn(move || {
        while restarts(&health) == before {
            assert!(start.elapsed() < RECOVERY, "no restart");
            thread::sleep(Duration::from_millis(20));
        }
        loop {
            assert!(start.elapsed() < RECOVERY, "not back");
            if let Ok(s) = UnixStream::connect(&sock) {
                s.set_read_timeout(Some(HOLD + CLIENT_MARGIN)).unwrap();
                if support::exchange(s, "GET", "/version").0 == 200
                    && support::http_get(&health, "/readyz").0 == 200
                {
                    return start.elapsed();
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    })
}

/// A dockerd SIGKILL; `back` ends with the time to recover.
struct Fault {
    at: Instant,
    back: thread::JoinHandle<Duration>,
}

fn kill_dockerd(svc: &Service) -> Fault {
    let back = watch_back(svc);
    kill(svc.dockerd_pid(), Signal::SIGKILL).unwrap();
    Fault {
        at: Instant::now(),
        back,
    }
}

/// Waits for Ready (`/readyz` 200) and a working API through both doors,
/// then for the supervisor to settle: no zombie child, fds and RSS near
/// the baseline.
fn recovered(svc: &Service, base: &Baseline) {
    support::until(svc, "Ready again", RECOVERY, || {
        svc.health("/readyz").0 == 200
    });
    assert_eq!(svc.health("/livez").0, 200);
    support::ok(unix_cli(svc).arg("version"));
    support::ok(tls_cli(svc).arg("version"));
    // The same burst as the warm-up: the pool is as full as before.
    for h in burst(svc, 200, "/version") {
        assert_eq!(h.join().unwrap().0, 200);
    }
    let pid = svc.supervisor_pid();
    let settled = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "{what} did not settle:\n{}",
                svc.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    settled("zombies", &|| {
        children_with_state(pid).iter().all(|&(_, s)| s != 'Z')
    });
    settled("fds", &|| {
        let now = fds(pid);
        now.sockets <= base.fds.sockets + FD_MARGIN && now.other <= base.fds.other + FD_MARGIN
    });
    let rss = rss_kib(pid);
    assert!(
        rss <= base.rss_kib + RSS_MARGIN_KIB,
        "RSS {rss} KiB, baseline {} KiB",
        base.rss_kib
    );
    eprintln!(
        "fault-settled fds {:?} -> {:?}, rss {} -> {rss} KiB",
        base.fds,
        fds(pid),
        base.rss_kib
    );
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn bounded(mut child: Child, limit: Duration, what: &str) -> (Output, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The end of a kill row: the time back (from the fault's watcher), the
/// settled supervisor, and the row's report line.
fn settled_after(svc: &Service, base: &Baseline, fault: Fault, row: &str, started: Instant) {
    let to_ready = fault.back.join().unwrap();
    recovered(svc, base);
    report(row, started, to_ready);
}

fn report(row: &str, started: Instant, to_ready: Duration) {
    eprintln!(
        "fault-row {row}: took {:.1}s, recovered in {:.1}s",
        started.elapsed().as_secs_f64(),
        to_ready.as_secs_f64()
    );
}

/// A ustar header for one regular file `name` of `size` bytes.
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Writes a tar holding one file of `size` zero bytes to `w`, in 64 KiB
/// pieces, calling `each` after every piece with the bytes written so far;
/// stops at the first write error.
fn write_zeros_tar(
    w: &mut impl Write,
    name: &str,
    size: u64,
    mut each: impl FnMut(u64),
) -> std::io::Result<()> {
    w.write_all(&tar_header(name, size))?;
    let piece = vec![0u8; 64 << 10];
    let mut sent = 0;
    while sent < size {
        let n = piece.len().min((size - sent) as usize);
        w.write_all(&piece[..n])?;
        sent += n as u64;
        each(sent);
    }
    // Padding to 512, then the two zero blocks that end an archive.
    let pad = (512 - size % 512) % 512;
    w.write_all(&vec![0u8; pad as usize + 1024])
}

/// A Docker-shaped error answer: 5xx with a JSON `message`.
fn docker_shaped(status: u16, body: &str) -> bool {
    (500..600).contains(&status)
        && serde_json::from_str::<serde_json::Value>(body.trim())
            .ok()
            .and_then(|v| v.get("message").map(|m| m.is_string()))
            == Some(true)
}

#[test]
fn dockerd_killed_during_a_build_context_upload() {
    let t = Instant::now();
    let svc = start();
    let base = baseline(&svc);
    let mut s = UnixStream::connect(api_sock(&svc)).unwrap();
    let size: u64 = 256 << 20;
    write!(
        s,
        "POST /build?t=fault HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        size + 512 + (512 - size % 512) % 512 + 1024
    )
    .unwrap();
    let mut killed = None;
    // Paced: 64 KiB every 2 ms until the kill lands after 8 MiB, then as
    // fast as the proxy takes it (a write error ends it early).
    let _ = write_zeros_tar(&mut s, "big", size, |sent| {
        if killed.is_none() {
            thread::sleep(Duration::from_millis(2));
            if sent >= 8 << 20 {
                killed = Some(kill_dockerd(&svc));
            }
        }
    });
    let fault = killed.expect("the kill landed mid-upload");
    s.set_read_timeout(Some(HOLD + CLIENT_MARGIN)).unwrap();
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // EOF (or a reset) without an answer, or a Docker-shaped error; never
    // a hang (the read timeout would fail the read as WouldBlock).
    assert!(
        read.as_ref().err().map(|e| e.kind()) != Some(std::io::ErrorKind::WouldBlock),
        "the upload's answer hung"
    );
    assert!(status == 0 || docker_shaped(status, body), "{answer}");
    assert!(fault.at.elapsed() < HOLD + CLIENT_MARGIN + Duration::from_secs(5));
    let to_ready = fault.back.join().unwrap();
    recovered(&svc, &base);
    report("kill-during-build-upload", t, to_ready);
}

/// A container that sleeps, for exec.
fn sleeper(svc: &Service) -> String {
    let image = svc.load_busybox();
    support::ok(unix_cli(svc).args(["run", "-d", "--name", "sleeper", image, "sleep", "1000"]))
        .trim()
        .to_owned()
}

#[test]
fn dockerd_killed_during_exec_with_stdin_streaming_over_tls() {
    let t = Instant::now();
    let svc = start();
    sleeper(&svc);
    let base = baseline(&svc);
    let mut exec = tls_cli(&svc)
        .args(["exec", "-i", "sleeper", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = exec.stdin.take().unwrap();
    let mut stdout = BufReader::new(exec.stdout.take().unwrap());
    // The stream works before the fault: a line goes in and comes back.
    writeln!(stdin, "before").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "before\n");
    let feeder = thread::spawn(move || {
        // Keeps streaming until the pipe breaks (the client ended).
        for i in 0.. {
            if writeln!(stdin, "line {i}").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let drain = thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    thread::sleep(Duration::from_millis(500));
    let killed = kill_dockerd(&svc);
    // The client ends on its own, its stream cut, within the bound.
    let (out, took) = bounded(exec, HOLD + CLIENT_MARGIN, "exec -i after dockerd's kill");
    eprintln!("exec -i ended {took:?} after the kill: {}", out.status);
    drain.join().unwrap();
    feeder.join().unwrap();
    settled_after(&svc, &base, killed, "kill-during-exec-stdin", t);
}

/// How big the saved image is: `DIND_FAULTS_SAVE_MIB`, 64 MiB by default.
fn save_size() -> u64 {
    std::env::var("DIND_FAULTS_SAVE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(64)
        << 20
}

#[test]
fn dockerd_killed_during_a_big_docker_save_over_tls() {
    let t = Instant::now();
    let svc = start();
    let size = save_size();
    // The image: one layer holding a file of zeros, imported from a tar
    // written on the fly (no file of that size on disk here).
    let mut import = unix_cli(&svc)
        .args(["import", "-", "fault/big:latest"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    write_zeros_tar(&mut import.stdin.take().unwrap(), "zeros", size, |_| {}).unwrap();
    let (out, _) = bounded(import, Duration::from_secs(300), "docker import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = baseline(&svc);
    let mut save = tls_cli(&svc)
        .args(["save", "fault/big:latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = save.stdout.take().unwrap();
    // A quarter of it has come, then dockerd dies.
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while got < size / 4 {
        match stdout.read(&mut buf).unwrap() {
            0 => panic!("save ended after {got} bytes, before the kill"),
            n => got += n as u64,
        }
    }
    let killed = kill_dockerd(&svc);
    let reader = thread::spawn(move || {
        let mut rest = 0u64;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            rest += n as u64;
        }
        rest
    });
    let (out, _) = bounded(
        save,
        HOLD + CLIENT_MARGIN,
        "docker save after dockerd's kill",
    );
    let rest = reader.join().unwrap();
    assert!(
        !out.status.success(),
        "a cut save must not look complete ({} + {rest} bytes)",
        got
    );
    settled_after(&svc, &base, killed, "kill-during-save", t);
}

#[test]
fn dockerd_killed_during_events_follow_ends_the_stream() {
    let t = Instant::now();
    let svc = start();
    let base = baseline(&svc);
    let mut clients = Vec::new();
    for mut cli in [unix_cli(&svc), tls_cli(&svc)] {
        clients.push(
            cli.args(["events", "--format", "{{.Action}}"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    // Both are subscribed once an event reaches them.
    svc.load_busybox();
    support::ok(unix_cli(&svc).args(["tag", support::BUSYBOX_IMAGE, "fault/tagged"]));
    let mut lines: Vec<_> = clients
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for l in &mut lines {
        let mut line = String::new();
        l.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "an event before the kill");
    }
    let killed = kill_dockerd(&svc);
    for c in clients {
        let (_, took) = bounded(c, HOLD + CLIENT_MARGIN, "events -f after dockerd's kill");
        eprintln!("events -f ended {took:?} after the kill");
    }
    settled_after(&svc, &base, killed, "kill-during-events-follow", t);
}

#[test]
fn dockerd_killed_during_a_burst_of_200_requests() {
    let t = Instant::now();
    let svc = start();
    svc.load_busybox();
    let base = baseline(&svc);
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let sock = api_sock(&svc);
            let done = done.clone();
            thread::spawn(move || {
                // Each client asks five times in a row: the kill lands
                // among answers, requests in flight and new connects.
                let mut seen = Vec::new();
                for _ in 0..5 {
                    let path = if i % 2 == 0 {
                        "/containers/json?all=1"
                    } else {
                        "/images/json"
                    };
                    let begun = Instant::now();
                    let answer = match UnixStream::connect(&sock) {
                        Ok(s) => {
                            s.set_read_timeout(Some(HOLD + CLIENT_MARGIN)).unwrap();
                            support::exchange(s, "GET", path)
                        }
                        Err(_) => (0, String::new()),
                    };
                    seen.push((answer, begun.elapsed()));
                    done.fetch_add(1, Ordering::SeqCst);
                }
                seen
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the burst is stuck"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let killed = kill_dockerd(&svc);
    let mut tally = std::collections::BTreeMap::new();
    for h in handles {
        for ((status, body), took) in h.join().unwrap() {
            assert!(took < HOLD + CLIENT_MARGIN, "a request took {took:?}");
            assert!(
                status == 200 || status == 0 || docker_shaped(status, &body),
                "{status} {body}"
            );
            *tally.entry(status).or_insert(0) += 1;
        }
    }
    eprintln!("burst answers by status: {tally:?}");
    settled_after(&svc, &base, killed, "kill-during-burst-200", t);
}

#[test]
fn containerd_killed_under_dockerd_is_restarted_by_it() {
    let t = Instant::now();
    let svc = start();
    let image = svc.load_busybox();
    let base = baseline(&svc);
    let dockerd = svc.dockerd_pid();
    let containerd = support::children(dockerd)
        .into_iter()
        .find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "containerd")
        })
        .expect("containerd runs under dockerd");
    kill(containerd, Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    // A container run after the kill works once dockerd has restarted
    // containerd; until then it fails with dockerd's error, not a hang.
    let mut tries = 0;
    loop {
        tries += 1;
        let run = unix_cli(&svc)
            .args(["run", "--rm", image, "true"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, _) = bounded(
            run,
            HOLD + CLIENT_MARGIN,
            "docker run after containerd's kill",
        );
        if out.status.success() {
            break;
        }
        assert!(
            killed.elapsed() < RECOVERY,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        svc.dockerd_pid(),
        dockerd,
        "dockerd itself was not restarted"
    );
    let to_ready = killed.elapsed();
    recovered(&svc, &base);
    eprintln!("containerd kill: docker run worked on try {tries}");
    report("kill-containerd", t, to_ready);
}

/// The watchdog's bound to notice silence: `NOTICE_AFTER` (10 s) plus one
/// probe's interval and timeout (2 s + 3 s), see supervisor/src/watchdog.rs;
/// plus slack for a loaded machine.
const NOTICE_BOUND: Duration = Duration::from_secs(10 + 2 + 3 + 3);

#[test]
fn a_stopped_dockerd_is_noticed_reported_then_killed_and_restarted() {
    let t = Instant::now();
    let hang = Duration::from_secs(20);
    let svc = start_with(&[("DIND_HANG_TIMEOUT", "20s")], &[]);
    svc.wait_ready();
    let base = baseline(&svc);
    let dockerd = svc.dockerd_pid();
    let back = watch_back(&svc);
    kill(dockerd, Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    // /readyz says so, with the reason, within the bound.
    support::until(&svc, "/readyz noticing", NOTICE_BOUND, || {
        svc.health("/readyz").0 == 503
    });
    let noticed = stopped.elapsed();
    let (_, why) = svc.health("/readyz");
    assert!(
        why.contains("unresponsive") && why.contains("/_ping"),
        "{why}"
    );
    let (_, status) = svc.health("/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "unresponsive", "{status}");
    assert_eq!(svc.log_count("dockerd does not answer"), 1, "one log line");
    // A request now is held: it succeeds once the restarted dockerd is
    // Ready, or gets the gate's clear 503 at the hold timeout.
    let held = burst(&svc, 1, "/version").pop().unwrap();
    // Killed at the hang timeout after its last answer, restarted through
    // the restart path.
    support::until(
        &svc,
        "the restart counted",
        hang + Duration::from_secs(10),
        || support::metric(&svc, "dind_dockerd_restarts_total") == 1,
    );
    let (status, body) = held.join().unwrap();
    assert!(
        status == 200 || (status == 503 && docker_shaped(status, &body)),
        "{status} {body}"
    );
    let to_ready = back.join().unwrap();
    recovered(&svc, &base);
    assert_ne!(svc.dockerd_pid(), dockerd);
    assert_eq!(
        support::children_with_state(svc.supervisor_pid())
            .iter()
            .find(|(p, _)| *p == dockerd),
        None,
        "the stopped dockerd is gone and reaped"
    );
    eprintln!("stopped dockerd noticed after {noticed:?}; held request got {status}");
    report("sigstop-dockerd", t, to_ready);
}

#[test]
fn a_full_data_root_fails_the_import_clearly_and_works_after_a_prune() {
    let t = Instant::now();
    // overlay2 works on tmpfs; 160 MiB holds dockerd's own files and a
    // busybox, not a 200 MiB layer.
    let svc = start_with(&[], &[r#"mount -t tmpfs -o size=160m dsv-data "$D/data""#]);
    svc.wait_ready();
    let base = baseline(&svc);
    let mut import = tls_cli(&svc)
        .args(["import", "-", "fault/too-big"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = import.stdin.take().unwrap();
    let _ = write_zeros_tar(&mut stdin, "zeros", 200 << 20, |_| {});
    drop(stdin);
    let (out, _) = bounded(
        import,
        HOLD + CLIENT_MARGIN + Duration::from_secs(60),
        "import onto a full disk",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no space left on device"),
        "dockerd's own error: {err}"
    );
    let failed = Instant::now();
    // The service stays up and Ready all along.
    assert_eq!(svc.health("/readyz").0, 200);
    support::ok(unix_cli(&svc).args(["image", "prune", "-af"]));
    support::ok(unix_cli(&svc).args(["builder", "prune", "-af"]));
    svc.load_busybox();
    support::ok(tls_cli(&svc).args(["run", "--rm", support::BUSYBOX_IMAGE, "true"]));
    // It never left Ready; "recovered" is the prune and a run working again.
    let to_ready = failed.elapsed();
    recovered(&svc, &base);
    report("data-root-full", t, to_ready);
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Starts a service whose /certs is a tmpfs mounted with `opts` (here, so
/// its content outlives the service); asserts exit 78, a line naming the
/// certificate directory, and no half-written set.
fn certs_cannot_be_written(row: &str, opts: &str) {
    let t = Instant::now();
    support::require_root_and_engine();
    let dir = support::short_tempdir();
    let certs = dir.path().join("certs");
    fs::create_dir_all(&certs).unwrap();
    support::ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "dsv-certs"])
            .arg(&certs),
    );
    let mut svc = Service::start_in(
        dir,
        ServiceOptions {
            env: hold_env(),
            ..Default::default()
        },
    );
    let (status, took) = svc.wait_exit(Duration::from_secs(20));
    let log = svc.log_text();
    assert_eq!(status.code(), Some(78), "{log}");
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains(&*certs.to_string_lossy()))
        .collect();
    assert!(
        !lines.is_empty(),
        "no line names {}:\n{log}",
        certs.display()
    );
    assert!(!log.contains("dockerd started"), "{log}");
    // Nothing half-written: each set whole or absent, no temporaries.
    let left = files(&certs);
    for (set, names) in [
        ("ca", &["cert.pem", "key.pem"][..]),
        ("server", &["ca.pem", "cert.pem", "key.pem"]),
        ("client", &["ca.pem", "cert.pem", "key.pem"]),
    ] {
        let there = names
            .iter()
            .filter(|n| left.contains(&certs.join(set).join(n)))
            .count();
        assert!(
            there == 0 || there == names.len(),
            "{set}/ half-written: {left:?}"
        );
    }
    assert!(
        left.iter().all(|p| !p.to_string_lossy().contains(".tmp-")),
        "{left:?}"
    );
    eprintln!("{row}: {lines:?}; left {left:?}");
    report(row, t, took);
}

#[test]
fn read_only_certs_at_start_exit_78_with_one_clear_line() {
    certs_cannot_be_written("certs-read-only", "ro,size=1m");
}

#[test]
fn full_certs_at_start_exit_78_with_one_clear_line() {
    // Two pages: the CA key and certificate fit, the rest does not.
    certs_cannot_be_written("certs-full", "size=8k");
}

/// `openssl s_client` to the proxy's TLS port with the client set in
/// `client` (or none), verifying the server against `ca`: stdin and stdout
/// piped, for raw HTTP on one connection.
fn s_client(port: u16, ca: &Path, client: Option<&Path>) -> Child {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(ca);
    if let Some(dir) = client {
        c.arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"));
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// One keep-alive `GET /_ping` on an s_client connection: the status.
fn ping_on(stdin: &mut impl Write, stdout: &mut impl BufRead) -> u16 {
    write!(stdin, "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n").unwrap();
    stdin.flush().unwrap();
    let (status, body) = support::read_answer(stdout);
    assert_eq!(body, "OK");
    status
}

#[test]
fn two_supervisors_starting_at_once_on_one_certs_dir_share_one_set() {
    let t = Instant::now();
    support::require_root_and_engine();
    let shared = support::short_tempdir();
    let certdir = shared.path().join("certs");
    let env = |_: ()| {
        let mut env = hold_env();
        env.push(("DOCKER_TLS_CERTDIR".into(), certdir.display().to_string()));
        ServiceOptions {
            env,
            ..Default::default()
        }
    };
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| Service::start(env(())));
        let b = s.spawn(|| Service::start(env(())));
        (a.join().unwrap(), b.join().unwrap())
    });
    a.wait_ready();
    b.wait_ready();
    let ca = certdir.join("ca/cert.pem");
    for sub in ["server/ca.pem", "client/ca.pem"] {
        assert_eq!(
            fs::read(&ca).unwrap(),
            fs::read(certdir.join(sub)).unwrap(),
            "{sub}"
        );
    }
    // Each serves a certificate that chains to the one CA, and takes the
    // shared client set.
    for svc in [&a, &b] {
        let mut conn = s_client(svc.port, &ca, Some(&certdir.join("client")));
        let mut stdin = conn.stdin.take().unwrap();
        let mut stdout = BufReader::new(conn.stdout.take().unwrap());
        assert_eq!(ping_on(&mut stdin, &mut stdout), 200);
        drop(stdin);
        let _ = conn.kill();
        let _ = conn.wait();
        let mut cli = Command::new("docker");
        cli.env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", svc.port))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certdir.join("client"))
            .env_remove("DOCKER_CONTEXT")
            .arg("version");
        support::ok(&mut cli);
    }
    report("two-supervisors-one-certs", t, Duration::ZERO);
}

#[test]
fn deleting_the_client_certs_keeps_connected_clients_and_fails_new_ones_clearly() {
    let t = Instant::now();
    let svc = start();
    let ca = svc.certs().join("ca/cert.pem");
    let client = svc.certs().join("client");
    let mut conn = s_client(svc.port, &ca, Some(&client));
    let mut stdin = conn.stdin.take().unwrap();
    let mut stdout = BufReader::new(conn.stdout.take().unwrap());
    assert_eq!(ping_on(&mut stdin, &mut stdout), 200);
    fs::remove_dir_all(&client).unwrap();
    // The connection opened before still works.
    for _ in 0..3 {
        assert_eq!(ping_on(&mut stdin, &mut stdout), 200);
    }
    // A job's CLI now fails at once, naming what is missing.
    let cli = tls_cli(&svc)
        .arg("version")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, _) = bounded(cli, CLIENT_MARGIN, "docker version without client certs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("client"), "{err}");
    // A client without a certificate is refused in the TLS handshake.
    let bare = s_client(svc.port, &ca, None);
    let (out, _) = bounded(bare, CLIENT_MARGIN, "s_client without a certificate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() || out.stdout.is_empty(), "{err}");
    assert!(
        err.to_lowercase().contains("alert") || err.contains("certificate"),
        "{err}"
    );
    // The service keeps serving.
    assert_eq!(svc.health("/readyz").0, 200);
    support::ok(unix_cli(&svc).arg("version"));
    assert_eq!(ping_on(&mut stdin, &mut stdout), 200);
    drop(stdin);
    let _ = conn.kill();
    let _ = conn.wait();
    report("client-certs-deleted", t, Duration::ZERO);
}
