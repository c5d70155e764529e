//! The client side's tests: parsing, causes and real probes against local
//! servers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use super::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK";
const RESTARTING: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 32\r\n\r\n{\"message\":\"engine restarting\"}\n";

fn env<'a>(pairs: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
    pairs.iter().copied().collect()
}

fn target(pairs: &[(&str, &str)]) -> Result<Target, HostError> {
    Target::from_env(None, &env(pairs))
}

fn tcp(host: Host, port: u16) -> Endpoint {
    Endpoint::Tcp { host, port }
}

fn name(n: &str) -> Host {
    Host::Name(n.into())
}

fn args(host: String, timeout: Duration) -> WaitArgs {
    WaitArgs {
        host: Some(host),
        timeout,
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
/// A loopback port where nothing listens, reserved while the socket lives:
/// bound but not listening, so connects are refused and no other test can
/// take the port meanwhile (a listener bound and dropped could be reused).
fn closed_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().port(), socket)
}

/// Reads a request head, then writes `answer` and closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = stream.write_all(answer).await;
    let _ = stream.shutdown().await;
}

async fn serve_unix(path: &Path, reply: &'static [u8]) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, reply));
        }
    });
}

/// A plain TCP server on 127.0.0.1 that reads anything, then answers
/// `reply` and closes (raw bytes, like a misconfigured peer).
async fn serve_raw(reply: &'static [u8], wait_for_head: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if wait_for_head {
                    answer(stream, reply).await;
                } else {
                    let mut chunk = [0u8; 4096];
                    let _ = stream.read(&mut chunk).await;
                    let _ = stream.write_all(reply).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    port
}

/// A throwaway PKI. Every CA has the same name, as every instance of
/// the service's CA does: a stale ca.pem differs only by its key.
struct Ca(CertifiedIssuer<'static, KeyPair>);

struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new() -> Ca {
        Ca::named("docker:dind CA")
    }

    fn named(common_name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    fn issue(&self, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.0).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self, sans: &[&str]) -> Leaf {
        self.issue(sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self) -> Leaf {
        self.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes the docker CLI's files; each atomically, key.pem last, as the
/// service does on a shared volume.
fn write_client_files(dir: &Path, ca: &Ca, client: &Leaf) {
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", client.cert.clone()),
        ("key.pem", client.key.clone()),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A TLS server on 127.0.0.1 that requires a client certificate from
/// `ca` and answers 200 OK to any request, like dockerd with --tlsverify.
async fn serve_tls(ca: &Ca, server: &Leaf) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in der_certs(&ca.pem()) {
        roots.add(cert).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(der_certs(&server.cert), key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    answer(tls, OK).await;
                }
            });
        }
    });
    port
}

fn tls_env<'a>(host: &'a str, dir: &'a str) -> HashMap<&'a str, &'a str> {
    env(&[
        ("DOCKER_HOST", host),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", dir),
    ])
}

async fn ping(env: &HashMap<&str, &str>) -> Result<(), Cause> {
    let target = Target::from_env(None, env).unwrap();
    ping_once(&target, &Probe::default()).await
}

// --- DOCKER_HOST and TLS settings ---

