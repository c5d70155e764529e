//! The public listeners: TCP with mutual TLS, plain TCP, and unix sockets.
//! Bound at start by default, so that a client that comes early is held
//! instead of refused (issue 9), or only once the engine is Ready when the
//! operator wants a TCP connect to mean "the API answers". Closed first on
//! shutdown.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::auth;
use crate::cap::{ConnectionCap, Slot};
use crate::forward::{self, Shared};
use crate::limits::Limits;
use crate::metrics::{HandshakeFailure, Metrics};
use crate::pin::Pins;
use crate::readiness::{Readiness, State};

/// Bound on a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE and the like) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What Go's net/http, and so dockerd, answers to plain HTTP on a TLS port.
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// One public endpoint.
#[derive(Clone)]
pub enum Endpoint {
    /// TCP; with `tls`, mutual TLS is required.
    Tcp {
        addr: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
    },
    /// A unix socket, created under a temporary name and renamed into place
    /// once its mode and group are set: a client never sees a socket it
    /// cannot use.
    Unix {
        path: PathBuf,
        mode: u32,
        gid: Option<u32>,
    },
}

impl Endpoint {
    /// How clients name it: `tcp://0.0.0.0:2376` (tls) or `unix:///path`.
    pub fn url(&self) -> String {
        match self {
            Endpoint::Tcp { addr, .. } => format!("tcp://{addr}"),
            Endpoint::Unix { path, .. } => format!("unix://{}", path.display()),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Tcp { tls: Some(_), .. })
    }
}

/// When the public endpoints open (`DIND_LISTEN_WHEN`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenWhen {
    /// At once: connections are accepted from the start and their requests
    /// held until the engine is Ready, so a job that starts together with
    /// its service never meets "Cannot connect".
    #[default]
    Start,
    /// Only once the engine first answers: a successful TCP connect then
    /// means the API works (the behaviour before issue 9).
    Ready,
}

/// The public endpoints, bound now or once the engine is Ready.
pub enum Open {
    /// Bound already by [`Listeners::bind`], before dockerd starts.
    Now(Listeners),
    /// Bound by [`serve`] at the first Ready.
    WhenReady(Vec<Endpoint>),
}

/// Everything [`serve`] needs.
pub struct Config {
    pub open: Open,
    /// dockerd's private socket.
    pub upstream: PathBuf,
    pub limits: Limits,
    pub policy: crate::policy::Policy,
    pub audit: crate::audit::Audit,
    /// How long dockerd's answer to `/_ping` is reused; zero forwards every
    /// ping ([`crate::ping`]).
    pub ping_ttl: std::time::Duration,
    /// Where bind sources the policy confines are pinned ([`crate::pin`]);
    /// a directory of the supervisor's own. None: the policy confines none.
    pub pins_dir: Option<PathBuf>,
    /// The MTU to add to bridge networks clients create
    /// ([`crate::network_mtu`]): set only for a dockerd that cannot add it.
    pub network_mtu: Option<u32>,
}

