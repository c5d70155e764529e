//! Relaying one client connection to dockerd: requests, streamed bodies and
//! upgraded (hijacked) sessions, behind the decision point and the
//! readiness gate ([`crate::gate`]).

use std::convert::Infallible;
use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1 as client;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::archive;
use crate::audit::Audit;
use crate::cap::Slot;
use crate::decide::{self, Decision};
use crate::gate::{self, HoldBudget};
use crate::head::RequestHead;
pub use crate::limits::{Limits, BODY_MEMORY, BODY_TIMEOUT, MAX_CONNECTIONS, MAX_HELD};
use crate::metrics::Metrics;
use crate::network_mtu;
use crate::park;
use crate::pin::{self, Pins};
use crate::ping::{PingCache, Ticket};
use crate::policy::Policy;
use crate::readiness::Readiness;
use crate::respond::{Body, Refusal};
use crate::sessions::{self, Sessions};
use crate::tasks::Tasks;

/// Answers with a Content-Length up to this are read whole before the head
/// is sent, so they leave in one write; larger or unsized ones stream.
const SMALL_BODY: usize = 16 * 1024;
/// Buffer per direction for upgraded sessions; large enough that a 1 GiB
/// `docker cp` is not syscall-bound.
const SPLICE_BUFFER: usize = 64 * 1024;
/// How much of a refused request's body is read and thrown away before the
/// refusal is sent, and for how long. Closing on unread bytes makes the
/// kernel reset the connection, and a client still writing (`docker cp`,
/// `docker build`) then reports "broken pipe" instead of the refusal.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(4);

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

/// The pins made for one request: released when dropped, unless dockerd
/// accepted the request and so now names them.
#[derive(Default)]
struct PinLease {
    pins: Option<Arc<Pins>>,
    made: Vec<PathBuf>,
}

impl PinLease {
    fn new(pins: Arc<Pins>, made: Vec<PathBuf>) -> Self {
        PinLease {
            pins: Some(pins),
            made,
        }
    }

    /// dockerd took the request: its container or volume owns the pins
    /// now, until the sweep finds them unnamed.
    fn keep(&mut self) {
        if let Some(pins) = &self.pins {
            pins.keep(&self.made);
        }
        self.made.clear();
    }
}

impl Drop for PinLease {
    fn drop(&mut self) {
        if let (Some(pins), false) = (&self.pins, self.made.is_empty()) {
            pins.release(&self.made);
        }
    }
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

/// Most idle dockerd connections kept for reuse; more are closed.
const POOL_IDLE_MAX: usize = 128;

/// Idle keep-alive connections to dockerd, shared by every client. A
/// connection is lent for one exchange and comes back only once dockerd's
/// answer has ended, so an idle client holds nothing upstream: 1,000 idle
/// clients cost 1,000 client sockets, not 2,000 sockets and two sets of
/// buffers each (HAProxy's `http-reuse always` does the same).
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<client::SendRequest<Body>>>,
    /// Set when the proxy stops: nothing is kept idle from then on, so
    /// each dockerd connection's task ends with its last exchange.
    closed: std::sync::atomic::AtomicBool,
}

impl Pool {
    async fn checkout(
        &self,
        socket: &std::path::Path,
        tasks: &Tasks,
    ) -> Result<client::SendRequest<Body>, Refusal> {
        loop {
            let candidate = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
            match candidate {
                // dockerd may have closed it while idle (a restart).
                Some(mut s) if !s.is_closed() => {
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                Some(_) => {}
                None => return connect(socket, tasks).await,
            }
        }
    }

    fn checkin(&self, sender: client::SendRequest<Body>) {
        if sender.is_closed() || self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < POOL_IDLE_MAX {
                idle.push(sender);
            }
        }
    }
}

