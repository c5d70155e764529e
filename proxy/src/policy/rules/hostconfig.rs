//! A create (or old start) body and its `HostConfig`: privileges,
//! capabilities, devices and namespaces, and the dispatch to the security
//! options, mounts and sysctls checks beside this file.

use super::fields::{
    CONFIG_FIELDS, HOSTCONFIG_FIELDS, NETWORKING_FIELDS, RESOURCES_FIELDS, WRAPPER_FIELDS,
};
use super::mounts::check_binds;
use super::obj::{object, type_error, Obj};
use super::security_opt::check_security_opt;
use super::sysctls::check_sysctls;
use super::Check;
use crate::policy::json::Json;
use crate::policy::{Policy, Rule};

/// Docker's default capability set (moby `oci/caps/defaults.go`), without
/// the `CAP_` prefix.
#[rustfmt::skip]
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
];

/// Why a network named only by hex digits is refused.
pub(super) const BY_ID: &str =
    "a network named only by hex digits is not allowed: dockerd reads it as a network ID or ID \
     prefix, which can be the host network's; use the network's name";

/// Whether dockerd could read `name` as a network ID or a unique prefix of
/// one (it tries the ID, then the name, then ID prefixes): only hex digits.
/// The host network has such an ID, so `--network <its ID>` would be
/// `--network host` by another spelling; no check against dockerd's list
/// could close that, since a network of the same name can be removed
/// between the check and the create.
pub(super) fn could_name_by_id(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether an `EndpointsConfig` entry sets `NetworkID` (Go matches the
/// key case-insensitively). dockerd resolves the endpoint's network by it,
/// so `{"x":{"NetworkID":"<host network ID>"}}` would name the host
/// network by another spelling; the docker CLI never sets it on create.
fn names_network_id(ep: &Json) -> bool {
    let Json::Object(members) = ep else {
        return false;
    };
    members.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("NetworkID")
            && !matches!(v, Json::Null)
            && !matches!(v, Json::String(s) if s.is_empty())
    })
}

/// Runtimes that are the daemon's own runc.
const RUNC: &[&str] = &["", "runc", "io.containerd.runc.v2"];

/// A create body (and a start body of API < 1.24, read the same way by
/// dockerd): `ContainerConfigWrapper`, whose top level holds Config's
/// fields, `HostConfig`, and — deprecated, used when `HostConfig` is absent
/// or null, partly merged otherwise — HostConfig's own fields.
pub(super) fn check_create(p: &Policy, body: &Json) -> Check {
    let levels = [
        CONFIG_FIELDS,
        WRAPPER_FIELDS,
        HOSTCONFIG_FIELDS,
        RESOURCES_FIELDS,
    ];
    let Some(top) = object(p, body, &levels, "")? else {
        return Ok(());
    };
    if p.denies(Rule::ToplevelHostconfig) {
        if let Some((key, _)) = top.members.iter().find(|(k, _)| {
            HOSTCONFIG_FIELDS.contains(&k.as_str()) || RESOURCES_FIELDS.contains(&k.as_str())
        }) {
            let what = "HostConfig fields at the top level of the body are not allowed; put them in HostConfig";
            return Err(p.denial(Rule::ToplevelHostconfig, what, key));
        }
    }
    // Whatever dockerd takes from the top level is checked like HostConfig.
    check_hostconfig(p, &top)?;
    if let Some(hc) = top.get("HostConfig") {
        if let Some(hc) = object(p, hc, &[HOSTCONFIG_FIELDS, RESOURCES_FIELDS], "HostConfig")? {
            check_hostconfig(p, &hc)?;
        }
    }
    // The CLI names the network of `--network host` here as well.
    if p.denies(Rule::HostNetwork) {
        if let Some(nc) = top.get("NetworkingConfig") {
            if let Some(nc) = object(p, nc, &[NETWORKING_FIELDS], "NetworkingConfig")? {
                let field = nc.path("EndpointsConfig");
                match nc.get("EndpointsConfig") {
                    None | Some(Json::Null) => {}
                    Some(Json::Object(eps)) if eps.iter().any(|(k, _)| k == "host") => {
                        let what = "the host's network namespace is not allowed";
                        return Err(p.denial(Rule::HostNetwork, what, &field));
                    }
                    Some(Json::Object(eps)) if eps.iter().any(|(k, _)| could_name_by_id(k)) => {
                        return Err(p.denial(Rule::HostNetwork, BY_ID, &field));
                    }
                    Some(Json::Object(eps)) if eps.iter().any(|(_, ep)| names_network_id(ep)) => {
                        let what = "an endpoint's NetworkID is not allowed: dockerd joins the network it names, \
                                    whatever the key; name the network by the key";
                        return Err(p.denial(Rule::HostNetwork, what, &field));
                    }
                    Some(Json::Object(_)) => {}
                    Some(other) => return Err(type_error(p, &field, "an object", other)),
                }
            }
        }
    }
    Ok(())
}

