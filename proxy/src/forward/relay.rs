//! A request that passed, relayed: the `/_ping` cache, one exchange with
//! dockerd on a pooled connection, and its answer handed to the client.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1 as client;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, Response, StatusCode};

use super::pool::Lent;
use super::upgrade::splice;
use super::{Client, Shared};
use crate::head::RequestHead;
use crate::ping::{PingCache, Ticket};
use crate::respond::{Body, Refusal};

/// Answers with a Content-Length up to this are read whole before the head
/// is sent, so they leave in one write; larger or unsized ones stream.
const SMALL_BODY: usize = 16 * 1024;

/// Answers an unversioned `/_ping` from dockerd's last answer when that is
/// fresh (Break), or says whether dockerd's answer should be remembered
/// (Continue with a ticket).
pub(super) fn cached_ping(
    shared: &Shared,
    head: &RequestHead,
    raw_path: &str,
) -> ControlFlow<Response<Body>, Option<Ticket>> {
    let Some(slot) = shared.ping.slot(head, raw_path) else {
        return ControlFlow::Continue(None);
    };
    let engine = shared.readiness.engine_pid();
    if let Some(resp) = shared.ping.answer(slot, engine, Instant::now()) {
        shared.metrics.ping_cached();
        return ControlFlow::Break(resp);
    }
    ControlFlow::Continue(Some(shared.ping.ticket(slot, engine)))
}

/// One exchange with dockerd on a pooled connection: its answer's head,
/// and the connection, lent until that answer's body ends.
pub(super) async fn exchange(
    req: Request<Body>,
    head: &RequestHead,
    shared: &Arc<Shared>,
) -> Result<(client::SendRequest<Body>, Response<Incoming>), Refusal> {
    // Invalidates now and when dropped: once dockerd has answered, or on
    // any early return or hang-up before that.
    let _swarm_change = PingCache::is_invalidated_by(head).then(|| shared.ping.invalidate_guard());
    let mut sender = shared
        .pool
        .checkout(&shared.upstream, &shared.tasks)
        .await?;
    let resp = sender.send_request(req).await.map_err(|e| {
        tracing::warn!(error = %e, "dockerd did not answer");
        Refusal::Upstream
    })?;
    Ok((sender, resp))
}

/// Hands dockerd's answer to the client: a switch of protocols becomes a
/// spliced session, a small body leaves in one write (remembered when it
/// answers `/_ping`), anything else streams.
pub(super) async fn answer(
    mut resp: Response<Incoming>,
    sender: client::SendRequest<Body>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ping: Option<Ticket>,
    shared: &Arc<Shared>,
    client: &Arc<Client>,
) -> Result<Response<Body>, Refusal> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The connection becomes the session; it never returns to the pool.
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            shared.tasks.spawn(splice(
                client_upgrade,
                upstream_upgrade,
                shared.metrics.clone(),
                client.clone(),
            ));
        }
        return Ok(resp.map(|b| b.boxed()));
    }
    let small = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= SMALL_BODY);
    let lease = Some((sender, shared.clone()));
    let (head, inner) = resp.into_parts();
    let mut lent = Lent { inner, lease };
    // An empty body may never be polled to its end.
    if lent.inner.is_end_stream() {
        lent.give_back();
    }
    if !small {
        return Ok(Response::from_parts(head, lent.boxed()));
    }
    // Already in our buffer or nearly: answer head and body in one write
    // (one TLS record, one wake-up of the client) instead of two.
    let body = lent
        .collect()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "dockerd's answer broke off");
            Refusal::Upstream
        })?
        .to_bytes();
    if let Some(ticket) = ping {
        shared.ping.remember(ticket, &head, &body, Instant::now());
    }
    Ok(Response::from_parts(head, crate::respond::full(body)))
}
