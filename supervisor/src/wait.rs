//! `dind-supervisor wait`: block until the Docker engine answers
//! `GET /_ping` with 200, reached the way the docker CLI reaches it, for job
//! scripts and probes.
//!
//! The address comes from `--host` or `DOCKER_HOST` (default
//! `unix:///var/run/docker.sock`); `DOCKER_TLS_VERIFY`, `DOCKER_TLS` and
//! `DOCKER_CERT_PATH` keep their docker CLI meaning. Every attempt starts
//! from scratch: certificate files are re-read (the service writes them to a
//! shared volume after the job may have started), the name is re-resolved
//! (a compose or pod alias may appear late), then connect, TLS and
//! `GET /_ping`, all inside one short per-attempt deadline.
//!
//! A failed attempt is classified into a [`Cause`]; on timeout the last one
//! is the error, worded for a CI log with the fix where one is obvious.
//!
//! Names are resolved in pure Rust (the binary is static, so no NSS):
//! `/etc/hosts` first, as glibc's `hosts: files dns` does, then
//! hickory-resolver configured from `/etc/resolv.conf`.

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Hosts, Name, TokioResolver};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use nix::errno::Errno;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout_at, Instant};

use crate::cli::WaitArgs;
use crate::env::{Env, DOCKER_CERT_PATH, DOCKER_HOST, DOCKER_TLS, DOCKER_TLS_VERIFY, HOME};

const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
const PLAIN_PORT: u16 = 2375;
const TLS_PORT: u16 = 2376;
const PING_PATH: &str = "/_ping";
/// The docker CLI's Host header for unix sockets.
const UNIX_AUTHORITY: &str = "api.moby.localhost";
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Enough for any error body worth quoting.
const MAX_BODY: usize = 16 * 1024;
const MAX_MESSAGE: usize = 200;
/// What Go's net/http answers to plain HTTP on a TLS port.
const GO_TLS_PORT_ANSWER: &str = "Client sent an HTTP request to an HTTPS server";

/// Waits for the engine named by `args` and the `DOCKER_*` variables in
/// `env`. On success prints `engine ready at URL after 1.23s` to stderr;
/// the error is returned unprinted (its Display is the one-line message).
pub async fn run(args: &WaitArgs, env: &dyn Env) -> Result<Waited, WaitError> {
    let target = Target::from_env(args.host.as_deref(), env)?;
    let waited = wait(&target, &Probe::default(), args.timeout).await?;
    eprintln!("{waited}");
    Ok(waited)
}

/// A successful wait.
#[derive(Debug, Clone)]
pub struct Waited {
    /// The engine's address as `unix://…` or `tcp://host:port`.
    pub target: String,
    pub elapsed: Duration,
    pub attempts: u32,
}

impl std::fmt::Display for Waited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "engine ready at {} after {:.2}s ({} attempt{})",
            self.target,
            self.elapsed.as_secs_f64(),
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

/// Why `wait` failed. Display is a complete one-line message.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The address or TLS settings are unusable: retrying cannot help.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The engine did not answer 200 in time; `cause` is the last failure.
    #[error("the engine at {target} is not ready after {}: {cause}", fmt_duration(*.timeout))]
    NotReady {
        target: String,
        timeout: Duration,
        attempts: u32,
        cause: Cause,
    },
}

/// A `DOCKER_HOST` (or `--host`) value or TLS setting we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("docker host `{url}`: the {scheme}:// scheme is not supported here; use unix:///path/to/docker.sock or tcp://host:port")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("docker host `{url}` names no socket: use e.g. unix:///var/run/docker.sock")]
    NoSocketPath { url: String },
    #[error("docker host `{url}`: `{port}` is not a port number (1-65535)")]
    BadPort { url: String, port: String },
    #[error("docker host `{url}`: put an IPv6 address in brackets, e.g. tcp://[::1]:2376")]
    Ipv6WithoutBrackets { url: String },
    #[error("docker host `{url}`: `{host}` is not a host name or IP address")]
    BadHost { url: String, host: String },
    #[error("TLS is on (DOCKER_TLS_VERIFY or DOCKER_TLS) but neither DOCKER_CERT_PATH nor HOME is set: set DOCKER_CERT_PATH to the client certificate directory")]
    NoCertPath,
}

/// Where the engine is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    /// TLS settings; always None for unix sockets (the docker CLI ignores
    /// TLS there too).
    pub tls: Option<TlsFiles>,
    /// Request path: `/_ping`, under the URL's path prefix if it has one.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: Host, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Used as is; a TLS certificate must carry it as an IP SAN.
    Ip(IpAddr),
    /// Resolved at every attempt.
    Name(String),
}

/// The docker CLI's client TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Holds `ca.pem`, `cert.pem`, `key.pem`.
    pub dir: PathBuf,
    /// `DOCKER_TLS_VERIFY`: check the server against `ca.pem`, and require
    /// all three files. Without it (`DOCKER_TLS`) any server certificate is
    /// accepted and the client certificate is sent when both files exist.
    pub verify: bool,
}

impl Target {
    /// The docker CLI's rules: `flag`, else a non-empty `DOCKER_HOST`, else
    /// the default socket; TLS from `DOCKER_TLS_VERIFY`/`DOCKER_TLS`.
    ///
    /// One deliberate difference: `tcp://host` without a port means 2376
    /// when TLS is on (the docker CLI always assumes 2375).
    pub fn from_env(flag: Option<&str>, env: &dyn Env) -> Result<Target, HostError> {
        let non_empty = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
        let url = flag
            .filter(|h| !h.trim().is_empty())
            .map(str::to_owned)
            .or_else(|| non_empty(DOCKER_HOST))
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let verify = non_empty(DOCKER_TLS_VERIFY).is_some();
        let tls_on = verify || non_empty(DOCKER_TLS).is_some();
        let tls = move || {
            if !tls_on {
                return Ok(None);
            }
            let dir = non_empty(DOCKER_CERT_PATH)
                .map(PathBuf::from)
                .or_else(|| non_empty(HOME).map(|h| Path::new(&h).join(".docker")))
                .ok_or(HostError::NoCertPath)?;
            Ok(Some(TlsFiles { dir, verify }))
        };
        Target::parse(&url, tls_on, tls)
    }

