//! `dind-supervisor`: PID 1 of a Docker-in-Docker service container. The
//! binary (`main.rs`) only dispatches; everything it runs lives here, so
//! tests and benches drive the same code.
//!
//! # Layout
//! - [`cli`]: the stock entrypoint's argument rules, then our subcommands.
//! - [`env`]: every environment variable's name, and the [`env::Env`] trait.
//! - [`config`]: settings and `DOCKER_*` variables, checked once.
//! - [`host_flags`]: dockerd's `--host`, `--group` and TLS flags in the
//!   user's command, turned into the proxy's endpoints.
//! - [`lock`]: what a job may not change when the image locks the policy.
//! - [`private`]: dockerd's raw endpoints only where no other container
//!   reaches; [`shared_run`]: a `/run` shared with another container
//!   (ARC) covered by a private tmpfs first.
//! - [`certs`]: minting the CA, server and client certificates.
//! - [`cgroup`], [`iptables`], [`storage`], [`mtu`], [`daemon_json`]: host
//!   preparation decided before dockerd starts.
//! - [`service`]: the start order: certificates, endpoints, host
//!   preparation, the proxy, then supervision.
//! - [`endpoints`]: which public endpoints the proxy serves.
//! - [`status`]: what `/status` reports beyond the live state.
//! - [`dockerd`]: dockerd's command line, start, output and ready probe.
//! - [`supervise`]: the run loop that owns dockerd and the readiness latch.
//! - [`watchdog`]: noticing a dockerd that stops answering after Ready.
//! - [`signals`], [`reap`], [`procfs`]: PID 1 duties.
//! - [`system`]: the seam between the run loop and the machine (processes,
//!   signals, the reaper, /proc, dockerd's API), with a fake for tests.
//! - [`wait`]: the client side: `wait` and `health` for job scripts and probes.
//! - [`exit`]: every outcome's exit code, in one place.

pub mod atomic;
pub mod certs;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod daemon_json;
pub mod dockerd;
pub mod dockerd_flags;
pub mod endpoints;
pub mod env;
pub mod exit;
pub mod host_flags;
pub mod hostname;
pub mod iptables;
pub mod listen_fds;
pub mod lock;
pub mod logging;
pub mod mtu;
pub mod private;
pub mod procfs;
pub mod reap;
pub mod service;
pub mod shared_run;
pub mod signals;
pub mod status;
pub mod storage;
pub mod supervise;
pub mod system;
pub mod wait;
pub mod watchdog;
