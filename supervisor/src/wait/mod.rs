//! `dind-supervisor wait`: block until the Docker engine answers
//! `GET /_ping` with 200, reached the way the docker CLI reaches it, for job
//! scripts and probes.
//!
//! The address comes from `--host` or `DOCKER_HOST` (default
//! `unix:///var/run/docker.sock`); `DOCKER_TLS_VERIFY`, `DOCKER_TLS` and
//! `DOCKER_CERT_PATH` keep their docker CLI meaning. Every attempt starts
//! from scratch: certificate files are re-read (the service writes them to a
//! shared volume after the job may have started), the name is re-resolved
//! (a compose or pod alias may appear late), then connect, TLS and
//! `GET /_ping`, all inside one short per-attempt deadline.
//!
//! A failed attempt is classified into a [`Cause`]; on timeout the last one
//! is the error, worded for a CI log with the fix where one is obvious.
//!
//! Names are resolved in pure Rust (the binary is static, so no NSS):
//! `/etc/hosts` first, as glibc's `hosts: files dns` does, then
//! hickory-resolver configured from `/etc/resolv.conf`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::cli::WaitArgs;
use crate::env::Env;

mod cause;
mod probe;
mod resolve;
mod target;
mod tls;
pub use cause::*;
use probe::*;
use resolve::*;
pub use target::*;
use tls::*;

const RETRY_INTERVAL: Duration = Duration::from_millis(250);

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits for the engine named by `args` and the `DOCKER_*` variables in
/// `env`. On success prints `engine ready at URL after 1.23s` to stderr;
/// the error is returned unprinted (its Display is the one-line message).
pub async fn run(args: &WaitArgs, env: &dyn Env) -> Result<Waited, WaitError> {
    let target = Target::from_env(args.host.as_deref(), env)?;
    let waited = wait(&target, &Probe::default(), args.timeout).await?;
    eprintln!("{waited}");
    Ok(waited)
}

/// A successful wait.
#[derive(Debug, Clone)]
pub struct Waited {
    /// The engine's address as `unix://…` or `tcp://host:port`.
    pub target: String,
    pub elapsed: Duration,
    pub attempts: u32,
}

impl std::fmt::Display for Waited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "engine ready at {} after {:.2}s ({} attempt{})",
            self.target,
            self.elapsed.as_secs_f64(),
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

/// Why `wait` failed. Display is a complete one-line message.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The address or TLS settings are unusable: retrying cannot help.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The engine did not answer 200 in time; `cause` is the last failure.
    #[error("the engine at {target} is not ready after {}: {cause}", fmt_duration(*.timeout))]
    NotReady {
        target: String,
        timeout: Duration,
        attempts: u32,
        cause: Cause,
    },
}

/// How single attempts are made: the deadline and where name resolution
/// reads its files (tests point these elsewhere).
#[derive(Debug, Clone)]
pub struct Probe {
    /// Bounds resolution, connect, TLS and the HTTP exchange together.
    pub attempt_timeout: Duration,
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            attempt_timeout: ATTEMPT_TIMEOUT,
            hosts_file: PathBuf::from("/etc/hosts"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// Retries [`ping_once`] every ~250 ms until 200 or `timeout`; logs each
/// change of cause, not every attempt.
pub async fn wait(target: &Target, probe: &Probe, timeout: Duration) -> Result<Waited, WaitError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last: Option<Cause> = None;
    let mut attempts = 0u32;
    loop {
        let attempt_started = Instant::now();
        let full = attempt_started + probe.attempt_timeout;
        let attempt_deadline = full.min(deadline);
        attempts += 1;
        let cause = match attempt(target, probe, attempt_deadline).await {
            Ok(()) => {
                return Ok(Waited {
                    target: target.to_string(),
                    elapsed: started.elapsed(),
                    attempts,
                })
            }
            Err(cause) => cause,
        };
        // An attempt cut short by the overall deadline only knows that time
        // ran out; an earlier complete attempt knows more.
        let cut_short = attempt_deadline < full && cause.is_timeout();
        let cause = match last.take() {
            Some(previous) if cut_short => previous,
            previous => {
                if previous.as_ref() != Some(&cause) {
                    tracing::info!(
                        engine = %target,
                        cause = %cause,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "engine not ready yet"
                    );
                }
                cause
            }
        };
        let next = attempt_started + RETRY_INTERVAL;
        if next >= deadline || Instant::now() >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(WaitError::NotReady {
                target: target.to_string(),
                timeout,
                attempts,
                cause,
            });
        }
        last = Some(cause);
        tokio::time::sleep_until(next).await;
    }
}

/// One attempt: certificates, resolution, connect, TLS, `GET` — within
/// `probe.attempt_timeout`.
pub async fn ping_once(target: &Target, probe: &Probe) -> Result<(), Cause> {
    attempt(target, probe, Instant::now() + probe.attempt_timeout).await
}

/// `health`: one probe of the local `/readyz`; the wildcard address
/// means this host.
pub async fn health(
    health_addr: std::net::SocketAddr,
    attempt_timeout: Duration,
) -> Result<(), Cause> {
    let mut addr = health_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let target = Target {
        endpoint: Endpoint::Tcp {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        },
        tls: None,
        path: "/readyz".into(),
    };
    let probe = Probe {
        attempt_timeout,
        ..Default::default()
    };
    ping_once(&target, &probe).await
}

#[cfg(test)]
mod tests;
