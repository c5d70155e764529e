//! dockerd's endpoint flags in the user's command, turned into the
//! proxy's (issue 12, item 1).
//!
//! actions-runner-controller starts its dind container as `dockerd
//! --host=unix:///var/run/docker.sock --group=$(DOCKER_GROUP_GID)`, and a
//! user who copies the stock entrypoint's line adds `--host=tcp://…
//! --tlsverify --tlscacert=…`. Those flags say where clients reach the
//! engine. Here they are taken out of dockerd's flags and become the
//! proxy's endpoints, so clients meet the readiness gate, the policy and
//! the audit log there, while dockerd stays on its private socket:
//!
//! - `-H`/`--host unix://PATH`: a unix socket the proxy serves;
//! - `-H`/`--host tcp://ADDR` (or a bare `HOST:PORT`): a TCP listener of
//!   the proxy, mutual TLS when the certificates are on;
//! - `-G`/`--group NAME|GID`: the group of those unix sockets;
//! - `--tls`, `--tlsverify`, `--tlscacert`, `--tlscert`, `--tlskey`:
//!   accepted when they agree with what the proxy serves (the certificates
//!   in `DOCKER_TLS_CERTDIR`, always with client verification), refused
//!   with one line otherwise (see `config.rs`).
//!
//! Every spelling dockerd's flag parser (spf13/pflag) reads is found:
//! `--host=x`, `--host x`, `-H x`, `-H=x`, `-Hx`, clusters such as
//! `-DH x`, repeated. The scan errs on the side of seeing a flag: every
//! argument is looked at, also one that dockerd would read as another
//! flag's value (`--label -H`), because an endpoint flag missed here would
//! be an endpoint of dockerd's without the policy. An argument wrongly
//! taken can only make dockerd's command line fail, never open anything.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::dockerd_flags::{self, arity, parse_go_bool, Arity, Letter};

/// The endpoint flags found in dockerd's flags, and what is left for dockerd.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    /// dockerd's flags without the endpoint flags, in their order.
    pub rest: Vec<String>,
    /// Every `--host`, in order.
    pub hosts: Vec<Host>,
    /// The last `--group` (pflag: last wins).
    pub group: Option<Group>,
    pub tls: TlsFlags,
}

/// One `--host` value, read as dockerd reads it (`opts.ParseHost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `unix://PATH`; `unix://` alone is dockerd's default socket.
    Unix(PathBuf),
    /// `tcp://HOST:PORT`, or `HOST:PORT` without a scheme. An empty host
    /// is dockerd's `localhost`; no port is 2375, or 2376 with TLS.
    Tcp { ip: IpAddr, port: Option<u16> },
}

/// `--group`: a gid or a group name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    Id(u32),
    Name(String),
}

/// The TLS flags as given (None: not given).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsFlags {
    pub tls: Option<bool>,
    pub verify: Option<bool>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFlags {
    pub fn is_empty(&self) -> bool {
        *self == TlsFlags::default()
    }
}

/// Why an endpoint flag cannot be served; each is one line with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("the dockerd flag {flag:?} has no value: give it one, or remove it")]
    NoValue { flag: String },
    #[error("the dockerd flag {flag} {value:?}: {why}")]
    Bad {
        flag: String,
        value: String,
        why: String,
    },
}

/// dockerd's long endpoint flags; their arity is in `dockerd_flags`.
const LONG: &[&str] = &[
    "host",
    "group",
    "tlscacert",
    "tlscert",
    "tlskey",
    "tls",
    "tlsverify",
];

/// Takes the endpoint flags out of `args` (see the module doc).
pub fn take(args: &[String]) -> Result<Taken, FlagError> {
    let mut out = Taken::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            // pflag reads nothing after it as a flag; dockerd refuses
            // arguments, so this only keeps its error.
            out.rest.extend(args[i - 1..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let Some(arity) = arity(name).filter(|_| LONG.contains(&name)) else {
                out.rest.push(a.clone());
                continue;
            };
            let value = match (arity, inline) {
                (_, Some(v)) => Some(v.to_owned()),
                (Arity::Value, None) => {
                    i += 1;
                    Some(
                        args.get(i - 1)
                            .cloned()
                            .ok_or_else(|| FlagError::NoValue { flag: a.clone() })?,
                    )
                }
                (Arity::Bool, None) => None,
            };
            out.apply(&format!("--{name}"), value)?;
            continue;
        }
        match a.strip_prefix('-').filter(|c| !c.is_empty()) {
            Some(cluster) => i += out.cluster(a, cluster, args.get(i))?,
            None => out.rest.push(a.clone()),
        }
    }
    Ok(out)
}

