//! A machine for the run loop's tests, in the way of youki's
//! `syscall/test.rs`: no process is started and no signal is sent. Each
//! dockerd it "starts" follows a [`Dockerd`] script (answers its ping, dies,
//! dies of our signals), and it records what the loop asked of it, stamped
//! with the time since the fake was made on tokio's (paused) clock.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proxy::upstream::UpstreamError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};

use super::{Incoming, System};
use crate::dockerd::{Pong, Prepared, Running};
use crate::reap::Exit;
use crate::signals::Event;

/// The first pid the fake hands out; each start takes the next one.
pub const FIRST_PID: i32 = 100;

/// How one started dockerd behaves.
#[derive(Clone, Debug, Default)]
pub struct Dockerd {
    /// Answers its first `/_ping` this long after its start.
    pub ready_after: Option<Duration>,
    /// Ends on its own this long after its start.
    pub exits_after: Option<(Duration, Exit)>,
    /// Ends this long after it receives the signal, as given.
    pub on_signal: Vec<(Signal, Duration, Exit)>,
    /// Stuck in the kernel: even SIGKILL does not end it.
    pub survives_kill: bool,
    /// Stops answering `/_ping` (SIGSTOP, a deadlock) this long after its
    /// start, for this long (None: until it ends).
    pub silent: Option<(Duration, Option<Duration>)>,
}

/// What the next start of dockerd does.
#[derive(Clone, Debug)]
pub enum Plan {
    /// The program cannot be run (ENOENT).
    Fail,
    Run(Dockerd),
}

/// A live process and how it behaves; orphans die of SIGKILL only.
struct Process {
    script: Dockerd,
    started: Instant,
}

#[derive(Default)]
struct Machine {
    epoch: Option<Instant>,
    next_pid: i32,
    /// Starts to come, in order; when empty, [`Fake::otherwise`] applies.
    plans: VecDeque<Plan>,
    otherwise: Option<Plan>,
    alive: HashMap<i32, Process>,
    /// Ended, waiting for the reaper.
    ended: Vec<(Pid, Exit)>,
    /// Probes that have not answered yet; kept so that they stay pending.
    pongs: HashMap<i32, oneshot::Sender<Pong>>,
    /// How long stopping the containers takes; None: it never finishes.
    containers_take: Option<Duration>,
    starts: Vec<(Duration, Option<Pid>)>,
    signals: Vec<(Duration, Pid, Signal)>,
    container_stops: Vec<(Duration, Duration)>,
}

/// The fake machine; clones share it, so the test keeps one to look into
/// while the loop owns another.
#[derive(Clone)]
pub struct Fake {
    machine: Arc<Mutex<Machine>>,
    events: mpsc::UnboundedSender<Event>,
}

/// The loop's end of the fake's signal channel.
pub struct Events(mpsc::UnboundedReceiver<Event>);

impl Incoming for Events {
    async fn recv(&mut self) -> Event {
        match self.0.recv().await {
            Some(ev) => ev,
            // Every sender gone: no signal will ever come again.
            None => std::future::pending().await,
        }
    }
}

impl Fake {
    /// A machine on which every dockerd runs and never answers, unless
    /// planned otherwise; times are measured from now.
    pub fn new() -> (Fake, Events) {
        let (tx, rx) = mpsc::unbounded_channel();
        let machine = Machine {
            epoch: Some(Instant::now()),
            next_pid: FIRST_PID,
            containers_take: Some(Duration::ZERO),
            ..Machine::default()
        };
        let fake = Fake {
            machine: Arc::new(Mutex::new(machine)),
            events: tx,
        };
        (fake, Events(rx))
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine
            .lock()
            .expect("no test panics while holding it")
    }

    /// The next start follows `plan`.
    pub fn plan(&self, plan: Plan) -> &Self {
        self.lock().plans.push_back(plan);
        self
    }

    /// Every start after the planned ones follows `plan`.
    pub fn otherwise(&self, plan: Plan) -> &Self {
        self.lock().otherwise = Some(plan);
        self
    }

    /// How long dockerd takes to stop the containers; None: forever.
    pub fn containers_take(&self, take: Option<Duration>) -> &Self {
        self.lock().containers_take = take;
        self
    }

    /// A process that is not dockerd (a containerd shim left behind).
    pub fn orphan(&self, pid: i32) {
        self.lock().alive.insert(
            pid,
            Process {
                script: Dockerd::default(),
                started: Instant::now(),
            },
        );
    }

    /// A signal reaches the supervisor.
    pub fn deliver(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    /// `pid` ends now (if it is alive): its status waits for the reaper and
    /// SIGCHLD goes to the supervisor.
    pub fn end(&self, pid: i32, exit: Exit) {
        let mut m = self.lock();
        if m.alive.remove(&pid).is_some() {
            m.pongs.remove(&pid);
            m.ended.push((Pid::from_raw(pid), exit));
            drop(m);
            self.deliver(Event::Child);
        }
    }

    /// `pid` ends `after` from now, unless something ends it first.
    fn end_after(&self, pid: i32, after: Duration, exit: Exit) {
        let fake = self.clone();
        tokio::spawn(async move {
            sleep(after).await;
            fake.end(pid, exit);
        });
    }

    /// Every start: when, and the pid (None: it failed).
    pub fn starts(&self) -> Vec<(Duration, Option<Pid>)> {
        self.lock().starts.clone()
    }

    /// Every signal sent: when, to whom, which.
    pub fn signals(&self) -> Vec<(Duration, Pid, Signal)> {
        self.lock().signals.clone()
    }

    /// Every request to stop the containers: when, and the grace given.
    pub fn container_stops(&self) -> Vec<(Duration, Duration)> {
        self.lock().container_stops.clone()
    }

    /// Whether `pid` is still running.
    pub fn is_alive(&self, pid: i32) -> bool {
        self.lock().alive.contains_key(&pid)
    }
}

impl Machine {
    fn since_epoch(&self) -> Duration {
        Instant::now() - self.epoch.expect("set in Fake::new")
    }

