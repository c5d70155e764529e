//! dockerd's own flags as a user passes them (`command:` or ARC's args):
//! which flags dockerd has, and how its flag parser (spf13/pflag) reads
//! them, so that what we decide, take (`host_flags`) or refuse (`lock`)
//! matches what dockerd will do.

/// Whether a dockerd flag takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// `--flag` or `--flag=BOOL`; never the next argument.
    Bool,
    /// `--flag VALUE` or `--flag=VALUE`.
    Value,
}

use Arity::{Bool, Value};

/// dockerd's flags that the supervisor reads, takes or judges (dockerd
/// 20.10 to 28): long name, shorthand, arity. One table, so the lock, the
/// endpoint flags and the lookups agree on what pflag reads as a value.
pub const FLAGS: &[(&str, Option<char>, Arity)] = &[
    ("add-runtime", None, Value),
    ("allow-nondistributable-artifacts", None, Value),
    ("authorization-plugin", None, Value),
    ("bip", None, Value),
    ("bridge", Some('b'), Value),
    ("cgroup-parent", None, Value),
    ("config-file", None, Value),
    ("containerd", None, Value),
    ("containerd-namespace", None, Value),
    ("containerd-plugins-namespace", None, Value),
    ("data-root", None, Value),
    ("debug", Some('D'), Bool),
    ("default-address-pool", None, Value),
    ("default-cgroupns-mode", None, Value),
    ("default-gateway", None, Value),
    ("default-gateway-v6", None, Value),
    ("default-ipc-mode", None, Value),
    ("default-network-opt", None, Value),
    ("default-runtime", None, Value),
    ("default-shm-size", None, Value),
    ("default-ulimit", None, Value),
    ("dns", None, Value),
    ("dns-opt", None, Value),
    ("dns-search", None, Value),
    ("exec-opt", None, Value),
    ("exec-root", None, Value),
    ("experimental", None, Bool),
    ("fixed-cidr", None, Value),
    ("fixed-cidr-v6", None, Value),
    ("graph", Some('g'), Value),
    ("group", Some('G'), Value),
    ("help", Some('h'), Bool),
    ("host", Some('H'), Value),
    ("host-gateway-ip", None, Value),
    ("http-proxy", None, Value),
    ("https-proxy", None, Value),
    ("icc", None, Bool),
    ("init", None, Bool),
    ("init-path", None, Value),
    ("insecure-registry", None, Value),
    ("ip", None, Value),
    ("ip-forward", None, Bool),
    ("ip-forward-no-drop", None, Bool),
    ("ip-masq", None, Bool),
    ("ip6tables", None, Bool),
    ("iptables", None, Bool),
    ("ipv6", None, Bool),
    ("label", None, Value),
    ("live-restore", None, Bool),
    ("log-driver", None, Value),
    ("log-format", None, Value),
    ("log-level", Some('l'), Value),
    ("log-opt", None, Value),
    ("max-concurrent-downloads", None, Value),
    ("max-concurrent-uploads", None, Value),
    ("max-download-attempts", None, Value),
    ("metrics-addr", None, Value),
    ("mtu", None, Value),
    ("network-control-plane-mtu", None, Value),
    ("no-new-privileges", None, Bool),
    ("no-proxy", None, Value),
    ("oom-score-adjust", None, Value),
    ("pidfile", Some('p'), Value),
    ("raw-logs", None, Bool),
    ("registry-mirror", None, Value),
    ("seccomp-profile", None, Value),
    ("selinux-enabled", None, Bool),
    ("shutdown-timeout", None, Value),
    ("storage-driver", Some('s'), Value),
    ("tls", None, Bool),
    ("tlscacert", None, Value),
    ("tlscert", None, Value),
    ("tlskey", None, Value),
    ("tlsverify", None, Bool),
    ("userland-proxy", None, Bool),
    ("userland-proxy-path", None, Value),
    ("userns-remap", None, Value),
    ("version", Some('v'), Bool),
];

/// The arity of the long flag `name` (without dashes), if dockerd has it.
pub fn arity(name: &str) -> Option<Arity> {
    FLAGS.iter().find(|f| f.0 == name).map(|f| f.2)
}

/// One letter of a shorthand cluster, as pflag reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letter<'a> {
    /// A boolean (`-D`), with its value when the cluster ends `=VALUE`.
    Bool {
        long: &'static str,
        value: Option<&'a str>,
    },
    /// A flag with a value: the rest of the cluster (`-Hx`, `-H=x`), or,
    /// when nothing is left, the next argument.
    Value {
        long: &'static str,
        inline: Option<&'a str>,
    },
    /// A letter dockerd does not have: pflag refuses the argument.
    Unknown,
}

