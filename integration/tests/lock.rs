//! The lock and the private raw socket (issue 10, items 3 and 4) with the
//! real binary, in the shapes GitLab gives a job: job variables become the
//! service's environment, and the job writes the service's `command:`.
//!
//! Each service runs in a mount namespace of its own in which the image's
//! policy file exists and /run is a fresh tmpfs (`ServiceOptions::
//! image_policy`), so the host's /etc and /var/run/docker.sock are never
//! touched. A refused start is checked by its ground truth: exit 78, one
//! line, and nothing ran (no dockerd state, no socket, no side effect of
//! the job's command).

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use support::{docker_clis, ok, short_tempdir, Service, ServiceOptions};

const IMAGE_FILE: &str = "/etc/dind-supervisor/policy.toml";

/// The image's locked policy in these tests: ci-safe with privileged
/// containers allowed, so that a tightening shows.
const LOCKED: &str = "locked = true\nprofile = \"ci-safe\"\n[rules]\nprivileged = \"allow\"\n";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A service under the locked image policy, in `dir`.
fn locked_in(dir: tempfile::TempDir, opts: ServiceOptions) -> Service {
    support::require_root_and_engine();
    Service::start_in(
        dir,
        ServiceOptions {
            image_policy: Some(LOCKED.into()),
            ..opts
        },
    )
}

/// A start that must be refused: exit 78, exactly one line naming each
/// of `names`, and no trace of dockerd. Returns the line.
fn refused(mut svc: Service, names: &[&str]) -> String {
    let (status, _) = svc.wait_exit(Duration::from_secs(30));
    let log = svc.log_text();
    assert_eq!(status.code(), Some(78), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not:\n{log}");
    for name in names {
        assert!(lines[0].contains(name), "the line names {name}: {log}");
    }
    assert!(!svc.socket().exists(), "dockerd's socket exists");
    let socket_dir = svc.socket().parent().unwrap().to_owned();
    if socket_dir != svc.dir.path() {
        assert!(
            !socket_dir.exists(),
            "its directory was made before the check"
        );
    }
    assert_eq!(
        fs::read_dir(svc.dir.path().join("data")).unwrap().count(),
        0,
        "dockerd ran"
    );
    lines[0].to_owned()
}

/// A job variable, its value in a given service directory, and what the
/// refusal must name.
type Case<'a> = (
    &'a str,
    &'a dyn Fn(&std::path::Path) -> String,
    &'a [&'a str],
);

#[test]
fn job_variables_cannot_loosen_a_locked_policy() {
    // GitLab passes every job variable to the service: each of these alone
    // would switch the policy off or move dockerd's raw API into reach.
    // The last one names the service's own raw socket.
    let raw =
        |d: &std::path::Path| format!("unix://{}", d.join("run/dockerd/docker.sock").display());
    let cases: &[Case] = &[
        (
            "DIND_POLICY",
            &|_| "permissive".into(),
            &[
                "DIND_POLICY=\"permissive\"",
                "allows what the locked policy denies",
            ],
        ),
        (
            "DIND_POLICY",
            &|_| "/builds/policy.toml".into(),
            &["DIND_POLICY=\"/builds/policy.toml\""],
        ),
        (
            "DIND_POLICY_ALLOW_BINDS",
            &|_| "/".into(),
            &["DIND_POLICY_ALLOW_BINDS=\"/\""],
        ),
        (
            "DIND_POLICY_ALLOW_BINDS",
            &|_| "/builds,/var/run".into(),
            &["DIND_POLICY_ALLOW_BINDS", "/var/run is not under"],
        ),
        (
            "DIND_DOCKERD_SOCKET",
            &|_| "/builds/raw.sock".into(),
            &["DIND_DOCKERD_SOCKET=\"/builds/raw.sock\""],
        ),
        (
            "DIND_DOCKERD_SOCKET",
            &|_| "/var/run/docker.sock".into(),
            &["DIND_DOCKERD_SOCKET=\"/var/run/docker.sock\""],
        ),
        (
            "DIND_DOCKERD_SOCKET_SHARED",
            &|_| "allow".into(),
            &["DIND_DOCKERD_SOCKET_SHARED=\"allow\""],
        ),
        (
            "DIND_DOCKERD",
            &|_| "/bin/sh".into(),
            &["DIND_DOCKERD=\"/bin/sh\""],
        ),
        (
            "DIND_AUDIT_LOG",
            &|_| "/dev/null".into(),
            &["DIND_AUDIT_LOG=\"/dev/null\""],
        ),
        (
            "DOCKER_HOST",
            &raw,
            &["DOCKER_HOST=", "dockerd's raw socket"],
        ),
    ];
    for (var, value, names) in cases {
        let dir = short_tempdir();
        let value = value(dir.path());
        let svc = locked_in(
            dir,
            ServiceOptions {
                env: vec![(var.to_string(), value)],
                ..Default::default()
            },
        );
        let mut names = names.to_vec();
        names.push(IMAGE_FILE);
        refused(svc, &names);
    }
}

