//! What one client may hold of the proxy, and for how long: the bounds
//! every connection is served under, set once by the supervisor
//! (`DIND_HOLD_TIMEOUT`, `DIND_BODY_TIMEOUT`, `DIND_MAX_CONNECTIONS`).
//!
//! Its own module because the connection driver (`park`), the
//! gate ([`crate::gate`]) and the relay ([`crate::forward`]) all read it,
//! and none of them should import another to get it (issue 11).

use std::time::Duration;

/// What one client may hold of the proxy, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client connection waits for the engine to be Ready.
    pub hold: Duration,
    /// Time to read one request head (slowloris guard).
    pub head_timeout: Duration,
    /// Time to read a whole body the policy must see (at most its
    /// `body_cap`, 4 MiB): one that trickles in gets 408 instead of holding
    /// its buffer for ever. Nothing else times out: builds and `logs -f`
    /// run for hours.
    pub body_timeout: Duration,
    /// Largest request head; larger ones get 431.
    pub max_head: usize,
    /// Client connections open at once across every public endpoint, an
    /// upgraded session included for as long as it lives; more are closed
    /// at once (`DIND_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Requests held in the readiness gate at once; more get 503
    /// ([`crate::gate`]).
    pub max_held: usize,
    /// Bytes of decided bodies held at once, all connections together,
    /// while they are read, decided, held and forwarded; a body that would
    /// go past it gets 503. The time limit alone bounds how long, not how
    /// much: 1024 connections sending 4 MiB in 60 s each would hold 4 GiB.
    pub body_memory: usize,
}

/// The default [`Limits::body_timeout`], and the longest one allowed: the
/// bodies read whole are create, exec, update, volume and network requests
/// of a few KiB, and 4 MiB in 60 s is 70 KB/s, slower than any link a CI
/// job runs on.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The default [`Limits::max_connections`]. A CI job opens a handful at a
/// time (the CLI, compose, BuildKit sessions), so 1024 is far above honest
/// use, while what they cost stays small: about 12 KiB each idle (parked),
/// tens of KiB busy, and two descriptors (client and dockerd) against an
/// open-file limit raised to the hard limit at start, seldom below 4096.
pub const MAX_CONNECTIONS: usize = 1024;

/// The default [`Limits::max_held`]: below [`MAX_CONNECTIONS`], or it could
/// never be reached (a connection holds one request at a time). A held
/// request is the costliest kind (busy buffers, and a decided body of up to
/// 4 MiB already read), and a job has a few in flight at a restart.
pub const MAX_HELD: usize = 256;

/// The default [`Limits::body_memory`]: thousands of the create bodies a
/// job sends (a few KiB), or sixteen at the 4 MiB cap.
pub const BODY_MEMORY: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hold: Duration::from_secs(30),
            head_timeout: Duration::from_secs(30),
            body_timeout: BODY_TIMEOUT,
            // dockerd (Go net/http) accepts 1 MiB of headers; so do we.
            max_head: 1 << 20,
            max_connections: MAX_CONNECTIONS,
            max_held: MAX_HELD,
            body_memory: BODY_MEMORY,
        }
    }
}
