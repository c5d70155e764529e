//! Every outcome's exit code, decided in one place: a refused
//! configuration, a failed subcommand, a command that cannot be run, and the
//! service's own end (how supervision of dockerd ended, [`supervised`]).

use std::io;
use std::process::ExitCode;

use nix::sys::signal::Signal;

use crate::certs::CertError;
use crate::reap::Exit;
use crate::wait::WaitError;

/// A configuration the supervisor refuses (sysexits EX_CONFIG).
pub const CONFIG: u8 = 78;
/// The command of client mode exists but cannot be run (as a shell says).
pub const CANNOT_EXEC: u8 = 126;
/// The command of client mode, or dockerd, does not exist.
pub const NOT_FOUND: u8 = 127;
/// Died of SIGKILL, or we gave up on a dockerd that outlived it.
pub const KILLED: i32 = 128 + Signal::SIGKILL as i32;

/// A configuration refused at start: one line, exit 78.
pub fn refused(e: impl Into<anyhow::Error>) -> ExitCode {
    let e = e.into();
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{e:#}");
    } else {
        eprintln!("dind-supervisor: {e:#}");
    }
    ExitCode::from(CONFIG)
}

/// A one-shot subcommand: 0, or [`failed`]'s code with its error logged.
pub fn reported(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(failed(&e))
        }
    }
}

/// The code for an error that ends the service or a subcommand: 78 when
/// the certificate directory cannot be used as it is (corrupt, read-only,
/// full, not writable: a setting of the volume to fix, and the error says
/// which file and how), else 1. Decided on the error's type in its source
/// chain, never on its text.
pub fn failed(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<CertError>()) {
        // Our own failure, not the volume's.
        Some(CertError::Keygen { .. } | CertError::Entropy) | None => 1,
        Some(_) => CONFIG,
    }
}

/// Client mode could not replace this process with the command.
pub fn exec_failed(program: &std::ffi::OsStr, err: &io::Error) -> ExitCode {
    eprintln!("dind-supervisor: cannot run {program:?}: {err}");
    ExitCode::from(if err.kind() == io::ErrorKind::NotFound {
        NOT_FOUND
    } else {
        CANNOT_EXEC
    })
}

/// `wait`: 0 when the engine answered, 78 when the target cannot be
/// resolved (a configuration error), 1 when it did not answer in time.
pub fn waited<T>(r: Result<T, WaitError>) -> ExitCode {
    match r {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dind-supervisor wait: {e}");
            match e {
                WaitError::Host(_) => ExitCode::from(CONFIG),
                WaitError::NotReady { .. } => ExitCode::FAILURE,
            }
        }
    }
}

/// `health`: 0 when ready, 1 with the reason.
pub fn probed<E: std::fmt::Display>(r: Result<(), E>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(cause) => {
            eprintln!("not ready: {cause}");
            ExitCode::FAILURE
        }
    }
}

/// The service's end: the supervisor's code (dockerd's status, or what a
/// stop or a fatal error decided), clamped to a byte; [`failed`]'s code for
/// an error before supervision began.
pub fn served(r: anyhow::Result<i32>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(failed(&e))
        }
    }
}

/// How a process's end reads to a shell: its exit status, or 128 + the
/// number of the signal it died of (tini does the same).
pub fn status(exit: Exit) -> i32 {
    match exit {
        Exit::Code(c) => c,
        Exit::Signal(s) => 128 + s as i32,
    }
}

/// How supervision of dockerd ended; [`supervised`] gives its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// dockerd could not be started and no restart is coming.
    CannotStart,
    /// A restart could not start dockerd, and the restarts are used up.
    CannotRestart,
    /// dockerd exited on its own. `gave_up`: the restart policy wanted
    /// another run but the restarts are used up.
    Exited { exit: Exit, gave_up: bool },
    /// A stop on `signal`; `exit` is how dockerd ended, None when none ran.
    /// `killed`: SIGKILL had gone out (deadline passed, or a second signal).
    Stopped {
        signal: Signal,
        killed: bool,
        exit: Option<Exit>,
    },
    /// dockerd outlived SIGKILL; we exit without it.
    Unkillable,
}