impl Pool {
    /// Closes every idle dockerd connection and keeps none from now on:
    /// their tasks end, and the drain need not wait for them.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// dockerd's response body, which returns its connection to the pool when
/// it ends. Dropped early (the client hung up), the connection is closed
/// instead: its state is unknown.
struct Lent {
    inner: Incoming,
    lease: Option<(client::SendRequest<Body>, Arc<Shared>)>,
}

impl Lent {
    fn give_back(&mut self) {
        if let Some((sender, shared)) = self.lease.take() {
            shared.pool.checkin(sender);
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Read to its end: the connection is clean. Otherwise the lease
        // drops here and the connection closes.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl hyper::body::Body for Lent {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling once a sized body reports its end, so the
        // last data frame, not a final None, may be all we see.
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
        Err(refusal) => {
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
    };
    shared.metrics.request(&method, resp.status().as_u16());
    resp
}

/// Reads what is left of a refused request's body, within
/// [`DRAIN_BYTES`] and [`DRAIN_TIME`], so the client is reading when the
/// refusal comes rather than writing into a reset connection.
async fn drain(mut body: Body) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            match left.checked_sub(n) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    })
    .await;
}

/// Decides one request and, if it may pass, relays it, in the order the
/// request path runs: the decision point (head, then body when the policy
/// must see it), the readiness gate, the archive check, the `/_ping`
/// cache, dockerd, and the answer. `unread` is the request's body as it
/// stands: taken when it is forwarded, replaced by the checked bytes when
/// it is read whole, and left for [`drain`] otherwise.
async fn forward(
    mut parts: hyper::http::request::Parts,
    unread: &mut Option<Body>,
    shared: &Arc<Shared>,
    client: &Arc<Client>,
) -> Result<Response<Body>, Refusal> {
    let mut admitted = admit(&mut parts, unread, shared, &client.peer).await?;
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
    check_archive(shared, &client.peer, &admitted.head).await?;
    let ping = match cached_ping(shared, &admitted.head, parts.uri.path()) {
        ControlFlow::Break(answered) => return Ok(answered),
        ControlFlow::Continue(ticket) => ticket,
    };
    let mut req = Request::from_parts(parts, unread.take().expect("a body is taken once"));
    let client_upgrade = admitted
        .head
        .upgrade
        .is_some()
        .then(|| hyper::upgrade::on(&mut req));
    let (sender, resp) = exchange(req, &admitted.head, shared).await?;
    if resp.status().is_success() {
        admitted.pins.keep();
    }
    answer(resp, sender, client_upgrade, ping, shared, client).await
}

/// A request the decision point let through, with what it holds until it
/// is answered.
struct Admitted {
    head: RequestHead,
    /// Pins made for its bind sources; released on every path but a
    /// successful answer from dockerd.
    pins: PinLease,
    /// Its place in the body memory, when its body was read whole: held
    /// through the readiness gate and the forwarding.
    _body_memory: Option<BodyMemory>,
}

/// The decision point: parses the head and decides on it, or on the body
/// when the policy must see it (the body's answer is final). Every
/// decision on a mutating request, and every refusal, is audited.
async fn admit(
    parts: &mut hyper::http::request::Parts,
    unread: &mut Option<Body>,
    shared: &Arc<Shared>,
    peer: &Peer,
) -> Result<Admitted, Refusal> {
    let head = match crate::head::parse(parts) {
        Ok(head) => head,
        Err(refusal) => {
            // Malformed mutating requests are what bypass attempts look like.
            audit(
                shared,
                peer,
                &parts.method,
                parts.uri.path(),
                None,
                Err(&refusal),
            );
            return Err(refusal);
        }
    };
    if head.upgrade.is_none() {
        // dockerd switches protocols on the Upgrade header alone; one we do
        // not act on must not reach it, or the session would be dropped.
        parts.headers.remove(hyper::header::UPGRADE);
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| v.as_bytes().to_vec());
    let mut admitted = Admitted {
        head,
        pins: PinLease::default(),
        _body_memory: None,
    };
    let decision = match decide::decide(&admitted.head, &shared.policy, content_type.as_deref()) {
        // The MTU is added to the body before the policy reads it, so the
        // policy decides on what dockerd gets; a permissive policy reads
        // no body, so this one is read for the MTU alone.
        Decision::Forward if network_mtu::applies(shared.network_mtu, &admitted.head) => {
            Decision::InspectBody {
                cap: shared.policy.body_cap(),
            }
        }
        decision => decision,
    };
    let decided = match decision {
        Decision::Forward => Ok(()),
        Decision::Refuse(refusal) => Err(refusal),
        Decision::InspectBody { cap } => {
            let checked = Checked {
                cap,
                content_type: content_type.as_deref(),
            };
            decide_body(parts, unread, checked, &mut admitted, shared).await
        }
    };
    let head = &admitted.head;
    audit(
        shared,
        peer,
        &head.method,
        &head.path,
        head.version.as_deref(),
        decided.as_ref().map(|_| ()),
    );
    decided.map(|()| admitted)
}

