//! The server certificate's subject alternative names: the defaults a job
//! reaches the service by, and `DOCKER_TLS_SAN` in OpenSSL syntax.

use std::fmt;
use std::fs::{self};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::*;
use crate::hostname::is_host_name;
use rcgen::SanType;

/// A subject alternative name of the server certificate.
///
/// DNS names are kept lowercase, so sets compare as DNS does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    pub(super) fn to_rcgen(&self) -> Result<SanType, rcgen::Error> {
        Ok(match self {
            San::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }

    /// Lowercases DNS names, so a set built from any source compares as DNS does.
    pub(super) fn normalized(&self) -> San {
        match self {
            San::Dns(name) => San::Dns(name.to_ascii_lowercase()),
            San::Ip(ip) => San::Ip(*ip),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// Parses `DOCKER_TLS_SAN` in OpenSSL syntax: `DNS:dind,IP:10.0.0.5`, entries
/// separated by commas and/or whitespace, prefixes case-insensitive.
pub fn parse_openssl_sans(s: &str) -> Result<Vec<San>, CertError> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let bad = |reason| CertError::BadSan {
                entry: entry.to_owned(),
                reason,
            };
            let (kind, value) = entry
                .split_once(':')
                .ok_or_else(|| bad("missing DNS: or IP: prefix"))?;
            if kind.eq_ignore_ascii_case("DNS") {
                if is_dns_name(value) {
                    Ok(San::Dns(value.to_ascii_lowercase()))
                } else {
                    Err(bad("not a valid DNS name"))
                }
            } else if kind.eq_ignore_ascii_case("IP") {
                // Accept the bracketed form people paste from URLs, `IP:[::1]`.
                let value = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .unwrap_or(value);
                IpAddr::from_str(value)
                    .map(San::Ip)
                    .map_err(|_| bad("not a valid IP address"))
            } else {
                Err(bad("unsupported prefix"))
            }
        })
        .collect()
}

/// A hostname a certificate can carry: a host name, or one under a
/// leading `*` label.
pub(super) fn is_dns_name(name: &str) -> bool {
    is_host_name(name.strip_prefix("*.").unwrap_or(name))
}

/// The server SANs docker:dind would use: `docker`, `localhost`, the hostname,
/// its fully qualified form from `/etc/hosts`, every interface address (and
/// both loopbacks), then `extra`; sorted and deduplicated.
///
/// IPv6 link-local addresses are left out: a SAN cannot carry their zone, so no
/// client can name them, and they only cause needless re-issues.
///
/// Reads no NSS: the binary is static, so `gethostname`, `/etc/hosts` and
/// `getifaddrs` are all it has.
pub fn default_sans(extra: &[San]) -> Vec<San> {
    let hostname = match nix::unistd::gethostname() {
        Ok(name) => name.into_string().ok(),
        Err(error) => {
            tracing::warn!(%error, "gethostname failed; leaving the hostname out of the server SANs");
            None
        }
    };
    let hosts = match fs::read_to_string("/etc/hosts") {
        Ok(hosts) => hosts,
        Err(error) => {
            tracing::debug!(%error, "no /etc/hosts; no fully qualified name in the server SANs");
            String::new()
        }
    };
    let addrs: Vec<IpAddr> = match nix::ifaddrs::getifaddrs() {
        Ok(ifaddrs) => ifaddrs
            .filter_map(|ifaddr| {
                let addr = ifaddr.address?;
                if let Some(v4) = addr.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "getifaddrs failed; no interface addresses in the server SANs");
            Vec::new()
        }
    };
    assemble_sans(hostname.as_deref(), &hosts, addrs, extra)
}

/// [`default_sans`] without the system calls, for tests.
pub(super) fn assemble_sans(
    hostname: Option<&str>,
    hosts: &str,
    addrs: impl IntoIterator<Item = IpAddr>,
    extra: &[San],
) -> Vec<San> {
    let mut sans = vec![
        San::Dns("docker".into()),
        San::Dns("localhost".into()),
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    if let Some(hostname) = hostname.filter(|h| is_dns_name(h)) {
        sans.push(San::Dns(hostname.to_ascii_lowercase()));
        if let Some(fqdn) = fqdn_from_hosts(hosts, hostname) {
            sans.push(San::Dns(fqdn));
        }
    }
    sans.extend(
        addrs
            .into_iter()
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
            .map(San::Ip),
    );
    sans.extend(extra.iter().map(San::normalized));
    sans.sort();
    sans.dedup();
    sans
}

/// The canonical (first) name of the first `/etc/hosts` line naming
/// `hostname`, if it is qualified: what glibc's `hostname -f` would find
/// through the files backend.
pub(super) fn fqdn_from_hosts(hosts: &str, hostname: &str) -> Option<String> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if !names.iter().any(|n| n.eq_ignore_ascii_case(hostname)) {
            return None;
        }
        // The first matching line decides, as in glibc; a non-qualified
        // canonical name there means there is no FQDN to add.
        let canonical = names[0];
        Some(
            (canonical.contains('.') && is_dns_name(canonical))
                .then(|| canonical.to_ascii_lowercase()),
        )
    })?
}
