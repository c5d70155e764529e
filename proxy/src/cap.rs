//! The cap on client connections open at once, and the place each one
//! holds under it for as long as anything of it lives (issue 10).
//!
//! Beside the listener rather than in it: the listener admits, and the
//! relay ([`crate::forward`]) keeps the place alive through an upgraded
//! session; neither imports the other for it (issue 11).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Metrics, OpenConnection};

/// The cap on client connections open at once, across every endpoint
/// (`DIND_MAX_CONNECTIONS`, issue 10): a job must not exhaust the
/// service's memory or descriptors, nor starve the next job.
///
/// Above it a connection is closed at once, unanswered. Answering costs
/// what the cap protects: on the TLS port a 503 needs a whole handshake,
/// and on any port an answer that is sure to be read needs the request
/// drained first (closing with unread bytes sends a reset, which may
/// destroy the answer). The refusal is counted in `/metrics` and logged
/// once per spell at the cap.
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
    /// Whether the last connection was refused: one warning per spell.
    at_cap: AtomicBool,
}

/// One client connection's place under the cap, and its count in the
/// open-connections gauge. Held for as long as anything of the connection
/// lives: its task, then the splice of an upgraded session (attach, exec,
/// BuildKit), which outlives the HTTP connection that asked for it.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl ConnectionCap {
    pub fn new(max: usize) -> ConnectionCap {
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            max,
            at_cap: AtomicBool::new(false),
        }
    }

    /// A place for a connection just accepted, or None (counted) when
    /// `max` are open.
    pub fn admit(&self, metrics: &Arc<Metrics>) -> Option<Slot> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.at_cap.store(false, Ordering::Relaxed);
                Some(Slot {
                    _permit: permit,
                    _open: metrics.connection_opened(),
                })
            }
            Err(_) => {
                metrics.connection_refused();
                if !self.at_cap.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        max = self.max,
                        "connection cap reached: new client connections are closed until some end (DIND_MAX_CONNECTIONS)"
                    );
                }
                None
            }
        }
    }
}
