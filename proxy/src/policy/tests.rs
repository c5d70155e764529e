//! The policy as the decision point uses it: head, then body.

use hyper::Method;

use super::*;

fn head(method: &str, path: &str, query: Option<&str>) -> RequestHead {
    RequestHead {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        version: Some("1.45".into()),
        path: path.into(),
        query: query.map(Into::into),
        upgrade: None,
    }
}

const JSON: Option<&[u8]> = Some(b"application/json");

/// Runs both steps like the decision point: the final verdict.
fn decide(p: &Policy, method: &str, path: &str, ct: Option<&[u8]>, body: &str) -> Verdict {
    let h = head(method, path, None);
    match p.on_head(&h, ct) {
        Verdict::NeedBody => p.on_body(&h, ct, body.as_bytes()),
        v => v,
    }
}

fn rule(v: &Verdict) -> Option<&'static str> {
    match v {
        Verdict::Deny(d) => Some(d.rule),
        _ => None,
    }
}

#[test]
fn permissive_allows_everything_without_reading_bodies() {
    let p = Policy::permissive();
    assert_eq!(p.name(), "permissive");
    assert_eq!(p.denied_rules().count(), 0);
    for (m, path) in [
        ("POST", "/containers/create"),
        ("POST", "/plugins/pull"),
        ("POST", "/swarm/init"),
        ("POST", "/no/such/route"),
        ("POST", "/containers/%63reate"),
        ("PATCH", "/x"),
    ] {
        assert_eq!(
            p.on_head(
                &head(m, path, None),
                Some(b"application/x-www-form-urlencoded")
            ),
            Verdict::Allow
        );
    }
    let v = decide(
        &p,
        "POST",
        "/containers/create",
        JSON,
        r#"{"HostConfig":{"Privileged":true}}"#,
    );
    assert_eq!(v, Verdict::Allow);
}

#[test]
fn reads_are_always_allowed() {
    let p = Policy::ci_safe();
    for (m, path) in [
        ("GET", "/containers/json"),
        ("GET", "/no/such/route"),
        ("HEAD", "/_ping"),
        ("GET", "/containers/x/attach/ws"),
        ("OPTIONS", "/containers/create"),
        ("GET", "/plugins"),
        ("GET", "/containers/%63reate"),
    ] {
        assert_eq!(
            p.on_head(&head(m, path, None), None),
            Verdict::Allow,
            "{m} {path}"
        );
    }
}

#[test]
fn debug_endpoints_are_denied_to_every_method_unless_allowed() {
    let p = Policy::ci_safe();
    for (m, path) in [
        ("GET", "/debug/vars"),
        ("GET", "/debug/pprof/cmdline"),
        ("HEAD", "/debug/vars"),
        ("OPTIONS", "/debug/vars"),
        ("POST", "/debug/pprof/symbol"),
        ("GET", "/%64ebug/vars"),
    ] {
        assert_eq!(
            rule(&p.on_head(&head(m, path, None), None)),
            Some("debug"),
            "{m} {path}"
        );
    }
    let v = p.on_head(&head("GET", "/debug/vars", None), None);
    assert_eq!(
        v,
        Verdict::Deny(Denial {
            rule: "debug",
            reason: "policy ci-safe: GET /debug/vars is not allowed: dockerd's debug endpoints expose its command line and internals".into(),
        })
    );
    let mut allowed = Policy::ci_safe();
    allowed.set(Rule::Debug, false);
    for m in ["GET", "POST"] {
        assert_eq!(
            allowed.on_head(&head(m, "/debug/pprof/symbol", None), None),
            Verdict::Allow,
            "{m}"
        );
    }
    assert_eq!(
        Policy::permissive().on_head(&head("GET", "/debug/vars", None), None),
        Verdict::Allow
    );
}