#[test]
fn the_service_command_cannot_escape_a_lock() {
    // A port nobody listens on: the service must refuse before dockerd
    // could open it (checked at the end).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    // `command: ["sh", "-c", …]`: the command must never run.
    let dir = short_tempdir();
    let marker = dir.path().join("escaped");
    let sh = [
        "sh".to_owned(),
        "-c".to_owned(),
        format!("touch {}; sleep 30", marker.display()),
    ];
    let svc = locked_in(
        dir,
        ServiceOptions {
            command: Some(sh.to_vec()),
            ..Default::default()
        },
    );
    refused(svc, &["the command \"sh\"", "remove the service's command"]);
    assert!(!marker.exists(), "sh ran");

    // Bare dockerd: exactly the command's flags, no proxy.
    let bare = ["dockerd".to_owned(), format!("--host={tcp}")];
    refused(
        locked_in(
            short_tempdir(),
            ServiceOptions {
                command: Some(bare.to_vec()),
                env: env(&[("DIND_BARE_DOCKERD", "1")]),
                ..Default::default()
            },
        ),
        &["DIND_BARE_DOCKERD=\"true\" is refused"],
    );
    // Our own `run` with a loosening flag, named as the job spelled it.
    let run = ["run", "--policy", "permissive"].map(String::from);
    refused(
        locked_in(
            short_tempdir(),
            ServiceOptions {
                command: Some(run.to_vec()),
                ..Default::default()
            },
        ),
        &["--policy \"permissive\""],
    );
    // dockerd flags in the stock form (`command: ["-H", …]`), in the
    // spellings dockerd's flag parser reads. A `--host` is the proxy's
    // endpoint (below), but never at dockerd's raw socket.
    fn raw(d: &std::path::Path) -> String {
        format!("unix://{}", d.join("run/dockerd/docker.sock").display())
    }
    type Args = dyn Fn(&std::path::Path) -> Vec<String>;
    let cases: [&Args; 6] = [
        &|d| vec!["-H".to_owned(), raw(d)],
        &|d| vec!["--debug".to_owned(), format!("--host={}", raw(d))],
        &|d| vec!["-DH".to_owned(), raw(d)],
        &|_| vec!["--config-file=/builds/daemon.json".to_owned()],
        &|_| vec!["--default-runtime".to_owned(), "evil".to_owned()],
        // dockerd overwrites its pid file, and removes it at exit.
        &|_| vec!["--pidfile=/etc/dind-supervisor/policy.toml".to_owned()],
    ];
    for case in cases {
        let dir = short_tempdir();
        let args = case(dir.path());
        let svc = locked_in(
            dir,
            ServiceOptions {
                dockerd_args: args.clone(),
                ..Default::default()
            },
        );
        let line = refused(svc, &["the dockerd flag"]);
        assert!(
            args.iter().any(|a| line.contains(a.as_str())),
            "{args:?}: {line}"
        );
    }
    // Nothing answered on the port bare dockerd was asked to open.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Under a lock, `-H tcp://…` in the service command (a cluster, as pflag
/// reads it) is a listener of the proxy: dockerd's own command line names
/// only its private socket, and a request on that port meets the locked
/// policy.
#[test]
fn a_host_flag_under_a_lock_is_the_proxys_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let svc = locked_in(
        short_tempdir(),
        ServiceOptions {
            dockerd_args: vec!["-DH".to_owned(), format!("tcp://127.0.0.1:{port}")],
            ..Default::default()
        },
    );
    svc.wait_ready();
    let cmdline = fs::read(format!("/proc/{}/cmdline", svc.dockerd_pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        !cmdline.contains("tcp://"),
        "dockerd listens on TCP itself: {cmdline}"
    );
    assert!(
        cmdline.contains(" -D"),
        "the rest of the cluster reaches dockerd: {cmdline}"
    );
    let cli = docker_clis().pop().unwrap();
    let mut cmd = svc.tls_cli(&cli);
    cmd.env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"));
    ok(cmd.args(["version", "--format", "{{.Server.Version}}"]));
    let mut cmd = svc.tls_cli(&cli);
    let out = cmd
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .args(["run", "-v", "/:/host", "no-such-image", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("policy"), "{err}");
}

#[test]
fn a_tightening_starts_and_status_and_the_log_show_the_lock() {
    // The job's PATH puts its own dockerd, iptables and runc first, and
    // names the iptables shim directory so the supervisor hands dockerd a
    // PATH of its own making: none of them may run.
    let dir = short_tempdir();
    let evil = dir.path().join("evil");
    fs::create_dir_all(&evil).unwrap();
    let ran = dir.path().join("job-program-ran");
    for program in [
        "dockerd",
        "iptables",
        "iptables-legacy",
        "runc",
        "containerd",
    ] {
        let path = evil.join(program);
        fs::write(
            &path,
            format!("#!/bin/sh\ntouch {}\nexit 1\n", ran.display()),
        )
        .unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let job_path = format!(
        "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        evil.display(),
        dir.path().join("run/iptables").display()
    );
    let svc = locked_in(
        dir,
        ServiceOptions {
            env: env(&[
                ("DIND_POLICY", "ci-safe"),
                ("DIND_POLICY_ALLOW_BINDS", "/builds/project"),
                // dockerd must never see what the job sets.
                ("DOCKER_RAMDISK", "1"),
                ("PATH", &job_path),
                ("DIND_MTU", "1400"),
            ]),
            ..Default::default()
        },
    );
    svc.wait_ready();
    let (code, body) = svc.health("/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["policy"]["locked"], true, "{status}");
    assert_eq!(status["policy"]["lock_file"], IMAGE_FILE);
    let name = status["policy"]["name"].as_str().unwrap();
    assert!(
        name.contains(IMAGE_FILE) && name.ends_with("tightened by ci-safe"),
        "{name}"
    );
    let start_line = svc
        .log_text()
        .lines()
        .find(|l| l.contains("request policy") && l.contains("lock_file="))
        .map(str::to_owned)
        .unwrap();
    assert!(
        start_line.contains("locked=true") && start_line.contains(IMAGE_FILE),
        "{start_line}"
    );

    // The tightening holds: privileged (allowed by the lock, denied by
    // ci-safe) and a bind outside the narrower allowlist are refused; a bind
    // inside it works. Ground truth from dockerd itself.
    let image = svc.load_busybox();
    let cli = docker_clis().pop().unwrap();
    for args in [
        vec!["run", "--privileged", image, "true"],
        vec!["run", "-v", "/builds/other:/x", image, "true"],
    ] {
        let out = svc.tls_cli(&cli).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("tightened by ci-safe"),
            "{args:?}: {err}"
        );
    }
    ok(svc
        .tls_cli(&cli)
        .args(["run", "-v", "/builds/project/x:/x", image, "true"]));
    assert_eq!(
        svc.docker_ok(&["ps", "-aq"]).lines().count(),
        1,
        "only the allowed container exists"
    );
    // Ordinary work under the clean environment: a classic build.
    let context = svc.dir.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        format!("FROM {image}\nRUN echo built > /built\n"),
    )
    .unwrap();
    ok(svc
        .tls_cli(&cli)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", "locked-build"])
        .arg(&context));
    assert_eq!(
        ok(svc
            .tls_cli(&cli)
            .args(["run", "--rm", "locked-build", "cat", "/built"]))
        .trim(),
        "built"
    );

    // dockerd and its children run with a clean environment.
    let environ = fs::read(format!("/proc/{}/environ", svc.dockerd_pid())).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        !vars
            .iter()
            .any(|v| v.starts_with("DOCKER_RAMDISK=") || v.starts_with("DIND_")),
        "{vars:?}"
    );
    assert!(
        vars.contains(
            &"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()
        ),
        "{vars:?}"
    );
    assert!(!ran.exists(), "a program from the job's PATH ran");
}

#[test]
fn the_raw_socket_is_private_and_var_run_docker_sock_is_the_proxys() {
    let svc = locked_in(short_tempdir(), ServiceOptions::default());
    svc.wait_ready();
    // dockerd's socket: in a 0700 directory of the supervisor's own.
    let raw = svc.socket();
    assert_eq!(raw, svc.dir.path().join("run/dockerd/docker.sock"));
    let mode = fs::metadata(raw.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let (_, body) = svc.health("/status");
    assert!(body.contains("unix:///var/run/docker.sock"), "{body}");

    // `docker exec <service> docker …`: a docker CLI inside the service's
    // mount namespace, with no DOCKER_HOST, meets the proxy and its policy.
    let inside = |args: &[&str]| {
        Command::new("nsenter")
            .arg("-t")
            .arg(svc.pid().to_string())
            .args(["-m", "--", "docker"])
            .args(args)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap()
    };
    let out = inside(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = svc.load_busybox();
    let out = inside(&["run", "--rm", "-v", "/:/host", image, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("policy file:{IMAGE_FILE}")),
        "{err}"
    );
    assert_eq!(
        svc.docker_ok(&["ps", "-aq"]).trim(),
        "",
        "the refused container exists"
    );
    let audit = svc.log_text();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"decision\":\"deny\"") && l.contains("bind_mounts")),
        "not audited:\n{audit}"
    );
}

