//! The request policy: which Docker API requests a job may make (issue #5).
//!
//! The dind service runs privileged, so anyone who can call its API can
//! start a container that reaches the runner host. The `ci-safe` profile
//! refuses the requests that would; `permissive` (the default) allows
//! everything. A policy file starts from either and changes single rules.
//!
//! The engine is pure: the decision point ([`crate::decide`]) asks
//! [`Policy::on_head`] about every request and, where it answers
//! [`Verdict::NeedBody`], reads the whole body (at most
//! [`Policy::body_cap`] bytes, else 413) and asks [`Policy::on_body`] with
//! exactly the bytes it will forward. Nothing here does I/O except
//! [`Policy::load`] reading a policy file.
//!
//! # No parser differential
//! Every known bypass of a Docker API filter comes from the filter and
//! dockerd reading one request differently. So bodies are read by
//! [`json::parse_strict`] (no duplicate keys, no trailing data, no lone
//! surrogates) and every object level the rules read refuses keys that Go
//! would match to a known field case-insensitively (`privileged`,
//! `Capadd`, `Devicecgroupruleſ` with a long s). Query strings are read as
//! Go reads them, form bodies (which Go merges into the query) are refused
//! on mutating requests, and percent-encoded paths (which dockerd's router
//! decodes) are refused where a route is decided. When in doubt: deny.
//!
//! # Rules
//! Each can be set to `"allow"` or `"deny"` in a policy file's `[rules]`
//! table; `ci-safe` denies all of them, `permissive` none. They are listed
//! once, in the table that defines [`Rule`] below: a row is a rule's
//! variant, its name and (as the variant's doc) what it denies.
//!
//! BuildKit Solves travel inside `/grpc`, which the proxy relays unread, so
//! the two BuildKit entitlements are not decided here: the supervisor asks
//! [`Policy::denies`] and writes them into dockerd's daemon.json
//! (`supervisor/src/config.rs`, `daemon_json.rs`), and dockerd refuses.
//!
//! Integrity checks are not rules and cannot be allowed: `parse` (body not
//! strict JSON, or a field of the wrong type), `ambiguous_key`,
//! `content_type`, `query`, `path`, `body_too_large`.

mod file;
pub mod json;
pub mod routes;
mod rules;
mod tighten;

use std::fmt;

use hyper::Method;

use crate::head::RequestHead;
use routes::Route;

pub use file::{load_image, PolicyError, PolicyFile, IMAGE_FILE};
pub use tighten::Loosening;

/// Default cap on a decided request body.
pub const DEFAULT_BODY_CAP: usize = 4 << 20;
/// Default bind-mount allowlist: the directories GitLab shares with services.
pub const DEFAULT_ALLOW_BINDS: &str = "/builds,/cache";

/// A built-in starting point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Everything allowed; requests are still authenticated and audited.
    Permissive,
    /// Every rule denies.
    CiSafe,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Permissive => "permissive",
            Profile::CiSafe => "ci-safe",
        }
    }

    pub fn from_name(s: &str) -> Option<Profile> {
        match s {
            "permissive" => Some(Profile::Permissive),
            "ci-safe" => Some(Profile::CiSafe),
            _ => None,
        }
    }
}

