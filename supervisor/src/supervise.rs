//! The run loop: owns dockerd's process and the readiness latch, reaps,
//! forwards signals, restarts on a crash and stops inside the deadline.
//!
//! Everything it does to the machine goes through [`System`] and every
//! signal comes through [`Incoming`]; its time is tokio's clock. The tests
//! at the bottom run it against `system::fake` under paused time.

use std::time::Duration;

use nix::sys::signal::Signal;
use proxy::readiness::{Latch, State};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::cli::RestartPolicy;
use crate::config::Supervise;
use crate::dockerd::{self, Prepared, Running};
use crate::exit::{self, Ended};
use crate::reap::Exit;
use crate::signals::Event;
use crate::system::{Incoming, System};
use crate::watchdog::{Verdict, Watchdog};

/// A run that held Ready this long was healthy: its crash starts a new count.
const STABLE_AFTER: Duration = Duration::from_secs(60);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Of the shutdown budget, what is kept after the containers' own grace:
/// dockerd's clean-up of killed containers, then its own exit (containerd,
/// unmounts, the socket), on a loaded machine.
const CONTAINER_STOP_RESERVE: Duration = Duration::from_secs(4);
/// However long stopping the containers takes, dockerd is signalled this
/// long before the deadline: its own exit needs up to about a second.
const DOCKERD_STOP_RESERVE: Duration = Duration::from_secs(2);
/// A second stop signal this soon after the first is a duplicate delivery,
/// not a request to escalate.
const REPEAT_DEBOUNCE: Duration = Duration::from_millis(250);
/// How long a SIGKILLed dockerd may take to die before we exit anyway.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Bound on the wait for the proxy to answer held requests at the end.
const PROXY_DRAIN: Duration = Duration::from_millis(1500);
/// Bound on the wait for a crashed dockerd's last stderr lines, the reason
/// held clients are given; containerd may keep the pipe open.
const TAIL_DRAIN: Duration = Duration::from_millis(100);
/// Bound on the wait for descendants after dockerd is gone.
const LEFTOVER_GRACE: Duration = Duration::from_millis(500);

/// Why the supervisor is stopping, and by when it must be done.
struct Stopping {
    signal: Signal,
    since: Instant,
    deadline: Instant,
    /// SIGKILL already went out (deadline passed or a second signal came).
    killed: bool,
}

/// The one owner of dockerd's pid, the latch, and the restart count.
pub struct Supervisor<S> {
    /// Processes, signals, the reaper, /proc and dockerd's API.
    sys: S,
    policy: Supervise,
    prepared: Prepared,
    latch: Latch,
    started: Instant,
    /// The current dockerd, None between a crash and its restart.
    dockerd: Option<Running>,
    /// Fires once when the current dockerd first answers /_ping.
    ready: Option<oneshot::Receiver<dockerd::Pong>>,
    ready_since: Option<Instant>,
    /// Pings the current dockerd from its first Ready until it exits, is
    /// killed or a stop begins.
    watchdog: Option<Watchdog>,
    /// The current dockerd was killed by the watchdog, for this silence.
    killed_silent: Option<Duration>,
    failures: u32,
    restart_at: Option<Instant>,
    stopping: Option<Stopping>,
    /// Stopping inner containers within our budget before dockerd is
    /// signalled; dockerd's own shutdown would give each 10 s.
    pre_stop: Option<JoinHandle<()>>,
    /// The public proxy; its early end (a port it cannot bind) stops us.
    proxy: Option<JoinHandle<Result<(), proxy::ServeError>>>,
    /// A fatal error of our own (the proxy) ended the service: exit 1,
    /// whatever dockerd's status.
    failed: bool,
}

impl<S: System> Supervisor<S> {
    pub fn new(
        sys: S,
        policy: Supervise,
        prepared: Prepared,
        latch: Latch,
        started: Instant,
        proxy: Option<JoinHandle<Result<(), proxy::ServeError>>>,
    ) -> Self {
        Supervisor {
            sys,
            policy,
            prepared,
            latch,
            started,
            dockerd: None,
            ready: None,
            ready_since: None,
            watchdog: None,
            killed_silent: None,
            failures: 0,
            restart_at: None,
            stopping: None,
            pre_stop: None,
            proxy,
            failed: false,
        }
    }

