//! The one place where a request is decided, before anything is forwarded.
//!
//! Each request head is parsed once into a [`RequestHead`] (method, API
//! version, canonical path, upgrade) and [`decide`] answers Forward or
//! Refuse. What is decided here is exactly what is forwarded: a path that
//! dockerd's router would read differently from us (dot segments, empty
//! segments, encoded slashes) is refused rather than interpreted.
//! The request policy ([`crate::policy`]) is asked here, on the head and,
//! for the endpoints it names, on the complete body exactly as it will be
//! forwarded ([`Decision::InspectBody`], then [`decide_body`]).

use hyper::header::{CONNECTION, UPGRADE};
use hyper::http::request::Parts;
use hyper::Method;

use crate::policy::{Policy, Verdict};
use crate::respond::Refusal;

/// A protocol switch the client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// `Upgrade: tcp`: attach and exec start hijack the connection.
    Tcp,
    /// `Upgrade: h2c`: BuildKit's `/session` and `/grpc`.
    H2c,
    /// `Upgrade: websocket`: `/containers/{id}/attach/ws`.
    WebSocket,
}

/// A request head as the proxy understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The API version prefix without `v` (`1.41`), if any.
    pub version: Option<String>,
    /// The path after the version prefix, canonical: `/containers/abc/attach`.
    pub path: String,
    pub query: Option<String>,
    pub upgrade: Option<Upgrade>,
}

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

/// Parses and canonicalises a request head; Err is the answer to send.
pub fn parse(parts: &Parts) -> Result<RequestHead, Refusal> {
    let bad = |why: &str| Refusal::BadRequest(why.to_owned());
    let uri = &parts.uri;
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(bad("absolute-form request targets are not accepted"));
    }
    let raw = uri.path();
    let (version, rest) = split_version(raw).ok_or_else(|| bad("malformed API version in path"))?;
    let path = canonical(rest).ok_or_else(|| {
        bad("ambiguous path (empty or dot segments, or encoded '/', '\\' or '%')")
    })?;
    Ok(RequestHead {
        method: parts.method.clone(),
        version: version.map(str::to_owned),
        path,
        query: uri.query().map(str::to_owned),
        upgrade: upgrade_of(parts)?,
    })
}

/// The decision point, on the head: protocol switches only where dockerd
/// switches, then the policy.
pub fn decide(head: &RequestHead, policy: &Policy, content_type: Option<&[u8]>) -> Decision {
    if let Decision::Refuse(r) = check_upgrade(head) {
        return Decision::Refuse(r);
    }
    verdict(policy.on_head(head, content_type), policy)
}

/// The decision point, on a body read whole after [`Decision::InspectBody`].
pub fn decide_body(
    head: &RequestHead,
    policy: &Policy,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Decision {
    match policy.on_body(head, content_type, body) {
        // A policy that asks twice is broken; fail closed.
        Verdict::NeedBody => Decision::Refuse(Refusal::Denied {
            rule: "internal",
            reason: format!("policy {}: the request could not be decided", policy.name()),
        }),
        v => verdict(v, policy),
    }
}

fn verdict(v: Verdict, policy: &Policy) -> Decision {
    match v {
        Verdict::Allow => Decision::Forward,
        Verdict::NeedBody => Decision::InspectBody {
            cap: policy.body_cap(),
        },
        Verdict::Deny(d) => Decision::Refuse(Refusal::Denied {
            rule: d.rule,
            reason: d.reason,
        }),
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

/// `/v1.41/x` → (Some("1.41"), "/x"); `/x` → (None, "/x"). A first segment
/// that starts with `v` and a digit must be a whole version.
fn split_version(path: &str) -> Option<(Option<&str>, &str)> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Some((None, path));
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let ver = &rest[..end];
    if !ver.starts_with(|c: char| c.is_ascii_digit()) {
        return Some((None, path)); // e.g. /volumes
    }
    let ok = ver
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return None;
    }
    let after = &rest[end..];
    Some((Some(ver), if after.is_empty() { "/" } else { after }))
}

/// The path if it has one reading only. dockerd's router cleans paths and
/// decodes escapes; anything it would change is refused here instead.
fn canonical(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    if path == "/" {
        return Some(path.to_owned());
    }
    let body = path.strip_suffix('/').unwrap_or(path);
    for seg in body[1..].split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return None;
        }
    }
    let lower = path.to_ascii_lowercase();
    if ["%2f", "%5c", "%25", "%2e"]
        .iter()
        .any(|e| lower.contains(e))
        || path.contains('\\')
    {
        return None;
    }
    Some(body.to_owned())
}

fn upgrade_of(parts: &Parts) -> Result<Option<Upgrade>, Refusal> {
    let Some(value) = parts.headers.get(UPGRADE) else {
        return Ok(None);
    };
    let connection_upgrade = parts.headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
            .unwrap_or(false)
    });
    if !connection_upgrade {
        // Without `Connection: upgrade` hyper will not switch; the forwarder
        // strips the header so dockerd does not either.
        return Ok(None);
    }
    match value
        .to_str()
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        Ok("tcp") => Ok(Some(Upgrade::Tcp)),
        Ok("h2c") => Ok(Some(Upgrade::H2c)),
        Ok("websocket") => Ok(Some(Upgrade::WebSocket)),
        _ => Err(Refusal::BadRequest("unsupported Upgrade protocol".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<RequestHead, Refusal> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        parse(&parts)
    }

    #[test]
    fn versioned_and_unversioned_paths() {
        let h = head("GET", "/v1.41/containers/json?all=1", &[]).unwrap();
        assert_eq!(h.version.as_deref(), Some("1.41"));
        assert_eq!(h.path, "/containers/json");
        assert_eq!(h.query.as_deref(), Some("all=1"));
        let h = head("HEAD", "/_ping", &[]).unwrap();
        assert_eq!((h.version, h.path.as_str()), (None, "/_ping"));
        assert_eq!(head("GET", "/volumes", &[]).unwrap().path, "/volumes");
        assert_eq!(head("GET", "/v1.41", &[]).unwrap().path, "/");
        assert_eq!(head("GET", "/v1.41/info/", &[]).unwrap().path, "/info");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for uri in [
            "/v1.41/../containers/create",
            "/containers//create",
            "/containers/./create",
            "/v1.x/info",
            "/v1..41/info",
            "/containers%2Fcreate",
            "/containers/%2e%2e/create",
            "/a%252fb",
        ] {
            assert!(head("POST", uri, &[]).is_err(), "{uri} must be refused");
        }
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