    /// Parses `unix://PATH`, `tcp://HOST[:PORT][/PREFIX]` or a bare
    /// `HOST[:PORT]`; `tls` is consulted for TCP only.
    fn parse(
        url: &str,
        tls_on: bool,
        tls: impl FnOnce() -> Result<Option<TlsFiles>, HostError>,
    ) -> Result<Target, HostError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").unwrap_or(("tcp", url));
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                if rest.is_empty() {
                    return Err(HostError::NoSocketPath { url: url.into() });
                }
                Ok(Target {
                    endpoint: Endpoint::Unix(PathBuf::from(rest)),
                    tls: None,
                    path: PING_PATH.into(),
                })
            }
            "tcp" => {
                let default_port = if tls_on { TLS_PORT } else { PLAIN_PORT };
                let (host, port, prefix) = parse_tcp(url, rest, default_port)?;
                Ok(Target {
                    endpoint: Endpoint::Tcp { host, port },
                    tls: tls()?,
                    path: format!("{}{PING_PATH}", prefix.trim_end_matches('/')),
                })
            }
            other => Err(HostError::UnsupportedScheme {
                url: url.into(),
                scheme: other.into(),
            }),
        }
    }

    /// `host:port`, or the socket path: what messages name.
    fn authority(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Tcp { host, port } => authority(host, *port),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{}", authority(host, *port)),
        }
    }
}

fn authority(host: &Host, port: u16) -> String {
    match host {
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Host::Ip(IpAddr::V4(ip)) => format!("{ip}:{port}"),
        Host::Name(name) => format!("{name}:{port}"),
    }
}

/// `rest` is what follows `tcp://`: `HOST[:PORT][/PREFIX]`, with HOST an
/// IPv4 address, a name, or `[IPv6]`. An empty HOST is localhost (docker CLI).
fn parse_tcp(url: &str, rest: &str, default_port: u16) -> Result<(Host, u16, String), HostError> {
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| HostError::BadHost {
                url: url.into(),
                host: hostport.into(),
            })?;
        let ip = Ipv6Addr::from_str(inside).map_err(|_| HostError::BadHost {
            url: url.into(),
            host: inside.into(),
        })?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| HostError::BadHost {
                url: url.into(),
                host: hostport.into(),
            })?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        if hostport.matches(':').count() > 1 {
            return Err(HostError::Ipv6WithoutBrackets { url: url.into() });
        }
        let (name, port) = match hostport.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (hostport, None),
        };
        let host = if name.is_empty() {
            Host::Name("localhost".into())
        } else if let Ok(ip) = Ipv4Addr::from_str(name) {
            Host::Ip(IpAddr::V4(ip))
        } else if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && !name.starts_with(['.', '-'])
        {
            Host::Name(name.to_owned())
        } else {
            return Err(HostError::BadHost {
                url: url.into(),
                host: name.into(),
            });
        };
        (host, port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(HostError::BadPort {
                    url: url.into(),
                    port: p.into(),
                })
            }
        },
    };
    Ok((host, port, prefix.to_owned()))
}

/// How single attempts are made: the deadline and where name resolution
/// reads its files (tests point these elsewhere).
#[derive(Debug, Clone)]
pub struct Probe {
    /// Bounds resolution, connect, TLS and the HTTP exchange together.
    pub attempt_timeout: Duration,
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            attempt_timeout: ATTEMPT_TIMEOUT,
            hosts_file: PathBuf::from("/etc/hosts"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// The stage an attempt was in when the peer hung up or went quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    TlsHandshake,
    Request,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::TlsHandshake => "the TLS handshake",
            Stage::Request => "the request",
        })
    }
}

/// Why one attempt failed. Display is one line for a CI log, with the fix
/// where one is obvious. `addr` is `host:port` as the user wrote it (plus
/// the IP when a name was resolved); `path` is a file or socket path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    #[error(
        "`{host}` does not resolve ({reason}): is the service running, and is its alias `{host}`?"
    )]
    Unresolvable { host: String, reason: String },
    #[error("`{host}` does not resolve (no answer from the name servers within {}): is the service running, and is its alias `{host}`?", fmt_duration(*.after))]
    ResolveTimeout { host: String, after: Duration },
    #[error("nothing listens on {addr} yet")]
    Refused { addr: String },
    #[error("{addr} did not accept the connection within {}: packets are dropped on the way (a firewall, or the wrong address?)", fmt_duration(*.after))]
    ConnectTimeout { addr: String, after: Duration },
    #[error("{addr} is unreachable ({reason}): this job has no route to the service's network")]
    Unreachable { addr: String, reason: String },
    #[error("{} does not exist yet", .path.display())]
    SocketMissing { path: PathBuf },
    #[error("permission denied on {}: run the job as root or in the socket's group", .path.display())]
    SocketDenied { path: PathBuf },
    #[error("{} exists but nothing accepts connections on it yet", .path.display())]
    SocketRefused { path: PathBuf },
    #[error("{} does not exist yet: with DOCKER_TLS_VERIFY set, the service writes the client certificates to the volume shared at DOCKER_CERT_PATH (is it mounted in the job?)", .path.display())]
    CertMissing { path: PathBuf },
    #[error("{} cannot be used: {reason}", .path.display())]
    CertUnusable { path: PathBuf, reason: String },
    #[error("the certificate of {addr} is not signed by {}: DOCKER_CERT_PATH holds the certificates of another service instance (a stale volume?)", .ca.display())]
    UnknownCa { addr: String, ca: PathBuf },
    #[error("the certificate of {addr} is not valid for `{host}`{}: connect by a name it lists, or add `{host}` to DOCKER_TLS_SAN on the service", listed(.presented))]
    NameMismatch {
        addr: String,
        host: String,
        presented: Vec<String>,
    },
    #[error("the certificate of {addr} {reason}: check the clocks, or let the service re-issue its certificates")]
    CertTime { addr: String, reason: String },
    #[error("{addr} rejected our client certificate (TLS alert {alert}): cert.pem in DOCKER_CERT_PATH is missing or not signed by the service's CA")]
    ClientCertRejected { addr: String, alert: String },
    #[error("{addr} does not speak TLS (a plain HTTP port?): use port 2375 and unset DOCKER_TLS_VERIFY, or the TLS port 2376")]
    NotTls { addr: String },
    #[error("{addr} expects TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH, or use the plain port 2375")]
    TlsRequired { addr: String },
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("{addr} accepted the connection but {stage} did not finish within {}", fmt_duration(*.after))]
    NoAnswer {
        addr: String,
        stage: Stage,
        after: Duration,
    },
    #[error("{addr} closed the connection during {stage}")]
    Closed { addr: String, stage: Stage },
    #[error("{addr} does not answer HTTP ({reason}){}", if *.tls { "" } else { ": a TLS port? then set DOCKER_TLS_VERIFY=1" })]
    NotHttp {
        addr: String,
        reason: String,
        tls: bool,
    },
    #[error("the engine answered {}{}", status_text(*.status), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        status: u16,
        message: Option<String>,
    },
    #[error("cannot reach {addr}: {reason}")]
    Io { addr: String, reason: String },
}

impl Cause {
    /// A deadline ran out, as opposed to a definite answer.
    fn is_timeout(&self) -> bool {
        matches!(
            self,
            Cause::ResolveTimeout { .. } | Cause::ConnectTimeout { .. } | Cause::NoAnswer { .. }
        )
    }
}

