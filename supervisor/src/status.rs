//! What `/status` and the start log report beyond the live state: the
//! policy and its lock, the endpoints and the certificates.

use crate::certs;
use crate::config::Config;

/// What `/status` adds to the live state: the policy and its lock,
/// endpoints and certificates.
pub fn extra(
    config: &Config,
    endpoints: &[proxy::Endpoint],
    certs: Option<&certs::Report>,
) -> serde_json::Value {
    let cert = |c: &certs::CertInfo| {
        serde_json::json!({
            "path": c.path,
            "sha256": c.sha256_fingerprint,
            "not_after": rfc3339(c.not_after),
        })
    };
    serde_json::json!({
        "policy": config.proxy.as_ref().map(|p| serde_json::json!({
            "name": p.policy.name(),
            "locked": config.locked_by.is_some(),
            "lock_file": config.locked_by,
        })),
        "endpoints": endpoints.iter().map(|e| serde_json::json!({"url": e.url(), "tls": e.is_tls()})).collect::<Vec<_>>(),
        "certificates": certs.map(|r| serde_json::json!({"ca": cert(&r.ca_cert), "server": cert(&r.server_cert)})),
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

pub fn log_certs(spec: &certs::CertSpec, r: &certs::Report) {
    tracing::info!(
        dir = %spec.dir.display(),
        key_type = %spec.key_type,
        elapsed_ms = (r.elapsed.as_secs_f64() * 1e4).round() / 10.0,
        ca = %r.ca,
        server = %r.server,
        client = %r.client,
        sans = %spec.sans.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        server_not_after = %rfc3339(r.server_cert.not_after),
        server_sha256 = %r.server_cert.sha256_fingerprint,
        "certificates ready"
    );
}