/// What the policy needs to decide on a body besides the body itself.
struct Checked<'a> {
    /// The most the policy reads ([`Decision::InspectBody`]).
    cap: usize,
    content_type: Option<&'a [u8]>,
}

/// Reads the body the policy must see ([`read_whole`]), decides on it and,
/// when it passes, pins its bind sources. The checked bytes, rewritten to
/// name the pins, replace `unread`: they are what dockerd gets, framed
/// afresh.
async fn decide_body(
    parts: &mut hyper::http::request::Parts,
    unread: &mut Option<Body>,
    checked: Checked<'_>,
    admitted: &mut Admitted,
    shared: &Arc<Shared>,
) -> Result<(), Refusal> {
    let body = unread.take().expect("the body is unread until here");
    let (mut bytes, memory) = read_whole(parts, body, checked.cap, shared).await?;
    admitted._body_memory = Some(memory);
    let head = &admitted.head;
    // A few bytes more than the memory counted: one short option.
    if let Some(with_mtu) =
        network_mtu::rewrite(shared.network_mtu, head, checked.content_type, &bytes)
    {
        bytes = with_mtu.into();
        parts.headers.insert(
            CONTENT_LENGTH,
            hyper::header::HeaderValue::from(bytes.len()),
        );
    }
    let mut decided = decide::decide_body(head, &shared.policy, checked.content_type, &bytes);
    if let (Ok(()), Some(pins)) = (&decided, &shared.pins) {
        match pin::pin_body(pins, &shared.policy, head, &bytes) {
            Ok(Some(p)) => {
                bytes = p.body;
                admitted.pins = PinLease::new(pins.clone(), p.made);
                parts.headers.insert(
                    CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(bytes.len()),
                );
            }
            Ok(None) => {}
            Err(refusal) => decided = Err(refusal),
        }
    }
    *unread = Some(crate::respond::full(bytes));
    decided
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

/// The archive rule ([`crate::archive`]), audited when it refuses. It needs
/// dockerd's answer about the container, so it comes after the gate.
async fn check_archive(shared: &Shared, peer: &Peer, head: &RequestHead) -> Result<(), Refusal> {
    let checked = archive::check(&shared.upstream, &shared.policy, head).await;
    if let Err(refusal) = &checked {
        audit(
            shared,
            peer,
            &head.method,
            &head.path,
            head.version.as_deref(),
            Err(refusal),
        );
    }
    checked
}

/// Answers an unversioned `/_ping` from dockerd's last answer when that is
/// fresh (Break), or says whether dockerd's answer should be remembered
/// (Continue with a ticket).
fn cached_ping(
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
async fn exchange(
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
async fn answer(
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

/// The memory of one decided body: its place in [`Shared::bodies`] and in
/// the gauge, both given back when dropped.
struct BodyMemory {
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
async fn read_whole(
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

/// One audit line and one metric per decision on a mutating request, and
/// per refusal of any request; reads that pass go unrecorded. `path` is
/// canonical when the head parsed.
fn audit(
    shared: &Shared,
    peer: &Peer,
    method: &hyper::Method,
    path: &str,
    api_version: Option<&str>,
    outcome: Result<(), &Refusal>,
) {
    if !crate::policy::is_mutating_method(method) && outcome.is_ok() {
        return;
    }
    let (verdict, rule, reason) = match outcome {
        Ok(()) => ("allow", None, None),
        Err(Refusal::Denied { rule, reason }) => ("deny", Some(*rule), Some(reason.clone())),
        Err(r) => ("deny", Some("request"), Some(r.message())),
    };
    shared.metrics.decision(verdict, rule.unwrap_or("-"));
    shared.audit.record(&crate::audit::Entry {
        time: crate::audit::now(),
        peer: &peer.addr,
        subject: peer.subject.as_deref(),
        method: method.as_str(),
        path,
        api_version,
        decision: verdict,
        rule,
        reason: reason.as_deref(),
        policy: shared.policy.name(),
    });
}

async fn connect(
    socket: &std::path::Path,
    tasks: &Tasks,
) -> Result<client::SendRequest<Body>, Refusal> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        tracing::warn!(socket = %socket.display(), error = %e, "cannot connect to dockerd");
        Refusal::Upstream
    })?;
    let (sender, conn) = client::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "HTTP handshake with dockerd failed");
            Refusal::Upstream
        })?;
    // Driven while its sender (in the pool or lent out) lives: ends when
    // that is dropped or dockerd closes; an upgrade hands its socket to
    // `splice`.
    tasks.spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "dockerd connection ended");
        }
    });
    Ok(sender)
}

