//! How dockerd (Go's `net/http`, gorilla/mux, `encoding/json`) reads a
//! request, modelled independently of the proxy's parsers, as an oracle:
//! what the proxy forwards under ci-safe must not be an escape in this
//! reading.
//!
//! The model errs towards seeing an escape (it reads deprecated top-level
//! HostConfig fields and the HostConfig object alike, ignores the type
//! errors that make Go refuse a whole body), because a false alarm costs a
//! look while a missed escape costs the host. Where serde_json cannot read a
//! body that Go can (invalid UTF-8, lone surrogates) the model sees nothing;
//! the proxy's strict reader refuses those bodies anyway.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use proxy::policy::json::go_equal_fold_ascii;

/// A JSON value with every object member kept, duplicates included, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    U(u64),
    I(i64),
    F(f64),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::Number(Number::U(n)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Number(Number::I(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
                Ok(Value::Number(Number::F(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut members = Vec::new();
                while let Some(kv) = map.next_entry::<String, Value>()? {
                    members.push(kv);
                }
                Ok(Value::Object(members))
            }
        }
        d.deserialize_any(V)
    }
}

impl Value {
    /// The whole input as one value (whitespace around it allowed), as
    /// `serde_json::from_slice` reads it, duplicates kept.
    pub fn parse_whole(bytes: &[u8]) -> Option<Value> {
        serde_json::from_slice(bytes).ok()
    }

    /// The first value of the input, as `json.NewDecoder(body).Decode`
    /// reads it: whatever follows is ignored.
    pub fn parse_first(bytes: &[u8]) -> Option<Value> {
        serde_json::Deserializer::from_slice(bytes)
            .into_iter::<Value>()
            .next()?
            .ok()
    }

    /// Whether some object has two members with the same key.
    pub fn has_duplicate_keys(&self) -> bool {
        match self {
            Value::Array(items) => items.iter().any(Value::has_duplicate_keys),
            Value::Object(m) => {
                m.iter()
                    .enumerate()
                    .any(|(i, (k, _))| m[..i].iter().any(|(j, _)| j == k))
                    || m.iter().any(|(_, v)| v.has_duplicate_keys())
            }
            _ => false,
        }
    }

    /// Nesting depth: 0 for a scalar, 1 for `[]`.
    pub fn depth(&self) -> usize {
        match self {
            Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Object(m) => 1 + m.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }
}

/// The members Go decodes into one struct: a pointer-to-struct field that
/// appears several times is decoded into the same struct each time (so the
/// members add up), and `null` sets the pointer to nil.
#[derive(Clone, Debug, Default)]
pub struct Struct<'a> {
    members: Vec<&'a (String, Value)>,
}

impl<'a> Struct<'a> {
    pub fn of(value: &'a Value) -> Struct<'a> {
        let mut s = Struct::default();
        if let Value::Object(m) = value {
            s.members.extend(m.iter());
        }
        s
    }

    /// The values of every member Go matches to `field`, in order.
    fn values(&self, field: &str) -> impl Iterator<Item = &'a Value> + '_ {
        let field = field.to_owned();
        self.members
            .iter()
            .filter(move |(k, _)| *k == field || go_equal_fold_ascii(k, &field))
            .map(|(_, v)| v)
    }

    /// A `*Struct` field.
    pub fn child(&self, field: &str) -> Struct<'a> {
        let mut s = Struct::default();
        for v in self.values(field) {
            match v {
                Value::Null => s.members.clear(),
                Value::Object(m) => s.members.extend(m.iter()),
                // A type error: Go leaves the field and refuses the body at
                // the end; seeing the field unchanged over-approximates.
                _ => {}
            }
        }
        s
    }

    /// A `bool` field: the last value of the right type; `null` changes
    /// nothing.
    pub fn bool(&self, field: &str) -> bool {
        self.values(field)
            .filter_map(|v| match v {
                Value::Bool(b) => Some(*b),
                _ => None,
            })
            .last()
            .unwrap_or(false)
    }

    /// A `string` field, like [`Struct::bool`].
    pub fn string(&self, field: &str) -> &'a str {
        self.values(field)
            .filter_map(|v| match v {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            })
            .last()
            .unwrap_or("")
    }

    /// A slice field: each array replaces the slice, `null` empties it.
    pub fn array(&self, field: &str) -> &'a [Value] {
        let mut out: &[Value] = &[];
        for v in self.values(field) {
            match v {
                Value::Array(items) => out = items,
                Value::Null => out = &[],
                _ => {}
            }
        }
        out
    }

    /// Whether a slice field ends up non-nil (`[]` included): moby tells an
    /// empty `MaskedPaths` from an absent one.
    pub fn slice_set(&self, field: &str) -> bool {
        self.values(field)
            .filter(|v| matches!(v, Value::Array(_) | Value::Null))
            .last()
            .is_some_and(|v| matches!(v, Value::Array(_)))
    }

    /// moby's `strslice.StrSlice`: an array, or one string.
    pub fn str_slice(&self, field: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        for v in self.values(field) {
            match v {
                Value::String(s) => out = vec![s.as_str()],
                Value::Array(items) => {
                    out = items
                        .iter()
                        .filter_map(|i| match i {
                            Value::String(s) => Some(s.as_str()),
                            _ => None,
                        })
                        .collect()
                }
                Value::Null => out.clear(),
                _ => {}
            }
        }
        out
    }

    /// A `map[string]string` field: objects add to the map (keys exact,
    /// the last wins), `null` empties it.
    pub fn string_map(&self, field: &str) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for v in self.values(field) {
            match v {
                Value::Null => out.clear(),
                Value::Object(m) => {
                    for (k, v) in m {
                        // A null element is stored as "".
                        let v = match v {
                            Value::String(v) => v.as_str(),
                            Value::Null => "",
                            _ => continue,
                        };
                        out.retain(|(key, _)| key != k);
                        out.push((k, v));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// The request target as dockerd routes it: the API version (`1.41`), the
/// path after it and the raw query. None when dockerd would route it
/// nowhere: an escape Go refuses (400), or a path gorilla/mux cleans and
/// answers with a redirect (301) instead of running the handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub version: Option<String>,
    pub path: String,
    pub query: Option<String>,
}

impl Target {
    /// Go's `url.ParseRequestURI` (no fragment: `#` stays in the path or
    /// the query), `URL.Path` decoded, mux's `cleanPath` check, then
    /// moby's version prefix `/v{version:[0-9.]+}`.
    pub fn of(raw: &str) -> Option<Target> {
        if !raw.starts_with('/') || raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return None;
        }
        let (path, query) = if raw.ends_with('?') && raw.matches('?').count() == 1 {
            (&raw[..raw.len() - 1], None)
        } else {
            match raw.split_once('?') {
                Some((p, q)) => (p, Some(q.to_owned())),
                None => (raw, None),
            }
        };
        let path = percent_decode(path, false)?;
        let path = String::from_utf8(path).ok()?;
        if clean_path(&path) != path {
            return None;
        }
        let versioned = path.strip_prefix("/v").and_then(|rest| {
            let end = rest.find('/')?;
            let v = &rest[..end];
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                .then(|| (v.to_owned(), rest[end..].to_owned()))
        });
        Some(match versioned {
            Some((v, rest)) => Target {
                version: Some(v),
                path: rest,
                query,
            },
            None => Target {
                version: None,
                path,
                query,
            },
        })
    }

    /// `r.FormValue(key)` without a form body: the first value of `key` in
    /// the query as Go's `url.ParseQuery` reads it (pairs with `;` or a bad
    /// escape are skipped, the others kept).
    pub fn form_value(&self, key: &str) -> Option<String> {
        form_value(self.query.as_deref()?, key)
    }
}

/// The first value of `key` in `query` read as Go's `url.ParseQuery`.
pub fn form_value(query: &str, key: &str) -> Option<String> {
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
            continue;
        };
        if k == key.as_bytes() {
            return Some(String::from_utf8_lossy(&v).into_owned());
        }
    }
    None
}

/// Go's `url.unescape`: `%XX` (hex digits required), and `+` as a space in
/// query components. Written apart from the proxy's own decoder
/// (`policy::routes`) on purpose: an oracle that shares the code under
/// test shares its bugs.
fn percent_decode(s: &str, query: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
                out.push((hex(b.get(i + 1))? * 16 + hex(b.get(i + 2))?) as u8);
                i += 3;
            }
            b'+' if query => {
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

/// gorilla/mux `cleanPath`: Go's `path.Clean`, keeping a trailing slash.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".into();
    }
    let mut np = clean(p);
    if p.ends_with('/') && np != "/" {
        np.push('/');
    }
    np
}

