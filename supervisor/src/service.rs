//! The service's start order: certificates, the public endpoints (open at
//! once, issue 9), host preparation, health and the proxy, then the
//! supervisor that owns dockerd until the end.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::{certs, cgroup, dockerd, endpoints, signals, status, supervise, system};

/// Certificates, host preparation, dockerd, supervision; returns the exit code.
pub fn run(
    config: Config,
    handed: Vec<std::os::fd::OwnedFd>,
    started: Instant,
) -> anyhow::Result<i32> {
    proxy::handed::keep(handed);
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
        let cgroup_parent = become_init();
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
                status::log_certs(spec, &report);
                Some(report)
            }
            None => {
                tracing::warn!("TLS is off (DOCKER_TLS_CERTDIR is empty): the API is served without authentication on plain TCP");
                None
            }
        };
        let endpoints = match &config.proxy {
            Some(p) => endpoints::endpoints(p, config.tls.as_ref())?,
            None => Vec::new(),
        };
        let extra = status::extra(&config, &endpoints, certs.as_ref());
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
        let prepared = dockerd::prepare(&config.dockerd, config.supervise.shutdown_timeout, cgroup_parent)?;
        let health = proxy::health::Health {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            proxied,
            extra,
        };
        tokio::spawn(proxy::health::serve(health_listener, Arc::new(health)));
        let proxy_task = match config.proxy {
            Some(p) => {
                let mut proxy_config = proxy_config(p, open, &config.dockerd.run_dir, &prepared.socket, config.locked_by)?;
                proxy_config.network_mtu = prepared.proxy_network_mtu;
                let shutdown = readiness.clone().shutting_down();
                Some(tokio::spawn(proxy::serve(proxy_config, readiness.clone(), metrics.clone(), shutdown)))
            }
            None => None,
        };
        let started = tokio::time::Instant::from_std(started);
        let code = supervise::Supervisor::new(system::Real, config.supervise, prepared, latch, started, proxy_task)
            .run(signals)
            .await;
        Ok(code)
    })
}

/// The proxy's configuration: the audit log opened, the fd budget
/// checked, and pins on when the policy confines bind sources.
fn proxy_config(
    p: crate::config::Proxy,
    open: proxy::Open,
    run_dir: &std::path::Path,
    upstream: &std::path::Path,
    locked_by: Option<&str>,
) -> anyhow::Result<proxy::Config> {
    let audit = match &p.audit_log {
        Some(path) => proxy::audit::Audit::file(path).with_context(|| {
            format!(
                "cannot open audit log {}: fix DIND_AUDIT_LOG",
                path.display()
            )
        })?,
        None => proxy::audit::Audit::stderr(),
    };
    tracing::info!(
        policy = p.policy.name(),
        locked = locked_by.is_some(),
        lock_file = locked_by.unwrap_or("none"),
        "request policy"
    );
    check_fd_budget(p.max_connections);
    // Bind sources the allowlist confines are pinned so that no
    // symlink can redirect them (proxy::pin).
    let confines = [
        proxy::policy::Rule::BindMounts,
        proxy::policy::Rule::VolumeMounts,
    ]
    .into_iter()
    .any(|r| p.policy.denies(r));
    Ok(proxy::Config {
        pins_dir: confines.then(|| run_dir.join("pins")),
        open,
        upstream: upstream.to_path_buf(),
        limits: proxy::forward::Limits {
            hold: p.hold,
            body_timeout: p.body_timeout,
            max_connections: p.max_connections,
            ..Default::default()
        },
        policy: p.policy,
        audit,
        ping_ttl: p.ping_cache,
        network_mtu: None,
    })
}

/// PID 1 inherits orphans by definition; elsewhere ask the kernel for them,
/// so containerd shims are reaped here and not by whoever started us. As PID
/// 1 also nest cgroup v2 before any other process exists; returns dockerd's
/// cgroup parent when that nesting needs one (`cgroup::CgroupOutcome`).
fn become_init() -> Option<String> {
    raise_fd_limit();
    if nix::unistd::getpid().as_raw() == 1 {
        match cgroup::nest_default() {
            Ok(outcome) => {
                tracing::info!(?outcome, "cgroup");
                return outcome.dockerd_cgroup_parent();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cgroup v2 nesting failed; dockerd may not manage cgroups")
            }
        }
    } else if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans will go to the real init");
    }
    None
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

/// The `certs` subcommand: mint or check the set, then exit.
pub fn certs_only(tls: &crate::cli::TlsArgs) -> anyhow::Result<()> {
    match crate::config::tls_spec(tls, &crate::env::ProcessEnv)? {
        Some(spec) => {
            status::log_certs(&spec, &certs::ensure(&spec)?);
            Ok(())
        }
        None => anyhow::bail!("TLS is off (DOCKER_TLS_CERTDIR is empty): set a certificate directory with --tls-certdir"),
    }
}

/// A small runtime for the client subcommands.
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs no resources that can fail")
}

/// Client mode: replace this process with the command, as the stock
/// entrypoint's `exec "$@"` does. Returns only if that failed.
pub fn exec(argv: &[std::ffi::OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(&argv[0]).args(&argv[1..]).exec()
}
