//! `HostConfig.Sysctls`: only those in the container's own namespaces.

use super::obj::Obj;
use super::Check;
use crate::policy::{Policy, Rule};

/// IPC-namespaced sysctls (runc's list); `fs.mqueue.*` too.
#[rustfmt::skip]
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
];

/// Namespaced sysctls only (runc's rule): the IPC ones unless the IPC
/// namespace is the host's, `net.*` unless the network is the host's.
pub(super) fn check_sysctls(p: &Policy, hc: &Obj) -> Check {
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
