//! Connections to dockerd's private unix socket.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a call to dockerd failed. The kinds let a caller tell "not up yet"
/// (Connect) from "up but unhealthy" (Status, Timeout).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("HTTP exchange with {path} failed: {source}")]
    Http {
        path: PathBuf,
        #[source]
        source: hyper::Error,
    },
    #[error("{path} answered {uri} with status {status}")]
    Status {
        path: PathBuf,
        uri: String,
        status: u16,
    },
    #[error("{path} did not answer within {limit:?}")]
    Timeout { path: PathBuf, limit: Duration },
    #[error("{path} sent JSON we cannot read: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid request URI {0:?}")]
    BadUri(String),
}

/// What a successful `GET /_ping` tells about the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pong {
    /// The `Api-Version` header: the newest API version dockerd speaks.
    pub api_version: Option<String>,
    /// dockerd's version, from `Server: Docker/20.10.24 (linux)`.
    pub version: Option<String>,
}

/// Asks dockerd `GET /_ping` on its unix socket; Ok only for `200 OK`.
pub async fn ping(socket: &Path, limit: Duration) -> Result<Pong, UpstreamError> {
    let (head, _) = call(socket, Method::GET, "/_ping", limit).await?;
    let header = |name: &str| head.headers.get(name).and_then(|v| v.to_str().ok());
    Ok(Pong {
        api_version: header("api-version").map(str::to_owned),
        version: header("server")
            .and_then(|s| s.strip_prefix("Docker/"))
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned),
    })
}

/// Stops every running container with `grace` before SIGKILL, all at once.
/// dockerd's own shutdown stops containers with their stop timeout (10 s by
/// default) whatever its `--shutdown-timeout` says, which overruns a 10 s
/// `docker stop` of the service; stopping them first keeps the budget ours.
/// Returns how many were stopped.
pub async fn stop_containers(socket: &Path, grace: Duration) -> Result<usize, UpstreamError> {
    let (_, body) = call(
        socket,
        Method::GET,
        "/containers/json",
        Duration::from_secs(5),
    )
    .await?;
    let ids: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
        .map_err(|source| UpstreamError::Json {
            path: socket.to_owned(),
            source,
        })?
        .iter()
        .filter_map(|c| c.get("Id")?.as_str().map(str::to_owned))
        .collect();
    let secs = grace.as_secs();
    let mut stops = tokio::task::JoinSet::new();
    for id in &ids {
        let (socket, path) = (socket.to_owned(), format!("/containers/{id}/stop?t={secs}"));
        stops.spawn(async move {
            call(&socket, Method::POST, &path, grace + Duration::from_secs(5)).await
        });
    }
    while let Some(done) = stops.join_next().await {
        if let Ok(Err(e)) = done {
            // 304 (already stopped) and races with exiting containers are fine.
            tracing::debug!(error = %e, "container stop");
        }
    }
    Ok(ids.len())
}

/// `GET path` as JSON.
pub async fn get_json(
    socket: &Path,
    path: &str,
    limit: Duration,
) -> Result<serde_json::Value, UpstreamError> {
    let (_, body) = call(socket, Method::GET, path, limit).await?;
    serde_json::from_slice(&body).map_err(|source| UpstreamError::Json {
        path: socket.to_owned(),
        source,
    })
}

/// One request with no body on a fresh connection; the whole answer is read.
/// Ok only for 2xx.
async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    limit: Duration,
) -> Result<(hyper::http::response::Parts, Bytes), UpstreamError> {
    match tokio::time::timeout(limit, call_once(socket, method, path)).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout {
            path: socket.to_owned(),
            limit,
        }),
    }
}

async fn call_once(
    socket: &Path,
    method: Method,
    uri: &str,
) -> Result<(hyper::http::response::Parts, Bytes), UpstreamError> {
    let http_err = |source| UpstreamError::Http {
        path: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| UpstreamError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|_| UpstreamError::BadUri(uri.to_owned()))?;
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(http_err)?;
        let (head, body) = resp.into_parts();
        let body = body.collect().await.map_err(http_err)?.to_bytes();
        Ok::<_, UpstreamError>((head, body))
    };
    // The connection is driven here, beside its one exchange, not in a
    // task of its own: nothing outlives the call (issue 11). Should it end
    // first, the exchange fails with the reason.
    tokio::pin!(conn, exchange);
    let (head, body) = tokio::select! {
        done = &mut exchange => done?,
        _ = &mut conn => exchange.await?,
    };
    if !head.status.is_success() {
        return Err(UpstreamError::Status {
            path: socket.to_owned(),
            uri: uri.to_owned(),
            status: head.status.as_u16(),
        });
    }
    Ok((head, body))
}
