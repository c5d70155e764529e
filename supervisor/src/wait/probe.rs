//! One attempt: connect, TLS and `GET /_ping`, all inside one deadline,
//! with the answer judged into ready or a [`Cause`].

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout_at, Instant};

use super::*;

pub(super) const PING_PATH: &str = "/_ping";

/// The docker CLI's Host header for unix sockets.
pub(super) const UNIX_AUTHORITY: &str = "api.moby.localhost";

/// Enough for any error body worth quoting.
pub(super) const MAX_BODY: usize = 16 * 1024;

pub(super) const MAX_MESSAGE: usize = 200;

pub(super) async fn attempt(
    target: &Target,
    probe: &Probe,
    deadline: Instant,
) -> Result<(), Cause> {
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
pub(super) struct Ctx<'a> {
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

/// Tries the addresses in order; returns the stream and `host:port` (with
/// the IP when `host` is a name) for messages.
pub(super) async fn connect(
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

/// `GET path`, judged: 200 is ready, anything else a [`Cause`].
pub(super) async fn exchange<S>(
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
pub(super) enum Exchange {
    Answer { status: StatusCode, body: Bytes },
    TimedOut,
    Failed(Box<dyn StdError + Send + Sync>),
}

/// `GET path` on a fresh HTTP/1.1 connection; drives the connection and the
/// request together so that the connection's own error, usually the more
/// precise one (a TLS alert), is not lost.
pub(super) async fn http_get<S>(
    stream: S,
    authority: &str,
    path: &str,
    deadline: Instant,
) -> Exchange
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
pub(super) fn message_of(body: &[u8]) -> Option<String> {
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
