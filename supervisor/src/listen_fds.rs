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

/// Takes the handed TCP sockets. Call first thing, before the process opens
/// any descriptor of its own: then descriptors from 3 on are the starter's.
/// Anything that is not a TCP socket is left alone, with a warning.
pub fn take(env: &dyn Env) -> Vec<OwnedFd> {
    let Some(count) = env.var(DIND_LISTEN_FDS) else {
        return Vec::new();
    };
    // Ours alone: dockerd and anything else we start must not take them.
    std::env::remove_var(DIND_LISTEN_FDS);
    let count = match count.parse::<RawFd>() {
        Ok(n) if (0..=MAX).contains(&n) => n,
        _ => {
            tracing::warn!(value = %count, "{DIND_LISTEN_FDS} is not a count of 0 to {MAX}; ignored");
            return Vec::new();
        }
    };
    (FIRST..FIRST + count).filter_map(tcp_socket).collect()
}

fn tcp_socket(fd: RawFd) -> Option<OwnedFd> {
    let family = getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|a| a.family());
    if !matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6)) {
        tracing::warn!(
            fd,
            "a descriptor named by {DIND_LISTEN_FDS} is not a TCP socket; ignored"
        );
        return None;
    }
    // SAFETY: `fd` is open (getsockname answered for it) and is a socket
    // the starter handed to this process; `take` runs before the process
    // opens descriptors of its own and reads the variable once (removing
    // it), so nothing else in the process owns or will close `fd`.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = fcntl(owned.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
        tracing::warn!(fd, error = %e, "cannot mark a handed socket close-on-exec");
    }
    Some(owned)
}