    /// Runs until dockerd is gone for good; returns the process exit code.
    pub async fn run(mut self, mut signals: impl Incoming) -> i32 {
        self.launch();
        if self.gave_up() {
            return self.finish(Ended::CannotStart).await;
        }
        loop {
            let stop_deadline = self
                .stopping
                .as_ref()
                .filter(|s| !s.killed && self.dockerd.is_some())
                .map(|s| s.deadline);
            // After SIGKILL, a dockerd stuck in the kernel (D state) must not
            // keep us from exiting: give up waiting a moment later.
            let last_call = self
                .stopping
                .as_ref()
                .filter(|s| s.killed)
                .map(|s| s.deadline.max(Instant::now()) + KILL_GRACE);
            let pre_stop_cutoff = stop_deadline
                .filter(|_| self.pre_stop.is_some())
                .map(|d| d.checked_sub(DOCKERD_STOP_RESERVE).unwrap_or(d));
            tokio::select! {
                // Signals first: a pong and dockerd's death in the same
                // wake-up must not flash Ready for a dead dockerd.
                biased;
                ev = signals.recv() => {
                    if let Some(ended) = self.on_signal(ev).await {
                        return self.finish(ended).await;
                    }
                }
                pong = async { self.ready.as_mut().expect("guarded").await }, if self.ready.is_some() => {
                    self.ready = None;
                    if let Ok(pong) = pong {
                        self.on_ready(pong);
                    }
                }
                verdict = async { self.watchdog.as_mut().expect("guarded").next(&self.sys, &self.prepared.socket).await }, if self.watchdog.is_some() => {
                    self.on_verdict(verdict);
                }
                _ = sleep_until(self.restart_at.unwrap_or_else(Instant::now)), if self.restart_at.is_some() => {
                    self.restart_at = None;
                    self.clear_leftovers(Signal::SIGKILL);
                    self.launch();
                    if self.gave_up() {
                        return self.finish(Ended::CannotRestart).await;
                    }
                }
                ended = async { self.proxy.as_mut().expect("guarded").await }, if self.proxy.is_some() => {
                    self.proxy = None;
                    if let Some(ended) = self.on_proxy_end(ended) {
                        return self.finish(ended).await;
                    }
                }
                _ = async { self.pre_stop.as_mut().expect("guarded").await }, if self.pre_stop.is_some() => {
                    self.pre_stop = None;
                    self.signal_dockerd_to_stop();
                }
                _ = sleep_until(pre_stop_cutoff.unwrap_or_else(Instant::now)), if pre_stop_cutoff.is_some() => {
                    tracing::warn!("containers are still stopping; stopping dockerd now to keep the deadline");
                    if let Some(p) = self.pre_stop.take() {
                        p.abort();
                    }
                    self.signal_dockerd_to_stop();
                }
                _ = sleep_until(stop_deadline.unwrap_or_else(Instant::now)), if stop_deadline.is_some() => {
                    self.kill_everything("dockerd did not stop before the shutdown deadline");
                }
                _ = sleep_until(last_call.unwrap_or_else(Instant::now)), if last_call.is_some() => {
                    tracing::error!("dockerd survives SIGKILL; exiting without it");
                    return self.finish(Ended::Unkillable).await;
                }
            }
        }
    }

    /// The proxy ended before us: only an error (a port it cannot bind)
    /// matters, and it stops the service unless a stop is under way.
    fn on_proxy_end(
        &mut self,
        ended: Result<Result<(), proxy::ServeError>, tokio::task::JoinError>,
    ) -> Option<Ended> {
        let error = match ended {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("proxy task failed: {e}"),
        };
        tracing::error!("{error}");
        self.failed = true;
        // During a stop this is no reason to escalate.
        if self.stopping.is_none() {
            self.on_stop(Signal::SIGTERM)
        } else {
            None
        }
    }

    /// dockerd is not running and no restart is coming.
    fn gave_up(&self) -> bool {
        self.dockerd.is_none() && self.restart_at.is_none() && self.stopping.is_none()
    }

    fn launch(&mut self) {
        match self.sys.spawn(&self.prepared) {
            Ok((running, ready)) => {
                tracing::info!(pid = %running.pid, socket = %self.prepared.socket.display(), "dockerd started");
                let pid = running.pid.as_raw() as u32;
                self.latch.engine(|e| e.pid = Some(pid));
                self.dockerd = Some(running);
                self.ready = Some(ready);
            }
            Err(e) => {
                tracing::error!(error = %e, program = %self.prepared.program.display(), "cannot start dockerd");
                let why = format!("cannot start {}: {e}", self.prepared.program.display());
                self.latch.engine(|engine| engine.last_error = Some(why));
                if self.policy.restart != RestartPolicy::Never {
                    self.schedule_restart(Exit::Code(exit::NOT_FOUND.into()));
                }
            }
        }
    }

    fn on_ready(&mut self, pong: dockerd::Pong) {
        self.ready_since = Some(Instant::now());
        self.watchdog = Some(Watchdog::new(self.policy.hang_timeout));
        let since_start = self.started.elapsed().as_secs_f64();
        self.latch.engine(|e| {
            e.version = pong.version.clone();
            e.api_version = pong.api_version.clone();
            e.seconds_to_ready.get_or_insert(since_start);
        });
        // Logged before the latch moves, so "engine ready" precedes the
        // proxy's "listening" in the log.
        if self.latch.state() != State::Ready {
            tracing::info!(
                seconds_to_ready = self.started.elapsed().as_secs_f64(),
                api_version = pong.api_version.as_deref().unwrap_or("unknown"),
                version = pong.version.as_deref().unwrap_or("unknown"),
                pid = self.dockerd.as_ref().map_or(0, |d| d.pid.as_raw()),
                "engine ready"
            );
        }
        self.latch.set(State::Ready);
    }

