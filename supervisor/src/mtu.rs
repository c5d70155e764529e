//! MTU for dockerd's bridge: the default-route interface's MTU when it is below 1500.
//!
//! dockerd gives its bridge 1500 no matter what the container sits on. Pods on overlay networks
//! (VXLAN, WireGuard, ...) often have 1450 or less; inner containers then send packets that are
//! too big, path MTU discovery is usually blackholed, and large downloads hang mid-transfer.
//! So we read the MTU of the interface carrying the default route and pass `--mtu` when it is
//! smaller than dockerd's default.
//!
//! `--mtu` lowers only the default bridge; networks a job creates later (`docker network
//! create`, compose) would still get 1500 (issue 12). dockerd 24 and later take an MTU for them
//! from daemon.json's `default-network-opts`; for older dockerd the proxy adds it to each
//! network create (`proxy::network_mtu`). [`networks`] picks one from dockerd's version.
//!
//! [`detect_in`] reads the tables, [`choose`] and [`networks`] are pure.

use std::fmt;
use std::fs;
use std::path::Path;
use std::str::FromStr;

/// dockerd's own bridge MTU; we only ever lower it.
pub const DOCKERD_DEFAULT_MTU: u32 = 1500;
/// The IPv4 minimum; anything lower is a misread, not a link.
const MIN_MTU: u32 = 68;
const MAX_MTU: u32 = 65535;
/// Route flags from `<linux/route.h>`.
const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// The user's MTU setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtuSetting {
    #[default]
    Auto,
    /// Validated to 68..=65535 by [`FromStr`].
    Fixed(u32),
}

impl FromStr for MtuSetting {
    type Err = MtuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") || t.is_empty() {
            return Ok(Self::Auto);
        }
        match t.parse::<u32>() {
            Ok(n) if (MIN_MTU..=MAX_MTU).contains(&n) => Ok(Self::Fixed(n)),
            _ => Err(MtuError::Invalid(s.to_owned())),
        }
    }
}

impl fmt::Display for MtuSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MtuError {
    #[error("invalid MTU {0:?}; use \"auto\" or a number from 68 to 65535")]
    Invalid(String),
}

/// What to tell dockerd, and why, for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuChoice {
    /// `Some(n)` → pass `--mtu n`; `None` → leave dockerd's default.
    pub mtu: Option<u32>,
    pub reason: String,
}

