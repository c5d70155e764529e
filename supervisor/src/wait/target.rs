//! Where to wait: `--host` or `DOCKER_HOST` parsed the way the docker CLI
//! parses them, and the TLS files its variables name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::*;
use crate::env::{Env, DOCKER_CERT_PATH, DOCKER_HOST, DOCKER_TLS, DOCKER_TLS_VERIFY, HOME};
use crate::hostname::is_host_name;

pub(super) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

pub(super) const PLAIN_PORT: u16 = 2375;

pub(super) const TLS_PORT: u16 = 2376;

/// A `DOCKER_HOST` (or `--host`) value or TLS setting we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("docker host `{url}`: the {scheme}:// scheme is not supported here; use unix:///path/to/docker.sock or tcp://host:port")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("docker host `{url}` names no socket: use e.g. unix:///var/run/docker.sock")]
    NoSocketPath { url: String },
    #[error("docker host `{url}`: `{port}` is not a port number (1-65535)")]
    BadPort { url: String, port: String },
    #[error("docker host `{url}`: put an IPv6 address in brackets, e.g. tcp://[::1]:2376")]
    Ipv6WithoutBrackets { url: String },
    #[error("docker host `{url}`: `{host}` is not a host name or IP address")]
    BadHost { url: String, host: String },
    #[error("TLS is on (DOCKER_TLS_VERIFY or DOCKER_TLS) but neither DOCKER_CERT_PATH nor HOME is set: set DOCKER_CERT_PATH to the client certificate directory")]
    NoCertPath,
}

/// Where the engine is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    /// TLS settings; always None for unix sockets (the docker CLI ignores
    /// TLS there too).
    pub tls: Option<TlsFiles>,
    /// Request path: `/_ping`, under the URL's path prefix if it has one.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: Host, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Used as is; a TLS certificate must carry it as an IP SAN.
    Ip(IpAddr),
    /// Resolved at every attempt.
    Name(String),
}

/// The docker CLI's client TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Holds `ca.pem`, `cert.pem`, `key.pem`.
    pub dir: PathBuf,
    /// `DOCKER_TLS_VERIFY`: check the server against `ca.pem`, and require
    /// all three files. Without it (`DOCKER_TLS`) any server certificate is
    /// accepted and the client certificate is sent when both files exist.
    pub verify: bool,
}

impl Target {
    /// The docker CLI's rules: `flag`, else a non-empty `DOCKER_HOST`, else
    /// the default socket; TLS from `DOCKER_TLS_VERIFY`/`DOCKER_TLS`.
    ///
    /// One deliberate difference: `tcp://host` without a port means 2376
    /// when TLS is on (the docker CLI always assumes 2375).
    pub fn from_env(flag: Option<&str>, env: &dyn Env) -> Result<Target, HostError> {
        let non_empty = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
        let url = flag
            .filter(|h| !h.trim().is_empty())
            .map(str::to_owned)
            .or_else(|| non_empty(DOCKER_HOST))
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let verify = non_empty(DOCKER_TLS_VERIFY).is_some();
        let tls_on = verify || non_empty(DOCKER_TLS).is_some();
        let tls = move || {
            if !tls_on {
                return Ok(None);
            }
            let dir = non_empty(DOCKER_CERT_PATH)
                .map(PathBuf::from)
                .or_else(|| non_empty(HOME).map(|h| Path::new(&h).join(".docker")))
                .ok_or(HostError::NoCertPath)?;
            Ok(Some(TlsFiles { dir, verify }))
        };
        Target::parse(&url, tls_on, tls)
    }

    /// Parses `unix://PATH`, `tcp://HOST[:PORT][/PREFIX]` or a bare
    /// `HOST[:PORT]`; `tls` is consulted for TCP only.
    fn parse(
        url: &str,
        tls_on: bool,
        tls: impl FnOnce() -> Result<Option<TlsFiles>, HostError>,
    ) -> Result<Target, HostError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").unwrap_or(("tcp", url));
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                if rest.is_empty() {
                    return Err(HostError::NoSocketPath { url: url.into() });
                }
                Ok(Target {
                    endpoint: Endpoint::Unix(PathBuf::from(rest)),
                    tls: None,
                    path: PING_PATH.into(),
                })
            }
            "tcp" => {
                let default_port = if tls_on { TLS_PORT } else { PLAIN_PORT };
                let (host, port, prefix) = parse_tcp(url, rest, default_port)?;
                Ok(Target {
                    endpoint: Endpoint::Tcp { host, port },
                    tls: tls()?,
                    path: format!("{}{PING_PATH}", prefix.trim_end_matches('/')),
                })
            }
            other => Err(HostError::UnsupportedScheme {
                url: url.into(),
                scheme: other.into(),
            }),
        }
    }

    /// `host:port`, or the socket path: what messages name.
    pub(super) fn authority(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Tcp { host, port } => authority(host, *port),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{}", authority(host, *port)),
        }
    }
}

pub(super) fn authority(host: &Host, port: u16) -> String {
    match host {
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Host::Ip(IpAddr::V4(ip)) => format!("{ip}:{port}"),
        Host::Name(name) => format!("{name}:{port}"),
    }
}

/// `rest` is what follows `tcp://`: `HOST[:PORT][/PREFIX]`, with HOST an
/// IPv4 address, a name, or `[IPv6]`. An empty HOST is localhost (docker CLI).
pub(super) fn parse_tcp(
    url: &str,
    rest: &str,
    default_port: u16,
) -> Result<(Host, u16, String), HostError> {
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| HostError::BadHost {
                url: url.into(),
                host: hostport.into(),
            })?;
        let ip = Ipv6Addr::from_str(inside).map_err(|_| HostError::BadHost {
            url: url.into(),
            host: inside.into(),
        })?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| HostError::BadHost {
                url: url.into(),
                host: hostport.into(),
            })?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        if hostport.matches(':').count() > 1 {
            return Err(HostError::Ipv6WithoutBrackets { url: url.into() });
        }
        let (name, port) = match hostport.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (hostport, None),
        };
        let host = if name.is_empty() {
            Host::Name("localhost".into())
        } else if let Ok(ip) = Ipv4Addr::from_str(name) {
            Host::Ip(IpAddr::V4(ip))
        } else if is_host_name(name) {
            Host::Name(name.to_owned())
        } else {
            return Err(HostError::BadHost {
                url: url.into(),
                host: name.into(),
            });
        };
        (host, port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(HostError::BadPort {
                    url: url.into(),
                    port: p.into(),
                })
            }
        },
    };
    Ok((host, port, prefix.to_owned()))
}
