//! The request policy through the real proxy: the docker CLI is refused what
//! would escape the dind service, the known bypasses of authorization
//! plugins fail, and every decision is audited.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{docker_clis, ok, Service, ServiceOptions};

fn ci_safe(extra: &[(&str, &str)]) -> Service {
    let mut env = vec![("DIND_POLICY".to_owned(), "ci-safe".to_owned())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let svc = Service::start(ServiceOptions {
        env,
        ..Default::default()
    });
    svc.wait_ready();
    svc
}

/// What the docker CLI prints for a refused `docker run …`.
fn refused(svc: &Service, args: &[&str]) -> String {
    let cli = docker_clis().pop().unwrap();
    let out = svc.tls_cli(&cli).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} was allowed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ci_safe_refuses_escapes_and_allows_ordinary_jobs() {
    let svc = ci_safe(&[]);
    let image = svc.load_busybox();
    let cli = docker_clis().pop().unwrap();
    for (args, says) in [
        (
            vec!["run", "--rm", "--privileged", image, "true"],
            "privileged containers are not allowed (HostConfig.Privileged)",
        ),
        (
            vec!["run", "--rm", "-v", "/:/host", image, "true"],
            "HostConfig.Binds",
        ),
        (
            vec!["run", "--rm", "-v", "/builds/../etc:/x", image, "true"],
            "HostConfig.Binds",
        ),
        (
            vec![
                "run",
                "--rm",
                "--mount",
                "type=bind,src=/etc,dst=/x",
                image,
                "true",
            ],
            "HostConfig.Mounts",
        ),
        (
            vec!["run", "--rm", "--pid", "host", image, "true"],
            "PidMode",
        ),
        (
            vec!["run", "--rm", "--network", "host", image, "true"],
            "NetworkMode",
        ),
        (
            vec!["run", "--rm", "--cap-add", "SYS_ADMIN", image, "true"],
            "CapAdd",
        ),
        (
            vec![
                "run",
                "--rm",
                "--security-opt",
                "seccomp=unconfined",
                image,
                "true",
            ],
            "SecurityOpt",
        ),
        (
            vec![
                "run",
                "--rm",
                "--security-opt",
                "systempaths=unconfined",
                image,
                "true",
            ],
            "Paths",
        ),
        (
            vec!["run", "--rm", "--device", "/dev/kmsg", image, "true"],
            "Devices",
        ),
        (
            vec!["run", "--rm", "--cgroup-parent", "/", image, "true"],
            "CgroupParent",
        ),
        (
            vec![
                "volume",
                "create",
                "--opt",
                "type=none",
                "--opt",
                "o=bind",
                "--opt",
                "device=/etc",
                "v1",
            ],
            "volume",
        ),
    ] {
        let err = refused(&svc, &args);
        assert!(err.contains("policy ci-safe"), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} should name {says}: {err}");
    }
    // Ordinary CI work passes: named volumes, allowed bind paths, exec.
    assert_eq!(
        ok(svc
            .tls_cli(&cli)
            .args(["run", "--rm", "-v", "cache:/c", image, "echo", "ok"]))
        .trim(),
        "ok"
    );
    assert_eq!(
        ok(svc
            .tls_cli(&cli)
            .args(["run", "--rm", "-v", "/builds/x:/b", image, "echo", "ok"]))
        .trim(),
        "ok"
    );
    ok(svc
        .tls_cli(&cli)
        .args(["run", "-d", "--name", "pe", image, "sleep", "60"]));
    assert!(refused(&svc, &["exec", "--privileged", "pe", "true"]).contains("policy ci-safe"));
    assert_eq!(
        ok(svc.tls_cli(&cli).args(["exec", "pe", "echo", "ok"])).trim(),
        "ok"
    );
    ok(svc.tls_cli(&cli).args(["rm", "-f", "pe"]));
    // Every mutating decision is audited with the client's identity.
    let log = svc.log_text();
    let denial = log
        .lines()
        .find(|l| l.contains("\"decision\":\"deny\"") && l.contains("\"rule\":\"privileged\""))
        .unwrap_or_else(|| panic!("no audit line for the denial:\n{log}"));
    let entry: serde_json::Value = serde_json::from_str(denial).unwrap();
    assert_eq!(entry["path"], "/containers/create");
    assert_eq!(entry["subject"], "CN=docker-client");
    assert!(log.contains("\"decision\":\"allow\""));
    let (_, metrics) = svc.health("/metrics");
    assert!(
        metrics
            .contains("dind_proxy_policy_decisions_total{decision=\"deny\",rule=\"privileged\"} 1"),
        "{metrics}"
    );
}

/// Raw requests that read differently to a naive checker and to dockerd.
#[test]
fn known_authorization_bypasses_are_refused() {
    let svc = ci_safe(&[("DOCKER_TLS_CERTDIR", "")]);
    let send = |head: &str, body: &[u8]| -> String {
        let mut s = TcpStream::connect(("127.0.0.1", svc.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        // The proxy may answer (413) and close before the whole body is sent.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Enough for the status line and the JSON message.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"\n") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let create = |body: &str, extra: &str| {
        send(
            &format!(
                "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                body.len()
            ),
            body.as_bytes(),
        )
    };
    let img = r#""Image":"busybox""#;
    for (body, why) in [
        (
            format!(r#"{{{img},"HostConfig":{{"privileged":true}}}}"#),
            "case-folded key",
        ),
        (
            format!(r#"{{{img},"HostConfig":{{"Privileged":false,"Privileged":true}}}}"#),
            "duplicate key, last wins in Go",
        ),
        (
            format!(r#"{{{img}}} {{"HostConfig":{{"Privileged":true}}}}"#),
            "trailing data",
        ),
        (
            format!(r#"{{{img},"Privileged":true}}"#),
            "top-level HostConfig field",
        ),
        (
            format!("{{{img},\"HostConfig\":{{\"CapAdd\":[\"ALL\"],\"Binds\":[\"/:/h\"]}}}}"),
            "several rules",
        ),
        (
            format!("{{{img},\"HostConfig\":{{\"Bind\u{017f}\":[\"/:/h\"]}}}}"),
            "long s folds to s in Go",
        ),
    ] {
        let answer = create(&body, "");
        assert!(
            answer.starts_with("HTTP/1.1 403") || answer.starts_with("HTTP/1.1 400"),
            "{why}: {answer}"
        );
    }
    // Chunked bodies are read whole and checked like any other (CVE-2024-41110).
    let body = format!(r#"{{{img},"HostConfig":{{"Privileged":true}}}}"#);
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let answer = send(
        "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        chunked.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "chunked: {answer}");
    // Both framings at once: hyper keeps only Transfer-Encoding (RFC 9112
    // 6.3), the body is read as chunked, checked, and re-framed with a fresh
    // Content-Length, so dockerd reads exactly what was checked. Refused
    // either as ambiguous (400) or by the rule (403); never forwarded.
    let answer = send(
        &format!("POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", chunked.len()),
        chunked.as_bytes(),
    );
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 403"),
        "CL+TE: {answer}"
    );
    // Over the cap: 413, never skipped (CVE-2026-34040).
    let pad = " ".repeat(5 << 20);
    let big = format!(r#"{{{img},"HostConfig":{{"Privileged":true}}}}{pad}"#);
    let answer = create(&big, "");
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "big body: {}",
        &answer[..answer.len().min(200)]
    );
    // JSON is required where dockerd parses JSON.
    let answer = send(
        &format!("POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()),
        body.as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "text/plain: {answer}");
    // An HTTP/2 connection preface is never forwarded (h2c only by Upgrade
    // on /session and /grpc).
    let answer = send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"");
    assert!(
        !answer.starts_with("HTTP/1.1 2") && !answer.contains("OK"),
        "h2 preface: {answer}"
    );
    // An unknown mutating route is denied by default.
    let answer = send("POST /v1.41/containers/x/escape HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b"");
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "unknown route: {answer}"
    );
}

#[test]
fn permissive_is_the_default_and_a_bad_policy_file_stops_start_up() {
    let svc = Service::start(ServiceOptions::default());
    svc.wait_ready();
    let image = svc.load_busybox();
    let cli = docker_clis().pop().unwrap();
    // Allowed by policy; whatever dockerd then says is not ours.
    let out = svc
        .tls_cli(&cli)
        .args([
            "run",
            "--rm",
            "-v",
            "/etc/hostname:/h:ro",
            image,
            "cat",
            "/h",
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("policy"),
        "{out:?}"
    );

    let dir = support::short_tempdir();
    let file = dir.path().join("policy.toml");
    fs::write(
        &file,
        "profile = \"ci-safe\"\n[rules]\nprivilegd = \"allow\"\n",
    )
    .unwrap();
    let mut bad = Service::start_in(
        dir,
        ServiceOptions {
            env: vec![("DIND_POLICY".into(), file.display().to_string())],
            ..Default::default()
        },
    );
    let (status, _) = bad.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{}", bad.log_text());
    let line = bad
        .log_text()
        .lines()
        .find(|l| l.contains("privilegd"))
        .map(str::to_owned);
    assert!(
        line.is_some(),
        "the error names the bad rule:\n{}",
        bad.log_text()
    );
}

/// The host network named by its ID or an ID prefix instead of `host`, at
/// create time and through `docker network connect`, through the proxy
/// under ci-safe: no container ends up in the service's network namespace.
/// The proxy compares the name; dockerd's own rule (a container joins the
/// host network only at create, by mode) is what refuses the rest, and
/// this test is what shows it still does.
#[test]
fn the_host_network_cannot_be_joined_by_its_id_or_by_connect() {
    let svc = ci_safe(&[]);
    let image = svc.load_busybox();
    let cli = docker_clis().pop().unwrap();
    let id = svc.docker_ok(&["network", "inspect", "-f", "{{.Id}}", "host"]);
    let id = id.trim();
    for network in [id, &id[..12]] {
        let out = svc
            .tls_cli(&cli)
            .args(["run", "--rm", "--network", network, image, "true"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "--network {network} was allowed");
    }
    ok(svc.tls_cli(&cli).args([
        "create",
        "--name",
        "isolated",
        "--network",
        "none",
        image,
        "sleep",
        "60",
    ]));
    for network in ["host", id] {
        let out = svc
            .tls_cli(&cli)
            .args(["network", "connect", network, "isolated"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "network connect {network} was allowed"
        );
    }
    let joined = svc.docker_ok(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        "isolated",
    ]);
    assert!(!joined.contains("\"host\""), "{joined}");
}