/// Relays an upgraded session both ways. When one side shuts its write
/// half, the other side's write half is shut and the reverse direction goes
/// on until it ends too: `echo hi | docker run -i img cat` prints `hi`.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    metrics: Arc<Metrics>,
    // Keeps the connection's place under the cap while the session lives.
    _owner: Arc<Client>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let _open = metrics.upgrade_opened();
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await
    {
        Ok((up, down)) => {
            tracing::debug!(bytes_in = up, bytes_out = down, "upgraded session ended")
        }
        Err(e) => tracing::debug!(error = %e, "upgraded session broke"),
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
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::cap::ConnectionCap;

    /// Serves one in-memory client connection under ci-safe, with dockerd
    /// nowhere: these tests end before anything would be forwarded.
    fn connect(limits: Limits) -> (tokio::io::DuplexStream, crate::readiness::Latch) {
        let (shared, latch) = test_shared(
            limits,
            Policy::ci_safe(),
            PathBuf::from("/nonexistent/docker.sock"),
        );
        let slot = ConnectionCap::new(1).admit(&shared.metrics).unwrap();
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve_connection(server, Peer::default(), shared, slot));
        (client, latch)
    }

    /// A create body that trickles in, a byte every 10 s: never idle long
    /// enough for an idle timeout, so only a limit on the whole body ends
    /// it. 408 at the limit, and the connection closes.
    #[tokio::test(start_paused = true)]
    async fn a_decided_body_that_trickles_in_gets_408_at_the_limit() {
        let limits = Limits::default();
        let (mut client, _latch) = connect(limits);
        client
            .write_all(b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let (mut rd, mut wr) = tokio::io::split(client);
        let trickle = tokio::spawn(async move {
            while wr.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        let mut answer = Vec::new();
        rd.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.contains("within 60s"), "{answer}");
        let took = started.elapsed();
        assert!(
            took >= limits.body_timeout && took < limits.body_timeout + Duration::from_secs(1),
            "{took:?}"
        );
        trickle.abort();
    }

    /// A body that comes whole in time is decided as usual (here denied).
    #[tokio::test(start_paused = true)]
    async fn a_decided_body_sent_at_once_is_decided() {
        let (mut client, _latch) = connect(Limits::default());
        let body = br#"{"Image":"x","HostConfig":{"Privileged":true}}"#;
        let head = format!(
            "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(body).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }

    /// Decided bodies share one memory budget: while four connections
    /// hold 1000 bytes each of a 4 KiB budget, a fifth gets 503 at once
    /// (and Connection: close); once one is answered its bytes are free.
    #[tokio::test(start_paused = true)]
    async fn decided_bodies_past_the_shared_memory_get_503_until_some_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, "profile = \"ci-safe\"\nbody_cap = \"1KiB\"\n").unwrap();
        let policy = Policy::load(file.to_str().unwrap(), None).unwrap();
        let limits = Limits {
            body_memory: 4096,
            ..Limits::default()
        };
        let (shared, _latch) =
            test_shared(limits, policy, PathBuf::from("/nonexistent/docker.sock"));
        let cap = ConnectionCap::new(16);
        let open = || {
            let (client, server) = tokio::io::duplex(1 << 16);
            let slot = cap.admit(&shared.metrics).unwrap();
            tokio::spawn(serve_connection(
                server,
                Peer::default(),
                shared.clone(),
                slot,
            ));
            client
        };
        let json = br#"{"Image":"x","HostConfig":{"Privileged":true}}"#;
        let head = b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n";
        let pad = [b' '; 1000 - 46];
        assert_eq!(json.len(), 46);
        let mut holding = Vec::new();
        for _ in 0..4 {
            let mut c = open();
            c.write_all(head).await.unwrap();
            c.write_all(json).await.unwrap();
            holding.push(c);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A buffer grows by 4 KiB at least, and never past what was declared.
        assert_eq!(
            shared.bodies.available_permits(),
            96,
            "four bodies of 1000 bytes"
        );
        let text = shared.metrics.render_to_string();
        assert!(text.contains("dind_proxy_body_bytes 4000"), "{text}");

        let answer = |mut c: tokio::io::DuplexStream| async move {
            let mut out = Vec::new();
            c.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).into_owned()
        };
        let mut fifth = open();
        fifth.write_all(head).await.unwrap();
        fifth.write_all(json).await.unwrap();
        let said = answer(fifth).await;
        assert!(said.starts_with("HTTP/1.1 503"), "{said}");
        assert!(
            said.contains("already holds 4 KiB of request bodies"),
            "{said}"
        );

        // The first finishes its body: decided (denied), its bytes freed.
        let mut first = holding.remove(0);
        first.write_all(&pad).await.unwrap();
        let said = answer(first).await;
        assert!(said.starts_with("HTTP/1.1 403"), "{said}");
        let mut sixth = open();
        sixth.write_all(head).await.unwrap();
        sixth.write_all(json).await.unwrap();
        sixth.write_all(&pad).await.unwrap();
        let said = answer(sixth).await;
        assert!(said.starts_with("HTTP/1.1 403"), "room again: {said}");
        drop(holding);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            shared.bodies.available_permits(),
            4096,
            "every byte given back"
        );
        assert_eq!(
            shared
                .metrics
                .render_to_string()
                .lines()
                .find(|l| l.starts_with("dind_proxy_body_bytes ")),
            Some("dind_proxy_body_bytes 0")
        );
    }

    /// Connections' shared state, the engine Ready, in front of a dockerd
    /// that answers one attach; the directory holds its socket.
    fn ready_behind_attach_dockerd() -> (tempfile::TempDir, Arc<Shared>, crate::readiness::Latch) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("dockerd.sock");
        echoing_attach_dockerd(&sock);
        let (shared, latch) = test_shared(Limits::default(), Policy::permissive(), sock);
        latch.set(crate::readiness::State::Ready);
        (dir, shared, latch)
    }

    /// dockerd's side of one attach at `sock`: switch protocols, then echo.
    fn echoing_attach_dockerd(sock: &std::path::Path) {
        let dockerd = tokio::net::UnixListener::bind(sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = dockerd.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if s.read(&mut b).await.unwrap() == 0 {
                    return;
                }
                head.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
                .await
                .unwrap();
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }

    /// Asks for an attach session on `client`; returns once it is switched.
    async fn attach(client: &mut tokio::io::DuplexStream) {
        client
            .write_all(b"POST /v1.41/containers/x/attach?stream=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 256];
        let n = client.read(&mut answer).await.unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
    }

    /// An attach session outlives the HTTP connection that asked for it;
    /// its place under the connection cap and in the gauge lasts as long.
    #[tokio::test]
    async fn an_upgraded_session_keeps_its_place_until_it_ends() {
        let (_dir, shared, _latch) = ready_behind_attach_dockerd();
        let cap = ConnectionCap::new(1);
        let slot = cap.admit(&shared.metrics).unwrap();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let conn = tokio::spawn(serve_connection(
            server,
            Peer::default(),
            shared.clone(),
            slot,
        ));
        attach(&mut client).await;
        conn.await.unwrap();
        // The HTTP connection has ended; the session goes on, and counts.
        client.write_all(b"hi").await.unwrap();
        let mut echo = [0u8; 2];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hi");
        assert_eq!(shared.metrics.open_connections(), 1);
        assert!(
            cap.admit(&shared.metrics).is_none(),
            "the session holds the only place"
        );
        drop(client);
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while shared.metrics.open_connections() > 0 {
            assert!(
                tokio::time::Instant::now() < until,
                "the session's place was never freed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(cap.admit(&shared.metrics).is_some());
    }

    /// A client connection served as the listener serves it: under `cap`,
    /// its task owned by `shared.tasks`.
    fn open_on(shared: &Arc<Shared>, cap: &ConnectionCap) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 16);
        let slot = cap.admit(&shared.metrics).unwrap();
        shared.tasks.spawn(serve_connection(
            server,
            Peer::default(),
            shared.clone(),
            slot,
        ));
        client
    }

    /// At stop, a parked keep-alive connection closes at once and a request
    /// held for the engine gets its 503, then its connection closes: the
    /// drain ends when they have, cutting nothing.
    #[tokio::test(start_paused = true)]
    async fn a_stop_answers_the_held_request_and_closes_the_idle_connection() {
        let (shared, _latch) = test_shared(
            Limits::default(),
            Policy::permissive(),
            PathBuf::from("/nonexistent/docker.sock"),
        );
        let cap = ConnectionCap::new(2);
        let open = || open_on(&shared, &cap);
        let mut idle = open();
        let mut held = open();
        held.write_all(b"GET /v1.41/info HTTP/1.1\r\nHost: d\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(shared.metrics.held_now(), 1, "held while Starting");

        let started = tokio::time::Instant::now();
        assert_eq!(shared.tasks.drain(Duration::from_secs(1)).await, 0);
        assert!(started.elapsed() < Duration::from_secs(1));
        let mut answer = Vec::new();
        held.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let mut nothing = Vec::new();
        idle.read_to_end(&mut nothing).await.unwrap();
        assert!(nothing.is_empty());
        assert_eq!(shared.metrics.open_connections(), 0);
    }

    /// An attach session does not end because the proxy stops: it is cut
    /// at the drain bound, and its place under the cap is given back.
    #[tokio::test]
    async fn a_session_still_open_at_the_drain_bound_is_cut() {
        let (_dir, shared, _latch) = ready_behind_attach_dockerd();
        let cap = ConnectionCap::new(1);
        let slot = cap.admit(&shared.metrics).unwrap();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        shared.tasks.spawn(serve_connection(
            server,
            Peer::default(),
            shared.clone(),
            slot,
        ));
        attach(&mut client).await;

        assert_eq!(shared.tasks.drain(Duration::from_millis(100)).await, 1);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed, nothing more");
        assert_eq!(shared.metrics.open_connections(), 0);
        assert!(cap.admit(&shared.metrics).is_some());
    }

    /// A panic while serving one connection (injected with the debug-only
    /// fault header) closes that connection, unanswered, and nothing else:
    /// a neighbour open at the time and the next connection are served,
    /// and the panicked one's place under the cap is given back.
    #[tokio::test(start_paused = true)]
    async fn a_panic_closes_its_own_connection_only() {
        let (shared, _latch) = test_shared(
            Limits::default(),
            Policy::ci_safe(),
            PathBuf::from("/nonexistent/docker.sock"),
        );
        let cap = ConnectionCap::new(2);
        let open = || open_on(&shared, &cap);
        // Refused by ci-safe before the gate: answered whatever the engine.
        let refused = b"GET /debug/vars HTTP/1.1\r\nHost: d\r\n\r\n";
        async fn answer(c: &mut tokio::io::DuplexStream) -> String {
            let mut buf = vec![0u8; 4096];
            let n = c.read(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        let mut neighbour = open();
        neighbour.write_all(refused).await.unwrap();
        assert!(answer(&mut neighbour).await.starts_with("HTTP/1.1 403"));

        let mut faulty = open();
        faulty
            .write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Dind-Fault: panic\r\n\r\n")
            .await
            .unwrap();
        let mut said = Vec::new();
        faulty.read_to_end(&mut said).await.unwrap();
        assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
        assert_eq!(shared.metrics.open_connections(), 1, "its place is free");

        neighbour.write_all(refused).await.unwrap();
        assert!(answer(&mut neighbour).await.starts_with("HTTP/1.1 403"));
        let mut next = open();
        next.write_all(refused).await.unwrap();
        assert!(answer(&mut next).await.starts_with("HTTP/1.1 403"));
    }
}
