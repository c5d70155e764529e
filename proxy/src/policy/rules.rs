//! The rules on request bodies and on `/build`'s query string.
//!
//! Bodies are read as dockerd reads them (moby's `ContainerConfigWrapper`,
//! `HostConfig`, `UpdateConfig`, `ExecConfig`, volume and network create
//! options). At every object level read here, a key that Go would match to
//! one of that level's fields without being spelled exactly is refused
//! ([`super::integrity::AMBIGUOUS_KEY`]), so the exact keys we read are the
//! fields dockerd uses. A field of the wrong type is refused as `parse`:
//! dockerd would refuse it too, and we do not guess how.

use super::json::{field_match, FieldMatch, Json};
use super::routes::{query_values, Route};
use super::{integrity, Denial, Policy, Rule};

type Check = Result<(), Denial>;

/// `container.Config`: promoted to the top level of a create body.
#[rustfmt::skip]
const CONFIG_FIELDS: &[&str] = &[
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
    "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
    "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal",
    "StopTimeout", "Shell",
];

/// `ContainerConfigWrapper`'s own fields.
const WRAPPER_FIELDS: &[&str] = &["HostConfig", "NetworkingConfig", "Cpuset"];

/// `container.HostConfig` without its embedded `Resources`.
#[rustfmt::skip]
const HOSTCONFIG_FIELDS: &[&str] = &[
    "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy",
    "AutoRemove", "VolumeDriver", "VolumesFrom", "ConsoleSize", "Annotations", "CapAdd", "CapDrop",
    "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup",
    "Links", "OomScoreAdj", "PidMode", "Privileged", "PublishAllPorts", "ReadonlyRootfs",
    "SecurityOpt", "StorageOpt", "Tmpfs", "UTSMode", "UsernsMode", "ShmSize", "Sysctls", "Runtime",
    "Isolation", "Mounts", "MaskedPaths", "ReadonlyPaths", "Init",
];

/// `container.Resources`, embedded in HostConfig and UpdateConfig.
#[rustfmt::skip]
const RESOURCES_FIELDS: &[&str] = &[
    "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight", "BlkioWeightDevice",
    "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems",
    "Devices", "DeviceCgroupRules", "DeviceRequests", "KernelMemory", "KernelMemoryTCP",
    "MemoryReservation", "MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits",
    "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth",
];

const UPDATE_FIELDS: &[&str] = &["RestartPolicy"];

#[rustfmt::skip]
const EXEC_FIELDS: &[&str] = &[
    "User", "Privileged", "Tty", "ConsoleSize", "AttachStdin", "AttachStderr", "AttachStdout",
    "Detach", "DetachKeys", "Env", "WorkingDir", "Cmd",
];

#[rustfmt::skip]
const MOUNT_FIELDS: &[&str] = &[
    "Type", "Source", "Target", "ReadOnly", "Consistency", "BindOptions", "VolumeOptions",
    "ImageOptions", "TmpfsOptions", "ClusterOptions",
];
const VOLUME_OPTIONS_FIELDS: &[&str] = &["NoCopy", "Labels", "Subpath", "DriverConfig"];
const DRIVER_FIELDS: &[&str] = &["Name", "Options"];
const TMPFS_OPTIONS_FIELDS: &[&str] = &["SizeBytes", "Mode", "Options"];
const NETWORKING_FIELDS: &[&str] = &["EndpointsConfig"];

#[rustfmt::skip]
const VOLUME_CREATE_FIELDS: &[&str] = &[
    "Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec",
];

#[rustfmt::skip]
const NETWORK_CREATE_FIELDS: &[&str] = &[
    "Name", "CheckDuplicate", "Driver", "Scope", "EnableIPv4", "EnableIPv6", "IPAM", "Internal",
    "Attachable", "Ingress", "ConfigOnly", "ConfigFrom", "Options", "Labels",
];

/// Docker's default capability set (moby `oci/caps/defaults.go`), without
/// the `CAP_` prefix.
#[rustfmt::skip]
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
];

/// IPC-namespaced sysctls (runc's list); `fs.mqueue.*` too.
#[rustfmt::skip]
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
];

/// Runtimes that are the daemon's own runc.
const RUNC: &[&str] = &["", "runc", "io.containerd.runc.v2"];

/// Network drivers that stay behind the daemon's NAT (`null` is the driver
/// of config-only networks).
const NETWORK_DRIVERS: &[&str] = &["", "bridge", "overlay", "null"];

/// Rules that read the body of a route: no body is read when all allow.
pub(super) fn body_rules(route: Route) -> &'static [Rule] {
    const HOSTCONFIG_RULES: &[Rule] = &[
        Rule::Privileged,
        Rule::CapAdd,
        Rule::Devices,
        Rule::DeviceRequests,
        Rule::HostPid,
        Rule::HostIpc,
        Rule::HostUts,
        Rule::HostUserns,
        Rule::HostCgroupns,
        Rule::HostNetwork,
        Rule::ContainerNamespaces,
        Rule::Seccomp,
        Rule::Apparmor,
        Rule::Selinux,
        Rule::NoNewPrivileges,
        Rule::WritableCgroups,
        Rule::Systempaths,
        Rule::SecurityOpt,
        Rule::Runtime,
        Rule::CgroupParent,
        Rule::BindMounts,
        Rule::VolumesFrom,
        Rule::VolumeMounts,
        Rule::Sysctls,
        Rule::ToplevelHostconfig,
    ];
    match route {
        Route::ContainerCreate | Route::ContainerStart => HOSTCONFIG_RULES,
        Route::ContainerUpdate => &[Rule::CgroupParent, Rule::Devices, Rule::DeviceRequests],
        Route::ExecCreate => &[Rule::PrivilegedExec],
        Route::VolumeCreate => &[Rule::VolumeMounts],
        Route::NetworkCreate => &[Rule::NetworkDriver],
        Route::Build | Route::Plain | Route::Family(_) | Route::Unknown => &[],
    }
}

