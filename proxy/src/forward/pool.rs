//! dockerd's side of the proxy: idle keep-alive connections to its private
//! socket, lent for one exchange each and given back when the answer ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1 as client;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::Shared;
use crate::respond::{Body, Refusal};
use crate::tasks::Tasks;

/// Most idle dockerd connections kept for reuse; more are closed.
const POOL_IDLE_MAX: usize = 128;
/// How long a dockerd connection may stay idle in the pool. A burst of
/// 200 clients leaves 128 behind; without a bound they would hold their
/// sockets and dockerd's goroutines for the life of the service. 90 s is
/// what the docker CLI's own Go transport keeps an idle connection.
pub(super) const POOL_IDLE_TTL: Duration = Duration::from_secs(90);

/// Idle keep-alive connections to dockerd, shared by every client. A
/// connection is lent for one exchange and comes back only once dockerd's
/// answer has ended, so an idle client holds nothing upstream: 1,000 idle
/// clients cost 1,000 client sockets, not 2,000 sockets and two sets of
/// buffers each (HAProxy's `http-reuse always` does the same).
#[derive(Default)]
pub struct Pool {
    /// Oldest first; lent newest first, so the oldest are the ones that
    /// expire when fewer are needed.
    idle: Mutex<VecDeque<Idle>>,
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
            let candidate = self
                .idle
                .lock()
                .map(|mut v| expire(&mut v).pop_back())
                .unwrap_or(None)
                .map(|i| i.sender);
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
            if expire(&mut idle).len() < POOL_IDLE_MAX {
                idle.push_back(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    /// How many dockerd connections wait idle.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

/// One idle dockerd connection, and since when.
struct Idle {
    sender: client::SendRequest<Body>,
    since: Instant,
}

/// Drops the connections idle longer than [`POOL_IDLE_TTL`]: their tasks
/// end and dockerd sees them close. Swept at each lend and return, so a
/// pool nobody uses keeps what it has until the next exchange.
fn expire(idle: &mut VecDeque<Idle>) -> &mut VecDeque<Idle> {
    while idle
        .front()
        .is_some_and(|i| i.since.elapsed() > POOL_IDLE_TTL)
    {
        idle.pop_front();
    }
    idle
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A burst's connections are kept for reuse, then closed once they
    /// have been idle past the TTL; the one in use stays.
    #[tokio::test(start_paused = true)]
    async fn a_bursts_idle_connections_close_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("dockerd.sock");
        let dockerd = tokio::net::UnixListener::bind(&sock).unwrap();
        let (pool, tasks) = (Pool::default(), Tasks::new());
        let mut lent = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..3 {
            lent.push(pool.checkout(&sock, &tasks).await.unwrap());
            accepted.push(dockerd.accept().await.unwrap().0);
        }
        for s in lent {
            pool.checkin(s);
        }
        assert_eq!(pool.idle(), 3);

        tokio::time::sleep(POOL_IDLE_TTL - Duration::from_secs(1)).await;
        let s = pool.checkout(&sock, &tasks).await.unwrap();
        pool.checkin(s);
        assert_eq!(pool.idle(), 3, "none expired yet, none opened");

        tokio::time::sleep(Duration::from_secs(2)).await;
        let s = pool.checkout(&sock, &tasks).await.unwrap();
        assert_eq!(pool.idle(), 0, "the two untouched ones expired");
        pool.checkin(s);
        assert_eq!(pool.idle(), 1);

        // dockerd sees exactly those two close: the newest was the one reused.
        let mut closed = 0;
        for mut s in accepted {
            let mut b = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await;
            if matches!(read, Ok(Ok(0))) {
                closed += 1;
            }
        }
        assert_eq!(closed, 2);
    }
}