#[test]
fn docker_host_forms_parse_like_the_docker_cli() {
    let t = target(&[]).unwrap();
    assert_eq!(t.endpoint, Endpoint::Unix("/var/run/docker.sock".into()));
    assert_eq!(t.to_string(), "unix:///var/run/docker.sock");
    let t = target(&[("DOCKER_HOST", "")]).unwrap();
    assert_eq!(t.endpoint, Endpoint::Unix("/var/run/docker.sock".into()));
    let t = target(&[("DOCKER_HOST", "unix:///run/user/1000/docker.sock")]).unwrap();
    assert_eq!(
        t.endpoint,
        Endpoint::Unix("/run/user/1000/docker.sock".into())
    );
    assert_eq!(t.path, "/_ping");

    let t = target(&[("DOCKER_HOST", "tcp://docker:2375")]).unwrap();
    assert_eq!(t.endpoint, tcp(name("docker"), 2375));
    assert_eq!(t.tls, None);
    assert_eq!(t.to_string(), "tcp://docker:2375");
    assert_eq!(
        target(&[("DOCKER_HOST", "tcp://docker")]).unwrap().endpoint,
        tcp(name("docker"), 2375)
    );
    assert_eq!(
        target(&[("DOCKER_HOST", "docker:1234")]).unwrap().endpoint,
        tcp(name("docker"), 1234)
    );
    assert_eq!(
        target(&[("DOCKER_HOST", "tcp://:2375")]).unwrap().endpoint,
        tcp(name("localhost"), 2375)
    );
    assert_eq!(
        target(&[("DOCKER_HOST", "tcp://10.1.2.3:2376")])
            .unwrap()
            .endpoint,
        tcp(Host::Ip("10.1.2.3".parse().unwrap()), 2376)
    );
    let t = target(&[("DOCKER_HOST", "tcp://[fd00::1]:2376")]).unwrap();
    assert_eq!(t.endpoint, tcp(Host::Ip("fd00::1".parse().unwrap()), 2376));
    assert_eq!(t.to_string(), "tcp://[fd00::1]:2376");
    assert_eq!(
        target(&[("DOCKER_HOST", "tcp://[::1]")]).unwrap().endpoint,
        tcp(Host::Ip("::1".parse().unwrap()), 2375)
    );
    let t = target(&[("DOCKER_HOST", "tcp://docker:2375/prefix/")]).unwrap();
    assert_eq!(t.path, "/prefix/_ping");

    // --host wins over DOCKER_HOST.
    let t = Target::from_env(
        Some("tcp://other:1"),
        &env(&[("DOCKER_HOST", "tcp://docker:2375")]),
    )
    .unwrap();
    assert_eq!(t.endpoint, tcp(name("other"), 1));
}

#[test]
fn tls_settings_follow_the_docker_cli() {
    let t = target(&[
        ("DOCKER_HOST", "tcp://docker"),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", "/certs/client"),
    ])
    .unwrap();
    assert_eq!(t.endpoint, tcp(name("docker"), 2376));
    assert_eq!(
        t.tls,
        Some(TlsFiles {
            dir: "/certs/client".into(),
            verify: true
        })
    );
    // Any non-empty value turns verification on, "0" included.
    let t = target(&[
        ("DOCKER_HOST", "tcp://docker:2376"),
        ("DOCKER_TLS_VERIFY", "0"),
        ("HOME", "/home/ci"),
    ])
    .unwrap();
    assert_eq!(
        t.tls,
        Some(TlsFiles {
            dir: "/home/ci/.docker".into(),
            verify: true
        })
    );
    let t = target(&[("DOCKER_HOST", "tcp://docker"), ("DOCKER_TLS_VERIFY", "")]).unwrap();
    assert_eq!(t.tls, None);
    assert_eq!(t.endpoint, tcp(name("docker"), 2375));
    let t = target(&[
        ("DOCKER_HOST", "tcp://docker:2376"),
        ("DOCKER_TLS", "1"),
        ("HOME", "/root"),
    ])
    .unwrap();
    assert_eq!(
        t.tls,
        Some(TlsFiles {
            dir: "/root/.docker".into(),
            verify: false
        })
    );
    // TLS is ignored for unix sockets, so HOME does not matter there.
    let t = target(&[("DOCKER_TLS_VERIFY", "1")]).unwrap();
    assert_eq!(t.tls, None);
    assert_eq!(
        target(&[
            ("DOCKER_HOST", "tcp://docker:2376"),
            ("DOCKER_TLS_VERIFY", "1")
        ]),
        Err(HostError::NoCertPath)
    );
}

