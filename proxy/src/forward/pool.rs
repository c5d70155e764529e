//! dockerd's side of the proxy: idle keep-alive connections to its private
//! socket, lent for one exchange each and given back when the answer ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1 as client;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::Shared;
use crate::respond::{Body, Refusal};
use crate::tasks::Tasks;

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
    pub(super) async fn checkout(
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
pub(super) struct Lent {
    pub(super) inner: Incoming,
    pub(super) lease: Option<(client::SendRequest<Body>, Arc<Shared>)>,
}

impl Lent {
    pub(super) fn give_back(&mut self) {
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
