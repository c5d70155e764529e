//! The health endpoint, plain HTTP on its own address (not in the image's
//! EXPOSE list, so runner port waits never see it).
//!
//! Routes:
//! - `GET /livez`: 200 while the supervisor runs.
//! - `GET /readyz`: 200 when the engine is Ready and the public listeners
//!   are bound; 503 with the reason otherwise.
//! - `GET /metrics`: Prometheus text.
//! - `GET /status`: JSON: state, dockerd pid and version, endpoints,
//!   certificates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{body::Incoming, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::readiness::{Readiness, State};
use crate::respond::{full, Body};

/// What the health routes read. `extra` is merged into `/status` as is
/// (endpoints and certificates, known at start).
pub struct Health {
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    /// Whether public listeners are expected at all (not when dockerd runs
    /// with exactly the user's flags).
    pub proxied: bool,
    pub extra: serde_json::Value,
}

/// Binds `addr` now (health answers from the first moment) and serves
/// until the task is dropped.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match crate::handed::take(addr) {
        Some(handed) => handed,
        None => TcpListener::bind(addr).await,
    }
}

pub async fn serve(listener: TcpListener, health: Arc<Health>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "health accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(route(&req, &health)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>, h: &Health) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match not_ready(h) {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let mut out = String::new();
            render_engine(h, &mut out);
            h.metrics.render(&mut out);
            let mut r = text(StatusCode::OK, &out);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/status" => {
            let mut status = serde_json::json!({
                "state": h.readiness.state().as_str(),
                "ready": not_ready(h).is_none(),
                "listeners_bound": h.metrics.listeners_bound.load(Ordering::Acquire),
                "open_connections": h.metrics.open_connections(),
                "dockerd": h.readiness.engine(),
            });
            if let (Some(obj), Some(extra)) = (status.as_object_mut(), h.extra.as_object()) {
                obj.extend(extra.clone());
            }
            let mut r = text(StatusCode::OK, &(status.to_string() + "\n"));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "routes: /livez /readyz /metrics /status\n",
        ),
    }
}

/// None when ready; else why not.
fn not_ready(h: &Health) -> Option<String> {
    let state = h.readiness.state();
    if state == State::Unresponsive {
        // The watchdog's reason: how long dockerd has been silent.
        let why = h.readiness.engine().unresponsive.unwrap_or_default();
        return Some(format!("engine is {state}: {why}"));
    }
    if state != State::Ready {
        return Some(format!("engine is {state}"));
    }
    if h.proxied && !h.metrics.listeners_bound.load(Ordering::Acquire) {
        return Some("public listeners are not bound yet".into());
    }
    None
}

fn render_engine(h: &Health, out: &mut String) {
    use std::fmt::Write as _;
    let state = h.readiness.state();
    let engine = h.readiness.engine();
    let _ = writeln!(
        out,
        "# HELP dind_state Supervisor state (1 for the current one).\n# TYPE dind_state gauge"
    );
    for s in [
        State::Starting,
        State::Ready,
        State::Restarting,
        State::Unresponsive,
        State::ShuttingDown,
    ] {
        let _ = writeln!(out, "dind_state{{state=\"{s}\"}} {}", u8::from(s == state));
    }
    let _ = writeln!(
        out,
        "# HELP dind_dockerd_restarts_total dockerd restarts after unexpected exits.\n# TYPE dind_dockerd_restarts_total counter\ndind_dockerd_restarts_total {}",
        engine.restarts
    );
    if let Some(s) = engine.seconds_to_ready {
        let _ = writeln!(
            out,
            "# HELP dind_seconds_to_ready Seconds from start to the first Ready.\n# TYPE dind_seconds_to_ready gauge\ndind_seconds_to_ready {s}"
        );
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