#[test]
fn bad_docker_hosts_are_refused_with_the_fix() {
    let err = |h: &str| target(&[("DOCKER_HOST", h)]).unwrap_err();
    let e = err("ssh://me@docker");
    assert!(
        matches!(e, HostError::UnsupportedScheme { ref scheme, .. } if scheme == "ssh"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("use unix:///path/to/docker.sock or tcp://host:port"),
        "{e}"
    );
    assert!(matches!(
        err("npipe:////./pipe/docker_engine"),
        HostError::UnsupportedScheme { .. }
    ));
    assert!(matches!(err("unix://"), HostError::NoSocketPath { .. }));
    assert!(matches!(
        err("tcp://docker:http"),
        HostError::BadPort { .. }
    ));
    assert!(matches!(err("tcp://docker:0"), HostError::BadPort { .. }));
    assert!(matches!(
        err("tcp://docker:65536"),
        HostError::BadPort { .. }
    ));
    assert!(matches!(err("tcp://docker:"), HostError::BadPort { .. }));
    assert!(matches!(
        err("tcp://fd00::1:2376"),
        HostError::Ipv6WithoutBrackets { .. }
    ));
    assert!(matches!(err("tcp://[fd00::1"), HostError::BadHost { .. }));
    assert!(matches!(
        err("tcp://[docker]:2376"),
        HostError::BadHost { .. }
    ));
    assert!(matches!(
        err("tcp://me@docker:2376"),
        HostError::BadHost { .. }
    ));
    assert!(matches!(err("tcp://[::1]x"), HostError::BadHost { .. }));
}

#[test]
fn error_bodies_become_one_bounded_line() {
    assert_eq!(
        message_of(b"{\"message\":\"engine restarting\"}"),
        Some("engine restarting".into())
    );
    assert_eq!(
        message_of(b"proxy says\r\nnot\tready\n"),
        Some("proxy says not ready".into())
    );
    assert_eq!(message_of(b""), None);
    assert_eq!(
        message_of(&[b'x'; 500]).unwrap().chars().count(),
        MAX_MESSAGE + 1
    );
}

// --- unix sockets ---

#[tokio::test]
async fn missing_unix_socket_does_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let url = format!("unix://{}", sock.display());
    let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
    assert_eq!(cause, Cause::SocketMissing { path: sock.clone() });
    assert_eq!(
        cause.to_string(),
        format!("{} does not exist yet", sock.display())
    );
}

#[tokio::test]
async fn unix_socket_answering_ok_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    serve_unix(&sock, OK).await;
    let waited = run(
        &args(format!("unix://{}", sock.display()), Duration::from_secs(2)),
        &env(&[]),
    )
    .await
    .unwrap();
    assert_eq!(waited.attempts, 1);
    assert!(waited.to_string().starts_with(&format!(
        "engine ready at unix://{} after 0.",
        sock.display()
    )));
}

#[tokio::test]
async fn keep_alive_server_is_ready_without_closing() {
    // dockerd keeps connections open after answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                let _ = stream.read(&mut chunk).await;
                let _ = stream.write_all(OK).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    // The server holds the connection far past the attempt's deadline, so
    // success means the answer was taken without waiting for the close.
    let url = format!("tcp://127.0.0.1:{port}");
    ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap();
}

#[tokio::test]
async fn engine_restarting_503_names_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    serve_unix(&sock, RESTARTING).await;
    let url = format!("unix://{}", sock.display());
    let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
    assert_eq!(
        cause,
        Cause::Status {
            status: 503,
            message: Some("engine restarting".into())
        }
    );
    assert_eq!(
        cause.to_string(),
        "the engine answered 503 Service Unavailable: engine restarting"
    );
}

#[tokio::test]
async fn stale_unix_socket_file_is_not_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let url = format!("unix://{}", sock.display());
    let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
    assert_eq!(cause, Cause::SocketRefused { path: sock });
}

// --- TCP and names ---

#[tokio::test]
async fn no_listener_is_connection_refused() {
    let (port, _closed) = closed_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
    assert_eq!(
        cause,
        Cause::Refused {
            addr: format!("127.0.0.1:{port}")
        }
    );
    assert_eq!(
        cause.to_string(),
        format!("nothing listens on 127.0.0.1:{port} yet")
    );
}

