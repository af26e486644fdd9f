//! What a job's attempts and outcome add to the metrics: attempts and latency per provider,
//! retries and in-doubt resends, SMS segments and spend. Kept apart from `deliver` so that the
//! delivery loop reads as the decisions it makes.

use super::Dispatcher;
use super::deliver::Progress;
use crate::domain::Job;
use crate::metrics::{
    AttemptLabels, ChannelLabels, ProviderLabels, SegmentLabels, SpendLabels, attempt_result,
};
use crate::providers::{Attempted, ProviderError};
use crate::render::Message;

impl Dispatcher {
    /// Counts a call that is not the job's first, and one made while another is in doubt.
    pub(super) fn count_repeat(&self, provider: &str, job: &Job, p: &Progress) {
        let channel = job.channel.as_str();
        if p.attempt > 1 {
            let provider = provider.to_string();
            let labels = ProviderLabels { provider, channel };
            self.metrics.retries.get_or_create(&labels).inc();
        }
        if p.in_doubt {
            let labels = ChannelLabels { channel };
            self.metrics.in_doubt_resends.get_or_create(&labels).inc();
        }
    }

    pub(super) fn observe_attempt(&self, provider: &str, job: &Job, attempted: &Attempted) {
        let result = match &attempted.result {
            Ok(_) => attempt_result::SENT,
            Err(ProviderError::Transient { .. }) => attempt_result::TRANSIENT,
            Err(ProviderError::Permanent { .. }) => attempt_result::PERMANENT,
            Err(ProviderError::RateLimited { .. }) => attempt_result::RATE_LIMITED,
        };
        let channel = job.channel.as_str();
        let provider = provider.to_string();
        self.metrics
            .provider_latency
            .get_or_create(&ProviderLabels {
                provider: provider.clone(),
                channel,
            })
            .observe(attempted.latency.as_secs_f64());
        self.metrics
            .attempts
            .get_or_create(&AttemptLabels {
                provider,
                channel,
                result,
            })
            .inc();
    }

    /// Adds an accepted SMS's segments to `otpd_sms_segments_total`.
    pub(super) fn count_segments(&self, provider: &str, job: &Job, message: &Message) {
        if let Message::Sms { segments, .. } = message {
            let country = super::admit::phone(job).map(|p| p.country());
            self.metrics
                .sms_segments
                .get_or_create(&SegmentLabels {
                    provider: provider.to_string(),
                    country: country.unwrap_or("none").to_string(),
                })
                .inc_by(u64::from(*segments));
        }
    }

    /// Adds the configured price of a sent message to `otpd_spend_total`.
    pub(super) fn count_spend(&self, job: &Job) {
        let country = super::admit::phone(job).map(|p| p.country());
        let price = self.limits.price(job.channel, country);
        if price > 0 {
            self.metrics
                .spend
                .get_or_create(&SpendLabels {
                    channel: job.channel.as_str(),
                    country: country.unwrap_or("none").to_string(),
                })
                .inc_by(price as f64 / 1_000_000.0);
        }
    }
}
