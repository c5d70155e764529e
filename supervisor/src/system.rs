//! The seam between the PID-1 loop (`supervise.rs`) and the machine: every
//! process it starts, signals, reaps or finds in /proc, and the one call it
//! makes to dockerd's API, go through [`System`], so the loop's decisions can
//! be tested against a fake (`system/fake.rs`) without root, processes or
//! wall-clock time. Shaped after youki's `Syscall` trait and its test double
//! (`crates/libcontainer/src/syscall/{syscall,test}.rs`).
//!
//! The clock is not part of the trait: the loop reads and sleeps on tokio's
//! clock (`tokio::time::Instant`), which `tokio::time::pause()` drives in
//! tests; a second, separate clock in the trait could disagree with the
//! timers.
//!
//! Signals arrive through [`Incoming`], the other half of the seam.

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proxy::upstream::UpstreamError;
use tokio::sync::oneshot;

use crate::dockerd::{self, Pong, Prepared, Running};
use crate::reap::{self, Exit};
use crate::signals::{self, Event, Signals};

#[cfg(test)]
pub mod fake;

/// What the run loop asks of the machine.
pub trait System {
    /// Starts dockerd; the receiver fires when it first answers `/_ping`.
    fn spawn(&mut self, p: &Prepared) -> io::Result<(Running, oneshot::Receiver<Pong>)>;

    /// Sends `sig` to `pid`. A process already gone is not an error: its
    /// status reaches [`System::reap`].
    fn signal(&mut self, pid: Pid, sig: Signal);

    /// Every child that has ended, without blocking, in the order the
    /// kernel handed them over.
    fn reap(&mut self) -> Vec<(Pid, Exit)>;

    /// Asks dockerd on `socket` for `/_ping`, waiting at most `limit`: the
    /// watchdog's probe once it is Ready.
    fn ping(
        &self,
        socket: &Path,
        limit: Duration,
    ) -> impl Future<Output = Result<(), UpstreamError>> + Send + 'static;

    /// Every live process below this one, children before grandchildren.
    fn descendants(&self) -> Vec<Pid>;

    /// Asks dockerd on `socket` to stop its running containers, each within
    /// `grace`; returns how many it stopped.
    fn stop_containers(
        &self,
        socket: &Path,
        grace: Duration,
    ) -> impl Future<Output = Result<usize, UpstreamError>> + Send + 'static;

    /// SIGKILLs every descendant (not this process). Works the same as PID 1
    /// and as a subreaper, where `kill(-1)` would hit the host.
    fn kill_descendants(&mut self) -> usize {
        let tree = self.descendants();
        for &pid in &tree {
            self.signal(pid, Signal::SIGKILL);
        }
        tree.len()
    }
}

/// The machine itself: what the binary runs with.
#[derive(Debug, Default, Clone, Copy)]
pub struct Real;

impl System for Real {
    fn spawn(&mut self, p: &Prepared) -> io::Result<(Running, oneshot::Receiver<Pong>)> {
        dockerd::spawn(p)
    }

    fn signal(&mut self, pid: Pid, sig: Signal) {
        signals::send(pid, sig);
    }

    fn reap(&mut self) -> Vec<(Pid, Exit)> {
        reap::reap_all()
    }

    fn ping(
        &self,
        socket: &Path,
        limit: Duration,
    ) -> impl Future<Output = Result<(), UpstreamError>> + Send + 'static {
        let socket = socket.to_owned();
        async move { proxy::upstream::ping(&socket, limit).await.map(drop) }
    }

    fn descendants(&self) -> Vec<Pid> {
        crate::procfs::descendants(Pid::this())
    }

    fn stop_containers(
        &self,
        socket: &Path,
        grace: Duration,
    ) -> impl Future<Output = Result<usize, UpstreamError>> + Send + 'static {
        let socket = socket.to_owned();
        async move { proxy::upstream::stop_containers(&socket, grace).await }
    }
}

/// Where the run loop's signals come from.
pub trait Incoming {
    /// The next signal, as what it asks of the supervisor.
    fn recv(&mut self) -> impl Future<Output = Event>;
}

impl Incoming for Signals {
    fn recv(&mut self) -> impl Future<Output = Event> {
        Signals::recv(self)
    }
}