/// A name server of our own on a loopback address (port 53 needs root,
/// which the suite has): it answers every query NXDOMAIN, or never, so no
/// test depends on the host's resolver or on TEST-NET-1 being black-holed.
async fn name_server(answers: bool) -> (IpAddr, tokio::task::JoinHandle<()>) {
    for _ in 0..20 {
        let n: u32 = rand_u32();
        let ip = Ipv4Addr::new(127, (n >> 16) as u8 | 1, (n >> 8) as u8, n as u8 | 1);
        let Ok(socket) = tokio::net::UdpSocket::bind((ip, 53)).await else {
            continue;
        };
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = answers.then(|| nxdomain(&buf[..n])).flatten() {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        return (IpAddr::V4(ip), task);
    }
    panic!("cannot bind a loopback name server on port 53 (the suite runs as root)");
}

/// The NXDOMAIN answer to a DNS query: its header and question, no records.
fn nxdomain(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + *query.get(end)? as usize;
    }
    end += 5;
    let mut reply = query.get(..end)?.to_vec();
    reply[2] |= 0x80; // a response
    reply[3] = 0x80 | 3; // recursion available, NXDOMAIN
    reply[6..12].fill(0); // no answers, authorities or additionals
    Some(reply)
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// A probe that reads only the given name server and an empty hosts file.
fn probe_with(dir: &Path, server: IpAddr, attempt_timeout: Duration) -> Probe {
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {server}\noptions timeout:30 attempts:5\n"),
    )
    .unwrap();
    std::fs::write(dir.join("hosts"), "").unwrap();
    Probe {
        attempt_timeout,
        hosts_file: dir.join("hosts"),
        resolv_conf: resolv,
    }
}

#[tokio::test]
async fn a_name_that_does_not_exist_is_unresolvable_with_the_alias_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _task) = name_server(true).await;
    let probe = probe_with(dir.path(), server, Duration::from_secs(5));
    let target =
        Target::from_env(None, &env(&[("DOCKER_HOST", "tcp://docker.invalid:2375")])).unwrap();
    let cause = ping_once(&target, &probe).await.unwrap_err();
    assert!(
        matches!(&cause, Cause::Unresolvable { host, .. } if host == "docker.invalid"),
        "{cause:?}"
    );
    let text = cause.to_string();
    assert!(
        text.starts_with("`docker.invalid` does not resolve"),
        "{text}"
    );
    assert!(text.ends_with("is its alias `docker.invalid`?"), "{text}");
}

/// The server never answers and promises 30 s × 5 attempts; the probe's
/// own deadline ends the lookup. Time is paused: nothing answers, so the
/// clock moves only from timer to timer and the bound is exact.
#[tokio::test(start_paused = true)]
async fn silent_name_server_is_bounded_by_the_attempt_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _task) = name_server(false).await;
    let probe = probe_with(dir.path(), server, Duration::from_millis(400));
    let target = Target::from_env(None, &env(&[("DOCKER_HOST", "tcp://docker:2375")])).unwrap();
    let started = tokio::time::Instant::now();
    let cause = ping_once(&target, &probe).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    assert!(
        matches!(&cause, Cause::Unresolvable { host, .. } | Cause::ResolveTimeout { host, .. } if host == "docker"),
        "{cause:?}"
    );
}

#[tokio::test]
async fn hosts_file_is_consulted_before_dns() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "# comment\n127.0.0.1 localhost\n127.0.0.1 dind-wait-test docker\n",
    )
    .unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let probe = Probe {
        attempt_timeout: Duration::from_millis(1500),
        hosts_file: hosts,
        resolv_conf: resolv,
    };
    let port = serve_raw(OK, true).await;
    let target =
        Target::from_env(Some(&format!("tcp://dind-wait-test:{port}")), &env(&[])).unwrap();
    ping_once(&target, &probe).await.unwrap();
    let waited = wait(&target, &probe, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        waited.to_string()[..],
        format!(
            "engine ready at tcp://dind-wait-test:{port} after {:.2}s (1 attempt)",
            waited.elapsed.as_secs_f64()
        )
    );
}

#[tokio::test]
async fn missing_resolv_conf_falls_back_and_still_uses_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 docker\n").unwrap();
    let probe = Probe {
        attempt_timeout: Duration::from_millis(1500),
        hosts_file: hosts,
        resolv_conf: dir.path().join("no-resolv.conf"),
    };
    let (port, _closed) = closed_port();
    let target = Target::from_env(Some(&format!("tcp://docker:{port}")), &env(&[])).unwrap();
    let cause = ping_once(&target, &probe).await.unwrap_err();
    assert_eq!(
        cause,
        Cause::Refused {
            addr: format!("docker:{port} (127.0.0.1)")
        }
    );
}

