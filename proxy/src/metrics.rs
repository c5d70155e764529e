//! Counters for `/metrics`, updated lock-free on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use hyper::Method;

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a TLS handshake failed, as a metric label and a log reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    NoClientCert,
    UnknownCa,
    Expired,
    BadCert,
    PlainHttp,
    Protocol,
    Timeout,
    Other,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 8] = [
        HandshakeFailure::NoClientCert,
        HandshakeFailure::UnknownCa,
        HandshakeFailure::Expired,
        HandshakeFailure::BadCert,
        HandshakeFailure::PlainHttp,
        HandshakeFailure::Protocol,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::NoClientCert => "no_client_cert",
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::Expired => "expired_cert",
            HandshakeFailure::BadCert => "bad_cert",
            HandshakeFailure::PlainHttp => "plain_http",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            HandshakeFailure::NoClientCert => {
                "the client sent no certificate (set DOCKER_CERT_PATH and DOCKER_TLS_VERIFY=1)"
            }
            HandshakeFailure::UnknownCa => {
                "the client certificate is not signed by this service's CA"
            }
            HandshakeFailure::Expired => "the client certificate has expired or is not yet valid",
            HandshakeFailure::BadCert => "the client certificate was rejected",
            HandshakeFailure::PlainHttp => "the client spoke plain HTTP to the TLS port",
            HandshakeFailure::Protocol => "the client broke the TLS protocol",
            HandshakeFailure::Timeout => "the client did not finish the handshake in time",
            HandshakeFailure::Other => "the handshake failed",
        }
    }
}

/// Process-wide counters. One instance, shared by every listener and task.
#[derive(Default)]
pub struct Metrics {
    pub listeners_bound: AtomicBool,
    open_connections: AtomicU64,
    parked_connections: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    requests: [[AtomicU64; 5]; 6],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    upgrades_total: AtomicU64,
    upgrades_open: AtomicU64,
    handshake_failures: [AtomicU64; 8],
    held_requests: AtomicU64,
    held_now: AtomicU64,
    body_bytes: AtomicU64,
    pings_cached: AtomicU64,
    refused: AtomicU64,
    /// Policy decisions on mutating requests by (decision, rule).
    decisions: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
}