    /// When the newest live dockerd answers a ping sent now: at once, at the
    /// end of its silence, or never (None, also when none runs).
    fn answers_at(&self) -> Option<Instant> {
        let now = Instant::now();
        let newest = self.alive.iter().max_by_key(|(pid, _)| **pid)?.1;
        let Some((from, for_)) = newest.script.silent else {
            return Some(now);
        };
        let (from, until) = (
            newest.started + from,
            for_.map(|f| newest.started + from + f),
        );
        match until {
            _ if now < from => Some(now),
            Some(until) => Some(until.max(now)),
            None => None,
        }
    }
}

/// The dockerd command line the fake is asked to start.
pub fn prepared() -> Prepared {
    Prepared {
        program: PathBuf::from("/fake/dockerd"),
        args: Vec::new(),
        path_env: None,
        docker_driver: None,
        proxy_network_mtu: None,
        socket: PathBuf::from("/fake/docker.sock"),
        stale_pid_dirs: Vec::new(),
        live_restore: false,
    }
}

impl System for Fake {
    fn spawn(&mut self, _p: &Prepared) -> io::Result<(Running, oneshot::Receiver<Pong>)> {
        let mut m = self.lock();
        let at = m.since_epoch();
        let plan = m
            .plans
            .pop_front()
            .or_else(|| m.otherwise.clone())
            .unwrap_or(Plan::Run(Dockerd::default()));
        let script = match plan {
            Plan::Fail => {
                m.starts.push((at, None));
                return Err(io::ErrorKind::NotFound.into());
            }
            Plan::Run(script) => script,
        };
        let pid = m.next_pid;
        m.next_pid += 1;
        m.starts.push((at, Some(Pid::from_raw(pid))));
        let (tx, rx) = oneshot::channel();
        m.alive.insert(
            pid,
            Process {
                script: script.clone(),
                started: Instant::now(),
            },
        );
        match script.ready_after {
            Some(after) => {
                let fake = self.clone();
                tokio::spawn(async move {
                    sleep(after).await;
                    if fake.is_alive(pid) {
                        let _ = tx.send(Pong {
                            api_version: Some("1.47".into()),
                            version: Some("27.5.1".into()),
                        });
                    }
                });
            }
            None => {
                m.pongs.insert(pid, tx);
            }
        }
        drop(m);
        if let Some((after, exit)) = script.exits_after {
            self.end_after(pid, after, exit);
        }
        Ok((Running::fake(Pid::from_raw(pid)), rx))
    }

    fn signal(&mut self, pid: Pid, sig: Signal) {
        let mut m = self.lock();
        let at = m.since_epoch();
        m.signals.push((at, pid, sig));
        let Some(process) = m.alive.get(&pid.as_raw()) else {
            return;
        };
        // As the kernel does, the end shows up a moment later, as SIGCHLD.
        let ends = if sig == Signal::SIGKILL {
            (!process.script.survives_kill).then_some((Duration::ZERO, Exit::Signal(sig)))
        } else {
            let script = &process.script.on_signal;
            script
                .iter()
                .find(|(s, ..)| *s == sig)
                .map(|&(_, after, exit)| (after, exit))
        };
        drop(m);
        if let Some((after, exit)) = ends {
            self.end_after(pid.as_raw(), after, exit);
        }
    }

    fn reap(&mut self) -> Vec<(Pid, Exit)> {
        std::mem::take(&mut self.lock().ended)
    }

    fn ping(
        &self,
        socket: &Path,
        limit: Duration,
    ) -> impl Future<Output = Result<(), UpstreamError>> + Send + 'static {
        let answers_at = self.lock().answers_at();
        let path = socket.to_owned();
        let give_up = Instant::now() + limit;
        async move {
            match answers_at {
                Some(at) if at <= give_up => {
                    tokio::time::sleep_until(at).await;
                    Ok(())
                }
                _ => {
                    tokio::time::sleep_until(give_up).await;
                    Err(UpstreamError::Timeout { path, limit })
                }
            }
        }
    }

    fn descendants(&self) -> Vec<Pid> {
        let mut pids: Vec<i32> = self.lock().alive.keys().copied().collect();
        pids.sort();
        pids.into_iter().map(Pid::from_raw).collect()
    }

    fn stop_containers(
        &self,
        socket: &Path,
        grace: Duration,
    ) -> impl Future<Output = Result<usize, UpstreamError>> + Send + 'static {
        let mut m = self.lock();
        let at = m.since_epoch();
        m.container_stops.push((at, grace));
        let take = m.containers_take;
        let path = socket.to_owned();
        async move {
            match take {
                Some(take) => {
                    sleep(take).await;
                    Ok(1)
                }
                None => {
                    std::future::pending::<()>().await;
                    Err(UpstreamError::Timeout { path, limit: grace })
                }
            }
        }
    }
}
