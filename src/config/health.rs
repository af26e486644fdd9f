//! Delivery-health routing, `[delivery.health]`: a provider whose receipts say its messages are
//! not arriving, or arriving late, is moved behind the next provider of its chain for that
//! country (docs/operations.md, "Delivery health").

use super::error::{ConfigError, invalid};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    pub enabled: bool,
    /// The sliding window the score is kept over, and how long a demoted provider must go
    /// without a bad score before it moves one step back.
    pub window_ms: u64,
    /// How often each instance recomputes the scores and reloads the shared standings.
    pub check_interval_ms: u64,
    /// Messages with a known fate a provider needs in a country before it is judged there.
    pub min_samples: u32,
    /// Below this share of messages delivered, the provider is demoted.
    pub min_delivered_ratio: f64,
    /// Above this p95 from send to the `delivered` receipt, the provider is demoted; 0: off.
    pub max_p95_ms: u64,
    /// A message accepted this long ago with no receipt counts as not delivered.
    pub receipt_timeout_ms: u64,
}

impl HealthSettings {
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }

    pub fn receipt_timeout(&self) -> Duration {
        Duration::from_millis(self.receipt_timeout_ms)
    }
}

pub(super) fn validate_health(h: &HealthSettings) -> Result<(), ConfigError> {
    if !h.enabled {
        return Ok(());
    }
    if h.window_ms == 0 {
        return Err(invalid("delivery.health.window_ms", "must be at least 1"));
    }
    if h.check_interval_ms < 10 {
        return Err(invalid(
            "delivery.health.check_interval_ms",
            "must be at least 10",
        ));
    }
    if h.min_samples == 0 {
        return Err(invalid("delivery.health.min_samples", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&h.min_delivered_ratio) {
        return Err(invalid(
            "delivery.health.min_delivered_ratio",
            "must be between 0 and 1",
        ));
    }
    if h.receipt_timeout_ms == 0 || h.receipt_timeout_ms >= h.window_ms {
        return Err(invalid(
            "delivery.health.receipt_timeout_ms",
            "must be at least 1 and shorter than window_ms, or no message would ever time out inside the window",
        ));
    }
    Ok(())
}
