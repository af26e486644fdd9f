//! How a challenge ended: one record that the terminal commit writes, the audit trail keeps,
//! a duplicate reads back, and the status event carries.

use super::{DeliveryState, FailReason};
use chrono::{DateTime, Utc};
use std::borrow::Cow;

/// A challenge's terminal state with the attempt that led to it (if any). Borrowed while a
/// job builds it, owned when read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    pub state: DeliveryState,
    /// Provider attempts made (0: ended before any call).
    pub attempt: i32,
    pub provider: Option<Cow<'a, str>>,
    pub provider_message_id: Option<Cow<'a, str>>,
    /// The wire code of the reason: a [`FailReason`]'s for a job otpd ended, or the rejection
    /// code a `rejected` row keeps.
    pub reason: Option<Cow<'a, str>>,
    pub detail: Option<Cow<'a, str>>,
    /// The provider's HTTP status and the call's latency, for the audit trail.
    pub response_status: Option<u16>,
    pub latency_ms: Option<u64>,
    /// Some provider call's outcome is unknown: the vendor may have the message.
    pub in_doubt: bool,
    /// For `rate_limited`: the rule that refused the job, and when it would have been allowed.
    pub rule: Option<Cow<'a, str>>,
    pub retry_at: Option<DateTime<Utc>>,
}

impl<'a> Outcome<'a> {
    /// An outcome with only a state and an attempt count.
    pub fn new(state: DeliveryState, attempt: i32) -> Outcome<'a> {
        Outcome {
            state,
            attempt,
            provider: None,
            provider_message_id: None,
            reason: None,
            detail: None,
            response_status: None,
            latency_ms: None,
            in_doubt: false,
            rule: None,
            retry_at: None,
        }
    }

    /// An end with no provider call behind it: a reason and its detail.
    pub fn ended(
        state: DeliveryState,
        attempt: i32,
        reason: FailReason,
        detail: impl Into<Cow<'a, str>>,
    ) -> Outcome<'a> {
        Outcome {
            reason: Some(Cow::Borrowed(reason.code())),
            detail: Some(detail.into()),
            ..Outcome::new(state, attempt)
        }
    }

    pub fn set_reason(&mut self, reason: FailReason) {
        self.reason = Some(Cow::Borrowed(reason.code()));
    }
}
