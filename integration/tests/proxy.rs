//! The authenticated proxy against a real dockerd with real docker CLIs:
//! transparency (streams, upgrades, half-close, builds, copies), rejections
//! and the health endpoint. The readiness gate has its own file, `gate.rs`.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{docker_clis, ok, read_answer, Service, ServiceOptions};

/// Every everyday docker command, through mutual TLS, with each CLI.
#[test]
fn docker_cli_works_through_mutual_tls() {
    let svc = Service::start(ServiceOptions::default());
    svc.wait_ready();
    let image = svc.load_busybox();
    for cli in docker_clis() {
        let name = cli.display().to_string();
        let d = |args: &[&str]| {
            let mut c = svc.tls_cli(&cli);
            c.args(args);
            c
        };
        let v = ok(&mut d(&["version", "--format", "{{.Server.Version}}"]));
        assert!(!v.trim().is_empty(), "{name}: no server version");
        ok(&mut d(&["info"]));
        assert_eq!(
            ok(&mut d(&["run", "--rm", image, "echo", "hello"])).trim(),
            "hello",
            "{name}"
        );

        // stdin through an attach, closed by the client: half-close must
        // reach the container and its output must still come back.
        let mut run = d(&["run", "-i", "--rm", image, "cat"]);
        let out = pipe(&mut run, b"line one\nline two\n");
        assert_eq!(out, "line one\nline two\n", "{name}: run -i");

        // A pseudo-terminal: the CLI wants a real tty on its side.
        let mut tty = Command::new("script");
        let cmdline = format!(
            "{} run --rm -t {image} sh -c 'echo tty-$((6*7))'",
            cli.display()
        );
        tty.args(["-qec", &cmdline, "/dev/null"])
            .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", svc.port))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", svc.certs().join("client"))
            .stdin(Stdio::null());
        assert!(ok(&mut tty).contains("tty-42"), "{name}: run -t");

        let ctr = format!("exec-{}", std::process::id());
        ok(&mut d(&[
            "run", "-d", "--name", &ctr, image, "sleep", "600",
        ]));
        let data: String = (1..=2000).map(|i| format!("{i}\n")).collect();
        let mut exec = d(&["exec", "-i", &ctr, "cat"]);
        assert_eq!(pipe(&mut exec, data.as_bytes()), data, "{name}: exec -i");
        ok(&mut d(&["rm", "-f", &ctr]));
    }
}

