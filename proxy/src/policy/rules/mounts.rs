//! Mounts: `Binds`, `Mounts` (bind, volume, tmpfs) and `Tmpfs` options, and
//! the driver options of local volumes (also read by volume create).

use super::fields::{DRIVER_FIELDS, MOUNT_FIELDS, TMPFS_OPTIONS_FIELDS, VOLUME_OPTIONS_FIELDS};
use super::obj::{object, type_error, Obj};
use super::Check;
use crate::policy::json::Json;
use crate::policy::{Policy, Rule};

/// `Binds`, `Mounts`, `Tmpfs` options.
pub(super) fn check_binds(p: &Policy, hc: &Obj) -> Check {
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
pub(super) fn check_volume_opts(
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