/// Why the proxy could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {endpoint}: {source}; free the port or change DIND_LISTEN")]
    Bind {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up unix socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is in use by another server: stop it, or point DOCKER_HOST at another path", path.display())]
    InUse { path: PathBuf },
    #[error("cannot set up the bind pin directory {}: {source}; check DIND_RUN_DIR", path.display())]
    Pins {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Bound public endpoints, not yet accepting. Their unix socket files are
/// removed when this (or the serving that took it over) ends.
pub struct Listeners {
    bound: Vec<(String, bool, Bound)>,
    sockets: SocketFiles,
}

/// The unix socket files we created; removed on drop, so no path is left
/// claiming an engine that is gone.
#[derive(Default)]
struct SocketFiles(Vec<PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        self.0.iter().for_each(|p| remove_socket(p));
    }
}

impl Listeners {
    /// Binds every endpoint, unix sockets renamed into place with their mode
    /// and group; on any failure nothing stays bound or created.
    pub async fn bind(endpoints: &[Endpoint]) -> Result<Listeners, ServeError> {
        let mut out = Listeners {
            bound: Vec::new(),
            sockets: SocketFiles::default(),
        };
        for ep in endpoints {
            let bound = bind(ep).await?;
            if let Endpoint::Unix { path, .. } = ep {
                out.sockets.0.push(path.clone());
            }
            out.bound.push((ep.url(), ep.is_tls(), bound));
        }
        Ok(out)
    }
}

/// Serves every endpoint until `shutdown` completes, then closes the
/// listeners and drains every connection, session and dockerd connection
/// it started within [`DRAIN`] ([`crate::tasks`]); returns once all have
/// ended. With
/// [`Open::WhenReady`], binds at the first Ready, and returns early,
/// binding nothing, if shutdown or ShuttingDown comes first.
///
/// The supervisor passes [`Readiness::shutting_down`] as `shutdown`.
pub async fn serve(
    config: Config,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    tokio::pin!(shutdown);
    let Config {
        open,
        upstream,
        limits,
        policy,
        audit,
        ping_ttl,
        pins_dir,
        network_mtu,
    } = config;
    let Some(listeners) = open_listeners(open, &readiness, shutdown.as_mut()).await? else {
        return Ok(());
    };
    let pins = match pins_dir {
        Some(dir) => Some(Arc::new(
            Pins::new(dir.clone()).map_err(|source| ServeError::Pins { path: dir, source })?,
        )),
        None => None,
    };
    let mut shared = Shared::new(
        upstream,
        readiness.clone(),
        metrics.clone(),
        limits,
        policy,
        audit,
        crate::ping::PingCache::new(ping_ttl),
        pins.clone(),
    );
    shared.network_mtu = network_mtu;
    let shared = Arc::new(shared);
    if let Some(p) = pins.clone() {
        sweep_pins(p, &shared, readiness);
    }
    let Listeners { bound, sockets } = listeners;
    let accepting = start_accepting(bound, &shared);
    metrics.listeners_bound.store(true, Ordering::Release);
    shutdown.await;
    close_and_drain(accepting, sockets, &shared).await;
    if let Some(pins) = pins {
        // The containers have their own mounts; the pins only kept them
        // for the next start.
        pins.release_all();
    }
    Ok(())
}

/// The listeners to serve: those bound already, or, with
/// [`Open::WhenReady`], those bound at the first Ready. None when shutdown
/// or ShuttingDown comes first: nothing is bound then.
async fn open_listeners(
    open: Open,
    readiness: &Readiness,
    shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Option<Listeners>, ServeError> {
    let endpoints = match open {
        Open::Now(listeners) => return Ok(Some(listeners)),
        Open::WhenReady(endpoints) => endpoints,
    };
    // A socket file left by an earlier run would claim readiness; one that
    // something still serves is not ours to take.
    for ep in &endpoints {
        if let Endpoint::Unix { path, .. } = ep {
            clear_stale_socket(path)?;
        }
    }
    tokio::select! {
        biased;
        () = shutdown => return Ok(None),
        ready = first_ready(readiness.clone()) => if !ready {
            return Ok(None);
        },
    }
    Listeners::bind(&endpoints).await.map(Some)
}

/// Sweeps pins no container or volume names any more, until the proxy
/// stops ([`crate::pin::sweep_loop`]).
fn sweep_pins(pins: Arc<Pins>, shared: &Shared, readiness: Readiness) {
    let (tasks, sweep) = (
        shared.tasks.clone(),
        crate::pin::sweep_loop(pins, shared.upstream.clone(), readiness),
    );
    shared.tasks.spawn(async move {
        tokio::select! {
            () = tasks.stopping() => {}
            () = sweep => {}
        }
    });
}

/// An accept loop per bound endpoint, all under one connection cap: a job
/// reaches every endpoint alike.
fn start_accepting(bound: Vec<(String, bool, Bound)>, shared: &Arc<Shared>) -> JoinSet<()> {
    let cap = Arc::new(ConnectionCap::new(shared.limits.max_connections));
    let mut accepting = JoinSet::new();
    for (url, tls, bound) in bound {
        tracing::info!(endpoint = %url, tls, max_connections = shared.limits.max_connections, "listening");
        accepting.spawn(accept_loop(bound, shared.clone(), cap.clone()));
    }
    accepting
}

/// The stop: close the doors first, so new connects are refused from here
/// on and the socket files go; then idle dockerd connections go, every
/// client connection closes once its exchange in flight is answered (held
/// ones get their 503), and what still runs at [`DRAIN`] is cut.
async fn close_and_drain(mut accepting: JoinSet<()>, sockets: SocketFiles, shared: &Shared) {
    accepting.shutdown().await;
    shared
        .metrics
        .listeners_bound
        .store(false, Ordering::Release);
    drop(sockets);
    tracing::info!("public listeners closed");
    shared.pool.close();
    let cut = shared.tasks.drain(DRAIN).await;
    if cut > 0 {
        tracing::info!(
            cut,
            bound_ms = DRAIN.as_millis() as u64,
            "connections and sessions still open at the drain bound were closed"
        );
    }
}

/// Waits for the engine's first Ready: true, or false once it is shutting
/// down (the latch dropped included). Follows what each change says: the
/// state read again after the latch is gone would still say Starting, and
/// a watch whose sender is gone returns at once, so looping on the state
/// alone would spin (issue 11).
async fn first_ready(mut readiness: Readiness) -> bool {
    let mut state = readiness.state();
    loop {
        match state {
            State::Ready => return true,
            State::ShuttingDown => return false,
            State::Starting | State::Restarting | State::Unresponsive => {
                state = readiness.changed().await
            }
        }
    }
}

/// How long the connections and sessions left at shutdown have to end
/// before they are cut. Within the supervisor's wait for the proxy (1.5 s):
/// enough for a held request's 503 and an exchange in flight, not for a
/// `logs -f` stream or an attach session, which end with the engine anyway.
pub const DRAIN: Duration = Duration::from_secs(1);

/// A bound listener and how to treat its connections.
enum Bound {
    Tcp(TcpListener, Option<TlsAcceptor>),
    Unix(UnixListener),
}

async fn bind(ep: &Endpoint) -> Result<Bound, ServeError> {
    match ep {
        Endpoint::Tcp { addr, tls } => {
            let l = match crate::handed::take(*addr) {
                Some(handed) => handed,
                None => TcpListener::bind(addr).await,
            }
            .map_err(|source| ServeError::Bind {
                endpoint: ep.url(),
                source,
            })?;
            Ok(Bound::Tcp(l, tls.clone().map(TlsAcceptor::from)))
        }
        Endpoint::Unix { path, mode, gid } => bind_unix(path, *mode, *gid).map(Bound::Unix),
    }
}

/// Binds under a temporary name in the same directory, sets mode and group,
/// then renames into place: a client never sees a socket it cannot use.
fn bind_unix(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    let finish = || -> Result<(), ServeError> {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(err)?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid)).map_err(err)?;
        }
        // Checked again just before the rename: another server may have
        // appeared at the path since start-up.
        clear_stale_socket(path)?;
        fs::rename(&tmp, path).map_err(err)
    };
    if let Err(e) = finish() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Removes a socket file nobody serves; refuses to touch one that answers,
