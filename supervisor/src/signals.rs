//! Signals the supervisor acts on, and delivering them to its children.

use std::io;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, Signal as Stream, SignalKind};

/// What a received signal asks of the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// SIGCHLD: some child ended; reap.
    Child,
    /// SIGTERM, SIGINT, SIGQUIT: stop dockerd and exit.
    Stop(Signal),
    /// SIGHUP, SIGUSR1, SIGUSR2: pass to dockerd (reload config, dump stacks).
    Forward(Signal),
}

/// Listens for every signal the supervisor handles. Created before any child
/// exists so that no SIGCHLD and no early SIGTERM is lost.
pub struct Signals {
    streams: Vec<(Signal, Stream)>,
}

const HANDLED: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let streams = HANDLED
            .iter()
            .map(|&s| Ok((s, signal(SignalKind::from_raw(s as i32))?)))
            .collect::<io::Result<_>>()?;
        Ok(Signals { streams })
    }

    /// The next signal. SIGCHLD comes first when several are pending so that
    /// a stop decision always sees the freshest child state.
    pub async fn recv(&mut self) -> Event {
        let next = std::future::poll_fn(|cx| {
            for (sig, stream) in self.streams.iter_mut() {
                if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return std::task::Poll::Ready(*sig);
                }
            }
            std::task::Poll::Pending
        })
        .await;
        classify(next)
    }
}

fn classify(sig: Signal) -> Event {
    match sig {
        Signal::SIGCHLD => Event::Child,
        Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => Event::Stop(sig),
        other => Event::Forward(other),
    }
}

/// Sends `sig` to one process. A process that is already gone (ESRCH) is not
/// an error: it raced us to the exit, and its status reaches the reaper.
pub fn send(pid: Pid, sig: Signal) {
    match kill(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(%pid, signal = %sig, error = %e, "cannot signal process"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_and_forward_sets_match_the_stock_entrypoint() {
        assert_eq!(classify(Signal::SIGTERM), Event::Stop(Signal::SIGTERM));
        assert_eq!(classify(Signal::SIGINT), Event::Stop(Signal::SIGINT));
        assert_eq!(classify(Signal::SIGQUIT), Event::Stop(Signal::SIGQUIT));
        assert_eq!(classify(Signal::SIGHUP), Event::Forward(Signal::SIGHUP));
        assert_eq!(classify(Signal::SIGUSR1), Event::Forward(Signal::SIGUSR1));
        assert_eq!(classify(Signal::SIGCHLD), Event::Child);
    }
}
