//! `dind-supervisor`: PID 1 of a Docker-in-Docker service container.
//!
//! # Layout
//! - [`cli`]: the stock entrypoint's argument rules, then our subcommands.
//! - [`config`]: settings and `DOCKER_*` variables, checked once.
//! - [`lock`]: what a job may not change when the image locks the policy.
//! - [`private`]: dockerd's raw endpoints only where no other container
//!   reaches.
//! - [`certs`]: minting the CA, server and client certificates.
//! - [`cgroup`], [`iptables`], [`storage`], [`mtu`], [`daemon_json`]: host
//!   preparation decided before dockerd starts.
//! - [`dockerd`]: dockerd's command line, start, output and ready probe.
//! - [`supervise`]: the run loop that owns dockerd and the readiness latch.
//! - [`signals`], [`reap`], [`procfs`]: PID 1 duties.
//! - [`wait`]: the client side: `wait` and `health` for job scripts and probes.

mod certs;
mod cgroup;
mod cli;
mod config;
mod daemon_json;
mod dockerd;
mod iptables;
mod lock;
mod logging;
mod mtu;
mod private;
mod procfs;
mod reap;
mod signals;
mod storage;
mod supervise;
mod wait;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::cli::Invocation;
use crate::config::{Config, ProcessEnv};

/// Exit code for a configuration the supervisor refuses (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let started = Instant::now();
    let invocation = match cli::parse(std::env::args_os().collect()) {
        Ok(i) => i,
        Err(e) => e.exit(),
    };
    match invocation {
        Invocation::Exec(argv) => {
            // Under a lock no other program may take the supervisor's place.
            match proxy::policy::load_image(proxy::policy::IMAGE_FILE) {
                Ok(None) => exec(argv),
                Ok(Some(f)) if !f.locked => exec(argv),
                Ok(Some(_)) => refuse(lock::refuse_exec(proxy::policy::IMAGE_FILE, &argv[0])),
                Err(e) => refuse(e),
            }
        }
        Invocation::Certs(tls) => {
            logging::init(cli::LogFormat::Text, "info");
            report(run_certs(&tls))
        }
        Invocation::Wait(args) => {
            logging::init(cli::LogFormat::Text, "warn");
            match client_runtime().block_on(wait::run(&args, &ProcessEnv)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dind-supervisor wait: {e}");
                    match e {
                        wait::WaitError::Host(_) => ExitCode::from(EXIT_CONFIG),
                        wait::WaitError::NotReady { .. } => ExitCode::FAILURE,
                    }
                }
            }
        }
        Invocation::Health(args) => health(&args),
        Invocation::Run {
            settings,
            given,
            dockerd_args,
            exact,
        } => {
            logging::init(settings.log_format, &settings.log_level);
            let image = match proxy::policy::load_image(proxy::policy::IMAGE_FILE) {
                Ok(f) => f,
                Err(e) => return refuse(e),
            };
            let config = match Config::build(
                *settings,
                &given,
                dockerd_args,
                exact,
                &ProcessEnv,
                image.as_ref(),
            ) {
                Ok(c) => c,
                Err(e) => return refuse(e),
            };
            if let Err(e) = private::ensure(&config.private_dirs(), config.dockerd.allow_shared) {
                return refuse(e);
            }
            if config.locked_by.is_some() {
                // Still one thread: nothing reads the environment meanwhile.
                let dropped = lock::scrub_environment();
                tracing::info!(path = lock::LOCKED_PATH, dropped = %dropped.join(","), "locked: children get a clean environment");
            }
            match run(config, started) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Certificates, host preparation, dockerd, supervision; returns the exit code.
fn run(config: Config, started: Instant) -> anyhow::Result<i32> {
    // A panic aborts, as before, except in a proxy client task, which it
    // closes alone (issue 11: the release profile unwinds for that).
    proxy::tasks::abort_on_panic_outside_client_tasks();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Signal handlers exist before any child does, so no SIGCHLD and no
        // early SIGTERM is lost.
        let signals = signals::Signals::install().context("installing signal handlers")?;
        become_init();
        let (latch, readiness) = proxy::readiness::channel();
        let metrics = Arc::new(proxy::metrics::Metrics::default());
        // Health answers (503) from the first moment, so probes can tell
        // "starting" from "dead".
        let health_listener = proxy::health::bind(config.health_addr)
            .await
            .with_context(|| format!("cannot listen on {} for health: free it or set DIND_HEALTH_ADDR", config.health_addr))?;
        tracing::info!(addr = %health_listener.local_addr()?, "health endpoint listening");

        let certs = match &config.tls {
            Some(spec) => {
                let report = certs::ensure(spec)?;
                log_certs(spec, &report);
                Some(report)
            }
            None => {
                tracing::warn!("TLS is off (DOCKER_TLS_CERTDIR is empty): the API is served without authentication on plain TCP");
                None
            }
        };
        let endpoints = match &config.proxy {
            Some(p) => endpoints(p, config.tls.as_ref())?,
            None => Vec::new(),
        };
        let extra = status_extra(&config, &endpoints, certs.as_ref());
        let proxied = !endpoints.is_empty();
        // Open the doors as soon as the certificates are in place, before
        // host preparation and dockerd: a job that comes early is held,
        // never refused (issue 9).
        let open = match config.proxy.as_ref().map(|p| p.listen_when) {
            Some(proxy::ListenWhen::Start) => {
                let listeners = proxy::Listeners::bind(&endpoints).await?;
                tracing::info!("public endpoints open; requests wait until the engine answers");
                proxy::Open::Now(listeners)
            }
            _ => proxy::Open::WhenReady(endpoints),
        };
        let prepared = dockerd::prepare(&config.dockerd, config.supervise.shutdown_timeout)?;
        let health = proxy::health::Health {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            proxied,
            extra,
        };
        tokio::spawn(proxy::health::serve(health_listener, Arc::new(health)));
        let proxy_task = match config.proxy {
            Some(p) => {
                let audit = match &p.audit_log {
                    Some(path) => proxy::audit::Audit::file(path)
                        .with_context(|| format!("cannot open audit log {}: fix DIND_AUDIT_LOG", path.display()))?,
                    None => proxy::audit::Audit::stderr(),
                };
                tracing::info!(
                    policy = p.policy.name(),
                    locked = config.locked_by.is_some(),
                    lock_file = config.locked_by.unwrap_or("none"),
                    "request policy"
                );
                check_fd_budget(p.max_connections);
                // Bind sources the allowlist confines are pinned so that no
                // symlink can redirect them (proxy::pin).
                let confines = [proxy::policy::Rule::BindMounts, proxy::policy::Rule::VolumeMounts]
                    .into_iter()
                    .any(|r| p.policy.denies(r));
                let proxy_config = proxy::Config {
                    pins_dir: confines.then(|| config.dockerd.run_dir.join("pins")),
                    open,
                    upstream: prepared.socket.clone(),
                    limits: proxy::forward::Limits {
                        hold: p.hold,
                        body_timeout: p.body_timeout,
                        max_connections: p.max_connections,
                        ..Default::default()
                    },
                    policy: p.policy,
                    audit,
                    ping_ttl: p.ping_cache,
                };
                let shutdown = readiness.clone().shutting_down();
                Some(tokio::spawn(proxy::serve(proxy_config, readiness.clone(), metrics.clone(), shutdown)))
            }
            None => None,
        };
        let code = supervise::Supervisor::new(config.supervise, prepared, latch, started, proxy_task)
            .run(signals)
            .await;
        Ok(code)
    })
}

