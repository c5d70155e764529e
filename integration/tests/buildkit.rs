//! BuildKit under the request policy (issue 10). A BuildKit Solve travels
//! inside `/grpc`, out of the proxy's sight, and dockerd grants
//! `network.host` by default: a build step asking for it runs in the dind
//! service's own network namespace. Under ci-safe the supervisor tells
//! dockerd (daemon.json `builder.entitlements`) to grant neither that nor
//! `security.insecure`. What a build step saw is the proof: its network
//! namespace against dockerd's, and its interfaces (the test dockerds run
//! with `--bridge=none` in this machine's namespace, which has more than
//! `lo`).
//!
//! Raw Solves are sent as buildx's docker driver sends them: `POST /grpc`
//! upgraded to h2c, then gRPC `moby.buildkit.v1.Control/Solve` with an LLB
//! definition built here. No step uses dockerd's default network: without a
//! bridge it has none (`network bridge not found`), so steps ask for `none`.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{ok, Service, ServiceOptions};

/// Debian's 20.10 client: BuildKit built in, no buildx needed.
const CLI_20_10: &str = "/usr/bin/docker";

/// The step every build runs: what network it is in.
const SEE: &str = "{ busybox readlink /proc/self/ns/net; ls /sys/class/net; } > /seen";

/// A service with TLS off, so the raw client speaks plain HTTP to the proxy.
fn service(env: &[(&str, &str)], dockerd_args: &[&str]) -> Service {
    let mut all = vec![("DOCKER_TLS_CERTDIR".to_owned(), String::new())];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let svc = Service::start(ServiceOptions {
        env: all,
        dockerd_args: dockerd_args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    svc.wait_ready();
    svc
}

/// The 20.10 CLI through the proxy, as a job would use it.
fn cli(svc: &Service, buildkit: bool) -> Command {
    assert!(
        Path::new(CLI_20_10).is_file(),
        "{CLI_20_10} (Debian's docker.io client) is not installed"
    );
    let mut c = Command::new(CLI_20_10);
    c.env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", svc.port))
        .env("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT");
    c
}

/// What a build step saw.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    netns: String,
    interfaces: Vec<String>,
}

impl Seen {
    /// The network of dockerd (this machine's, where the service runs).
    fn host(svc: &Service) -> Seen {
        let netns = fs::read_link(format!("/proc/{}/ns/net", svc.dockerd_pid())).unwrap();
        let mut interfaces: Vec<String> = fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        interfaces.sort();
        Seen {
            netns: netns.display().to_string(),
            interfaces,
        }
    }

    /// What the step of the built image `tag` wrote; None when no such image
    /// exists (the step never ran).
    fn in_image(svc: &Service, tag: &str) -> Option<Seen> {
        if !svc.docker(&["image", "inspect", tag]).status.success() {
            return None;
        }
        let out = svc.docker_ok(&["run", "--rm", "--network", "none", tag, "cat", "/seen"]);
        let mut lines = out.lines().map(str::to_owned);
        let netns = lines.next().unwrap_or_default();
        let mut interfaces: Vec<String> = lines.collect();
        interfaces.sort();
        Some(Seen { netns, interfaces })
    }

    /// A namespace of its own: another one than dockerd's, with loopback only.
    fn isolated(&self, host: &Seen) -> bool {
        self.netns != host.netns && self.interfaces == ["lo"]
    }

    /// dockerd's own namespace, where the service's interfaces are.
    fn is_host(&self, host: &Seen) -> bool {
        self.netns == host.netns
            && self.interfaces.len() > 1
            && self.interfaces.iter().all(|i| host.interfaces.contains(i))
    }
}

/// A Dockerfile build context whose one step records what it sees.
fn context() -> tempfile::TempDir {
    let ctx = support::short_tempdir();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nRUN {SEE}\n", support::BUSYBOX_IMAGE),
    )
    .unwrap();
    ctx
}

/// BuildKit's `pb.NetMode` and `pb.SecurityMode`.
#[derive(Clone, Copy)]
enum Net {
    Host = 1,
    None = 2,
}

#[derive(Clone, Copy)]
enum Security {
    Sandbox = 0,
    Insecure = 1,
}

/// Protocol Buffers wire format, as much as a Solve needs.
mod pb {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A varint field; zero is the default and is left out.
    pub fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
        if v != 0 {
            varint(out, field << 3);
            varint(out, v);
        }
    }

    /// A length-delimited field: string, bytes or message.
    pub fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

