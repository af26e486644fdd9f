//! Series created at zero at start-up. A counter that appears only with its first event has
//! no earlier sample, so `increase()` and `rate()` miss that event, and alerts on a first
//! failure never fire. The label values known at start (channels, provider instances, closed
//! reason sets) are created here; those known only from traffic (countries, rules) are not.

use super::{AttemptLabels, ChannelLabels, JobLabels, Metrics, ProviderReasonLabels, ReasonLabels};

/// The terminal states a job's own work ends in (receipts move them later).
const JOB_STATES: [&str; 5] = ["sent", "failed", "expired", "rate_limited", "rejected"];
/// The results of a provider call, as `otpd_provider_attempts_total` labels them.
const RESULTS: [&str; 4] = ["sent", "transient", "permanent", "rate_limited"];
/// The provider-wide errors `otpd_provider_unusable_total` counts.
const UNUSABLE: [&str; 3] = [
    "provider_auth",
    "provider_account",
    "provider_misconfigured",
];
/// Why a provider callback is refused.
const WEBHOOK_REFUSALS: [&str; 1] = ["bad_signature"];

impl Metrics {
    /// The series of one channel, and the ones of no channel.
    pub fn start_channel(&self, channel: &'static str) {
        for state in JOB_STATES {
            self.jobs
                .get_or_create(&JobLabels { channel, state })
                .inc_by(0);
        }
        let labels = ChannelLabels { channel };
        self.duplicates.get_or_create(&labels).inc_by(0);
        self.in_doubt.get_or_create(&labels).inc_by(0);
        self.in_doubt_resends.get_or_create(&labels).inc_by(0);
        for reason in WEBHOOK_REFUSALS {
            self.webhook_rejected
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
    }

    /// The series of a provider instance that a chain of `channel` names.
    pub fn start_provider(&self, provider: &str, channel: &'static str) {
        for result in RESULTS {
            self.attempts
                .get_or_create(&AttemptLabels {
                    provider: provider.to_string(),
                    channel,
                    result,
                })
                .inc_by(0);
        }
        for reason in UNUSABLE {
            self.provider_unusable
                .get_or_create(&ProviderReasonLabels {
                    provider: provider.to_string(),
                    reason,
                })
                .inc_by(0);
        }
    }
}