#[test]
fn streams_pass_without_buffering() {
    let svc = Service::start(ServiceOptions::default());
    svc.wait_ready();
    let image = svc.load_busybox();
    let cli = docker_clis().pop().unwrap();
    let d = |args: &[&str]| {
        let mut c = svc.tls_cli(&cli);
        c.args(args);
        c
    };
    ok(&mut d(&[
        "run",
        "-d",
        "--name",
        "ticker",
        image,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done",
    ]));
    // logs -f: the first lines arrive while the container still runs.
    let mut logs = d(&["logs", "-f", "ticker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    let started = Instant::now();
    for n in 1..=5 {
        let line = lines.next().expect("log line").unwrap();
        assert_eq!(line, format!("tick {n}"));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    logs.kill().unwrap();
    let _ = logs.wait();

    // events: an event shows up while the stream is open.
    let since = chrono_now(&svc);
    let mut events = d(&[
        "events",
        "--since",
        &since,
        "--filter",
        "event=create",
        "--format",
        "{{.Actor.Attributes.name}}",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    ok(&mut d(&["create", "--name", "evented", image, "true"]));
    let mut ev = BufReader::new(events.stdout.take().unwrap()).lines();
    assert_eq!(ev.next().unwrap().unwrap(), "evented");
    events.kill().unwrap();
    let _ = events.wait();
    ok(&mut d(&["rm", "-f", "ticker", "evented"]));
}

/// The engine's clock, as `docker events --since` wants it.
fn chrono_now(svc: &Service) -> String {
    svc.docker_ok(&["info", "--format", "{{.SystemTime}}"])
        .trim()
        .to_owned()
}

#[test]
fn builds_copies_and_save_load_round_trip() {
    let svc = Service::start(ServiceOptions::default());
    svc.wait_ready();
    let image = svc.load_busybox();
    let ctx = support::short_tempdir();
    fs::write(ctx.path().join("payload"), "from the build context\n").unwrap();
    // No RUN step: these engines have no network (--bridge=none).
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {image}\nCOPY payload /payload\nCMD [\"cat\", \"/payload\"]\n"),
    )
    .unwrap();
    let debian_cli = Path::new("/usr/bin/docker");
    let cli = docker_clis().pop().unwrap();
    // Classic builder: the context streams as a chunked request body.
    ok(svc
        .tls_cli(&cli)
        .args(["build", "-t", "classic:1"])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0"));
    assert_eq!(
        ok(svc.tls_cli(&cli).args(["run", "--rm", "classic:1"])),
        "from the build context\n"
    );
    // BuildKit: the 20.10 client speaks /session (Upgrade: h2c) and /grpc.
    if debian_cli.is_file() {
        ok(svc
            .tls_cli(debian_cli)
            .args(["build", "-t", "buildkit:1"])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "1"));
        assert_eq!(
            ok(svc.tls_cli(&cli).args(["run", "--rm", "buildkit:1"])),
            "from the build context\n"
        );
    }

    // docker cp of 100 MiB both ways, checked by checksum.
    let big = ctx.path().join("big");
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=100"])
        .arg(format!("of={}", big.display())));
    ok(svc
        .tls_cli(&cli)
        .args(["run", "-d", "--name", "cp", image, "sleep", "600"]));
    ok(svc.tls_cli(&cli).args(["cp"]).arg(&big).arg("cp:/big"));
    let inside = ok(svc.tls_cli(&cli).args(["exec", "cp", "sha256sum", "/big"]));
    let back = ctx.path().join("back");
    ok(svc.tls_cli(&cli).args(["cp", "cp:/big"]).arg(&back));
    let local = ok(Command::new("sha256sum").arg(&big));
    let returned = ok(Command::new("sha256sum").arg(&back));
    let sum = |s: &str| s.split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(sum(&inside), sum(&local), "copy in");
    assert_eq!(sum(&returned), sum(&local), "copy out");

    // save | load round trip through the proxy on both legs.
    let tar = ctx.path().join("img.tar");
    ok(svc
        .tls_cli(&cli)
        .args(["save", "-o"])
        .arg(&tar)
        .arg("classic:1"));
    ok(svc.tls_cli(&cli).args(["rmi", "classic:1"]));
    let loaded = ok(svc.tls_cli(&cli).args(["load", "-i"]).arg(&tar));
    assert!(loaded.contains("classic:1"), "{loaded}");
    ok(svc.tls_cli(&cli).args(["rm", "-f", "cp"]));
}

#[test]
fn clients_without_the_right_certificate_are_rejected() {
    let svc = Service::start(ServiceOptions::default());
    svc.wait_ready();
    let cli = docker_clis().pop().unwrap();
    let client = svc.certs().join("client");
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(client.join("ca.pem"))
            .args(extra)
            .arg(format!("https://127.0.0.1:{}/_ping", svc.port))
            .output()
            .unwrap()
    };
    // The right certificate works…
    let good = curl(&[
        "--cert",
        &path(&client.join("cert.pem")),
        "--key",
        &path(&client.join("key.pem")),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&good.stdout),
        "OK",
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    // …none does not.
    assert!(
        !curl(&[]).status.success(),
        "no client certificate must fail"
    );
    handshake_failed(&svc, "no_client_cert");

    // Another CA's certificate.
    let other = support::short_tempdir();
    ok(Command::new(support::binary())
        .args(["certs", "--tls-certdir"])
        .arg(other.path()));
    let oc = other.path().join("client");
    assert!(!curl(&[
        "--cert",
        &path(&oc.join("cert.pem")),
        "--key",
        &path(&oc.join("key.pem"))
    ])
    .status
    .success());
    handshake_failed(&svc, "unknown_ca");
    let out = Command::new(&cli)
        .args(["version"])
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", svc.port))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &oc)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Server:") || !out.status.success());

    // An expired certificate signed by the right CA.
    let expired = support::short_tempdir();
    mint_expired_client(&svc.certs(), expired.path());
    assert!(!curl(&[
        "--cert",
        &path(&expired.path().join("cert.pem")),
        "--key",
        &path(&expired.path().join("key.pem"))
    ])
    .status
    .success());
    handshake_failed(&svc, "expired_cert");

    // Plain HTTP on the TLS port gets dockerd's own answer.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{}/_ping", svc.port))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&plain.stdout)
            .contains("Client sent an HTTP request to an HTTPS server"),
        "{plain:?}"
    );
    let (_, metrics) = svc.health("/metrics");
    for reason in ["no_client_cert", "unknown_ca", "expired_cert", "plain_http"] {
        let line = metrics
            .lines()
            .find(|l| l.contains(&format!("reason=\"{reason}\"")))
            .unwrap_or_else(|| panic!("no {reason} in metrics"));
        assert!(!line.ends_with(" 0"), "{line}");
    }
}