#[tokio::test]
async fn localhost_resolves_with_the_system_files() {
    let (port, _closed) = closed_port();
    let url = format!("tcp://localhost:{port}");
    let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
    assert!(
        matches!(&cause, Cause::Refused { addr } if addr.starts_with(&format!("localhost:{port} ("))),
        "{cause:?}"
    );
}

#[tokio::test]
async fn overall_timeout_is_honoured_and_names_the_last_cause() {
    let (port, _closed) = closed_port();
    let started = std::time::Instant::now();
    let err = run(
        &args(format!("tcp://127.0.0.1:{port}"), Duration::from_secs(1)),
        &env(&[]),
    )
    .await
    .unwrap_err();
    // Never before the timeout; after it, at most the attempt in flight,
    // which the code bounds by the time left (no machine-speed window).
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(1) + ATTEMPT_TIMEOUT,
        "{elapsed:?}"
    );
    let WaitError::NotReady {
        attempts,
        ref cause,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert!((3..=5).contains(&attempts), "{attempts}");
    assert!(matches!(cause, Cause::Refused { .. }), "{cause:?}");
    assert_eq!(
        err.to_string(),
        format!("the engine at tcp://127.0.0.1:{port} is not ready after 1s: nothing listens on 127.0.0.1:{port} yet")
    );
}

#[tokio::test]
async fn plain_request_to_a_go_tls_port_says_tls_is_expected() {
    // What Go's net/http answers to plain HTTP on a TLS listener.
    let port = serve_raw(
        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        true,
    )
    .await;
    let url = format!("tcp://127.0.0.1:{port}");
    let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
    assert_eq!(
        cause,
        Cause::TlsRequired {
            addr: format!("127.0.0.1:{port}")
        }
    );
}

#[tokio::test]
async fn plain_request_to_a_rustls_port_is_not_http() {
    let ca = Ca::new();
    let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
    let url = format!("tcp://127.0.0.1:{port}");
    let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
    assert!(
        matches!(&cause, Cause::NotHttp { tls: false, .. }),
        "{cause:?}"
    );
    assert!(
        cause
            .to_string()
            .ends_with("a TLS port? then set DOCKER_TLS_VERIFY=1"),
        "{cause}"
    );
}

// --- TLS ---

#[tokio::test]
async fn tls_with_the_right_files_is_ready() {
    let ca = Ca::new();
    let port = serve_tls(&ca, &ca.server(&["127.0.0.1", "localhost", "docker"])).await;
    let dir = tempfile::tempdir().unwrap();
    write_client_files(dir.path(), &ca, &ca.client());
    let d = dir.path().to_str().unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    ping(&tls_env(&url, d)).await.unwrap();
    // By name, too: the name is the TLS server name.
    let url = format!("tcp://localhost:{port}");
    ping(&tls_env(&url, d)).await.unwrap();
}

#[tokio::test]
async fn server_cert_from_another_ca_is_unknown_ca() {
    let ca = Ca::new();
    let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
    // A stale instance's CA (same name, other key), and a stranger's.
    for stale in [Ca::new(), Ca::named("some other CA")] {
        let dir = tempfile::tempdir().unwrap();
        write_client_files(dir.path(), &stale, &stale.client());
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(
            cause,
            Cause::UnknownCa {
                addr: format!("127.0.0.1:{port}"),
                ca: dir.path().join("ca.pem")
            }
        );
        assert!(cause.to_string().contains("is not signed by"), "{cause}");
    }
}