    /// Acts on the watchdog: a silent dockerd holds requests; one silent
    /// for the hang timeout is killed, and its exit takes the restart path.
    fn on_verdict(&mut self, verdict: Verdict) {
        let pid = self.dockerd.as_ref().map_or(0, |d| d.pid.as_raw());
        match verdict {
            Verdict::Silent(silent) => {
                let why = format!("dockerd has not answered /_ping for {}s", silent.as_secs());
                tracing::warn!(pid, silent_s = silent.as_secs(), hang_timeout = ?self.policy.hang_timeout, "dockerd does not answer; requests are held until it does");
                self.latch.engine(|e| e.unresponsive = Some(why));
                self.latch.set(State::Unresponsive);
            }
            Verdict::Answers => {
                tracing::info!(pid, "dockerd answers again");
                self.latch.engine(|e| e.unresponsive = None);
                self.latch.set(State::Ready);
            }
            Verdict::Kill(silent) => {
                tracing::error!(
                    pid,
                    silent_s = silent.as_secs(),
                    "dockerd has not answered for DIND_HANG_TIMEOUT; killing it to restart it"
                );
                self.latch.set(State::Unresponsive);
                self.watchdog = None;
                self.killed_silent = Some(silent);
                if let Some(d) = &self.dockerd {
                    self.sys.signal(d.pid, Signal::SIGKILL);
                }
            }
        }
    }

    /// Returns Some(how it ended) when the supervisor is done.
    async fn on_signal(&mut self, ev: Event) -> Option<Ended> {
        match ev {
            Event::Child => {
                let dockerd_pid = self.dockerd.as_ref().map(|d| d.pid);
                for (pid, exit) in self.sys.reap() {
                    if Some(pid) == dockerd_pid {
                        if let Some(ended) = self.on_dockerd_exit(exit).await {
                            return Some(ended);
                        }
                    } else {
                        tracing::debug!(%pid, %exit, "reaped orphan");
                    }
                }
                None
            }
            Event::Forward(sig) => {
                if let Some(d) = &self.dockerd {
                    tracing::info!(signal = %sig, pid = %d.pid, "forwarding signal to dockerd");
                    self.sys.signal(d.pid, sig);
                }
                None
            }
            Event::Stop(sig) => self.on_stop(sig),
        }
    }

    fn on_stop(&mut self, sig: Signal) -> Option<Ended> {
        if let Some(stopping) = &self.stopping {
            if stopping.since.elapsed() < REPEAT_DEBOUNCE {
                // The same stop delivered twice (GNU timeout signals the
                // process and then its group), not a user insisting.
                tracing::debug!(signal = %sig, "repeated stop signal ignored");
                return None;
            }
            if !stopping.killed {
                tracing::warn!(signal = %sig, "second stop signal; killing dockerd now");
                self.kill_everything("second stop signal");
            }
            return None;
        }
        let now = Instant::now();
        self.latch.set(State::ShuttingDown);
        self.restart_at = None;
        // The stop has its own deadline; silence no longer matters.
        self.watchdog = None;
        self.stopping = Some(Stopping {
            signal: sig,
            since: now,
            deadline: now + self.policy.shutdown_timeout,
            killed: false,
        });
        if self.dockerd.is_none() {
            // Nothing runs (between restarts): the stop is already complete.
            return Some(Ended::Stopped {
                signal: sig,
                killed: false,
                exit: None,
            });
        }
        // SIGQUIT asks dockerd for a stack dump on the way out: no pre-stop.
        if sig != Signal::SIGQUIT && self.ready_since.is_some() {
            let grace = self
                .policy
                .shutdown_timeout
                .saturating_sub(CONTAINER_STOP_RESERVE)
                .max(Duration::from_secs(1));
            tracing::info!(?grace, "stopping containers before dockerd");
            let stopped = self.sys.stop_containers(&self.prepared.socket, grace);
            self.pre_stop = Some(tokio::spawn(async move {
                match stopped.await {
                    Ok(n) => tracing::info!(stopped = n, "containers stopped"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot stop containers first; dockerd will")
                    }
                }
            }));
        } else {
            self.signal_dockerd_to_stop();
        }
        None
    }

    fn signal_dockerd_to_stop(&mut self) {
        if let (Some(d), Some(s)) = (&self.dockerd, &self.stopping) {
            let left = s.deadline.saturating_duration_since(Instant::now());
            tracing::info!(signal = %s.signal, pid = %d.pid, time_left_ms = left.as_millis() as u64, "stopping dockerd");
            self.sys.signal(d.pid, s.signal);
        }
    }

