//! The background scrubber: every `interval`, one pass over the whole store at a
//! bounded read rate ([`kura_store::Store::scrub`]) re-reads each object and checks
//! its SHA-256. Corrupt objects are quarantined (and, in a mesh, fetched again from
//! a peer by the next repair). This is what covers objects that GET streams without
//! hashing (`KURA_VERIFY_READS_MAX_BYTES`) and partial range reads.

use std::sync::Arc;
use std::time::Duration;

use crate::app::AppState;

/// Starts the scrub loop: sleep `interval`, one pass at `bytes_per_sec`, repeat.
/// The task runs until it is aborted (shutdown) or the store is closed.
pub fn spawn(
    state: Arc<AppState>,
    bytes_per_sec: u64,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            match pass(&state, bytes_per_sec).await {
                Ok(()) => {}
                Err(kura_store::Error::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "scrub pass failed; retrying next interval"),
            }
        }
    })
}

/// One scrub pass, recorded in the metrics and the log.
pub async fn pass(state: &AppState, bytes_per_sec: u64) -> Result<(), kura_store::Error> {
    let started = std::time::Instant::now();
    let report = state.store.scrub(bytes_per_sec).await?;
    let m = &state.metrics;
    m.scrub_passes.inc();
    m.scrub_bytes.inc_by(report.bytes);
    m.scrub_corrupt.inc_by(report.corrupt);
    if report.corrupt > 0 {
        tracing::warn!(
            objects = report.objects,
            bytes = report.bytes,
            corrupt = report.corrupt,
            "scrub pass quarantined corrupt objects"
        );
    } else {
        tracing::info!(
            objects = report.objects,
            bytes = report.bytes,
            secs = started.elapsed().as_secs(),
            "scrub pass clean"
        );
    }
    Ok(())
}
