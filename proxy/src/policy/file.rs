//! The policy file (`DIND_POLICY=/path/policy.toml`): a profile to start
//! from, single rules changed, the bind allowlist and the body cap. Every
//! mistake stops start-up with one line that names the file, the key and
//! the fix.
//!
//! The image's own file, [`IMAGE_FILE`], may also say `locked = true` and
//! pin supervisor settings in a `[supervisor]` table (issue 10): a job may
//! then only tighten the policy. Those two keys mean nothing in any other
//! file, so there they are refused rather than silently ignored.

use std::collections::BTreeMap;
use std::io;

use super::{check_allow_dir, Policy, Profile, Rule};

/// The policy file baked into the image. Fixed at build time on purpose:
/// every environment variable and argument is the job's to set, so a path
/// that could be moved by one would let the job choose its own lock.
pub const IMAGE_FILE: &str = "/etc/dind-supervisor/policy.toml";

/// A checked policy file with what only the image's file may say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFile {
    pub policy: Policy,
    /// `locked = true`: environment and arguments may only tighten.
    pub locked: bool,
    /// The `[supervisor]` table as strings, for the supervisor to check
    /// (it alone knows its settings).
    pub supervisor: BTreeMap<String, String>,
}

/// Why `DIND_POLICY` or `DIND_POLICY_ALLOW_BINDS` was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("DIND_POLICY={0:?} is neither a profile nor a policy file; use \"permissive\", \"ci-safe\" or the absolute path of a TOML policy file")]
    UnknownProfile(String),
    #[error("DIND_POLICY_ALLOW_BINDS: {why}")]
    AllowBinds { why: String },
    #[error("policy file {path}: cannot read it; check DIND_POLICY")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("policy file {path}: line {line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error(
        "policy file {path}: unknown key {key:?} (known: profile, allow_binds, body_cap, rules, locked, supervisor)"
    )]
    UnknownKey { path: String, key: String },
    #[error("policy file {path}: locked = {value}: use true or false")]
    Locked { path: String, value: String },
    #[error("policy file {path}: supervisor.{key} = {value}: use a string, e.g. {key} = \"/run/dind-supervisor\"")]
    SupervisorValue {
        path: String,
        key: String,
        value: String,
    },
    #[error("policy file {path}: supervisor must be a table: a [supervisor] line, then lines such as run_dir = \"/run/dind-supervisor\"")]
    SupervisorTable { path: String },
    #[error("policy file {path}: {key} takes effect only in the image's policy file {IMAGE_FILE}; remove it here, or move this file there")]
    ImageOnly { path: String, key: &'static str },
    #[error("policy file {path}: missing profile; start it with profile = \"ci-safe\" or profile = \"permissive\"")]
    MissingProfile { path: String },
    #[error("policy file {path}: profile = {value}: use \"ci-safe\" or \"permissive\"")]
    Profile { path: String, value: String },
    #[error("policy file {path}: unknown rule {rule:?} (known: {known})")]
    UnknownRule {
        path: String,
        rule: String,
        known: String,
    },
    #[error("policy file {path}: rules must be a table: a [rules] line, then lines such as privileged = \"allow\"")]
    RulesTable { path: String },
    #[error("policy file {path}: rules.{rule} = {value}: use \"allow\" or \"deny\"")]
    RuleValue {
        path: String,
        rule: String,
        value: String,
    },
    #[error("policy file {path}: allow_binds: {why}")]
    FileAllowBinds { path: String, why: String },
    #[error(
        "policy file {path}: allow_binds is set here and DIND_POLICY_ALLOW_BINDS too; keep one"
    )]
    AllowBindsTwice { path: String },
    #[error("policy file {path}: body_cap = {value}: use a number of bytes or a size such as \"4MiB\", from 1KiB to 1GiB")]
    BodyCap { path: String, value: String },
}

/// Smallest and largest accepted `body_cap`.
const BODY_CAP_RANGE: std::ops::RangeInclusive<usize> = 1024..=(1 << 30);

