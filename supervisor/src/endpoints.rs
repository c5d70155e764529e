//! Which public endpoints the proxy serves: TCP (mutual TLS when
//! certificates are on) and the unix sockets named by `--host` and DOCKER_HOST.

use crate::{certs, config};

/// The proxy's endpoints: TCP (mutual TLS when certificates are on) and the
/// unix sockets.
pub fn endpoints(
    p: &config::Proxy,
    tls: Option<&certs::CertSpec>,
) -> anyhow::Result<Vec<proxy::Endpoint>> {
    let server_tls = match tls {
        Some(spec) => {
            let paths = certs::Paths::new(&spec.dir);
            Some(proxy::auth::server_config(&proxy::auth::ServerFiles {
                ca: paths.server_ca(),
                cert: paths.server_cert(),
                key: paths.server_key(),
            })?)
        }
        None => None,
    };
    let mut out: Vec<proxy::Endpoint> = p
        .listen
        .iter()
        .map(|&addr| proxy::Endpoint::Tcp {
            addr,
            tls: server_tls.clone(),
        })
        .collect();
    for s in p
        .sockets
        .iter()
        .filter(|s| !(s.implicit && served_by_another(&s.path)))
    {
        if s.gid.is_none() {
            tracing::warn!(path = %s.path.display(), "the socket group (DIND_SOCKET_GROUP) is not in /etc/group: the API socket is world-writable (0666)");
        }
        out.push(proxy::Endpoint::Unix {
            path: s.path.clone(),
            mode: s.mode,
            gid: s.gid,
        });
    }
    Ok(out)
}

/// Whether something that is not a stale socket is at `path`: a live
/// server (a host's own dockerd at /var/run/docker.sock) or another file.
/// The default public socket steps aside for it, with a warning.
fn served_by_another(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let taken = match std::fs::symlink_metadata(path) {
        Ok(m) => {
            !m.file_type().is_socket() || std::os::unix::net::UnixStream::connect(path).is_ok()
        }
        Err(_) => false,
    };
    if taken {
        tracing::warn!(path = %path.display(), "another server answers at the default API socket; the proxy does not serve it (set DOCKER_HOST=unix://PATH for a socket of its own)");
    }
    taken
}
