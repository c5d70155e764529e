//! A body the policy must see, read whole within its bounds: its framing,
//! its cap, its time, and the memory all such bodies share.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

use super::Shared;
use crate::metrics::Metrics;
use crate::respond::{Body, Refusal};

/// The memory of one decided body: its place in [`Shared::bodies`] and in
/// the gauge, both given back when dropped.
pub(super) struct BodyMemory {
    permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl BodyMemory {
    fn new(shared: &Shared) -> BodyMemory {
        BodyMemory {
            permit: shared
                .bodies
                .clone()
                .try_acquire_many_owned(0)
                .expect("the body semaphore is never closed"),
            metrics: shared.metrics.clone(),
        }
    }

    /// `bytes` more, if the budget has them.
    fn grow(&mut self, shared: &Shared, bytes: usize) -> bool {
        match shared.bodies.clone().try_acquire_many_owned(bytes as u32) {
            Ok(more) => {
                self.permit.merge(more);
                self.metrics.body_bytes(bytes as u64, 0);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for BodyMemory {
    fn drop(&mut self) {
        self.metrics.body_bytes(0, self.permit.num_permits() as u64);
    }
}

/// Reads a body the policy must see, whole, refusing ambiguous framing (the
/// checker and dockerd must read one body, CVE-2024-41110) and anything over
/// `cap` (never skip the check, CVE-2026-34040), not complete within
/// [`Limits::body_timeout`] (a trickle would hold up to `cap` bytes for
/// ever; the clock runs for the whole body, not between its bytes), or
/// past the shared body memory. The head is re-framed with a fresh
/// Content-Length for exactly these bytes; the permit is their memory.
pub(super) async fn read_whole(
    parts: &mut hyper::http::request::Parts,
    body: Body,
    cap: usize,
    shared: &Shared,
) -> Result<(bytes::Bytes, BodyMemory), Refusal> {
    let bad = |why: &str| Refusal::BadRequest(why.to_owned());
    let lengths = parts.headers.get_all(CONTENT_LENGTH).iter().count();
    let te = parts.headers.get_all(TRANSFER_ENCODING).iter().count();
    if lengths > 1 {
        return Err(bad("several Content-Length headers"));
    }
    if lengths == 1 && te > 0 {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if te > 1
        || parts
            .headers
            .get(TRANSFER_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(bad("unsupported Transfer-Encoding"));
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(Refusal::TooLarge { cap });
    }
    // Grown as bytes arrive, never reserved on a header's word alone, and
    // never past the declared length or the cap: the memory held is what
    // the budget counts.
    let most = declared.map_or(cap, |n| n as usize);
    let limit = shared.limits.body_timeout;
    let busy = || Refusal::BodyMemory {
        total: shared.limits.body_memory.max(cap),
    };
    let read = async {
        let mut body = body;
        let mut buf: Vec<u8> = Vec::new();
        let mut memory = BodyMemory::new(shared);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| bad("the request body ended early"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = buf.len() + data.len();
            if len > cap {
                return Err(Refusal::TooLarge { cap });
            }
            if len > buf.capacity() {
                // Powers of two: what a body holds follows from its length.
                let grown = len.next_power_of_two().max(4096).min(most.max(len));
                if !memory.grow(shared, grown - buf.capacity()) {
                    return Err(busy());
                }
                buf.reserve_exact(grown - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok((buf, memory))
    };
    let (bytes, memory) = match tokio::time::timeout(limit, read).await {
        Ok(read) => read?,
        Err(_) => return Err(Refusal::BodyTimeout { limit }),
    };
    parts.headers.remove(TRANSFER_ENCODING);
    parts.headers.insert(
        CONTENT_LENGTH,
        hyper::header::HeaderValue::from(bytes.len()),
    );
    Ok((bytes.into(), memory))
}
