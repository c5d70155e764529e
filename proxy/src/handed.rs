//! TCP sockets handed to the process already bound (`DIND_LISTEN_FDS`),
//! used in place of binding the same address. Whoever starts us then holds
//! the port from the moment it chose it: nothing else can take it between
//! "this port is free" and our bind (the test harness runs services side
//! by side and relies on that).
//!
//! A handed socket need not listen yet: we start listening when the
//! endpoint opens, so `DIND_LISTEN_WHEN=ready` still means no connection is
//! accepted before Ready.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpSocket};

/// Backlog of a listener we start on a handed socket (what tokio's own
/// `TcpListener::bind` uses).
const BACKLOG: u32 = 1024;

/// The sockets handed over and not yet taken. Filled once at start; each
/// is taken at most once.
static HANDED: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Keeps `sockets` for the endpoints to take by address.
pub fn keep(sockets: Vec<OwnedFd>) {
    HANDED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(sockets);
}

/// The handed socket bound to `addr`, listening; None when none was handed
/// for it (then the caller binds).
pub fn take(addr: SocketAddr) -> Option<std::io::Result<TcpListener>> {
    let mut handed = HANDED.lock().unwrap_or_else(|p| p.into_inner());
    let at = handed.iter().position(|fd| local_addr(fd) == Some(addr))?;
    let fd = handed.swap_remove(at);
    Some(listen(fd))
}

fn local_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    let stream = std::net::TcpStream::from(fd.try_clone().ok()?);
    stream.local_addr().ok()
}

fn listen(fd: OwnedFd) -> std::io::Result<TcpListener> {
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(true)?;
    TcpSocket::from_std_stream(stream).listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[tokio::test]
    async fn a_bound_socket_is_taken_for_its_address_once_and_starts_listening() {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        // Bound, not listening: refused, yet the port stays ours.
        assert!(std::net::TcpStream::connect(addr).is_err());
        keep(vec![socket.as_fd().try_clone_to_owned().unwrap()]);
        drop(socket);
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(take(other).is_none());
        let listener = take(addr).expect("handed").unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, from) = listener.accept().await.unwrap();
        assert_eq!(from, client.local_addr().unwrap());
        assert!(take(addr).is_none(), "taken once");
    }
}