/// Go's `path.Clean` of an absolute path: no empty, `.` or `..` segments.
pub fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Whether `source` (absolute) stays under the default allowlist
/// `/builds,/cache` once cleaned the way the kernel resolves `..`.
pub fn under_allowlist(source: &str) -> bool {
    let c = clean(source);
    ["/builds", "/cache"]
        .iter()
        .any(|d| c == *d || c.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
}

/// Capabilities that reach beyond the container; a few are enough for an
/// oracle (the rule itself allows only Docker's default set).
const DANGEROUS_CAPS: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "NET_ADMIN",
    "DAC_READ_SEARCH",
    "SYS_BOOT",
    "BPF",
];

/// What a create body (or a start body of API < 1.24) gives the container
/// that ci-safe must refuse, in Go's reading; None when nothing.
pub fn create_escape(body: &[u8]) -> Option<String> {
    let top = Value::parse_first(body)?;
    let top = Struct::of(&top);
    // The wrapper's HostConfig, and the deprecated top-level fields that
    // dockerd uses when it is absent (and partly merges otherwise).
    let hc = top.child("HostConfig");
    for s in [&top, &hc] {
        if let Some(why) = hostconfig_escape(s) {
            return Some(why);
        }
    }
    // `--network host` names the network here as well.
    let endpoints = top
        .child("NetworkingConfig")
        .values("EndpointsConfig")
        .last();
    if let Some(Value::Object(eps)) = endpoints {
        if eps.iter().any(|(k, _)| k == "host") {
            return Some("EndpointsConfig host".into());
        }
    }
    None
}