#[test]
fn ci_safe_reads_bodies_of_decided_endpoints_only() {
    let p = Policy::ci_safe();
    for path in [
        "/containers/create",
        "/containers/abc/update",
        "/containers/abc/exec",
        "/containers/abc/start",
        "/volumes/create",
        "/networks/create",
    ] {
        assert_eq!(
            p.on_head(&head("POST", path, None), JSON),
            Verdict::NeedBody,
            "{path}"
        );
    }
    for (m, path) in [
        ("POST", "/containers/abc/stop"),
        ("POST", "/containers/abc/attach"),
        ("POST", "/exec/abc/start"),
        ("POST", "/images/create"),
        ("POST", "/images/registry.example/app/push"),
        ("POST", "/build"),
        ("POST", "/session"),
        ("POST", "/grpc"),
        ("PUT", "/containers/abc/archive"),
        ("DELETE", "/containers/abc"),
        ("DELETE", "/images/alpine:3"),
        ("POST", "/containers/prune"),
    ] {
        assert_eq!(
            p.on_head(&head(m, path, None), None),
            Verdict::Allow,
            "{m} {path}"
        );
    }
}

#[test]
fn unknown_mutating_routes_and_route_families_are_denied() {
    let p = Policy::ci_safe();
    let v = p.on_head(&head("POST", "/containers/abc/checkpoints", None), None);
    assert_eq!(
        v,
        Verdict::Deny(Denial {
            rule: "unknown_route",
            reason:
                "policy ci-safe: POST /containers/abc/checkpoints is not a known Docker API route"
                    .into(),
        })
    );
    assert_eq!(
        rule(&p.on_head(&head("PATCH", "/containers/abc", None), None)),
        Some("unknown_route")
    );
    assert_eq!(
        rule(&p.on_head(&head("DELETE", "/", None), None)),
        Some("unknown_route")
    );
    for (path, want) in [
        ("/plugins/pull", "plugins"),
        ("/plugins/x/upgrade", "plugins"),
        ("/plugins/create", "plugins"),
        ("/plugins/x/enable", "plugins"),
        ("/plugins/x/set", "plugins"),
        ("/swarm/init", "swarm"),
        ("/swarm/join", "swarm"),
        ("/nodes/n/update", "swarm"),
        ("/services/create", "services"),
        ("/services/s/update", "services"),
        ("/secrets/create", "secrets"),
        ("/configs/create", "configs"),
    ] {
        assert_eq!(
            rule(&p.on_head(&head("POST", path, None), None)),
            Some(want),
            "{path}"
        );
    }
    let v = p.on_head(&head("POST", "/plugins/pull", None), None);
    let Verdict::Deny(d) = v else { panic!() };
    assert_eq!(
        d.reason,
        "policy ci-safe: POST /plugins/pull is not allowed: plugins cannot be installed or changed"
    );
}

#[test]
fn percent_encoded_paths_cannot_dodge_the_route_table() {
    let p = Policy::ci_safe();
    for path in [
        "/containers/%63reate",
        "/containers/x/%75pdate",
        "/%62uild",
        "/containers/x%2Fy/start",
    ] {
        assert_eq!(
            rule(&p.on_head(&head("POST", path, None), JSON)),
            Some("path"),
            "{path}"
        );
    }
}

#[test]
fn form_bodies_are_refused_on_mutating_requests() {
    // Go would read such a body into r.Form, ahead of the query string:
    // `networkmode=host` would reach the builder unseen.
    let p = Policy::ci_safe();
    let build = head("POST", "/build", Some("t=app"));
    for ct in [
        &b"application/x-www-form-urlencoded"[..],
        b"Application/X-WWW-Form-Urlencoded; charset=utf-8",
        b"multipart/form-data; boundary=x",
        b" application/x-www-form-urlencoded ;;;",
    ] {
        assert_eq!(
            rule(&p.on_head(&build, Some(ct))),
            Some("content_type"),
            "{}",
            String::from_utf8_lossy(ct)
        );
    }
    // Go lower-cases with Unicode rules; we refuse non-ASCII instead.
    let v = p.on_head(
        &build,
        Some("APPL\u{130}CATION/X-WWW-FORM-URLENCODED".as_bytes()),
    );
    assert_eq!(rule(&v), Some("content_type"));
    assert_eq!(
        p.on_head(&build, Some(b"application/x-tar")),
        Verdict::Allow
    );
    assert_eq!(p.on_head(&build, None), Verdict::Allow);
    // GET is not parsed as a form by Go.
    let get = head("GET", "/containers/json", None);
    assert_eq!(
        p.on_head(&get, Some(b"application/x-www-form-urlencoded")),
        Verdict::Allow
    );
}