/// The letters of a shorthand cluster (`DH` of `-DH x`), each with what
/// pflag makes of it, up to the one that takes the rest of the cluster.
/// As pflag: `-H=x` and `-Hx` give `x`, but `-H=` gives `=`; `-D=false`
/// gives the boolean its value, and in `-D=` the `=` is a letter.
pub fn cluster(cluster: &str) -> Vec<(char, Letter<'_>)> {
    let mut out = Vec::new();
    let mut left = cluster;
    while let Some(c) = left.chars().next() {
        let rest = &left[c.len_utf8()..];
        let Some(&(long, _, arity)) = FLAGS.iter().find(|f| f.1 == Some(c)) else {
            out.push((c, Letter::Unknown));
            break;
        };
        let assigned = rest.strip_prefix('=').filter(|v| !v.is_empty());
        match (arity, assigned) {
            (Bool, value @ Some(_)) => {
                out.push((c, Letter::Bool { long, value }));
                break;
            }
            (Bool, None) => out.push((c, Letter::Bool { long, value: None })),
            (Value, Some(v)) => {
                out.push((
                    c,
                    Letter::Value {
                        long,
                        inline: Some(v),
                    },
                ));
                break;
            }
            (Value, None) => {
                let inline = (!rest.is_empty()).then_some(rest);
                out.push((c, Letter::Value { long, inline }));
                break;
            }
        }
        left = rest;
    }
    out
}

/// Go's `strconv.ParseBool`, which pflag uses for `--flag=VALUE`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

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

/// `args` without any occurrence of the long flag and its value. Long
/// only: taking a letter out of a cluster would need the cluster rebuilt.
pub fn remove_flag(args: &[String], long: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let (hit, consumed) = match_flag(args, i, long, None);
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
            // dockerd refuses to start on anything but Go's spellings.
            found = parse_go_bool(v).or(found);
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
    if arg == long {
        // A trailing flag with no value: dockerd rejects it; we report it as absent.
        return match args.get(i + 1) {
            Some(v) => (Some(v.clone()), 2),
            None => (None, 1),
        };
    }
    if let Some(v) = arg
        .strip_prefix(long)
        .and_then(|rest| rest.strip_prefix('='))
    {
        return (Some(v.to_owned()), 1);
    }
    // The shorthand, alone or in a cluster: `-s value`, `-svalue`,
    // `-s=value`, `-Ds value`; `-s=` is the value "=", as in pflag.
    let letter = short.and_then(|s| s.strip_prefix('-')?.chars().next());
    if let (Some(letter), Some(c)) = (letter, arg.strip_prefix('-')) {
        if !c.starts_with('-') {
            for (c, l) in cluster(c) {
                match l {
                    Letter::Value { inline, .. } if c == letter => {
                        return match inline {
                            Some(v) => (Some(v.to_owned()), 1),
                            None => match args.get(i + 1) {
                                Some(v) => (Some(v.clone()), 2),
                                None => (None, 1),
                            },
                        };
                    }
                    _ => {}
                }
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
    fn clusters_read_as_pflag_reads_them() {
        let v = |long, inline| Letter::Value { long, inline };
        let b = |long, value| Letter::Bool { long, value };
        assert_eq!(
            cluster("DH"),
            [('D', b("debug", None)), ('H', v("host", None))]
        );
        assert_eq!(cluster("Hunix:///x"), [('H', v("host", Some("unix:///x")))]);
        assert_eq!(cluster("H=x"), [('H', v("host", Some("x")))]);
        assert_eq!(cluster("H="), [('H', v("host", Some("=")))]);
        assert_eq!(cluster("Hx=y"), [('H', v("host", Some("x=y")))]);
        assert_eq!(cluster("D=false"), [('D', b("debug", Some("false")))]);
        assert_eq!(
            cluster("D="),
            [('D', b("debug", None)), ('=', Letter::Unknown)]
        );
        // A value letter takes the rest, whatever it spells.
        assert_eq!(cluster("lH"), [('l', v("log-level", Some("H")))]);
        assert_eq!(
            cluster("DxH"),
            [('D', b("debug", None)), ('x', Letter::Unknown)]
        );
    }

    #[test]
    fn a_shorthand_value_is_found_inside_a_cluster() {
        let s = |a: &[&str]| flag_value(&args(a), "--storage-driver", Some("-s"));
        assert_eq!(s(&["-Ds", "vfs"]).as_deref(), Some("vfs"));
        assert_eq!(s(&["-Dsvfs"]).as_deref(), Some("vfs"));
        assert_eq!(s(&["-Ds=vfs", "--debug"]).as_deref(), Some("vfs"));
        assert_eq!(s(&["-s="]).as_deref(), Some("="));
        // `-ls`: the log level is "s".
        assert_eq!(s(&["-ls", "vfs"]), None);
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
            remove_flag(&a, "--config-file"),
            args(&["--debug", "-H", "x"])
        );
    }
}
