//! Bind sources under `ci-safe` against a real dockerd (issue 10): a
//! symlink a job plants under an allowlisted directory cannot redirect a
//! bind, in any field, in any position, or by racing create and start; and
//! the directory's own links still work inside the container. Ground truth
//! is what the engine holds and what the container sees, not the status.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use support::{docker_clis, ok, Service, ServiceOptions};

/// A ci-safe service whose allowlist is the test's own `builds` directory,
/// laid out as a job would leave it: a real directory with a file and a
/// link of its own, and links to the service's root planted beside it.
struct Builds {
    svc: Service,
    builds: PathBuf,
    image: &'static str,
    cli: PathBuf,
}

impl Builds {
    fn start() -> Builds {
        let dir = support::short_tempdir();
        let builds = dir.path().join("builds");
        fs::create_dir_all(builds.join("real/sub")).unwrap();
        fs::write(builds.join("real/hello"), "hello from builds\n").unwrap();
        symlink("hello", builds.join("real/inner")).unwrap();
        symlink("/", builds.join("root")).unwrap();
        symlink("/etc", builds.join("etc")).unwrap();
        let svc = Service::start_in(
            dir,
            ServiceOptions {
                env: vec![
                    ("DIND_POLICY".into(), "ci-safe".into()),
                    (
                        "DIND_POLICY_ALLOW_BINDS".into(),
                        builds.display().to_string(),
                    ),
                ],
                ..Default::default()
            },
        );
        svc.wait_ready();
        let image = svc.load_busybox();
        Builds {
            svc,
            builds,
            image,
            cli: docker_clis().pop().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.builds.display())
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.svc.tls_cli(&self.cli).args(args).output().unwrap()
    }

