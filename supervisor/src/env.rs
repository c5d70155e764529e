//! Every environment variable the supervisor reads, by name, and the one
//! way to read them: the [`Env`] trait, so tests pass a map.
//!
//! The `DIND_*` settings are also flags; `cli` gives each flag its
//! variable's value from an [`Env`] as its default. Only `lock` touches the
//! process environment directly, to scrub it for dockerd.

use std::collections::HashMap;

/// Where variables come from: the process, or a map in tests.
pub trait Env {
    /// The variable's value; None when unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;

    /// Set, but not UTF-8: `var` says None, and a caller that must not
    /// take that for unset asks here.
    fn is_not_unicode(&self, _name: &str) -> bool {
        false
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn is_not_unicode(&self, name: &str) -> bool {
        matches!(std::env::var(name), Err(std::env::VarError::NotUnicode(_)))
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

// The stock image's and the docker CLI's variables.

/// The stock image's certificate directory; set but empty turns TLS off.
pub const DOCKER_TLS_CERTDIR: &str = "DOCKER_TLS_CERTDIR";
/// Extra server SANs in OpenSSL syntax: `DNS:dind,IP:10.0.0.5`.
pub const DOCKER_TLS_SAN: &str = "DOCKER_TLS_SAN";
/// The engine's address. The service honours only a `unix://` value (the
/// socket path jobs use); `wait` honours any, as the docker CLI does.
pub const DOCKER_HOST: &str = "DOCKER_HOST";
/// dockerd's storage driver, read by dockerd before `--storage-driver` and
/// daemon.json; GitLab's docs set it on jobs, which pass it to services.
pub const DOCKER_DRIVER: &str = "DOCKER_DRIVER";
/// Set and non-empty: legacy iptables; set and empty: nft.
pub const DOCKER_IPTABLES_LEGACY: &str = "DOCKER_IPTABLES_LEGACY";
/// The docker CLI's: verify the server's certificate (implies TLS).
pub const DOCKER_TLS_VERIFY: &str = "DOCKER_TLS_VERIFY";
/// The docker CLI's: use TLS without verifying the server.
pub const DOCKER_TLS: &str = "DOCKER_TLS";
/// The docker CLI's client certificate directory.
pub const DOCKER_CERT_PATH: &str = "DOCKER_CERT_PATH";
/// Where `~/.docker` is, when DOCKER_CERT_PATH is unset.
pub const HOME: &str = "HOME";
/// Where dockerd and its helpers are looked for.
pub const PATH: &str = "PATH";
/// The standard `PATH`, the stock image's: for a process started without
/// one (an init system may not set it), and under a lock (`lock.rs`).
pub const STANDARD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// The supervisor's own settings, each also a flag (see `cli`).
pub const DIND_AUDIT_LOG: &str = "DIND_AUDIT_LOG";
pub const DIND_BARE_DOCKERD: &str = "DIND_BARE_DOCKERD";
pub const DIND_BODY_TIMEOUT: &str = "DIND_BODY_TIMEOUT";
pub const DIND_CERT_VALIDITY_DAYS: &str = "DIND_CERT_VALIDITY_DAYS";
pub const DIND_DATA_ROOT: &str = "DIND_DATA_ROOT";
pub const DIND_DOCKERD: &str = "DIND_DOCKERD";
pub const DIND_DOCKERD_OWN_LISTEN: &str = "DIND_DOCKERD_OWN_LISTEN";
pub const DIND_DOCKERD_SOCKET: &str = "DIND_DOCKERD_SOCKET";
pub const DIND_DOCKERD_SOCKET_SHARED: &str = "DIND_DOCKERD_SOCKET_SHARED";
pub const DIND_HANG_TIMEOUT: &str = "DIND_HANG_TIMEOUT";
pub const DIND_HEALTH_ADDR: &str = "DIND_HEALTH_ADDR";
pub const DIND_HOLD_TIMEOUT: &str = "DIND_HOLD_TIMEOUT";
pub const DIND_INSECURE_REGISTRIES: &str = "DIND_INSECURE_REGISTRIES";
pub const DIND_LISTEN: &str = "DIND_LISTEN";
pub const DIND_LISTEN_WHEN: &str = "DIND_LISTEN_WHEN";
pub const DIND_LOG_FORMAT: &str = "DIND_LOG_FORMAT";
pub const DIND_LOG_LEVEL: &str = "DIND_LOG_LEVEL";
pub const DIND_MAX_CONNECTIONS: &str = "DIND_MAX_CONNECTIONS";
pub const DIND_MTU: &str = "DIND_MTU";
pub const DIND_PING_CACHE: &str = "DIND_PING_CACHE";
pub const DIND_POLICY: &str = "DIND_POLICY";
pub const DIND_POLICY_ALLOW_BINDS: &str = "DIND_POLICY_ALLOW_BINDS";
pub const DIND_REGISTRY_MIRRORS: &str = "DIND_REGISTRY_MIRRORS";
pub const DIND_RESTART: &str = "DIND_RESTART";
pub const DIND_RESTART_MAX: &str = "DIND_RESTART_MAX";
pub const DIND_RUN_DIR: &str = "DIND_RUN_DIR";
pub const DIND_SHUTDOWN_TIMEOUT: &str = "DIND_SHUTDOWN_TIMEOUT";
pub const DIND_SOCKET_GROUP: &str = "DIND_SOCKET_GROUP";
pub const DIND_SOCKET_MODE: &str = "DIND_SOCKET_MODE";
pub const DIND_STALE_PID_DIRS: &str = "DIND_STALE_PID_DIRS";
pub const DIND_STORAGE_DRIVER: &str = "DIND_STORAGE_DRIVER";
pub const DIND_STORAGE_ON_OVERLAY: &str = "DIND_STORAGE_ON_OVERLAY";
pub const DIND_TLS_KEY_TYPE: &str = "DIND_TLS_KEY_TYPE";
/// Sockets handed over already bound (see `listen_fds`); not a flag.
pub const DIND_LISTEN_FDS: &str = "DIND_LISTEN_FDS";
