//! Log output: human text or JSON lines on stderr, one subscriber for both
//! the supervisor's own events and dockerd's re-emitted lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. A bad filter falls back to `info` with a
/// warning rather than losing the logs of a service that is starting.
pub fn init(format: LogFormat, level: &str) {
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(e) = bad {
        tracing::warn!(filter = level, error = %e, "invalid DIND_LOG_LEVEL; using info");
    }
}