#[test]
fn build_query_string() {
    let p = Policy::ci_safe();
    let v = p.on_head(
        &head("POST", "/build", Some("t=app&networkmode=host")),
        None,
    );
    assert_eq!(
        v,
        Verdict::Deny(Denial {
            rule: "host_network",
            reason: "policy ci-safe: builds in the host's network namespace are not allowed (networkmode)".into(),
        })
    );
    assert_eq!(
        rule(&p.on_head(&head("POST", "/build", Some("cgroupparent=x")), None)),
        Some("cgroup_parent")
    );
    assert_eq!(
        rule(&p.on_head(&head("POST", "/build", Some("networkmode=a;b")), None)),
        Some("query")
    );
    let ok = head(
        "POST",
        "/build",
        Some("t=app&version=2&networkmode=default&buildargs=%7B%7D"),
    );
    assert_eq!(p.on_head(&ok, Some(b"application/x-tar")), Verdict::Allow);
}

#[test]
fn the_issue_examples_are_denied_with_readable_messages() {
    let p = Policy::ci_safe();
    let cases = [
        (r#"{"Image":"alpine","HostConfig":{"Privileged":true}}"#, "privileged containers are not allowed (HostConfig.Privileged)"),
        (r#"{"Image":"alpine","HostConfig":{"Binds":["/:/host"]}}"#, "bind mount of / is not allowed; allowed: /builds, /cache (HostConfig.Binds)"),
        (r#"{"Image":"alpine","HostConfig":{"PidMode":"host"}}"#, "the host's PID namespace is not allowed (HostConfig.PidMode)"),
        (r#"{"Image":"alpine","HostConfig":{"CapAdd":["SYS_ADMIN"]}}"#, "adding capability SYS_ADMIN is not allowed (only Docker's default set) (HostConfig.CapAdd)"),
        (r#"{"Image":"alpine","HostConfig":{"Devices":[{"PathOnHost":"/dev/kmsg","PathInContainer":"/dev/kmsg","CgroupPermissions":"rwm"}]}}"#, "host devices are not allowed (HostConfig.Devices)"),
        (r#"{"Image":"alpine","HostConfig":{"SecurityOpt":["seccomp=unconfined"]}}"#, "seccomp=unconfined is not allowed (HostConfig.SecurityOpt)"),
    ];
    for (body, want) in cases {
        match decide(&p, "POST", "/containers/create", JSON, body) {
            Verdict::Deny(d) => assert_eq!(d.reason, format!("policy ci-safe: {want}")),
            v => panic!("{body}: {v:?}"),
        }
    }
    // ...while ordinary runs and allowlisted binds still work.
    let body = r#"{"Image":"alpine","Cmd":["true"],"HostConfig":{"Binds":["/builds/g/p:/src"],"AutoRemove":true}}"#;
    assert_eq!(
        decide(&p, "POST", "/containers/create", JSON, body),
        Verdict::Allow
    );
}

#[test]
fn bypass_tricks_on_the_body() {
    let p = Policy::ci_safe();
    let d = |body: &str| rule(&decide(&p, "POST", "/containers/create", JSON, body));
    assert_eq!(d(r#"{} {"HostConfig":{"Privileged":true}}"#), Some("parse"));
    assert_eq!(
        d(r#"{"HostConfig":{"Privileged":false,"Privileged":true}}"#),
        Some("parse")
    );
    assert_eq!(
        d(r#"{"HostConfig":{"Privileged":true,"Privileged":false}}"#),
        Some("parse")
    );
    assert_eq!(
        d(r#"{"HostConfig":{"privileged":true}}"#),
        Some("ambiguous_key")
    );
    assert_eq!(
        d(r#"{"HostConfig":{"Privil\u0065ged":true}}"#),
        Some("privileged")
    );
    assert_eq!(
        d("{\"HostConfig\":{\"Privileged\":true}}\u{0}"),
        Some("parse")
    );
    assert_eq!(
        d(r#"{"HostConfig":{"Privileged":true,"x":"\ud800"}}"#),
        Some("parse")
    );
    assert_eq!(d(r#"{"Privileged":true}"#), Some("toplevel_hostconfig"));
    let v = p.on_body(
        &head("POST", "/containers/create", None),
        JSON,
        b"{\"HostConfig\":{\"Binds\":[\"/\xff:/h\"]}}",
    );
    assert_eq!(rule(&v), Some("parse"));
    let v = decide(
        &p,
        "POST",
        "/containers/create",
        JSON,
        r#"{"HostConfig":{"Privileged":true}"#,
    );
    let Verdict::Deny(den) = v else { panic!() };
    assert_eq!(den.reason, "policy ci-safe: the request body is not strict JSON: body ends where ',' or '}' was expected");
}

#[test]
fn content_type_of_json_bodies() {
    let p = Policy::ci_safe();
    let body = r#"{"Image":"alpine"}"#;
    let d = |ct: Option<&[u8]>| decide(&p, "POST", "/containers/create", ct, body);
    assert_eq!(d(JSON), Verdict::Allow);
    assert_eq!(d(Some(b"application/json; charset=utf-8")), Verdict::Allow);
    assert_eq!(d(Some(b"Application/JSON")), Verdict::Allow);
    assert_eq!(rule(&d(None)), Some("content_type"));
    assert_eq!(rule(&d(Some(b"text/plain"))), Some("content_type"));
    assert_eq!(rule(&d(Some(b"application/jsonx"))), Some("content_type"));
    assert_eq!(rule(&d(Some(b""))), Some("content_type"));
    // An empty body carries nothing: dockerd errors or uses the defaults.
    for empty in ["", " \r\n"] {
        assert_eq!(
            decide(&p, "POST", "/containers/create", None, empty),
            Verdict::Allow
        );
        assert_eq!(
            decide(&p, "POST", "/containers/x/start", None, empty),
            Verdict::Allow
        );
    }
}

#[test]
fn body_over_the_cap_is_refused_if_it_ever_reaches_on_body() {
    let p = Policy::ci_safe();
    assert_eq!(p.body_cap(), 4 << 20);
    let big = vec![b' '; p.body_cap() + 1];
    let v = p.on_body(&head("POST", "/containers/create", None), JSON, &big);
    assert_eq!(rule(&v), Some("body_too_large"));
}

#[test]
fn on_body_repeats_the_head_decision_for_other_routes() {
    let p = Policy::ci_safe();
    let v = p.on_body(&head("POST", "/plugins/pull", None), JSON, b"{}");
    assert_eq!(rule(&v), Some("plugins"));
    let v = p.on_body(&head("POST", "/containers/x/stop", None), JSON, b"garbage");
    assert_eq!(v, Verdict::Allow);
}

#[test]
fn allowing_every_body_rule_skips_reading_the_body() {
    let mut p = Policy::ci_safe();
    p.set(Rule::PrivilegedExec, false);
    assert_eq!(
        p.on_head(&head("POST", "/containers/x/exec", None), JSON),
        Verdict::Allow
    );
    p.set(Rule::NetworkDriver, false);
    assert_eq!(
        p.on_head(&head("POST", "/networks/create", None), JSON),
        Verdict::Allow
    );
}

#[test]
fn a_permissive_file_can_deny_one_rule() {
    let mut p = Policy::permissive();
    p.set(Rule::Privileged, true);
    let d = |body: &str| rule(&decide(&p, "POST", "/containers/create", JSON, body));
    assert_eq!(
        d(r#"{"HostConfig":{"Privileged":true}}"#),
        Some("privileged")
    );
    assert_eq!(
        d(r#"{"HostConfig":{"Binds":["/:/h"],"CapAdd":["ALL"]}}"#),
        None
    );
    assert_eq!(
        p.on_head(&head("POST", "/plugins/pull", None), None),
        Verdict::Allow
    );
    // Route classification matters now: encoded paths are refused.
    assert_eq!(
        rule(&p.on_head(&head("POST", "/containers/%63reate", None), None)),
        Some("path")
    );
}

#[test]
fn mutating_means_not_get_or_head() {
    assert!(!is_mutating(&head("GET", "/info", None)));
    assert!(!is_mutating(&head("HEAD", "/_ping", None)));
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        assert!(is_mutating(&head(m, "/x", None)), "{m}");
    }
}

#[test]
fn load_profiles_and_allowlist() {
    assert_eq!(Policy::load("ci-safe", None).unwrap(), Policy::ci_safe());
    assert_eq!(
        Policy::load("permissive", None).unwrap(),
        Policy::permissive()
    );
    assert_eq!(Policy::load("", None).unwrap(), Policy::permissive());
    let p = Policy::load("ci-safe", Some(" /builds , /srv/cache/ ,")).unwrap();
    assert_eq!(p.allow_binds(), ["/builds", "/srv/cache"]);
    let p = Policy::load("ci-safe", Some("")).unwrap();
    assert!(p.allow_binds().is_empty());
    let d = decide(
        &p,
        "POST",
        "/containers/create",
        JSON,
        r#"{"HostConfig":{"Binds":["/builds:/b"]}}"#,
    );
    let Verdict::Deny(d) = d else { panic!() };
    assert!(
        d.reason.contains("no directory is allowlisted"),
        "{}",
        d.reason
    );

    let e = Policy::load("ci_safe", None).unwrap_err().to_string();
    assert!(
        e.starts_with("DIND_POLICY=\"ci_safe\" is neither a profile nor a policy file"),
        "{e}"
    );
    let e = Policy::load("ci-safe", Some("builds"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "DIND_POLICY_ALLOW_BINDS: \"builds\" is not an absolute directory without '..'"
    );
    let e = Policy::load("ci-safe", Some("/a:/b"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("contains ':'"), "{e}");
}

#[test]
fn load_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "profile = \"ci-safe\"\nallow_binds = [\"/srv\"]\n[rules]\nprivileged = \"allow\"\n",
    )
    .unwrap();
    let spec = path.to_str().unwrap();
    let p = Policy::load(spec, None).unwrap();
    assert_eq!(p.name(), format!("file:{spec} (ci-safe)"));
    let d = decide(
        &p,
        "POST",
        "/containers/create",
        JSON,
        r#"{"HostConfig":{"Privileged":true,"Binds":["/srv/x:/x"]}}"#,
    );
    assert_eq!(d, Verdict::Allow);
    let d = decide(
        &p,
        "POST",
        "/containers/create",
        JSON,
        r#"{"HostConfig":{"Binds":["/builds:/x"]}}"#,
    );
    let Verdict::Deny(d) = d else { panic!() };
    assert!(
        d.reason.starts_with(&format!(
            "policy file:{spec} (ci-safe): bind mount of /builds"
        )),
        "{}",
        d.reason
    );
    assert!(Policy::load(spec, Some("/x")).is_err());
}

#[test]
fn rule_names_round_trip() {
    for r in Rule::ALL {
        assert_eq!(Rule::from_name(r.name()), Some(r));
    }
    assert_eq!(Rule::ALL.len(), Rule::UnknownRoute as usize + 1);
    assert!(Rule::ALL.len() <= 64);
    assert_eq!(Policy::ci_safe().denied_rules().count(), Rule::ALL.len());
}

#[test]
fn start_bodies_dockerd_ignores_are_allowed() {
    let p = Policy::ci_safe();
    // dockerd reads a start body only above 7 bytes.
    assert_eq!(
        decide(&p, "POST", "/containers/x/start", None, "{}"),
        Verdict::Allow
    );
    assert_eq!(
        decide(&p, "POST", "/containers/x/start", None, "null"),
        Verdict::Allow
    );
    let v = decide(
        &p,
        "POST",
        "/containers/x/start",
        JSON,
        r#"{"Privileged":true}"#,
    );
    assert_eq!(rule(&v), Some("toplevel_hostconfig"));
    let v = decide(
        &p,
        "POST",
        "/containers/x/start",
        JSON,
        r#"{"HostConfig":{"PidMode":"host"}}"#,
    );
    assert_eq!(rule(&v), Some("host_pid"));
}

/// How Go's `encoding/json` (dockerd) reads `Privileged` from a create
/// body, modelled independently of our parser: serde_json keeps the last of
/// duplicate keys as Go does, only the first value counts, and keys match
/// fields exactly or under Go's folding, the last match winning.
fn go_reads_privileged(body: &[u8]) -> bool {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Object(top))) = values.next() else {
        return false;
    };
    let go_get = |obj: &serde_json::Map<String, serde_json::Value>, field: &str| {
        let mut found = None;
        for (k, v) in obj {
            if k == field || json::go_equal_fold_ascii(k, field) {
                found = Some(v.clone());
            }
        }
        found
    };
    let hc = match go_get(&top, "HostConfig") {
        Some(serde_json::Value::Object(hc)) => hc,
        _ => top,
    };
    go_get(&hc, "Privileged") == Some(serde_json::Value::Bool(true))
}

/// A small deterministic generator (xorshift) of create bodies built from
/// the bypass classes of issue #5.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// `name` respelled: case flips, Go's extra folds, JSON escapes.
    fn spell(&mut self, name: &str) -> String {
        if self.below(3) == 0 {
            return name.to_owned();
        }
        let mut out = String::new();
        for c in name.chars() {
            let c = match self.next() % 6 {
                0 => c.to_ascii_lowercase(),
                1 => c.to_ascii_uppercase(),
                _ => c,
            };
            let c = match (c, self.next() % 4) {
                ('s' | 'S', 0) => '\u{17f}',
                ('k' | 'K', 0) => '\u{212a}',
                ('i', 0) => '\u{131}',
                _ => c,
            };
            if self.below(5) == 0 {
                out.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                out.push(c);
            }
        }
        out
    }

    fn member(&mut self, name: &str, value: &str) -> String {
        let ws = self.pick(&["", " ", "\n\t"]);
        format!("{ws}\"{}\"{ws}:{ws}{value}", self.spell(name))
    }

    fn body(&mut self) -> String {
        let bools = ["true", "false", "null", "\"true\"", "1"];
        let mut hc_members = Vec::new();
        for _ in 0..(1 + self.next() % 3) {
            let v = self.pick(&bools);
            hc_members.push(self.member("Privileged", v));
        }
        if self.below(2) == 0 {
            hc_members.push(self.member("Memory", "0"));
        }
        let hc = format!("{{{}}}", hc_members.join(","));
        let mut top = vec![self.member("Image", "\"alpine\"")];
        match self.next() % 4 {
            0 => top.push(self.member("HostConfig", &hc)),
            1 => top.extend(hc_members),
            2 => {
                top.push(self.member("HostConfig", "null"));
                top.extend(hc_members);
            }
            _ => {
                top.push(self.member("HostConfig", "{}"));
                top.push(self.member("HostConfig", &hc));
            }
        }
        let body = format!("{{{}}}", top.join(","));
        match self.next() % 5 {
            0 => format!("{{}} {body}"),
            1 => format!("{body} {{\"HostConfig\":{{\"Privileged\":false}}}}"),
            _ => body,
        }
    }
}

#[test]
fn no_body_is_privileged_for_dockerd_and_allowed_by_ci_safe() {
    let p = Policy::ci_safe();
    let h = head("POST", "/containers/create", None);
    let mut gen = Gen(0x9e37_79b9_7f4a_7c15);
    let (mut privileged, mut allowed) = (0, 0);
    for _ in 0..20_000 {
        let body = gen.body();
        let verdict = p.on_body(&h, JSON, body.as_bytes());
        if go_reads_privileged(body.as_bytes()) {
            privileged += 1;
            assert!(
                matches!(verdict, Verdict::Deny(_)),
                "allowed, but dockerd reads it as privileged: {body}"
            );
        }
        if verdict == Verdict::Allow {
            allowed += 1;
        }
    }
    // The generator must reach both sides for the test to mean anything.
    assert!(
        privileged > 1000 && allowed > 100,
        "privileged {privileged}, allowed {allowed}"
    );
}
