//! `GET`/`HEAD /_ping` answered from dockerd's own last answer, kept briefly.
//!
//! Every docker CLI command starts with an unversioned `/_ping` (API
//! version negotiation), and so do `wait` loops and probes. dockerd answers
//! it the same way until it restarts, reloads, or its swarm state changes,
//! yet each one costs a round-trip through dockerd's whole HTTP stack. So
//! the proxy keeps dockerd's last answer, headers and body verbatim, and
//! reuses it only while all of these hold:
//! - it is at most `ttl` old (1 s by default), so a 200 still means dockerd
//!   itself answered a ping that recently;
//! - the engine is Ready (the gate runs first) and is the same dockerd
//!   process that gave it;
//! - no request that can change the `Swarm` header (`/swarm/…`, `/nodes/…`)
//!   was forwarded since it was taken.
//!
//! Versioned pings (`/v1.41/_ping`) are always forwarded: dockerd's answer
//! to them depends on the version asked for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::{CONNECTION, DATE};
use hyper::http::response::Parts;
use hyper::{HeaderMap, Method, Response, StatusCode};

use crate::head::RequestHead;
use crate::respond::Body;

/// Which cached answer a request can use: GET and HEAD differ in their
/// Content-Length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(usize);

/// Taken before a ping is forwarded; its answer is kept only if nothing
/// invalidated the cache while it was in flight, and only for the dockerd
/// that was running when it was sent: read when the answer is stored, the
/// pid may already be that of the next dockerd.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    slot: Slot,
    epoch: u64,
    engine_pid: Option<u32>,
}

struct Entry {
    taken: Instant,
    engine_pid: Option<u32>,
    epoch: u64,
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// dockerd's last ping answers. One per proxy, shared by every connection.
pub struct PingCache {
    ttl: Duration,
    /// Bumped by every request that may change the answer.
    epoch: AtomicU64,
    slots: Mutex<[Option<Entry>; 2]>,
}

impl PingCache {
    /// A `ttl` of zero turns the cache off: every ping is forwarded.
    pub fn new(ttl: Duration) -> Self {
        PingCache {
            ttl,
            epoch: AtomicU64::new(0),
            slots: Mutex::new([None, None]),
        }
    }

    /// The slot `head` may be answered from, if it is a plain unversioned
    /// ping and the cache is on.
    /// `raw_path` is the path as sent: `/_ping/` canonicalises to `/_ping`
    /// but dockerd answers it 404.
    pub fn slot(&self, head: &RequestHead, raw_path: &str) -> Option<Slot> {
        if self.ttl.is_zero()
            || raw_path != "/_ping"
            || head.path != "/_ping"
            || head.version.is_some()
            || head.query.is_some()
            || head.upgrade.is_some()
        {
            return None;
        }
        match head.method {
            Method::GET => Some(Slot(0)),
            Method::HEAD => Some(Slot(1)),
            _ => None,
        }
    }

    /// dockerd's answer for `slot`, if it is fresh and came from the dockerd
    /// running now.
    pub fn answer(
        &self,
        slot: Slot,
        engine_pid: Option<u32>,
        now: Instant,
    ) -> Option<Response<Body>> {
        let slots = self.slots.lock().ok()?;
        let e = slots[slot.0].as_ref()?;
        let fresh = now.saturating_duration_since(e.taken) < self.ttl
            && e.engine_pid == engine_pid
            && e.epoch == self.epoch.load(Ordering::Acquire);
        if !fresh {
            return None;
        }
        let mut resp = Response::new(crate::respond::full(e.body.clone()));
        *resp.status_mut() = e.status;
        // hyper adds a current Date.
        *resp.headers_mut() = e.headers.clone();
        Some(resp)
    }

    /// A ticket for a ping about to be sent to dockerd `engine_pid`.
    pub fn ticket(&self, slot: Slot, engine_pid: Option<u32>) -> Ticket {
        Ticket {
            slot,
            epoch: self.epoch.load(Ordering::Acquire),
            engine_pid,
        }
    }

