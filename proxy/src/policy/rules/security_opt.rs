//! `HostConfig.SecurityOpt`: seccomp, AppArmor, SELinux labels,
//! `no-new-privileges`, writable cgroups and `systempaths`.

use super::obj::Obj;
use super::Check;
use crate::policy::{Policy, Rule};

/// `SecurityOpt`, split as moby's `parseSecurityOpt` splits it: the bare
/// words `no-new-privileges` and `disable`, else `key=value`, else the
/// deprecated `key:value`. Only settings that keep the defaults' strength
/// pass.
pub(super) fn check_security_opt(p: &Policy, hc: &Obj) -> Check {
    let field = hc.path("SecurityOpt");
    for opt in hc.strings(p, "SecurityOpt")? {
        let (rule, what) = match security_opt(opt) {
            Ok(()) => continue,
            Err(denied) => denied,
        };
        if p.denies(rule) {
            return Err(p.denial(rule, what, &field));
        }
    }
    Ok(())
}

fn security_opt(opt: &str) -> Result<(), (Rule, String)> {
    if opt == "no-new-privileges" {
        return Ok(());
    }
    if opt == "disable" {
        return Err((
            Rule::Selinux,
            "disabling SELinux labels is not allowed".into(),
        ));
    }
    let split = if opt.contains('=') {
        opt.split_once('=')
    } else {
        opt.split_once(':')
    };
    let Some((key, value)) = split else {
        return Err((
            Rule::SecurityOpt,
            format!("security option {opt:?} is not recognised"),
        ));
    };
    match key {
        "seccomp" if value == "builtin" => Ok(()),
        "seccomp" if value == "unconfined" => {
            Err((Rule::Seccomp, "seccomp=unconfined is not allowed".into()))
        }
        "seccomp" => Err((
            Rule::Seccomp,
            "custom seccomp profiles are not allowed".into(),
        )),
        "apparmor" if value == "docker-default" => Ok(()),
        "apparmor" => Err((
            Rule::Apparmor,
            format!("AppArmor profile {value:?} is not allowed; only docker-default"),
        )),
        "label" if value.starts_with("level:") => Ok(()),
        "label" => Err((
            Rule::Selinux,
            format!("SELinux label option {value:?} is not allowed; only level:"),
        )),
        "no-new-privileges" if go_parse_bool(value) == Some(true) => Ok(()),
        "no-new-privileges" => Err((
            Rule::NoNewPrivileges,
            format!("no-new-privileges={value} is not allowed"),
        )),
        "writable-cgroups" if go_parse_bool(value) == Some(false) => Ok(()),
        "writable-cgroups" => Err((
            Rule::WritableCgroups,
            "writable cgroups are not allowed".into(),
        )),
        "systempaths" => Err((
            Rule::Systempaths,
            "systempaths=unconfined is not allowed".into(),
        )),
        _ => Err((
            Rule::SecurityOpt,
            format!("security option {opt:?} is not recognised"),
        )),
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