#[tokio::test]
async fn server_cert_for_another_name_is_a_name_mismatch() {
    let ca = Ca::new();
    let port = serve_tls(&ca, &ca.server(&["docker", "10.9.9.9"])).await;
    let dir = tempfile::tempdir().unwrap();
    write_client_files(dir.path(), &ca, &ca.client());
    let url = format!("tcp://127.0.0.1:{port}");
    let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
        .await
        .unwrap_err();
    let Cause::NameMismatch { host, .. } = &cause else {
        panic!("{cause:?}")
    };
    assert_eq!(host, "127.0.0.1");
    let text = cause.to_string();
    assert!(text.contains("is not valid for `127.0.0.1`"), "{text}");
    assert!(text.contains("DOCKER_TLS_SAN"), "{text}");
}

#[tokio::test]
async fn client_cert_from_another_ca_is_rejected_by_the_server() {
    let ca = Ca::new();
    let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
    // The right CA to check the server, but our own certificate comes
    // from a stale instance's CA (same name: the server sees a bad
    // signature) or from a stranger's (unknown issuer).
    for (other, alert) in [
        (Ca::new(), "DecryptError"),
        (Ca::named("some other CA"), "UnknownCA"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_client_files(dir.path(), &ca, &other.client());
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(
            cause,
            Cause::ClientCertRejected {
                addr: format!("127.0.0.1:{port}"),
                alert: alert.into()
            }
        );
        assert!(
            cause
                .to_string()
                .contains("rejected our client certificate"),
            "{cause}"
        );
    }
}

#[tokio::test]
async fn no_client_cert_is_rejected_by_the_server() {
    // DOCKER_TLS without verification and without client files.
    let ca = Ca::new();
    let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    let e = env(&[
        ("DOCKER_HOST", &url),
        ("DOCKER_TLS", "1"),
        ("DOCKER_CERT_PATH", dir.path().to_str().unwrap()),
    ]);
    let cause = ping(&e).await.unwrap_err();
    assert_eq!(
        cause,
        Cause::ClientCertRejected {
            addr: format!("127.0.0.1:{port}"),
            alert: "CertificateRequired".into()
        }
    );
}

#[tokio::test]
async fn missing_cert_files_are_not_there_yet() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _closed) = closed_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(
        cause,
        Cause::CertMissing {
            path: dir.path().join("ca.pem")
        }
    );
    assert!(
        cause
            .to_string()
            .contains("does not exist yet: with DOCKER_TLS_VERIFY set"),
        "{cause}"
    );
    // With verification the client certificate is required too.
    let ca = Ca::new();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(
        cause,
        Cause::CertMissing {
            path: dir.path().join("cert.pem")
        }
    );
}

#[tokio::test]
async fn empty_cert_file_cannot_be_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "").unwrap();
    let url = "tcp://127.0.0.1:2376";
    let cause = ping(&tls_env(url, dir.path().to_str().unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(&cause, Cause::CertUnusable { path, .. } if path.ends_with("ca.pem")),
        "{cause:?}"
    );
}

#[tokio::test]
async fn wait_succeeds_once_the_cert_files_appear() {
    let ca = Ca::new();
    let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_owned();
    let client = ca.client();
    let ca_pem = ca.pem();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Same layout as write_client_files, without sharing the issuer.
        for (name, pem) in [
            ("ca.pem", ca_pem),
            ("cert.pem", client.cert),
            ("key.pem", client.key),
        ] {
            let tmp = dir_path.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, dir_path.join(name)).unwrap();
        }
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let e = tls_env(&url, dir.path().to_str().unwrap());
    let waited = run(&args(url.clone(), Duration::from_secs(3)), &e)
        .await
        .unwrap();
    writer.await.unwrap();
    // Not before the files existed; the success within the 3 s budget and
    // the retries are the rest of the claim.
    assert!(waited.elapsed >= Duration::from_millis(500), "{waited}");
    assert!(waited.attempts >= 2, "{waited:?}");
}

#[tokio::test]
async fn tls_to_a_plain_http_port_is_not_tls() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    write_client_files(dir.path(), &ca, &ca.client());
    // What Go's net/http answers to a TLS ClientHello.
    let port = serve_raw(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request",
        false,
    )
    .await;
    let url = format!("tcp://127.0.0.1:{port}");
    let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(
        cause,
        Cause::NotTls {
            addr: format!("127.0.0.1:{port}")
        }
    );
}