/// Defines [`Rule`] from one table: each row is the variant, its name in
/// policy files, denials, the audit log and metrics, and (as its doc) what
/// it denies. The enum, [`Rule::ALL`], [`Rule::name`] and
/// [`Rule::from_name`] all come from that one list, so a rule cannot be
/// added to one and forgotten in another. The order is the enum's and
/// every listing's (`denied_rules`, the "known:" list of a policy file
/// error): keep new rules at the end.
macro_rules! rule_table {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*) => {
        /// One rule that a policy file can allow or deny; `ci-safe` denies
        /// all of them, `permissive` none. Each variant's doc says what it
        /// denies.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Rule {
            $( $(#[doc = $doc])* #[doc = concat!("\n\nName: `", $name, "`.")] $variant, )*
        }

        impl Rule {
            /// Every rule, in table order.
            pub const ALL: [Rule; [$($name),*].len()] = [$(Rule::$variant),*];

            /// The name used in policy files, denials, the audit log and metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $( Rule::$variant => $name, )*
                }
            }

            pub fn from_name(s: &str) -> Option<Rule> {
                match s {
                    $( $name => Some(Rule::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

rule_table! {
    /// `HostConfig.Privileged`; BuildKit's `security.insecure` (told to
    /// dockerd, see the module docs).
    Privileged = "privileged",
    /// Exec create with `Privileged`.
    PrivilegedExec = "privileged_exec",
    /// `CapAdd` beyond Docker's default set, or `ALL`.
    CapAdd = "cap_add",
    /// `Devices`, `DeviceCgroupRules`.
    Devices = "devices",
    /// `DeviceRequests` (GPUs).
    DeviceRequests = "device_requests",
    /// `PidMode` = `host`.
    HostPid = "host_pid",
    /// `IpcMode` = `host`.
    HostIpc = "host_ipc",
    /// `UTSMode` = `host`.
    HostUts = "host_uts",
    /// `UsernsMode` = `host`.
    HostUserns = "host_userns",
    /// `CgroupnsMode` = `host`.
    HostCgroupns = "host_cgroupns",
    /// `NetworkMode` = `host`; `/build?networkmode=host`; BuildKit's
    /// `network.host` (told to dockerd); and a network named only by hex
    /// digits in any of those places or in `EndpointsConfig`, which dockerd
    /// may read as the host network's ID or a prefix of it.
    HostNetwork = "host_network",
    /// `PidMode`, `IpcMode`, `UTSMode`, `Cgroup` = `container:…`.
    ContainerNamespaces = "container_namespaces",
    /// `seccomp=` anything but `builtin` (`unconfined`, custom profiles).
    Seccomp = "seccomp",
    /// `apparmor=` anything but `docker-default`.
    Apparmor = "apparmor",
    /// `label=` anything but `level:…`; `disable`.
    Selinux = "selinux",
    /// `no-new-privileges=false`.
    NoNewPrivileges = "no_new_privileges",
    /// `writable-cgroups=true`.
    WritableCgroups = "writable_cgroups",
    /// `MaskedPaths`/`ReadonlyPaths` set (`systempaths=unconfined`).
    Systempaths = "systempaths",
    /// `SecurityOpt` entries dockerd's parser does not know.
    SecurityOpt = "security_opt",
    /// `Runtime` other than runc.
    Runtime = "runtime",
    /// `CgroupParent`; `/build?cgroupparent=`.
    CgroupParent = "cgroup_parent",
    /// `Binds`, bind `Mounts`, bind `Tmpfs` options outside the allowlist.
    BindMounts = "bind_mounts",
    /// `VolumesFrom` (the source's binds cannot be seen from here).
    VolumesFrom = "volumes_from",
    /// Local volumes that mount a device, a filesystem or a path outside
    /// the allowlist; other volume drivers.
    VolumeMounts = "volume_mounts",
    /// Sysctls outside the container's own namespaces.
    Sysctls = "sysctls",
    /// HostConfig fields at the top level of a create or start body.
    ToplevelHostconfig = "toplevel_hostconfig",
    /// Networks with a driver other than bridge, overlay or null (macvlan,
    /// ipvlan).
    NetworkDriver = "network_driver",
    /// The writes of the `/plugins` route family.
    Plugins = "plugins",
    /// The writes of the `/swarm` and `/nodes` route families, and
    /// `PUT /volumes/…` (cluster volumes exist only in swarm mode).
    Swarm = "swarm",
    /// The writes of the `/services` route family.
    Services = "services",
    /// The writes of the `/secrets` route family.
    Secrets = "secrets",
    /// The writes of the `/configs` route family.
    Configs = "configs",
    /// `docker cp` (`/containers/{id}/archive`, `/copy`, any method) on a
    /// container that has mounts: dockerd 20.10 mounts them in its own
    /// namespace at a path a container can race with a symlink
    /// ([`crate::archive`]).
    CopyWithMounts = "copy_with_mounts",
    /// `/debug/*`, reads included: dockerd's expvar and pprof handlers (its
    /// command line, memory, goroutine stacks; a 30 s CPU profile on
    /// demand).
    Debug = "debug",
    /// Any mutating route not in the known list.
    UnknownRoute = "unknown_route",
}

// The denying rules are a bit set in a u64 (`Policy::denied`).
const _: () = assert!(Rule::ALL.len() <= 64);

impl Rule {
    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `rule` of denials that come from integrity checks, not from rules.
pub mod integrity {
    /// The body is not strict JSON, or a field has the wrong type.
    pub const PARSE: &str = "parse";
    /// A key that Go matches to a known field without exact spelling.
    pub const AMBIGUOUS_KEY: &str = "ambiguous_key";
    /// Missing or wrong Content-Type, or a form body.
    pub const CONTENT_TYPE: &str = "content_type";
    /// A query string Go could read differently.
    pub const QUERY: &str = "query";
    /// A percent-encoded path on a mutating request.
    pub const PATH: &str = "path";
    /// A body over the cap reached `on_body` (the caller should answer 413
    /// before that).
    pub const BODY_TOO_LARGE: &str = "body_too_large";
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Read the whole body (up to [`Policy::body_cap`]) and call
    /// [`Policy::on_body`].
    NeedBody,
    Deny(Denial),
}

/// Why a request was denied: answered as 403 with `reason` as the message,
/// and audited with `rule`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// A [`Rule`] name, or one of [`integrity`].
    pub rule: &'static str,
    /// `policy ci-safe: privileged containers are not allowed (HostConfig.Privileged)`
    pub reason: String,
}

/// A checked policy: which rules deny, the bind allowlist, the body cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `permissive`, `ci-safe`, or `file:/path (ci-safe)`.
    name: String,
    /// Bit set of denying rules, indexed by `Rule as u32`.
    denied: u64,
    /// Normalised absolute directories that may be bind-mounted.
    allow_binds: Vec<String>,
    body_cap: usize,
}

impl Policy {
    /// Everything allowed.
    pub fn permissive() -> Policy {
        Policy::from_profile(Profile::Permissive)
    }

    /// Every rule denies; binds under the default allowlist.
    pub fn ci_safe() -> Policy {
        Policy::from_profile(Profile::CiSafe)
    }

    pub fn from_profile(profile: Profile) -> Policy {
        let denied = match profile {
            Profile::Permissive => 0,
            Profile::CiSafe => Rule::ALL.iter().fold(0, |acc, r| acc | r.bit()),
        };
        Policy {
            name: profile.name().to_owned(),
            denied,
            allow_binds: parse_allow_binds(DEFAULT_ALLOW_BINDS)
                .expect("default allowlist is valid"),
            body_cap: DEFAULT_BODY_CAP,
        }
    }

    /// Builds the policy from `DIND_POLICY` (`spec`: `permissive`, `ci-safe`,
    /// empty for the default `permissive`, or the absolute path of a TOML
    /// policy file) and `DIND_POLICY_ALLOW_BINDS` (comma-separated absolute
    /// directories; default `/builds,/cache`).
    ///
    /// A policy file:
    /// ```toml
    /// profile = "ci-safe"                  # required: the starting point
    /// allow_binds = ["/builds", "/cache"]  # replaces the allowlist
    /// body_cap = "4MiB"                    # or a number of bytes
    /// [rules]
    /// privileged = "allow"                 # any rule name: "allow" or "deny"
    /// ```
    /// Errors are one line naming the file or variable, the key and the fix.
    pub fn load(spec: &str, allow_binds: Option<&str>) -> Result<Policy, PolicyError> {
        let binds = match allow_binds {
            Some(v) => Some(parse_allow_binds(v).map_err(|why| PolicyError::AllowBinds { why })?),
            None => None,
        };
        let mut policy = match spec {
            "" => Policy::permissive(),
            s => match Profile::from_name(s) {
                Some(p) => Policy::from_profile(p),
                None if s.starts_with('/') => return file::load(s, binds),
                None => return Err(PolicyError::UnknownProfile(s.to_owned())),
            },
        };
        if let Some(binds) = binds {
            policy.allow_binds = binds;
        }
        Ok(policy)
    }

    /// This policy with its allowlist replaced by a
    /// `DIND_POLICY_ALLOW_BINDS` value (for a policy the job may change; a
    /// locked one is only [`Policy::tightened`]).
    pub fn with_allow_binds(mut self, value: &str) -> Result<Policy, PolicyError> {
        self.allow_binds =
            parse_allow_binds(value).map_err(|why| PolicyError::AllowBinds { why })?;
        Ok(self)
    }

    /// `permissive`, `ci-safe`, or `file:/path (ci-safe)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The largest body [`Policy::on_body`] accepts; above it answer 413.
    pub fn body_cap(&self) -> usize {
        self.body_cap
    }

    /// The directories that may be bind-mounted, normalised.
    pub fn allow_binds(&self) -> &[String] {
        &self.allow_binds
    }

    /// Whether `rule` denies under this policy.
    pub fn denies(&self, rule: Rule) -> bool {
        self.denied & rule.bit() != 0
    }

    /// The names of the denying rules, for the start-up log.
    pub fn denied_rules(&self) -> impl Iterator<Item = &'static str> + '_ {
        Rule::ALL
            .into_iter()
            .filter(|r| self.denies(*r))
            .map(Rule::name)
    }

    fn set(&mut self, rule: Rule, deny: bool) {
        if deny {
            self.denied |= rule.bit();
        } else {
            self.denied &= !rule.bit();
        }
    }

    /// Step 1, on the head: method, canonical path, query, and the
    /// `Content-Type` header as sent (the first one, as Go's `Header.Get`
    /// reads it; raw bytes because Go accepts non-ASCII there).
    pub fn on_head(&self, head: &RequestHead, content_type: Option<&[u8]>) -> Verdict {
        if self.denied == 0 {
            return Verdict::Allow;
        }
        // dockerd serves its debug handlers to every method, reads too.
        if routes::is_debug(&head.path) {
            return self.route_rule(Rule::Debug, head, family_what(Rule::Debug));
        }
        if !is_mutating(head) || head.method == Method::OPTIONS {
            return Verdict::Allow;
        }
        if head.path.contains('%') {
            // dockerd's router decodes `%63reate` to `create`; we match the
            // path as written, so an encoded path cannot be classified.
            return self.integrity(
                integrity::PATH,
                "percent-encoded characters in the path of a mutating request are not accepted",
            );
        }
        if let Some(ct) = content_type {
            match routes::media_type(ct) {
                None => {
                    return self.integrity(integrity::CONTENT_TYPE, "a non-ASCII Content-Type is not accepted")
                }
                Some(m) if routes::is_form(&m) => {
                    return self.integrity(
                        integrity::CONTENT_TYPE,
                        format!("Content-Type {m} is not accepted on a mutating request (dockerd would read the body as query parameters)"),
                    )
                }
                Some(_) => {}
            }
        }
        let route = routes::classify(&head.method, &head.path);
        match route {
            Route::Plain => Verdict::Allow,
            Route::Unknown => {
                self.route_rule(Rule::UnknownRoute, head, "is not a known Docker API route")
            }
            Route::Family(rule) => self.route_rule(rule, head, family_what(rule)),
            Route::Build => match rules::check_build_query(self, head.query.as_deref()) {
                Ok(()) => Verdict::Allow,
                Err(d) => Verdict::Deny(d),
            },
            body_route => {
                if rules::body_rules(body_route)
                    .iter()
                    .any(|r| self.denies(*r))
                {
                    Verdict::NeedBody
                } else {
                    Verdict::Allow
                }
            }
        }
    }

    /// Step 2, where [`Policy::on_head`] said [`Verdict::NeedBody`]: the
    /// complete body exactly as it will be forwarded.
    pub fn on_body(&self, head: &RequestHead, content_type: Option<&[u8]>, body: &[u8]) -> Verdict {
        match self.on_head(head, content_type) {
            Verdict::NeedBody => {}
            other => return other,
        }
        if body.len() > self.body_cap {
            return self.integrity(
                integrity::BODY_TOO_LARGE,
                format!("the request body is larger than {} bytes", self.body_cap),
            );
        }
        // dockerd reads no value from an empty body (an error, or all
        // defaults for old versions): nothing in it to deny.
        if body
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Verdict::Allow;
        }
        // dockerd ignores a start body of 7 bytes or less (by its
        // Content-Length, which the proxy sets to the forwarded length).
        let route = routes::classify(&head.method, &head.path);
        if route == Route::ContainerStart && body.len() <= 7 {
            return Verdict::Allow;
        }
        match content_type.and_then(routes::media_type) {
            Some(m) if m == "application/json" => {}
            _ => {
                return self.integrity(
                    integrity::CONTENT_TYPE,
                    "a JSON body needs Content-Type: application/json",
                )
            }
        }
        let value = match json::parse_strict(body) {
            Ok(v) => v,
            Err(e) => {
                return self.integrity(
                    integrity::PARSE,
                    format!("the request body is not strict JSON: {e}"),
                )
            }
        };

        match rules::check_body(self, route, &value) {
            Ok(()) => Verdict::Allow,
            Err(d) => Verdict::Deny(d),
        }
    }

    fn route_rule(&self, rule: Rule, head: &RequestHead, what: &str) -> Verdict {
        if !self.denies(rule) {
            return Verdict::Allow;
        }
        Verdict::Deny(Denial {
            rule: rule.name(),
            reason: format!("policy {}: {} {} {what}", self.name, head.method, head.path),
        })
    }

    fn integrity(&self, rule: &'static str, what: impl fmt::Display) -> Verdict {
        Verdict::Deny(Denial {
            rule,
            reason: format!("policy {}: {what}", self.name),
        })
    }

    /// A denial by `rule`: `policy ci-safe: <what> (<field>)`.
    fn denial(&self, rule: Rule, what: impl fmt::Display, field: &str) -> Denial {
        Denial {
            rule: rule.name(),
            reason: self.reason(what, field),
        }
    }

    fn reason(&self, what: impl fmt::Display, field: &str) -> String {
        if field.is_empty() {
            format!("policy {}: {what}", self.name)
        } else {
            format!("policy {}: {what} ({field})", self.name)
        }
    }

    /// Whether a bind-mount source may be mounted: absolute, no `..`
    /// segment, and equal to or under an allowlisted directory after
    /// lexical normalisation (`/builds2` is not under `/builds`).
    fn bind_allowed(&self, source: &str) -> Result<(), String> {
        let Some(norm) = normalise(source) else {
            return Err(format!(
                "bind mount source {source:?} is not a plain absolute path"
            ));
        };
        let ok = self.allow_binds.iter().any(|d| {
            d == "/"
                || norm == *d
                || norm
                    .strip_prefix(d.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        if ok {
            Ok(())
        } else if self.allow_binds.is_empty() {
            Err(format!(
                "bind mount of {norm} is not allowed (no directory is allowlisted)"
            ))
        } else {
            Err(format!(
                "bind mount of {norm} is not allowed; allowed: {}",
                self.allow_binds.join(", ")
            ))
        }
    }
}

fn family_what(rule: Rule) -> &'static str {
    match rule {
        Rule::Plugins => "is not allowed: plugins cannot be installed or changed",
        Rule::Swarm => "is not allowed: swarm mode cannot be managed",
        Rule::Services => "is not allowed: swarm services cannot be managed",
        Rule::Secrets => "is not allowed: swarm secrets cannot be managed",
        Rule::Configs => "is not allowed: swarm configs cannot be managed",
        Rule::Debug => {
            "is not allowed: dockerd's debug endpoints expose its command line and internals"
        }
        _ => "is not allowed",
    }
}

/// Whether a request changes anything, for the audit log: any method but
/// GET and HEAD.
pub fn is_mutating(head: &RequestHead) -> bool {
    is_mutating_method(&head.method)
}

/// [`is_mutating`] for a request whose head could not be parsed.
pub fn is_mutating_method(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// `/a/./b//c/` → `/a/b/c`; None for a relative path, a `..` segment or a
/// NUL byte.
pub(crate) fn normalise(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if seg == ".." {
            return None;
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// `DIND_POLICY_ALLOW_BINDS`: comma-separated absolute directories.
fn parse_allow_binds(value: &str) -> Result<Vec<String>, String> {
    let mut dirs = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        dirs.push(check_allow_dir(entry)?);
    }
    Ok(dirs)
}

fn check_allow_dir(entry: &str) -> Result<String, String> {
    if entry.contains(':') {
        return Err(format!(
            "{entry:?} contains ':'; list directories only, separated by commas"
        ));
    }
    normalise(entry).ok_or_else(|| format!("{entry:?} is not an absolute directory without '..'"))
}

#[cfg(test)]
mod tests;
