//! The rules on request bodies and on `/build`'s query string.
//!
//! Bodies are read as dockerd reads them (moby's `ContainerConfigWrapper`,
//! `HostConfig`, `UpdateConfig`, `ExecConfig`, volume and network create
//! options). At every object level read here, a key that Go would match to
//! one of that level's fields without being spelled exactly is refused
//! ([`super::integrity::AMBIGUOUS_KEY`]), so the exact keys we read are the
//! fields dockerd uses. A field of the wrong type is refused as `parse`:
//! dockerd would refuse it too, and we do not guess how.
//!
//! Layout: this file says which rules read which route's body and
//! dispatches; [`fields`] lists the Go field names per object level,
//! [`obj`] reads one level; [`hostconfig`] (create bodies),
//! [`security_opt`], [`mounts`] and [`sysctls`] check HostConfig;
//! [`build_query`] checks `/build`.

mod build_query;
mod fields;
mod hostconfig;
mod mounts;
mod obj;
mod security_opt;
mod sysctls;

use super::json::Json;
use super::routes::Route;
use super::{Denial, Policy, Rule};
use fields::{
    EXEC_FIELDS, NETWORK_CREATE_FIELDS, RESOURCES_FIELDS, UPDATE_FIELDS, VOLUME_CREATE_FIELDS,
};
use hostconfig::{check_create, check_resources};
use mounts::check_volume_opts;
use obj::object;

pub(super) use build_query::check_build_query;

type Check = Result<(), Denial>;

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

#[cfg(test)]
mod tests;
