//! Which Docker API route a mutating request is, read the way dockerd's
//! router (gorilla/mux) reads it, and the request-line details the policy
//! decides on: the query string of `/build` and the media type.
//!
//! Routes are matched anchored, per method. dockerd registers most routes
//! with a greedy `{name:.*}` segment (`/containers/{name:.*}/update`), so a
//! route is identified by its fixed prefix and its last segment:
//! `/containers/x/kill/update` is an update of container `x/kill`, not a
//! kill. Anything not listed here is [`Route::Unknown`].

use hyper::Method;

use super::Rule;

/// A mutating request's route, as far as the policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /containers/create`
    ContainerCreate,
    /// `POST /containers/{id}/start`: API versions before 1.24 take a
    /// HostConfig body here, read like a create body.
    ContainerStart,
    /// `POST /containers/{id}/update`
    ContainerUpdate,
    /// `POST /containers/{id}/exec`
    ExecCreate,
    /// `POST /volumes/create`
    VolumeCreate,
    /// `POST /networks/create`
    NetworkCreate,
    /// `POST /build`: the query string is decided, the body (the build
    /// context) is not read.
    Build,
    /// A known route with nothing to inspect.
    Plain,
    /// A route family that one rule allows or denies as a whole.
    Family(Rule),
    /// Not a route we know.
    Unknown,
}

/// Classifies a request that is not GET, HEAD or OPTIONS. `path` is the
/// canonical path without the version prefix.
pub fn classify(method: &Method, path: &str) -> Route {
    let seg: Vec<&str> = path.split('/').skip(1).collect();
    // Route families denied as a whole, whatever the method or sub-route.
    match seg.first().copied() {
        Some("plugins") => return Route::Family(Rule::Plugins),
        Some("swarm" | "nodes") => return Route::Family(Rule::Swarm),
        Some("services") => return Route::Family(Rule::Services),
        Some("secrets") => return Route::Family(Rule::Secrets),
        Some("configs") => return Route::Family(Rule::Configs),
        Some("debug") => return Route::Family(Rule::Debug),
        _ => {}
    }
    if *method == Method::POST {
        post(&seg)
    } else if *method == Method::PUT {
        match seg.as_slice() {
            ["containers", _, .., "archive"] => Route::Plain,
            // Cluster volumes exist only in swarm mode.
            ["volumes", _, ..] => Route::Family(Rule::Swarm),
            _ => Route::Unknown,
        }
    } else if *method == Method::DELETE {
        match seg.as_slice() {
            // Checkpoints are experimental (CRIU) and not offered.
            ["containers", .., "checkpoints", _] => Route::Unknown,
            ["containers" | "images" | "networks" | "volumes", _, ..] => Route::Plain,
            _ => Route::Unknown,
        }
    } else {
        Route::Unknown
    }
}

fn post(seg: &[&str]) -> Route {
    match seg {
        ["containers", "create"] => Route::ContainerCreate,
        ["containers", "prune"] => Route::Plain,
        ["containers", _, .., last] => match *last {
            "start" => Route::ContainerStart,
            "update" => Route::ContainerUpdate,
            "exec" => Route::ExecCreate,
            "kill" | "pause" | "unpause" | "restart" | "stop" | "wait" | "resize" | "attach"
            | "rename" => Route::Plain,
            // Deprecated copy-out (API < 1.20); reads files only.
            "copy" => Route::Plain,
            _ => Route::Unknown,
        },
        ["exec", _, .., "start" | "resize"] => Route::Plain,
        ["images", "create" | "load" | "prune"] => Route::Plain,
        ["images", _, .., "push" | "tag"] => Route::Plain,
        ["build"] => Route::Build,
        ["build", "prune" | "cancel"] => Route::Plain,
        ["networks", "create"] => Route::NetworkCreate,
        ["networks", "prune"] => Route::Plain,
        ["networks", _, .., "connect" | "disconnect"] => Route::Plain,
        ["volumes", "create"] => Route::VolumeCreate,
        ["volumes", "prune"] => Route::Plain,
        ["auth" | "commit" | "session" | "grpc"] => Route::Plain,
        _ => Route::Unknown,
    }
}

/// Whether dockerd would route `path` (canonical, after the version
/// prefix) to its debug handlers: `/debug/vars` and `/debug/pprof/*`,
/// registered for every method. gorilla/mux matches the decoded path, so
/// `/%64ebug/vars` is `/debug/vars` to dockerd. It matches case-sensitively
/// and without a version prefix; we refuse every case and version as well,
/// as no other route starts with `debug`.
pub fn is_debug(path: &str) -> bool {
    let first = path.split('/').nth(1).unwrap_or("");
    match unescape_bytes(first, false) {
        Some(seg) => seg.eq_ignore_ascii_case(b"debug"),
        // Go refuses a request whose path has a bad escape (400).
        None => false,
    }
}

