//! The stock docker:dind layout of the certificate directory.

use std::path::{Path, PathBuf};

/// The files of the layout, for dockerd's flags and the TLS code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub(super) dir: PathBuf,
}

impl Paths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Paths { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    pub fn server_dir(&self) -> PathBuf {
        self.dir.join("server")
    }

    pub fn client_dir(&self) -> PathBuf {
        self.dir.join("client")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca/cert.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca/key.pem")
    }

    pub fn server_ca(&self) -> PathBuf {
        self.dir.join("server/ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server/cert.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server/key.pem")
    }

    pub fn client_ca(&self) -> PathBuf {
        self.dir.join("client/ca.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client/cert.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client/key.pem")
    }
}