impl Taken {
    /// One shorthand cluster (`-DH`, `-Hunix:///x`, `-G=123`); returns how
    /// many following arguments it consumed (0 or 1). A cluster without
    /// `-H` or `-G`, or with a letter dockerd does not know before them,
    /// stays as it is: dockerd reads it, or refuses it itself.
    fn cluster(
        &mut self,
        whole: &str,
        cluster: &str,
        next: Option<&String>,
    ) -> Result<usize, FlagError> {
        let mut before = String::new();
        for (c, letter) in dockerd_flags::cluster(cluster) {
            let inline = match letter {
                Letter::Bool { .. } => {
                    before.push(c);
                    continue;
                }
                Letter::Value { inline, .. } if matches!(c, 'H' | 'G') => inline,
                Letter::Value { .. } | Letter::Unknown => break,
            };
            let flag = format!("-{c}");
            let (value, consumed) = match inline {
                Some(v) => (v.to_owned(), 0),
                None => match next {
                    Some(v) => (v.clone(), 1),
                    None => return Err(FlagError::NoValue { flag }),
                },
            };
            if !before.is_empty() {
                self.rest.push(format!("-{before}"));
            }
            self.apply(&flag, Some(value))?;
            return Ok(consumed);
        }
        self.rest.push(whole.to_owned());
        Ok(0)
    }

    /// Records one endpoint flag, spelled `flag` (`--host`, `-H`).
    fn apply(&mut self, flag: &str, value: Option<String>) -> Result<(), FlagError> {
        let bad = |value: &str, why: &str| FlagError::Bad {
            flag: flag.to_owned(),
            value: value.to_owned(),
            why: why.to_owned(),
        };
        let path = |v: String| {
            if v.is_empty() {
                Err(bad(&v, "name a file"))
            } else {
                Ok(Some(PathBuf::from(v)))
            }
        };
        match (flag, value) {
            ("--host" | "-H", Some(v)) => {
                self.hosts.push(parse_host(&v).map_err(|why| bad(&v, why))?)
            }
            ("--group" | "-G", Some(v)) => {
                self.group = Some(parse_group(&v).map_err(|why| bad(&v, why))?)
            }
            ("--tlscacert", Some(v)) => self.tls.ca = path(v)?,
            ("--tlscert", Some(v)) => self.tls.cert = path(v)?,
            ("--tlskey", Some(v)) => self.tls.key = path(v)?,
            ("--tls" | "--tlsverify", v) => {
                let on = match v.as_deref() {
                    None => true,
                    Some(s) => parse_go_bool(s)
                        .ok_or_else(|| bad(s, "not a boolean: use true or false"))?,
                };
                if flag == "--tls" {
                    self.tls.tls = Some(on);
                } else {
                    self.tls.verify = Some(on);
                }
            }
            _ => unreachable!("only endpoint flags are applied"),
        }
        Ok(())
    }
}

/// The path of dockerd's own default socket, for `unix://` alone.
pub const DOCKERD_DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A `--host` value as dockerd's `opts.ParseHost` reads it for the daemon:
/// `unix://`, `tcp://` or a bare `HOST:PORT` (TCP). `fd://` (systemd's
/// socket activation) and the other schemes are refused: nothing hands
/// the supervisor sockets that way.
fn parse_host(value: &str) -> Result<Host, &'static str> {
    let v = value.trim();
    let (scheme, addr) = match v.split_once("://") {
        Some((s, a)) => (s.to_ascii_lowercase(), a),
        None if !v.is_empty() => ("tcp".to_owned(), v),
        None => return Ok(Host::Unix(PathBuf::from(DOCKERD_DEFAULT_SOCKET))),
    };
    match scheme.as_str() {
        "unix" if addr.is_empty() => Ok(Host::Unix(PathBuf::from(DOCKERD_DEFAULT_SOCKET))),
        "unix" if addr.starts_with('/') => Ok(Host::Unix(PathBuf::from(addr))),
        "unix" => Err("a unix socket needs an absolute path: unix:///var/run/docker.sock"),
        "tcp" => parse_tcp(addr),
        "fd" => Err("socket activation (fd://) is not available under dind-supervisor: name a unix:// or tcp:// address"),
        _ => Err("dockerd listens on unix:// and tcp:// addresses only"),
    }
}

