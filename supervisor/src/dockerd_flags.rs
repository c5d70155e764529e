//! dockerd's own flags as a user passes them (`command:` or ARC's args):
//! found, read and removed the way dockerd's flag parser reads them, so
//! what we decide matches what dockerd will do.

/// The value of the last `long`/`short` flag in `args`: `--flag value`, `--flag=value`,
/// `-s value`, `-s=value` or `-svalue`. Last wins, as in dockerd's flag parser.
pub fn flag_value(args: &[String], long: &str, short: Option<&str>) -> Option<String> {
    flag_values(args, long, short).pop()
}

/// Every value of a repeatable flag, in order; see [`flag_value`] for the forms.
pub fn flag_values(args: &[String], long: &str, short: Option<&str>) -> Vec<String> {
    let mut values = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let (hit, consumed) = match_flag(args, i, long, short);
        if let Some(v) = hit {
            values.push(v);
        }
        i += consumed;
    }
    values
}

/// `args` without any occurrence of the flag and its value.
pub fn remove_flag(args: &[String], long: &str, short: Option<&str>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let (hit, consumed) = match_flag(args, i, long, short);
        if hit.is_none() {
            out.extend(args[i..i + consumed].iter().cloned());
        }
        i += consumed;
    }
    out
}

/// A boolean flag as pflag reads it: `--flag` is true, `--flag=VALUE` is
/// VALUE (Go's strconv.ParseBool spellings); last wins; None when absent.
/// A bool flag never takes the next argument as its value.
pub fn bool_flag(args: &[String], long: &str) -> Option<bool> {
    let mut found = None;
    for arg in args {
        if arg == "--" {
            break;
        }
        if arg == long {
            found = Some(true);
        } else if let Some(v) = arg.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
            found = match v {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
                // dockerd refuses to start on anything else.
                _ => found,
            };
        }
    }
    found
}

/// Whether `args[i]` is the flag; returns its value (if it is) and how many args to skip.
/// After `--` nothing is a flag.
fn match_flag(
    args: &[String],
    i: usize,
    long: &str,
    short: Option<&str>,
) -> (Option<String>, usize) {
    let arg = args[i].as_str();
    if arg == "--" {
        return (None, args.len() - i);
    }
    let names = std::iter::once(long).chain(short);
    for name in names {
        if arg == name {
            // A trailing flag with no value: dockerd rejects it; we report it as absent.
            return match args.get(i + 1) {
                Some(v) => (Some(v.clone()), 2),
                None => (None, 1),
            };
        }
        if let Some(v) = arg
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return (Some(v.to_owned()), 1);
        }
    }
    // `-svalue`: a short flag glued to its value.
    if let Some(s) = short {
        if let Some(v) = arg.strip_prefix(s).filter(|v| !v.is_empty()) {
            if !arg.starts_with("--") {
                return (Some(v.to_owned()), 1);
            }
        }
    }
    (None, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flag_value_forms() {
        let a = args(&["--debug", "--storage-driver", "vfs", "-H", "unix:///x"]);
        assert_eq!(
            flag_value(&a, "--storage-driver", Some("-s")).as_deref(),
            Some("vfs")
        );
        let a = args(&["--storage-driver=btrfs"]);
        assert_eq!(
            flag_value(&a, "--storage-driver", Some("-s")).as_deref(),
            Some("btrfs")
        );
        let a = args(&["-s", "zfs"]);
        assert_eq!(
            flag_value(&a, "--storage-driver", Some("-s")).as_deref(),
            Some("zfs")
        );
        let a = args(&["-s=zfs"]);
        assert_eq!(
            flag_value(&a, "--storage-driver", Some("-s")).as_deref(),
            Some("zfs")
        );
        let a = args(&["-szfs"]);
        assert_eq!(
            flag_value(&a, "--storage-driver", Some("-s")).as_deref(),
            Some("zfs")
        );
        // Last wins; a prefix of another flag is not a match; `--` ends the flags.
        let a = args(&[
            "-s",
            "a",
            "--storage-driver",
            "b",
            "--storage-driver-x=c",
            "--",
            "-s",
            "d",
        ]);
        assert_eq!(
            flag_value(&a, "--storage-driver", Some("-s")).as_deref(),
            Some("b")
        );
        assert_eq!(flag_value(&args(&["--mtu"]), "--mtu", None), None);
        assert_eq!(flag_value(&[], "--mtu", None), None);
    }

    #[test]
    fn bool_flags_read_as_pflag_reads_them() {
        let live = |a: &[&str]| bool_flag(&args(a), "--live-restore");
        assert_eq!(live(&[]), None);
        assert_eq!(live(&["--live-restore"]), Some(true));
        assert_eq!(live(&["--live-restore=false"]), Some(false));
        assert_eq!(live(&["--live-restore=0", "--live-restore=T"]), Some(true));
        // The next argument is never its value; a longer flag is another flag.
        assert_eq!(live(&["--live-restore", "false"]), Some(true));
        assert_eq!(live(&["--live-restore-x"]), None);
        assert_eq!(live(&["--", "--live-restore"]), None);
    }

    #[test]
    fn remove_flag_drops_both_forms_and_keeps_the_rest() {
        let a = args(&[
            "--config-file",
            "/a",
            "--debug",
            "--config-file=/b",
            "-H",
            "x",
        ]);
        assert_eq!(
            remove_flag(&a, "--config-file", None),
            args(&["--debug", "-H", "x"])
        );
    }
}
