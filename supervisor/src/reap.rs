//! The one place that collects child exit statuses.
//!
//! As PID 1 (or a child subreaper) we inherit every orphan, containerd shims
//! included, and must reap them. A `waitpid(-1)` loop and any per-child wait
//! (tokio's `Child::wait`, std's `Child::wait`) would race for dockerd's
//! status, so nothing else in the supervisor waits on a child once
//! supervision starts: dockerd's status arrives here exactly once.

use std::fmt;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a process ended. Its exit code as a shell reads it is
/// [`crate::exit::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by {s}"),
        }
    }
}

/// Reaps every child that has ended, without blocking. Returns them in the
/// order the kernel handed them over.
pub fn reap_all() -> Vec<(Pid, Exit)> {
    let mut ended = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => ended.push((pid, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _core)) => ended.push((pid, Exit::Signal(sig))),
            // Stopped/continued children are still alive; nothing to collect.
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return ended,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitpid failed");
                return ended;
            }
        }
    }
}
