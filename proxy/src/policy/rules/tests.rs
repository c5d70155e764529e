//! The body and `/build` query rules, body by body under ci-safe.

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
        &hc(r#""Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"driverconfig":{}}}]"#),
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

/// The host network by another spelling: its ID or a unique prefix of it,
/// which dockerd resolves before names that do not match exactly. Anything
/// only hex digits could be that, so it is refused; names are not.
#[test]
fn the_host_network_by_its_id_or_a_prefix() {
    for id in [
        "d49953b8f52f",
        "d",
        "D4",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        denied(&hc(&format!(r#""NetworkMode":"{id}""#)), "host_network");
        denied(
            &format!(r#"{{"NetworkingConfig":{{"EndpointsConfig":{{"{id}":{{}}}}}}}}"#),
            "host_network",
        );
        assert!(
            check_build_query(&Policy::ci_safe(), Some(&format!("networkmode={id}"))).is_err(),
            "{id}"
        );
    }
    for name in [
        "default",
        "bridge",
        "none",
        "my_net",
        "ci-build-1",
        "container:d4",
    ] {
        allowed(&hc(&format!(r#""NetworkMode":"{name}""#)));
        assert_eq!(
            check_build_query(&Policy::ci_safe(), Some(&format!("networkmode={name}"))),
            Ok(())
        );
    }
    allowed(r#"{"NetworkingConfig":{"EndpointsConfig":{"project_default":{}}}}"#);
    // dockerd resolves an endpoint by its NetworkID, whatever the key.
    for ep in [
        r#"{"NetworkID":"d49953b8f52f"}"#,
        r#"{"networkid":"d4"}"#,
        r#"{"NetworkID":"anything"}"#,
    ] {
        denied(
            &format!(r#"{{"NetworkingConfig":{{"EndpointsConfig":{{"x":{ep}}}}}}}"#),
            "host_network",
        );
    }
    allowed(
        r#"{"NetworkingConfig":{"EndpointsConfig":{"ci-net":{"Aliases":["db"],"NetworkID":""}}}}"#,
    );
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
