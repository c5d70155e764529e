//! The ready-gated, authenticated Docker API proxy of `dind-supervisor`,
//! and its health endpoint.
//!
//! # Layout
//! - [`readiness`]: the engine's lifecycle state. The supervisor holds the one
//!   [`readiness::Latch`] that moves it; everything else watches a
//!   [`readiness::Readiness`].
//! - [`listener`]: the public endpoints, open from the start (requests held
//!   until Ready) or only once Ready; [`serve`].
//! - [`cap`]: the cap on open client connections, a place per connection.
//! - [`limits`]: the bounds every connection is served under.
//! - [`gate`]: where a request waits until the engine answers.
//! - [`auth`]: mutual TLS against the service's CA.
//! - [`tasks`]: every connection, session and dockerd-connection task,
//!   owned, and drained within a bound when the proxy stops.
//! - [`forward`]: relaying one client connection to dockerd, upgrades included.
//! - `park`: idle keep-alive connections without hyper's buffers.
//! - [`head`]: a request head parsed once, canonical, as it is forwarded.
//! - [`decide`]: the one place where a request is decided before forwarding.
//! - [`ping`]: `/_ping` answered from dockerd's last answer, kept briefly.
//! - [`policy`]: what a job may ask of the engine (profiles, rules, strict JSON).
//! - [`archive`]: `docker cp` refused on containers with mounts (ci-safe).
//! - [`network_mtu`]: the MTU added to bridge networks clients create, where
//!   dockerd (before 24) cannot add it itself.
//! - [`pin`]: bind sources pinned beneath their allowlisted directory, so no
//!   symlink can redirect them.
//! - [`audit`]: one JSON line per decision on a mutating request.
//! - [`respond`]: every answer the proxy makes itself.
//! - [`upstream`]: calls to dockerd's private socket (ping, container stop).
//! - [`health`], [`metrics`]: `/livez`, `/readyz`, `/metrics`, `/status`.
#![forbid(unsafe_code)]

// A panic in one client's task must end that task only, not PID 1 and the
// CI job with it ([`tasks`], issue 11); tokio contains it only if it unwinds.
#[cfg(panic = "abort")]
compile_error!(
    "proxy needs panic = \"unwind\": with abort, a panic in one client connection kills the whole supervisor"
);

pub mod archive;
pub mod audit;
pub mod auth;
pub mod cap;
pub mod decide;
pub mod forward;
pub mod gate;
pub mod handed;
pub mod head;
pub mod health;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod network_mtu;
mod park;
pub mod pin;
pub mod ping;
pub mod policy;
pub mod readiness;
pub mod respond;
pub mod sessions;
pub mod tasks;
pub mod upstream;

pub use limits::Limits;
pub use listener::{serve, Config, Endpoint, ListenWhen, Listeners, Open, ServeError};
