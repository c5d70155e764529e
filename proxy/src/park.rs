//! Idle keep-alive connections without hyper's buffers.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every
//! connection for as long as it lives, idle or not. Between exchanges the
//! connection is therefore "parked": hyper's state is taken apart
//! (`into_parts`, which hands back the socket and any bytes hyper had read
//! ahead) and only the socket is kept while waiting for the next request;
//! hyper is set up again when its first bytes arrive.
//!
//! Parking is only safe at a message boundary: no exchange in flight (the
//! response body has been sent and dropped, the request body read to its
//! end), everything written flushed, and nothing read from the client since
//! the last exchange ended (a half-read head stays with hyper and its
//! header-read timeout).

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1 as server;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::tasks::Tasks;

/// How long a keep-alive connection stays idle before it is parked: a
/// client sending request after request keeps its hyper state, and pays no
/// teardown and rebuild per request.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Drives one client connection until it closes: hyper while there is
/// traffic, parked (socket and TLS state only) while it idles. `svc` must
/// wrap request bodies in [`Watched`] and response bodies in [`Tracked`]
/// with the same `activity`, so that parking happens only between
/// exchanges. Once `tasks` stop, the connection closes: at once when
/// parked, after the exchange in flight otherwise (hyper's graceful
/// shutdown).
pub async fn drive<I, S, B>(
    io: I,
    mut svc: S,
    activity: Arc<Activity>,
    limits: &Limits,
    metrics: Arc<Metrics>,
    tasks: &Tasks,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut io = Io {
        inner: io,
        prefix: Bytes::new(),
        activity: activity.clone(),
        metrics,
    };
    let mut first = true;
    loop {
        let mut head_timeout = limits.head_timeout;
        if io.prefix.is_empty() {
            // A connection's first request must begin within the head
            // timeout. Between requests it may idle as long as its client
            // likes, as on dockerd (Go's server sets no idle timeout):
            // closing it would race the client's next request, which then
            // fails with no answer at all, an error dockerd never causes
            // (the proxy soak saw 696 in 30 minutes). The connection cap
            // bounds what idle clients hold.
            let limit = first.then_some(head_timeout);
            match park(&mut io, limit, tasks).await {
                ControlFlow::Break(()) => return Ok(()),
                ControlFlow::Continue(Some(left)) => head_timeout = left,
                ControlFlow::Continue(None) => {}
            }
        }
        first = false;
        match serve_until_idle(io, svc, head_timeout, limits, &activity, tasks).await {
            Served::Ended(served) => return served,
            Served::Idle(back, service) => (io, svc) = (back, service),
        }
    }
}

/// Parked: waits for the client's next bytes with nothing but the socket,
/// and keeps them as `io`'s prefix. With a `limit` (a new connection's
/// head timeout) the wait counts against it, and Continue carries what is
/// left; without, the wait is unbounded and Continue(None) leaves the whole
/// head timeout to the head that has begun. Break: the connection is over (the client
/// closed it or waited past the limit, or the proxy stops).
async fn park<I>(
    io: &mut Io<I>,
    limit: Option<Duration>,
    tasks: &Tasks,
) -> ControlFlow<(), Option<Duration>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = io.metrics.clone();
    let _parked = metrics.connection_parked();
    let parked_at = Instant::now();
    let mut first = [0u8; 64];
    let read = tokio::select! {
        biased;
        () = tasks.stopping() => {
            // Between exchanges: nothing to finish.
            let _ = io.inner.shutdown().await;
            return ControlFlow::Break(());
        }
        read = async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, io.inner.read(&mut first)).await,
                None => Ok(io.inner.read(&mut first).await),
            }
        } => read,
    };
    match read {
        Ok(Ok(0)) => {
            // The client closed an idle connection, as hyper would.
            let _ = io.inner.shutdown().await;
            return ControlFlow::Break(());
        }
        Ok(Ok(n)) => {
            metrics.bytes(n as u64, 0);
            io.prefix = Bytes::copy_from_slice(&first[..n]);
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "client connection ended");
            return ControlFlow::Break(());
        }
        Err(_) => {
            tracing::debug!("client connection ended: no request within the head timeout");
            return ControlFlow::Break(());
        }
    }
    ControlFlow::Continue(limit.map(|l| l.saturating_sub(parked_at.elapsed())))
}

