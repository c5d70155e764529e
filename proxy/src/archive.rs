//! `docker cp` on a container that has mounts, refused under `ci-safe`
//! (rule `copy_with_mounts`).
//!
//! For every archive request (`GET`, `HEAD`, `PUT /containers/{id}/archive`
//! and the old `POST /containers/{id}/copy`) dockerd 20.10 mounts the
//! container's volumes and binds onto its root filesystem *in dockerd's own
//! mount namespace*, at destinations it resolved a moment earlier. A job
//! whose container swaps a directory on that path for a symlink in between
//! makes dockerd mount job-controlled files anywhere in the service (over
//! the `runc` that dockerd runs, say): root in the service. Pins do not
//! help, since the race is on the destination. A container without mounts
//! gives dockerd nothing to mount, so `docker cp` keeps working for it,
//! which covers the usual `docker create` + `docker cp` of build output.

use std::path::Path;
use std::time::Duration;

use crate::head::RequestHead;
use crate::policy::{Policy, Rule};
use crate::respond::Refusal;
use crate::upstream::{self, UpstreamError};

/// The container an archive request names, if it is one.
pub fn container_of(head: &RequestHead) -> Option<&str> {
    let rest = head.path.strip_prefix("/containers/")?;
    let (id, action) = rest.split_once('/')?;
    (matches!(action, "archive" | "copy") && !id.is_empty()).then_some(id)
}

/// Refuses an archive request on a container that has mounts, when the
/// policy denies `copy_with_mounts`. Fails closed when dockerd cannot say.
pub async fn check(
    upstream_socket: &Path,
    policy: &Policy,
    head: &RequestHead,
) -> Result<(), Refusal> {
    if !policy.denies(Rule::CopyWithMounts) {
        return Ok(());
    }
    let Some(id) = container_of(head) else {
        return Ok(());
    };
    let inspect = format!("/containers/{id}/json");
    let container =
        match upstream::get_json(upstream_socket, &inspect, Duration::from_secs(10)).await {
            Ok(c) => c,
            // No such container: dockerd's own 404 says it best.
            Err(UpstreamError::Status { status: 404, .. }) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot inspect the container of a docker cp");
                return Err(Refusal::Upstream);
            }
        };
    let mounts = container
        .get("Mounts")
        .and_then(|m| m.as_array())
        .map_or(0, Vec::len);
    if mounts == 0 {
        return Ok(());
    }
    Err(Refusal::Denied {
        rule: Rule::CopyWithMounts.name(),
        reason: format!(
            "policy {}: docker cp is not allowed on a container with mounts ({mounts}): this engine mounts them in the \
             service where a container can redirect them; copy through the bind or volume instead (Mounts)",
            policy.name()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(path: &str) -> RequestHead {
        RequestHead {
            method: hyper::Method::HEAD,
            version: Some("1.41".into()),
            path: path.into(),
            query: Some("path=/".into()),
            upgrade: None,
        }
    }

    #[test]
    fn archive_and_copy_routes_name_their_container() {
        assert_eq!(container_of(&head("/containers/abc/archive")), Some("abc"));
        assert_eq!(
            container_of(&head("/containers/my-job/copy")),
            Some("my-job")
        );
        for other in [
            "/containers/abc/json",
            "/containers/abc/archive/x",
            "/containers//archive",
            "/images/abc/archive",
        ] {
            assert_eq!(container_of(&head(other)), None, "{other}");
        }
    }
}