/// or anything that is not a socket.
fn clear_stale_socket(path: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServeError::Socket {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() || std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServeError::InUse {
            path: path.to_owned(),
        });
    }
    remove_socket(path);
    Ok(())
}

fn remove_socket(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove socket"),
    }
}

/// Accepts until aborted. An accept error never ends the loop; a
/// connection over the cap is dropped as soon as it is accepted.
async fn accept_loop(bound: Bound, shared: Arc<Shared>, cap: Arc<ConnectionCap>) {
    loop {
        match &bound {
            Bound::Tcp(l, tls) => match l.accept().await {
                Ok((stream, peer)) => {
                    let Some(slot) = cap.admit(&shared.metrics) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let span = tracing::debug_span!("conn", %peer);
                    let (tls, conn_shared) = (tls.clone(), shared.clone());
                    shared.tasks.spawn(
                        async move {
                            let shared = conn_shared;
                            match tls {
                                Some(acceptor) => {
                                    serve_tls(stream, peer, acceptor, shared, slot).await
                                }
                                None => {
                                    let peer = forward::Peer {
                                        addr: peer.to_string(),
                                        subject: None,
                                    };
                                    forward::serve_connection(stream, peer, shared, slot).await
                                }
                            }
                        }
                        .instrument(span),
                    );
                }
                Err(e) => accept_failed(e).await,
            },
            Bound::Unix(l) => match l.accept().await {
                Ok((stream, _)) => {
                    let Some(slot) = cap.admit(&shared.metrics) else {
                        continue;
                    };
                    let peer = forward::Peer {
                        addr: "unix".into(),
                        subject: None,
                    };
                    shared.tasks.spawn(forward::serve_connection(
                        stream,
                        peer,
                        shared.clone(),
                        slot,
                    ));
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
}

async fn accept_failed(e: io::Error) {
    tracing::warn!(error = %e, "accept failed; retrying");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    slot: Slot,
) {
    let metrics: &Metrics = &shared.metrics;
    if speaks_plain_http(&stream).await {
        metrics.handshake_failed(HandshakeFailure::PlainHttp);
        tracing::warn!(%peer, reason = HandshakeFailure::PlainHttp.explain(), "TLS handshake failed");
        // Boxed: its 4 KiB drain buffer would otherwise size every TLS
        // connection's task, for as long as it is open.
        Box::pin(answer_plain_http(stream)).await;
        return;
    }
    // The handshake's state is boxed, so that it is freed once done instead
    // of sizing this connection's task for as long as it is open.
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(acceptor.accept(stream))).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let why = auth::classify(&e);
            metrics.handshake_failed(why);
            tracing::warn!(%peer, reason = why.explain(), error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.handshake_failed(HandshakeFailure::Timeout);
            tracing::warn!(%peer, reason = HandshakeFailure::Timeout.explain(), "TLS handshake failed");
            return;
        }
    };
    // Built in a block so that `tls` (rustls's state, over 1 KiB) is dead
    // before the await: the task then holds only a pointer to the boxed
    // serving future, not room for a second copy of the stream.
    let serving = {
        let subject = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| auth::subject(cert));
        let peer = forward::Peer {
            addr: peer.to_string(),
            subject,
        };
        Box::pin(forward::serve_connection(tls, peer, shared, slot))
    };
    serving.await;
}

/// Tells a plain-HTTP client what went wrong, as dockerd would. The request
/// is drained before closing: closing with unread data sends a reset, and
/// the client would see "connection reset" instead of the answer.
async fn answer_plain_http(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(PLAIN_HTTP_ON_TLS).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0;
        while let Ok(n) = stream.read(&mut sink).await {
            total += n;
            if n == 0 || total > 64 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// A TLS client starts with a handshake record (0x16); an HTTP client with a
/// method name. Peeking leaves the bytes for the TLS acceptor.
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0].is_ascii_uppercase(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_live_socket_is_never_taken_over_and_a_dead_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let live = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            clear_stale_socket(&path),
            Err(ServeError::InUse { .. })
        ));
        assert!(matches!(
            bind_unix(&path, 0o660, None),
            Err(ServeError::InUse { .. })
        ));
        assert!(path.exists(), "the live socket must stay");
        drop(live);
        // Now nobody answers: the file is stale and gets replaced.
        let ours = bind_unix(&path, 0o660, None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        drop(ours);
        fs::write(dir.path().join("file"), "x").unwrap();
        assert!(matches!(
            clear_stale_socket(&dir.path().join("file")),
            Err(ServeError::InUse { .. })
        ));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary socket left behind");
    }

    /// A request ci-safe refuses before the readiness gate: answered at
    /// once by a connection that is served, whatever the engine does.
    async fn served(s: &mut TcpStream) -> bool {
        if s.write_all(b"GET /debug/vars HTTP/1.1\r\nHost: d\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        // The proxy writes its own small answers in one piece.
        let mut answer = [0u8; 4096];
        matches!(s.read(&mut answer).await, Ok(n) if answer[..n].starts_with(b"HTTP/1.1 403") && answer[..n].ends_with(b"}\n"))
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// What [`serve`] needs, with dockerd nowhere.
    fn config(open: Open) -> Config {
        Config {
            open,
            upstream: PathBuf::from("/nonexistent/docker.sock"),
            limits: Limits::default(),
            policy: crate::policy::Policy::permissive(),
            audit: crate::audit::Audit::file(Path::new("/dev/null")).unwrap(),
            ping_ttl: Duration::ZERO,
            pins_dir: None,
            network_mtu: None,
        }
    }

    /// The supervisor gone (its latch dropped) before the engine was ever
    /// Ready: a serve waiting to bind ends, binding nothing. It used to read
    /// the state again after each change, still Starting, and spin.
    #[tokio::test(start_paused = true)]
    async fn a_latch_dropped_before_ready_ends_a_serve_waiting_to_bind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let endpoint = Endpoint::Unix {
            path: path.clone(),
            mode: 0o660,
            gid: None,
        };
        let (latch, readiness) = crate::readiness::channel();
        let serving = tokio::spawn(serve(
            config(Open::WhenReady(vec![endpoint])),
            readiness,
            Arc::new(Metrics::default()),
            std::future::pending(),
        ));
        tokio::task::yield_now().await;
        latch.set(State::Restarting);
        tokio::task::yield_now().await;
        assert!(!serving.is_finished(), "waits for Ready");
        drop(latch);
        let ended = tokio::time::timeout(Duration::from_secs(1), serving).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        assert!(!path.exists(), "nothing was bound");
    }

    /// `shutdown` alone stops a serve: the socket file goes, and new
    /// connects are refused.
    #[tokio::test]
    async fn shutdown_closes_the_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listeners = Listeners::bind(&[Endpoint::Unix {
            path: path.clone(),
            mode: 0o660,
            gid: None,
        }])
        .await
        .unwrap();
        let (_latch, readiness) = crate::readiness::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = Arc::new(Metrics::default());
        let serving = tokio::spawn(serve(
            config(Open::Now(listeners)),
            readiness,
            metrics.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        until("listening", || {
            metrics.listeners_bound.load(Ordering::Acquire)
        })
        .await;
        tokio::net::UnixStream::connect(&path).await.unwrap();
        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
        assert!(!path.exists(), "the socket file is removed");
        assert!(!metrics.listeners_bound.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once_and_counted() {
        let (shared, _latch) = forward::test_shared(
            Limits::default(),
            crate::policy::Policy::ci_safe(),
            PathBuf::from("/nonexistent/docker.sock"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = shared.metrics.clone();
        let accepting = tokio::spawn(accept_loop(
            Bound::Tcp(listener, None),
            shared,
            Arc::new(ConnectionCap::new(2)),
        ));
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        until("two connections open", || metrics.open_connections() == 2).await;

        let mut over = TcpStream::connect(addr).await.unwrap();
        assert!(
            !served(&mut over).await,
            "a third connection over a cap of two was served"
        );
        let text = metrics.render_to_string();
        assert!(
            text.contains("dind_proxy_connections_refused_total 1"),
            "{text}"
        );
        // The open ones go on working, again and again.
        assert!(served(&mut a).await && served(&mut b).await && served(&mut a).await);

        drop(a);
        until("a closed connection frees its place", || {
            metrics.open_connections() == 1
        })
        .await;
        let mut next = TcpStream::connect(addr).await.unwrap();
        assert!(served(&mut next).await, "a place was free");
        accepting.abort();
    }
}
