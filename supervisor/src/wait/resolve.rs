//! Names resolved in pure Rust (the binary is static, so no NSS):
//! `/etc/hosts` first, as glibc's `hosts: files dns` does, then
//! hickory-resolver from `/etc/resolv.conf`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Hosts, Name, TokioResolver};
use tokio::time::{timeout_at, Instant};

use super::*;

/// `/etc/hosts` first (glibc's `files`), then DNS per `/etc/resolv.conf`;
/// IP literals as they are.
pub(super) async fn resolve(
    host: &Host,
    probe: &Probe,
    deadline: Instant,
) -> Result<Vec<IpAddr>, Cause> {
    let name = match host {
        Host::Ip(ip) => return Ok(vec![*ip]),
        Host::Name(name) => name,
    };
    let unresolvable = |reason: String| Cause::Unresolvable {
        host: name.clone(),
        reason,
    };
    let parsed =
        Name::from_str(name).map_err(|e| unresolvable(format!("not a valid name: {e}")))?;
    let ips = hosts_lookup(&probe.hosts_file, &parsed);
    if !ips.is_empty() {
        return Ok(ips);
    }
    let (config, mut options) = resolver_config(&probe.resolv_conf);
    options.use_hosts_file = ResolveHosts::Never; // consulted above
    let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build();
    let started = Instant::now();
    match timeout_at(deadline, resolver.lookup_ip(parsed)).await {
        Err(_) => Err(Cause::ResolveTimeout {
            host: name.clone(),
            after: started.elapsed(),
        }),
        Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => {
            Err(unresolvable("no such name".into()))
        }
        Ok(Err(e)) => Err(unresolvable(e.to_string())),
        Ok(Ok(lookup)) => {
            let ips: Vec<IpAddr> = lookup.iter().collect();
            if ips.is_empty() {
                Err(unresolvable("no such name".into()))
            } else {
                Ok(ips)
            }
        }
    }
}

/// The addresses `/etc/hosts` gives `name`, IPv4 first; empty when the file
/// is missing or does not list it.
pub(super) fn hosts_lookup(path: &Path, name: &Name) -> Vec<IpAddr> {
    let mut hosts = Hosts::default();
    let read = std::fs::File::open(path).and_then(|f| hosts.read_hosts_conf(f));
    if let Err(e) = read {
        tracing::debug!(path = %path.display(), error = %e, "hosts file not used");
        return Vec::new();
    }
    [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(|t| hosts.lookup_static_host(&Query::query(name.clone(), t)))
        .flat_map(|lookup| {
            lookup
                .iter()
                .filter_map(|r| r.ip_addr())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `/etc/resolv.conf`, or when it is missing or unreadable (a scratch
/// image) what libc and Go assume then: a name server on localhost.
pub(super) fn resolver_config(path: &Path) -> (ResolverConfig, ResolverOpts) {
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|data| {
            hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| e.to_string())
        });
    match parsed {
        Ok(conf) => conf,
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "resolv.conf not used; asking a name server on localhost");
            let servers = NameServerConfigGroup::from_ips_clear(
                &[
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
                53,
                true,
            );
            (
                ResolverConfig::from_parts(None, vec![], servers),
                ResolverOpts::default(),
            )
        }
    }
}