/// The service's code for how supervision ended. `fatal`: an error of our
/// own (the proxy could not serve) ended it, which is 1 whatever dockerd did.
pub fn supervised(ended: Ended, fatal: bool) -> i32 {
    if fatal {
        return 1;
    }
    match ended {
        // As a shell says of a command it cannot run; restarts had a chance
        // to fix it, so after them it is a plain failure.
        Ended::CannotStart => NOT_FOUND.into(),
        Ended::CannotRestart => 1,
        // Never report success for a dockerd we wanted to run again.
        Ended::Exited { exit, gave_up } if gave_up && exit.success() => 1,
        Ended::Exited { exit, .. } => status(exit),
        // Exited on our signal inside the deadline: a clean stop is 0 even
        // when dockerd reports the signal it died of.
        Ended::Stopped {
            signal,
            killed: false,
            exit: Some(Exit::Signal(s)),
        } if s == signal => 0,
        Ended::Stopped {
            exit: Some(exit), ..
        } => status(exit),
        // Nothing ran (between restarts): the stop was already complete.
        // SIGQUIT asks for a dump and an abnormal end, and says so.
        Ended::Stopped {
            signal: Signal::SIGQUIT,
            exit: None,
            ..
        } => 128 + Signal::SIGQUIT as i32,
        Ended::Stopped { exit: None, .. } => 0,
        Ended::Unkillable => KILLED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate directory that cannot be written is the volume's
    /// setting: 78, whatever context it was wrapped in; keygen failing is
    /// ours (1), and so is any other error.
    #[test]
    fn an_unusable_certificate_directory_exits_78() {
        use anyhow::Context;
        use nix::errno::Errno;
        for errno in [Errno::EROFS, Errno::ENOSPC, Errno::EACCES, Errno::EIO] {
            let write = CertError::Write {
                path: "/certs/ca/key.pem".into(),
                source: io::Error::from_raw_os_error(errno as i32),
            };
            let e = Err::<(), _>(write).context("minting").unwrap_err();
            assert_eq!(failed(&e), CONFIG, "{errno}");
        }
        let keygen = CertError::Keygen {
            key_type: crate::certs::KeyType::Rsa2048,
            source: "no".into(),
        };
        assert_eq!(failed(&keygen.into()), 1);
        assert_eq!(failed(&anyhow::anyhow!("the proxy could not bind")), 1);
    }

    #[test]
    fn supervision_ends_map_to_shell_codes() {
        use Signal::*;
        let stopped = |killed, exit| Ended::Stopped {
            signal: SIGTERM,
            killed,
            exit,
        };
        let cases = [
            (Ended::CannotStart, 127),
            (Ended::CannotRestart, 1),
            (
                Ended::Exited {
                    exit: Exit::Code(0),
                    gave_up: false,
                },
                0,
            ),
            (
                Ended::Exited {
                    exit: Exit::Code(0),
                    gave_up: true,
                },
                1,
            ),
            (
                Ended::Exited {
                    exit: Exit::Code(3),
                    gave_up: true,
                },
                3,
            ),
            (
                Ended::Exited {
                    exit: Exit::Signal(SIGSEGV),
                    gave_up: false,
                },
                139,
            ),
            (stopped(false, Some(Exit::Signal(SIGTERM))), 0),
            (stopped(false, Some(Exit::Code(0))), 0),
            (stopped(false, Some(Exit::Code(2))), 2),
            (stopped(true, Some(Exit::Signal(SIGTERM))), 143),
            (stopped(true, Some(Exit::Signal(SIGKILL))), 137),
            (stopped(false, Some(Exit::Signal(SIGABRT))), 134),
            (stopped(false, None), 0),
            (
                Ended::Stopped {
                    signal: SIGQUIT,
                    killed: false,
                    exit: None,
                },
                131,
            ),
            (Ended::Unkillable, 137),
        ];
        for (ended, code) in cases {
            assert_eq!(supervised(ended, false), code, "{ended:?}");
            assert_eq!(supervised(ended, true), 1, "a fatal error wins: {ended:?}");
        }
    }
}
