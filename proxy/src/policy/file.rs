//! The policy file (`DIND_POLICY=/path/policy.toml`): a profile to start
//! from, single rules changed, the bind allowlist and the body cap. Every
//! mistake stops start-up with one line that names the file, the key and
//! the fix.

use std::io;

use super::{check_allow_dir, Policy, Profile, Rule};

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
        "policy file {path}: unknown key {key:?} (known: profile, allow_binds, body_cap, rules)"
    )]
    UnknownKey { path: String, key: String },
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

/// Reads and checks the policy file at `path`. `env_binds` is a checked
/// `DIND_POLICY_ALLOW_BINDS`, if set.
pub(super) fn load(path: &str, env_binds: Option<Vec<String>>) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, env_binds)
}

/// Checks the text of a policy file; `path` only names it in errors and in
/// the policy's name.
pub(super) fn parse(
    path: &str,
    text: &str,
    env_binds: Option<Vec<String>>,
) -> Result<Policy, PolicyError> {
    let p = || path.to_owned();
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| PolicyError::Syntax {
            path: p(),
            line: e.span().map_or(1, |s| {
                1 + text[..s.start.min(text.len())].matches('\n').count()
            }),
            message: e.message().replace('\n', " "),
        })?;
    for key in table.keys() {
        if !matches!(
            key.as_str(),
            "profile" | "allow_binds" | "body_cap" | "rules"
        ) {
            return Err(PolicyError::UnknownKey {
                path: p(),
                key: key.clone(),
            });
        }
    }
    let profile = match table.get("profile") {
        None => return Err(PolicyError::MissingProfile { path: p() }),
        Some(v) => v
            .as_str()
            .and_then(Profile::from_name)
            .ok_or_else(|| PolicyError::Profile {
                path: p(),
                value: show(v),
            })?,
    };
    let mut policy = Policy::from_profile(profile);
    policy.name = format!("file:{path} ({})", profile.name());

    if let Some(rules) = table.get("rules") {
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
    }

    match (table.get("allow_binds"), env_binds) {
        (Some(_), Some(_)) => return Err(PolicyError::AllowBindsTwice { path: p() }),
        (Some(v), None) => {
            let bad = |why: String| PolicyError::FileAllowBinds { path: p(), why };
            let list = v.as_array().ok_or_else(|| {
                bad("use a list of directories, e.g. [\"/builds\", \"/cache\"]".into())
            })?;
            let mut dirs = Vec::new();
            for entry in list {
                let s = entry
                    .as_str()
                    .ok_or_else(|| bad(format!("{} is not a string", show(entry))))?;
                dirs.push(check_allow_dir(s).map_err(bad)?);
            }
            policy.allow_binds = dirs;
        }
        (None, Some(dirs)) => policy.allow_binds = dirs,
        (None, None) => {}
    }

    if let Some(v) = table.get("body_cap") {
        let cap = match v {
            toml::Value::Integer(n) => usize::try_from(*n).ok(),
            toml::Value::String(s) => parse_size(s),
            _ => None,
        };
        policy.body_cap =
            cap.filter(|c| BODY_CAP_RANGE.contains(c))
                .ok_or_else(|| PolicyError::BodyCap {
                    path: p(),
                    value: show(v),
                })?;
    }
    Ok(policy)
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
        parse("/etc/p.toml", text, None).unwrap_or_else(|e| panic!("{text:?}: {e}"))
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
        .unwrap();
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
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}: {got}");
            assert!(!got.contains('\n'), "{text:?}: more than one line: {got}");
        }
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
