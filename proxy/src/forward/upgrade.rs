//! An upgraded (hijacked) session: `attach`, `exec`, BuildKit's `/session`,
//! relayed both ways once dockerd has switched protocols.

use std::sync::Arc;

use hyper_util::rt::TokioIo;

use super::Client;
use crate::metrics::Metrics;

/// Buffer per direction for upgraded sessions; large enough that a 1 GiB
/// `docker cp` is not syscall-bound.
const SPLICE_BUFFER: usize = 64 * 1024;

/// Relays an upgraded session both ways. When one side shuts its write
/// half, the other side's write half is shut and the reverse direction goes
/// on until it ends too: `echo hi | docker run -i img cat` prints `hi`.
pub(super) async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    metrics: Arc<Metrics>,
    // Keeps the connection's place under the cap while the session lives.
    _owner: Arc<Client>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let _open = metrics.upgrade_opened();
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await
    {
        Ok((up, down)) => {
            tracing::debug!(bytes_in = up, bytes_out = down, "upgraded session ended")
        }
        Err(e) => tracing::debug!(error = %e, "upgraded session broke"),
    }
}
