//! The run loop: owns dockerd's process and the readiness latch, reaps,
//! forwards signals, restarts on a crash and stops inside the deadline.
//!
//! Everything it does to the machine goes through [`System`] and every
//! signal comes through [`Incoming`]; its time is tokio's clock.

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
                    if let Some(ended) = self.on_signal(ev) {
                        return self.finish(ended).await;
                    }
                }
                pong = async { self.ready.as_mut().expect("guarded").await }, if self.ready.is_some() => {
                    self.ready = None;
                    if let Ok(pong) = pong {
                        self.on_ready(pong);
                    }
                }
                _ = sleep_until(self.restart_at.unwrap_or_else(Instant::now)), if self.restart_at.is_some() => {
                    self.restart_at = None;
                    self.launch();
                    if self.gave_up() {
                        return self.finish(Ended::CannotRestart).await;
                    }
                }
                ended = async { self.proxy.as_mut().expect("guarded").await }, if self.proxy.is_some() => {
                    self.proxy = None;
                    let error = match ended {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(format!("proxy task failed: {e}")),
                    };
                    if let Some(error) = error {
                        tracing::error!("{error}");
                        self.failed = true;
                        // During a stop this is no reason to escalate.
                        if self.stopping.is_none() {
                            if let Some(ended) = self.on_stop(Signal::SIGTERM) {
                                return self.finish(ended).await;
                            }
                        }
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

    /// Returns Some(how it ended) when the supervisor is done.
    fn on_signal(&mut self, ev: Event) -> Option<Ended> {
        match ev {
            Event::Child => {
                let dockerd_pid = self.dockerd.as_ref().map(|d| d.pid);
                for (pid, exit) in self.sys.reap() {
                    if Some(pid) == dockerd_pid {
                        if let Some(ended) = self.on_dockerd_exit(exit) {
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
    fn on_dockerd_exit(&mut self, exit: Exit) -> Option<Ended> {
        let running = self.dockerd.take().expect("dockerd was running");
        self.ready = None;
        if let Some(stopping) = &self.stopping {
            tracing::info!(%exit, "dockerd stopped");
            return Some(Ended::Stopped {
                signal: stopping.signal,
                killed: stopping.killed,
                exit: Some(exit),
            });
        }
        let tail = running.stderr_tail();
        let why = match running.last_error() {
            Some(line) => format!("{line} (dockerd {exit})"),
            None => format!("dockerd {exit}"),
        };
        self.latch.engine(|e| e.last_error = Some(why));
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
