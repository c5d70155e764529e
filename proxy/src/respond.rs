//! Every answer the proxy makes itself, in one place, shaped like dockerd's
//! own errors (`{"message": "..."}`) so the docker CLI prints them as is.
//! Upstream error text is never echoed: it is logged instead.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The body type of every response the proxy returns: dockerd's streamed
/// body, or one of ours.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Why the proxy answered instead of dockerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The engine did not become ready within the hold limit.
    NotReady { state: &'static str, waited_s: u64 },
    /// The supervisor is stopping.
    ShuttingDown,
    /// dockerd's socket could not be reached although the engine was ready.
    Upstream,
    /// The request is malformed or ambiguous.
    BadRequest(String),
    /// The policy denied it; `rule` goes to the audit log and metrics.
    Denied { rule: &'static str, reason: String },
    /// A body the policy must read is over its cap: never skip the check.
    TooLarge { cap: usize },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NotReady { .. } | Refusal::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Upstream => StatusCode::BAD_GATEWAY,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Denied { .. } => StatusCode::FORBIDDEN,
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NotReady { state, waited_s } => format!(
                "the Docker engine is not ready ({state}) after waiting {waited_s}s; retry, or check the dind service's log"
            ),
            Refusal::ShuttingDown => "the Docker engine is shutting down".to_owned(),
            Refusal::Upstream => {
                "cannot reach the Docker engine inside the dind service; check the service's log".to_owned()
            }
            Refusal::BadRequest(why) => format!("bad request: {why}"),
            Refusal::Denied { reason, .. } => reason.clone(),
            Refusal::TooLarge { cap } => format!(
                "request body over {cap} bytes: too large for the request policy to check (raise body_cap in the policy file)"
            ),
        }
    }

    pub fn response(&self) -> Response<Body> {
        json_error(self.status(), &self.message())
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
    Full::new(data.into()).map_err(|never| match never {}).boxed()
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
    fn statuses_follow_the_cause() {
        assert_eq!(Refusal::ShuttingDown.status(), 503);
        assert_eq!(Refusal::Upstream.status(), 502);
        assert_eq!(Refusal::BadRequest("x".into()).status(), 400);
    }
}