/// Waits until the proxy has counted a failed handshake for `reason`.
fn handshake_failed(svc: &Service, reason: &str) {
    let name = format!("dind_proxy_tls_handshake_failures_total{{reason=\"{reason}\"}}");
    support::until(svc, &name, Duration::from_secs(5), || {
        support::metric(svc, &name) >= 1
    });
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A client certificate signed by the service's CA that expired yesterday.
fn mint_expired_client(certs: &Path, out: &Path) {
    let ca_key =
        rcgen::KeyPair::from_pem(&fs::read_to_string(certs.join("ca/key.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &fs::read_to_string(certs.join("ca/cert.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    fs::write(out.join("cert.pem"), cert.pem()).unwrap();
    fs::write(out.join("key.pem"), key.serialize_pem()).unwrap();
}

/// Writes `input` to the command's stdin, closes it, returns stdout.
fn pipe(cmd: &mut Command, input: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        stdin.write_all(&input).unwrap();
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    writer.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{cmd:?}: {status}");
    out
}

/// `DOCKER_TLS_CERTDIR=""`: plain TCP, as the stock image does, with a warning.
#[test]
fn tls_off_serves_plain_tcp() {
    let svc = Service::start(ServiceOptions {
        env: vec![("DOCKER_TLS_CERTDIR".into(), String::new())],
        ..Default::default()
    });
    svc.wait_ready();
    let v = ok(Command::new("docker")
        .args([
            "-H",
            &format!("tcp://127.0.0.1:{}", svc.port),
            "version",
            "--format",
            "{{.Server.Version}}",
        ])
        .env_remove("DOCKER_TLS_VERIFY"));
    assert!(!v.trim().is_empty());
    assert!(svc.log_text().contains("TLS is off"), "{}", svc.log_text());
    assert!(!svc.certs().exists(), "no certificates when TLS is off");
}

/// A request head over the cap is answered 431, not forwarded.
#[test]
fn oversized_request_head_gets_431() {
    let svc = Service::start(ServiceOptions {
        env: vec![("DOCKER_TLS_CERTDIR".into(), String::new())],
        ..Default::default()
    });
    svc.wait_ready();
    let mut s = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let huge = "a".repeat(2 << 20);
    let _ = write!(s, "GET /_ping HTTP/1.1\r\nHost: d\r\nX-Big: {huge}\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
}

/// One raw HTTP/1.0 exchange; returns the answer's head lines (lowercased
/// names, without Date) and body.
fn raw_exchange(mut s: impl Read + Write, method: &str, path: &str) -> (Vec<String>, String, bool) {
    write!(s, "{method} {path} HTTP/1.0\r\nHost: d\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines: Vec<String> = head
        .lines()
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}:{}", k.to_ascii_lowercase(), v),
            None => l.to_owned(),
        })
        .collect();
    let dated = lines.iter().any(|l| l.starts_with("date:"));
    lines.retain(|l| !l.starts_with("date:") && !l.starts_with("connection:"));
    lines.sort();
    (lines, body.to_owned(), dated)
}

/// `/_ping` through the proxy is dockerd's own answer (every header but a
/// fresh Date), reused for a moment; versioned pings always reach dockerd;
/// DIND_PING_CACHE=0s turns reuse off.
#[test]
fn pings_carry_dockerds_answer_and_are_reused_briefly() {
    for (ttl, reused) in [("1s", true), ("0s", false)] {
        let svc = Service::start(ServiceOptions {
            env: vec![
                ("DOCKER_TLS_CERTDIR".into(), String::new()),
                ("DIND_PING_CACHE".into(), ttl.into()),
            ],
            ..Default::default()
        });
        svc.wait_ready();
        let proxy = || TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
        let direct = || std::os::unix::net::UnixStream::connect(svc.socket()).unwrap();
        for method in ["GET", "HEAD"] {
            let want = raw_exchange(direct(), method, "/_ping");
            for _ in 0..3 {
                let got = raw_exchange(proxy(), method, "/_ping");
                assert_eq!(got, want, "{method} /_ping, DIND_PING_CACHE={ttl}");
                assert!(got.2, "a Date header");
            }
        }
        let (_, body, _) = raw_exchange(proxy(), "GET", "/v1.5/_ping");
        assert!(
            body.contains("too old"),
            "a versioned ping reaches dockerd: {body}"
        );
        let (_, metrics) = svc.health("/metrics");
        let cached: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("dind_proxy_ping_cached_total "))
            .and_then(|n| n.parse().ok())
            .expect("the ping counter");
        // Three GETs and three HEADs; the first of each may be forwarded, and
        // a slow machine may let an answer age out.
        if reused {
            assert!(cached >= 1, "{metrics}");
        } else {
            assert_eq!(cached, 0, "{metrics}");
        }
    }
}

fn parked(svc: &Service) -> u64 {
    let (_, metrics) = svc.health("/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("dind_proxy_parked_connections "))
        .and_then(|n| n.parse().ok())
        .expect("the parked gauge")
}

/// An idle keep-alive connection is parked (hyper's buffers freed) and
/// picks up where it was: after a pause, with a head split across a pause,
/// with pipelined requests, and never in the middle of a request body.
#[test]
fn idle_connections_park_and_resume_at_message_boundaries() {
    let svc = Service::start(ServiceOptions {
        env: vec![
            ("DOCKER_TLS_CERTDIR".into(), String::new()),
            ("DIND_PING_CACHE".into(), "0s".into()),
        ],
        ..Default::default()
    });
    svc.wait_ready();
    let pause = || thread::sleep(Duration::from_millis(700));
    let s = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let ping = "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n";

    w.write_all(ping.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut r), (200, "OK".into()));
    pause();
    assert_eq!(parked(&svc), 1, "the idle connection is parked");

    w.write_all(b"GET /version HTTP/1.1\r\nHost: d\r\n\r\n")
        .unwrap();
    let (code, body) = read_answer(&mut r);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("ApiVersion"), "{body}");
    assert_eq!(parked(&svc), 0, "busy again");

    // A head split across a pause stays with one parser.
    pause();
    w.write_all(b"GET /_ping HTTP/1.1\r\nHo").unwrap();
    pause();
    w.write_all(b"st: d\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut r), (200, "OK".into()));

    // A request body split across a pause is one body, not a new request.
    pause();
    let body = r#"{"Image":"no-such-image:never"}"#;
    write!(w, "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}", body.len(), &body[..10]).unwrap();
    pause();
    w.write_all(&body.as_bytes()[10..]).unwrap();
    let (code, answer) = read_answer(&mut r);
    assert_eq!(code, 404, "dockerd read the whole body: {answer}");
    assert!(answer.contains("no-such-image"), "{answer}");

    // Pipelined requests after a park, in one write.
    pause();
    w.write_all(format!("{ping}{ping}").as_bytes()).unwrap();
    assert_eq!(read_answer(&mut r), (200, "OK".into()));
    assert_eq!(read_answer(&mut r), (200, "OK".into()));
}

/// A panic in one client connection closes that connection and nothing
/// else (issue 11): the supervisor, PID 1 of the service, lives on, and a
/// connection open at the time and the next one are served. The panic is
/// injected with `X-Dind-Fault: panic`, a hook only debug builds have; the
/// release profile unwinds too (`panic = "unwind"`, which `proxy` checks
/// when it is compiled).
#[test]
fn a_panic_in_one_connection_closes_that_connection_only() {
    let mut svc = Service::start(ServiceOptions {
        env: vec![("DOCKER_TLS_CERTDIR".into(), String::new())],
        binary: Some(support::debug_binary()),
        ..Default::default()
    });
    svc.wait_ready();
    let open = || {
        let s = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    let neighbour = open();
    let mut w = neighbour.try_clone().unwrap();
    let mut r = BufReader::new(neighbour);
    let version = "GET /version HTTP/1.1\r\nHost: d\r\n\r\n";
    w.write_all(version.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut r).0, 200);

    let mut faulty = open();
    faulty
        .write_all(b"GET /version HTTP/1.1\r\nHost: d\r\nX-Dind-Fault: panic\r\n\r\n")
        .unwrap();
    let mut said = Vec::new();
    let _ = faulty.read_to_end(&mut said);
    assert!(
        !said.starts_with(b"HTTP/"),
        "the panicking connection answered: {}",
        String::from_utf8_lossy(&said)
    );

    let alive = svc.child.as_mut().unwrap().try_wait().unwrap();
    assert!(alive.is_none(), "the supervisor exited: {alive:?}");
    w.write_all(version.as_bytes()).unwrap();
    let (code, body) = read_answer(&mut r);
    assert_eq!(code, 200, "the neighbour is still served: {body}");
    let (code, body) = support::exchange(open(), "GET", "/version");
    assert_eq!(code, 200, "a new connection is served: {body}");
    support::until(
        &svc,
        "the panicked connection's place freed",
        Duration::from_secs(5),
        || support::metric(&svc, "dind_proxy_open_connections") == 1,
    );
}
