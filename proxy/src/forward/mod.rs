//! Relaying one client connection to dockerd: requests, streamed bodies and
//! upgraded (hijacked) sessions, behind the decision point and the
//! readiness gate ([`crate::gate`]).
//!
//! Layout, in the order the request path runs: [`admit`] (the decision
//! point; [`body`] reads a body it must see), the gate ([`pass_gate`]),
//! [`relay`] (the `/_ping` cache, the exchange with dockerd over [`pool`],
//! the answer; [`upgrade`] splices a switched session), and [`refuse`] for
//! a request that does not pass.

mod admit;
mod body;
mod pool;
mod refuse;
mod relay;
mod upgrade;

use std::convert::Infallible;
use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::audit::Audit;
use crate::cap::Slot;
use crate::gate::{self, HoldBudget};
pub use crate::limits::{Limits, BODY_MEMORY, BODY_TIMEOUT, MAX_CONNECTIONS, MAX_HELD};
use crate::metrics::Metrics;
use crate::park;
use crate::pin::Pins;
use crate::ping::PingCache;
use crate::policy::Policy;
use crate::readiness::Readiness;
use crate::respond::{Body, Refusal};
use crate::sessions::{self, Sessions};
use crate::tasks::Tasks;
pub use pool::Pool;

/// Test-only fault hook, compiled into debug builds alone: a request with
/// `X-Dind-Fault: panic` makes the task serving its connection panic, so
/// that tests can show a panic closes that connection and nothing else
/// (issue 11). Release builds have no such header.
#[cfg(debug_assertions)]
pub const FAULT_HEADER: &str = "x-dind-fault";

/// A client's request body, watched so the connection parks only once it
/// has been read to its end.
type ClientBody = park::Watched<Incoming>;

/// What every connection of every listener shares. Built once by `serve`.
pub struct Shared {
    /// dockerd's private socket.
    pub upstream: PathBuf,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub pool: Pool,
    pub policy: Policy,
    pub audit: Audit,
    pub ping: PingCache,
    /// Bytes of decided bodies in memory, all connections together
    /// ([`Limits::body_memory`], at least one whole body).
    pub bodies: Arc<tokio::sync::Semaphore>,
    /// Where confined bind sources are pinned; None when the policy
    /// confines no binds.
    pub pins: Option<Arc<Pins>>,
    /// Every task spawned for a client: its connection, an upgraded
    /// session's splice, the dockerd connection of an exchange. `serve`
    /// drains them when it stops.
    pub tasks: Tasks,
    /// BuildKit sessions seen opening, which a refused build waits for.
    pub sessions: Sessions,
    /// The MTU the proxy adds to bridge networks created through it
    /// ([`crate::network_mtu`]); None when dockerd adds it itself or none
    /// is wanted.
    pub network_mtu: Option<u32>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: PathBuf,
        readiness: Readiness,
        metrics: Arc<Metrics>,
        limits: Limits,
        policy: Policy,
        audit: Audit,
        ping: PingCache,
        pins: Option<Arc<Pins>>,
    ) -> Shared {
        let bodies = Arc::new(tokio::sync::Semaphore::new(
            limits.body_memory.max(policy.body_cap()),
        ));
        Shared {
            upstream,
            readiness,
            metrics,
            limits,
            pool: Pool::default(),
            policy,
            audit,
            ping,
            bodies,
            pins,
            tasks: Tasks::new(),
            sessions: Sessions::default(),
            network_mtu: None,
        }
    }
}

/// What one client connection carries across its requests.
struct Client {
    peer: Peer,
    /// Its requests share one wait for the engine per not-ready spell.
    hold: HoldBudget,
    /// Its place under the connection cap, until the connection and any
    /// upgraded session of it have ended.
    _slot: Slot,
}

/// Who is on the other end of a client connection, for the audit log.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// `127.0.0.1:51234`, or `unix` for the socket endpoint.
    pub addr: String,
    /// The client certificate's subject, when mutual TLS is on.
    pub subject: Option<String>,
}