/// Checks a parsed body of `route`.
pub(super) fn check_body(p: &Policy, route: Route, body: &Json) -> Check {
    match route {
        Route::ContainerCreate | Route::ContainerStart => check_create(p, body),
        Route::ContainerUpdate => {
            let Some(obj) = object(p, body, &[RESOURCES_FIELDS, UPDATE_FIELDS], "")? else {
                return Ok(());
            };
            check_resources(p, &obj)
        }
        Route::ExecCreate => {
            let Some(obj) = object(p, body, &[EXEC_FIELDS], "")? else {
                return Ok(());
            };
            if p.denies(Rule::PrivilegedExec) && obj.bool(p, "Privileged")? {
                return Err(p.denial(
                    Rule::PrivilegedExec,
                    "privileged exec is not allowed",
                    "Privileged",
                ));
            }
            Ok(())
        }
        Route::VolumeCreate => {
            let Some(obj) = object(p, body, &[VOLUME_CREATE_FIELDS], "")? else {
                return Ok(());
            };
            if p.denies(Rule::VolumeMounts) {
                let driver = obj.string(p, "Driver")?.unwrap_or("");
                let opts = obj.string_map(p, "DriverOpts")?;
                check_volume_opts(p, driver, &opts, "Driver", "DriverOpts")?;
            }
            Ok(())
        }
        Route::NetworkCreate => {
            let Some(obj) = object(p, body, &[NETWORK_CREATE_FIELDS], "")? else {
                return Ok(());
            };
            let driver = obj.string(p, "Driver")?.unwrap_or("");
            if p.denies(Rule::NetworkDriver) && !NETWORK_DRIVERS.contains(&driver) {
                let what = format!("network driver {driver:?} is not allowed; use bridge");
                return Err(p.denial(Rule::NetworkDriver, what, "Driver"));
            }
            Ok(())
        }
        Route::Build | Route::Plain | Route::Family(_) | Route::Unknown => Ok(()),
    }
}

