//! Sockets the starter hands over already bound: `DIND_LISTEN_FDS=N` names
//! descriptors 3 to 3+N-1 (the layout of systemd's socket activation). The
//! proxy's and health endpoints take them in place of binding the same
//! address ([`proxy::handed`]), so the port is held from the moment the
//! starter chose it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};

use crate::env::{Env, DIND_LISTEN_FDS};

/// The first handed descriptor, after stdin, stdout and stderr.
const FIRST: RawFd = 3;
/// More than any starter has a reason to hand us.
const MAX: RawFd = 64;

/// The handed sockets, and why any descriptor named was passed over.
#[derive(Debug, Default)]
pub struct Handed {
    pub sockets: Vec<OwnedFd>,
    /// One line each, to be logged once logging is set up: `take` runs
    /// before it is, and a warning then would be lost.
    pub ignored: Vec<String>,
}

/// Takes the handed TCP sockets. Call first thing, before the process opens
/// any descriptor of its own: then descriptors from 3 on are the starter's.
/// Anything that is not a TCP socket is left alone, and said in `ignored`.
pub fn take(env: &dyn Env) -> Handed {
    let mut out = Handed::default();
    let Some(count) = env.var(DIND_LISTEN_FDS) else {
        return out;
    };
    // Ours alone: dockerd and anything else we start must not take them.
    std::env::remove_var(DIND_LISTEN_FDS);
    let count = match count.parse::<RawFd>() {
        Ok(n) if (0..=MAX).contains(&n) => n,
        _ => {
            out.ignored.push(format!(
                "{DIND_LISTEN_FDS}={count:?} is not a count of 0 to {MAX}; no socket was taken"
            ));
            return out;
        }
    };
    for fd in FIRST..FIRST + count {
        match tcp_socket(fd) {
            Ok(socket) => out.sockets.push(socket),
            Err(why) => out.ignored.push(why),
        }
    }
    out
}

fn tcp_socket(fd: RawFd) -> Result<OwnedFd, String> {
    let family = getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|a| a.family());
    if !matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6)) {
        return Err(format!(
            "descriptor {fd}, named by {DIND_LISTEN_FDS}, is not a TCP socket; it was left alone"
        ));
    }
    // SAFETY: `fd` is open (getsockname answered for it) and is a socket
    // the starter handed to this process; `take` runs before the process
    // opens descriptors of its own and reads the variable once (removing
    // it), so nothing else in the process owns or will close `fd`.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = fcntl(owned.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
        return Err(format!(
            "cannot mark descriptor {fd}, named by {DIND_LISTEN_FDS}, close-on-exec ({e}); it was not taken"
        ));
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A bad count takes nothing (no descriptor of this test process is
    /// touched) and says why, for the log once it is up.
    #[test]
    fn a_bad_count_is_said_not_lost() {
        for bad in ["x", "65", "-1"] {
            let handed = take(&HashMap::from([(DIND_LISTEN_FDS, bad)]));
            assert!(handed.sockets.is_empty());
            assert_eq!(handed.ignored.len(), 1, "{bad}");
            assert!(handed.ignored[0].starts_with(DIND_LISTEN_FDS), "{bad}");
        }
        let none = take(&HashMap::new());
        assert!(none.sockets.is_empty() && none.ignored.is_empty());
    }
}
