//! The oracles. Each function panics (a libFuzzer crash) when the proxy's
//! reading of an input is wrong, not only when it crashes.

use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::{Method, Request};

use proxy::decide::{self, Decision};
use proxy::head::RequestHead;
use proxy::policy::json::{self, Json, MAX_DEPTH};
use proxy::policy::routes::{classify, Route};
use proxy::policy::{is_mutating, Policy};
use proxy::respond::Refusal;

use crate::go::{self, Number, Value};

thread_local! {
    static CI_SAFE: Policy = Policy::ci_safe();
    static PERMISSIVE: Policy = Policy::permissive();
}

/// Both steps of the decision point, as `forward.rs` runs them on a body
/// that has been read whole.
pub fn decision(
    head: &RequestHead,
    policy: &Policy,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Decision {
    match decide::decide(head, policy, content_type) {
        Decision::InspectBody { cap } => {
            assert!(
                cap == policy.body_cap(),
                "InspectBody with a cap that is not the policy's"
            );
            match decide::decide_body(head, policy, content_type, body) {
                Ok(()) => Decision::Forward,
                Err(refusal) => Decision::Refuse(refusal),
            }
        }
        d => d,
    }
}

/// One request as hyper hands it to the proxy, with its whole body.
pub fn request(parts: &Parts, body: &Bytes) {
    let content_type = parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    let Ok(head) = proxy::head::parse(parts) else {
        return;
    };
    canonical(&head);
    reparse(&head, parts);

    let permissive = PERMISSIVE.with(|p| decision(&head, p, content_type, body));
    assert!(
        matches!(
            permissive,
            Decision::Forward | Decision::Refuse(Refusal::BadRequest(_))
        ),
        "permissive must only refuse a misplaced Upgrade: {permissive:?} for {head:?}"
    );
    let ci_safe = CI_SAFE.with(|p| decision(&head, p, content_type, body));
    if ci_safe != Decision::Forward || head.method == Method::OPTIONS {
        return;
    }
    // The proxy forwards the head it parsed, not the bytes it read: hyper's
    // client writes this target (a `#fragment` on the wire is gone).
    let target = parts.uri.to_string();
    // What dockerd runs. None: it answers 400, 404 or a redirect.
    let Some(go_target) = go::Target::of(&target) else {
        return;
    };
    // moby mounts its debug handlers at "/debug" + route, unversioned and
    // for every method, so a read is enough to see its command line.
    assert!(
        go_target.version.is_some() || !go_target.path.starts_with("/debug/"),
        "ci-safe forwarded {} {target:?}, which dockerd runs as its debug handler {:?}",
        head.method,
        go_target.path
    );
    if !is_mutating(&head) {
        return;
    }
    let ours = classify(&head.method, &head.path);
    let theirs = classify(&head.method, &go_target.path);
    // Unknown to dockerd's router too (a trailing slash, which the proxy
    // drops and gorilla/mux keeps): a 404, whatever the proxy decided.
    assert!(
        ours == theirs || theirs == Route::Unknown,
        "{} {target:?}: the proxy decided route {ours:?} ({head:?}), dockerd routes it as {theirs:?} ({go_target:?})",
        head.method
    );
    if let Some(why) = escape(&head.method, &go_target, content_type, body) {
        panic!(
            "ci-safe forwarded {} {target:?} with body {:?}, and dockerd reads it as {why}",
            head.method,
            String::from_utf8_lossy(body)
        );
    }
}

/// What dockerd would grant that ci-safe must refuse, in the Go model.
fn escape(
    method: &Method,
    target: &go::Target,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Option<String> {
    match classify(method, &target.path) {
        Route::ContainerCreate | Route::ContainerStart => go::create_escape(body),
        Route::ContainerUpdate => go::update_escape(body),
        Route::ExecCreate => go::exec_escape(body),
        Route::VolumeCreate => go::volume_escape(body),
        Route::NetworkCreate => go::network_escape(body),
        Route::Build => go::build_escape(target, content_type, body),
        Route::Family(rule) => Some(format!("a {rule} route")),
        Route::Plain | Route::Unknown => None,
    }
}

/// A parsed head has one reading: no empty, `.` or `..` segment, no
/// trailing slash, no encoding dockerd's router would decode into one.
fn canonical(head: &RequestHead) {
    let p = &head.path;
    assert!(p.starts_with('/'), "path {p:?} is not absolute");
    if p != "/" {
        assert!(!p.ends_with('/'), "path {p:?} keeps a trailing slash");
        for seg in p[1..].split('/') {
            assert!(
                !matches!(seg, "" | "." | ".."),
                "path {p:?} has segment {seg:?}"
            );
        }
    }
    let lower = p.to_ascii_lowercase();
    for e in ["%2f", "%5c", "%25", "%2e", "\\"] {
        assert!(!lower.contains(e), "path {p:?} contains {e}");
    }
    if let Some(v) = &head.version {
        assert!(
            v.split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            "version {v:?} is not dotted digits"
        );
    }
}

/// The canonical head is a fixed point: sent as it was understood, it is
/// understood the same way.
fn reparse(head: &RequestHead, parts: &Parts) {
    let mut uri = String::new();
    if let Some(v) = &head.version {
        uri.push_str("/v");
        uri.push_str(v);
    }
    uri.push_str(&head.path);
    if let Some(q) = &head.query {
        uri.push('?');
        uri.push_str(q);
    }
    let mut req = Request::builder()
        .method(head.method.clone())
        .uri(uri.as_str());
    for (k, v) in &parts.headers {
        req = req.header(k, v);
    }
    let (again, ()) = req
        .body(())
        .unwrap_or_else(|e| panic!("canonical target {uri:?} is not a valid URI: {e}"))
        .into_parts();
    assert_eq!(
        proxy::head::parse(&again).as_ref(),
        Ok(head),
        "{uri:?} reads differently the second time"
    );
}

/// The strict reader against serde_json: whatever it accepts, serde_json
/// accepts with the same value; whatever serde_json reads as one value
/// with unique keys and a sane depth, it accepts.
pub fn strict_json(data: &[u8]) {
    let ours = json::parse_strict(data);
    let theirs = Value::parse_whole(data);
    match (&ours, &theirs) {
        (Ok(v), _) => {
            // serde_json's syntax check alone (numbers of any size: Go reads
            // 1e400 as an error of the field, not of the syntax).
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
                "parse_strict accepts what serde_json's grammar refuses: {v:?}"
            );
            if let Some(w) = &theirs {
                assert!(same(v, w), "parse_strict read {v:?}, serde_json {w:?}");
            }
        }
        (Err(e), Some(w)) => {
            assert!(
                w.has_duplicate_keys() || w.depth() > MAX_DEPTH,
                "serde_json reads {w:?} (unique keys, depth {}), parse_strict refuses it: {e}",
                w.depth()
            );
        }
        (Err(_), None) => {}
    }
    if let Err(e) = &ours {
        let at = match e {
            json::JsonError::InvalidUtf8 { at }
            | json::JsonError::Syntax { at, .. }
            | json::JsonError::DuplicateKey { at, .. }
            | json::JsonError::TrailingData { at }
            | json::JsonError::LoneSurrogate { at }
            | json::JsonError::TooDeep { at } => *at,
            json::JsonError::UnexpectedEnd { .. } => 0,
        };
        assert!(
            at <= data.len(),
            "error offset {at} past the end ({}): {e}",
            data.len()
        );
    }
}

fn same(ours: &Json, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Json::Null, Value::Null) => true,
        (Json::Bool(a), Value::Bool(b)) => a == b,
        (Json::String(a), Value::String(b)) => a == b,
        (Json::Number(text), Value::Number(n)) => same_number(text, *n),
        (Json::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Json::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => false,
    }
}

/// The number as written against serde_json's: exact for integers it keeps
/// as integers, else the same correctly rounded float (serde_json's
/// `float_roundtrip`).
fn same_number(text: &str, n: Number) -> bool {
    let integer = !text.contains(['.', 'e', 'E']);
    match n {
        Number::U(u) if integer => text.parse::<i128>() == Ok(i128::from(u)),
        Number::I(i) if integer => text.parse::<i128>() == Ok(i128::from(i)),
        Number::U(_) | Number::I(_) => false,
        Number::F(f) => {
            let Ok(g) = text.parse::<f64>() else {
                return false;
            };
            f == g
        }
    }
}