/// A create body (and a start body of API < 1.24, read the same way by
/// dockerd): `ContainerConfigWrapper`, whose top level holds Config's
/// fields, `HostConfig`, and — deprecated, used when `HostConfig` is absent
/// or null, partly merged otherwise — HostConfig's own fields.
fn check_create(p: &Policy, body: &Json) -> Check {
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
fn check_resources(p: &Policy, obj: &Obj) -> Check {
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

/// `SecurityOpt`, split as moby's `parseSecurityOpt` splits it: the bare
/// words `no-new-privileges` and `disable`, else `key=value`, else the
/// deprecated `key:value`. Only settings that keep the defaults' strength
/// pass.
fn check_security_opt(p: &Policy, hc: &Obj) -> Check {
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

/// `Binds`, `Mounts`, `Tmpfs` options.
fn check_binds(p: &Policy, hc: &Obj) -> Check {
    if p.denies(Rule::BindMounts) {
        // moby's Linux parser: the source is what precedes the first ':',
        // and it is a bind when it is absolute; else a named volume.
        for bind in hc.strings(p, "Binds")? {
            if let Some((source, _)) = bind.split_once(':') {
                if source.starts_with('/') {
                    p.bind_allowed(source)
                        .map_err(|why| p.denial(Rule::BindMounts, why, &hc.path("Binds")))?;
                }
            }
        }
        for (target, opts) in hc.string_map(p, "Tmpfs")? {
            if opts.split(',').any(|o| o == "bind" || o == "rbind") {
                let what = format!("a tmpfs mount at {target} with a bind option is not allowed");
                return Err(p.denial(Rule::BindMounts, what, &hc.path("Tmpfs")));
            }
        }
    }
    let Some(mounts) = hc.get("Mounts") else {
        return Ok(());
    };
    let items = match mounts {
        Json::Null => return Ok(()),
        Json::Array(items) => items,
        other => return Err(type_error(p, &hc.path("Mounts"), "an array", other)),
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", hc.path("Mounts"));
        let Some(m) = object(p, item, &[MOUNT_FIELDS], &path)? else {
            continue;
        };
        let ty = m.string(p, "Type")?.unwrap_or("");
        match ty {
            "bind" if p.denies(Rule::BindMounts) => {
                let source = m.string(p, "Source")?.unwrap_or("");
                p.bind_allowed(source)
                    .map_err(|why| p.denial(Rule::BindMounts, why, &m.path("Source")))?;
            }
            "volume" if p.denies(Rule::VolumeMounts) => check_volume_mount(p, &m)?,
            "tmpfs" if p.denies(Rule::BindMounts) => check_tmpfs_mount(p, &m)?,
            "bind" | "volume" | "tmpfs" | "image" => {}
            other if p.denies(Rule::BindMounts) => {
                let what = format!("mounts of type {other:?} are not allowed");
                return Err(p.denial(Rule::BindMounts, what, &m.path("Type")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A `volume` mount: it creates the volume when missing, with the driver
/// options of `VolumeOptions.DriverConfig`; `Subpath` must stay inside it.
fn check_volume_mount(p: &Policy, m: &Obj) -> Check {
    let Some(vo) = m.get("VolumeOptions") else {
        return Ok(());
    };
    let Some(vo) = object(p, vo, &[VOLUME_OPTIONS_FIELDS], &m.path("VolumeOptions"))? else {
        return Ok(());
    };
    if let Some(sub) = vo.string(p, "Subpath")? {
        if sub.starts_with('/') || sub.split('/').any(|s| s == "..") {
            let what = format!("volume subpath {sub:?} leaves the volume");
            return Err(p.denial(Rule::VolumeMounts, what, &vo.path("Subpath")));
        }
    }
    let Some(dc) = vo.get("DriverConfig") else {
        return Ok(());
    };
    let Some(dc) = object(p, dc, &[DRIVER_FIELDS], &vo.path("DriverConfig"))? else {
        return Ok(());
    };
    let driver = dc.string(p, "Name")?.unwrap_or("");
    let opts = dc.string_map(p, "Options")?;
    check_volume_opts(p, driver, &opts, &dc.path("Name"), &dc.path("Options"))
}

/// A `tmpfs` mount's raw options (`TmpfsOptions.Options`, `[["noexec"]]`)
/// must not turn it into a bind mount.
fn check_tmpfs_mount(p: &Policy, m: &Obj) -> Check {
    let Some(to) = m.get("TmpfsOptions") else {
        return Ok(());
    };
    let Some(to) = object(p, to, &[TMPFS_OPTIONS_FIELDS], &m.path("TmpfsOptions"))? else {
        return Ok(());
    };
    let field = to.path("Options");
    let options = match to.get("Options") {
        None | Some(Json::Null) => return Ok(()),
        Some(Json::Array(items)) => items,
        Some(other) => return Err(type_error(p, &field, "an array", other)),
    };
    for option in options {
        let name = match option {
            Json::Array(parts) => parts.first(),
            Json::Null => None,
            other => return Err(type_error(p, &field, "an array of arrays", other)),
        };
        match name {
            Some(Json::String(n)) if n == "bind" || n == "rbind" => {
                let what = "a tmpfs mount with a bind option is not allowed";
                return Err(p.denial(Rule::BindMounts, what, &field));
            }
            None | Some(Json::String(_)) => {}
            Some(other) => return Err(type_error(p, &field, "an array of string arrays", other)),
        }
    }
    Ok(())
}

/// The options of a volume created by the `local` driver, which passes
/// them to mount(2): a bind (`o=bind`) of a path outside the allowlist, or
/// any filesystem but tmpfs (`type=ext4,device=/dev/sda1`, `type=overlay`,
/// `type=cgroup2`, NFS) would reach the host. Other drivers are plugins,
/// which cannot be installed under this policy.
fn check_volume_opts(
    p: &Policy,
    driver: &str,
    opts: &[(&str, &str)],
    driver_field: &str,
    opts_field: &str,
) -> Check {
    if !matches!(driver, "" | "local") {
        let what = format!("volume driver {driver:?} is not allowed; only local");
        return Err(p.denial(Rule::VolumeMounts, what, driver_field));
    }
    let opt = |k: &str| opts.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let (ty, o, device) = (
        opt("type").unwrap_or(""),
        opt("o").unwrap_or(""),
        opt("device").unwrap_or(""),
    );
    // moby/sys/mount splits `o` on ',' and matches flags exactly.
    if o.split(',').any(|f| f == "bind" || f == "rbind") {
        return p.bind_allowed(device).map_err(|why| {
            p.denial(
                Rule::VolumeMounts,
                format!("local volume: {why}"),
                &format!("{opts_field}.device"),
            )
        });
    }
    if ty == "tmpfs" {
        return Ok(());
    }
    if !ty.is_empty() || !device.is_empty() {
        let what = format!(
            "local volumes that mount a device or filesystem (type={ty:?}) are not allowed"
        );
        return Err(p.denial(Rule::VolumeMounts, what, opts_field));
    }
    Ok(())
}

/// Namespaced sysctls only (runc's rule): the IPC ones unless the IPC
/// namespace is the host's, `net.*` unless the network is the host's.
fn check_sysctls(p: &Policy, hc: &Obj) -> Check {
    if !p.denies(Rule::Sysctls) {
        return Ok(());
    }
    let sysctls = hc.string_map(p, "Sysctls")?;
    if sysctls.is_empty() {
        return Ok(());
    }
    let net_host = hc.string(p, "NetworkMode")? == Some("host");
    let ipc_host = hc.string(p, "IpcMode")? == Some("host");
    for (key, _) in sysctls {
        let plain = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && key.split('.').all(|s| !s.is_empty());
        let namespaced = if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
            !ipc_host
        } else if key.starts_with("net.") {
            !net_host
        } else {
            false
        };
        if !(plain && namespaced) {
            let what =
                format!("sysctl {key:?} is not allowed (not in the container's own namespaces)");
            return Err(p.denial(Rule::Sysctls, what, &hc.path("Sysctls")));
        }
    }
    Ok(())
}

/// `/build`'s options come from the query string (form bodies are refused
/// on the head): `networkmode=host` runs build steps in the host's network,
/// `cgroupparent` places them in another cgroup.
pub(super) fn check_build_query(p: &Policy, query: Option<&str>) -> Check {
    let checks = [
        ("networkmode", Rule::HostNetwork),
        ("cgroupparent", Rule::CgroupParent),
    ];
    for (key, rule) in checks {
        if !p.denies(rule) {
            continue;
        }
        let values = query_values(query, key).map_err(|why| Denial {
            rule: integrity::QUERY,
            reason: p.reason(format!("ambiguous build query string: {why}"), ""),
        })?;
        if values.len() > 1 {
            return Err(Denial {
                rule: integrity::QUERY,
                reason: p.reason(format!("query parameter {key} is given more than once"), ""),
            });
        }
        let Some(value) = values.first() else {
            continue;
        };
        match rule {
            Rule::HostNetwork if value == "host" => {
                return Err(p.denial(
                    rule,
                    "builds in the host's network namespace are not allowed",
                    "networkmode",
                ));
            }
            Rule::CgroupParent if !value.is_empty() => {
                return Err(p.denial(rule, "a cgroup parent is not allowed", "cgroupparent"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One object level, its keys checked against the level's fields.
struct Obj<'a> {
    members: &'a [(String, Json)],
    /// Where this object is in the body: "" for the top, `HostConfig`, …
    at: String,
}

/// `value` as an object whose keys are unambiguous for `levels`; None for
/// null (Go leaves the field at its zero value).
fn object<'a>(
    p: &Policy,
    value: &'a Json,
    levels: &[&[&'static str]],
    at: &str,
) -> Result<Option<Obj<'a>>, Denial> {
    let members = match value {
        Json::Null => return Ok(None),
        Json::Object(m) => m,
        other => {
            return Err(type_error(
                p,
                if at.is_empty() { "the body" } else { at },
                "an object",
                other,
            ))
        }
    };
    for (key, _) in members {
        let exact = levels.iter().any(|fields| fields.contains(&key.as_str()));
        if exact {
            continue;
        }
        for fields in levels {
            if let FieldMatch::Folded(field) = field_match(key, fields) {
                let obj = Obj {
                    members,
                    at: at.to_owned(),
                };
                return Err(Denial {
                    rule: integrity::AMBIGUOUS_KEY,
                    reason: p.reason(
                        format!("key {key:?} is ambiguous: dockerd reads it as {field}; spell it exactly"),
                        &obj.path(key),
                    ),
                });
            }
        }
    }
    Ok(Some(Obj {
        members,
        at: at.to_owned(),
    }))
}

fn type_error(p: &Policy, field: &str, want: &str, got: &Json) -> Denial {
    Denial {
        rule: integrity::PARSE,
        reason: p.reason(format!("{field} must be {want}, not {}", got.kind()), ""),
    }
}

impl<'a> Obj<'a> {
    fn get(&self, key: &str) -> Option<&'a Json> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `HostConfig.Privileged`, or `Privileged` at the top.
    fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// A Go `bool`: absent and null are false.
    fn bool(&self, p: &Policy, key: &str) -> Result<bool, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => Err(type_error(p, &self.path(key), "a boolean", other)),
        }
    }

    /// A Go `string`: None when absent or null.
    fn string(&self, p: &Policy, key: &str) -> Result<Option<&'a str>, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(other) => Err(type_error(p, &self.path(key), "a string", other)),
        }
    }

    /// A Go `[]string`. A null element decodes to "".
    fn strings(&self, p: &Policy, key: &str) -> Result<Vec<&'a str>, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Json::String(s) => Ok(s.as_str()),
                    Json::Null => Ok(""),
                    other => Err(type_error(p, &self.path(key), "an array of strings", other)),
                })
                .collect(),
            Some(other) => Err(type_error(p, &self.path(key), "an array of strings", other)),
        }
    }

    /// moby's `strslice.StrSlice`: a string or an array of strings.
    fn str_slice(&self, p: &Policy, key: &str) -> Result<Vec<&'a str>, Denial> {
        match self.get(key) {
            Some(Json::String(s)) => Ok(vec![s.as_str()]),
            _ => self.strings(p, key),
        }
    }

    /// The length of a Go slice of anything.
    fn array_len(&self, p: &Policy, key: &str) -> Result<usize, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(0),
            Some(Json::Array(items)) => Ok(items.len()),
            Some(other) => Err(type_error(p, &self.path(key), "an array", other)),
        }
    }

    /// A Go `map[string]string`. Keys are exact (maps do not fold); a null
    /// value decodes to "".
    fn string_map(&self, p: &Policy, key: &str) -> Result<Vec<(&'a str, &'a str)>, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(Json::Object(members)) => members
                .iter()
                .map(|(k, v)| match v {
                    Json::String(s) => Ok((k.as_str(), s.as_str())),
                    Json::Null => Ok((k.as_str(), "")),
                    other => Err(type_error(
                        p,
                        &self.path(key),
                        "an object of strings",
                        other,
                    )),
                })
                .collect(),
            Some(other) => Err(type_error(
                p,
                &self.path(key),
                "an object of strings",
                other,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::json::parse_strict;

    /// The denial for a create body under ci-safe, or None if allowed.
    fn create(body: &str) -> Option<Denial> {
        create_with(&Policy::ci_safe(), body)
    }

    fn create_with(p: &Policy, body: &str) -> Option<Denial> {
        let json = parse_strict(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        check_body(p, Route::ContainerCreate, &json).err()
    }

    /// Asserts that `body` is denied by `rule`; returns the reason.
    #[track_caller]
    fn denied(body: &str, rule: &str) -> String {
        match create(body) {
            Some(d) => {
                assert_eq!(d.rule, rule, "{body}: {}", d.reason);
                d.reason
            }
            None => panic!("{body} was allowed, want {rule}"),
        }
    }

    #[track_caller]
    fn allowed(body: &str) {
        if let Some(d) = create(body) {
            panic!("{body} was denied: {} ({})", d.reason, d.rule);
        }
    }

    fn hc(inner: &str) -> String {
        format!(r#"{{"Image":"alpine","HostConfig":{{{inner}}}}}"#)
    }

    #[test]
    fn an_ordinary_docker_run_is_allowed() {
        // What `docker run --rm -v /builds/p:/src -w /src alpine make` sends
        // (trimmed), plus common CI options.
        allowed(
            r#"{"Hostname":"","Env":["A=1"],"Cmd":["make"],"Image":"alpine","Volumes":{},"WorkingDir":"/src",
            "Labels":{},"HostConfig":{"Binds":["/builds/p:/src","cache:/root/.cache","/anon"],"NetworkMode":"default",
            "PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,
            "CapAdd":null,"CapDrop":["ALL"],"CgroupnsMode":"private","Dns":[],"IpcMode":"","Privileged":false,
            "SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Devices":[],"DeviceCgroupRules":null,
            "DeviceRequests":null,"MaskedPaths":null,"ReadonlyPaths":null,"CgroupParent":"","Runtime":"",
            "Mounts":[{"Type":"tmpfs","Target":"/tmp"},{"Type":"volume","Source":"data","Target":"/data"}],
            "Sysctls":{"net.ipv4.ip_forward":"1","kernel.shmmax":"1"},"Tmpfs":{"/run":"rw,noexec"}},
            "NetworkingConfig":{"EndpointsConfig":{}}}"#,
        );
        allowed("{}");
        allowed("null");
        allowed(r#"{"Image":"alpine","HostConfig":null}"#);
    }

    #[test]
    fn privileged() {
        let r = denied(&hc(r#""Privileged":true"#), "privileged");
        assert_eq!(
            r,
            "policy ci-safe: privileged containers are not allowed (HostConfig.Privileged)"
        );
        allowed(&hc(r#""Privileged":false"#));
        allowed(&hc(r#""Privileged":null"#));
        assert_eq!(
            denied(&hc(r#""Privileged":"true""#), "parse"),
            "policy ci-safe: HostConfig.Privileged must be a boolean, not a string"
        );
        denied(&hc(r#""Privileged":1"#), "parse");
    }

    #[test]
    fn case_variant_and_folded_keys_are_ambiguous() {
        for key in [
            "privileged",
            "PRIVILEGED",
            "pRivileged",
            "Privileged\u{17f}",
        ] {
            let body = hc(&format!(r#""{key}":true"#));
            if key.ends_with('\u{17f}') {
                // "Privilegedſ" has one letter more: unknown to Go as to us.
                allowed(&body);
                continue;
            }
            let r = denied(&body, "ambiguous_key");
            assert!(r.contains("dockerd reads it as Privileged"), "{r}");
        }
        // Dotless i is not in i's fold orbit: Go ignores the key, so do we.
        allowed(&hc(r#""Privıleged":true"#));
        denied(&hc(r#""Capadd":["SYS_ADMIN"]"#), "ambiguous_key");
        denied(&hc(r#""Devicecgroupruleſ":["a *:* rwm"]"#), "ambiguous_key");
        denied(&hc("\"\u{212A}ernelMemory\":1"), "ambiguous_key");
        denied(
            &hc(r#""ſecurityOpt":["seccomp=unconfined"]"#),
            "ambiguous_key",
        );
        // At every level read: top, HostConfig, Mounts items.
        denied(r#"{"hostconfig":{"Privileged":true}}"#, "ambiguous_key");
        denied(r#"{"image":"alpine"}"#, "ambiguous_key");
        denied(
            &hc(r#""Mounts":[{"type":"bind","Source":"/","Target":"/h"}]"#),
            "ambiguous_key",
        );
        denied(
            &hc(
                r#""Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"driverconfig":{}}}]"#,
            ),
            "ambiguous_key",
        );
        // Unknown keys that fold to nothing are ignored, as dockerd does.
        allowed(&hc(r#""NoSuchField":true,"X-Privileged":true"#));
        // Map keys are not fields: Sysctls and Labels keep any spelling.
        allowed(r#"{"Labels":{"privileged":"true","Privileged":"1"}}"#);
    }

    #[test]
    fn duplicate_keys_cannot_hide_a_field() {
        // Parsing refuses duplicates whichever comes last.
        for body in [
            r#"{"HostConfig":{"Privileged":false,"Privileged":true}}"#,
            r#"{"HostConfig":{"Privileged":true,"Privileged":false}}"#,
            r#"{"HostConfig":{},"HostConfig":{"Privileged":true}}"#,
        ] {
            assert!(parse_strict(body.as_bytes()).is_err(), "{body}");
        }
        // A case variant next to the exact key: Go would pick one of them.
        denied(
            r#"{"HostConfig":{"Privileged":false,"privileged":true}}"#,
            "ambiguous_key",
        );
        denied(
            r#"{"HostConfig":{"privileged":true,"Privileged":false}}"#,
            "ambiguous_key",
        );
    }

    #[test]
    fn toplevel_hostconfig_fields() {
        let r = denied(
            r#"{"Image":"alpine","Privileged":true}"#,
            "toplevel_hostconfig",
        );
        assert!(r.ends_with("(Privileged)"), "{r}");
        denied(
            r#"{"Image":"alpine","Binds":["/:/host"]}"#,
            "toplevel_hostconfig",
        );
        denied(
            r#"{"Image":"alpine","Memory":1024,"HostConfig":{}}"#,
            "toplevel_hostconfig",
        );
        allowed(r#"{"Image":"alpine","Cpuset":"0"}"#);
        // With the rule allowed, what dockerd takes from the top level is
        // still checked field by field.
        let mut p = Policy::ci_safe();
        p.set(Rule::ToplevelHostconfig, false);
        assert_eq!(
            create_with(&p, r#"{"Privileged":true}"#).unwrap().rule,
            "privileged"
        );
        assert_eq!(
            create_with(&p, r#"{"Binds":["/etc:/e"]}"#).unwrap().rule,
            "bind_mounts"
        );
        assert!(create_with(&p, r#"{"Memory":1024}"#).is_none());
    }

    #[test]
    fn capabilities() {
        for cap in [
            "CHOWN",
            "cap_chown",
            "Cap_Net_Raw",
            "NET_BIND_SERVICE",
            "audit_write",
            "CAP_KILL",
        ] {
            allowed(&hc(&format!(r#""CapAdd":["{cap}"]"#)));
        }
        allowed(&hc(r#""CapAdd":"CHOWN""#));
        allowed(&hc(r#""CapAdd":[],"CapDrop":["ALL"]"#));
        for cap in [
            "SYS_ADMIN",
            "sys_admin",
            "CAP_SYS_ADMIN",
            "NET_ADMIN",
            "SYS_PTRACE",
            "ALL",
            "all",
            "CAP_ALL",
            "BPF",
        ] {
            denied(&hc(&format!(r#""CapAdd":["CHOWN","{cap}"]"#)), "cap_add");
        }
        // StrSlice: a bare string is one capability.
        denied(&hc(r#""CapAdd":"SYS_ADMIN""#), "cap_add");
        // Go upper-cases ſ to S and ı to I.
        denied(&hc(r#""CapAdd":["ſys_admin"]"#), "cap_add");
        denied(&hc(r#""CapAdd":["SYS_ADMıN"]"#), "cap_add");
        let r = denied(&hc(r#""CapAdd":["sys_module"]"#), "cap_add");
        assert_eq!(r, "policy ci-safe: adding capability SYS_MODULE is not allowed (only Docker's default set) (HostConfig.CapAdd)");
        denied(&hc(r#""CapAdd":[1]"#), "parse");
    }

    #[test]
    fn devices() {
        denied(
            &hc(
                r#""Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}]"#,
            ),
            "devices",
        );
        denied(&hc(r#""DeviceCgroupRules":["b 8:* rmw"]"#), "devices");
        denied(
            &hc(r#""DeviceRequests":[{"Driver":"nvidia","Count":-1}]"#),
            "device_requests",
        );
        allowed(&hc(
            r#""Devices":[],"DeviceCgroupRules":[],"DeviceRequests":[]"#,
        ));
        denied(&hc(r#""Devices":{}"#), "parse");
    }

    #[test]
    fn namespaces() {
        for (field, rule) in [
            ("PidMode", "host_pid"),
            ("IpcMode", "host_ipc"),
            ("UTSMode", "host_uts"),
            ("UsernsMode", "host_userns"),
            ("CgroupnsMode", "host_cgroupns"),
            ("NetworkMode", "host_network"),
        ] {
            denied(&hc(&format!(r#""{field}":"host""#)), rule);
        }
        let r = denied(&hc(r#""NetworkMode":"host""#), "host_network");
        assert_eq!(
            r,
            "policy ci-safe: the host's network namespace is not allowed (HostConfig.NetworkMode)"
        );
        denied(&hc(r#""PidMode":"container:abc""#), "container_namespaces");
        denied(&hc(r#""IpcMode":"container:abc""#), "container_namespaces");
        denied(&hc(r#""Cgroup":"container:abc""#), "container_namespaces");
        allowed(&hc(r#""NetworkMode":"container:db""#));
        for ok in [
            r#""IpcMode":"shareable""#,
            r#""IpcMode":"private""#,
            r#""CgroupnsMode":"private""#,
            r#""NetworkMode":"bridge""#,
            r#""NetworkMode":"none""#,
            r#""PidMode":"""#,
        ] {
            allowed(&hc(ok));
        }
        // Mode values are compared exactly, as dockerd does ("HOST" is not host).
        allowed(&hc(r#""NetworkMode":"HOST""#));
        // `docker run --network host` also names the network here.
        denied(
            r#"{"NetworkingConfig":{"EndpointsConfig":{"host":{}}}}"#,
            "host_network",
        );
        denied(
            r#"{"NetworkingConfig":{"endpointsconfig":{}}}"#,
            "ambiguous_key",
        );
        allowed(r#"{"NetworkingConfig":{"EndpointsConfig":{"ci-net":{"Aliases":["db"]}}}}"#);
    }

    #[test]
    fn security_options() {
        let cases = [
            ("seccomp=unconfined", "seccomp"),
            ("seccomp:unconfined", "seccomp"),
            (
                r#"seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"#,
                "seccomp",
            ),
            ("apparmor=unconfined", "apparmor"),
            ("apparmor:unconfined", "apparmor"),
            ("apparmor=my-weak-profile", "apparmor"),
            ("label=disable", "selinux"),
            ("label:disable", "selinux"),
            ("disable", "selinux"),
            ("label=type:spc_t", "selinux"),
            ("label=user:system_u", "selinux"),
            ("no-new-privileges=false", "no_new_privileges"),
            ("no-new-privileges:0", "no_new_privileges"),
            ("no-new-privileges=maybe", "no_new_privileges"),
            ("writable-cgroups=true", "writable_cgroups"),
            ("writable-cgroups=1", "writable_cgroups"),
            ("systempaths=unconfined", "systempaths"),
            ("seccomp", "security_opt"),
            ("", "security_opt"),
            ("Seccomp=unconfined", "security_opt"),
        ];
        for (opt, rule) in cases {
            denied(&hc(&format!(r#""SecurityOpt":["{opt}"]"#)), rule);
        }
        for opt in [
            "no-new-privileges",
            "no-new-privileges=true",
            "no-new-privileges:1",
            "seccomp=builtin",
            "apparmor=docker-default",
            "label=level:s0:c100,c200",
            "label:level:s0",
            "writable-cgroups=false",
        ] {
            allowed(&hc(&format!(r#""SecurityOpt":["{opt}"]"#)));
        }
        let r = denied(&hc(r#""SecurityOpt":["seccomp=unconfined"]"#), "seccomp");
        assert_eq!(
            r,
            "policy ci-safe: seccomp=unconfined is not allowed (HostConfig.SecurityOpt)"
        );
    }

    #[test]
    fn systempaths_unconfined() {
        denied(&hc(r#""MaskedPaths":[]"#), "systempaths");
        denied(&hc(r#""ReadonlyPaths":[]"#), "systempaths");
        denied(&hc(r#""MaskedPaths":["/proc/kcore"]"#), "systempaths");
        allowed(&hc(r#""MaskedPaths":null,"ReadonlyPaths":null"#));
    }

    #[test]
    fn runtime_and_cgroup_parent() {
        denied(&hc(r#""Runtime":"runsc""#), "runtime");
        denied(&hc(r#""Runtime":"/usr/bin/evil""#), "runtime");
        allowed(&hc(r#""Runtime":"runc""#));
        allowed(&hc(r#""Runtime":"io.containerd.runc.v2""#));
        denied(&hc(r#""CgroupParent":"/""#), "cgroup_parent");
        denied(&hc(r#""CgroupParent":"system.slice""#), "cgroup_parent");
        allowed(&hc(r#""CgroupParent":"""#));
    }

    #[test]
    fn binds() {
        for ok in [
            "/builds:/b",
            "/builds/group/project:/src:ro",
            "/cache/x:/c:rw,Z",
            "/builds/./p:/p",
            "//builds//p/:/p",
            "named:/data",
            "named:/data:ro",
            "/anonymous-volume-target",
        ] {
            allowed(&hc(&format!(r#""Binds":["{ok}"]"#)));
        }
        for bad in [
            "/:/host",
            "/etc:/etc:ro",
            "/var/run/docker.sock:/var/run/docker.sock",
            "/builds2:/b",
            "/builds/../etc:/e",
            "/builds/..:/e",
            "/cache/a/../../etc:/e",
            "/proc:/p",
            "/sys/fs/cgroup:/c",
            "/dev:/dev",
        ] {
            denied(&hc(&format!(r#""Binds":["{bad}"]"#)), "bind_mounts");
        }
        let r = denied(&hc(r#""Binds":["/:/host"]"#), "bind_mounts");
        assert_eq!(r, "policy ci-safe: bind mount of / is not allowed; allowed: /builds, /cache (HostConfig.Binds)");
        denied(&hc(r#""Binds":["/builds/\u0000x:/b"]"#), "bind_mounts");
    }

    #[test]
    fn mounts() {
        allowed(&hc(
            r#""Mounts":[{"Type":"bind","Source":"/builds/p","Target":"/p","ReadOnly":true}]"#,
        ));
        allowed(&hc(
            r#""Mounts":[{"Type":"image","Source":"alpine","Target":"/i"}, null]"#,
        ));
        denied(
            &hc(r#""Mounts":[{"Type":"bind","Source":"/","Target":"/host"}]"#),
            "bind_mounts",
        );
        denied(
            &hc(r#""Mounts":[{"Type":"bind","Source":"/builds/../","Target":"/host"}]"#),
            "bind_mounts",
        );
        denied(
            &hc(r#""Mounts":[{"Type":"bind","Source":"builds","Target":"/host"}]"#),
            "bind_mounts",
        );
        denied(
            &hc(r#""Mounts":[{"Type":"bind","Target":"/host"}]"#),
            "bind_mounts",
        );
        denied(
            &hc(r#""Mounts":[{"Type":"npipe","Source":"x","Target":"/x"}]"#),
            "bind_mounts",
        );
        denied(
            &hc(r#""Mounts":[{"Type":"","Source":"/","Target":"/x"}]"#),
            "bind_mounts",
        );
        let r = denied(
            &hc(
                r#""Mounts":[{"Type":"tmpfs","Target":"/t"},{"Type":"bind","Source":"/etc","Target":"/e"}]"#,
            ),
            "bind_mounts",
        );
        assert!(r.ends_with("(HostConfig.Mounts[1].Source)"), "{r}");
        denied(&hc(r#""Mounts":{}"#), "parse");
        denied(&hc(r#""Tmpfs":{"/x":"rw,bind"}"#), "bind_mounts");
        // A volume mount can create a local volume with mount options.
        let vol = |opts: &str| {
            hc(&format!(
                r#""Mounts":[{{"Type":"volume","Target":"/v","VolumeOptions":{{"DriverConfig":{{"Name":"local","Options":{opts}}}}}}}]"#
            ))
        };
        denied(
            &vol(r#"{"type":"none","o":"bind","device":"/"}"#),
            "volume_mounts",
        );
        denied(
            &vol(r#"{"type":"ext4","device":"/dev/sda1"}"#),
            "volume_mounts",
        );
        allowed(&vol(r#"{"type":"none","o":"bind","device":"/builds/x"}"#));
        allowed(&vol(r#"{"type":"tmpfs","device":"tmpfs","o":"size=100m"}"#));
        allowed(&vol("{}"));
        let sub = |s: &str| {
            hc(&format!(
                r#""Mounts":[{{"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{{"Subpath":"{s}"}}}}]"#
            ))
        };
        allowed(&sub("a/b"));
        denied(&sub("../.."), "volume_mounts");
        denied(&sub("/etc"), "volume_mounts");
        let tmpfs = |o: &str| {
            hc(&format!(
                r#""Mounts":[{{"Type":"tmpfs","Target":"/t","TmpfsOptions":{{"SizeBytes":1,"Options":{o}}}}}]"#
            ))
        };
        allowed(&tmpfs(r#"[["noexec"],["mode","1777"]]"#));
        denied(&tmpfs(r#"[["bind"]]"#), "bind_mounts");
        denied(&tmpfs(r#"["bind"]"#), "parse");
        denied(
            &hc(r#""Mounts":[{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"options":[]}}]"#),
            "ambiguous_key",
        );
    }

    #[test]
    fn volumes_from_and_sysctls() {
        denied(&hc(r#""VolumesFrom":["other"]"#), "volumes_from");
        allowed(&hc(r#""VolumesFrom":[]"#));
        for ok in [
            "net.ipv4.ip_forward",
            "net.core.somaxconn",
            "kernel.shmmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
            "net.ipv4.conf.eth0.route_localnet",
        ] {
            allowed(&hc(&format!(r#""Sysctls":{{"{ok}":"1"}}"#)));
        }
        for bad in [
            "kernel.core_pattern",
            "vm.overcommit_memory",
            "kernel.modprobe",
            "fs.file-max",
            "net/../kernel/core_pattern",
            "net..x",
            "NET.ipv4.ip_forward",
            "kernel.shmmax.x",
        ] {
            denied(&hc(&format!(r#""Sysctls":{{"{bad}":"1"}}"#)), "sysctls");
        }
        // Namespaced only when the namespace is the container's own.
        let mut p = Policy::ci_safe();
        p.set(Rule::HostNetwork, false);
        p.set(Rule::HostIpc, false);
        let d = create_with(
            &p,
            &hc(r#""NetworkMode":"host","Sysctls":{"net.ipv4.ip_forward":"1"}"#),
        );
        assert_eq!(d.unwrap().rule, "sysctls");
        let d = create_with(
            &p,
            &hc(r#""IpcMode":"host","Sysctls":{"kernel.shmmax":"1"}"#),
        );
        assert_eq!(d.unwrap().rule, "sysctls");
        assert!(create_with(&p, &hc(r#""NetworkMode":"host""#)).is_none());
    }

    #[test]
    fn allowed_rules_are_not_read() {
        let mut p = Policy::ci_safe();
        p.set(Rule::Privileged, false);
        assert!(create_with(&p, &hc(r#""Privileged":true"#)).is_none());
        // Not even its type.
        assert!(create_with(&p, &hc(r#""Privileged":"yes""#)).is_none());
        // But an ambiguous key is refused whatever the rules.
        assert_eq!(
            create_with(&p, &hc(r#""privileged":true"#)).unwrap().rule,
            "ambiguous_key"
        );
        let permissive = Policy::permissive();
        assert!(create_with(&permissive, &hc(r#""Privileged":true,"Binds":["/:/h"]"#)).is_none());
    }

    #[test]
    fn non_object_bodies() {
        assert_eq!(create("[]").unwrap().rule, "parse");
        assert_eq!(create("\"x\"").unwrap().rule, "parse");
        assert_eq!(create(r#"{"HostConfig":[]}"#).unwrap().rule, "parse");
    }

    fn other(route: Route, body: &str) -> Option<Denial> {
        check_body(
            &Policy::ci_safe(),
            route,
            &parse_strict(body.as_bytes()).unwrap(),
        )
        .err()
    }

    #[test]
    fn start_bodies_are_read_like_create() {
        let d = other(Route::ContainerStart, r#"{"Privileged":true}"#).unwrap();
        assert_eq!(d.rule, "toplevel_hostconfig");
        let d = other(
            Route::ContainerStart,
            r#"{"HostConfig":{"Binds":["/:/h"]}}"#,
        )
        .unwrap();
        assert_eq!(d.rule, "bind_mounts");
        assert!(other(Route::ContainerStart, "{}").is_none());
    }

    #[test]
    fn update() {
        assert_eq!(
            other(Route::ContainerUpdate, r#"{"CgroupParent":"/"}"#)
                .unwrap()
                .rule,
            "cgroup_parent"
        );
        assert_eq!(
            other(Route::ContainerUpdate, r#"{"Devices":[{}]}"#)
                .unwrap()
                .rule,
            "devices"
        );
        assert_eq!(
            other(Route::ContainerUpdate, r#"{"DeviceCgroupRules":["a"]}"#)
                .unwrap()
                .rule,
            "devices"
        );
        assert_eq!(
            other(Route::ContainerUpdate, r#"{"DeviceRequests":[{}]}"#)
                .unwrap()
                .rule,
            "device_requests"
        );
        assert_eq!(
            other(Route::ContainerUpdate, r#"{"devices":[{}]}"#)
                .unwrap()
                .rule,
            "ambiguous_key"
        );
        assert_eq!(
            other(Route::ContainerUpdate, r#"{"cgroupparent":"/"}"#)
                .unwrap()
                .rule,
            "ambiguous_key"
        );
        assert!(other(
            Route::ContainerUpdate,
            r#"{"Memory":1000000,"RestartPolicy":{"Name":"always"}}"#
        )
        .is_none());
    }

    #[test]
    fn exec() {
        let d = other(Route::ExecCreate, r#"{"Cmd":["sh"],"Privileged":true}"#).unwrap();
        assert_eq!(d.rule, "privileged_exec");
        assert_eq!(
            d.reason,
            "policy ci-safe: privileged exec is not allowed (Privileged)"
        );
        assert_eq!(
            other(Route::ExecCreate, r#"{"privileged":true}"#)
                .unwrap()
                .rule,
            "ambiguous_key"
        );
        assert_eq!(
            other(Route::ExecCreate, "{\"Pri\u{17f}ileged\":true}").map(|d| d.rule),
            None
        );
        assert!(other(
            Route::ExecCreate,
            r#"{"Cmd":["sh"],"User":"0","Privileged":false,"Tty":true}"#
        )
        .is_none());
    }

    #[test]
    fn volume_create() {
        let v = |body: &str| other(Route::VolumeCreate, body).map(|d| d.rule);
        assert_eq!(
            v(r#"{"Name":"x","DriverOpts":{"type":"none","o":"bind","device":"/"}}"#),
            Some("volume_mounts")
        );
        assert_eq!(
            v(
                r#"{"Name":"x","Driver":"local","DriverOpts":{"type":"none","o":"ro,rbind","device":"/etc"}}"#
            ),
            Some("volume_mounts")
        );
        assert_eq!(
            v(r#"{"DriverOpts":{"type":"none","o":"bind","device":"/builds/../etc"}}"#),
            Some("volume_mounts")
        );
        assert_eq!(
            v(r#"{"DriverOpts":{"type":"ext4","device":"/dev/sda1"}}"#),
            Some("volume_mounts")
        );
        assert_eq!(
            v(r#"{"DriverOpts":{"type":"nfs","o":"addr=10.0.0.1","device":":/export"}}"#),
            Some("volume_mounts")
        );
        assert_eq!(
            v(r#"{"DriverOpts":{"type":"overlay","o":"lowerdir=/etc","device":"overlay"}}"#),
            Some("volume_mounts")
        );
        assert_eq!(
            v(r#"{"DriverOpts":{"type":"tmpfs","o":"bind","device":"/"}}"#),
            Some("volume_mounts")
        );
        assert_eq!(v(r#"{"Driver":"vieux/sshfs"}"#), Some("volume_mounts"));
        assert_eq!(v(r#"{"driveropts":{}}"#), Some("ambiguous_key"));
        assert_eq!(
            v(r#"{"DriverOpts":{"type":"none","o":"bind","device":"/builds/x"}}"#),
            None
        );
        assert_eq!(
            v(r#"{"DriverOpts":{"type":"tmpfs","device":"tmpfs","o":"size=64m"}}"#),
            None
        );
        assert_eq!(v(r#"{"Name":"plain","Labels":{"a":"b"}}"#), None);
        assert_eq!(v(r#"{"DriverOpts":{"size":"10G"}}"#), None);
    }

    #[test]
    fn network_create() {
        let n = |body: &str| other(Route::NetworkCreate, body).map(|d| d.rule);
        assert_eq!(
            n(r#"{"Name":"n","Driver":"macvlan","Options":{"parent":"eth0"}}"#),
            Some("network_driver")
        );
        assert_eq!(
            n(r#"{"Name":"n","Driver":"ipvlan"}"#),
            Some("network_driver")
        );
        assert_eq!(n(r#"{"Name":"n","Driver":"host"}"#), Some("network_driver"));
        assert_eq!(
            n(r#"{"Name":"n","driver":"macvlan"}"#),
            Some("ambiguous_key")
        );
        assert_eq!(n(r#"{"Name":"n","Driver":"bridge","Internal":true}"#), None);
        assert_eq!(n(r#"{"Name":"n"}"#), None);
    }

    #[test]
    fn build_query() {
        let b = |q: &str| {
            check_build_query(&Policy::ci_safe(), Some(q))
                .err()
                .map(|d| d.rule)
        };
        assert_eq!(b("t=app&networkmode=host"), Some("host_network"));
        assert_eq!(b("networkmode=ho%73t"), Some("host_network"));
        assert_eq!(b("network%6dode=host"), Some("host_network"));
        assert_eq!(b("networkmode=bridge&networkmode=host"), Some("query"));
        assert_eq!(b("networkmode=host;"), Some("query"));
        assert_eq!(b("networkmode=%gg"), Some("query"));
        assert_eq!(b("cgroupparent=/"), Some("cgroup_parent"));
        assert_eq!(b("t=app&networkmode=default&cgroupparent="), None);
        assert_eq!(b("networkmode=container:x"), None);
        assert_eq!(check_build_query(&Policy::ci_safe(), None), Ok(()));
    }
}