fn hostconfig_escape(hc: &Struct) -> Option<String> {
    if hc.bool("Privileged") {
        return Some("Privileged".into());
    }
    // moby's IsHost(): exact comparison with "host".
    for f in [
        "NetworkMode",
        "PidMode",
        "IpcMode",
        "UTSMode",
        "UsernsMode",
        "CgroupnsMode",
    ] {
        if hc.string(f) == "host" {
            return Some(format!("{f}=host"));
        }
    }
    for c in hc.str_slice("CapAdd") {
        // moby upper-cases with Unicode rules and adds CAP_.
        let up = c.to_uppercase();
        let name = up.strip_prefix("CAP_").unwrap_or(&up);
        if DANGEROUS_CAPS.contains(&name) {
            return Some(format!("CapAdd {c}"));
        }
    }
    for f in [
        "Devices",
        "DeviceRequests",
        "DeviceCgroupRules",
        "VolumesFrom",
    ] {
        if !hc.array(f).is_empty() {
            return Some(f.into());
        }
    }
    for f in ["MaskedPaths", "ReadonlyPaths"] {
        if hc.slice_set(f) {
            return Some(format!("{f} set (systempaths=unconfined)"));
        }
    }
    if !hc.string("CgroupParent").is_empty() {
        return Some("CgroupParent".into());
    }
    for opt in hc.array("SecurityOpt") {
        if let Value::String(o) = opt {
            // moby's parseSecurityOpt: key=value, else key:value.
            let kv = o.split_once('=').or_else(|| o.split_once(':'));
            if matches!(
                kv,
                Some(("seccomp" | "apparmor" | "systempaths", "unconfined"))
            ) || o == "disable"
            {
                return Some(format!("SecurityOpt {o}"));
            }
        }
    }
    for (target, opts) in hc.string_map("Tmpfs") {
        if opts.split(',').any(|o| o == "bind" || o == "rbind") {
            return Some(format!("Tmpfs {target}:{opts}"));
        }
    }
    for bind in hc.array("Binds") {
        if let Value::String(b) = bind {
            // moby's Linux parser: source:target[:mode], a bind when the
            // source is absolute.
            let parts: Vec<&str> = b.split(':').collect();
            if (2..=3).contains(&parts.len())
                && parts[0].starts_with('/')
                && !under_allowlist(parts[0])
            {
                return Some(format!("Binds {b}"));
            }
        }
    }
    for m in hc.array("Mounts") {
        let m = Struct::of(m);
        let source = m.string("Source");
        match m.string("Type") {
            "bind" if source.starts_with('/') && !under_allowlist(source) => {
                return Some(format!("Mounts bind {source}"));
            }
            "tmpfs" => {
                let to = m.child("TmpfsOptions");
                for o in to.array("Options") {
                    if let Value::Array(parts) = o {
                        if matches!(parts.first(), Some(Value::String(n)) if n == "bind" || n == "rbind")
                        {
                            return Some("Mounts tmpfs with a bind option".into());
                        }
                    }
                }
            }
            "volume" => {
                let opts = m
                    .child("VolumeOptions")
                    .child("DriverConfig")
                    .string_map("Options");
                if let Some(why) = volume_opts_escape(&opts) {
                    return Some(format!("Mounts volume {why}"));
                }
            }
            _ => {}
        }
    }
    None
}

/// Local volume options that bind a host path outside the allowlist.
pub fn volume_opts_escape(opts: &[(&str, &str)]) -> Option<String> {
    let get = |k: &str| {
        opts.iter()
            .rev()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .unwrap_or("")
    };
    let binds = get("o").split(',').any(|f| f == "bind" || f == "rbind");
    let device = get("device");
    (binds && device.starts_with('/') && !under_allowlist(device))
        .then(|| format!("o=bind device={device}"))
}

/// An update body that adds host devices (dockerd ignores them today; the
/// rule refuses them all the same).
pub fn update_escape(body: &[u8]) -> Option<String> {
    let v = Value::parse_first(body)?;
    let s = Struct::of(&v);
    (!s.array("Devices").is_empty() || !s.array("DeviceRequests").is_empty())
        .then(|| "update Devices".into())
}

