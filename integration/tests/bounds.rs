//! Bounds on what a client may hold of the service (issue 10), against a
//! real dockerd: the cap on open connections, the time limit and the shared
//! memory for bodies the policy reads whole, the cap on requests held while
//! the engine is not ready, and dockerd's debug endpoints under ci-safe.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use support::{exchange, late_dockerd, metric, read_answer, until, Service};

/// The default cap on held requests (`proxy::forward::MAX_HELD`).
const MAX_HELD: usize = 256;

/// A ready service without TLS, so raw HTTP can be spoken to its port,
/// with `env` on top. Its endpoints open before dockerd starts, so Ready
/// means they all listen.
fn plain_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Service {
    let mut all = vec![("DOCKER_TLS_CERTDIR", "")];
    all.extend_from_slice(env);
    let svc = Service::start_with_env(dir, &all);
    svc.wait_ready();
    assert_eq!(metric(&svc, "dind_proxy_listeners_bound"), 1);
    svc
}

fn plain(env: &[(&str, &str)]) -> Service {
    plain_in(support::short_tempdir(), env)
}

/// One request on a keep-alive connection; its answer.
fn ask<S: Read + Write>(w: &mut S, r: &mut BufReader<S>, path: &str) -> (u16, String) {
    write!(w, "GET {path} HTTP/1.1\r\nHost: d\r\n\r\n").unwrap();
    read_answer(r)
}

/// A keep-alive connection: a writer and a buffered reader on one socket.
fn keep_alive(s: TcpStream) -> (TcpStream, BufReader<TcpStream>) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (s.try_clone().unwrap(), BufReader::new(s))
}

/// Whether a connection gets no answer at all: closed (or reset) before
/// any byte of HTTP, as connections over the cap are.
fn unanswered(mut s: impl Read + Write) -> bool {
    let _ = s.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

/// Reads an upgraded attach stream until `want` has come back.
fn echoed(s: &mut TcpStream, want: &str) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(want) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// `DIND_MAX_CONNECTIONS=3` with a keep-alive connection on TCP, one on the
/// unix socket and an attach session (its HTTP connection ended at the
/// upgrade, the session goes on): a fourth connection, on either endpoint,
/// is closed unanswered and counted, while the three keep working; a place
/// comes free when one of them ends, the session included.
#[test]
fn over_the_connection_cap_new_connections_are_closed_and_counted_while_open_ones_work() {
    let dir = support::short_tempdir();
    let sock: PathBuf = dir.path().join("shared/docker.sock");
    let env = [
        ("DIND_MAX_CONNECTIONS", "3"),
        ("DOCKER_HOST", &format!("unix://{}", sock.display())),
    ];
    let svc = plain_in(dir, &env);
    let image = svc.load_busybox();
    // Set up on dockerd's own socket: it takes no place under the cap.
    let id = svc
        .docker_ok(&["run", "-d", "-i", image, "cat"])
        .trim()
        .to_owned();
    let tcp = || TcpStream::connect(("127.0.0.1", svc.port)).unwrap();

    let (mut a, mut a_r) = keep_alive(tcp());
    assert_eq!(ask(&mut a, &mut a_r, "/_ping"), (200, "OK".into()));
    let b = UnixStream::connect(&sock).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut b, mut b_r) = (b.try_clone().unwrap(), BufReader::new(b));
    assert_eq!(ask(&mut b, &mut b_r, "/v1.41/version").0, 200);
    let mut session = tcp();
    session
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        session,
        "POST /v1.41/containers/{id}/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )
    .unwrap();
    let mut head = BufReader::new(session.try_clone().unwrap());
    let mut line = String::new();
    head.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    while line != "\r\n" {
        line.clear();
        head.read_line(&mut line).unwrap();
    }
    assert!(head.buffer().is_empty());
    session.write_all(b"one\n").unwrap();
    assert!(echoed(&mut session, "one"), "the attach session works");
    until(
        &svc,
        "three connections open",
        Duration::from_secs(5),
        || metric(&svc, "dind_proxy_open_connections") == 3,
    );

    assert!(unanswered(tcp()), "a fourth connection on TCP was served");
    assert!(
        unanswered(UnixStream::connect(&sock).unwrap()),
        "a fourth on the unix socket was served"
    );
    assert_eq!(metric(&svc, "dind_proxy_connections_refused_total"), 2);

    // The three go on working.
    assert_eq!(ask(&mut a, &mut a_r, "/_ping"), (200, "OK".into()));
    assert_eq!(ask(&mut b, &mut b_r, "/v1.41/version").0, 200);
    session.write_all(b"two\n").unwrap();
    assert!(echoed(&mut session, "two"));

    // One ends: its place is free for the next.
    drop((a, a_r));
    until(&svc, "a place free", Duration::from_secs(5), || {
        metric(&svc, "dind_proxy_open_connections") == 2
    });
    let (mut c, mut c_r) = keep_alive(tcp());
    assert_eq!(ask(&mut c, &mut c_r, "/_ping"), (200, "OK".into()));
    assert!(unanswered(tcp()), "full again");

    // The session ends (its container stops): its place too.
    svc.docker_ok(&["kill", &id]);
    assert!(!echoed(&mut session, "never"), "the session ended");
    drop((session, head));
    until(
        &svc,
        "the session's place free",
        Duration::from_secs(10),
        || metric(&svc, "dind_proxy_open_connections") == 2,
    );
    let (mut d, mut d_r) = keep_alive(tcp());
    assert_eq!(ask(&mut d, &mut d_r, "/_ping"), (200, "OK".into()));
    assert_eq!(metric(&svc, "dind_proxy_connections_refused_total"), 3);
}