    /// Decides what a dockerd exit means. Some(how) ends the supervisor.
    async fn on_dockerd_exit(&mut self, exit: Exit) -> Option<Ended> {
        let mut running = self.dockerd.take().expect("dockerd was running");
        self.ready = None;
        self.watchdog = None;
        let killed_silent = self.killed_silent.take();
        if let Some(stopping) = &self.stopping {
            tracing::info!(%exit, "dockerd stopped");
            return Some(Ended::Stopped {
                signal: stopping.signal,
                killed: stopping.killed,
                exit: Some(exit),
            });
        }
        running.stderr_drained(TAIL_DRAIN).await;
        let tail = running.stderr_tail();
        let why = match (killed_silent, running.last_error()) {
            (Some(silent), _) => format!(
                "dockerd did not answer for {}s and was killed",
                silent.as_secs()
            ),
            (None, Some(line)) => format!("{line} (dockerd {exit})"),
            (None, None) => format!("dockerd {exit}"),
        };
        self.latch.engine(|e| {
            e.last_error = Some(why);
            e.unresponsive = None;
        });
        tracing::error!(
            %exit,
            pid = %running.pid,
            ran_s = running.started.elapsed().as_secs(),
            last_lines = ?tail,
            "dockerd exited unexpectedly"
        );
        if self
            .ready_since
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER)
        {
            self.failures = 0;
        }
        self.ready_since = None;
        let restart = match self.policy.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        if !restart {
            tracing::info!(policy = ?self.policy.restart, "not restarting dockerd");
            return Some(Ended::Exited {
                exit,
                gave_up: false,
            });
        }
        self.schedule_restart(exit);
        if self.restart_at.is_some() {
            self.clear_leftovers(Signal::SIGTERM);
        }
        self.restart_at.is_none().then_some(Ended::Exited {
            exit,
            gave_up: true,
        })
    }

    fn schedule_restart(&mut self, exit: Exit) {
        self.failures += 1;
        if self.failures > self.policy.restart_max {
            tracing::error!(
                restarts = self.policy.restart_max,
                last = %exit,
                "dockerd keeps failing; giving up (raise DIND_RESTART_MAX or fix the cause above)"
            );
            return;
        }
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << (self.failures - 1).min(5))
            .min(BACKOFF_MAX);
        self.latch.set(State::Restarting);
        self.latch.engine(|e| {
            e.restarts += 1;
            e.pid = None;
        });
        dockerd::remove_stale_pid_files(&self.prepared.stale_pid_dirs);
        tracing::warn!(
            attempt = self.failures,
            of = self.policy.restart_max,
            ?backoff,
            "restarting dockerd"
        );
        self.restart_at = Some(Instant::now() + backoff);
    }

    /// Stops what a dead dockerd left running (containerd shims and the
    /// containers under them): SIGTERM when it dies, SIGKILL to what is
    /// left when the back-off ends. Without live-restore the next dockerd
    /// would stop each of them itself, waiting up to the container's stop
    /// timeout (10 s) for each before it answers: the chaos loop
    /// (reliability/chaos.sh) measured 14 s back to Ready instead of 2 s
    /// with one container that ignores SIGTERM. The back-off, at least 1 s,
    /// is their grace. With live-restore they are kept for it to adopt.
    fn clear_leftovers(&mut self, sig: Signal) {
        if self.prepared.live_restore {
            return;
        }
        let left = self.sys.descendants();
        if left.is_empty() {
            return;
        }
        tracing::info!(processes = left.len(), signal = %sig, "stopping what dockerd left before its restart");
        for pid in left {
            self.sys.signal(pid, sig);
        }
    }

    fn kill_everything(&mut self, why: &str) {
        if let Some(s) = &mut self.stopping {
            s.killed = true;
        }
        if let Some(pre_stop) = self.pre_stop.take() {
            pre_stop.abort();
        }
        if let Some(d) = &self.dockerd {
            tracing::warn!(reason = why, pid = %d.pid, "killing dockerd and everything it left");
            self.sys.signal(d.pid, Signal::SIGKILL);
        }
        self.sys.kill_descendants();
    }

    /// Kills and reaps whatever is left, then reports how long the stop took.
    async fn finish(mut self, ended: Ended) -> i32 {
        let code = exit::supervised(ended, self.failed);
        self.latch.set(State::ShuttingDown);
        // The proxy closes its doors and answers what it holds (bounded on
        // its side); only then may the process end.
        if let Some(proxy) = self.proxy.take() {
            let _ = tokio::time::timeout(PROXY_DRAIN, proxy).await;
        }
        let left = self.sys.kill_descendants();
        let until = Instant::now() + LEFTOVER_GRACE;
        loop {
            self.sys.reap();
            if self.sys.descendants().is_empty() || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match &self.stopping {
            Some(s) => tracing::info!(
                shutdown_ms = s.since.elapsed().as_millis() as u64,
                leftovers_killed = left,
                exit_code = code,
                "shutdown complete"
            ),
            None => tracing::info!(
                leftovers_killed = left,
                exit_code = code,
                "supervisor exiting"
            ),
        }
        code
    }
}