/// An exec create body that asks for a privileged process.
pub fn exec_escape(body: &[u8]) -> Option<String> {
    let v = Value::parse_first(body)?;
    Struct::of(&v)
        .bool("Privileged")
        .then(|| "exec Privileged".into())
}

/// A volume create body that binds a host path.
pub fn volume_escape(body: &[u8]) -> Option<String> {
    let v = Value::parse_first(body)?;
    let s = Struct::of(&v);
    volume_opts_escape(&s.string_map("DriverOpts"))
}

/// A network create body with a driver that reaches the host's network.
pub fn network_escape(body: &[u8]) -> Option<String> {
    let v = Value::parse_first(body)?;
    let d = Struct::of(&v).string("Driver");
    matches!(d, "macvlan" | "ipvlan" | "host").then(|| format!("network driver {d}"))
}

/// A build whose options (query, or a form body Go merges ahead of it) ask
/// for the host's network or another cgroup.
pub fn build_escape(target: &Target, content_type: Option<&[u8]>, body: &[u8]) -> Option<String> {
    let form = content_type.is_some_and(|ct| {
        let ct = String::from_utf8_lossy(ct);
        let base = ct.split(';').next().unwrap_or("").trim();
        // Go's strings.ToLower maps İ to i and the Kelvin sign to k.
        let lower: String = base
            .chars()
            .map(|c| match c {
                '\u{130}' => 'i',
                c => c.to_lowercase().next().unwrap_or(c),
            })
            .collect();
        lower == "application/x-www-form-urlencoded"
    });
    let value = |key: &str| {
        let from_body = form
            .then(|| {
                std::str::from_utf8(body)
                    .ok()
                    .and_then(|b| form_value(b, key))
            })
            .flatten();
        from_body.or_else(|| target.form_value(key))
    };
    if value("networkmode").as_deref() == Some("host") {
        return Some("build networkmode=host".into());
    }
    match value("cgroupparent") {
        Some(c) if !c.is_empty() => Some(format!("build cgroupparent={c}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_as_dockerd_routes_them() {
        let t = Target::of("/v1.41/containers/create?name=x").unwrap();
        assert_eq!(
            (t.version.as_deref(), t.path.as_str(), t.query.as_deref()),
            (Some("1.41"), "/containers/create", Some("name=x"))
        );
        assert_eq!(Target::of("/containers/x/../create"), None);
        assert_eq!(
            Target::of("/containers%2Fcreate").unwrap().path,
            "/containers/create"
        );
        let t = Target::of("/build?t=x#&networkmode=host").unwrap();
        assert_eq!(t.form_value("networkmode").as_deref(), Some("host"));
        assert_eq!(
            Target::of("/v1..4/x").unwrap().version.as_deref(),
            Some("1..4")
        );
    }

    #[test]
    fn go_reads_merged_and_folded_fields() {
        let b = br#"{"HostConfig":{"privileged":true},"HostConfig":{"Memory":1}} trailing"#;
        assert_eq!(create_escape(b).as_deref(), Some("Privileged"));
        let b = br#"{"HostConfig":{"Privileged":true},"HostConfig":null}"#;
        assert_eq!(create_escape(b), None);
        let b = br#"{"HostConfig":{"Privileged":true,"Privileged":null}}"#;
        assert_eq!(create_escape(b).as_deref(), Some("Privileged"));
        let b = br#"{"HostConfig":{"Binds":["/:/h"],"Binds":null}}"#;
        assert_eq!(create_escape(b), None);
        let b = br#"{"HostConfig":{"Binds":["/builds/../etc:/h"]}}"#;
        assert!(create_escape(b).is_some());
        let b = r#"{"HostConfig":{"CapAdd":["ſys_admin"]}}"#.as_bytes();
        assert!(create_escape(b).is_some());
        let b = br#"{"HostConfig":{"MaskedPaths":[]}}"#;
        assert!(create_escape(b).is_some());
        let b = br#"{"HostConfig":{"MaskedPaths":[],"MaskedPaths":null}}"#;
        assert_eq!(create_escape(b), None);
        let b = br#"{"HostConfig":{"SecurityOpt":["seccomp:unconfined"]}}"#;
        assert!(create_escape(b).is_some());
        let b = br#"{"NetworkingConfig":{"EndpointsConfig":{"host":{}}}}"#;
        assert!(create_escape(b).is_some());
        let b = br#"{"HostConfig":{"CapAdd":"ALL"}}"#;
        assert!(create_escape(b).is_some());
        let b = br#"{"Name":"v","DriverOpts":{"o":"bind","device":"/etc","device":null}}"#;
        assert_eq!(volume_escape(b), None);
    }
}