/// How a spell of hyper serving a connection ended.
enum Served<I, S> {
    /// The connection is over: closed, failed, upgraded, or closed
    /// gracefully because the proxy stops.
    Ended(Result<(), hyper::Error>),
    /// Idle at a message boundary: hyper taken apart, the socket (with any
    /// bytes hyper read ahead as its prefix) and the service back, to park.
    Idle(Io<I>, S),
}

/// Serves `io` with hyper until the connection ends or idles at a message
/// boundary ([`until_idle`]).
async fn serve_until_idle<I, S, B>(
    io: Io<I>,
    svc: S,
    head_timeout: Duration,
    limits: &Limits,
    activity: &Activity,
    tasks: &Tasks,
) -> Served<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // Boxed: hyper's state lives only while serving, not in the
    // connection's task for as long as it is open.
    let mut conn = Box::pin(
        server::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .max_buf_size(limits.max_head.max(8192))
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades(),
    );
    let served = tokio::select! {
        biased;
        served = until_idle(conn.as_mut(), activity) => served,
        () = tasks.stopping() => {
            // Finish the exchange in flight (a held request's 503
            // included), then close; an idle one closes at once.
            conn.as_mut().graceful_shutdown();
            return Served::Ended(conn.await);
        }
    };
    if let Some(served) = served {
        return Served::Ended(served);
    }
    // Idle at a message boundary: take hyper apart. None only after an
    // upgrade, which ends `conn` before it can idle.
    let Some(parts) = Pin::into_inner(conn).into_parts() else {
        return Served::Ended(Ok(()));
    };
    let mut io = parts.io.into_inner();
    // Bytes hyper read ahead (a pipelined head) go first next time.
    if !parts.read_buf.is_empty() {
        let mut ahead = parts.read_buf.to_vec();
        ahead.extend_from_slice(&io.prefix);
        io.prefix = ahead.into();
    }
    Served::Idle(io, parts.service)
}

/// Polls `conn` to its end (Some), or until it has had nothing to do for
/// [`PARK_AFTER`] at a message boundary (None). "Nothing to do" includes
/// no exchange begun: one that begins and ends within a single poll of
/// `conn` (a cached `/_ping`, a refusal) is never seen busy, and without
/// the count a client pinging every 100 ms would be parked and rebuilt
/// every 250 ms.
async fn until_idle<F: Future + ?Sized>(
    mut conn: Pin<&mut F>,
    activity: &Activity,
) -> Option<F::Output> {
    let mut idle_since: Option<Instant> = None;
    let mut seen = activity.exchanges.load(Relaxed);
    let grace = tokio::time::sleep(PARK_AFTER);
    tokio::pin!(grace);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(served) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(served));
        }
        let exchanges = activity.exchanges.load(Relaxed);
        if exchanges != seen {
            seen = exchanges;
            idle_since = None;
        }
        if !activity.can_park() {
            idle_since = None;
            return Poll::Pending;
        }
        let since = *idle_since.get_or_insert_with(|| {
            let now = Instant::now();
            grace.as_mut().reset(now + PARK_AFTER);
            now
        });
        match grace.as_mut().poll(cx) {
            Poll::Ready(()) if since.elapsed() >= PARK_AFTER => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

/// What the connection driver needs to know about one client connection.
/// Shared by its IO wrapper and its service; all on one task, so the
/// orderings are only there to make it `Sync`.
#[derive(Default)]
pub struct Activity {
    /// Exchanges whose request body or response body hyper still holds.
    busy: AtomicUsize,
    /// Bumped as each side of an exchange begins (see [`Activity::busy`]);
    /// wraps, only a change matters. Restarts the idle grace period.
    exchanges: AtomicUsize,
    /// Bytes came from the client since the last exchange ended.
    read_since_quiet: AtomicBool,
    /// Written (or shut down) since the last successful flush.
    unflushed: AtomicBool,
    /// A request body was dropped before its end: hyper may still drain
    /// it, so this connection is never parked again.
    never: AtomicBool,
}

impl Activity {
    /// At a message boundary, with nothing buffered on the write side.
    pub fn can_park(&self) -> bool {
        self.busy.load(Relaxed) == 0
            && !self.read_since_quiet.load(Relaxed)
            && !self.unflushed.load(Relaxed)
            && !self.never.load(Relaxed)
    }

    /// Counts one side of an exchange (a request body or a response body)
    /// until the returned guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Relaxed);
        self.exchanges.fetch_add(1, Relaxed);
        Busy(self.clone())
    }
}

