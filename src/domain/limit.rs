//! What the limits and the store both speak of: a counter's stored state and a refusal. The
//! limits decide with them and the store keeps them, so they live here, below both.

use super::{DeliveryState, FailReason};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// One rule's state for one key, as stored in `limit_counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    /// GCRA's theoretical arrival time: when the bucket is full again.
    pub tat: Option<DateTime<Utc>>,
    pub hour_start: Option<DateTime<Utc>>,
    pub hour_used: i64,
    pub day_start: Option<DateTime<Utc>>,
    pub day_used: i64,
}

/// A job refused before any provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub state: DeliveryState,
    pub reason: FailReason,
    pub rule: Option<String>,
    pub retry_after: Option<Duration>,
    pub detail: String,
}