/// PID 1 inherits orphans by definition; elsewhere ask the kernel for them,
/// so containerd shims are reaped here and not by whoever started us. As PID
/// 1 also nest cgroup v2 before any other process exists.
fn become_init() {
    raise_fd_limit();
    if nix::unistd::getpid().as_raw() == 1 {
        match cgroup::nest_default() {
            Ok(outcome) => tracing::info!(?outcome, "cgroup"),
            Err(e) => {
                tracing::warn!(error = %e, "cgroup v2 nesting failed; dockerd may not manage cgroups")
            }
        }
    } else if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans will go to the real init");
    }
}

/// The proxy's endpoints: TCP (mutual TLS when certificates are on) and the
/// unix socket named by DOCKER_HOST.
fn endpoints(
    p: &config::Proxy,
    tls: Option<&certs::CertSpec>,
) -> anyhow::Result<Vec<proxy::Endpoint>> {
    let server_tls = match tls {
        Some(spec) => {
            let paths = certs::Paths::new(&spec.dir);
            Some(proxy::auth::server_config(&proxy::auth::ServerFiles {
                ca: paths.server_ca(),
                cert: paths.server_cert(),
                key: paths.server_key(),
            })?)
        }
        None => None,
    };
    let mut out: Vec<proxy::Endpoint> = p
        .listen
        .iter()
        .map(|&addr| proxy::Endpoint::Tcp {
            addr,
            tls: server_tls.clone(),
        })
        .collect();
    if let Some(s) = p
        .socket
        .as_ref()
        .filter(|s| !(s.implicit && served_by_another(&s.path)))
    {
        if s.gid.is_none() {
            tracing::warn!(path = %s.path.display(), "no `docker` group in /etc/group: the API socket is world-writable (0666)");
        }
        out.push(proxy::Endpoint::Unix {
            path: s.path.clone(),
            mode: s.mode,
            gid: s.gid,
        });
    }
    Ok(out)
}