/// The interface of the IPv4 default route with the lowest metric, from `/proc/net/route`.
pub fn default_route_v4(route: &str) -> Option<String> {
    let mut lines = route.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    // The column order has been fixed for decades, but the header names them; trust it first.
    let col = |name: &str, fallback: usize| {
        header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .unwrap_or(fallback)
    };
    let (iface, dest, flags, metric, mask) = (
        col("Iface", 0),
        col("Destination", 1),
        col("Flags", 3),
        col("Metric", 6),
        col("Mask", 7),
    );
    lines
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let up = u32::from_str_radix(f.get(flags)?, 16).ok()? & RTF_UP != 0;
            let default = *f.get(dest)? == "00000000" && *f.get(mask)? == "00000000";
            let metric: u32 = f.get(metric)?.parse().ok()?;
            (up && default).then(|| (metric, f[iface].to_owned()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// The interface of the IPv6 default route (`::/0`) with the lowest metric, from
/// `/proc/net/ipv6_route`. Columns: dest, dest prefix, src, src prefix, next hop, metric,
/// refcnt, use, flags, iface; all hex, no header.
pub fn default_route_v6(route: &str) -> Option<String> {
    route
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let default = f[0].bytes().all(|b| b == b'0') && f[1] == "00";
            let metric = u32::from_str_radix(f[5], 16).ok()?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            // The kernel lists unreachable `::/0` reject routes on `lo`; those carry no traffic.
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && f[9] != "lo";
            (default && usable).then(|| (metric, f[9].to_owned()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// Reads `<sys_root>/class/net/<iface>/mtu`.
fn read_mtu(sys_root: &Path, iface: &str) -> Option<u32> {
    // Interface names never hold '/', but this one came from a file; keep it inside sys_root.
    if iface.is_empty() || iface.contains('/') || iface == "." || iface == ".." {
        return None;
    }
    let path = sys_root.join("class/net").join(iface).join("mtu");
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The default-route interface and its MTU: IPv4 first, IPv6 when there is no IPv4 default.
pub fn detect_in(proc_root: &Path, sys_root: &Path) -> Option<(String, u32)> {
    let read = |f: &str| fs::read_to_string(proc_root.join(f)).ok();
    let iface = read("net/route")
        .as_deref()
        .and_then(default_route_v4)
        .or_else(|| read("net/ipv6_route").as_deref().and_then(default_route_v6))?;
    let mtu = read_mtu(sys_root, &iface)?;
    Some((iface, mtu))
}

/// [`detect_in`] on the real `/proc` and `/sys`.
pub fn detect() -> Option<(String, u32)> {
    detect_in(Path::new("/proc"), Path::new("/sys"))
}

/// Decides whether to pass `--mtu`.
pub fn choose(setting: MtuSetting, detected: Option<(String, u32)>) -> MtuChoice {
    match (setting, detected) {
        (MtuSetting::Fixed(n), _) => MtuChoice {
            mtu: Some(n),
            reason: format!("{n} (set explicitly)"),
        },
        (MtuSetting::Auto, None) => MtuChoice {
            mtu: None,
            reason: format!("dockerd default {DOCKERD_DEFAULT_MTU} (no default route found)"),
        },
        (MtuSetting::Auto, Some((iface, n))) if n < MIN_MTU => MtuChoice {
            mtu: None,
            reason: format!(
                "dockerd default {DOCKERD_DEFAULT_MTU} ({iface} reports an impossible MTU {n})"
            ),
        },
        (MtuSetting::Auto, Some((iface, n))) if n < DOCKERD_DEFAULT_MTU => MtuChoice {
            mtu: Some(n),
            reason: format!("{n} (detected on {iface}, the default-route interface)"),
        },
        (MtuSetting::Auto, Some((iface, n))) => MtuChoice {
            mtu: None,
            reason: format!("dockerd default {DOCKERD_DEFAULT_MTU} ({iface} has MTU {n})"),
        },
    }
}

/// The first dockerd release with `default-network-opts` (moby v24.0.0).
pub const DEFAULT_NETWORK_OPTS_SINCE: u32 = 24;

/// dockerd's major version from its `--version` line, e.g. `Docker version 20.10.24+dfsg1,
/// build 5d6db84` → 20. None for a line that names no release (a `dev` build).
pub fn dockerd_major(version_line: &str) -> Option<u32> {
    let rest = version_line.trim().strip_prefix("Docker version ")?;
    let major = rest.split(['.', ',', ' ', '-', '+']).next()?;
    major.parse().ok()
}

/// Who gives the networks a job creates the lowered MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMtu {
    /// Nothing to lower: dockerd's 1500 is right.
    Keep,
    /// dockerd itself, by `default-network-opts` (24 and later).
    Dockerd(u32),
    /// The proxy, on each `POST /networks/create` it relays: a dockerd older than 24, or one
    /// whose version could not be read (the proxy's way works with any).
    Proxy(u32),
}

/// Picks [`NetworkMtu`] for the bridge MTU chosen by [`choose`] and dockerd's major version.
pub fn networks(mtu: Option<u32>, dockerd_major: Option<u32>) -> NetworkMtu {
    match (mtu, dockerd_major) {
        (None, _) => NetworkMtu::Keep,
        (Some(n), Some(v)) if v >= DEFAULT_NETWORK_OPTS_SINCE => NetworkMtu::Dockerd(n),
        (Some(n), _) => NetworkMtu::Proxy(n),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wg0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
";

    const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1
";

    fn tree(
        route: &str,
        ipv6_route: &str,
        mtus: &[(&str, &str)],
    ) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let sys_root = dir.path().join("sys");
        fs::create_dir_all(proc_root.join("net")).unwrap();
        fs::write(proc_root.join("net/route"), route).unwrap();
        fs::write(proc_root.join("net/ipv6_route"), ipv6_route).unwrap();
        for (iface, mtu) in mtus {
            let d = sys_root.join("class/net").join(iface);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("mtu"), mtu).unwrap();
        }
        (dir, proc_root, sys_root)
    }

    #[test]
    fn v4_default_route_with_the_lowest_metric_wins() {
        assert_eq!(default_route_v4(ROUTE).as_deref(), Some("wg0"));
    }

    #[test]
    fn v4_ignores_routes_that_are_down_or_not_default() {
        let route = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
        assert_eq!(default_route_v4(route), None);
        assert_eq!(default_route_v4(""), None);
    }

    #[test]
    fn v6_skips_the_lo_reject_route() {
        assert_eq!(default_route_v6(IPV6_ROUTE).as_deref(), Some("eth1"));
    }

    #[test]
    fn detect_reads_the_mtu_of_the_v4_default_interface() {
        let (_d, p, s) = tree(ROUTE, IPV6_ROUTE, &[("wg0", "1420\n"), ("eth0", "1500\n")]);
        assert_eq!(detect_in(&p, &s), Some(("wg0".to_owned(), 1420)));
    }

    #[test]
    fn detect_falls_back_to_ipv6_without_a_v4_default() {
        let header = ROUTE.lines().next().unwrap();
        let (_d, p, s) = tree(header, IPV6_ROUTE, &[("eth1", "1280\n")]);
        assert_eq!(detect_in(&p, &s), Some(("eth1".to_owned(), 1280)));
    }

    #[test]
    fn detect_is_none_without_routes_or_sysfs_entry() {
        let (_d, p, s) = tree(ROUTE, "", &[]);
        assert_eq!(detect_in(&p, &s), None);
        let missing = Path::new("/nonexistent");
        assert_eq!(detect_in(missing, missing), None);
    }

    #[test]
    fn choose_passes_mtu_only_below_1500() {
        let c = choose(MtuSetting::Auto, Some(("eth0".into(), 1450)));
        assert_eq!(c.mtu, Some(1450));
        assert!(c.reason.contains("eth0"));
        assert_eq!(
            choose(MtuSetting::Auto, Some(("eth0".into(), 1500))).mtu,
            None
        );
        assert_eq!(
            choose(MtuSetting::Auto, Some(("eth0".into(), 9001))).mtu,
            None
        );
        assert_eq!(
            choose(MtuSetting::Auto, Some(("eth0".into(), 10))).mtu,
            None
        );
        assert_eq!(choose(MtuSetting::Auto, None).mtu, None);
    }

    #[test]
    fn fixed_setting_overrides_detection() {
        let c = choose(MtuSetting::Fixed(9000), Some(("eth0".into(), 1450)));
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.reason, "9000 (set explicitly)");
    }

    #[test]
    fn setting_parses_auto_or_a_valid_number() {
        assert_eq!("auto".parse::<MtuSetting>().unwrap(), MtuSetting::Auto);
        assert_eq!("AUTO".parse::<MtuSetting>().unwrap(), MtuSetting::Auto);
        assert_eq!(
            "".parse::<MtuSetting>().unwrap(),
            MtuSetting::Auto,
            "unset-but-empty env"
        );
        assert_eq!(
            " 1400 ".parse::<MtuSetting>().unwrap(),
            MtuSetting::Fixed(1400)
        );
        assert_eq!("68".parse::<MtuSetting>().unwrap(), MtuSetting::Fixed(68));
        assert_eq!(
            "65535".parse::<MtuSetting>().unwrap(),
            MtuSetting::Fixed(65535)
        );
        for bad in ["67", "65536", "-1", "1.5k", "large"] {
            let msg = bad.parse::<MtuSetting>().unwrap_err().to_string();
            assert!(msg.contains("68 to 65535") && msg.contains(bad), "{msg}");
        }
    }

    #[test]
    fn dockerd_major_reads_the_version_line() {
        assert_eq!(
            dockerd_major("Docker version 20.10.24+dfsg1, build 5d6db84\n"),
            Some(20)
        );
        assert_eq!(
            dockerd_major("Docker version 27.3.1, build 41ca978"),
            Some(27)
        );
        assert_eq!(
            dockerd_major("Docker version 24.0.0-rc.1, build x"),
            Some(24)
        );
        assert_eq!(dockerd_major("Docker version dev, build unknown"), None);
        assert_eq!(dockerd_major("dockerd: command not found"), None);
        assert_eq!(dockerd_major(""), None);
    }

    #[test]
    fn networks_get_the_mtu_from_dockerd_24_on_and_from_the_proxy_before() {
        assert_eq!(networks(None, Some(27)), NetworkMtu::Keep);
        assert_eq!(networks(None, Some(20)), NetworkMtu::Keep);
        assert_eq!(networks(Some(1400), Some(24)), NetworkMtu::Dockerd(1400));
        assert_eq!(networks(Some(1400), Some(23)), NetworkMtu::Proxy(1400));
        assert_eq!(networks(Some(1400), Some(20)), NetworkMtu::Proxy(1400));
        assert_eq!(networks(Some(1400), None), NetworkMtu::Proxy(1400));
    }
}
