//! Every answer the proxy makes itself, in one place, shaped like dockerd's
//! own errors (`{"message": "..."}`) so the docker CLI prints them as is.
//! Upstream error text is never echoed: it is logged instead.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::readiness::State;

/// The body type of every response the proxy returns: dockerd's streamed
/// body, or one of ours.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Why the proxy answered instead of dockerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The engine did not become ready within the hold limit.
    NotReady {
        state: State,
        waited_s: u64,
        /// dockerd's last error line, when it exited or could not start.
        last_error: Option<String>,
    },
    /// The engine is not ready and the gate holds as many requests as it
    /// may ([`crate::limits::Limits::max_held`]).
    HoldFull { state: State, max: usize },
    /// The supervisor is stopping; `last_error` says why when dockerd failed.
    ShuttingDown { last_error: Option<String> },
    /// dockerd's socket could not be reached although the engine was ready.
    Upstream,
    /// The request is malformed or ambiguous.
    BadRequest(String),
    /// The policy denied it; `rule` goes to the audit log and metrics.
    Denied { rule: &'static str, reason: String },
    /// A body the policy must read is over its cap: never skip the check.
    TooLarge { cap: usize },
    /// A body the policy must read did not arrive whole in time.
    BodyTimeout { limit: std::time::Duration },
    /// Bodies the policy reads already fill the memory set aside for them
    /// ([`crate::limits::Limits::body_memory`]).
    BodyMemory { total: usize },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NotReady { .. }
            | Refusal::HoldFull { .. }
            | Refusal::BodyMemory { .. }
            | Refusal::ShuttingDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Upstream => StatusCode::BAD_GATEWAY,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Denied { .. } => StatusCode::FORBIDDEN,
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NotReady {
                state,
                waited_s,
                last_error,
            } => {
                format!(
                    "the Docker engine in the dind service is {}, waited {waited_s}s{}; retry, or check the service's log",
                    doing(*state),
                    exited(last_error)
                )
            }
            Refusal::HoldFull { state, max } => format!(
                "the Docker engine in the dind service is {} and {max} requests already wait for it, the most it holds; retry shortly",
                doing(*state)
            ),
            Refusal::ShuttingDown { last_error } => {
                format!("the Docker engine in the dind service is shutting down{}", exited(last_error))
            }
            Refusal::Upstream => {
                "cannot reach the Docker engine inside the dind service; check the service's log".to_owned()
            }
            Refusal::BadRequest(why) => format!("bad request: {why}"),
            Refusal::Denied { reason, .. } => reason.clone(),
            Refusal::TooLarge { cap } => format!(
                "request body over {cap} bytes: too large for the request policy to check (raise body_cap in the policy file)"
            ),
            Refusal::BodyTimeout { limit } => format!(
                "request body not received whole within {}s: the request policy reads it before deciding; send it at once",
                limit.as_secs()
            ),
            Refusal::BodyMemory { total } => format!(
                "the dind service already holds {} of request bodies for the request policy to check, the most it holds; retry shortly",
                size(*total)
            ),
        }
    }

    pub fn response(&self) -> Response<Body> {
        let mut resp = json_error(self.status(), &self.message());
        if let Refusal::BodyTimeout { .. } | Refusal::BodyMemory { .. } = self {
            // The rest of the body may still come; the connection cannot
            // carry another request (RFC 9110 15.5.9).
            resp.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// `64 MiB`, `4 KiB`, `100 bytes`.
fn size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// What a not-ready engine is doing, for a held client.
fn doing(state: State) -> &'static str {
    match state {
        State::Starting => "still starting",
        State::Restarting => "restarting after dockerd exited",
        State::Unresponsive => "not answering (dockerd runs but is silent)",
        State::Ready | State::ShuttingDown => "not ready",
    }
}

/// dockerd's own last words, quoted: the one clue a held client gets.
fn exited(last_error: &Option<String>) -> String {
    match last_error {
        Some(line) => format!("; dockerd's last error: {line}"),
        None => String::new(),
    }
}

/// A Docker-API-shaped error response.
pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string() + "\n";
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_are_docker_shaped_json() {
        let resp = Refusal::Denied {
            rule: "privileged",
            reason: "policy ci-safe: no".into(),
        }
        .response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["message"], "policy ci-safe: no");
    }

    #[test]
    fn a_request_held_in_vain_says_what_the_engine_is_doing_and_why() {
        let starting = Refusal::NotReady {
            state: State::Starting,
            waited_s: 30,
            last_error: None,
        };
        assert_eq!(starting.status(), 503);
        assert!(
            starting.message().contains("still starting, waited 30s"),
            "{}",
            starting.message()
        );
        let crashed = Refusal::NotReady {
            state: State::Restarting,
            waited_s: 30,
            last_error: Some("failed to start daemon: no space left on device".into()),
        };
        assert!(
            crashed.message().contains("no space left on device"),
            "{}",
            crashed.message()
        );
        let gone = Refusal::ShuttingDown {
            last_error: Some("exit status 1".into()),
        };
        assert!(
            gone.message().contains("exit status 1"),
            "{}",
            gone.message()
        );
    }

    #[test]
    fn statuses_follow_the_cause() {
        assert_eq!(Refusal::ShuttingDown { last_error: None }.status(), 503);
        assert_eq!(Refusal::Upstream.status(), 502);
        assert_eq!(Refusal::BadRequest("x".into()).status(), 400);
        let full = Refusal::HoldFull {
            state: State::Restarting,
            max: 256,
        };
        assert_eq!(full.status(), 503);
        assert!(
            full.message()
                .contains("restarting after dockerd exited and 256 requests already wait"),
            "{}",
            full.message()
        );
        let full = Refusal::BodyMemory { total: 64 << 20 };
        assert_eq!(full.status(), 503);
        assert!(
            full.message()
                .contains("already holds 64 MiB of request bodies"),
            "{}",
            full.message()
        );
        assert_eq!(
            full.response().headers()[hyper::header::CONNECTION],
            "close"
        );
        let slow = Refusal::BodyTimeout {
            limit: std::time::Duration::from_secs(60),
        };
        assert_eq!(slow.status(), 408);
        assert_eq!(
            slow.response().headers()[hyper::header::CONNECTION],
            "close"
        );
    }
}