#[cfg(test)]
mod tests {
    //! The loop against `system::fake` under paused time: every instant
    //! below is exact, measured from the fake's creation (the test's start).

    use std::future::Future;
    use std::path::PathBuf;

    use nix::unistd::Pid;
    use proxy::readiness::Readiness;
    use tokio::time::sleep;

    use super::*;
    use crate::system::fake::{self, Dockerd, Events, Fake, Plan, FIRST_PID};

    use Signal::{SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGSEGV, SIGTERM};

    const DOCKERD: Pid = Pid::from_raw(FIRST_PID);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy(restart: RestartPolicy, restart_max: u32) -> Supervise {
        Supervise {
            shutdown_timeout: secs(10),
            restart,
            restart_max,
            hang_timeout: Some(secs(60)),
        }
    }

    /// The default restart policy: on failure, 5 in a row.
    fn on_failure() -> Supervise {
        policy(RestartPolicy::OnFailure, 5)
    }

    /// A dockerd that stops cleanly 1 s after SIGTERM, as a real one does.
    fn obedient() -> Dockerd {
        Dockerd {
            on_signal: vec![(SIGTERM, secs(1), Exit::Code(0))],
            ..Dockerd::default()
        }
    }

    fn crashes(after: Duration, exit: Exit) -> Dockerd {
        Dockerd {
            exits_after: Some((after, exit)),
            ..Dockerd::default()
        }
    }

    /// What a run ended with.
    struct Outcome {
        code: i32,
        /// When `run` returned, since the start.
        at: Duration,
        readiness: Readiness,
    }

    /// Runs the supervisor on `fake` beside `script`, which plays the
    /// outside world and may watch the latch; fails if the loop is still
    /// running after an hour.
    async fn supervise<F: Future<Output = ()>>(
        fake: &Fake,
        events: Events,
        policy: Supervise,
        proxy: Option<JoinHandle<Result<(), proxy::ServeError>>>,
        script: impl FnOnce(Readiness) -> F,
    ) -> Outcome {
        supervise_full(fake, events, policy, proxy, false, script).await
    }

    /// [`supervise`] with no proxy and dockerd's `live-restore` as given.
    async fn supervise_with<F: Future<Output = ()>>(
        fake: &Fake,
        events: Events,
        policy: Supervise,
        live_restore: bool,
        script: impl FnOnce(Readiness) -> F,
    ) -> Outcome {
        supervise_full(fake, events, policy, None, live_restore, script).await
    }

    async fn supervise_full<F: Future<Output = ()>>(
        fake: &Fake,
        events: Events,
        policy: Supervise,
        proxy: Option<JoinHandle<Result<(), proxy::ServeError>>>,
        live_restore: bool,
        script: impl FnOnce(Readiness) -> F,
    ) -> Outcome {
        let started = Instant::now();
        let (latch, readiness) = proxy::readiness::channel();
        let prepared = Prepared {
            live_restore,
            ..fake::prepared()
        };
        let script = script(readiness.clone());
        let supervisor = Supervisor::new(fake.clone(), policy, prepared, latch, started, proxy);
        let run = async {
            let code = supervisor.run(events).await;
            (code, started.elapsed())
        };
        let ((code, at), ()) =
            tokio::time::timeout(secs(3600), async { tokio::join!(run, script) })
                .await
                .expect("the supervisor ends");
        Outcome {
            code,
            at,
            readiness,
        }
    }

