//! Connections served end to end in memory: bounds on bodies, upgraded
//! sessions and their places, the drain at stop, a panic kept to its
//! connection.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cap::ConnectionCap;

/// Serves one in-memory client connection under ci-safe, with dockerd
/// nowhere: these tests end before anything would be forwarded.
fn connect(limits: Limits) -> (tokio::io::DuplexStream, crate::readiness::Latch) {
    let (shared, latch) = test_shared(
        limits,
        Policy::ci_safe(),
        PathBuf::from("/nonexistent/docker.sock"),
    );
    let slot = ConnectionCap::new(1).admit(&shared.metrics).unwrap();
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve_connection(server, Peer::default(), shared, slot));
    (client, latch)
}

/// A create body that trickles in, a byte every 10 s: never idle long
/// enough for an idle timeout, so only a limit on the whole body ends
/// it. 408 at the limit, and the connection closes.
#[tokio::test(start_paused = true)]
async fn a_decided_body_that_trickles_in_gets_408_at_the_limit() {
    let limits = Limits::default();
    let (mut client, _latch) = connect(limits);
    client
        .write_all(b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (mut rd, mut wr) = tokio::io::split(client);
    let trickle = tokio::spawn(async move {
        while wr.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    let mut answer = Vec::new();
    rd.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("within 60s"), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= limits.body_timeout && took < limits.body_timeout + Duration::from_secs(1),
        "{took:?}"
    );
    trickle.abort();
}

/// A body that comes whole in time is decided as usual (here denied).
#[tokio::test(start_paused = true)]
async fn a_decided_body_sent_at_once_is_decided() {
    let (mut client, _latch) = connect(Limits::default());
    let body = br#"{"Image":"x","HostConfig":{"Privileged":true}}"#;
    let head = format!(
        "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

/// Decided bodies share one memory budget: while four connections
/// hold 1000 bytes each of a 4 KiB budget, a fifth gets 503 at once
/// (and Connection: close); once one is answered its bytes are free.
#[tokio::test(start_paused = true)]
async fn decided_bodies_past_the_shared_memory_get_503_until_some_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "profile = \"ci-safe\"\nbody_cap = \"1KiB\"\n").unwrap();
    let policy = Policy::load(file.to_str().unwrap(), None).unwrap();
    let limits = Limits {
        body_memory: 4096,
        ..Limits::default()
    };
    let (shared, _latch) = test_shared(limits, policy, PathBuf::from("/nonexistent/docker.sock"));
    let cap = ConnectionCap::new(16);
    let open = || {
        let (client, server) = tokio::io::duplex(1 << 16);
        let slot = cap.admit(&shared.metrics).unwrap();
        tokio::spawn(serve_connection(
            server,
            Peer::default(),
            shared.clone(),
            slot,
        ));
        client
    };
    let json = br#"{"Image":"x","HostConfig":{"Privileged":true}}"#;
    let head = b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n";
    let pad = [b' '; 1000 - 46];
    assert_eq!(json.len(), 46);
    let mut holding = Vec::new();
    for _ in 0..4 {
        let mut c = open();
        c.write_all(head).await.unwrap();
        c.write_all(json).await.unwrap();
        holding.push(c);
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    // A buffer grows by 4 KiB at least, and never past what was declared.
    assert_eq!(
        shared.bodies.available_permits(),
        96,
        "four bodies of 1000 bytes"
    );
    let text = shared.metrics.render_to_string();
    assert!(text.contains("dind_proxy_body_bytes 4000"), "{text}");

    let answer = |mut c: tokio::io::DuplexStream| async move {
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut fifth = open();
    fifth.write_all(head).await.unwrap();
    fifth.write_all(json).await.unwrap();
    let said = answer(fifth).await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(
        said.contains("already holds 4 KiB of request bodies"),
        "{said}"
    );

    // The first finishes its body: decided (denied), its bytes freed.
    let mut first = holding.remove(0);
    first.write_all(&pad).await.unwrap();
    let said = answer(first).await;
    assert!(said.starts_with("HTTP/1.1 403"), "{said}");
    let mut sixth = open();
    sixth.write_all(head).await.unwrap();
    sixth.write_all(json).await.unwrap();
    sixth.write_all(&pad).await.unwrap();
    let said = answer(sixth).await;
    assert!(said.starts_with("HTTP/1.1 403"), "room again: {said}");
    drop(holding);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        shared.bodies.available_permits(),
        4096,
        "every byte given back"
    );
    assert_eq!(
        shared
            .metrics
            .render_to_string()
            .lines()
            .find(|l| l.starts_with("dind_proxy_body_bytes ")),
        Some("dind_proxy_body_bytes 0")
    );
}

/// Connections' shared state, the engine Ready, in front of a dockerd
/// that answers one attach; the directory holds its socket.
fn ready_behind_attach_dockerd() -> (tempfile::TempDir, Arc<Shared>, crate::readiness::Latch) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dockerd.sock");
    echoing_attach_dockerd(&sock);
    let (shared, latch) = test_shared(Limits::default(), Policy::permissive(), sock);
    latch.set(crate::readiness::State::Ready);
    (dir, shared, latch)
}

/// dockerd's side of one attach at `sock`: switch protocols, then echo.
fn echoing_attach_dockerd(sock: &std::path::Path) {
    let dockerd = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = dockerd.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.unwrap() == 0 {
                return;
            }
            head.push(b[0]);
        }
        s.write_all(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
            .await
            .unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
}

/// Asks for an attach session on `client`; returns once it is switched.
async fn attach(client: &mut tokio::io::DuplexStream) {
    client
        .write_all(b"POST /v1.41/containers/x/attach?stream=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 256];
    let n = client.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
}

/// An attach session outlives the HTTP connection that asked for it;
/// its place under the connection cap and in the gauge lasts as long.
#[tokio::test]
async fn an_upgraded_session_keeps_its_place_until_it_ends() {
    let (_dir, shared, _latch) = ready_behind_attach_dockerd();
    let cap = ConnectionCap::new(1);
    let slot = cap.admit(&shared.metrics).unwrap();
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let conn = tokio::spawn(serve_connection(
        server,
        Peer::default(),
        shared.clone(),
        slot,
    ));
    attach(&mut client).await;
    conn.await.unwrap();
    // The HTTP connection has ended; the session goes on, and counts.
    client.write_all(b"hi").await.unwrap();
    let mut echo = [0u8; 2];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hi");
    assert_eq!(shared.metrics.open_connections(), 1);
    assert!(
        cap.admit(&shared.metrics).is_none(),
        "the session holds the only place"
    );
    drop(client);
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.metrics.open_connections() > 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "the session's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(cap.admit(&shared.metrics).is_some());
}

/// A client connection served as the listener serves it: under `cap`,
/// its task owned by `shared.tasks`.
fn open_on(shared: &Arc<Shared>, cap: &ConnectionCap) -> tokio::io::DuplexStream {
    let (client, server) = tokio::io::duplex(1 << 16);
    let slot = cap.admit(&shared.metrics).unwrap();
    shared.tasks.spawn(serve_connection(
        server,
        Peer::default(),
        shared.clone(),
        slot,
    ));
    client
}

/// At stop, a parked keep-alive connection closes at once and a request
/// held for the engine gets its 503, then its connection closes: the
/// drain ends when they have, cutting nothing.
#[tokio::test(start_paused = true)]
async fn a_stop_answers_the_held_request_and_closes_the_idle_connection() {
    let (shared, _latch) = test_shared(
        Limits::default(),
        Policy::permissive(),
        PathBuf::from("/nonexistent/docker.sock"),
    );
    let cap = ConnectionCap::new(2);
    let open = || open_on(&shared, &cap);
    let mut idle = open();
    let mut held = open();
    held.write_all(b"GET /v1.41/info HTTP/1.1\r\nHost: d\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(shared.metrics.held_now(), 1, "held while Starting");

    let started = tokio::time::Instant::now();
    assert_eq!(shared.tasks.drain(Duration::from_secs(1)).await, 0);
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut answer = Vec::new();
    held.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let mut nothing = Vec::new();
    idle.read_to_end(&mut nothing).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(shared.metrics.open_connections(), 0);
}

/// An attach session does not end because the proxy stops: it is cut
/// at the drain bound, and its place under the cap is given back.
#[tokio::test]
async fn a_session_still_open_at_the_drain_bound_is_cut() {
    let (_dir, shared, _latch) = ready_behind_attach_dockerd();
    let cap = ConnectionCap::new(1);
    let slot = cap.admit(&shared.metrics).unwrap();
    let (mut client, server) = tokio::io::duplex(1 << 16);
    shared.tasks.spawn(serve_connection(
        server,
        Peer::default(),
        shared.clone(),
        slot,
    ));
    attach(&mut client).await;

    assert_eq!(shared.tasks.drain(Duration::from_millis(100)).await, 1);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed, nothing more");
    assert_eq!(shared.metrics.open_connections(), 0);
    assert!(cap.admit(&shared.metrics).is_some());
}

/// A panic while serving one connection (injected with the debug-only
/// fault header) closes that connection, unanswered, and nothing else:
/// a neighbour open at the time and the next connection are served,
/// and the panicked one's place under the cap is given back.
#[tokio::test(start_paused = true)]
async fn a_panic_closes_its_own_connection_only() {
    let (shared, _latch) = test_shared(
        Limits::default(),
        Policy::ci_safe(),
        PathBuf::from("/nonexistent/docker.sock"),
    );
    let cap = ConnectionCap::new(2);
    let open = || open_on(&shared, &cap);
    // Refused by ci-safe before the gate: answered whatever the engine.
    let refused = b"GET /debug/vars HTTP/1.1\r\nHost: d\r\n\r\n";
    async fn answer(c: &mut tokio::io::DuplexStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    let mut neighbour = open();
    neighbour.write_all(refused).await.unwrap();
    assert!(answer(&mut neighbour).await.starts_with("HTTP/1.1 403"));

    let mut faulty = open();
    faulty
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Dind-Fault: panic\r\n\r\n")
        .await
        .unwrap();
    let mut said = Vec::new();
    faulty.read_to_end(&mut said).await.unwrap();
    assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
    assert_eq!(shared.metrics.open_connections(), 1, "its place is free");

    neighbour.write_all(refused).await.unwrap();
    assert!(answer(&mut neighbour).await.starts_with("HTTP/1.1 403"));
    let mut next = open();
    next.write_all(refused).await.unwrap();
    assert!(answer(&mut next).await.starts_with("HTTP/1.1 403"));
}