/// `HOST:PORT`, `:PORT`, `HOST`, `[V6]:PORT` or empty. The proxy binds an
/// address, so the host must be an IP address or `localhost`.
fn parse_tcp(addr: &str) -> Result<Host, &'static str> {
    const NOT_IP: &str = "name an IP address to listen on (tcp://0.0.0.0:2376), not a host name";
    let addr = addr.trim_end_matches('/');
    if addr.contains('/') {
        return Err("a TCP address has no path: tcp://0.0.0.0:2376");
    }
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (addr, None), // a bare IPv6 address
        Some((h, "")) => (h, None),
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .map_err(|_| "the port is not a number from 0 to 65535")?,
            ),
        ),
        None => (addr, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        // dockerd's DefaultHTTPHost.
        "" | "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| NOT_IP)?,
    };
    Ok(Host::Tcp { ip, port })
}

/// A gid, or a group name as `/etc/group` spells them.
fn parse_group(value: &str) -> Result<Group, &'static str> {
    if let Ok(id) = value.parse::<u32>() {
        return Ok(Group::Id(id));
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if value.is_empty() || value.starts_with('-') || !value.chars().all(name_char) {
        return Err("not a group name or number");
    }
    Ok(Group::Name(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn unix(p: &str) -> Host {
        Host::Unix(PathBuf::from(p))
    }

    fn taken(a: &[&str]) -> Taken {
        take(&args(a)).unwrap_or_else(|e| panic!("{a:?}: {e}"))
    }

    #[test]
    fn arcs_command_is_a_socket_and_a_numeric_group() {
        let t = taken(&["--host=unix:///var/run/docker.sock", "--group=123"]);
        assert_eq!(t.hosts, [unix("/var/run/docker.sock")]);
        assert_eq!(t.group, Some(Group::Id(123)));
        assert!(t.rest.is_empty() && t.tls.is_empty());
    }

    #[test]
    fn every_spelling_pflag_reads_is_found_and_removed() {
        for a in [
            &["-H", "unix:///x.sock"][..],
            &["-H=unix:///x.sock"],
            &["-Hunix:///x.sock"],
            &["--host", "unix:///x.sock"],
            &["--host=unix:///x.sock"],
        ] {
            let t = taken(a);
            assert_eq!(t.hosts, [unix("/x.sock")], "{a:?}");
            assert!(t.rest.is_empty(), "{a:?}: {:?}", t.rest);
        }
        for a in [
            &["-G", "docker"][..],
            &["-G=docker"],
            &["-Gdocker"],
            &["--group", "docker"],
            &["--group=docker"],
        ] {
            let t = taken(a);
            assert_eq!(t.group, Some(Group::Name("docker".into())), "{a:?}");
            assert!(t.rest.is_empty(), "{a:?}");
        }
    }

    #[test]
    fn clusters_keep_their_other_flags_for_dockerd() {
        let t = taken(&["-DH", "unix:///a", "-DGwheel", "--debug"]);
        assert_eq!(t.hosts, [unix("/a")]);
        assert_eq!(t.group, Some(Group::Name("wheel".into())));
        assert_eq!(t.rest, ["-D", "-D", "--debug"]);
        // A value shorthand before H reads the rest as its value: `-lH`
        // is the log level "H", not a host.
        let t = taken(&["-lH", "-sH", "-D=false"]);
        assert!(t.hosts.is_empty());
        assert_eq!(t.rest, ["-lH", "-sH", "-D=false"]);
        // A letter dockerd does not know stops the reading: dockerd refuses it.
        assert_eq!(
            taken(&["-xH", "tcp://1.2.3.4:1"]).rest,
            ["-xH", "tcp://1.2.3.4:1"]
        );
    }

    #[test]
    fn hosts_repeat_in_order_and_the_last_group_wins() {
        let t = taken(&[
            "-H",
            "unix:///a",
            "--host=tcp://0.0.0.0:2376",
            "-H",
            "10.0.0.1:2375",
            "--host=tcp://[::1]:9",
            "-H",
            "tcp://:7",
            "-H",
            "tcp://",
            "-H",
            "unix://",
            "-G",
            "1",
            "--group=2",
        ]);
        let tcp = |ip: &str, port| Host::Tcp {
            ip: ip.parse().unwrap(),
            port,
        };
        assert_eq!(
            t.hosts,
            [
                unix("/a"),
                tcp("0.0.0.0", Some(2376)),
                tcp("10.0.0.1", Some(2375)),
                tcp("::1", Some(9)),
                tcp("127.0.0.1", Some(7)),
                tcp("127.0.0.1", None),
                unix(DOCKERD_DEFAULT_SOCKET),
            ]
        );
        assert_eq!(t.group, Some(Group::Id(2)));
    }

    #[test]
    fn other_flags_and_their_values_pass_untouched() {
        let a = [
            "--registry-mirror",
            "https://m.example",
            "--mtu=1400",
            "-l",
            "debug",
            "--hosts-file",
            "--groupx=1",
            "--tlsverify-x",
        ];
        let t = taken(&a);
        assert_eq!(t.rest, a);
        assert!(t.hosts.is_empty() && t.group.is_none() && t.tls.is_empty());
        // After `--` nothing is a flag for pflag.
        assert_eq!(
            taken(&["--", "-H", "tcp://1.2.3.4:1"]).rest,
            ["--", "-H", "tcp://1.2.3.4:1"]
        );
    }

    #[test]
    fn a_host_inside_another_flags_value_is_still_taken() {
        // dockerd would read `-H` as the label's value; taking it can only
        // make dockerd fail on the dangling `--label`, never listen.
        let t = taken(&["--label", "-H", "tcp://0.0.0.0:2375"]);
        assert_eq!(t.rest, ["--label"]);
        assert_eq!(t.hosts.len(), 1);
    }

    #[test]
    fn tls_flags_are_read_as_booleans_and_paths() {
        let t = taken(&[
            "--tlsverify",
            "--tls=false",
            "--tlscacert=/certs/server/ca.pem",
            "--tlscert",
            "/certs/server/cert.pem",
            "--tlskey=/certs/server/key.pem",
        ]);
        assert_eq!(
            t.tls,
            TlsFlags {
                tls: Some(false),
                verify: Some(true),
                ca: Some("/certs/server/ca.pem".into()),
                cert: Some("/certs/server/cert.pem".into()),
                key: Some("/certs/server/key.pem".into()),
            }
        );
        assert!(t.rest.is_empty());
        assert_eq!(taken(&["--tlsverify=0"]).tls.verify, Some(false));
        // `--tls false` is no value for a boolean: "false" stays for dockerd.
        assert_eq!(taken(&["--tls", "false"]).rest, ["false"]);
    }

    #[test]
    fn what_cannot_be_served_is_one_line_naming_the_flag() {
        for (a, says) in [
            (&["-H"][..], "\"-H\" has no value"),
            (&["--host"], "\"--host\" has no value"),
            (&["-DH"], "\"-H\" has no value"),
            (&["--group"], "has no value"),
            (&["-H", "fd://"], "socket activation"),
            (&["-H", "ssh://x"], "unix:// and tcp://"),
            (&["--host=unix://relative.sock"], "absolute path"),
            (&["-H", "tcp://docker:2376"], "IP address"),
            (&["-H", "tcp://0.0.0.0:x"], "port"),
            (&["-H", "tcp://0.0.0.0:2376/path"], "no path"),
            (&["-H", "--debug"], "IP address"),
            (&["--group", "--host=tcp://0.0.0.0:1"], "not a group"),
            (&["--group="], "not a group"),
            (&["--tlsverify=maybe"], "not a boolean"),
            (&["--tlscert="], "name a file"),
        ] {
            let e = take(&args(a)).unwrap_err().to_string();
            assert!(e.contains(says), "{a:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