fn fmt_duration(d: Duration) -> humantime::FormattedDuration {
    // Whole milliseconds: nanosecond noise helps nobody.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it lists {})", names.join(", "))
    }
}

fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// Retries [`ping_once`] every ~250 ms until 200 or `timeout`; logs each
/// change of cause, not every attempt.
pub async fn wait(target: &Target, probe: &Probe, timeout: Duration) -> Result<Waited, WaitError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last: Option<Cause> = None;
    let mut attempts = 0u32;
    loop {
        let attempt_started = Instant::now();
        let full = attempt_started + probe.attempt_timeout;
        let attempt_deadline = full.min(deadline);
        attempts += 1;
        let cause = match attempt(target, probe, attempt_deadline).await {
            Ok(()) => {
                return Ok(Waited {
                    target: target.to_string(),
                    elapsed: started.elapsed(),
                    attempts,
                })
            }
            Err(cause) => cause,
        };
        // An attempt cut short by the overall deadline only knows that time
        // ran out; an earlier complete attempt knows more.
        let cut_short = attempt_deadline < full && cause.is_timeout();
        let cause = match last.take() {
            Some(previous) if cut_short => previous,
            previous => {
                if previous.as_ref() != Some(&cause) {
                    tracing::info!(
                        engine = %target,
                        cause = %cause,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "engine not ready yet"
                    );
                }
                cause
            }
        };
        let next = attempt_started + RETRY_INTERVAL;
        if next >= deadline || Instant::now() >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(WaitError::NotReady {
                target: target.to_string(),
                timeout,
                attempts,
                cause,
            });
        }
        last = Some(cause);
        tokio::time::sleep_until(next).await;
    }
}

/// One attempt: certificates, resolution, connect, TLS, `GET` — within
/// `probe.attempt_timeout`.
pub async fn ping_once(target: &Target, probe: &Probe) -> Result<(), Cause> {
    attempt(target, probe, Instant::now() + probe.attempt_timeout).await
}

/// `health`: one probe of the local `/readyz`; the wildcard address
/// means this host.
pub async fn health(
    health_addr: std::net::SocketAddr,
    attempt_timeout: Duration,
) -> Result<(), Cause> {
    let mut addr = health_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let target = Target {
        endpoint: Endpoint::Tcp {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        },
        tls: None,
        path: "/readyz".into(),
    };
    let probe = Probe {
        attempt_timeout,
        ..Default::default()
    };
    ping_once(&target, &probe).await
}

async fn attempt(target: &Target, probe: &Probe, deadline: Instant) -> Result<(), Cause> {
    let started = Instant::now();
    match &target.endpoint {
        Endpoint::Unix(path) => {
            let stream = match timeout_at(deadline, UnixStream::connect(path)).await {
                // A full accept backlog: the engine is alive but stuck.
                Err(_) => {
                    return Err(Cause::ConnectTimeout {
                        addr: path.display().to_string(),
                        after: started.elapsed(),
                    })
                }
                Ok(Err(e)) => return Err(unix_cause(path, &e)),
                Ok(Ok(s)) => s,
            };
            let ctx = Ctx {
                addr: path.display().to_string(),
                started,
                tls: None,
            };
            exchange(stream, UNIX_AUTHORITY, &target.path, &ctx, deadline).await
        }
        Endpoint::Tcp { host, port } => {
            // Certificates first: they are local, and while they are missing
            // nothing else can succeed.
            let tls = match &target.tls {
                Some(files) => Some((client_config(files)?, files)),
                None => None,
            };
            let ips = resolve(host, probe, deadline).await?;
            let (stream, addr) = connect(host, *port, &ips, deadline, started).await?;
            let authority = target.authority();
            let Some((config, files)) = tls else {
                let ctx = Ctx {
                    addr,
                    started,
                    tls: None,
                };
                return exchange(stream, &authority, &target.path, &ctx, deadline).await;
            };
            let ctx = Ctx {
                addr,
                started,
                tls: Some((host, files)),
            };
            let server_name = match host {
                Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
                Host::Name(name) => ServerName::try_from(name.clone()).map_err(|e| Cause::Tls {
                    addr: ctx.addr.clone(),
                    reason: format!("`{name}` is not a valid TLS server name: {e}"),
                })?,
            };
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = match timeout_at(deadline, connector.connect(server_name, stream)).await {
                Err(_) => return Err(ctx.no_answer(Stage::TlsHandshake)),
                Ok(Err(e)) => return Err(ctx.classify(&e, Stage::TlsHandshake)),
                Ok(Ok(s)) => s,
            };
            exchange(stream, &authority, &target.path, &ctx, deadline).await
        }
    }
}

/// What error classification needs to know about the attempt.
struct Ctx<'a> {
    /// What messages name: `host:port (ip)` or the socket path.
    addr: String,
    started: Instant,
    /// The name the certificate must carry, and where its CA came from.
    tls: Option<(&'a Host, &'a TlsFiles)>,
}

impl Ctx<'_> {
    fn no_answer(&self, stage: Stage) -> Cause {
        Cause::NoAnswer {
            addr: self.addr.clone(),
            stage,
            after: self.started.elapsed(),
        }
    }

    /// Classifies an error from the TLS handshake or the HTTP exchange by
    /// the typed errors in its source chain.
    fn classify(&self, err: &(dyn StdError + 'static), stage: Stage) -> Cause {
        if let (Some((host, files)), Some(tls)) = (self.tls, find_in_chain::<rustls::Error>(err)) {
            return tls_cause(tls, &self.addr, host, files);
        }
        if let Some(h) = find_in_chain::<hyper::Error>(err) {
            if h.is_parse() {
                return Cause::NotHttp {
                    addr: self.addr.clone(),
                    reason: h.to_string(),
                    tls: self.tls.is_some(),
                };
            }
        }
        if let Some(e) = find_in_chain::<io::Error>(err) {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => Cause::Closed {
                    addr: self.addr.clone(),
                    stage,
                },
                _ => Cause::Io {
                    addr: self.addr.clone(),
                    reason: e.to_string(),
                },
            };
        }
        if let Some(h) = find_in_chain::<hyper::Error>(err) {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return Cause::Closed {
                    addr: self.addr.clone(),
                    stage,
                };
            }
        }
        Cause::Io {
            addr: self.addr.clone(),
            reason: err.to_string(),
        }
    }
}

/// Finds a `T` in `err`'s source chain, looking inside `io::Error`s too
/// (their `source()` skips the wrapped error itself).
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(t) = find_in_chain::<T>(inner) {
                return Some(t);
            }
        }
        next = e.source();
    }
    None
}

