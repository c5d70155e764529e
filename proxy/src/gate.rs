//! The readiness gate: where a request waits for the engine to answer, from
//! the first moment the listeners accept and across dockerd restarts.
//!
//! A client connection gets one hold budget per not-ready spell, shared by
//! its requests: a docker CLI that finds no engine sends a HEAD ping, a GET
//! ping and then its request on one connection, and holding each for the
//! whole limit would make a job wait three times as long to learn that the
//! engine is not coming (issue 9).
//!
//! At most [`Limits::max_held`] requests wait at once; more get a 503 at
//! once. A held request keeps its connection busy and its decided body (up
//! to 4 MiB) in memory, and a restart is when a job's own retries pile up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::readiness::{Readiness, State};
use crate::respond::Refusal;

/// When one connection's current hold began; empty once the engine was
/// seen Ready. Lock-free, as it is read on every request.
#[derive(Debug, Default)]
pub struct HoldBudget {
    /// Milliseconds after [`HoldBudget::epoch`] plus one; 0 means none.
    since_ms: AtomicU64,
}

impl HoldBudget {
    /// A fixed origin for the stored instants, shared by every connection.
    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// When this connection's hold began, starting it now if none runs.
    fn begin(&self, now: Instant) -> Instant {
        let ms = now.saturating_duration_since(Self::epoch()).as_millis() as u64 + 1;
        match self.since_ms.compare_exchange(0, ms, Relaxed, Relaxed) {
            Ok(_) => now,
            Err(earlier) => Self::epoch() + Duration::from_millis(earlier - 1),
        }
    }

    /// The engine answered: the next spell gets a whole budget again.
    fn end(&self) {
        if self.since_ms.load(Relaxed) != 0 {
            self.since_ms.store(0, Relaxed);
        }
    }
}

/// Lets a request through once the engine is Ready; holds it while it is
/// starting, restarting or not answering, for what is left of the connection's
/// `limits.hold`, unless `limits.max_held` requests wait already.
pub async fn pass(
    readiness: &Readiness,
    metrics: &Metrics,
    limits: &Limits,
    budget: &HoldBudget,
) -> Result<(), Refusal> {
    let last_error = || readiness.engine().last_error;
    match readiness.state() {
        State::Ready => {
            budget.end();
            return Ok(());
        }
        State::ShuttingDown => {
            return Err(Refusal::ShuttingDown {
                last_error: last_error(),
            })
        }
        State::Starting | State::Restarting | State::Unresponsive => {}
    }
    let since = budget.begin(Instant::now());
    let left = (since + limits.hold).saturating_duration_since(Instant::now());
    let _held = match left.is_zero() {
        true => None,
        false => Some(metrics.held(limits.max_held).ok_or(Refusal::HoldFull {
            state: readiness.state(),
            max: limits.max_held,
        })?),
    };
    match readiness.clone().ready_within(left).await {
        Ok(State::Ready) => {
            budget.end();
            Ok(())
        }
        Ok(_) => Err(Refusal::ShuttingDown {
            last_error: last_error(),
        }),
        Err(state) => Err(Refusal::NotReady {
            state,
            waited_s: since.elapsed().as_secs(),
            last_error: last_error(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness;

    fn thirty_seconds() -> Limits {
        Limits {
            hold: Duration::from_secs(30),
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_held_until_ready_then_passes() {
        let limits = thirty_seconds();
        let (latch, r) = readiness::channel();
        let metrics = Metrics::default();
        let budget = HoldBudget::default();
        let held = pass(&r, &metrics, &limits, &budget);
        tokio::pin!(held);
        assert!(
            futures_poll(&mut held).is_none(),
            "must wait while starting"
        );
        assert_eq!(metrics.held_now(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        latch.set(State::Ready);
        assert_eq!(held.await, Ok(()));
        assert_eq!(metrics.held_now(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_connection_waits_at_most_the_hold_in_all_and_gets_a_whole_one_after_ready() {
        let limits = thirty_seconds();
        let (latch, r) = readiness::channel();
        let metrics = Metrics::default();
        let budget = HoldBudget::default();
        let started = Instant::now();
        let first = pass(&r, &metrics, &limits, &budget).await;
        assert!(
            matches!(
                first,
                Err(Refusal::NotReady {
                    waited_s: 30,
                    state: State::Starting,
                    ..
                })
            ),
            "{first:?}"
        );
        assert_eq!(started.elapsed(), limits.hold);
        // The CLI's GET ping and its request, on the same connection: no
        // second and third wait of 30 s for an engine that is not coming.
        for _ in 0..2 {
            let again = pass(&r, &metrics, &limits, &budget).await;
            assert!(
                matches!(again, Err(Refusal::NotReady { waited_s: 30, .. })),
                "{again:?}"
            );
        }
        assert_eq!(started.elapsed(), limits.hold);
        // Another connection has its own budget.
        let other = HoldBudget::default();
        let before = Instant::now();
        assert!(pass(&r, &metrics, &limits, &other).await.is_err());
        assert_eq!(before.elapsed(), limits.hold);

        latch.set(State::Ready);
        assert_eq!(pass(&r, &metrics, &limits, &budget).await, Ok(()));
        latch.set(State::Restarting);
        let before = Instant::now();
        assert!(pass(&r, &metrics, &limits, &budget).await.is_err());
        assert_eq!(
            before.elapsed(),
            limits.hold,
            "a new spell gets the whole hold again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_hold_with_dockerds_last_error() {
        let limits = thirty_seconds();
        let (latch, r) = readiness::channel();
        let metrics = Metrics::default();
        let budget = HoldBudget::default();
        latch.engine(|e| e.last_error = Some("failed to start daemon: boom".into()));
        let held = pass(&r, &metrics, &limits, &budget);
        tokio::pin!(held);
        assert!(futures_poll(&mut held).is_none());
        latch.set(State::ShuttingDown);
        assert_eq!(
            held.await,
            Err(Refusal::ShuttingDown {
                last_error: Some("failed to start daemon: boom".into())
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_held_cap_a_request_gets_503_at_once_and_the_held_ones_pass() {
        let (latch, r) = readiness::channel();
        let metrics = Metrics::default();
        let limits = Limits {
            max_held: 2,
            ..thirty_seconds()
        };
        let budgets: Vec<HoldBudget> = (0..3).map(|_| HoldBudget::default()).collect();
        let mut held: Vec<_> = budgets[..2]
            .iter()
            .map(|b| Box::pin(pass(&r, &metrics, &limits, b)))
            .collect();
        for h in &mut held {
            assert!(futures_poll(h).is_none(), "the first two are held");
        }
        assert_eq!(metrics.held_now(), 2);
        let asked = Instant::now();
        let third = pass(&r, &metrics, &limits, &budgets[2]).await;
        assert_eq!(
            third,
            Err(Refusal::HoldFull {
                state: State::Starting,
                max: 2
            })
        );
        assert_eq!(asked.elapsed(), Duration::ZERO, "answered without waiting");
        latch.set(State::Ready);
        for h in held {
            assert_eq!(h.await, Ok(()));
        }
        // The places are free again for the next spell.
        latch.set(State::Restarting);
        let again = pass(&r, &metrics, &limits, &budgets[2]);
        tokio::pin!(again);
        assert!(
            futures_poll(&mut again).is_none(),
            "held again once places are free"
        );
    }

    /// Polls a future once, without a runtime's help.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        match std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