    /// A script: one stop signal at `at`.
    fn stop_at<'a>(
        fake: &'a Fake,
        at: Duration,
        sig: Signal,
    ) -> impl FnOnce(Readiness) -> BoxScript<'a> + 'a {
        move |_| {
            Box::pin(async move {
                sleep(at).await;
                fake.deliver(Event::Stop(sig));
            })
        }
    }

    /// A script: SIGTERM at 5 s, then `second` `gap` later.
    fn two_stops<'a>(
        fake: &'a Fake,
        gap: Duration,
        second: Signal,
    ) -> impl FnOnce(Readiness) -> BoxScript<'a> + 'a {
        move |_| {
            Box::pin(async move {
                sleep(secs(5)).await;
                fake.deliver(Event::Stop(SIGTERM));
                sleep(gap).await;
                fake.deliver(Event::Stop(second));
            })
        }
    }

    /// Runs with nobody outside: no signal, no proxy.
    async fn unattended(fake: &Fake, events: Events, policy: Supervise) -> Outcome {
        supervise(fake, events, policy, None, idle).await
    }

    /// Runs with the default policy and one SIGTERM at 5 s.
    async fn sigterm_at_5s(fake: &Fake, events: Events) -> Outcome {
        let script = stop_at(fake, secs(5), SIGTERM);
        supervise(fake, events, on_failure(), None, script).await
    }

    type BoxScript<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

    /// A script that does nothing.
    fn idle(_: Readiness) -> BoxScript<'static> {
        Box::pin(async {})
    }

    fn start_times(fake: &Fake) -> Vec<Duration> {
        fake.starts().into_iter().map(|(at, _)| at).collect()
    }

    /// dockerd crashes at 5 s and leaves a shim (pid 7) that ignores
    /// SIGTERM; the signals pid 7 got, with `live_restore` as given.
    async fn leftovers_of_a_crash(live_restore: bool) -> Vec<(Duration, Signal)> {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(crashes(secs(5), Exit::Signal(SIGKILL))))
            .otherwise(Plan::Run(Dockerd::default()));
        fake.orphan(7);
        let script = stop_at(&fake, secs(20), SIGQUIT);
        supervise_with(&fake, events, on_failure(), live_restore, script).await;
        fake.signals()
            .into_iter()
            .filter(|(_, pid, _)| pid.as_raw() == 7)
            .map(|(at, _, sig)| (at, sig))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_crashed_dockerd_left_is_stopped_before_it_restarts() {
        let got = leftovers_of_a_crash(false).await;
        // SIGTERM at the crash, SIGKILL when the 1 s back-off ends, just
        // before the restart; the final stop's kill finds nothing.
        assert_eq!(got[..2], [(secs(5), SIGTERM), (secs(6), SIGKILL)]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_live_restore_what_dockerd_left_is_kept_for_the_next_one() {
        let got = leftovers_of_a_crash(true).await;
        assert!(
            got.iter().all(|(at, _)| *at >= secs(20)),
            "signalled before the stop: {got:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_back_off_from_1s_doubling_to_30s() {
        let (fake, events) = Fake::new();
        fake.otherwise(Plan::Run(crashes(Duration::ZERO, Exit::Code(3))));
        // Between a crash and its restart the gate holds requests.
        let between = |readiness: Readiness| async move {
            sleep(ms(500)).await;
            assert_eq!(readiness.state(), State::Restarting);
            assert_eq!(readiness.engine_pid(), None);
        };
        let policy = policy(RestartPolicy::OnFailure, 7);
        let out = supervise(&fake, events, policy, None, between).await;
        // Backoffs 1, 2, 4, 8, 16, 30, 30 s after each crash.
        let expected: Vec<Duration> = [0, 1, 3, 7, 15, 31, 61, 91].map(secs).into();
        assert_eq!(start_times(&fake), expected);
        assert_eq!(out.readiness.engine().restarts, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_restart_max_with_the_last_status() {
        let (fake, events) = Fake::new();
        fake.otherwise(Plan::Run(crashes(secs(5), Exit::Code(3))));
        let out = unattended(&fake, events, policy(RestartPolicy::OnFailure, 2)).await;
        assert_eq!(start_times(&fake), [0, 6, 13].map(secs));
        assert_eq!((out.code, out.at), (3, secs(18)));
        assert_eq!(out.readiness.state(), State::ShuttingDown);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_exit_we_would_restart_ends_in_1_when_restarts_run_out() {
        let (fake, events) = Fake::new();
        fake.otherwise(Plan::Run(crashes(secs(5), Exit::Code(0))));
        let out = unattended(&fake, events, policy(RestartPolicy::Always, 1)).await;
        assert_eq!(start_times(&fake), [0, 6].map(secs));
        assert_eq!(out.code, 1);
    }

    /// One crash, a restart that answers at once, then a second crash
    /// `ready_for` after it answered. restart_max is 1.
    async fn second_crash_after_ready_for(ready_for: Duration) -> (Fake, Outcome) {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(crashes(Duration::ZERO, Exit::Code(1))))
            .plan(Plan::Run(Dockerd {
                ready_after: Some(secs(1)),
                exits_after: Some((secs(1) + ready_for, Exit::Code(1))),
                ..obedient()
            }))
            .otherwise(Plan::Run(obedient()));
        let out = supervise(
            &fake,
            events,
            policy(RestartPolicy::OnFailure, 1),
            None,
            stop_at(&fake, secs(100), SIGTERM),
        )
        .await;
        (fake, out)
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_ready_for_60s_resets_the_restart_count() {
        let (fake, out) = second_crash_after_ready_for(secs(60)).await;
        // Ready at 2 s, crashed at 62 s: a fresh count, so a restart after
        // the first backoff (1 s), not a give-up.
        assert_eq!(start_times(&fake), [0, 1, 63].map(secs));
        assert_eq!(out.code, 0);
        assert_eq!(out.readiness.engine().restarts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_ready_for_less_than_60s_counts_toward_restart_max() {
        let (fake, out) = second_crash_after_ready_for(secs(60) - ms(1)).await;
        assert_eq!(start_times(&fake), [0, 1].map(secs));
        assert_eq!(out.code, 1, "dockerd's own status after the give-up");
        assert_eq!(out.at, secs(62) - ms(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_stop_signal_within_250ms_is_ignored() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(obedient()));
        let script = two_stops(&fake, ms(249), SIGTERM);
        let out = supervise(&fake, events, on_failure(), None, script).await;
        assert_eq!(fake.signals(), [(secs(5), DOCKERD, SIGTERM)]);
        assert_eq!((out.code, out.at), (0, secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_stop_signal_after_250ms_kills_everything_at_once() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(Dockerd::default()));
        fake.orphan(500);
        let script = two_stops(&fake, ms(250), SIGINT);
        let out = supervise(&fake, events, on_failure(), None, script).await;
        let killed_at = secs(5) + ms(250);
        assert_eq!(
            fake.signals(),
            [
                (secs(5), DOCKERD, SIGTERM),
                (killed_at, DOCKERD, SIGKILL),
                // Then every descendant, dockerd included again.
                (killed_at, DOCKERD, SIGKILL),
                (killed_at, Pid::from_raw(500), SIGKILL),
            ]
        );
        assert_eq!((out.code, out.at), (137, killed_at));
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_splits_the_deadline_between_containers_dockerd_and_kill() {
        let (fake, events) = Fake::new();
        // Answers at 1 s; stopping its containers never ends; it ignores
        // SIGTERM.
        fake.plan(Plan::Run(Dockerd {
            ready_after: Some(secs(1)),
            ..Dockerd::default()
        }))
        .containers_take(None);
        let f = &fake;
        let script = move |readiness: Readiness| async move {
            sleep(secs(5) - ms(1)).await;
            assert_eq!(readiness.state(), State::Ready);
            sleep(ms(1)).await;
            f.deliver(Event::Stop(SIGTERM));
            sleep(ms(1)).await;
            assert_eq!(readiness.state(), State::ShuttingDown);
        };
        let out = supervise(&fake, events, on_failure(), None, script).await;
        // Deadline 15 s: the containers get until 11 s (deadline - 4 s),
        // dockerd its signal at 13 s (deadline - 2 s), SIGKILL at 15 s.
        assert_eq!(fake.container_stops(), [(secs(5), secs(6))]);
        let sent: Vec<_> = fake.signals().into_iter().take(2).collect();
        assert_eq!(
            sent,
            [(secs(13), DOCKERD, SIGTERM), (secs(15), DOCKERD, SIGKILL)]
        );
        assert_eq!((out.code, out.at), (137, secs(15)));
    }

    #[tokio::test(start_paused = true)]
    async fn dockerd_is_signalled_once_its_containers_are_stopped_and_a_clean_stop_is_0() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(Dockerd {
            ready_after: Some(secs(1)),
            // Dies of the signal, as Go programs without a handler do.
            on_signal: vec![(SIGTERM, secs(1), Exit::Signal(SIGTERM))],
            ..Dockerd::default()
        }))
        .containers_take(Some(secs(3)));
        let out = sigterm_at_5s(&fake, events).await;
        assert_eq!(fake.container_stops(), [(secs(5), secs(6))]);
        assert_eq!(fake.signals(), [(secs(8), DOCKERD, SIGTERM)]);
        assert_eq!((out.code, out.at), (0, secs(9)));
    }

    #[tokio::test(start_paused = true)]
    async fn dockerd_that_outlives_sigkill_is_left_behind_with_137() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(Dockerd {
            survives_kill: true,
            ..Dockerd::default()
        }));
        let out = sigterm_at_5s(&fake, events).await;
        let to_dockerd: Vec<_> = fake
            .signals()
            .into_iter()
            .filter(|&(_, pid, _)| pid == DOCKERD)
            .collect();
        // Not ready, so no containers to stop first: SIGTERM at once,
        // SIGKILL at the deadline (15 s), given up 2 s later, and what is
        // left is killed once more for 500 ms on the way out.
        assert_eq!(
            to_dockerd,
            [
                (secs(5), DOCKERD, SIGTERM),
                (secs(15), DOCKERD, SIGKILL),
                (secs(15), DOCKERD, SIGKILL),
                (secs(17), DOCKERD, SIGKILL),
            ]
        );
        assert!(fake.container_stops().is_empty());
        assert_eq!((out.code, out.at), (137, secs(17) + ms(500)));
    }

    #[tokio::test(start_paused = true)]
    async fn dockerd_that_cannot_start_exits_127() {
        for (restart, restart_max) in [(RestartPolicy::Never, 5), (RestartPolicy::OnFailure, 0)] {
            let (fake, events) = Fake::new();
            fake.otherwise(Plan::Fail);
            let out = unattended(&fake, events, policy(restart, restart_max)).await;
            assert_eq!(fake.starts(), [(Duration::ZERO, None)], "{restart:?}");
            assert_eq!(out.code, 127, "{restart:?}");
            assert!(out.readiness.engine().last_error.is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_that_cannot_start_dockerd_ends_in_1_when_restarts_run_out() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(crashes(secs(5), Exit::Code(2))))
            .otherwise(Plan::Fail);
        let out = unattended(&fake, events, policy(RestartPolicy::OnFailure, 2)).await;
        // Crash at 5 s; failed starts at 6 s and 8 s (backoff 1 s, 2 s).
        assert_eq!(
            fake.starts(),
            [
                (Duration::ZERO, Some(DOCKERD)),
                (secs(6), None),
                (secs(8), None)
            ]
        );
        assert_eq!((out.code, out.at), (1, secs(8)));
    }

    #[tokio::test(start_paused = true)]
    async fn dockerd_dying_of_signal_n_exits_128_plus_n() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(crashes(secs(5), Exit::Signal(SIGSEGV))));
        let out = unattended(&fake, events, policy(RestartPolicy::Never, 5)).await;
        assert_eq!((out.code, out.at), (128 + 11, secs(5)));
        assert!(fake.signals().is_empty(), "nothing left to kill");
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_not_ours_during_a_stop_is_reported_as_128_plus_n() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(Dockerd {
            on_signal: vec![(SIGTERM, secs(1), Exit::Signal(Signal::SIGABRT))],
            ..Dockerd::default()
        }));
        let out = sigterm_at_5s(&fake, events).await;
        assert_eq!((out.code, out.at), (128 + 6, secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_proxy_that_cannot_serve_stops_dockerd_and_exits_1() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(obedient()));
        let proxy = tokio::spawn(async {
            sleep(secs(3)).await;
            Err(proxy::ServeError::InUse {
                path: PathBuf::from("/run/docker.sock"),
            })
        });
        let out = supervise(&fake, events, on_failure(), Some(proxy), idle).await;
        // dockerd stopped cleanly (0), but the service failed.
        assert_eq!(fake.signals(), [(secs(3), DOCKERD, SIGTERM)]);
        assert_eq!((out.code, out.at), (1, secs(4)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_between_restarts_ends_at_once() {
        for (sig, code) in [(SIGTERM, 0), (SIGQUIT, 128 + 3)] {
            let (fake, events) = Fake::new();
            fake.plan(Plan::Run(crashes(secs(1), Exit::Code(1))));
            let out = supervise(
                &fake,
                events,
                on_failure(),
                None,
                stop_at(&fake, ms(1500), sig),
            )
            .await;
            assert_eq!(
                start_times(&fake),
                [Duration::ZERO],
                "no restart after {sig}"
            );
            assert_eq!((out.code, out.at), (code, ms(1500)), "{sig}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_dockerd_is_held_then_killed_at_the_hang_timeout_and_restarted() {
        let (fake, events) = Fake::new();
        // Answers at 1 s, falls silent at 4 s (SIGSTOP) for good.
        fake.plan(Plan::Run(Dockerd {
            ready_after: Some(secs(1)),
            silent: Some((secs(4), None)),
            ..obedient()
        }))
        .otherwise(Plan::Run(Dockerd {
            ready_after: Some(secs(1)),
            ..obedient()
        }));
        let f = &fake;
        let script = move |readiness: Readiness| async move {
            // Last answer at 3 s (the watchdog's probe); 10 s later the
            // probe that ends at 13 s says so.
            sleep(secs(13) - ms(1)).await;
            assert_eq!(readiness.state(), State::Ready);
            sleep(ms(2)).await;
            assert_eq!(readiness.state(), State::Unresponsive);
            let why = readiness.engine().unresponsive.expect("a reason");
            assert!(why.contains("10s"), "{why}");
            sleep(secs(53)).await;
            // Killed at 63 s (60 s of silence), restarted 1 s later,
            // answering 1 s after that.
            assert_eq!(readiness.state(), State::Ready);
            assert_eq!(readiness.engine().unresponsive, None);
            f.deliver(Event::Stop(SIGTERM));
        };
        let out = supervise(&fake, events, on_failure(), None, script).await;
        assert_eq!(fake.signals()[0], (secs(63), DOCKERD, SIGKILL));
        assert_eq!(start_times(&fake), [0, 64].map(secs));
        assert_eq!(out.readiness.engine().restarts, 1);
        let why = out.readiness.engine().last_error.expect("a reason");
        assert!(why.contains("did not answer for 60s"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn other_signals_go_to_dockerd_and_orphans_are_reaped_quietly() {
        let (fake, events) = Fake::new();
        fake.plan(Plan::Run(obedient()));
        fake.orphan(500);
        let f = &fake;
        let script = move |readiness: Readiness| async move {
            sleep(secs(2)).await;
            f.deliver(Event::Forward(SIGHUP));
            f.end(500, Exit::Code(0));
            sleep(secs(1)).await;
            assert_eq!(readiness.engine_pid(), Some(FIRST_PID as u32));
            f.deliver(Event::Stop(SIGTERM));
        };
        let out = supervise(&fake, events, on_failure(), None, script).await;
        assert_eq!(
            fake.signals(),
            [(secs(2), DOCKERD, SIGHUP), (secs(3), DOCKERD, SIGTERM)]
        );
        assert_eq!((out.code, out.at), (0, secs(4)));
    }
}