    /// The pins that exist now.
    fn pins(&self) -> usize {
        fs::read_dir(self.svc.dir.path().join("run/pins"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The engine's containers and volumes, straight from dockerd.
    fn engine_state(&self) -> (String, String) {
        let containers = self.svc.docker_ok(&["ps", "-aq"]);
        let volumes = self.svc.docker_ok(&["volume", "ls", "-q"]);
        (containers, volumes)
    }
}

/// Every way a job could name a planted link as a bind source is refused,
/// and leaves nothing in the engine: `Binds` with the link last and in the
/// middle, a link followed by `..`, a bind `Mounts` entry, a local volume
/// with `o=bind`, and a `Mounts` volume with driver options.
#[test]
fn a_planted_symlink_cannot_redirect_any_kind_of_bind() {
    let b = Builds::start();
    let before = b.engine_state();
    let (root, etc, dotdot) = (b.path("root"), b.path("etc/ssl"), b.path("real/../root"));
    let binds: Vec<String> = [&root, &etc, &dotdot]
        .iter()
        .map(|s| format!("{s}:/h"))
        .collect();
    let mount_root = format!("type=bind,src={root},dst=/h");
    let vol_opt = format!("type=volume,src=sneaky,dst=/h,volume-driver=local,volume-opt=type=none,volume-opt=o=bind,volume-opt=device={root}");
    let device = format!("device={root}");
    let cases: Vec<Vec<&str>> = vec![
        vec!["create", "-v", &binds[0], b.image, "true"],
        vec!["create", "-v", &binds[1], b.image, "true"],
        vec!["create", "-v", &binds[2], b.image, "true"],
        vec!["create", "--mount", &mount_root, b.image, "true"],
        vec!["create", "--mount", &vol_opt, b.image, "true"],
        vec![
            "volume",
            "create",
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            &device,
            "sneaky2",
        ],
    ];
    for args in &cases {
        let out = b.docker(args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was allowed");
        assert!(said.contains("policy ci-safe"), "{args:?}: {said}");
    }
    assert_eq!(
        b.engine_state(),
        before,
        "a refused request left a trace in the engine"
    );
    assert_eq!(b.pins(), 0, "a refused request left a pin");
}

/// Ordinary binds keep working: the container sees the directory, and the
/// directory's own symlinks resolve inside it as before, for `Binds`, a bind
/// `Mounts` entry and a local bind volume.
#[test]
fn allowed_binds_work_and_links_inside_them_still_resolve() {
    let b = Builds::start();
    let real = b.path("real");
    let read = "cat /w/hello /w/inner";
    let expect = "hello from builds\nhello from builds\n";
    let bind = format!("{real}:/w");
    let mount = format!("type=bind,src={real},dst=/w");
    for how in [vec!["-v", &bind], vec!["--mount", &mount]] {
        let mut args = vec!["run", "--rm"];
        args.extend(&how);
        args.extend([b.image, "sh", "-c", read]);
        assert_eq!(ok(b.svc.tls_cli(&b.cli).args(&args)), expect, "{how:?}");
    }
    let device = format!("device={real}");
    ok(b.svc.tls_cli(&b.cli).args([
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &device,
        "bv",
    ]));
    assert_eq!(
        ok(b.svc
            .tls_cli(&b.cli)
            .args(["run", "--rm", "-v", "bv:/w", b.image, "sh", "-c", read])),
        expect
    );
    // A Binds source that does not exist yet is made, as dockerd does.
    let fresh = format!("{}:/w", b.path("real/new/dir"));
    ok(b.svc
        .tls_cli(&b.cli)
        .args(["run", "--rm", "-v", &fresh, b.image, "true"]));
    assert!(Path::new(&b.path("real/new/dir")).is_dir());
    // A create dockerd refuses releases its pins at once.
    let pins = b.pins();
    let out = b.docker(&["create", "-v", &bind, "no-such-image:never", "true"]);
    assert!(!out.status.success());
    assert_eq!(b.pins(), pins, "a refused create kept its pin");
}

/// A job swaps the source between a real directory and a link to `/` as
/// fast as it can (an atomic exchange of the two names) while containers
/// are created on it and started a moment later. A create either fails
/// (the link was there) or pins the real directory, so no container ever
/// sees the service's root, however the race falls. Without pins, dockerd
/// resolves the name again at start and follows the link.
#[test]
fn a_symlink_swapped_in_between_create_and_start_changes_nothing() {
    use nix::fcntl::{renameat2, RenameFlags};
    let b = Builds::start();
    let (race, other) = (b.path("race"), b.path("race-other"));
    fs::create_dir(&race).unwrap();
    fs::write(format!("{race}/marker"), "real\n").unwrap();
    symlink("/", &other).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, race, other) = (stop.clone(), race.clone(), other.clone());
        thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                renameat2(
                    None,
                    race.as_str(),
                    None,
                    other.as_str(),
                    RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                flips += 1;
            }
            flips
        })
    };
    let (mut started, mut refused) = (0, 0);
    for i in 0..16 {
        let name = format!("race{i}");
        let bind = format!("{race}:/h");
        let created = b.docker(&["create", "--name", &name, "-v", &bind, b.image, "ls", "/h"]);
        if !created.status.success() {
            refused += 1;
            continue;
        }
        let out = b.docker(&["start", "-a", &name]);
        let seen = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            seen.contains("marker") && !seen.contains("etc"),
            "container {name} did not see the directory it was created on:\n{seen}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        started += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let flips = swapper.join().unwrap();
    eprintln!(
        "race: {started} started, all on the real directory; {refused} refused; {flips} swaps"
    );
    assert!(flips > 100, "the race never ran");
    assert!(
        started > 0 && refused > 0,
        "the race never fell both ways ({started} started, {refused} refused)"
    );
}

/// `docker cp` under ci-safe: dockerd mounts a container's binds and
/// volumes in its own namespace for every archive request, at paths a
/// container can race with a symlink. So a container with mounts gets no
/// archive request through (any method, `HEAD` included, and audited),
/// while one without mounts copies both ways as usual.
#[test]
fn docker_cp_works_without_mounts_and_is_refused_with_them() {
    let b = Builds::start();
    let real = b.path("real");
    let bind = format!("{real}:/w");
    ok(b.svc
        .tls_cli(&b.cli)
        .args(["create", "--name", "plain", b.image, "true"]));
    ok(b.svc
        .tls_cli(&b.cli)
        .args(["create", "--name", "bound", "-v", &bind, b.image, "true"]));
    ok(b.svc
        .tls_cli(&b.cli)
        .args(["create", "--name", "vol", "-v", "named:/n", b.image, "true"]));
    let local = b.svc.dir.path().join("copied");
    ok(b.svc
        .tls_cli(&b.cli)
        .arg("cp")
        .arg(b.svc.dir.path().join("builds/real/hello"))
        .arg("plain:/hello"));
    ok(b.svc
        .tls_cli(&b.cli)
        .args(["cp", "plain:/hello"])
        .arg(&local));
    assert_eq!(fs::read_to_string(&local).unwrap(), "hello from builds\n");
    for name in ["bound", "vol"] {
        let (from, to) = (format!("{name}:/bin/sh"), format!("{name}:/tmp/hello"));
        let file = b.path("real/hello");
        for args in [["cp", &from, "-"], ["cp", &file, &to]] {
            let out = b.docker(&args);
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} was allowed");
            assert!(said.contains("policy ci-safe"), "{args:?}: {said}");
        }
    }
}