/// Whether something that is not a stale socket is at `path`: a live
/// server (a host's own dockerd at /var/run/docker.sock) or another file.
/// The default public socket steps aside for it, with a warning.
fn served_by_another(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let taken = match std::fs::symlink_metadata(path) {
        Ok(m) => {
            !m.file_type().is_socket() || std::os::unix::net::UnixStream::connect(path).is_ok()
        }
        Err(_) => false,
    };
    if taken {
        tracing::warn!(path = %path.display(), "another server answers at the default API socket; the proxy does not serve it (set DOCKER_HOST=unix://PATH for a socket of its own)");
    }
    taken
}

/// What `/status` adds to the live state: the policy and its lock,
/// endpoints and certificates.
fn status_extra(
    config: &Config,
    endpoints: &[proxy::Endpoint],
    certs: Option<&certs::Report>,
) -> serde_json::Value {
    let cert = |c: &certs::CertInfo| {
        serde_json::json!({
            "path": c.path,
            "sha256": c.sha256_fingerprint,
            "not_after": rfc3339(c.not_after),
        })
    };
    serde_json::json!({
        "policy": config.proxy.as_ref().map(|p| serde_json::json!({
            "name": p.policy.name(),
            "locked": config.locked_by.is_some(),
            "lock_file": config.locked_by,
        })),
        "endpoints": endpoints.iter().map(|e| serde_json::json!({"url": e.url(), "tls": e.is_tls()})).collect::<Vec<_>>(),
        "certificates": certs.map(|r| serde_json::json!({"ca": cert(&r.ca_cert), "server": cert(&r.server_cert)})),
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Every proxied connection holds two descriptors (client and dockerd); the
/// usual soft limit of 1024 would cap the proxy near 500 connections. The
/// hard limit is ours to take, as Go programs (dockerd among them) do.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Warns when the connection cap cannot be reached before descriptors run
/// out: each connection may hold two (client and dockerd), and dockerd's
/// pool, the listeners and the logs need some more. Running out would fail
/// accepts for everyone instead of refusing the excess.
fn check_fd_budget(max_connections: usize) {
    use nix::sys::resource::{getrlimit, Resource};
    const SPARE: u64 = 256;
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let needed = (max_connections as u64)
            .saturating_mul(2)
            .saturating_add(SPARE);
        if soft < needed {
            tracing::warn!(
                max_connections,
                open_file_limit = soft,
                needed,
                "the open-file limit is below what DIND_MAX_CONNECTIONS needs: lower it or raise the limit (ulimit -n)"
            );
        }
    }
}

fn run_certs(tls: &cli::TlsArgs) -> anyhow::Result<()> {
    match config::tls_spec(tls, &ProcessEnv)? {
        Some(spec) => {
            log_certs(&spec, &certs::ensure(&spec)?);
            Ok(())
        }
        None => anyhow::bail!("TLS is off (DOCKER_TLS_CERTDIR is empty): set a certificate directory with --tls-certdir"),
    }
}

fn log_certs(spec: &certs::CertSpec, r: &certs::Report) {
    tracing::info!(
        dir = %spec.dir.display(),
        key_type = %spec.key_type,
        elapsed_ms = (r.elapsed.as_secs_f64() * 1e4).round() / 10.0,
        ca = %r.ca,
        server = %r.server,
        client = %r.client,
        sans = %spec.sans.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        server_not_after = %rfc3339(r.server_cert.not_after),
        server_sha256 = %r.server_cert.sha256_fingerprint,
        "certificates ready"
    );
}

/// A small runtime for the client subcommands.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs no resources that can fail")
}

/// One probe of the local `/readyz`: 0 when ready, 1 with the reason.
fn health(args: &cli::HealthArgs) -> ExitCode {
    let mut addr = args.health_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let target = wait::Target {
        endpoint: wait::Endpoint::Tcp {
            host: wait::Host::Ip(addr.ip()),
            port: addr.port(),
        },
        tls: None,
        path: "/readyz".into(),
    };
    let probe = wait::Probe {
        attempt_timeout: args.timeout,
        ..Default::default()
    };
    match client_runtime().block_on(wait::ping_once(&target, &probe)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(cause) => {
            eprintln!("not ready: {cause}");
            ExitCode::FAILURE
        }
    }
}

/// A configuration refused at start: one line, exit 78.
fn refuse(e: impl Into<anyhow::Error>) -> ExitCode {
    let e = e.into();
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{e:#}");
    } else {
        eprintln!("dind-supervisor: {e:#}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Client mode: replace this process with the command, as the stock
/// entrypoint's `exec "$@"` does.
fn exec(argv: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    eprintln!("dind-supervisor: cannot run {:?}: {err}", argv[0]);
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}
