//! A request head as the proxy understands it: parsed once, with the API
//! version split off, the path canonical and the protocol switch named.
//!
//! What is parsed here is exactly what is forwarded: a path that dockerd's
//! router would read differently from us (dot segments, empty segments,
//! encoded slashes) is refused rather than interpreted. The decision point
//! ([`crate::decide`]), the policy ([`crate::policy`]) and the ping cache
//! all read a [`RequestHead`]; it lives apart from them so that none
//! imports another for it (issue 11).

use hyper::header::{CONNECTION, UPGRADE};
use hyper::http::request::Parts;
use hyper::Method;

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
pub(crate) mod tests {
    use super::*;
    use hyper::Request;

    /// A head as [`parse`] reads it from a request built from these parts.
    pub(crate) fn head(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Result<RequestHead, Refusal> {
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
}
