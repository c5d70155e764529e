//! A refused request's answer: what is left of its body read and thrown
//! away first, so the client is reading when the refusal comes.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Response;

use super::{Peer, Shared};
use crate::respond::{Body, Refusal};
use crate::sessions;

/// How long a refused request's body is read and thrown away before the
/// refusal is sent. Closing on unread bytes makes the kernel reset the
/// connection, and a client still writing (`docker cp`, `docker build`)
/// then reports "broken pipe" instead of the refusal. Bounded by time, not
/// bytes: a build context of hundreds of MiB arrives in about a second over
/// a pod's or a runner's network, and reading it away costs less than
/// forwarding it would have; a client slower than this gets the reset.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads what is left of a refused request's body, within [`DRAIN_TIME`],
/// so the client is reading when the refusal comes rather than writing
/// into a reset connection.
async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Answers a refused request: its body drained, the BuildKit session a
/// refused build names waited for (the 20.10 CLI hangs for ever when the
/// answer beats its session), then the refusal, counted and logged.
pub(super) async fn respond(
    refusal: Refusal,
    unread: Option<Body>,
    build_session: Option<String>,
    shared: &Shared,
    peer: &Peer,
) -> Response<Body> {
    if let Some(body) = unread {
        drain(body).await;
    }
    if let Some(id) = build_session {
        shared.sessions.wait_for(&id, sessions::WAIT).await;
    }
    shared.metrics.refused();
    tracing::info!(
        peer = %peer.addr,
        status = refusal.status().as_u16(),
        reason = %refusal.message(),
        "request refused"
    );
    refusal.response()
}
