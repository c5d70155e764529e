//! The decision point of the request path: the head parsed and decided,
//! the body read and decided when the policy must see it, bind sources
//! pinned, and every decision on a mutating request audited.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::body::{read_whole, BodyMemory};
use super::{Peer, Shared};
use crate::archive;
use crate::decide::{self, Decision};
use crate::head::RequestHead;
use crate::network_mtu;
use crate::pin::{self, Pins};
use crate::respond::{Body, Refusal};

/// The pins made for one request: released when dropped, unless dockerd
/// accepted the request and so now names them.
#[derive(Default)]
pub(super) struct PinLease {
    pins: Option<Arc<Pins>>,
    made: Vec<PathBuf>,
}

impl PinLease {
    fn new(pins: Arc<Pins>, made: Vec<PathBuf>) -> Self {
        PinLease {
            pins: Some(pins),
            made,
        }
    }

    /// dockerd took the request: its container or volume owns the pins
    /// now, until the sweep finds them unnamed.
    pub(super) fn keep(&mut self) {
        if let Some(pins) = &self.pins {
            pins.keep(&self.made);
        }
        self.made.clear();
    }
}

impl Drop for PinLease {
    fn drop(&mut self) {
        if let (Some(pins), false) = (&self.pins, self.made.is_empty()) {
            pins.release(&self.made);
        }
    }
}

/// A request the decision point let through, with what it holds until it
/// is answered.
pub(super) struct Admitted {
    pub(super) head: RequestHead,
    /// Pins made for its bind sources; released on every path but a
    /// successful answer from dockerd.
    pub(super) pins: PinLease,
    /// Its place in the body memory, when its body was read whole: held
    /// through the readiness gate and the forwarding.
    _body_memory: Option<BodyMemory>,
}

/// The decision point: parses the head and decides on it, or on the body
/// when the policy must see it (the body's answer is final). Every
/// decision on a mutating request, and every refusal, is audited.
pub(super) async fn admit(
    parts: &mut hyper::http::request::Parts,
    unread: &mut Option<Body>,
    shared: &Arc<Shared>,
    peer: &Peer,
) -> Result<Admitted, Refusal> {
    let head = match crate::head::parse(parts) {
        Ok(head) => head,
        Err(refusal) => {
            // Malformed mutating requests are what bypass attempts look like.
            audit(
                shared,
                peer,
                &parts.method,
                parts.uri.path(),
                None,
                Err(&refusal),
            );
            return Err(refusal);
        }
    };
    if head.upgrade.is_none() {
        // dockerd switches protocols on the Upgrade header alone; one we do
        // not act on must not reach it, or the session would be dropped.
        parts.headers.remove(hyper::header::UPGRADE);
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| v.as_bytes().to_vec());
    let mut admitted = Admitted {
        head,
        pins: PinLease::default(),
        _body_memory: None,
    };
    let decision = match decide::decide(&admitted.head, &shared.policy, content_type.as_deref()) {
        // The MTU is added to the body before the policy reads it, so the
        // policy decides on what dockerd gets; a permissive policy reads
        // no body, so this one is read for the MTU alone.
        Decision::Forward if network_mtu::applies(shared.network_mtu, &admitted.head) => {
            Decision::InspectBody {
                cap: shared.policy.body_cap(),
            }
        }
        decision => decision,
    };
    let decided = match decision {
        Decision::Forward => Ok(()),
        Decision::Refuse(refusal) => Err(refusal),
        Decision::InspectBody { cap } => {
            let checked = Checked {
                cap,
                content_type: content_type.as_deref(),
            };
            decide_body(parts, unread, checked, &mut admitted, shared).await
        }
    };
    audit_head(shared, peer, &admitted.head, decided.as_ref().map(|_| ()));
    decided.map(|()| admitted)
}

/// What the policy needs to decide on a body besides the body itself.
struct Checked<'a> {
    /// The most the policy reads ([`Decision::InspectBody`]).
    cap: usize,
    content_type: Option<&'a [u8]>,
}

/// Reads the body the policy must see ([`read_whole`]), decides on it and,
/// when it passes, pins its bind sources. The checked bytes, rewritten to
/// name the pins, replace `unread`: they are what dockerd gets, framed
/// afresh.
async fn decide_body(
    parts: &mut hyper::http::request::Parts,
    unread: &mut Option<Body>,
    checked: Checked<'_>,
    admitted: &mut Admitted,
    shared: &Arc<Shared>,
) -> Result<(), Refusal> {
    let body = unread.take().expect("the body is unread until here");
    let (mut bytes, memory) = read_whole(parts, body, checked.cap, shared).await?;
    admitted._body_memory = Some(memory);
    let head = &admitted.head;
    // A few bytes more than the memory counted: one short option.
    if let Some(with_mtu) =
        network_mtu::rewrite(shared.network_mtu, head, checked.content_type, &bytes)
    {
        bytes = with_mtu.into();
        parts.headers.insert(
            CONTENT_LENGTH,
            hyper::header::HeaderValue::from(bytes.len()),
        );
    }
    let mut decided = decide::decide_body(head, &shared.policy, checked.content_type, &bytes);
    if let (Ok(()), Some(pins)) = (&decided, &shared.pins) {
        match pin::pin_body(pins, &shared.policy, head, &bytes) {
            Ok(Some(p)) => {
                bytes = p.body;
                admitted.pins = PinLease::new(pins.clone(), p.made);
                parts.headers.insert(
                    CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(bytes.len()),
                );
            }
            Ok(None) => {}
            Err(refusal) => decided = Err(refusal),
        }
    }
    *unread = Some(crate::respond::full(bytes));
    decided
}

/// The archive rule ([`crate::archive`]), audited when it refuses. It needs
/// dockerd's answer about the container, so it comes after the gate.
pub(super) async fn check_archive(
    shared: &Shared,
    peer: &Peer,
    head: &RequestHead,
) -> Result<(), Refusal> {
    let checked = archive::check(&shared.upstream, &shared.policy, head).await;
    if let Err(refusal) = &checked {
        audit_head(shared, peer, head, Err(refusal));
    }
    checked
}

/// [`audit`] of a request whose head parsed: its canonical path.
fn audit_head(shared: &Shared, peer: &Peer, head: &RequestHead, outcome: Result<(), &Refusal>) {
    audit(
        shared,
        peer,
        &head.method,
        &head.path,
        head.version.as_deref(),
        outcome,
    );
}

/// One audit line and one metric per decision on a mutating request, and
/// per refusal of any request; reads that pass go unrecorded. `path` is
/// canonical when the head parsed.
fn audit(
    shared: &Shared,
    peer: &Peer,
    method: &hyper::Method,
    path: &str,
    api_version: Option<&str>,
    outcome: Result<(), &Refusal>,
) {
    if !crate::policy::is_mutating_method(method) && outcome.is_ok() {
        return;
    }
    let (verdict, rule, reason) = match outcome {
        Ok(()) => ("allow", None, None),
        Err(Refusal::Denied { rule, reason }) => ("deny", Some(*rule), Some(reason.clone())),
        Err(r) => ("deny", Some("request"), Some(r.message())),
    };
    shared.metrics.decision(verdict, rule.unwrap_or("-"));
    shared.audit.record(&crate::audit::Entry {
        time: crate::audit::now(),
        peer: &peer.addr,
        subject: peer.subject.as_deref(),
        method: method.as_str(),
        path,
        api_version,
        decision: verdict,
        rule,
        reason: reason.as_deref(),
        policy: shared.policy.name(),
    });
}