/// Reads and checks the policy file at `path` named by `DIND_POLICY`.
/// `env_binds` is a checked `DIND_POLICY_ALLOW_BINDS`, if set.
pub(super) fn load(path: &str, env_binds: Option<Vec<String>>) -> Result<Policy, PolicyError> {
    let file = parse(path, &read(path)?, env_binds)?;
    let image_only = if file.locked {
        Some("locked")
    } else if !file.supervisor.is_empty() {
        Some("[supervisor]")
    } else {
        None
    };
    match image_only {
        Some(key) => Err(PolicyError::ImageOnly {
            path: path.to_owned(),
            key,
        }),
        None => Ok(file.policy),
    }
}

/// Reads and checks the image's policy file at `path` ([`IMAGE_FILE`]
/// outside tests); `Ok(None)` when there is none. Any other failure to
/// read it is an error: a lock that cannot be read must not fall open.
pub fn load_image(path: &str) -> Result<Option<PolicyFile>, PolicyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text, None).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PolicyError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read(path: &str) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Checks the text of a policy file; `path` only names it in errors and in
/// the policy's name. Keys are checked in a fixed order, so a file with
/// several mistakes always names the same one first.
pub(super) fn parse(
    path: &str,
    text: &str,
    env_binds: Option<Vec<String>>,
) -> Result<PolicyFile, PolicyError> {
    let table = parse_table(path, text)?;
    let profile = profile(path, &table)?;
    let mut policy = Policy::from_profile(profile);
    policy.name = format!("file:{path} ({})", profile.name());
    if let Some(rules) = table.get("rules") {
        set_rules(path, &mut policy, rules)?;
    }
    if let Some(dirs) = allow_binds(path, table.get("allow_binds"), env_binds)? {
        policy.allow_binds = dirs;
    }
    if let Some(v) = table.get("body_cap") {
        policy.body_cap = body_cap(path, v)?;
    }
    Ok(PolicyFile {
        policy,
        locked: locked(path, table.get("locked"))?,
        supervisor: supervisor(path, table.get("supervisor"))?,
    })
}

/// The TOML table, with only the keys a policy file knows.
fn parse_table(path: &str, text: &str) -> Result<toml::Table, PolicyError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| PolicyError::Syntax {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| {
                1 + text[..s.start.min(text.len())].matches('\n').count()
            }),
            message: e.message().replace('\n', " "),
        })?;
    for key in table.keys() {
        if !matches!(
            key.as_str(),
            "profile" | "allow_binds" | "body_cap" | "rules" | "locked" | "supervisor"
        ) {
            return Err(PolicyError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
            });
        }
    }
    Ok(table)
}

/// `profile`: required.
fn profile(path: &str, table: &toml::Table) -> Result<Profile, PolicyError> {
    let Some(v) = table.get("profile") else {
        return Err(PolicyError::MissingProfile {
            path: path.to_owned(),
        });
    };
    v.as_str()
        .and_then(Profile::from_name)
        .ok_or_else(|| PolicyError::Profile {
            path: path.to_owned(),
            value: show(v),
        })
}

/// The `[rules]` table: each known rule set to `"allow"` or `"deny"`.
fn set_rules(path: &str, policy: &mut Policy, rules: &toml::Value) -> Result<(), PolicyError> {
    let p = || path.to_owned();
    let Some(rules) = rules.as_table() else {
        return Err(PolicyError::RulesTable { path: p() });
    };
    for (name, value) in rules {
        let rule = Rule::from_name(name).ok_or_else(|| PolicyError::UnknownRule {
            path: p(),
            rule: name.clone(),
            known: Rule::ALL.map(Rule::name).join(", "),
        })?;
        let deny = match value.as_str() {
            Some("deny") => true,
            Some("allow") => false,
            _ => {
                return Err(PolicyError::RuleValue {
                    path: p(),
                    rule: name.clone(),
                    value: show(value),
                })
            }
        };
        policy.set(rule, deny);
    }
    Ok(())
}