/// An LLB definition (`pb.Definition`): the busybox image, one exec step on
/// it running `script` with `net` and `security`, and the terminal op.
fn definition(script: &str, net: Net, security: Security) -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut platform = Vec::new();
    pb::bytes(&mut platform, 1, arch.as_bytes());
    pb::bytes(&mut platform, 2, b"linux");
    // An op is named by the digest of its bytes; an input by that digest.
    let input = |op: &[u8]| {
        let sum = ring::digest::digest(&ring::digest::SHA256, op);
        let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut i = Vec::new();
        pb::bytes(&mut i, 1, format!("sha256:{hex}").as_bytes());
        i
    };

    let mut source = Vec::new();
    pb::bytes(
        &mut source,
        1,
        format!("docker-image://docker.io/{}", support::BUSYBOX_IMAGE).as_bytes(),
    );
    let mut source_op = Vec::new();
    pb::bytes(&mut source_op, 3, &source);
    pb::bytes(&mut source_op, 10, &platform);

    let mut meta = Vec::new();
    for arg in ["sh", "-c", script] {
        pb::bytes(&mut meta, 1, arg.as_bytes());
    }
    pb::bytes(&mut meta, 2, b"PATH=/bin");
    pb::bytes(&mut meta, 3, b"/");
    // The image as `/`, from input 0, and that mount as output 0.
    let mut mount = Vec::new();
    pb::bytes(&mut mount, 3, b"/");
    let mut exec = Vec::new();
    pb::bytes(&mut exec, 1, &meta);
    pb::bytes(&mut exec, 2, &mount);
    pb::uint(&mut exec, 3, net as u64);
    pb::uint(&mut exec, 4, security as u64);
    let mut exec_op = Vec::new();
    pb::bytes(&mut exec_op, 1, &input(&source_op));
    pb::bytes(&mut exec_op, 2, &exec);
    pb::bytes(&mut exec_op, 10, &platform);

    let mut terminal = Vec::new();
    pb::bytes(&mut terminal, 1, &input(&exec_op));
    let mut def = Vec::new();
    for op in [&source_op, &exec_op, &terminal] {
        pb::bytes(&mut def, 1, op);
    }
    def
}

/// `moby.buildkit.v1.SolveRequest`: solve `def`, export it as image `tag`
/// with dockerd's own exporter, asking for `entitlements`.
fn solve_request(def: &[u8], tag: &str, entitlements: &[&str]) -> Vec<u8> {
    static N: AtomicU32 = AtomicU32::new(0);
    let reference = format!(
        "dsvtest{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut req = Vec::new();
    pb::bytes(&mut req, 1, reference.as_bytes());
    pb::bytes(&mut req, 2, def);
    pb::bytes(&mut req, 3, b"moby");
    let mut attr = Vec::new();
    pb::bytes(&mut attr, 1, b"name");
    pb::bytes(&mut attr, 2, tag.as_bytes());
    pb::bytes(&mut req, 4, &attr);
    for e in entitlements {
        pb::bytes(&mut req, 9, e.as_bytes());
    }
    req
}

/// Sends one Solve through the proxy's plain port, as buildx does: `POST
/// /grpc` upgraded to h2c, then one gRPC call. Err is the grpc-message, or
/// the HTTP answer when there was no upgrade.
fn solve(
    svc: &Service,
    tag: &str,
    net: Net,
    security: Security,
    entitlements: &[&str],
) -> Result<(), String> {
    let req = solve_request(&definition(SEE, net, security), tag, entitlements);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), grpc_solve(svc.port, req))
            .await
            .unwrap_or_else(|_| Err("no answer to the Solve within 120 s".into()))
    })
}

async fn grpc_solve(port: u16, req: Vec<u8>) -> Result<(), String> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.write_all(
        b"POST /v1.41/grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await
    .map_err(|e| e.to_string())?;
    // Byte by byte: HTTP/2 from dockerd may follow the head in one segment.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => break,
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest)).await;
        head.extend(rest);
        return Err(String::from_utf8_lossy(&head).into_owned());
    }
    let (client, conn) = h2::client::handshake(tcp)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut client = client.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::post("http://docker/moby.buildkit.v1.Control/Solve")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    let mut message = vec![0u8];
    message.extend((req.len() as u32).to_be_bytes());
    message.extend(req);
    send.send_data(Bytes::from(message), true)
        .map_err(|e| e.to_string())?;
    let (head, mut body) = response.await.map_err(|e| e.to_string())?.into_parts();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    // A call that fails at once answers with headers only ("Trailers-Only").
    let trailers = body
        .trailers()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(head.headers);
    let field = |name: &str| {
        trailers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    match field("grpc-status").as_deref() {
        Some("0") => Ok(()),
        status => Err(format!(
            "grpc-status {status:?}: {}",
            percent_decode(&field("grpc-message").unwrap_or_default())
        )),
    }
}

/// grpc-message is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            s.get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Solve dockerd must refuse: it fails naming `says`, and no step ran.
fn refused(
    svc: &Service,
    tag: &str,
    net: Net,
    security: Security,
    entitlements: &[&str],
    says: &str,
) {
    let err = solve(svc, tag, net, security, entitlements).expect_err("the Solve was granted");
    assert!(err.contains(says), "the refusal should name {says}: {err}");
    assert_eq!(Seen::in_image(svc, tag), None, "the step ran");
}

