//! Every task the proxy spawns for its clients, owned, and how they end.
//!
//! A client connection, the splice of an upgraded session (attach, exec,
//! BuildKit) and the connection to dockerd that serves an exchange are all
//! spawned through [`Tasks`], so [`crate::serve`] returns only once every
//! one of them has ended, and within a bound (issue 11). The shape is
//! hyper-util's graceful shutdown (`server/graceful.rs`): watch every
//! connection, close the listeners, then drain under a deadline.
//!
//! On stop ([`Tasks::drain`]) each connection is told to close once its
//! current exchange is answered: a parked or idle one closes at once, a
//! request held in the gate gets its 503 at once ([`crate::forward`]).
//! Whatever still runs
//! at the bound (a `logs -f` stream, an attach session) is dropped, which
//! closes its sockets.
//!
//! A panic in one task ends that task alone: tokio catches it where the
//! task is polled, and unwinding drops the task's guards (its place under
//! the connection cap, a held request's count, its body memory). That
//! needs `panic = "unwind"`, which the crate root enforces. Everywhere
//! else a panic still ends the process, as `panic = "abort"` did, once
//! [`abort_on_panic_outside_client_tasks`] is installed: a supervisor task
//! that died quietly would leave PID 1 running without its duties.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The proxy's client tasks and the two signals that end them. Cheap to
/// clone: every clone names the same tasks.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    /// Every task spawned here, until it ends.
    tracker: TaskTracker,
    /// Cancelled when the proxy stops: connections finish the exchange in
    /// flight, then close; background loops end.
    stop: CancellationToken,
    /// Cancelled at the drain bound: what is still running is dropped.
    cut: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` until it ends or the drain bound cuts it, in the
    /// current tracing span (a connection's peer).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(self.client(task).in_current_span());
    }

    /// `task` as a client task: cut at the drain bound, and marked as a
    /// client task while it is polled.
    fn client<F>(&self, task: F) -> Client<F> {
        Client {
            cut: self.cut.clone().cancelled_owned(),
            task: Some(task),
        }
    }

    /// Completes when the proxy stops: a connection then closes once its
    /// current exchange is answered.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Tasks running now.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Stops every task: asks them to end, waits for them up to `bound`,
    /// then drops whatever is left. Returns how many had to be dropped.
    /// Tasks spawned during the drain (a dockerd connection for a request
    /// already in flight) are drained with the rest.
    pub async fn drain(&self, bound: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(bound, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.tracker.len();
        self.cut.cancel();
        // Each remaining task ends at its next poll: it is only dropped.
        self.tracker.wait().await;
        left
    }
}

pin_project_lite::pin_project! {
    /// A client task as spawned. A named future, not async blocks: an
    /// async block that moves a captured future into a pinned local (or
    /// into `select!`) keeps room for it twice, and a connection's future
    /// is kilobytes, paid by every open connection (1,000 idle ones cost
    /// 6 MiB more that way, `bench/proxy.sh`).
    struct Client<F> {
        #[pin]
        cut: WaitForCancellationFutureOwned,
        // None once cut: dropped here, inside the marker, not by tokio
        // after `poll` returns, where a panic in a destructor would abort.
        #[pin]
        task: Option<F>,
    }
}

impl<F: Future<Output = ()>> Future for Client<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let _inside = ClientTask::enter();
        // The cut first, as a biased select would.
        if this.cut.poll(cx).is_ready() {
            this.task.set(None);
            return Poll::Ready(());
        }
        match this.task.as_pin_mut() {
            Some(task) => task.poll(cx),
            None => Poll::Ready(()),
        }
    }
}

thread_local! {
    /// Whether this thread is polling one of the proxy's client tasks now.
    static IN_CLIENT_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread as inside a client task while one is polled. Still set
/// when a panic hook runs, which is before unwinding drops this.
struct ClientTask(bool);

impl ClientTask {
    fn enter() -> ClientTask {
        ClientTask(IN_CLIENT_TASK.with(|f| f.replace(true)))
    }
}

impl Drop for ClientTask {
    fn drop(&mut self) {
        IN_CLIENT_TASK.with(|f| f.set(self.0));
    }
}

/// Whether the code running now is one of the proxy's client tasks.
pub fn in_client_task() -> bool {
    IN_CLIENT_TASK.with(Cell::get)
}

/// Installs a panic hook for the process: a panic in a client task
/// ([`Tasks::spawn`]) is logged and unwinds, closing that task alone; any
/// other panic aborts the process, as `panic = "abort"` did. The previous
/// hook still prints the message first. For the binary's start-up, not
/// for tests: a test's failed assertion is a panic too.
pub fn abort_on_panic_outside_client_tasks() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if in_client_task() {
            tracing::error!(
                panic = %info,
                "a client task panicked: its connection is closed, the rest go on"
            );
        } else {
            std::process::abort();
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task cut at the drain bound is dropped as a client task: a panic
    /// in one of its destructors closes that task alone, as a panic while
    /// it runs does, instead of aborting the process.
    #[tokio::test(start_paused = true)]
    async fn a_cut_task_is_dropped_as_a_client_task() {
        struct Guard(std::sync::Arc<std::sync::atomic::AtomicU8>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let marked = if in_client_task() { 1 } else { 2 };
                self.0.store(marked, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
        let tasks = Tasks::new();
        let guard = Guard(seen.clone());
        tasks.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(tasks.drain(Duration::from_millis(100)).await, 1);
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "dropped outside the marker"
        );
    }

    /// What the wrapper adds to every open connection: a cancellation
    /// future, not a second copy of the connection's own future.
    #[test]
    fn a_client_task_costs_little_more_than_its_future() {
        let connection = async {
            let buffer = [7u8; 8192];
            tokio::task::yield_now().await;
            std::hint::black_box(&buffer);
        };
        let own = std::mem::size_of_val(&connection);
        let wrapped = Tasks::new().client(connection);
        let added = std::mem::size_of_val(&wrapped) - own;
        assert!(
            own >= 8192 && added <= 256,
            "own {own} bytes, added {added}"
        );
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::time::Instant;

    /// A task that honours the stop ends at once; one that ignores it (a
    /// session, a stream) is dropped at the bound, and no earlier.
    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_willing_and_cuts_the_rest_at_the_bound() {
        let tasks = Tasks::new();
        let (polite, stuck) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let t = tasks.clone();
        let done = polite.clone();
        tasks.spawn(async move {
            t.stopping().await;
            done.store(true, Ordering::SeqCst);
        });
        /// Set when dropped: the task was cut, not finished.
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = Dropped(stuck.clone());
        tasks.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(tasks.len(), 2);

        let started = Instant::now();
        assert_eq!(tasks.drain(Duration::from_secs(1)).await, 1, "one cut");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(polite.load(Ordering::SeqCst), "the willing one finished");
        assert!(stuck.load(Ordering::SeqCst), "the stuck one was dropped");
        assert!(tasks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_returns_as_soon_as_everything_has_ended() {
        let tasks = Tasks::new();
        tasks.spawn(tokio::time::sleep(Duration::from_millis(300)));
        let started = Instant::now();
        assert_eq!(tasks.drain(Duration::from_secs(1)).await, 0);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test]
    async fn only_client_tasks_count_as_client_tasks() {
        assert!(!in_client_task());
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(in_client_task());
        });
        assert!(rx.await.unwrap(), "inside, across a yield");
        assert!(!in_client_task(), "not after");
    }

    /// A panicking task ends alone: its neighbours and later tasks run on,
    /// and the drain does not wait for it.
    #[tokio::test(start_paused = true)]
    async fn a_panic_ends_its_own_task_only() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = tasks.clone();
        tasks.spawn(async move {
            t.stopping().await;
            let _ = tx.send(());
        });
        tasks.spawn(async { panic!("injected by a test") });
        tokio::task::yield_now().await;
        assert_eq!(tasks.len(), 1, "the panicked task is gone");
        let (later_tx, later_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            let _ = later_tx.send(());
        });
        later_rx.await.expect("a task spawned after the panic runs");
        assert_eq!(tasks.drain(Duration::from_secs(1)).await, 0);
        rx.await.expect("the neighbour ran to its end");
    }
}
