//! Engine readiness: one writer (the supervisor's latch), many watchers.
//!
//! Ready means the certificates are on disk and dockerd answered `GET /_ping`
//! on its private socket. Requests on the public listeners are held until it
//! holds.

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;

/// Where the engine is in its life. Moves Starting → Ready → Restarting →
/// Ready … → ShuttingDown; ShuttingDown is final. Ready ⇄ Unresponsive
/// while a live dockerd stops answering, and Unresponsive → Restarting when
/// it is killed for that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Certificates are being minted or dockerd has not answered yet.
    Starting,
    /// dockerd answers `/_ping` on its private socket.
    Ready,
    /// dockerd exited unexpectedly and is being started again.
    Restarting,
    /// dockerd runs but has not answered `/_ping` for a while (stopped,
    /// deadlocked): requests are held as during a restart.
    Unresponsive,
    /// A stop signal arrived; nothing new may start.
    ShuttingDown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Restarting => "restarting",
            State::Unresponsive => "unresponsive",
            State::ShuttingDown => "shutting_down",
        }
    }

    fn may_move_to(self, next: State) -> bool {
        use State::*;
        match (self, next) {
            (ShuttingDown, _) => false,
            (_, ShuttingDown) => true,
            (Starting | Restarting | Unresponsive, Ready) => true,
            (Ready | Unresponsive, Restarting) => true,
            (Ready, Unresponsive) => true,
            (Starting, Restarting) => true,
            (Restarting, Restarting) => true,
            _ => false,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the supervisor knows about the running engine, for `/status` and
/// `/metrics`. Written only through the [`Latch`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Engine {
    pub pid: Option<u32>,
    /// dockerd's version, from the `Server` header of `/_ping`.
    pub version: Option<String>,
    pub api_version: Option<String>,
    /// Restarts after unexpected exits.
    pub restarts: u64,
    /// From the supervisor's start to the first Ready.
    pub seconds_to_ready: Option<f64>,
    /// Why the last dockerd ended or could not start (its last stderr line),
    /// so a request held in vain can say why.
    pub last_error: Option<String>,
    /// While Unresponsive: for how long dockerd has not answered, said for
    /// `/readyz` and `/status` (the supervisor's watchdog writes it).
    pub unresponsive: Option<String>,
}

/// The only handle that can change the state. Owned by the supervisor's run
/// loop; dropping it (the supervisor is gone) reads as ShuttingDown.
#[derive(Debug)]
pub struct Latch {
    tx: watch::Sender<State>,
    engine: watch::Sender<Engine>,
}

/// A read-only view of the state, cheap to clone into every task.
#[derive(Clone, Debug)]
pub struct Readiness {
    rx: watch::Receiver<State>,
    engine: watch::Receiver<Engine>,
}

/// Creates the state in `Starting`.
pub fn channel() -> (Latch, Readiness) {
    let (tx, rx) = watch::channel(State::Starting);
    let (etx, erx) = watch::channel(Engine::default());
    (Latch { tx, engine: etx }, Readiness { rx, engine: erx })
}

impl Latch {
    /// Moves to `next` if the lifecycle allows it; returns whether it moved.
    /// Illegal moves (anything out of ShuttingDown) are ignored rather than
    /// panicking: a late probe result must not resurrect a stopping engine.
    pub fn set(&self, next: State) -> bool {
        self.tx.send_if_modified(|cur| {
            if *cur != next && cur.may_move_to(next) {
                *cur = next;
                true
            } else {
                false
            }
        })
    }

    pub fn state(&self) -> State {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> Readiness {
        Readiness {
            rx: self.tx.subscribe(),
            engine: self.engine.subscribe(),
        }
    }

    /// Updates what is known about the engine.
    pub fn engine(&self, update: impl FnOnce(&mut Engine)) {
        self.engine.send_modify(update);
    }
}

impl Readiness {
    pub fn state(&self) -> State {
        *self.rx.borrow()
    }

    pub fn engine(&self) -> Engine {
        self.engine.borrow().clone()
    }

    /// The running dockerd's pid, without copying the rest.
    pub fn engine_pid(&self) -> Option<u32> {
        self.engine.borrow().pid
    }

    /// Waits until the state is Ready. Returns the state that ended the wait
    /// early: ShuttingDown, or Err(()) when `limit` passed first.
    pub async fn ready_within(&mut self, limit: Duration) -> Result<State, State> {
        let waited = tokio::time::timeout(
            limit,
            self.rx
                .wait_for(|s| matches!(s, State::Ready | State::ShuttingDown)),
        )
        .await
        .map(|r| r.map(|s| *s));
        match waited {
            Ok(Ok(s)) => Ok(s),
            // The latch is gone: the supervisor is stopping.
            Ok(Err(_)) => Ok(State::ShuttingDown),
            Err(_) => Err(self.state()),
        }
    }

    /// Completes once the engine is shutting down, or the latch is gone:
    /// the stop signal the supervisor hands [`crate::serve`].
    pub async fn shutting_down(mut self) {
        let mut state = self.state();
        while state != State::ShuttingDown {
            state = self.changed().await;
        }
    }

    /// Waits for the next change; returns the new state, or ShuttingDown once
    /// the latch is dropped.
    pub async fn changed(&mut self) -> State {
        match self.rx.changed().await {
            Ok(()) => *self.rx.borrow_and_update(),
            Err(_) => State::ShuttingDown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_moves_only_forward_into_shutdown() {
        let (latch, r) = channel();
        assert_eq!(r.state(), State::Starting);
        assert!(latch.set(State::Ready));
        assert!(latch.set(State::Restarting));
        assert!(!latch.set(State::Starting), "never back to Starting");
        assert!(latch.set(State::Ready));
        assert!(latch.set(State::Unresponsive));
        assert!(latch.set(State::Ready), "an answer again: back to Ready");
        assert!(latch.set(State::Unresponsive));
        assert!(latch.set(State::Restarting), "killed for its silence");
        assert!(
            !latch.set(State::Unresponsive),
            "only a Ready engine goes silent"
        );
        assert!(latch.set(State::Ready));
        assert!(latch.set(State::ShuttingDown));
        assert!(!latch.set(State::Ready), "a late probe must not revive it");
        assert_eq!(r.state(), State::ShuttingDown);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_within_times_out_then_sees_ready() {
        let (latch, mut r) = channel();
        assert_eq!(
            r.ready_within(Duration::from_secs(1)).await,
            Err(State::Starting)
        );
        let mut r2 = r.clone();
        let waiter = tokio::spawn(async move { r2.ready_within(Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        latch.set(State::Ready);
        assert_eq!(waiter.await.unwrap(), Ok(State::Ready));
    }

    #[tokio::test(start_paused = true)]
    async fn shutting_down_completes_on_the_state_or_a_dropped_latch() {
        let (latch, r) = channel();
        let stop = tokio::spawn(r.clone().shutting_down());
        latch.set(State::Ready);
        latch.set(State::Restarting);
        tokio::task::yield_now().await;
        assert!(!stop.is_finished(), "only ShuttingDown stops");
        latch.set(State::ShuttingDown);
        stop.await.unwrap();
        r.clone().shutting_down().await; // already there: at once

        let (latch, r) = channel();
        let stop = tokio::spawn(r.shutting_down());
        drop(latch);
        stop.await.unwrap();
    }

    #[tokio::test]
    async fn dropped_latch_reads_as_shutting_down() {
        let (latch, mut r) = channel();
        drop(latch);
        assert_eq!(r.changed().await, State::ShuttingDown);
        assert_eq!(
            r.ready_within(Duration::from_secs(1)).await,
            Ok(State::ShuttingDown)
        );
    }
}