#[test]
fn ci_safe_grants_no_build_step_the_hosts_network_or_the_insecure_sandbox() {
    let svc = service(&[("DIND_POLICY", "ci-safe")], &[]);
    svc.load_busybox();
    let host = Seen::host(&svc);

    // Raw Solves, unread by the proxy: dockerd itself refuses.
    refused(
        &svc,
        "grpc-host:1",
        Net::Host,
        Security::Sandbox,
        &["network.host"],
        "network.host",
    );
    refused(
        &svc,
        "grpc-host:2",
        Net::Host,
        Security::Sandbox,
        &[],
        "network.host",
    );
    refused(
        &svc,
        "grpc-insecure:1",
        Net::None,
        Security::Insecure,
        &["security.insecure"],
        "security.insecure",
    );
    // A Solve that asks for nothing works, in a namespace of its own.
    solve(&svc, "grpc-none:1", Net::None, Security::Sandbox, &[]).unwrap();
    let seen = Seen::in_image(&svc, "grpc-none:1").unwrap();
    assert!(seen.isolated(&host), "{seen:?} vs the host's {host:?}");

    // The CLI's `--network=host` is refused by the proxy, with the rule named.
    let ctx = context();
    let out = cli(&svc, true)
        .args(["build", "--network=host", "-t", "cli-host:1"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a BuildKit build with --network=host was allowed"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy ci-safe") && err.contains("networkmode"),
        "{err}"
    );
    assert_eq!(Seen::in_image(&svc, "cli-host:1"), None);
    // Ordinary builds keep working, BuildKit and classic, each step isolated.
    for (buildkit, tag) in [(true, "cli-bk:1"), (false, "cli-classic:1")] {
        ok(cli(&svc, buildkit)
            .args(["build", "--network=none", "-t", tag])
            .arg(ctx.path()));
        let seen = Seen::in_image(&svc, tag).unwrap();
        assert!(
            seen.isolated(&host),
            "{tag}: {seen:?} vs the host's {host:?}"
        );
    }
}

/// The escape the test above closes is real: permissive changes nothing.
#[test]
fn permissive_still_grants_what_dockerd_grants() {
    let svc = service(&[], &[]);
    svc.load_busybox();
    let host = Seen::host(&svc);
    solve(
        &svc,
        "grpc-host:1",
        Net::Host,
        Security::Sandbox,
        &["network.host"],
    )
    .unwrap();
    let seen = Seen::in_image(&svc, "grpc-host:1").unwrap();
    assert!(seen.is_host(&host), "{seen:?} vs the host's {host:?}");
    let ctx = context();
    ok(cli(&svc, true)
        .args(["build", "--network=host", "-t", "cli-host:1"])
        .arg(ctx.path()));
    let seen = Seen::in_image(&svc, "cli-host:1").unwrap();
    assert!(seen.is_host(&host), "{seen:?} vs the host's {host:?}");
}

/// The operator's daemon.json: under ci-safe its grants cannot loosen the
/// policy, and its denials stand under any policy; the rest of it is kept.
#[test]
fn the_operators_builder_entitlements_never_loosen_and_are_never_loosened() {
    let dir = support::short_tempdir();
    let config = dir.path().join("daemon.json");
    let config_arg = format!("--config-file={}", config.display());

    fs::write(
        &config,
        r#"{"builder": {"gc": {"enabled": false}, "entitlements": {"network-host": true, "security-insecure": true}}}"#,
    )
    .unwrap();
    let svc = service(&[("DIND_POLICY", "ci-safe")], &[&config_arg]);
    svc.load_busybox();
    refused(
        &svc,
        "grpc-host:1",
        Net::Host,
        Security::Sandbox,
        &["network.host"],
        "network.host",
    );
    refused(
        &svc,
        "grpc-insecure:1",
        Net::None,
        Security::Insecure,
        &["security.insecure"],
        "security.insecure",
    );
    let generated: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(svc.dir.path().join("run/daemon.json")).unwrap())
            .unwrap();
    assert_eq!(
        generated["builder"]["gc"],
        serde_json::json!({"enabled": false}),
        "{generated}"
    );
    drop(svc);

    // Permissive: the operator's denial is theirs, and stays.
    fs::write(
        &config,
        r#"{"builder": {"entitlements": {"network-host": false}}}"#,
    )
    .unwrap();
    let svc = service(&[], &[&config_arg]);
    svc.load_busybox();
    refused(
        &svc,
        "grpc-host:1",
        Net::Host,
        Security::Sandbox,
        &["network.host"],
        "network.host",
    );
    drop(svc);

    // A policy file that allows host networking leaves dockerd's grant alone;
    // the insecure sandbox is still the `privileged` rule's, and denied.
    let policy = dir.path().join("policy.toml");
    fs::write(
        &policy,
        "profile = \"ci-safe\"\n[rules]\nhost_network = \"allow\"\n",
    )
    .unwrap();
    let svc = service(&[("DIND_POLICY", policy.to_str().unwrap())], &[]);
    svc.load_busybox();
    solve(
        &svc,
        "grpc-host:1",
        Net::Host,
        Security::Sandbox,
        &["network.host"],
    )
    .unwrap();
    let seen = Seen::in_image(&svc, "grpc-host:1").unwrap();
    assert!(seen.is_host(&Seen::host(&svc)), "{seen:?}");
    refused(
        &svc,
        "grpc-insecure:1",
        Net::None,
        Security::Insecure,
        &["security.insecure"],
        "security.insecure",
    );
}