/// One side of an exchange in flight; see [`Activity::busy`].
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Relaxed) == 1 {
            self.0.read_since_quiet.store(false, Relaxed);
        }
    }
}

/// A response body that counts as busy until hyper drops it (hyper drops
/// a body once it has written its end, or at once for an empty one).
pub struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        Tracked { inner, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts as busy until read to its end. Dropped
/// before that, hyper may still be reading (draining) the rest of it from
/// the socket, so the connection is marked never to park.
pub struct Watched<B> {
    inner: B,
    busy: Option<Busy>,
}

impl<B: Body> Watched<B> {
    pub fn new(inner: B, activity: &Arc<Activity>) -> Self {
        let busy = (!inner.is_end_stream()).then(|| activity.busy());
        Watched { inner, busy }
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if let Some(busy) = &self.busy {
            busy.0.never.store(true, Relaxed);
        }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket as hyper sees it: bytes read while parked (or left in
/// hyper's buffer when it was taken apart) come first; reads, writes and
/// flushes are recorded in the connection's [`Activity`], and bytes in the
/// metrics (upgraded sessions included: they run on this socket).
struct Io<I> {
    inner: I,
    prefix: Bytes,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
}

impl<I> Io<I> {
    /// Bookkeeping for a write; `written` is what the socket took.
    fn wrote(&self, written: &Poll<io::Result<usize>>) {
        self.activity.unflushed.store(true, Relaxed);
        if let Poll::Ready(Ok(n)) = written {
            self.metrics.bytes(0, *n as u64);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Io<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            // Already counted when it was read.
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            this.activity.read_since_quiet.store(true, Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.read_since_quiet.store(true, Relaxed);
            this.metrics.bytes(n as u64, 0);
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Io<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(&res);
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        if matches!(res, Poll::Ready(Ok(()))) {
            this.activity.unflushed.store(false, Relaxed);
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.activity.unflushed.store(true, Relaxed);
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn parks_only_between_exchanges() {
        let activity = Arc::new(Activity::default());
        assert!(activity.can_park());
        let request = activity.busy();
        let response = activity.busy();
        drop(request);
        assert!(!activity.can_park(), "the response is still out");
        drop(response);
        assert!(activity.can_park());
        activity.unflushed.store(true, Relaxed);
        assert!(!activity.can_park(), "written but not flushed");
    }

    #[tokio::test]
    async fn bytes_read_mid_exchange_do_not_block_parking_after_it() {
        let activity = Arc::new(Activity::default());
        let (client, server) = tokio::io::duplex(64);
        let mut io = Io {
            inner: server,
            prefix: Bytes::from_static(b"GET "),
            activity: activity.clone(),
            metrics: Arc::new(Metrics::default()),
        };
        let busy = activity.busy();
        let mut client = client;
        client.write_all(b"/x").await.unwrap();
        let mut got = [0u8; 8];
        let n = io.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"GET ", "what was read while parked comes first");
        let n = io.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"/x");
        assert!(!activity.can_park());
        // The exchange ends: bytes read during it belonged to it (or are in
        // hyper's buffer, which parking hands back).
        drop(busy);
        assert!(activity.can_park());
        client.write_all(b"y").await.unwrap();
        assert_eq!(io.read(&mut got).await.unwrap(), 1);
        assert!(!activity.can_park(), "a head has started");
    }

    #[tokio::test]
    async fn a_request_body_dropped_early_stops_parking_for_good() {
        let activity = Arc::new(Activity::default());
        let read = Watched::new(Full::new(Bytes::from_static(b"{}")), &activity);
        assert!(!activity.can_park());
        read.collect().await.unwrap();
        assert!(activity.can_park(), "read to its end");
        let dropped = Watched::new(Full::new(Bytes::from_static(b"{}")), &activity);
        drop(dropped);
        assert!(!activity.can_park(), "hyper may still be draining it");
    }

    /// hyper serving `io` as [`drive`] does, with a service that answers
    /// every request at once, as a cached `/_ping` or a refusal is answered.
    fn instant_answers(
        io: tokio::io::DuplexStream,
        activity: &Arc<Activity>,
    ) -> Pin<Box<impl Future<Output = Result<(), hyper::Error>>>> {
        let io = Io {
            inner: io,
            prefix: Bytes::new(),
            activity: activity.clone(),
            metrics: Arc::new(Metrics::default()),
        };
        let activity = activity.clone();
        let svc = hyper::service::service_fn(move |_req| {
            let body = Tracked::new(http_body_util::Empty::<Bytes>::new(), activity.busy());
            std::future::ready(Ok::<_, std::convert::Infallible>(hyper::Response::new(
                body,
            )))
        });
        Box::pin(
            server::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(io), svc),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_pinging_every_100ms_is_never_parked() {
        let activity = Arc::new(Activity::default());
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut conn = instant_answers(server, &activity);
        // Each exchange begins and ends within one poll of hyper, so the
        // connection never looks busy; it is never idle for PARK_AFTER either.
        let pinging = async {
            let mut answer = [0u8; 1024];
            for _ in 0..20 {
                client
                    .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                    .await
                    .unwrap();
                assert!(client.read(&mut answer).await.unwrap() > 0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let started = Instant::now();
        tokio::select! {
            served = until_idle(conn.as_mut(), &activity) => {
                panic!("parked or ended after {:?} of pings: {:?}", started.elapsed(), served.map(|_| ()));
            }
            () = pinging => {}
        }
        // The client goes quiet: parked once idle for PARK_AFTER, not before.
        let quiet = Instant::now();
        assert!(
            until_idle(conn.as_mut(), &activity).await.is_none(),
            "parked, not ended"
        );
        assert_eq!(quiet.elapsed(), PARK_AFTER);
    }

    /// [`drive`] serving one end of a duplex with a service that answers
    /// every request at once, as the proxy's own service is wired.
    fn driven(
        server: tokio::io::DuplexStream,
    ) -> tokio::task::JoinHandle<Result<(), hyper::Error>> {
        let activity = Arc::new(Activity::default());
        let svc_activity = activity.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = svc_activity.busy();
            let _req = req.map(|body| Watched::new(body, &svc_activity));
            let body = Tracked::new(http_body_util::Empty::<Bytes>::new(), busy);
            std::future::ready(Ok::<_, std::convert::Infallible>(hyper::Response::new(
                body,
            )))
        });
        tokio::spawn(async move {
            let tasks = Tasks::new();
            let limits = Limits::default();
            drive(
                server,
                svc,
                activity,
                &limits,
                Arc::new(Metrics::default()),
                &tasks,
            )
            .await
        })
    }

    async fn ping(client: &mut tokio::io::DuplexStream) -> usize {
        client
            .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 1024];
        client.read(&mut answer).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_may_idle_as_long_as_on_dockerd() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let conn = driven(server);
        assert!(ping(&mut client).await > 0);
        // Far past the head timeout: dockerd would still answer, so must we
        // (closing it races the client's next request).
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(
            ping(&mut client).await > 0,
            "the idle connection was closed"
        );
        drop(client);
        conn.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_first_request_within_the_head_timeout() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let conn = driven(server);
        let started = Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed, no answer");
        assert_eq!(started.elapsed(), Limits::default().head_timeout);
        conn.await.unwrap().unwrap();
    }
}
