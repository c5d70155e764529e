//! The liveness watchdog: once dockerd is Ready, pings it on its private
//! socket now and then, and tells the run loop when it has gone silent (a
//! stopped or deadlocked dockerd that has not exited), when it answers
//! again, and when it has been silent so long that it must be killed and
//! restarted (issue 13). Before this, nothing noticed a hung dockerd after
//! Ready: requests hung with it until the job's own timeout.
//!
//! Why these numbers. dockerd's `/_ping` takes no lock and touches no disk:
//! a live dockerd answers it in milliseconds even with every core busy
//! (a build compressing layers, a save writing a GiB). So one slow answer
//! means little, and the verdicts go by the time since the last answer, not
//! by a count of misses:
//! - a probe every [`PROBE_EVERY`], each given [`PROBE_TIMEOUT`], costs one
//!   connection on the private socket every few seconds;
//! - [`NOTICE_AFTER`] of silence (5 probes) marks the engine Unresponsive:
//!   `/readyz` says so and new requests are held as during a restart. A
//!   false notice costs held requests until the next answer, nothing more;
//! - a restart kills the job's containers, so it waits far longer: the
//!   operator's `DIND_HANG_TIMEOUT` (60 s by default, 0 = never), six times
//!   the notice bound, beyond any busy period a live dockerd has.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::system::System;

/// Time between one probe's end and the next one's start.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one probe waits for dockerd's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Silence after which the engine counts as Unresponsive. Noticed at most
/// `PROBE_EVERY + PROBE_TIMEOUT` later, as probes go.
pub const NOTICE_AFTER: Duration = Duration::from_secs(10);

/// What the run loop must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No answer for this long: mark the engine Unresponsive.
    Silent(Duration),
    /// It answers again after a Silent verdict: Ready again.
    Answers,
    /// No answer for the hang timeout (this long): kill it for a restart.
    Kill(Duration),
}

type Probe = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Watches one dockerd from its first Ready until it exits or is killed.
pub struct Watchdog {
    /// Silence after which dockerd is killed; None: never.
    hang_timeout: Option<Duration>,
    last_answer: Instant,
    /// A Silent verdict was given and no answer came since.
    silent: bool,
    next_probe: Instant,
    /// The probe in flight, kept across calls so that the run loop's
    /// `select!` dropping [`Watchdog::next`] loses nothing.
    probe: Option<Probe>,
}

impl Watchdog {
    /// Starts watching a dockerd that has just answered.
    pub fn new(hang_timeout: Option<Duration>) -> Watchdog {
        let now = Instant::now();
        Watchdog {
            hang_timeout,
            last_answer: now,
            silent: false,
            next_probe: now + PROBE_EVERY,
            probe: None,
        }
    }

    /// Probes on, and returns at the next verdict. Cancel-safe.
    pub async fn next(&mut self, sys: &impl System, socket: &Path) -> Verdict {
        loop {
            if self.probe.is_none() {
                sleep_until(self.next_probe).await;
                let ping = sys.ping(socket, PROBE_TIMEOUT);
                self.probe = Some(Box::pin(async move { ping.await.is_ok() }));
            }
            let answered = self.probe.as_mut().expect("set above").await;
            self.probe = None;
            let now = Instant::now();
            self.next_probe = now + PROBE_EVERY;
            if let Some(verdict) = self.judge(now, answered) {
                return verdict;
            }
        }
    }

    /// The verdict on one probe's outcome at `now`, if it changes anything.
    fn judge(&mut self, now: Instant, answered: bool) -> Option<Verdict> {
        if answered {
            self.last_answer = now;
            return std::mem::take(&mut self.silent).then_some(Verdict::Answers);
        }
        let silent_for = now - self.last_answer;
        if self.hang_timeout.is_some_and(|limit| silent_for >= limit) {
            return Some(Verdict::Kill(silent_for));
        }
        if !self.silent && silent_for >= NOTICE_AFTER {
            self.silent = true;
            return Some(Verdict::Silent(silent_for));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::fake::{self, Dockerd, Fake, Plan};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A fake with one running dockerd that falls silent `from` after its
    /// start, for `for_` (None: for good).
    fn silent_dockerd(from: Duration, for_: Option<Duration>) -> Fake {
        let (mut fake, _events) = Fake::new();
        fake.plan(Plan::Run(Dockerd {
            silent: Some((from, for_)),
            ..Dockerd::default()
        }));
        let _ = fake.spawn(&fake::prepared()).expect("the fake starts it");
        fake
    }

    /// Every verdict until `end`, stamped with the time since the start.
    async fn verdicts(fake: &Fake, hang: Option<Duration>, end: Duration) -> Vec<(u64, Verdict)> {
        let start = Instant::now();
        let mut dog = Watchdog::new(hang);
        let mut out = Vec::new();
        let socket = Path::new("/fake/docker.sock");
        while let Ok(v) = tokio::time::timeout_at(start + end, dog.next(fake, socket)).await {
            out.push((start.elapsed().as_secs(), v));
            if matches!(v, Verdict::Kill(_)) {
                break;
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn an_answering_dockerd_gets_no_verdict() {
        let fake = silent_dockerd(secs(3600), None);
        assert_eq!(verdicts(&fake, Some(secs(60)), secs(600)).await, []);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_inside_the_notice_bound_changes_nothing() {
        // Silent from 3 s to 8 s: the probe at 4 s times out at 7 s, 5 s
        // after the answer at 2 s; the one at 9 s is answered.
        let fake = silent_dockerd(secs(3), Some(secs(5)));
        assert_eq!(verdicts(&fake, Some(secs(60)), secs(120)).await, []);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_noticed_within_the_bound_and_an_answer_clears_it() {
        // Last answer at 2 s; silent from 3 s to 33 s.
        let fake = silent_dockerd(secs(3), Some(secs(30)));
        let got = verdicts(&fake, Some(secs(60)), secs(120)).await;
        // Probes at 4 s (out at 7 s), 9 s (out at 12 s: 10 s silent).
        assert_eq!(got[0], (12, Verdict::Silent(secs(10))));
        assert!(12 - 2 <= (NOTICE_AFTER + PROBE_EVERY + PROBE_TIMEOUT).as_secs());
        // Probes end unanswered every 5 s until 32 s; the next, at 34 s,
        // is answered.
        assert_eq!(got[1], (34, Verdict::Answers));
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dockerd_silent_for_the_hang_timeout_is_killed_once() {
        let fake = silent_dockerd(secs(3), None);
        let got = verdicts(&fake, Some(secs(30)), secs(600)).await;
        assert_eq!(
            got,
            [
                (12, Verdict::Silent(secs(10))),
                // Probes end at 17, 22, 27, 32 s: 30 s after the 2 s answer.
                (32, Verdict::Kill(secs(30))),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hang_timeout_of_none_never_kills() {
        let fake = silent_dockerd(secs(3), None);
        let got = verdicts(&fake, None, secs(3600)).await;
        assert_eq!(got, [(12, Verdict::Silent(secs(10)))]);
    }
}