    /// Keeps dockerd's successful answer to a ping sent under `ticket`.
    pub fn remember(&self, ticket: Ticket, head: &Parts, body: &bytes::Bytes, now: Instant) {
        if head.status != StatusCode::OK || ticket.epoch != self.epoch.load(Ordering::Acquire) {
            return;
        }
        let mut headers = head.headers.clone();
        // Date is per answer; Connection and Keep-Alive are per connection
        // (dockerd says `close` to a client that asked for it).
        for name in [DATE, CONNECTION] {
            headers.remove(name);
        }
        headers.remove("keep-alive");
        if let Ok(mut slots) = self.slots.lock() {
            slots[ticket.slot.0] = Some(Entry {
                taken: now,
                engine_pid: ticket.engine_pid,
                epoch: ticket.epoch,
                status: head.status,
                headers,
                body: body.clone(),
            });
        }
    }

    /// Whether forwarding `head` may change dockerd's ping answer (its
    /// `Swarm` header): then hold a [`PingCache::invalidate_guard`] until
    /// dockerd has answered.
    pub fn is_invalidated_by(head: &RequestHead) -> bool {
        crate::policy::is_mutating_method(&head.method)
            && ["/swarm", "/nodes"].iter().any(|p| {
                head.path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }

    fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Invalidates the cache now, and again when the guard drops.
    pub fn invalidate_guard(&self) -> Invalidation<'_> {
        self.invalidate();
        Invalidation(self)
    }
}

/// A change to dockerd's ping answer in flight; see
/// [`PingCache::invalidate_guard`]. The second invalidation is a drop, not
/// a call, so that a request that fails or whose client hangs up (its
/// future dropped) still discards the pings answered meanwhile, instead of
/// leaving one served for up to the TTL.
#[must_use = "dropping it at once skips invalidating pings answered during the change"]
pub struct Invalidation<'a>(&'a PingCache);

impl Drop for Invalidation<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, target: &str) -> RequestHead {
        let req = hyper::Request::builder()
            .method(method)
            .uri(target)
            .body(())
            .unwrap();
        crate::head::parse(&req.into_parts().0).unwrap()
    }

    fn slot_of(cache: &PingCache, method: Method, target: &str) -> Option<Slot> {
        let raw = target.split('?').next().unwrap();
        cache.slot(&head(method, target), raw)
    }

    fn answer_parts(status: StatusCode) -> Parts {
        let resp = Response::builder()
            .status(status)
            .header("Api-Version", "1.41")
            .header(DATE, "Thu, 26 Nov 2026 18:52:02 GMT")
            .header(CONNECTION, "close")
            .header("Content-Length", "2")
            .body(())
            .unwrap();
        resp.into_parts().0
    }

    /// A cache holding dockerd `pid`'s answer to GET /_ping, taken at the
    /// returned instant.
    fn holding(pid: Option<u32>) -> (PingCache, Slot, Instant) {
        let cache = PingCache::new(Duration::from_secs(1));
        let slot = slot_of(&cache, Method::GET, "/_ping").unwrap();
        let t0 = Instant::now();
        cache.remember(
            cache.ticket(slot, pid),
            &answer_parts(StatusCode::OK),
            &bytes::Bytes::new(),
            t0,
        );
        (cache, slot, t0)
    }

    async fn body_of(resp: Response<Body>) -> bytes::Bytes {
        use http_body_util::BodyExt;
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn reuses_dockerd_answer_without_its_date() {
        let cache = PingCache::new(Duration::from_secs(1));
        let slot = slot_of(&cache, Method::GET, "/_ping").unwrap();
        let t0 = Instant::now();
        assert!(cache.answer(slot, Some(7), t0).is_none(), "empty cache");
        let ticket = cache.ticket(slot, Some(7));
        cache.remember(
            ticket,
            &answer_parts(StatusCode::OK),
            &bytes::Bytes::from_static(b"OK"),
            t0,
        );
        let resp = cache
            .answer(slot, Some(7), t0 + Duration::from_millis(500))
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["api-version"], "1.41");
        assert!(resp.headers().get(DATE).is_none());
        assert!(
            resp.headers().get(CONNECTION).is_none(),
            "another client's Connection header"
        );
        assert_eq!(body_of(resp).await, "OK");
        // HEAD has its own answer.
        let head_slot = slot_of(&cache, Method::HEAD, "/_ping").unwrap();
        assert!(cache.answer(head_slot, Some(7), t0).is_none());
    }

    #[test]
    fn expires_after_ttl_and_with_another_dockerd() {
        let (cache, slot, t0) = holding(Some(7));
        assert!(
            cache
                .answer(slot, Some(7), t0 + Duration::from_secs(1))
                .is_none(),
            "too old"
        );
        assert!(
            cache.answer(slot, Some(8), t0).is_none(),
            "dockerd restarted"
        );
        assert!(cache.answer(slot, Some(7), t0).is_some());
    }

    #[test]
    fn swarm_changes_drop_the_answer_and_answers_in_flight() {
        let (cache, slot, t0) = holding(None);
        let in_flight = cache.ticket(slot, None);
        assert!(PingCache::is_invalidated_by(&head(
            Method::POST,
            "/v1.41/swarm/init"
        )));
        cache.invalidate();
        assert!(cache.answer(slot, None, t0).is_none());
        // A ping sent before the swarm change must not be kept after it.
        cache.remember(
            in_flight,
            &answer_parts(StatusCode::OK),
            &bytes::Bytes::new(),
            t0,
        );
        assert!(cache.answer(slot, None, t0).is_none());
    }

    #[test]
    fn only_plain_successful_pings_are_kept() {
        let cache = PingCache::new(Duration::from_secs(1));
        for target in [
            "/v1.41/_ping",
            "/_ping?x=1",
            "/_pingx",
            "/_ping/",
            "/version",
        ] {
            assert!(slot_of(&cache, Method::GET, target).is_none(), "{target}");
        }
        assert!(slot_of(&cache, Method::POST, "/_ping").is_none());
        assert!(
            slot_of(&PingCache::new(Duration::ZERO), Method::GET, "/_ping").is_none(),
            "off"
        );
        let slot = slot_of(&cache, Method::GET, "/_ping").unwrap();
        let t0 = Instant::now();
        cache.remember(
            cache.ticket(slot, None),
            &answer_parts(StatusCode::INTERNAL_SERVER_ERROR),
            &bytes::Bytes::new(),
            t0,
        );
        assert!(cache.answer(slot, None, t0).is_none());
        for (method, target) in [
            (Method::GET, "/swarm"),
            (Method::POST, "/swarmx"),
            (Method::POST, "/containers/create"),
        ] {
            assert!(
                !PingCache::is_invalidated_by(&head(method.clone(), target)),
                "{method} {target}"
            );
        }
        assert!(PingCache::is_invalidated_by(&head(
            Method::POST,
            "/nodes/abc/update"
        )));
    }

    #[test]
    fn a_swarm_change_that_fails_or_is_cancelled_still_drops_pings_in_flight() {
        let (cache, slot, t0) = holding(None);
        let before = cache.ticket(slot, None);
        let swarm_change = cache.invalidate_guard();
        assert!(cache.answer(slot, None, t0).is_none());
        let during = cache.ticket(slot, None);
        // dockerd did not answer, or the client hung up: `forward` returns
        // early or its future is dropped, and the guard with it.
        drop(swarm_change);
        for (ticket, when) in [(before, "before"), (during, "during")] {
            cache.remember(
                ticket,
                &answer_parts(StatusCode::OK),
                &bytes::Bytes::new(),
                t0,
            );
            assert!(
                cache.answer(slot, None, t0).is_none(),
                "a ping sent {when} the swarm change"
            );
        }
    }

    #[test]
    fn an_answer_is_kept_for_the_dockerd_that_was_asked() {
        let cache = PingCache::new(Duration::from_secs(1));
        let slot = slot_of(&cache, Method::GET, "/_ping").unwrap();
        let t0 = Instant::now();
        // Sent while dockerd 7 ran; it restarts as 8 before the answer is kept.
        let ticket = cache.ticket(slot, Some(7));
        cache.remember(
            ticket,
            &answer_parts(StatusCode::OK),
            &bytes::Bytes::new(),
            t0,
        );
        assert!(
            cache.answer(slot, Some(8), t0).is_none(),
            "dockerd 7's answer served for dockerd 8"
        );
        assert!(cache.answer(slot, Some(7), t0).is_some());
    }
}