/// A bind mount in the service's namespace plays a volume shared with the
/// job: `$D/volume` shows `$D/volume-src`, which the test (outside, like
/// another container) sees too.
fn shared_volume(target: &str) -> Vec<String> {
    vec![
        format!("mkdir -p $D/volume-src $D/{target}"),
        format!("mount --bind $D/volume-src $D/{target}"),
    ]
}

#[test]
fn a_raw_socket_on_a_shared_mount_is_refused_unless_the_operator_allows_it() {
    support::require_root_and_engine();
    let dir = short_tempdir();
    let in_volume = dir.path().join("volume/raw.sock").display().to_string();
    let volume = dir.path().join("volume").display().to_string();
    let svc = Service::start_in(
        dir,
        ServiceOptions {
            env: env(&[("DIND_DOCKERD_SOCKET", &in_volume)]),
            namespace_setup: shared_volume("volume"),
            ..Default::default()
        },
    );
    refused(
        svc,
        &[
            "dockerd's socket directory",
            &volume,
            "DIND_DOCKERD_SOCKET_SHARED=allow",
        ],
    );

    // containerd's socket under the exec root is as much a raw API.
    let dir = short_tempdir();
    let exec = format!("--exec-root={}", dir.path().join("volume/exec").display());
    let svc = Service::start_in(
        dir,
        ServiceOptions {
            dockerd_args: vec![exec],
            namespace_setup: shared_volume("volume"),
            ..Default::default()
        },
    );
    let line = refused(svc, &["dockerd's exec root"]);
    assert!(line.contains("--exec-root"), "{line}");

    // The operator's explicit word: it starts, and the reason for the rule
    // shows: from outside, the volume holds dockerd's whole API.
    let dir = short_tempdir();
    let in_volume = dir.path().join("volume/raw.sock").display().to_string();
    let seen_outside = dir.path().join("volume-src/raw.sock");
    let svc = Service::start_in(
        dir,
        ServiceOptions {
            env: env(&[
                ("DIND_DOCKERD_SOCKET", &in_volume),
                ("DIND_DOCKERD_SOCKET_SHARED", "allow"),
            ]),
            namespace_setup: shared_volume("volume"),
            ..Default::default()
        },
    );
    svc.wait_ready();
    assert!(
        svc.log_text().contains("DIND_DOCKERD_SOCKET_SHARED=allow"),
        "{}",
        svc.log_text()
    );
    ok(Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", seen_outside.display()))
        .arg("version"));
}

#[test]
fn a_locked_image_cannot_be_given_a_shared_run_directory_nor_allow_it() {
    // The image's run directory (pinned by the test's policy file) is a
    // shared volume here: refused, whatever the job says.
    let run = |vars: &[(&str, &str)]| {
        locked_in(
            short_tempdir(),
            ServiceOptions {
                env: env(vars),
                namespace_setup: shared_volume("run"),
                ..Default::default()
            },
        )
    };
    refused(
        run(&[]),
        &[
            "dockerd's socket directory",
            "a mount from outside the container's root filesystem",
        ],
    );
    refused(
        run(&[("DIND_DOCKERD_SOCKET_SHARED", "allow")]),
        &[
            "DIND_DOCKERD_SOCKET_SHARED=\"allow\"",
            "only the image may allow",
        ],
    );
}