/// A create body that trickles in (a byte every 300 ms, never idle for
/// long) gets 408 at `DIND_BODY_TIMEOUT`, and nothing reaches the engine;
/// the same body sent at once creates the container.
#[test]
fn a_decided_body_that_trickles_in_gets_408_within_the_limit_and_creates_nothing() {
    let svc = plain(&[("DIND_POLICY", "ci-safe"), ("DIND_BODY_TIMEOUT", "2s")]);
    let image = svc.load_busybox();
    let body = format!(
        r#"{{"Image":"{image}","Cmd":["true"],"Labels":{{"padding":"{}"}}}}"#,
        "x".repeat(40)
    );
    let head = format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let s = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    let (mut w, mut r) = keep_alive(s);
    w.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let trickle = {
        let (mut w, body) = (w.try_clone().unwrap(), body.clone());
        thread::spawn(move || {
            for b in body.bytes() {
                if w.write_all(&[b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let (status, said) = read_answer(&mut r);
    let took = started.elapsed();
    assert_eq!(status, 408, "{said}");
    assert!(said.contains("within 2s"), "{said}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the connection closes after a 408: {}",
        String::from_utf8_lossy(&rest)
    );
    drop((w, r));
    let _ = trickle.join();
    assert_eq!(
        svc.docker_ok(&["ps", "-aq"]).trim(),
        "",
        "a container was created"
    );

    let mut s = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    s.write_all(
        head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let (status, said) = read_answer(&mut BufReader::new(s));
    assert_eq!(status, 201, "{said}");
}

/// Decided bodies share 64 MiB (`proxy::forward::BODY_MEMORY`): sixteen
/// connections half-way through a 4 MiB create body hold all of it (a
/// buffer grows by doubling, up to the declared length); one more gets a
/// 503 at once, and nothing reaches the engine. Once they end, the memory
/// is free and a create gets through.
#[test]
fn decided_bodies_past_their_shared_memory_get_503_and_create_nothing() {
    const MIB: usize = 1 << 20;
    let svc = plain(&[("DIND_POLICY", "ci-safe")]);
    let tcp = || TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    let head = format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        4 * MIB
    );
    // JSON whitespace: past half of the body, its buffer (grown in powers
    // of two) holds the whole.
    let half = vec![b' '; 2 * MIB + 1];
    let holding: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = tcp();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&half).unwrap();
            s
        })
        .collect();
    until(
        &svc,
        "64 MiB of bodies held",
        Duration::from_secs(20),
        || metric(&svc, "dind_proxy_body_bytes") == 64 * MIB as u64,
    );

    let mut over = tcp();
    over.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let asked = Instant::now();
    over.write_all(head.as_bytes()).unwrap();
    over.write_all(b"{").unwrap();
    let (status, said) = read_answer(&mut BufReader::new(over));
    assert_eq!(status, 503, "{said}");
    assert!(
        said.contains("already holds 64 MiB of request bodies"),
        "{said}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    drop(holding);
    until(
        &svc,
        "the bodies' memory free",
        Duration::from_secs(10),
        || metric(&svc, "dind_proxy_body_bytes") == 0,
    );
    assert_eq!(
        svc.docker_ok(&["ps", "-aq"]).trim(),
        "",
        "a container was created"
    );
    let image = svc.load_busybox();
    let body = format!(r#"{{"Image":"{image}","Cmd":["true"]}}"#);
    let mut s = tcp();
    write!(s, "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let (status, said) = read_answer(&mut BufReader::new(s));
    assert_eq!(status, 201, "{said}");
}

/// While dockerd is late, the gate holds `MAX_HELD` requests; one more gets
/// a 503 at once that names the limit, and every held one is then answered
/// by dockerd.
#[test]
fn beyond_the_held_cap_a_request_gets_503_at_once_and_the_held_ones_are_answered() {
    let dir = support::short_tempdir();
    let late = late_dockerd(dir.path(), 8).display().to_string();
    let env = [
        ("DOCKER_TLS_CERTDIR", ""),
        ("DIND_DOCKERD", late.as_str()),
        ("DIND_HOLD_TIMEOUT", "60s"),
    ];
    let svc = Service::start_with_env(dir, &env);
    let tcp = || TcpStream::connect(("127.0.0.1", svc.port));
    until(&svc, "the TCP port", Duration::from_secs(10), || {
        tcp().is_ok()
    });
    let held: Vec<TcpStream> = (0..MAX_HELD)
        .map(|_| {
            let mut s = tcp().unwrap();
            s.write_all(b"GET /v1.41/version HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    until(&svc, "every request held", Duration::from_secs(5), || {
        metric(&svc, "dind_proxy_held_requests") == MAX_HELD as u64
    });

    let asked = Instant::now();
    let (status, said) = exchange(tcp().unwrap(), "GET", "/v1.41/version");
    assert_eq!(status, 503, "{said}");
    assert!(
        said.contains(&format!(
            "still starting and {MAX_HELD} requests already wait"
        )),
        "{said}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "held instead: {:?}",
        asked.elapsed()
    );
    assert_eq!(
        svc.health("/readyz").0,
        503,
        "the engine must still have been starting"
    );

    for mut s in held {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let (status, said) = read_answer(&mut BufReader::new(&mut s));
        assert_eq!(status, 200, "{said}");
        assert!(said.contains("ApiVersion"), "{said}");
    }
    assert_eq!(metric(&svc, "dind_proxy_held_requests"), 0);
}

/// dockerd serves `/debug/vars` (its command line) and `/debug/pprof/*` to
/// anyone who asks, in any spelling its router decodes. ci-safe refuses
/// them all, audited; permissive passes them.
#[test]
fn debug_endpoints_are_refused_under_ci_safe_and_served_under_permissive() {
    let svc = plain(&[("DIND_POLICY", "ci-safe")]);
    let tcp = || TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    for (method, path) in [
        ("GET", "/debug/vars"),
        ("GET", "/%64ebug/vars"),
        ("GET", "/v1.41/debug/vars"),
        ("GET", "/debug/pprof/cmdline"),
        ("GET", "/DEBUG/vars"),
        ("HEAD", "/debug/vars"),
        ("POST", "/debug/pprof/symbol"),
    ] {
        let (status, said) = exchange(tcp(), method, path);
        assert_eq!(status, 403, "{method} {path}: {said}");
        assert!(
            method == "HEAD" || said.contains("debug endpoints"),
            "{method} {path}: {said}"
        );
    }
    // Spellings dockerd's router cleans (and redirects) never reach it.
    for path in [
        "//debug/vars",
        "/debug/../debug/vars",
        "/debug/%2e%2e/debug/vars",
    ] {
        assert_eq!(exchange(tcp(), "GET", path).0, 400, "{path}");
    }
    let audited = svc
        .log_text()
        .lines()
        .filter(|l| l.contains("\"rule\":\"debug\""))
        .count();
    assert_eq!(audited, 7, "each denial is audited:\n{}", svc.log_text());
    drop(svc);

    let svc = plain(&[]);
    let (status, said) = exchange(
        TcpStream::connect(("127.0.0.1", svc.port)).unwrap(),
        "GET",
        "/debug/vars",
    );
    assert_eq!(status, 200, "{said}");
    assert!(said.contains("cmdline"), "{said}");
}

/// A request refused before its body is read (here a build context for a
/// host-network build) still has its body coming. The proxy reads it away
/// before answering: closing on unread bytes resets the connection, and a
/// client still writing would report "broken pipe" instead of the refusal.
#[test]
fn a_refused_request_whose_body_is_still_coming_gets_its_refusal_not_a_reset() {
    // Later chunks are written after the refusal has been decided.
    refused_after_its_body(64 << 10, 64, Duration::from_millis(5));
}

/// The same with a build context of 64 MiB sent as fast as it goes, as a
/// real context would be: all of it is read away, however large, and the
/// refusal comes after it.
#[test]
fn a_refused_request_with_a_large_body_gets_its_refusal_not_a_reset() {
    refused_after_its_body(1 << 20, 64, Duration::ZERO);
}

/// Sends a host-network build with a body of `chunks` chunks of `size`
/// bytes, `pause` before each; the whole body must be taken, the answer
/// must be the policy's 403, and the connection must serve on (the body
/// was read to its end).
fn refused_after_its_body(size: usize, chunks: usize, pause: Duration) {
    let svc = plain(&[("DIND_POLICY", "ci-safe")]);
    let (mut w, mut r) = keep_alive(TcpStream::connect(("127.0.0.1", svc.port)).unwrap());
    let chunk = vec![0u8; size];
    write!(
        w,
        "POST /v1.41/build?networkmode=host HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        size * chunks
    )
    .unwrap();
    for i in 0..chunks {
        thread::sleep(pause);
        w.write_all(&chunk)
            .unwrap_or_else(|e| panic!("chunk {i} of the body: {e}"));
    }
    let (status, said) = read_answer(&mut r);
    assert_eq!(status, 403, "{said}");
    assert_eq!(ask(&mut w, &mut r, "/_ping").0, 200);
}

/// The docker CLI opens a BuildKit `/session` and sends its `/build` at the
/// same moment; a refusal that beats the session makes the CLI hang for
/// ever (its session then never closes). So a refused build waits for its
/// session to open, as dockerd would, and is answered right after.
#[test]
fn a_refused_build_is_answered_once_its_session_has_opened() {
    let svc = plain(&[("DIND_POLICY", "ci-safe")]);
    let (mut w, mut r) = keep_alive(TcpStream::connect(("127.0.0.1", svc.port)).unwrap());
    write!(
        w,
        "POST /v1.41/build?networkmode=host&session=dsv-test-1 HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    // Not answered while no session is open (a lower bound: a pause can
    // only make this wait longer).
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut first = [0u8; 1];
    assert!(
        r.get_ref().peek(&mut first).is_err(),
        "answered before its session opened"
    );
    let mut session = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
    write!(
        session,
        "POST /session HTTP/1.1\r\nHost: d\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nX-Docker-Expose-Session-Uuid: dsv-test-1\r\n\r\n"
    )
    .unwrap();
    let opened = Instant::now();
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (status, said) = read_answer(&mut r);
    assert_eq!(status, 403, "{said}");
    // Well inside the 5 s it would wait for a session that never comes.
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "{:?}",
        opened.elapsed()
    );
}