fn check_hostconfig(p: &Policy, hc: &Obj) -> Check {
    if p.denies(Rule::Privileged) && hc.bool(p, "Privileged")? {
        return Err(p.denial(
            Rule::Privileged,
            "privileged containers are not allowed",
            &hc.path("Privileged"),
        ));
    }
    if p.denies(Rule::CapAdd) {
        for cap in hc.str_slice(p, "CapAdd")? {
            check_cap(p, cap, &hc.path("CapAdd"))?;
        }
    }
    check_resources(p, hc)?;
    check_namespaces(p, hc)?;
    check_security_opt(p, hc)?;
    for field in ["MaskedPaths", "ReadonlyPaths"] {
        if p.denies(Rule::Systempaths) && !matches!(hc.get(field), None | Some(Json::Null)) {
            let what = "overriding the masked and read-only /proc and /sys paths (systempaths=unconfined) is not allowed";
            return Err(p.denial(Rule::Systempaths, what, &hc.path(field)));
        }
    }
    if p.denies(Rule::Runtime) {
        if let Some(rt) = hc.string(p, "Runtime")? {
            if !RUNC.contains(&rt) {
                let what = format!("runtime {rt:?} is not allowed; only runc");
                return Err(p.denial(Rule::Runtime, what, &hc.path("Runtime")));
            }
        }
    }
    check_binds(p, hc)?;
    if p.denies(Rule::VolumesFrom) && !hc.strings(p, "VolumesFrom")?.is_empty() {
        let what = "mounting the volumes of another container is not allowed";
        return Err(p.denial(Rule::VolumesFrom, what, &hc.path("VolumesFrom")));
    }
    check_sysctls(p, hc)
}

/// The `Resources` fields: in HostConfig and in an update body.
pub(super) fn check_resources(p: &Policy, obj: &Obj) -> Check {
    if p.denies(Rule::CgroupParent)
        && obj
            .string(p, "CgroupParent")?
            .is_some_and(|s| !s.is_empty())
    {
        return Err(p.denial(
            Rule::CgroupParent,
            "a cgroup parent is not allowed",
            &obj.path("CgroupParent"),
        ));
    }
    if p.denies(Rule::Devices) {
        if obj.array_len(p, "Devices")? > 0 {
            return Err(p.denial(
                Rule::Devices,
                "host devices are not allowed",
                &obj.path("Devices"),
            ));
        }
        if !obj.strings(p, "DeviceCgroupRules")?.is_empty() {
            let what = "device cgroup rules are not allowed";
            return Err(p.denial(Rule::Devices, what, &obj.path("DeviceCgroupRules")));
        }
    }
    if p.denies(Rule::DeviceRequests) && obj.array_len(p, "DeviceRequests")? > 0 {
        let what = "device requests (GPUs) are not allowed";
        return Err(p.denial(Rule::DeviceRequests, what, &obj.path("DeviceRequests")));
    }
    Ok(())
}

/// `CapAdd` entries as moby normalises them: upper-cased, `CAP_` prefix
/// optional, `ALL` for every capability. Go upper-cases with Unicode rules
/// (`ſ` becomes `S`, `ı` becomes `I`), so non-ASCII names are refused.
fn check_cap(p: &Policy, cap: &str, field: &str) -> Check {
    if !cap.is_ascii() {
        return Err(p.denial(
            Rule::CapAdd,
            format!("capability name {cap:?} is not ASCII"),
            field,
        ));
    }
    let upper = cap.to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if upper == "ALL" || name == "ALL" {
        return Err(p.denial(
            Rule::CapAdd,
            "adding all capabilities is not allowed",
            field,
        ));
    }
    if !DEFAULT_CAPS.contains(&name) {
        let what = format!("adding capability {name} is not allowed (only Docker's default set)");
        return Err(p.denial(Rule::CapAdd, what, field));
    }
    Ok(())
}

fn check_namespaces(p: &Policy, hc: &Obj) -> Check {
    let modes = [
        ("PidMode", Rule::HostPid, "PID"),
        ("IpcMode", Rule::HostIpc, "IPC"),
        ("UTSMode", Rule::HostUts, "UTS"),
        ("UsernsMode", Rule::HostUserns, "user"),
        ("CgroupnsMode", Rule::HostCgroupns, "cgroup"),
        ("NetworkMode", Rule::HostNetwork, "network"),
    ];
    for (field, rule, ns) in modes {
        let Some(mode) = hc.string(p, field)? else {
            continue;
        };
        if mode == "host" && p.denies(rule) {
            let what = format!("the host's {ns} namespace is not allowed");
            return Err(p.denial(rule, what, &hc.path(field)));
        }
        if field == "NetworkMode" && could_name_by_id(mode) && p.denies(rule) {
            return Err(p.denial(rule, BY_ID, &hc.path(field)));
        }
        // Another container's network stack (`--network container:db`) is
        // a common test set-up and is not the host's: allowed.
        let joins =
            matches!(field, "PidMode" | "IpcMode" | "UTSMode") && mode.starts_with("container:");
        if joins && p.denies(Rule::ContainerNamespaces) {
            let what = format!("joining another container's {ns} namespace is not allowed");
            return Err(p.denial(Rule::ContainerNamespaces, what, &hc.path(field)));
        }
    }
    // `Cgroup` is only ever "" or "container:<id>".
    if p.denies(Rule::ContainerNamespaces) && hc.string(p, "Cgroup")?.is_some_and(|c| !c.is_empty())
    {
        let what = "joining another container's cgroup is not allowed";
        return Err(p.denial(Rule::ContainerNamespaces, what, &hc.path("Cgroup")));
    }
    Ok(())
}