/// Decrements a gauge when dropped, so every exit path of a task counts.
pub struct GaugeGuard<'a>(&'a AtomicU64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// An open client connection, counted until dropped: owned, because an
/// upgraded session outlives the task that accepted it.
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_total.fetch_add(1, Relaxed);
        self.open_connections.fetch_add(1, Relaxed);
        OpenConnection(self.clone())
    }

    /// A connection closed at once: the connection cap was reached.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// An idle connection holding no HTTP state ([`crate::park`]).
    pub fn connection_parked(&self) -> GaugeGuard<'_> {
        self.parked_connections.fetch_add(1, Relaxed);
        GaugeGuard(&self.parked_connections)
    }

    pub fn upgrade_opened(&self) -> GaugeGuard<'_> {
        self.upgrades_total.fetch_add(1, Relaxed);
        self.upgrades_open.fetch_add(1, Relaxed);
        GaugeGuard(&self.upgrades_open)
    }

    pub fn request(&self, method: &Method, status: u16) {
        let m = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let c = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.requests[m][c].fetch_add(1, Relaxed);
    }

    pub fn bytes(&self, inbound: u64, outbound: u64) {
        if inbound > 0 {
            self.bytes_in.fetch_add(inbound, Relaxed);
        }
        if outbound > 0 {
            self.bytes_out.fetch_add(outbound, Relaxed);
        }
    }

    pub fn handshake_failed(&self, why: HandshakeFailure) {
        let i = HandshakeFailure::ALL
            .iter()
            .position(|f| *f == why)
            .unwrap_or(7);
        self.handshake_failures[i].fetch_add(1, Relaxed);
    }

    /// A request waiting for the engine, unless `max` wait already; it stops
    /// counting when dropped.
    pub fn held(&self, max: usize) -> Option<GaugeGuard<'_>> {
        self.held_now
            .fetch_update(Relaxed, Relaxed, |n| (n < max as u64).then_some(n + 1))
            .ok()?;
        self.held_requests.fetch_add(1, Relaxed);
        Some(GaugeGuard(&self.held_now))
    }

    pub fn decision(&self, decision: &'static str, rule: &'static str) {
        if let Ok(mut d) = self.decisions.lock() {
            *d.entry((decision, rule)).or_default() += 1;
        }
    }

    pub fn ping_cached(&self) {
        self.pings_cached.fetch_add(1, Relaxed);
    }

    pub fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// Bytes of decided bodies in memory: `grown` more, or `freed`.
    pub fn body_bytes(&self, grown: u64, freed: u64) {
        self.body_bytes.fetch_add(grown, Relaxed);
        self.body_bytes.fetch_sub(freed, Relaxed);
    }

    /// Requests waiting in the readiness gate now.
    pub fn held_now(&self) -> u64 {
        self.held_now.load(Relaxed)
    }

    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn render_to_string(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }

    /// The proxy's part of the Prometheus text exposition, family by
    /// family in a fixed order.
    ///
    /// Written by hand, not with `prometheus-client` (issue 11 asked):
    /// that crate names a counter's family without `_total` (it panics on a
    /// name that has it, and writes `# TYPE dind_proxy_connections_refused
    /// counter` above `dind_proxy_connections_refused_total`), so every
    /// counter's HELP and TYPE lines would change, and Prometheus reading
    /// `text/plain; version=0.0.4` would see the samples untyped. It would
    /// also give the `dind_proxy_held_requests_total` counter the family
    /// name of the `dind_proxy_held_requests` gauge. The series here are
    /// documented and tested by name; they outweigh a dependency.
    pub fn render(&self, out: &mut String) {
        self.render_connections(out);
        self.render_traffic(out);
        self.render_checks(out);
        self.render_holds_and_answers(out);
    }

    /// Listeners and client connections.
    fn render_connections(&self, out: &mut String) {
        let bound = self.listeners_bound.load(Relaxed) as u64;
        let help = "1 when the public listeners are bound.";
        single(out, "dind_proxy_listeners_bound", help, GAUGE, bound);
        let open = self.open_connections.load(Relaxed);
        single(
            out,
            "dind_proxy_open_connections",
            "Client connections open now.",
            GAUGE,
            open,
        );
        let parked = self.parked_connections.load(Relaxed);
        let help = "Idle client connections parked without HTTP buffers.";
        single(out, "dind_proxy_parked_connections", help, GAUGE, parked);
        let total = self.connections_total.load(Relaxed);
        single(
            out,
            "dind_proxy_connections_total",
            "Client connections accepted.",
            COUNTER,
            total,
        );
        let refused = self.connections_refused.load(Relaxed);
        let help = "Client connections closed at once because DIND_MAX_CONNECTIONS were open.";
        single(
            out,
            "dind_proxy_connections_refused_total",
            help,
            COUNTER,
            refused,
        );
    }

    /// Requests, bytes and upgraded sessions relayed.
    fn render_traffic(&self, out: &mut String) {
        let name = "dind_proxy_requests_total";
        header(
            out,
            name,
            "Requests answered, by method and status class.",
            COUNTER,
        );
        for (m, row) in METHODS.iter().zip(&self.requests) {
            for (c, n) in CLASSES.iter().zip(row) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "{name}{{method=\"{m}\",class=\"{c}\"}} {n}");
                }
            }
        }
        let name = "dind_proxy_bytes_total";
        header(
            out,
            name,
            "Bytes relayed, by direction (in: from clients).",
            COUNTER,
        );
        let _ = writeln!(
            out,
            "{name}{{direction=\"in\"}} {}",
            self.bytes_in.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}{{direction=\"out\"}} {}",
            self.bytes_out.load(Relaxed)
        );
        let started = self.upgrades_total.load(Relaxed);
        let help = "Upgraded sessions (attach, exec, BuildKit) started.";
        single(out, "dind_proxy_upgrades_total", help, COUNTER, started);
        let open = self.upgrades_open.load(Relaxed);
        single(
            out,
            "dind_proxy_upgrades_open",
            "Upgraded sessions open now.",
            GAUGE,
            open,
        );
    }

    /// TLS handshakes that failed, and policy decisions.
    fn render_checks(&self, out: &mut String) {
        let name = "dind_proxy_tls_handshake_failures_total";
        header(out, name, "Failed TLS handshakes, by reason.", COUNTER);
        for (f, n) in HandshakeFailure::ALL.iter().zip(&self.handshake_failures) {
            let (reason, n) = (f.label(), n.load(Relaxed));
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
        }
        let name = "dind_proxy_policy_decisions_total";
        let help = "Policy decisions on mutating requests, by decision and rule.";
        header(out, name, help, COUNTER);
        if let Ok(d) = self.decisions.lock() {
            for ((decision, rule), n) in d.iter() {
                let _ = writeln!(out, "{name}{{decision=\"{decision}\",rule=\"{rule}\"}} {n}");
            }
        }
    }

    /// Requests held in the readiness gate, bodies held for the policy,
    /// and requests the proxy answered itself.
    fn render_holds_and_answers(&self, out: &mut String) {
        let held = self.held_requests.load(Relaxed);
        let help = "Requests held while the engine was not ready.";
        single(out, "dind_proxy_held_requests_total", help, COUNTER, held);
        let now = self.held_now.load(Relaxed);
        let help = "Requests waiting now for the engine to be ready.";
        single(out, "dind_proxy_held_requests", help, GAUGE, now);
        let bytes = self.body_bytes.load(Relaxed);
        let help = "Bytes of request bodies held now for the policy to check.";
        single(out, "dind_proxy_body_bytes", help, GAUGE, bytes);
        let pings = self.pings_cached.load(Relaxed);
        let help = "Unversioned /_ping requests answered from dockerd's last answer.";
        single(out, "dind_proxy_ping_cached_total", help, COUNTER, pings);
        let refused = self.refused.load(Relaxed);
        let help = "Requests the proxy answered itself (not ready, denied, malformed).";
        single(
            out,
            "dind_proxy_refused_requests_total",
            help,
            COUNTER,
            refused,
        );
    }
}

