//! A locked policy tightened, never loosened, by what a job sets (issue 10).
//!
//! Under a lock `DIND_POLICY` and `DIND_POLICY_ALLOW_BINDS` are the job's
//! (GitLab passes job variables to services), so they may only add denials
//! or narrow the bind allowlist. The result is the locked policy with those
//! changes, so a tightening can never drop anything the lock says: the
//! body cap and every denial of the locked file stay.

use super::{normalise, parse_allow_binds, Policy, PolicyError, Profile};

/// Why a setting would loosen a locked policy.
#[derive(Debug, thiserror::Error)]
pub enum Loosening {
    #[error("{profile} allows what the locked policy denies ({rules})")]
    Profile {
        profile: &'static str,
        rules: String,
    },
    #[error("{spec:?} is another policy file, and a locked policy cannot be replaced")]
    OtherFile { spec: String },
    #[error("{dir} is not under the locked bind allowlist ({allowed})")]
    Binds { dir: String, allowed: String },
    #[error("{0}")]
    Invalid(#[from] PolicyError),
}

impl Loosening {
    /// Whether `DIND_POLICY_ALLOW_BINDS` (true) or `DIND_POLICY` (false)
    /// is at fault.
    pub fn is_allow_binds(&self) -> bool {
        matches!(
            self,
            Loosening::Binds { .. } | Loosening::Invalid(PolicyError::AllowBinds { .. })
        )
    }
}

/// How many rule names a refusal lists before "and N more".
const LISTED_RULES: usize = 3;

impl Policy {
    /// This (locked) policy, read from `locked_path`, tightened by `spec`
    /// (`DIND_POLICY`: unset, empty or the locked file itself change
    /// nothing; a profile must deny at least what this policy denies, and
    /// adds its denials) and `allow_binds` (`DIND_POLICY_ALLOW_BINDS`: every
    /// directory must lie under one this policy allows; it then replaces
    /// the allowlist, empty meaning none).
    pub fn tightened(
        &self,
        locked_path: &str,
        spec: Option<&str>,
        allow_binds: Option<&str>,
    ) -> Result<Policy, Loosening> {
        let mut out = self.clone();
        match spec.filter(|s| !s.is_empty()) {
            None => {}
            Some(s) if normalise(s).is_some() && normalise(s) == normalise(locked_path) => {}
            Some(s) => match Profile::from_name(s) {
                Some(profile) => {
                    let theirs = Policy::from_profile(profile);
                    let loosened: Vec<&str> = self
                        .denied_rules()
                        .filter(|r| !theirs.denied_rules().any(|t| t == *r))
                        .collect();
                    if !loosened.is_empty() {
                        let mut rules = loosened[..loosened.len().min(LISTED_RULES)].join(", ");
                        if loosened.len() > LISTED_RULES {
                            rules.push_str(&format!(" and {} more", loosened.len() - LISTED_RULES));
                        }
                        return Err(Loosening::Profile {
                            profile: profile.name(),
                            rules,
                        });
                    }
                    if theirs.denied & !self.denied != 0 {
                        out.denied |= theirs.denied;
                        out.name = format!("{} tightened by {}", self.name, profile.name());
                    }
                }
                None if s.starts_with('/') => {
                    return Err(Loosening::OtherFile { spec: s.to_owned() })
                }
                None => return Err(PolicyError::UnknownProfile(s.to_owned()).into()),
            },
        }
        if let Some(value) = allow_binds {
            let dirs = parse_allow_binds(value).map_err(|why| PolicyError::AllowBinds { why })?;
            if let Some(dir) = dirs.iter().find(|d| self.bind_allowed(d).is_err()) {
                return Err(Loosening::Binds {
                    dir: dir.clone(),
                    allowed: if self.allow_binds.is_empty() {
                        "no directory".to_owned()
                    } else {
                        self.allow_binds.join(", ")
                    },
                });
            }
            out.allow_binds = dirs;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::file;
    use super::*;
    use crate::policy::Rule;

    const PATH: &str = "/etc/dind-supervisor/policy.toml";

    fn locked(text: &str) -> Policy {
        file::parse(PATH, text, None).unwrap().policy
    }

    #[test]
    fn nothing_set_or_the_locked_file_itself_changes_nothing() {
        let p = locked("profile = \"ci-safe\"\n[rules]\nprivileged = \"allow\"\n");
        for spec in [
            None,
            Some(""),
            Some(PATH),
            Some("/etc//dind-supervisor/./policy.toml"),
        ] {
            assert_eq!(p.tightened(PATH, spec, None).unwrap(), p, "{spec:?}");
        }
    }

    #[test]
    fn a_profile_may_only_add_denials() {
        let p = locked("profile = \"ci-safe\"\nallow_binds = [\"/builds\"]\nbody_cap = 2048\n[rules]\nprivileged = \"allow\"\n");
        let t = p.tightened(PATH, Some("ci-safe"), None).unwrap();
        assert!(
            t.denies(Rule::Privileged),
            "ci-safe adds the denial the file allowed"
        );
        // What the lock says beyond rules stays.
        assert_eq!(t.allow_binds(), ["/builds"]);
        assert_eq!(t.body_cap(), 2048);
        assert_eq!(
            t.name(),
            format!("file:{PATH} (ci-safe) tightened by ci-safe")
        );

        let e = p.tightened(PATH, Some("permissive"), None).unwrap_err();
        assert!(!e.is_allow_binds());
        let e = e.to_string();
        // The rule count grows with the rule table; the shape does not.
        assert!(
            e.starts_with("permissive allows what the locked policy denies (privileged_exec, cap_add, devices and ")
                && e.ends_with(" more)"),
            "{e}"
        );
        // A permissive lock may be named again, or tightened.
        let open = locked("profile = \"permissive\"");
        assert_eq!(
            open.tightened(PATH, Some("permissive"), None).unwrap(),
            open
        );
        assert!(open
            .tightened(PATH, Some("ci-safe"), None)
            .unwrap()
            .denies(Rule::Privileged));
        let one = locked("profile = \"permissive\"\n[rules]\nhost_pid = \"deny\"\n");
        let e = one
            .tightened(PATH, Some("permissive"), None)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("(host_pid)"), "{e}");
    }

    #[test]
    fn another_file_or_an_unknown_name_is_refused() {
        let p = locked("profile = \"ci-safe\"");
        for spec in [
            "/builds/policy.toml",
            "/etc/dind-supervisor/../../builds/p.toml",
        ] {
            assert!(
                matches!(
                    p.tightened(PATH, Some(spec), None),
                    Err(Loosening::OtherFile { .. })
                ),
                "{spec}"
            );
        }
        assert!(matches!(
            p.tightened(PATH, Some("ci_safe"), None),
            Err(Loosening::Invalid(PolicyError::UnknownProfile(_)))
        ));
    }

    #[test]
    fn the_allowlist_may_only_narrow() {
        let p = locked("profile = \"ci-safe\"");
        let t = p
            .tightened(PATH, None, Some("/builds/group/project,/cache"))
            .unwrap();
        assert_eq!(t.allow_binds(), ["/builds/group/project", "/cache"]);
        // Set but empty: no binds at all, the tightest.
        assert_eq!(
            p.tightened(PATH, None, Some("")).unwrap().allow_binds(),
            [] as [String; 0]
        );
        for wider in [
            "/",
            "/builds2",
            "/builds,/var/run",
            "/builds/../etc",
            "/builds/x/..",
        ] {
            let e = p.tightened(PATH, None, Some(wider)).unwrap_err();
            assert!(e.is_allow_binds(), "{wider}: {e}");
        }
        let e = p.tightened(PATH, None, Some("/")).unwrap_err().to_string();
        assert_eq!(
            e,
            "/ is not under the locked bind allowlist (/builds, /cache)"
        );
        let none = locked("profile = \"ci-safe\"\nallow_binds = []");
        let e = none
            .tightened(PATH, None, Some("/builds"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("(no directory)"), "{e}");
        // Both at once: each checked, both applied.
        let t = p.tightened(PATH, Some("ci-safe"), Some("/cache")).unwrap();
        assert_eq!(t.allow_binds(), ["/cache"]);
    }
}