fn tls_cause(err: &rustls::Error, addr: &str, host: &Host, files: &TlsFiles) -> Cause {
    let addr = addr.to_owned();
    let host_text = || match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.clone(),
    };
    match err {
        // BadSignature: a CA with the same name but another key, as when a
        // volume keeps the client files of an earlier service instance.
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            Cause::UnknownCa {
                addr,
                ca: files.dir.join("ca.pem"),
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => Cause::NameMismatch {
            addr,
            host: host_text(),
            presented: Vec::new(),
        },
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => {
            Cause::NameMismatch {
                addr,
                host: host_text(),
                presented: presented.clone(),
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            Cause::CertTime {
                addr,
                reason: "has expired".into(),
            }
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => Cause::CertTime {
            addr,
            reason: "is not valid yet".into(),
        },
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied
            // The signature on our certificate did not verify: a client
            // certificate from a CA with the same name but another key.
            | AlertDescription::DecryptError),
        ) => Cause::ClientCertRejected {
            addr,
            alert: format!("{alert:?}"),
        },
        // Bytes that are no TLS record: typically "HTTP/1.1 400 Bad Request"
        // from a plain HTTP server answering our ClientHello.
        rustls::Error::InvalidMessage(_) => Cause::NotTls { addr },
        other => Cause::Tls {
            addr,
            reason: other.to_string(),
        },
    }
}

fn unix_cause(path: &Path, err: &io::Error) -> Cause {
    let path = path.to_owned();
    match err.kind() {
        io::ErrorKind::NotFound => Cause::SocketMissing { path },
        io::ErrorKind::PermissionDenied => Cause::SocketDenied { path },
        io::ErrorKind::ConnectionRefused => Cause::SocketRefused { path },
        _ => Cause::Io {
            addr: path.display().to_string(),
            reason: err.to_string(),
        },
    }
}

/// `/etc/hosts` first (glibc's `files`), then DNS per `/etc/resolv.conf`;
/// IP literals as they are.
async fn resolve(host: &Host, probe: &Probe, deadline: Instant) -> Result<Vec<IpAddr>, Cause> {
    let name = match host {
        Host::Ip(ip) => return Ok(vec![*ip]),
        Host::Name(name) => name,
    };
    let unresolvable = |reason: String| Cause::Unresolvable {
        host: name.clone(),
        reason,
    };
    let parsed =
        Name::from_str(name).map_err(|e| unresolvable(format!("not a valid name: {e}")))?;
    let ips = hosts_lookup(&probe.hosts_file, &parsed);
    if !ips.is_empty() {
        return Ok(ips);
    }
    let (config, mut options) = resolver_config(&probe.resolv_conf);
    options.use_hosts_file = ResolveHosts::Never; // consulted above
    let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build();
    let started = Instant::now();
    match timeout_at(deadline, resolver.lookup_ip(parsed)).await {
        Err(_) => Err(Cause::ResolveTimeout {
            host: name.clone(),
            after: started.elapsed(),
        }),
        Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => {
            Err(unresolvable("no such name".into()))
        }
        Ok(Err(e)) => Err(unresolvable(e.to_string())),
        Ok(Ok(lookup)) => {
            let ips: Vec<IpAddr> = lookup.iter().collect();
            if ips.is_empty() {
                Err(unresolvable("no such name".into()))
            } else {
                Ok(ips)
            }
        }
    }
}