/// Serves one accepted client connection until it closes. Between
/// exchanges the connection is parked ([`crate::park`]): an idle keep-alive
/// connection holds its socket and TLS state, not hyper's buffers.
pub async fn serve_connection<I>(io: I, peer: Peer, shared: Arc<Shared>, slot: Slot)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(park::Activity::default());
    let client = Arc::new(Client {
        peer,
        hold: HoldBudget::default(),
        _slot: slot,
    });
    let (svc_shared, svc_activity) = (shared.clone(), activity.clone());
    let svc = service_fn(move |req: Request<Incoming>| {
        let (shared, client) = (svc_shared.clone(), client.clone());
        let busy = svc_activity.busy();
        let req = req.map(|body| park::Watched::new(body, &svc_activity));
        async move {
            let resp = handle(req, &shared, &client).await;
            Ok::<_, Infallible>(resp.map(|body| park::Tracked::new(body, busy)))
        }
    });
    let served = park::drive(
        io,
        svc,
        activity,
        &shared.limits,
        shared.metrics.clone(),
        &shared.tasks,
    )
    .await;
    if let Err(e) = served {
        // A client hanging up or a slow head is the client's business.
        if e.is_incomplete_message() || e.is_timeout() || is_hangup(&e) {
            tracing::debug!(error = %e, "client connection ended");
        } else {
            tracing::info!(error = %e, "client connection failed");
        }
    }
}

fn is_hangup(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::UnexpectedEof
            );
        }
        cur = err.source();
    }
    false
}

async fn handle(
    req: Request<ClientBody>,
    shared: &Arc<Shared>,
    client: &Arc<Client>,
) -> Response<Body> {
    #[cfg(debug_assertions)]
    if req
        .headers()
        .get(FAULT_HEADER)
        .is_some_and(|v| v == "panic")
    {
        panic!("fault injected with {FAULT_HEADER}: panic (debug builds only)");
    }
    let method = req.method().clone();
    let peer = &client.peer;
    let (parts, body) = req.into_parts();
    let build_session = sessions::of_build(parts.uri.path(), parts.uri.query());
    let mut unread = Some(body.boxed());
    let resp = match forward(parts, &mut unread, shared, client).await {
        Ok(resp) => resp,
        Err(refusal) => refuse::respond(refusal, unread, build_session, shared, peer).await,
    };
    shared.metrics.request(&method, resp.status().as_u16());
    resp
}

/// Decides one request and, if it may pass, relays it, in the order the
/// request path runs: the decision point (head, then body when the policy
/// must see it), the readiness gate, the archive check, the `/_ping`
/// cache, dockerd, and the answer. `unread` is the request's body as it
/// stands: taken when it is forwarded, replaced by the checked bytes when
/// it is read whole, and left for [`refuse`] to drain otherwise.
async fn forward(
    mut parts: hyper::http::request::Parts,
    unread: &mut Option<Body>,
    shared: &Arc<Shared>,
    client: &Arc<Client>,
) -> Result<Response<Body>, Refusal> {
    let mut admitted = admit::admit(&mut parts, unread, shared, &client.peer).await?;
    if admitted.head.path == "/session" {
        if let Some(id) = parts
            .headers
            .get(sessions::SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            shared.sessions.opened(id);
        }
    }
    pass_gate(shared, client).await?;
    admit::check_archive(shared, &client.peer, &admitted.head).await?;
    let ping = match relay::cached_ping(shared, &admitted.head, parts.uri.path()) {
        ControlFlow::Break(answered) => return Ok(answered),
        ControlFlow::Continue(ticket) => ticket,
    };
    let mut req = Request::from_parts(parts, unread.take().expect("a body is taken once"));
    let client_upgrade = admitted
        .head
        .upgrade
        .is_some()
        .then(|| hyper::upgrade::on(&mut req));
    let (sender, resp) = relay::exchange(req, &admitted.head, shared).await?;
    if resp.status().is_success() {
        admitted.pins.keep();
    }
    relay::answer(resp, sender, client_upgrade, ping, shared, client).await
}

/// Waits at the readiness gate. A request still held when the proxy stops
/// gets its 503 now, whatever the state says: the drain waits for its
/// answer, not for the engine.
async fn pass_gate(shared: &Shared, client: &Client) -> Result<(), Refusal> {
    tokio::select! {
        biased;
        passed = gate::pass(&shared.readiness, &shared.metrics, &shared.limits, &client.hold) => passed,
        () = shared.tasks.stopping() => Err(Refusal::ShuttingDown {
            last_error: shared.readiness.engine().last_error,
        }),
    }
}

/// What connections share, for unit tests: `policy` in front of
/// `upstream`, the engine Starting until the returned latch moves it.
#[cfg(test)]
pub(crate) fn test_shared(
    limits: Limits,
    policy: Policy,
    upstream: PathBuf,
) -> (Arc<Shared>, crate::readiness::Latch) {
    let (latch, readiness) = crate::readiness::channel();
    let audit = Audit::file(std::path::Path::new("/dev/null")).expect("/dev/null opens");
    let metrics = Arc::new(Metrics::default());
    let shared = Shared::new(
        upstream,
        readiness,
        metrics,
        limits,
        policy,
        audit,
        PingCache::new(Duration::ZERO),
        None,
    );
    (Arc::new(shared), latch)
}

#[cfg(test)]
mod tests;
