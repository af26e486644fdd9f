//! Series created at zero at start-up. A counter that appears only with its first event has
//! no earlier sample, so `increase()` and `rate()` miss that event, and alerts on a first
//! failure never fire. The label values known at start (channels, provider instances, closed
//! reason sets) are created here; those known only from traffic (countries, rules) are not.

use super::{
    AttemptLabels, ChannelLabels, JobLabels, Metrics, ProviderReasonLabels, ReasonLabels,
    attempt_result, webhook_refusal,
};
use crate::domain::{DeliveryState, FailReason};

/// The terminal states a job's own work ends in (receipts move them later).
const JOB_STATES: [DeliveryState; 6] = [
    DeliveryState::Sent,
    DeliveryState::Failed,
    DeliveryState::Expired,
    DeliveryState::RateLimited,
    DeliveryState::Rejected,
    DeliveryState::Cancelled,
];
/// The provider-wide errors `otpd_provider_unusable_total` counts.
const UNUSABLE: [FailReason; 3] = [
    FailReason::ProviderAuth,
    FailReason::ProviderAccount,
    FailReason::ProviderMisconfigured,
];

impl Metrics {
    /// The series of one channel, and the ones of no channel.
    pub fn start_channel(&self, channel: &'static str) {
        for state in JOB_STATES.map(DeliveryState::as_str) {
            self.jobs
                .get_or_create(&JobLabels { channel, state })
                .inc_by(0);
        }
        let labels = ChannelLabels { channel };
        self.duplicates.get_or_create(&labels).inc_by(0);
        self.fallback_scheduled.get_or_create(&labels).inc_by(0);
        self.in_doubt.get_or_create(&labels).inc_by(0);
        self.in_doubt_resends.get_or_create(&labels).inc_by(0);
        let reason = webhook_refusal::BAD_SIGNATURE;
        self.webhook_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc_by(0);
    }

    /// The series of a provider instance that a chain of `channel` names.
    pub fn start_provider(&self, provider: &str, channel: &'static str) {
        for result in attempt_result::ALL {
            self.attempts
                .get_or_create(&AttemptLabels {
                    provider: provider.to_string(),
                    channel,
                    result,
                })
                .inc_by(0);
        }
        for reason in UNUSABLE.map(FailReason::code) {
            self.provider_unusable
                .get_or_create(&ProviderReasonLabels {
                    provider: provider.to_string(),
                    reason,
                })
                .inc_by(0);
        }
    }
}
