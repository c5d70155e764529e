//! BuildKit sessions the proxy has seen open, so that a refused `/build`
//! is answered only once its session has connected, or after a bound.
//!
//! The docker CLI (20.10 and BuildKit clients of its age) opens `/session`
//! and sends `POST /build?session=ID` at the same time. If the build fails
//! before the session goroutine has started, the CLI's `Session.Close`
//! finds nothing to close, the session then runs for ever, and the CLI
//! hangs. dockerd never fails that fast (it waits for the session before
//! it decides anything), but the proxy's refusal comes in microseconds. So
//! the refusal waits for the session as dockerd would, and a job gets its
//! error instead of a hang.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The header that names a `/session`'s ID.
pub const SESSION_HEADER: &str = "x-docker-expose-session-uuid";
/// Longest wait for a session before a refusal goes out anyway.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a session ID is remembered; the build that names it comes at
/// the same moment.
const KEEP: Duration = Duration::from_secs(60);
/// Bound on remembered IDs (each is a client's, so a client could send
/// many).
const MAX: usize = 4096;

#[derive(Default)]
pub struct Sessions {
    seen: Mutex<HashMap<String, Instant>>,
    arrived: Notify,
}

impl Sessions {
    /// A `/session` with this ID is being opened.
    pub fn opened(&self, id: &str) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now.duration_since(*at) < KEEP);
        if seen.len() < MAX {
            seen.insert(id.to_owned(), now);
        }
        drop(seen);
        self.arrived.notify_waiters();
    }

    fn has(&self, id: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Returns once a session with this ID has been opened, or after
    /// `limit`.
    pub async fn wait_for(&self, id: &str, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let arrived = self.arrived.notified();
                if self.has(id) {
                    return;
                }
                arrived.await;
            }
        })
        .await;
    }
}

/// The session a `/build` names in its query (`session=ID`), if any, from
/// the raw path (`/v1.41/build` or `/build`). Only to know what to wait
/// for, never to decide: the decision reads the canonical head.
pub fn of_build(raw_path: &str, query: Option<&str>) -> Option<String> {
    let path = match raw_path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(raw_path, |i| &rest[i..])
        }
        _ => raw_path,
    };
    if path != "/build" {
        return None;
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("session="))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_its_session_opens_or_at_the_limit() {
        let sessions = std::sync::Arc::new(Sessions::default());
        let started = Instant::now();
        sessions.wait_for("nobody", WAIT).await;
        assert_eq!(started.elapsed(), WAIT);

        let s = sessions.clone();
        let waiter = tokio::spawn(async move {
            let started = Instant::now();
            s.wait_for("abc", WAIT).await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        sessions.opened("other");
        sessions.opened("abc");
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(300));
        // Already open: no wait at all.
        let started = Instant::now();
        sessions.wait_for("abc", WAIT).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn the_session_of_a_build_is_read_from_its_query() {
        assert_eq!(
            of_build("/build", Some("t=x&session=abc&networkmode=host")),
            Some("abc".into())
        );
        assert_eq!(of_build("/build", Some("t=x")), None);
        assert_eq!(of_build("/build", Some("session=")), None);
        assert_eq!(of_build("/images/create", Some("session=abc")), None);
        assert_eq!(
            of_build("/v1.41/build", Some("session=abc")),
            Some("abc".into())
        );
        assert_eq!(of_build("/v1.41/images/create", Some("session=abc")), None);
        assert_eq!(of_build("/volumes/build", Some("session=abc")), None);
    }
}