/// The values of `key` in a query string, decoded as Go's `url.ParseQuery`
/// decodes them (`&` separates pairs, `+` is a space, `%XX` escapes).
/// Err when the query has a form Go reads differently from version to
/// version or skips (`;`, a bad escape): we cannot be sure what dockerd saw.
pub fn query_values(query: Option<&str>, key: &str) -> Result<Vec<String>, String> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    if query.contains(';') {
        return Err("';' in the query string".into());
    }
    let mut values = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = unescape(k).ok_or_else(|| format!("bad %-escape in query parameter {k:?}"))?;
        let v = unescape(v).ok_or_else(|| format!("bad %-escape in query parameter {k:?}"))?;
        if k == key {
            values.push(v);
        }
    }
    Ok(values)
}

/// Go's `url.QueryUnescape`; None where Go returns an error (also for
/// escapes that decode to invalid UTF-8, which we cannot compare).
fn unescape(s: &str) -> Option<String> {
    String::from_utf8(unescape_bytes(s, true)?).ok()
}

/// `%XX` escapes decoded, and `+` as a space in a query (`QueryUnescape`)
/// but not in a path (`PathUnescape`); None for a bad escape.
fn unescape_bytes(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The media type of a Content-Type value as Go's `mime.ParseMediaType`
/// reports it (before the first `;`, trimmed, lower case). None for a value
/// that is not ASCII: Go lower-cases with Unicode rules (`İ` becomes `i`),
/// which we do not try to reproduce.
pub fn media_type(content_type: &[u8]) -> Option<String> {
    if !content_type.is_ascii() {
        return None;
    }
    let s = std::str::from_utf8(content_type).ok()?;
    let base = s.split(';').next().unwrap_or("");
    Some(go_trim_space(base).to_ascii_lowercase())
}

/// Go's `strings.TrimSpace` for ASCII text: it trims `\v` too, which Rust's
/// `trim_ascii` keeps.
fn go_trim_space(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r'))
}

/// Whether Go's `net/http` would parse this body as form values, which then
/// take precedence over the query string in `r.FormValue` (dockerd reads
/// build options that way).
pub fn is_form(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/x-www-form-urlencoded" | "multipart/form-data"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post_route(path: &str) -> Route {
        classify(&Method::POST, path)
    }

    #[test]
    fn container_routes_follow_the_last_segment() {
        assert_eq!(post_route("/containers/create"), Route::ContainerCreate);
        assert_eq!(post_route("/containers/abc/update"), Route::ContainerUpdate);
        // dockerd's {name:.*} is greedy: this updates container "x/kill".
        assert_eq!(
            post_route("/containers/x/kill/update"),
            Route::ContainerUpdate
        );
        assert_eq!(post_route("/containers/x/update/kill"), Route::Plain);
        assert_eq!(
            post_route("/containers/create/start"),
            Route::ContainerStart
        );
        assert_eq!(post_route("/containers/abc/exec"), Route::ExecCreate);
        for verb in [
            "kill", "pause", "unpause", "restart", "stop", "wait", "resize", "attach", "rename",
        ] {
            assert_eq!(
                post_route(&format!("/containers/abc/{verb}")),
                Route::Plain,
                "{verb}"
            );
        }
        assert_eq!(post_route("/containers/prune"), Route::Plain);
        assert_eq!(post_route("/containers/abc/checkpoints"), Route::Unknown);
        assert_eq!(post_route("/containers/abc"), Route::Unknown);
        assert_eq!(post_route("/containers"), Route::Unknown);
        assert_eq!(post_route("/Containers/create"), Route::Unknown);
        assert_eq!(post_route("/exec/abc/start"), Route::Plain);
        assert_eq!(post_route("/exec/abc/resize"), Route::Plain);
        assert_eq!(post_route("/exec/abc"), Route::Unknown);
    }

    #[test]
    fn other_routes() {
        assert_eq!(post_route("/images/create"), Route::Plain);
        assert_eq!(
            post_route("/images/registry.example/ns/app:1/push"),
            Route::Plain
        );
        assert_eq!(post_route("/images/alpine/tag"), Route::Plain);
        assert_eq!(post_route("/build"), Route::Build);
        assert_eq!(post_route("/build/prune"), Route::Plain);
        assert_eq!(post_route("/volumes/create"), Route::VolumeCreate);
        assert_eq!(post_route("/networks/create"), Route::NetworkCreate);
        assert_eq!(post_route("/networks/n1/connect"), Route::Plain);
        assert_eq!(post_route("/session"), Route::Plain);
        assert_eq!(post_route("/grpc"), Route::Plain);
        assert_eq!(post_route("/auth"), Route::Plain);
        assert_eq!(post_route("/commit"), Route::Plain);
        assert_eq!(post_route("/plugins/pull"), Route::Family(Rule::Plugins));
        assert_eq!(
            post_route("/plugins/x/enable"),
            Route::Family(Rule::Plugins)
        );
        assert_eq!(post_route("/swarm/init"), Route::Family(Rule::Swarm));
        assert_eq!(post_route("/nodes/n/update"), Route::Family(Rule::Swarm));
        assert_eq!(
            post_route("/services/create"),
            Route::Family(Rule::Services)
        );
        assert_eq!(post_route("/secrets/create"), Route::Family(Rule::Secrets));
        assert_eq!(post_route("/configs/create"), Route::Family(Rule::Configs));
        assert_eq!(post_route("/tasks/x"), Route::Unknown);
        assert_eq!(post_route("/"), Route::Unknown);
        assert_eq!(post_route("/info"), Route::Unknown);
        let put = |p| classify(&Method::PUT, p);
        assert_eq!(put("/containers/abc/archive"), Route::Plain);
        assert_eq!(put("/volumes/v"), Route::Family(Rule::Swarm));
        assert_eq!(put("/containers/create"), Route::Unknown);
        let delete = |p| classify(&Method::DELETE, p);
        assert_eq!(delete("/containers/abc"), Route::Plain);
        assert_eq!(delete("/images/registry.example/ns/app:1"), Route::Plain);
        assert_eq!(delete("/plugins/x"), Route::Family(Rule::Plugins));
        assert_eq!(delete("/services/x"), Route::Family(Rule::Services));
        assert_eq!(delete("/containers/abc/checkpoints/c1"), Route::Unknown);
        assert_eq!(delete("/containers"), Route::Unknown);
        let patch = Method::from_bytes(b"PATCH").unwrap();
        assert_eq!(classify(&patch, "/containers/abc"), Route::Unknown);
    }

    #[test]
    fn debug_paths_as_dockerds_router_reads_them() {
        for p in [
            "/debug/vars",
            "/debug/pprof",
            "/debug/pprof/goroutine",
            "/debug",
            "/%64ebug/vars",
            "/De%62ug/pprof/cmdline",
            "/DEBUG/vars",
        ] {
            assert!(is_debug(p), "{p}");
        }
        for p in [
            "/",
            "/debugger/vars",
            "/containers/debug",
            "/_ping",
            "/%zzdebug/vars",
            "/debug+/vars",
        ] {
            assert!(!is_debug(p), "{p}");
        }
        // Debug routes answer every method; mutating ones are its family.
        assert_eq!(
            post_route("/debug/pprof/symbol"),
            Route::Family(Rule::Debug)
        );
    }

    #[test]
    fn query_values_decode_like_go() {
        let q = |s| query_values(Some(s), "networkmode");
        assert_eq!(q("t=x&networkmode=host"), Ok(vec!["host".to_owned()]));
        assert_eq!(q("network%6dode=ho%73t"), Ok(vec!["host".to_owned()]));
        assert_eq!(
            q("networkmode=a+b&&networkmode=c"),
            Ok(vec!["a b".to_owned(), "c".to_owned()])
        );
        assert_eq!(q("networkmode"), Ok(vec![String::new()]));
        assert_eq!(q("NetworkMode=host"), Ok(vec![]));
        assert!(q("networkmode=host;x=1").is_err());
        assert!(q("networkmode=%zz").is_err());
        assert!(q("x=%4").is_err());
        assert!(q("x=%ff").is_err());
        assert_eq!(query_values(None, "networkmode"), Ok(vec![]));
    }

    #[test]
    fn media_types_parse_like_go() {
        let m = |s: &str| media_type(s.as_bytes());
        assert_eq!(m("application/json"), Some("application/json".into()));
        assert_eq!(
            m(" Application/JSON ; charset=utf-8"),
            Some("application/json".into())
        );
        assert_eq!(
            m("\u{b}application/x-www-form-urlencoded"),
            Some("application/x-www-form-urlencoded".into())
        );
        assert_eq!(m(""), Some(String::new()));
        assert!(m("APPL\u{130}CATION/JSON").is_none());
        assert!(media_type(b"application/json\xff").is_none());
        assert!(is_form("multipart/form-data") && is_form("application/x-www-form-urlencoded"));
        assert!(!is_form("application/x-tar"));
    }
}
