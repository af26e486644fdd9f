//! The hash-chained audit trail and retention.
//!
//! [`chain`] is the pure hashing; [`Trail`] the sealer, verification and purges over the
//! store's database; this module runs them on a schedule and parses the command line's
//! durations. The store writes events; only this module reads them back as a chain.

pub mod chain;
mod trail;

pub use trail::{PurgeTrigger, Purged, SEAL_PATIENCE, Trail, Verification};

use crate::config::AuditSettings;
use crate::store::Store;
use chrono::Utc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Seals new events every `seal_interval_ms` and, with a retention set, purges every
/// `purge_interval_secs`, until shutdown; then seals once more so a clean stop leaves nothing
/// unsealed. Store errors are logged and retried at the next tick: an outage must not stop
/// the daemon, and nothing is lost by sealing later.
pub async fn run(store: Store, settings: AuditSettings, shutdown: CancellationToken) {
    let trail = Trail::new(&store);
    let mut seal = tokio::time::interval(Duration::from_millis(settings.seal_interval_ms));
    let mut purge = tokio::time::interval(Duration::from_secs(settings.purge_interval_secs));
    seal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = seal.tick() => {
                if let Err(e) = trail.seal().await {
                    tracing::warn!(error = %e, "sealing the audit chain failed; retrying");
                }
            }
            _ = purge.tick(), if settings.retention_days > 0 => {
                scheduled_purge(&trail, settings.retention_days).await;
            }
        }
    }
    // Other instances' transactions may hold the horizon back; a stop waits only briefly,
    // and whatever is left is sealed by the next sealer to run.
    if let Err(e) = trail.seal_all(Duration::from_secs(1)).await {
        tracing::warn!(error = %e, "sealing the audit chain at shutdown failed");
    }
}

async fn scheduled_purge(trail: &Trail, days: u32) {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
    match trail.purge(cutoff, PurgeTrigger::Scheduled).await {
        Ok(p) if p.events > 0 || p.deliveries > 0 => tracing::info!(
            events = p.events,
            deliveries = p.deliveries,
            through_seq = p.through_seq,
            %cutoff,
            "purged expired audit records"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "scheduled purge failed; retrying later"),
    }
}