/// The allowlist from the file's `allow_binds` or from
/// `DIND_POLICY_ALLOW_BINDS` (never both); None keeps the profile's.
fn allow_binds(
    path: &str,
    file: Option<&toml::Value>,
    env_binds: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, PolicyError> {
    let v = match (file, env_binds) {
        (Some(_), Some(_)) => {
            return Err(PolicyError::AllowBindsTwice {
                path: path.to_owned(),
            })
        }
        (Some(v), None) => v,
        (None, env) => return Ok(env),
    };
    let bad = |why: String| PolicyError::FileAllowBinds {
        path: path.to_owned(),
        why,
    };
    let list = v
        .as_array()
        .ok_or_else(|| bad("use a list of directories, e.g. [\"/builds\", \"/cache\"]".into()))?;
    let mut dirs = Vec::new();
    for entry in list {
        let s = entry
            .as_str()
            .ok_or_else(|| bad(format!("{} is not a string", show(entry))))?;
        dirs.push(check_allow_dir(s).map_err(bad)?);
    }
    Ok(Some(dirs))
}

/// `body_cap`: a number of bytes or a size, within [`BODY_CAP_RANGE`].
fn body_cap(path: &str, v: &toml::Value) -> Result<usize, PolicyError> {
    let cap = match v {
        toml::Value::Integer(n) => usize::try_from(*n).ok(),
        toml::Value::String(s) => parse_size(s),
        _ => None,
    };
    cap.filter(|c| BODY_CAP_RANGE.contains(c))
        .ok_or_else(|| PolicyError::BodyCap {
            path: path.to_owned(),
            value: show(v),
        })
}

/// `locked`: a boolean, false when absent.
fn locked(path: &str, v: Option<&toml::Value>) -> Result<bool, PolicyError> {
    match v {
        None => Ok(false),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(v) => Err(PolicyError::Locked {
            path: path.to_owned(),
            value: show(v),
        }),
    }
}

/// The `[supervisor]` table: string values only, for the supervisor to
/// check.
fn supervisor(
    path: &str,
    v: Option<&toml::Value>,
) -> Result<BTreeMap<String, String>, PolicyError> {
    let mut supervisor = BTreeMap::new();
    let Some(v) = v else {
        return Ok(supervisor);
    };
    let Some(t) = v.as_table() else {
        return Err(PolicyError::SupervisorTable {
            path: path.to_owned(),
        });
    };
    for (key, value) in t {
        let Some(s) = value.as_str() else {
            return Err(PolicyError::SupervisorValue {
                path: path.to_owned(),
                key: key.clone(),
                value: show(value),
            });
        };
        supervisor.insert(key.clone(), s.to_owned());
    }
    Ok(supervisor)
}

/// A value as it would be written in the file, for messages.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "a list".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// `"4194304"`, `"4096KiB"`, `"4MiB"`, `"1GiB"`.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = digits.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Policy {
        parse("/etc/p.toml", text, None)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .policy
    }

    fn err(text: &str) -> String {
        match parse("/etc/p.toml", text, None) {
            Ok(p) => panic!("{text:?} gave {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_file_starts_from_a_profile_and_changes_single_rules() {
        let p = ok("profile = \"ci-safe\"\n[rules]\nprivileged = \"allow\"\n");
        assert_eq!(p.name(), "file:/etc/p.toml (ci-safe)");
        assert!(!p.denies(Rule::Privileged));
        assert!(p.denies(Rule::CapAdd) && p.denies(Rule::UnknownRoute));
        assert_eq!(p.allow_binds(), ["/builds", "/cache"]);
        assert_eq!(p.body_cap(), 4 << 20);

        let p = ok("profile = \"permissive\"\n[rules]\nhost_network = \"deny\"\n");
        assert_eq!(p.denied_rules().collect::<Vec<_>>(), ["host_network"]);
    }

    #[test]
    fn allowlist_and_body_cap() {
        let p = ok("profile = \"ci-safe\"\nallow_binds = [\"/builds/\", \"/srv//data\"]\nbody_cap = \"1MiB\"\n");
        assert_eq!(p.allow_binds(), ["/builds", "/srv/data"]);
        assert_eq!(p.body_cap(), 1 << 20);
        assert_eq!(
            ok("profile = \"ci-safe\"\nbody_cap = 2048").body_cap(),
            2048
        );
        assert_eq!(
            ok("profile = \"ci-safe\"\nallow_binds = []").allow_binds(),
            [] as [String; 0]
        );
        // The file's list and the environment's must not both be given.
        let e = parse(
            "/etc/p.toml",
            "profile = \"ci-safe\"\nallow_binds = []",
            Some(vec![]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("keep one"), "{e}");
        let p = parse(
            "/etc/p.toml",
            "profile = \"ci-safe\"",
            Some(vec!["/x".into()]),
        )
        .unwrap()
        .policy;
        assert_eq!(p.allow_binds(), ["/x"]);
    }

    #[test]
    fn mistakes_are_one_clear_line() {
        let cases = [
            ("profile = \"ci-safe\"\n[rules]\nprivilegd = \"allow\"\n", "policy file /etc/p.toml: unknown rule \"privilegd\" (known: privileged, privileged_exec, cap_add,"),
            ("profile = \"ci-safe\"\n[rules]\nprivileged = true\n", "rules.privileged = true: use \"allow\" or \"deny\""),
            ("[rules]\n", "missing profile"),
            ("profile = \"ci_safe\"", "profile = \"ci_safe\": use"),
            ("profile = \"ci-safe\"\nprofiles = 1", "unknown key \"profiles\""),
            ("profile = \"ci-safe\"\nallow_binds = \"/builds\"", "allow_binds: use a list"),
            ("profile = \"ci-safe\"\nallow_binds = [\"builds\"]", "allow_binds: \"builds\" is not an absolute directory"),
            ("profile = \"ci-safe\"\nallow_binds = [\"/a/../etc\"]", "is not an absolute directory without '..'"),
            ("profile = \"ci-safe\"\nbody_cap = \"4 MB\"", "body_cap = \"4 MB\""),
            ("profile = \"ci-safe\"\nbody_cap = 10", "body_cap = 10"),
            ("profile = \"ci-safe\"\nbody_cap = \"2GiB\"", "body_cap"),
            ("profile = \"ci-safe\"\nrules = 1", "rules must be a table"),
            ("profile = \"ci-safe\"\n\nprofile = \"permissive\"", "policy file /etc/p.toml: line 3: duplicate key"),
            ("profile = ci-safe", "line 1:"),
            ("profile = \"ci-safe\"\nlocked = \"yes\"", "locked = \"yes\": use true or false"),
            ("profile = \"ci-safe\"\nsupervisor = 1", "supervisor must be a table"),
            ("profile = \"ci-safe\"\n[supervisor]\nrun_dir = 1", "supervisor.run_dir = 1: use a string"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}: {got}");
            assert!(!got.contains('\n'), "{text:?}: more than one line: {got}");
        }
    }

    #[test]
    fn the_image_file_may_lock_and_pin_settings() {
        let f = parse(
            "/etc/p.toml",
            "locked = true\nprofile = \"ci-safe\"\n[supervisor]\nrun_dir = \"/r\"\n",
            None,
        )
        .unwrap();
        assert!(f.locked);
        assert_eq!(f.supervisor.get("run_dir").map(String::as_str), Some("/r"));
        assert_eq!(f.policy, ok("profile = \"ci-safe\""));
        assert!(
            !parse("/etc/p.toml", "profile = \"ci-safe\"", None)
                .unwrap()
                .locked
        );
        assert!(
            !parse("/etc/p.toml", "locked = false\nprofile = \"ci-safe\"", None)
                .unwrap()
                .locked
        );
    }

    #[test]
    fn only_the_image_file_may_lock_or_pin() {
        // A lock in a file the job can name would be the job's own choice:
        // refused, so nobody believes such a policy is locked.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let path = file.to_str().unwrap();
        for (text, key) in [
            (
                "locked = true\nprofile = \"ci-safe\"",
                "locked takes effect only in",
            ),
            (
                "profile = \"ci-safe\"\n[supervisor]\nrun_dir = \"/r\"",
                "[supervisor] takes effect only in",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = load(path, None).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(IMAGE_FILE), "{e}");
            assert_eq!(
                load_image(path)
                    .unwrap()
                    .map(|f| f.policy.name().to_owned()),
                Some(format!("file:{path} (ci-safe)"))
            );
        }
        std::fs::write(&file, "locked = false\nprofile = \"ci-safe\"").unwrap();
        assert!(load(path, None).is_ok());
    }

    #[test]
    fn a_missing_image_file_is_no_lock_but_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_image(dir.path().join("none.toml").to_str().unwrap()).unwrap(),
            None
        );
        // A directory where the file should be cannot be read: never "no lock".
        let e = load_image(dir.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("100B"), Some(100));
        assert_eq!(parse_size("4mb"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let e = load("/nonexistent/policy.toml", None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("policy file /nonexistent/policy.toml: cannot read it"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