/// The addresses `/etc/hosts` gives `name`, IPv4 first; empty when the file
/// is missing or does not list it.
fn hosts_lookup(path: &Path, name: &Name) -> Vec<IpAddr> {
    let mut hosts = Hosts::default();
    let read = std::fs::File::open(path).and_then(|f| hosts.read_hosts_conf(f));
    if let Err(e) = read {
        tracing::debug!(path = %path.display(), error = %e, "hosts file not used");
        return Vec::new();
    }
    [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(|t| hosts.lookup_static_host(&Query::query(name.clone(), t)))
        .flat_map(|lookup| {
            lookup
                .iter()
                .filter_map(|r| r.ip_addr())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `/etc/resolv.conf`, or when it is missing or unreadable (a scratch
/// image) what libc and Go assume then: a name server on localhost.
fn resolver_config(path: &Path) -> (ResolverConfig, ResolverOpts) {
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|data| {
            hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| e.to_string())
        });
    match parsed {
        Ok(conf) => conf,
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "resolv.conf not used; asking a name server on localhost");
            let servers = NameServerConfigGroup::from_ips_clear(
                &[
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
                53,
                true,
            );
            (
                ResolverConfig::from_parts(None, vec![], servers),
                ResolverOpts::default(),
            )
        }
    }
}

/// Tries the addresses in order; returns the stream and `host:port` (with
/// the IP when `host` is a name) for messages.
async fn connect(
    host: &Host,
    port: u16,
    ips: &[IpAddr],
    deadline: Instant,
    started: Instant,
) -> Result<(TcpStream, String), Cause> {
    let base = authority(host, port);
    let mut last = None;
    for ip in ips {
        let addr = match host {
            Host::Name(_) => format!("{base} ({ip})"),
            Host::Ip(_) => base.clone(),
        };
        match timeout_at(deadline, TcpStream::connect(SocketAddr::new(*ip, port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(e)) => last = Some(tcp_cause(addr, &e, started)),
            Err(_) => {
                last = Some(Cause::ConnectTimeout {
                    addr,
                    after: started.elapsed(),
                });
                break;
            }
        }
    }
    Err(last.unwrap_or_else(|| Cause::Unresolvable {
        host: base,
        reason: "no addresses".into(),
    }))
}

fn tcp_cause(addr: String, err: &io::Error, started: Instant) -> Cause {
    let errno = err.raw_os_error().map(Errno::from_raw);
    match (err.kind(), errno) {
        (io::ErrorKind::ConnectionRefused, _) => Cause::Refused { addr },
        (_, Some(Errno::EHOSTUNREACH | Errno::ENETUNREACH | Errno::EADDRNOTAVAIL)) => {
            Cause::Unreachable {
                addr,
                reason: err.to_string(),
            }
        }
        (io::ErrorKind::TimedOut, _) => Cause::ConnectTimeout {
            addr,
            after: started.elapsed(),
        },
        _ => Cause::Io {
            addr,
            reason: err.to_string(),
        },
    }
}

/// `GET path`, judged: 200 is ready, anything else a [`Cause`].
async fn exchange<S>(
    stream: S,
    authority: &str,
    path: &str,
    ctx: &Ctx<'_>,
    deadline: Instant,
) -> Result<(), Cause>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match http_get(stream, authority, path, deadline).await {
        Exchange::TimedOut => Err(ctx.no_answer(Stage::Request)),
        Exchange::Failed(e) => Err(ctx.classify(&*e, Stage::Request)),
        Exchange::Answer { status, .. } if status == StatusCode::OK => Ok(()),
        Exchange::Answer { status, body } => {
            let message = message_of(&body);
            if status == StatusCode::BAD_REQUEST
                && message
                    .as_deref()
                    .is_some_and(|m| m.contains(GO_TLS_PORT_ANSWER))
            {
                return Err(Cause::TlsRequired {
                    addr: ctx.addr.clone(),
                });
            }
            Err(Cause::Status {
                status: status.as_u16(),
                message,
            })
        }
    }
}

/// How the exchange ended, before classification.
enum Exchange {
    Answer { status: StatusCode, body: Bytes },
    TimedOut,
    Failed(Box<dyn StdError + Send + Sync>),
}

/// `GET path` on a fresh HTTP/1.1 connection; drives the connection and the
/// request together so that the connection's own error, usually the more
/// precise one (a TLS alert), is not lost.
async fn http_get<S>(stream: S, authority: &str, path: &str, deadline: Instant) -> Exchange
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = match Request::get(path)
        .header(HOST, authority)
        .header(
            USER_AGENT,
            concat!("dind-supervisor/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return Exchange::Failed(e.into()),
    };
    let run = async move {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let ask = async move {
            let response = sender.send_request(request).await;
            // Dropping the sender lets the connection close once the body
            // is read.
            drop(sender);
            let response = response?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY).collect().await;
            Ok::<_, Box<dyn StdError + Send + Sync>>((status, body))
        };
        let mut conn = std::pin::pin!(conn);
        let mut ask = std::pin::pin!(ask);
        // The answer wins as soon as it is complete: a keep-alive connection
        // need not end. A failed request defers to the connection's error.
        let asked = tokio::select! {
            biased;
            asked = &mut ask => match asked {
                Ok(answer) => Ok(answer),
                Err(e) => Err(conn.await.err().map_or(e, Into::into)),
            },
            ended = &mut conn => match ended {
                Err(conn_err) => Err(conn_err.into()),
                Ok(()) => ask.await,
            },
        };
        Ok::<_, Box<dyn StdError + Send + Sync>>(match asked {
            Ok((status, Ok(body))) => Exchange::Answer {
                status,
                body: body.to_bytes(),
            },
            // A status without its full body still says enough.
            Ok((status, Err(_))) => Exchange::Answer {
                status,
                body: Bytes::new(),
            },
            Err(e) => Exchange::Failed(e),
        })
    };
    match timeout_at(deadline, run).await {
        Err(_) => Exchange::TimedOut,
        Ok(Err(e)) => Exchange::Failed(e),
        Ok(Ok(exchange)) => exchange,
    }
}

/// The `message` of a Docker-style JSON error, else the body's text; one
/// line, printable, bounded.
fn message_of(body: &[u8]) -> Option<String> {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let text = match json
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(|m| m.as_str())
    {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let mut line = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>();
    if line.chars().count() > MAX_MESSAGE {
        line = line.chars().take(MAX_MESSAGE).collect::<String>() + "…";
    }
    (!line.is_empty()).then_some(line)
}

/// A client config from the files as they are now. Missing files are a
/// cause to retry on, not a configuration error: the service writes them
/// after the job may have started.
fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, Cause> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Cause::Tls {
            addr: files.dir.display().to_string(),
            reason: e.to_string(),
        })?;
    let ca_path = files.dir.join("ca.pem");
    let cert_path = files.dir.join("cert.pem");
    let key_path = files.dir.join("key.pem");
    let builder = if files.verify {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&ca_path)? {
            roots.add(cert).map_err(|e| Cause::CertUnusable {
                path: ca_path.clone(),
                reason: e.to_string(),
            })?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
    };
    let with_client_cert = files.verify || (cert_path.exists() && key_path.exists());
    let config = if with_client_cert {
        let chain = read_certs(&cert_path)?;
        let key = read_key(&key_path)?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Cause::CertUnusable {
                path: key_path.clone(),
                reason: e.to_string(),
            })?
    } else {
        builder.with_no_client_auth()
    };
    Ok(Arc::new(config))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, Cause> {
    std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Cause::CertMissing {
            path: path.to_owned(),
        },
        _ => Cause::CertUnusable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Cause> {
    let data = read_pem(path)?;
    let unusable = |reason: String| Cause::CertUnusable {
        path: path.to_owned(),
        reason,
    };
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    if certs.is_empty() {
        return Err(unusable("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Cause> {
    let data = read_pem(path)?;
    let unusable = |reason: String| Cause::CertUnusable {
        path: path.to_owned(),
        reason,
    };
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| unusable(e.to_string()))?
        .ok_or_else(|| unusable("no PEM private key in it".into()))
}

/// `DOCKER_TLS` without `DOCKER_TLS_VERIFY`: encrypt, but accept any server
/// certificate (handshake signatures are still checked), as the docker CLI
/// does.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use rustls::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UnixListener};

    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK";
    const RESTARTING: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 32\r\n\r\n{\"message\":\"engine restarting\"}\n";

    fn env<'a>(pairs: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    fn target(pairs: &[(&str, &str)]) -> Result<Target, HostError> {
        Target::from_env(None, &env(pairs))
    }

    fn tcp(host: Host, port: u16) -> Endpoint {
        Endpoint::Tcp { host, port }
    }

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    fn args(host: String, timeout: Duration) -> WaitArgs {
        WaitArgs {
            host: Some(host),
            timeout,
        }
    }

    /// A port on 127.0.0.1 that nothing listens on (bound, then released).
    async fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Reads a request head, then writes `answer` and closes.
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
    }

    async fn serve_unix(path: &Path, reply: &'static [u8]) {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, reply));
            }
        });
    }

    /// A plain TCP server on 127.0.0.1 that reads anything, then answers
    /// `reply` and closes (raw bytes, like a misconfigured peer).
    async fn serve_raw(reply: &'static [u8], wait_for_head: bool) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if wait_for_head {
                        answer(stream, reply).await;
                    } else {
                        let mut chunk = [0u8; 4096];
                        let _ = stream.read(&mut chunk).await;
                        let _ = stream.write_all(reply).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        port
    }

    /// A throwaway PKI. Every CA has the same name, as every instance of
    /// the service's CA does: a stale ca.pem differs only by its key.
    struct Ca(CertifiedIssuer<'static, KeyPair>);

    struct Leaf {
        cert: String,
        key: String,
    }

    impl Ca {
        fn new() -> Ca {
            Ca::named("docker:dind CA")
        }

        fn named(common_name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
        }

        fn pem(&self) -> String {
            self.0.pem()
        }

        fn issue(&self, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
            let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, "leaf");
            params.extended_key_usages = vec![purpose];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &*self.0).unwrap();
            Leaf {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        }

        fn server(&self, sans: &[&str]) -> Leaf {
            self.issue(sans, ExtendedKeyUsagePurpose::ServerAuth)
        }

        fn client(&self) -> Leaf {
            self.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth)
        }
    }

    /// Writes the docker CLI's files; each atomically, key.pem last, as the
    /// service does on a shared volume.
    fn write_client_files(dir: &Path, ca: &Ca, client: &Leaf) {
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("cert.pem", client.cert.clone()),
            ("key.pem", client.key.clone()),
        ] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
    }

    fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A TLS server on 127.0.0.1 that requires a client certificate from
    /// `ca` and answers 200 OK to any request, like dockerd with --tlsverify.
    async fn serve_tls(ca: &Ca, server: &Leaf) -> u16 {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in der_certs(&ca.pem()) {
            roots.add(cert).unwrap();
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let key = rustls_pemfile::private_key(&mut server.key.as_bytes())
            .unwrap()
            .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(der_certs(&server.cert), key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        answer(tls, OK).await;
                    }
                });
            }
        });
        port
    }

    fn tls_env<'a>(host: &'a str, dir: &'a str) -> HashMap<&'a str, &'a str> {
        env(&[
            ("DOCKER_HOST", host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", dir),
        ])
    }

    async fn ping(env: &HashMap<&str, &str>) -> Result<(), Cause> {
        let target = Target::from_env(None, env).unwrap();
        ping_once(&target, &Probe::default()).await
    }

    // --- DOCKER_HOST and TLS settings ---

    #[test]
    fn docker_host_forms_parse_like_the_docker_cli() {
        let t = target(&[]).unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix("/var/run/docker.sock".into()));
        assert_eq!(t.to_string(), "unix:///var/run/docker.sock");
        let t = target(&[("DOCKER_HOST", "")]).unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix("/var/run/docker.sock".into()));
        let t = target(&[("DOCKER_HOST", "unix:///run/user/1000/docker.sock")]).unwrap();
        assert_eq!(
            t.endpoint,
            Endpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(t.path, "/_ping");

        let t = target(&[("DOCKER_HOST", "tcp://docker:2375")]).unwrap();
        assert_eq!(t.endpoint, tcp(name("docker"), 2375));
        assert_eq!(t.tls, None);
        assert_eq!(t.to_string(), "tcp://docker:2375");
        assert_eq!(
            target(&[("DOCKER_HOST", "tcp://docker")]).unwrap().endpoint,
            tcp(name("docker"), 2375)
        );
        assert_eq!(
            target(&[("DOCKER_HOST", "docker:1234")]).unwrap().endpoint,
            tcp(name("docker"), 1234)
        );
        assert_eq!(
            target(&[("DOCKER_HOST", "tcp://:2375")]).unwrap().endpoint,
            tcp(name("localhost"), 2375)
        );
        assert_eq!(
            target(&[("DOCKER_HOST", "tcp://10.1.2.3:2376")])
                .unwrap()
                .endpoint,
            tcp(Host::Ip("10.1.2.3".parse().unwrap()), 2376)
        );
        let t = target(&[("DOCKER_HOST", "tcp://[fd00::1]:2376")]).unwrap();
        assert_eq!(t.endpoint, tcp(Host::Ip("fd00::1".parse().unwrap()), 2376));
        assert_eq!(t.to_string(), "tcp://[fd00::1]:2376");
        assert_eq!(
            target(&[("DOCKER_HOST", "tcp://[::1]")]).unwrap().endpoint,
            tcp(Host::Ip("::1".parse().unwrap()), 2375)
        );
        let t = target(&[("DOCKER_HOST", "tcp://docker:2375/prefix/")]).unwrap();
        assert_eq!(t.path, "/prefix/_ping");

        // --host wins over DOCKER_HOST.
        let t = Target::from_env(
            Some("tcp://other:1"),
            &env(&[("DOCKER_HOST", "tcp://docker:2375")]),
        )
        .unwrap();
        assert_eq!(t.endpoint, tcp(name("other"), 1));
    }

    #[test]
    fn tls_settings_follow_the_docker_cli() {
        let t = target(&[
            ("DOCKER_HOST", "tcp://docker"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/certs/client"),
        ])
        .unwrap();
        assert_eq!(t.endpoint, tcp(name("docker"), 2376));
        assert_eq!(
            t.tls,
            Some(TlsFiles {
                dir: "/certs/client".into(),
                verify: true
            })
        );
        // Any non-empty value turns verification on, "0" included.
        let t = target(&[
            ("DOCKER_HOST", "tcp://docker:2376"),
            ("DOCKER_TLS_VERIFY", "0"),
            ("HOME", "/home/ci"),
        ])
        .unwrap();
        assert_eq!(
            t.tls,
            Some(TlsFiles {
                dir: "/home/ci/.docker".into(),
                verify: true
            })
        );
        let t = target(&[("DOCKER_HOST", "tcp://docker"), ("DOCKER_TLS_VERIFY", "")]).unwrap();
        assert_eq!(t.tls, None);
        assert_eq!(t.endpoint, tcp(name("docker"), 2375));
        let t = target(&[
            ("DOCKER_HOST", "tcp://docker:2376"),
            ("DOCKER_TLS", "1"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(
            t.tls,
            Some(TlsFiles {
                dir: "/root/.docker".into(),
                verify: false
            })
        );
        // TLS is ignored for unix sockets, so HOME does not matter there.
        let t = target(&[("DOCKER_TLS_VERIFY", "1")]).unwrap();
        assert_eq!(t.tls, None);
        assert_eq!(
            target(&[
                ("DOCKER_HOST", "tcp://docker:2376"),
                ("DOCKER_TLS_VERIFY", "1")
            ]),
            Err(HostError::NoCertPath)
        );
    }

    #[test]
    fn bad_docker_hosts_are_refused_with_the_fix() {
        let err = |h: &str| target(&[("DOCKER_HOST", h)]).unwrap_err();
        let e = err("ssh://me@docker");
        assert!(
            matches!(e, HostError::UnsupportedScheme { ref scheme, .. } if scheme == "ssh"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("use unix:///path/to/docker.sock or tcp://host:port"),
            "{e}"
        );
        assert!(matches!(
            err("npipe:////./pipe/docker_engine"),
            HostError::UnsupportedScheme { .. }
        ));
        assert!(matches!(err("unix://"), HostError::NoSocketPath { .. }));
        assert!(matches!(
            err("tcp://docker:http"),
            HostError::BadPort { .. }
        ));
        assert!(matches!(err("tcp://docker:0"), HostError::BadPort { .. }));
        assert!(matches!(
            err("tcp://docker:65536"),
            HostError::BadPort { .. }
        ));
        assert!(matches!(err("tcp://docker:"), HostError::BadPort { .. }));
        assert!(matches!(
            err("tcp://fd00::1:2376"),
            HostError::Ipv6WithoutBrackets { .. }
        ));
        assert!(matches!(err("tcp://[fd00::1"), HostError::BadHost { .. }));
        assert!(matches!(
            err("tcp://[docker]:2376"),
            HostError::BadHost { .. }
        ));
        assert!(matches!(
            err("tcp://me@docker:2376"),
            HostError::BadHost { .. }
        ));
        assert!(matches!(err("tcp://[::1]x"), HostError::BadHost { .. }));
    }

    #[test]
    fn error_bodies_become_one_bounded_line() {
        assert_eq!(
            message_of(b"{\"message\":\"engine restarting\"}"),
            Some("engine restarting".into())
        );
        assert_eq!(
            message_of(b"proxy says\r\nnot\tready\n"),
            Some("proxy says not ready".into())
        );
        assert_eq!(message_of(b""), None);
        assert_eq!(
            message_of(&[b'x'; 500]).unwrap().chars().count(),
            MAX_MESSAGE + 1
        );
    }

    // --- unix sockets ---

    #[tokio::test]
    async fn missing_unix_socket_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let url = format!("unix://{}", sock.display());
        let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
        assert_eq!(cause, Cause::SocketMissing { path: sock.clone() });
        assert_eq!(
            cause.to_string(),
            format!("{} does not exist yet", sock.display())
        );
    }

    #[tokio::test]
    async fn unix_socket_answering_ok_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        serve_unix(&sock, OK).await;
        let waited = run(
            &args(format!("unix://{}", sock.display()), Duration::from_secs(2)),
            &env(&[]),
        )
        .await
        .unwrap();
        assert_eq!(waited.attempts, 1);
        assert!(waited.to_string().starts_with(&format!(
            "engine ready at unix://{} after 0.",
            sock.display()
        )));
    }

    #[tokio::test]
    async fn keep_alive_server_is_ready_without_closing() {
        // dockerd keeps connections open after answering.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut chunk = [0u8; 4096];
                    let _ = stream.read(&mut chunk).await;
                    let _ = stream.write_all(OK).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        let url = format!("tcp://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn engine_restarting_503_names_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        serve_unix(&sock, RESTARTING).await;
        let url = format!("unix://{}", sock.display());
        let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
        assert_eq!(
            cause,
            Cause::Status {
                status: 503,
                message: Some("engine restarting".into())
            }
        );
        assert_eq!(
            cause.to_string(),
            "the engine answered 503 Service Unavailable: engine restarting"
        );
    }

    #[tokio::test]
    async fn stale_unix_socket_file_is_not_accepting() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let url = format!("unix://{}", sock.display());
        let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
        assert_eq!(cause, Cause::SocketRefused { path: sock });
    }

    // --- TCP and names ---

    #[tokio::test]
    async fn no_listener_is_connection_refused() {
        let port = free_port().await;
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
        assert_eq!(
            cause,
            Cause::Refused {
                addr: format!("127.0.0.1:{port}")
            }
        );
        assert_eq!(
            cause.to_string(),
            format!("nothing listens on 127.0.0.1:{port} yet")
        );
    }

    #[tokio::test]
    async fn invalid_name_does_not_resolve_quickly() {
        let started = std::time::Instant::now();
        let cause = ping(&env(&[("DOCKER_HOST", "tcp://docker.invalid:2375")]))
            .await
            .unwrap_err();
        assert!(
            matches!(&cause, Cause::Unresolvable { host, .. } | Cause::ResolveTimeout { host, .. } if host == "docker.invalid"),
            "{cause:?}"
        );
        let text = cause.to_string();
        assert!(
            text.starts_with("`docker.invalid` does not resolve"),
            "{text}"
        );
        assert!(text.ends_with("is its alias `docker.invalid`?"), "{text}");
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn silent_name_server_is_bounded_and_does_not_resolve() {
        // A name server that never answers (TEST-NET-1): the attempt's
        // deadline, not the resolver's retries, ends the lookup.
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 192.0.2.1\noptions timeout:30 attempts:5\n",
        )
        .unwrap();
        let probe = Probe {
            attempt_timeout: Duration::from_millis(400),
            hosts_file: dir.path().join("no-hosts"),
            resolv_conf: resolv,
        };
        let target = Target::from_env(None, &env(&[("DOCKER_HOST", "tcp://docker:2375")])).unwrap();
        let started = std::time::Instant::now();
        let cause = ping_once(&target, &probe).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(&cause, Cause::Unresolvable { host, .. } | Cause::ResolveTimeout { host, .. } if host == "docker"),
            "{cause:?}"
        );
        assert!(
            cause.to_string().contains("`docker` does not resolve"),
            "{cause}"
        );
    }

    #[tokio::test]
    async fn hosts_file_is_consulted_before_dns() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "# comment\n127.0.0.1 localhost\n127.0.0.1 dind-wait-test docker\n",
        )
        .unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
        let probe = Probe {
            attempt_timeout: Duration::from_millis(1500),
            hosts_file: hosts,
            resolv_conf: resolv,
        };
        let port = serve_raw(OK, true).await;
        let target =
            Target::from_env(Some(&format!("tcp://dind-wait-test:{port}")), &env(&[])).unwrap();
        ping_once(&target, &probe).await.unwrap();
        let waited = wait(&target, &probe, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            waited.to_string()[..],
            format!(
                "engine ready at tcp://dind-wait-test:{port} after {:.2}s (1 attempt)",
                waited.elapsed.as_secs_f64()
            )
        );
    }

    #[tokio::test]
    async fn missing_resolv_conf_falls_back_and_still_uses_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 docker\n").unwrap();
        let probe = Probe {
            attempt_timeout: Duration::from_millis(1500),
            hosts_file: hosts,
            resolv_conf: dir.path().join("no-resolv.conf"),
        };
        let port = free_port().await;
        let target = Target::from_env(Some(&format!("tcp://docker:{port}")), &env(&[])).unwrap();
        let cause = ping_once(&target, &probe).await.unwrap_err();
        assert_eq!(
            cause,
            Cause::Refused {
                addr: format!("docker:{port} (127.0.0.1)")
            }
        );
    }

    #[tokio::test]
    async fn localhost_resolves_with_the_system_files() {
        let port = free_port().await;
        let url = format!("tcp://localhost:{port}");
        let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
        assert!(
            matches!(&cause, Cause::Refused { addr } if addr.starts_with(&format!("localhost:{port} ("))),
            "{cause:?}"
        );
    }

    #[tokio::test]
    async fn overall_timeout_is_honoured_and_names_the_last_cause() {
        let port = free_port().await;
        let started = std::time::Instant::now();
        let err = run(
            &args(format!("tcp://127.0.0.1:{port}"), Duration::from_secs(1)),
            &env(&[]),
        )
        .await
        .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(1500),
            "{elapsed:?}"
        );
        let WaitError::NotReady {
            attempts,
            ref cause,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert!((3..=5).contains(&attempts), "{attempts}");
        assert!(matches!(cause, Cause::Refused { .. }), "{cause:?}");
        assert_eq!(
            err.to_string(),
            format!("the engine at tcp://127.0.0.1:{port} is not ready after 1s: nothing listens on 127.0.0.1:{port} yet")
        );
    }

    #[tokio::test]
    async fn plain_request_to_a_go_tls_port_says_tls_is_expected() {
        // What Go's net/http answers to plain HTTP on a TLS listener.
        let port = serve_raw(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
            true,
        )
        .await;
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
        assert_eq!(
            cause,
            Cause::TlsRequired {
                addr: format!("127.0.0.1:{port}")
            }
        );
    }

    #[tokio::test]
    async fn plain_request_to_a_rustls_port_is_not_http() {
        let ca = Ca::new();
        let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&env(&[("DOCKER_HOST", &url)])).await.unwrap_err();
        assert!(
            matches!(&cause, Cause::NotHttp { tls: false, .. }),
            "{cause:?}"
        );
        assert!(
            cause
                .to_string()
                .ends_with("a TLS port? then set DOCKER_TLS_VERIFY=1"),
            "{cause}"
        );
    }

    // --- TLS ---

    #[tokio::test]
    async fn tls_with_the_right_files_is_ready() {
        let ca = Ca::new();
        let port = serve_tls(&ca, &ca.server(&["127.0.0.1", "localhost", "docker"])).await;
        let dir = tempfile::tempdir().unwrap();
        write_client_files(dir.path(), &ca, &ca.client());
        let d = dir.path().to_str().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        ping(&tls_env(&url, d)).await.unwrap();
        // By name, too: the name is the TLS server name.
        let url = format!("tcp://localhost:{port}");
        ping(&tls_env(&url, d)).await.unwrap();
    }

    #[tokio::test]
    async fn server_cert_from_another_ca_is_unknown_ca() {
        let ca = Ca::new();
        let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
        // A stale instance's CA (same name, other key), and a stranger's.
        for stale in [Ca::new(), Ca::named("some other CA")] {
            let dir = tempfile::tempdir().unwrap();
            write_client_files(dir.path(), &stale, &stale.client());
            let url = format!("tcp://127.0.0.1:{port}");
            let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
                .await
                .unwrap_err();
            assert_eq!(
                cause,
                Cause::UnknownCa {
                    addr: format!("127.0.0.1:{port}"),
                    ca: dir.path().join("ca.pem")
                }
            );
            assert!(cause.to_string().contains("is not signed by"), "{cause}");
        }
    }

    #[tokio::test]
    async fn server_cert_for_another_name_is_a_name_mismatch() {
        let ca = Ca::new();
        let port = serve_tls(&ca, &ca.server(&["docker", "10.9.9.9"])).await;
        let dir = tempfile::tempdir().unwrap();
        write_client_files(dir.path(), &ca, &ca.client());
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        let Cause::NameMismatch { host, .. } = &cause else {
            panic!("{cause:?}")
        };
        assert_eq!(host, "127.0.0.1");
        let text = cause.to_string();
        assert!(text.contains("is not valid for `127.0.0.1`"), "{text}");
        assert!(text.contains("DOCKER_TLS_SAN"), "{text}");
    }

    #[tokio::test]
    async fn client_cert_from_another_ca_is_rejected_by_the_server() {
        let ca = Ca::new();
        let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
        // The right CA to check the server, but our own certificate comes
        // from a stale instance's CA (same name: the server sees a bad
        // signature) or from a stranger's (unknown issuer).
        for (other, alert) in [
            (Ca::new(), "DecryptError"),
            (Ca::named("some other CA"), "UnknownCA"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write_client_files(dir.path(), &ca, &other.client());
            let url = format!("tcp://127.0.0.1:{port}");
            let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
                .await
                .unwrap_err();
            assert_eq!(
                cause,
                Cause::ClientCertRejected {
                    addr: format!("127.0.0.1:{port}"),
                    alert: alert.into()
                }
            );
            assert!(
                cause
                    .to_string()
                    .contains("rejected our client certificate"),
                "{cause}"
            );
        }
    }

    #[tokio::test]
    async fn no_client_cert_is_rejected_by_the_server() {
        // DOCKER_TLS without verification and without client files.
        let ca = Ca::new();
        let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let e = env(&[
            ("DOCKER_HOST", &url),
            ("DOCKER_TLS", "1"),
            ("DOCKER_CERT_PATH", dir.path().to_str().unwrap()),
        ]);
        let cause = ping(&e).await.unwrap_err();
        assert_eq!(
            cause,
            Cause::ClientCertRejected {
                addr: format!("127.0.0.1:{port}"),
                alert: "CertificateRequired".into()
            }
        );
    }

    #[tokio::test]
    async fn missing_cert_files_are_not_there_yet() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().await;
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(
            cause,
            Cause::CertMissing {
                path: dir.path().join("ca.pem")
            }
        );
        assert!(
            cause
                .to_string()
                .contains("does not exist yet: with DOCKER_TLS_VERIFY set"),
            "{cause}"
        );
        // With verification the client certificate is required too.
        let ca = Ca::new();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(
            cause,
            Cause::CertMissing {
                path: dir.path().join("cert.pem")
            }
        );
    }

    #[tokio::test]
    async fn empty_cert_file_cannot_be_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let url = "tcp://127.0.0.1:2376";
        let cause = ping(&tls_env(url, dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        assert!(
            matches!(&cause, Cause::CertUnusable { path, .. } if path.ends_with("ca.pem")),
            "{cause:?}"
        );
    }

    #[tokio::test]
    async fn wait_succeeds_once_the_cert_files_appear() {
        let ca = Ca::new();
        let port = serve_tls(&ca, &ca.server(&["127.0.0.1"])).await;
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().to_owned();
        let client = ca.client();
        let ca_pem = ca.pem();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Same layout as write_client_files, without sharing the issuer.
            for (name, pem) in [
                ("ca.pem", ca_pem),
                ("cert.pem", client.cert),
                ("key.pem", client.key),
            ] {
                let tmp = dir_path.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, pem).unwrap();
                std::fs::rename(&tmp, dir_path.join(name)).unwrap();
            }
        });
        let url = format!("tcp://127.0.0.1:{port}");
        let e = tls_env(&url, dir.path().to_str().unwrap());
        let waited = run(&args(url.clone(), Duration::from_secs(3)), &e)
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(waited.elapsed >= Duration::from_millis(500), "{waited}");
        assert!(waited.elapsed < Duration::from_millis(1500), "{waited}");
        assert!(waited.attempts >= 2, "{waited:?}");
    }

    #[tokio::test]
    async fn tls_to_a_plain_http_port_is_not_tls() {
        let ca = Ca::new();
        let dir = tempfile::tempdir().unwrap();
        write_client_files(dir.path(), &ca, &ca.client());
        // What Go's net/http answers to a TLS ClientHello.
        let port = serve_raw(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request",
            false,
        )
        .await;
        let url = format!("tcp://127.0.0.1:{port}");
        let cause = ping(&tls_env(&url, dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(
            cause,
            Cause::NotTls {
                addr: format!("127.0.0.1:{port}")
            }
        );
    }
}