const GAUGE: &str = "gauge";
const COUNTER: &str = "counter";

/// A family's HELP and TYPE lines.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family of one series without labels.
fn single(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_by_method_class_and_reason() {
        let m = Arc::new(Metrics::default());
        m.request(&Method::GET, 200);
        m.request(&Method::GET, 204);
        m.request(&Method::PATCH, 503);
        m.handshake_failed(HandshakeFailure::UnknownCa);
        {
            let _c = m.connection_opened();
            assert_eq!(m.open_connections(), 1);
        }
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("dind_proxy_requests_total{method=\"GET\",class=\"2xx\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("dind_proxy_requests_total{method=\"other\",class=\"5xx\"} 1"),
            "{out}"
        );
        assert!(out.contains("dind_proxy_tls_handshake_failures_total{reason=\"unknown_ca\"} 1"));
        assert!(out.contains("dind_proxy_open_connections 0"));
        assert!(out.contains("dind_proxy_connections_total 1"));
        assert!(out.contains("dind_proxy_connections_refused_total 0"));
    }

    /// The whole exposition, as the README, the integration tests and
    /// dashboards read it: every family's name, HELP, TYPE and labels, in
    /// order. A change here is a change users see.
    #[test]
    fn the_exposition_keeps_every_name_type_help_and_label() {
        let m = Arc::new(Metrics::default());
        m.request(&Method::GET, 200);
        m.handshake_failed(HandshakeFailure::UnknownCa);
        m.decision("deny", "privileged");
        m.bytes(3, 4);
        let mut lines = vec![
            "# HELP dind_proxy_listeners_bound 1 when the public listeners are bound.",
            "# TYPE dind_proxy_listeners_bound gauge",
            "dind_proxy_listeners_bound 0",
            "# HELP dind_proxy_open_connections Client connections open now.",
            "# TYPE dind_proxy_open_connections gauge",
            "dind_proxy_open_connections 0",
            "# HELP dind_proxy_parked_connections Idle client connections parked without HTTP buffers.",
            "# TYPE dind_proxy_parked_connections gauge",
            "dind_proxy_parked_connections 0",
            "# HELP dind_proxy_connections_total Client connections accepted.",
            "# TYPE dind_proxy_connections_total counter",
            "dind_proxy_connections_total 0",
            "# HELP dind_proxy_connections_refused_total Client connections closed at once because DIND_MAX_CONNECTIONS were open.",
            "# TYPE dind_proxy_connections_refused_total counter",
            "dind_proxy_connections_refused_total 0",
            "# HELP dind_proxy_requests_total Requests answered, by method and status class.",
            "# TYPE dind_proxy_requests_total counter",
            "dind_proxy_requests_total{method=\"GET\",class=\"2xx\"} 1",
            "# HELP dind_proxy_bytes_total Bytes relayed, by direction (in: from clients).",
            "# TYPE dind_proxy_bytes_total counter",
            "dind_proxy_bytes_total{direction=\"in\"} 3",
            "dind_proxy_bytes_total{direction=\"out\"} 4",
            "# HELP dind_proxy_upgrades_total Upgraded sessions (attach, exec, BuildKit) started.",
            "# TYPE dind_proxy_upgrades_total counter",
            "dind_proxy_upgrades_total 0",
            "# HELP dind_proxy_upgrades_open Upgraded sessions open now.",
            "# TYPE dind_proxy_upgrades_open gauge",
            "dind_proxy_upgrades_open 0",
            "# HELP dind_proxy_tls_handshake_failures_total Failed TLS handshakes, by reason.",
            "# TYPE dind_proxy_tls_handshake_failures_total counter",
        ];
        let reasons = [
            ("no_client_cert", 0),
            ("unknown_ca", 1),
            ("expired_cert", 0),
            ("bad_cert", 0),
            ("plain_http", 0),
            ("protocol", 0),
            ("timeout", 0),
            ("other", 0),
        ];
        let reasons: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("dind_proxy_tls_handshake_failures_total{{reason=\"{r}\"}} {n}"))
            .collect();
        lines.extend(reasons.iter().map(String::as_str));
        lines.extend([
            "# HELP dind_proxy_policy_decisions_total Policy decisions on mutating requests, by decision and rule.",
            "# TYPE dind_proxy_policy_decisions_total counter",
            "dind_proxy_policy_decisions_total{decision=\"deny\",rule=\"privileged\"} 1",
            "# HELP dind_proxy_held_requests_total Requests held while the engine was not ready.",
            "# TYPE dind_proxy_held_requests_total counter",
            "dind_proxy_held_requests_total 0",
            "# HELP dind_proxy_held_requests Requests waiting now for the engine to be ready.",
            "# TYPE dind_proxy_held_requests gauge",
            "dind_proxy_held_requests 0",
            "# HELP dind_proxy_body_bytes Bytes of request bodies held now for the policy to check.",
            "# TYPE dind_proxy_body_bytes gauge",
            "dind_proxy_body_bytes 0",
            "# HELP dind_proxy_ping_cached_total Unversioned /_ping requests answered from dockerd's last answer.",
            "# TYPE dind_proxy_ping_cached_total counter",
            "dind_proxy_ping_cached_total 0",
            "# HELP dind_proxy_refused_requests_total Requests the proxy answered itself (not ready, denied, malformed).",
            "# TYPE dind_proxy_refused_requests_total counter",
            "dind_proxy_refused_requests_total 0",
        ]);
        assert_eq!(m.render_to_string(), lines.join("\n") + "\n");
    }

    #[test]
    fn held_requests_stop_at_the_cap_and_free_their_place() {
        let m = Metrics::default();
        let first = m.held(2).unwrap();
        let _second = m.held(2).unwrap();
        assert!(m.held(2).is_none(), "a third over a cap of two");
        assert_eq!(m.held_now(), 2);
        drop(first);
        assert!(m.held(2).is_some());
        let out = m.render_to_string();
        assert!(
            out.contains("dind_proxy_held_requests_total 3"),
            "refusals are not holds: {out}"
        );
    }
}
