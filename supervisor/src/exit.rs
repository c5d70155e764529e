//! Every outcome's exit code, decided in one place: a refused
//! configuration, a failed subcommand, a command that cannot be run, and the
//! service's own end.

use std::io;
use std::process::ExitCode;

use crate::wait::WaitError;

/// A configuration the supervisor refuses (sysexits EX_CONFIG).
pub const CONFIG: u8 = 78;
/// The command of client mode exists but cannot be run (as a shell says).
pub const CANNOT_EXEC: u8 = 126;
/// The command of client mode, or dockerd, does not exist.
pub const NOT_FOUND: u8 = 127;

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

/// A one-shot subcommand: 0, or 1 with its error logged.
pub fn reported(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
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
/// stop or a fatal error decided), clamped to a byte; 1 for an error
/// before supervision began.
pub fn served(r: anyhow::Result<i32>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
