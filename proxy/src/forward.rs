//! Relaying one client connection to dockerd: requests, streamed bodies and
//! upgraded (hijacked) sessions, with the readiness gate in front.

use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::decide::{self, Decision};
use crate::metrics::Metrics;
use crate::readiness::{Readiness, State};
use crate::respond::{Body, Refusal};

/// Buffer per direction for upgraded sessions; large enough that a 1 GiB
/// `docker cp` is not syscall-bound.
const SPLICE_BUFFER: usize = 64 * 1024;

/// What every connection of every listener shares. Built once by `serve`.
pub struct Shared {
    /// dockerd's private socket.
    pub upstream: PathBuf,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a request waits for the engine to be Ready again.
    pub hold: Duration,
    /// Time to read one request head (slowloris guard). Nothing else times
    /// out: builds and `logs -f` run for hours.
    pub head_timeout: Duration,
    /// Largest request head; larger ones get 431.
    pub max_head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hold: Duration::from_secs(30),
            head_timeout: Duration::from_secs(30),
            // dockerd (Go net/http) accepts 1 MiB of headers; so do we.
            max_head: 1 << 20,
        }
    }
}

/// The upstream connection that belongs to one client connection. HTTP/1
/// requests on a connection are sequential, so one dockerd connection per
/// client connection keeps ordering and keep-alive one-to-one.
#[derive(Default)]
struct Upstream {
    sender: Mutex<Option<client::SendRequest<Body>>>,
}

/// Who is on the other end of a client connection, for the audit log.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// `127.0.0.1:51234`, or `unix` for the socket endpoint.
    pub addr: String,
    /// The client certificate's subject, when mutual TLS is on.
    pub subject: Option<String>,
}

/// Serves one accepted client connection until it closes.
pub async fn serve_connection<I>(io: I, peer: Peer, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = shared.metrics.connection_opened();
    let io = Counting {
        inner: io,
        metrics: shared.metrics.clone(),
    };
    let upstream = Arc::new(Upstream::default());
    let peer = Arc::new(peer);
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let (shared, upstream, peer) = (svc_shared.clone(), upstream.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(req, &shared, &upstream, &peer).await) }
    });
    let served = server::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.head_timeout)
        .max_buf_size(shared.limits.max_head.max(8192))
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
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
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            );
        }
        cur = err.source();
    }
    false
}

async fn handle(req: Request<Incoming>, shared: &Shared, upstream: &Upstream, peer: &Peer) -> Response<Body> {
    let method = req.method().clone();
    let resp = match forward(req, shared, upstream).await {
        Ok(resp) => resp,
        Err(refusal) => {
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

async fn forward(
    req: Request<Incoming>,
    shared: &Shared,
    upstream: &Upstream,
) -> Result<Response<Body>, Refusal> {
    let (parts, body) = req.into_parts();
    let head = decide::parse(&parts)?;
    if let Decision::Refuse(refusal) = decide::decide(&head) {
        return Err(refusal);
    }
    gate(shared).await?;
    let mut req = Request::from_parts(parts, body.boxed());
    let client_upgrade = head.upgrade.map(|_| hyper::upgrade::on(&mut req));

    let mut guard = upstream.sender.lock().await;
    let sender = match guard.as_mut() {
        Some(s) if !s.is_closed() => s,
        _ => guard.insert(connect(shared).await?),
    };
    // Waits for the previous response on this connection to finish.
    if sender.ready().await.is_err() {
        *sender = connect(shared).await?;
    }
    let mut resp = sender.send_request(req).await.map_err(|e| {
        tracing::warn!(error = %e, "dockerd did not answer");
        Refusal::Upstream
    })?;
    drop(guard);

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(client_upgrade, upstream_upgrade, shared.metrics.clone()));
        }
    }
    Ok(resp.map(|b| b.boxed()))
}

/// Holds a request while the engine is not Ready, up to the hold limit.
async fn gate(shared: &Shared) -> Result<(), Refusal> {
    match shared.readiness.state() {
        State::Ready => return Ok(()),
        State::ShuttingDown => return Err(Refusal::ShuttingDown),
        State::Starting | State::Restarting => {}
    }
    shared.metrics.held();
    let started = Instant::now();
    match shared.readiness.clone().ready_within(shared.limits.hold).await {
        Ok(State::Ready) => Ok(()),
        Ok(_) => Err(Refusal::ShuttingDown),
        Err(state) => Err(Refusal::NotReady {
            state: state.as_str(),
            waited_s: started.elapsed().as_secs(),
        }),
    }
}

async fn connect(shared: &Shared) -> Result<client::SendRequest<Body>, Refusal> {
    let stream = UnixStream::connect(&shared.upstream).await.map_err(|e| {
        tracing::warn!(socket = %shared.upstream.display(), error = %e, "cannot connect to dockerd");
        Refusal::Upstream
    })?;
    let (sender, conn) = client::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "HTTP handshake with dockerd failed");
            Refusal::Upstream
        })?;
    // Owned by the client connection's sender: ends when that is dropped or
    // dockerd closes; an upgraded exchange hands its socket to `splice`.
    tokio::spawn(async move {
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
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, SPLICE_BUFFER, SPLICE_BUFFER)
        .await
    {
        Ok((up, down)) => tracing::debug!(bytes_in = up, bytes_out = down, "upgraded session ended"),
        Err(e) => tracing::debug!(error = %e, "upgraded session broke"),
    }
}

/// Counts the bytes of a client connection, upgraded sessions included.
struct Counting<I> {
    inner: I,
    metrics: Arc<Metrics>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counting<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.metrics.bytes((buf.filled().len() - before) as u64, 0);
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counting<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res {
            this.metrics.bytes(0, n as u64);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.metrics.bytes(0, n as u64);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
