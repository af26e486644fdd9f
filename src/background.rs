//! Background work beside the jobs: conversion tracking (flagging or blocking number ranges
//! whose codes are sent but not verified, the mark of SMS pumping) and limiter housekeeping.
//! Every instance runs both; they read and write only shared state, so running them
//! several times over is harmless. The audit chain's sealer and purges run in
//! [`crate::audit::run`], receipts' housekeeping in [`crate::receipts`].

use crate::config::{ConversionMode, ConversionSettings};
use crate::events::{PrefixFlagged, Publisher};
use crate::limits::Limits;
use crate::metrics::{Metrics, ModeLabels};
use crate::store::{Conversion, Store};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the background tasks work on; the limits are the dispatcher's own, shared, so that a
/// block set here applies to the next job.
pub struct Background {
    pub store: Store,
    pub limits: Arc<Limits>,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub conversion: ConversionSettings,
}

/// Whether a range's conversion is below the threshold. Pure.
pub fn is_low(c: &Conversion, threshold: f64) -> bool {
    c.sent > 0 && (c.verified as f64 / c.sent as f64) < threshold
}

impl Background {
    /// Checks conversion every `check_interval_secs` until shutdown.
    pub async fn watch_conversion(&self, shutdown: CancellationToken) {
        if self.conversion.mode == ConversionMode::Off {
            return;
        }
        let mut every =
            tokio::time::interval(Duration::from_secs(self.conversion.check_interval_secs));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    if let Err(e) = self.check_conversion().await {
                        tracing::warn!(error = %e, "conversion check failed; trying again at the next interval");
                    }
                }
            }
        }
    }

    /// One pass: flags new low-conversion ranges, announces them, and refreshes the blocks.
    pub async fn check_conversion(&self) -> Result<(), crate::store::StoreError> {
        let c = &self.conversion;
        let mode = match c.mode {
            ConversionMode::Enforce => "enforce",
            _ => "shadow",
        };
        let until = Utc::now() + TimeDelta::seconds(c.block_secs.min(i64::MAX as u64) as i64);
        let mut flagged = Vec::new();
        for range in self
            .store
            .conversion(c.window_secs, c.grace_secs, c.min_sent)
            .await?
        {
            if is_low(&range, c.threshold) && self.store.flag_prefix(&range, mode, until).await? {
                flagged.push(range);
            }
        }
        // Blocks take effect before they are announced, so that whoever acts on the alert
        // finds the range already blocked.
        if c.mode == ConversionMode::Enforce {
            self.limits
                .set_blocked(self.store.blocked_prefixes().await?);
        }
        for range in flagged {
            self.announce(&range, mode, until).await;
        }
        Ok(())
    }

    async fn announce(&self, range: &Conversion, mode: &'static str, until: DateTime<Utc>) {
        let conversion = range.verified as f64 / range.sent as f64;
        tracing::warn!(prefix = %range.prefix, country = ?range.country, sent = range.sent, verified = range.verified, conversion, mode, "number range flagged for low conversion (possible SMS pumping)");
        self.metrics
            .prefixes_flagged
            .get_or_create(&ModeLabels { mode })
            .inc();
        let alert = PrefixFlagged {
            version: 1,
            event: "prefix_flagged",
            prefix: format!("+{}", range.prefix),
            country: range.country.as_deref(),
            mode,
            sent: range.sent,
            verified: range.verified,
            conversion,
            until,
            at: Utc::now(),
        };
        if let Err(e) = self.publisher.publish_alert(alert.event, &alert).await {
            tracing::warn!(error = %e, "could not publish the prefix_flagged alert");
        }
    }

    /// Forgets expired refusals in process and deletes counters that hold nothing back.
    pub async fn housekeeping(&self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    self.limits.shrink();
                    if let Err(e) = self.store.prune_counters().await {
                        tracing::debug!(error = %e, "pruning limit counters failed; trying again later");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(sent: i64, verified: i64) -> Conversion {
        Conversion {
            prefix: "4477009".into(),
            country: Some("GB".into()),
            sent,
            verified,
        }
    }

    #[test]
    fn a_range_is_low_below_the_threshold_only() {
        assert!(is_low(&range(100, 5), 0.2));
        assert!(!is_low(&range(100, 20), 0.2));
        assert!(!is_low(&range(0, 0), 0.2));
    }
}
