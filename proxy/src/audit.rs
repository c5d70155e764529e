//! The audit log: one JSON line per decision on a mutating request.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// Where audit lines go: stderr (beside the supervisor's log) or a file.
pub struct Audit {
    sink: Mutex<Box<dyn Write + Send>>,
}

/// One decision, as written.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub peer: &'a str,
    pub subject: Option<&'a str>,
    pub method: &'a str,
    /// Canonical path, without the API version prefix.
    pub path: &'a str,
    pub api_version: Option<&'a str>,
    pub decision: &'static str,
    pub rule: Option<&'static str>,
    pub reason: Option<&'a str>,
    pub policy: &'a str,
}

impl Audit {
    pub fn stderr() -> Audit {
        Audit {
            sink: Mutex::new(Box::new(io::stderr())),
        }
    }

    /// Appends to `path`, creating it (0600: it names clients and paths).
    pub fn file(path: &Path) -> io::Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Audit {
            sink: Mutex::new(Box::new(f)),
        })
    }

    /// Writes one line. A failing sink is logged, never fatal to the request.
    pub fn record(&self, entry: &Entry<'_>) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode audit entry");
                return;
            }
        };
        line.push(b'\n');
        // One write per line, so lines from concurrent requests never mix.
        let written = self
            .sink
            .lock()
            .map(|mut s| s.write_all(&line).and_then(|()| s.flush()));
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "cannot write audit entry");
        }
    }
}

/// Now, as RFC 3339 in UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
