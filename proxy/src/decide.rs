//! The one place where a request is decided, before anything is forwarded.
//!
//! Each request head is parsed once into a [`RequestHead`] ([`crate::head`])
//! and [`decide`] answers Forward or Refuse.
//! The request policy ([`crate::policy`]) is asked here, on the head and,
//! for the endpoints it names, on the complete body exactly as it will be
//! forwarded ([`Decision::InspectBody`], then [`decide_body`]).

use hyper::Method;

use crate::head::{RequestHead, Upgrade};
use crate::policy::{Policy, Verdict};
use crate::respond::Refusal;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Forward,
    /// Read the whole body (at most `cap` bytes) and call [`decide_body`].
    InspectBody {
        cap: usize,
    },
    Refuse(Refusal),
}

/// The decision point, on the head: protocol switches only where dockerd
/// switches, then the policy.
pub fn decide(head: &RequestHead, policy: &Policy, content_type: Option<&[u8]>) -> Decision {
    if let Decision::Refuse(r) = check_upgrade(head) {
        return Decision::Refuse(r);
    }
    verdict(policy.on_head(head, content_type), policy)
}

/// The decision point, on a body read whole after [`Decision::InspectBody`]:
/// the last word, so there is no third answer to handle. Ok: forward.
pub fn decide_body(
    head: &RequestHead,
    policy: &Policy,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Result<(), Refusal> {
    match policy.on_body(head, content_type, body) {
        Verdict::Allow => Ok(()),
        Verdict::Deny(d) => Err(denied(d)),
        // A policy that asks twice is broken; fail closed.
        Verdict::NeedBody => Err(Refusal::Denied {
            rule: "internal",
            reason: format!("policy {}: the request could not be decided", policy.name()),
        }),
    }
}

fn verdict(v: Verdict, policy: &Policy) -> Decision {
    match v {
        Verdict::Allow => Decision::Forward,
        Verdict::NeedBody => Decision::InspectBody {
            cap: policy.body_cap(),
        },
        Verdict::Deny(d) => Decision::Refuse(denied(d)),
    }
}

fn denied(d: crate::policy::Denial) -> Refusal {
    Refusal::Denied {
        rule: d.rule,
        reason: d.reason,
    }
}

fn check_upgrade(head: &RequestHead) -> Decision {
    match head.upgrade {
        Some(Upgrade::Tcp) if !hijacks(head) => Decision::Refuse(Refusal::BadRequest(
            "Upgrade: tcp is only valid on attach and exec start".into(),
        )),
        Some(Upgrade::H2c) if !matches!(head.path.as_str(), "/session" | "/grpc") => {
            Decision::Refuse(Refusal::BadRequest(
                "Upgrade: h2c is only valid on /session and /grpc".into(),
            ))
        }
        Some(Upgrade::WebSocket) if !is_attach_ws(head) => Decision::Refuse(Refusal::BadRequest(
            "Upgrade: websocket is only valid on attach/ws".into(),
        )),
        _ => Decision::Forward,
    }
}

fn is_attach_ws(head: &RequestHead) -> bool {
    let seg: Vec<&str> = head.path.split('/').collect();
    head.method == Method::GET && matches!(seg.as_slice(), ["", "containers", _, "attach", "ws"])
}

/// Endpoints where dockerd hijacks the connection.
fn hijacks(head: &RequestHead) -> bool {
    let seg: Vec<&str> = head.path.split('/').collect();
    head.method == Method::POST
        && matches!(
            seg.as_slice(),
            ["", "containers", _, "attach"] | ["", "exec", _, "start"]
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::tests::head;

    /// The body's answer is the last word: allow or refuse, never "ask
    /// again", so the relay has no case it must call unreachable.
    #[test]
    fn a_body_is_decided_for_good() {
        let ci_safe = Policy::ci_safe();
        let ct = Some(&b"application/json"[..]);
        let create = head("POST", "/v1.41/containers/create", &[]).unwrap();
        let Decision::InspectBody { .. } = decide(&create, &ci_safe, ct) else {
            panic!("ci-safe reads create bodies");
        };
        assert_eq!(
            decide_body(&create, &ci_safe, ct, br#"{"Image":"x"}"#),
            Ok(())
        );
        assert!(matches!(
            decide_body(
                &create,
                &ci_safe,
                ct,
                br#"{"Image":"x","HostConfig":{"Privileged":true}}"#
            ),
            Err(Refusal::Denied { .. })
        ));
    }

    /// dockerd answers `/debug/vars` and `/%64ebug/vars`; the spellings its
    /// router cleans (and redirects) are refused before the policy.
    #[test]
    fn debug_endpoints_are_refused_in_every_spelling() {
        let ci_safe = Policy::ci_safe();
        for uri in [
            "/debug/vars",
            "/v1.41/debug/vars",
            "/debug/vars/",
            "/%64ebug/vars",
            "/DEBUG/pprof/",
            "/debug/pprof/goroutine?debug=2",
        ] {
            let h = head("GET", uri, &[]).unwrap();
            match decide(&h, &ci_safe, None) {
                Decision::Refuse(Refusal::Denied { rule: "debug", .. }) => {}
                other => panic!("{uri}: {other:?}"),
            }
            assert_eq!(
                decide(&h, &Policy::permissive(), None),
                Decision::Forward,
                "{uri}"
            );
        }
        for uri in [
            "//debug/vars",
            "/debug/../debug/vars",
            "/debug/./vars",
            "/%2564ebug/vars",
            "/%2e%2e/debug/vars",
        ] {
            assert!(head("GET", uri, &[]).is_err(), "{uri} must be refused");
        }
    }

    #[test]
    fn upgrades_only_where_dockerd_switches_protocols() {
        let up = |proto| [("connection", "Upgrade"), ("upgrade", proto)];
        let attach = head("POST", "/v1.41/containers/x/attach?stream=1", &up("tcp")).unwrap();
        assert_eq!(attach.upgrade, Some(Upgrade::Tcp));
        assert_eq!(
            decide(&attach, &Policy::permissive(), None),
            Decision::Forward
        );
        let exec = head("POST", "/exec/abc/start", &up("tcp")).unwrap();
        assert_eq!(
            decide(&exec, &Policy::permissive(), None),
            Decision::Forward
        );
        let session = head("POST", "/v1.41/session", &up("h2c")).unwrap();
        assert_eq!(
            decide(&session, &Policy::permissive(), None),
            Decision::Forward
        );
        let wrong = head("POST", "/containers/create", &up("tcp")).unwrap();
        assert!(matches!(
            decide(&wrong, &Policy::permissive(), None),
            Decision::Refuse(_)
        ));
        let wrong = head("POST", "/containers/x/attach", &up("h2c")).unwrap();
        assert!(matches!(
            decide(&wrong, &Policy::permissive(), None),
            Decision::Refuse(_)
        ));
        assert!(head("GET", "/_ping", &up("spdy/3")).is_err());
        let ws = head("GET", "/containers/x/attach/ws", &up("websocket")).unwrap();
        assert_eq!(decide(&ws, &Policy::permissive(), None), Decision::Forward);
        let ws = head("GET", "/_ping", &up("websocket")).unwrap();
        assert!(matches!(
            decide(&ws, &Policy::permissive(), None),
            Decision::Refuse(_)
        ));
        // An Upgrade header without Connection: upgrade switches nothing.
        let inert = head("GET", "/_ping", &[("upgrade", "websocket")]).unwrap();
        assert_eq!(inert.upgrade, None);
    }
}
