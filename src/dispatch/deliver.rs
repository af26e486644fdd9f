//! The attempt loop: provider calls with retries, bounded by the code's expiry.

use super::{Dispatcher, Interrupted, LEASE_SLACK, Outcome};
use crate::domain::{DeliveryState, Job};
use crate::metrics::{AttemptLabels, JobLabels, ProviderLabels};
use crate::providers::{Provider, ProviderError, Sent};
use crate::render::Message;
use crate::retry::Decision;
use crate::store::Finish;
use chrono::Utc;
use std::time::Instant;

/// A terminal transition with no provider attempt behind it.
pub(super) fn terminal<'a>(
    state: DeliveryState,
    attempt: i32,
    reason: &'a str,
    detail: &'a str,
) -> Finish<'a> {
    Finish {
        state,
        attempt,
        provider: None,
        provider_message_id: None,
        reason: Some(reason),
        detail: Some(detail),
        response_status: None,
        latency_ms: None,
        in_doubt: false,
    }
}

impl Dispatcher {
    /// Calls the channel's provider until it accepts, refuses for good, or the code's time or
    /// the attempt budget runs out. `attempt` is the number of attempts already made.
    pub(super) async fn deliver(
        &self,
        job: &Job,
        message: &Message,
        mut attempt: i32,
        in_doubt: bool,
    ) -> Result<Outcome, Interrupted> {
        let provider = self.providers.for_channel(job.channel);
        loop {
            // Checked before every attempt, including the first after a takeover.
            let stop = if !self.retry.may_start(Utc::now(), job.expires_at) {
                Some((
                    DeliveryState::Expired,
                    "expired",
                    "the code expired before it could be delivered",
                ))
            } else if attempt as u32 >= self.retry.max_attempts {
                // Only a takeover gets here: the previous owner used every attempt.
                Some((
                    DeliveryState::Failed,
                    "provider_transient",
                    "every allowed attempt was made",
                ))
            } else {
                None
            };
            if let Some((state, reason, detail)) = stop {
                let mut f = terminal(state, attempt, reason, detail);
                f.in_doubt = in_doubt;
                return self.conclude(job, f).await;
            }
            attempt += 1;
            let id = job.challenge_id.as_str();
            self.persist(|| {
                self.store.start_attempt(
                    id,
                    attempt,
                    provider.name(),
                    self.attempt_timeout + LEASE_SLACK,
                )
            })
            .await?;
            let started = Instant::now();
            let result = self.call(provider, job, message).await;
            let latency_ms = started.elapsed().as_millis() as u64;
            self.observe_attempt(provider, job, &result, started);
            let failure = match result {
                Ok(sent) => {
                    return self
                        .conclude(
                            job,
                            sent_finish(provider, attempt, &sent, latency_ms, in_doubt),
                        )
                        .await;
                }
                Err(e) => e,
            };
            let mut f = failure_finish(provider, attempt, &failure, latency_ms, in_doubt);
            let detail = failure.to_string();
            f.detail = Some(&detail);
            let retry_after = match &failure {
                ProviderError::Permanent { .. } => {
                    tracing::warn!(attempt, error = %failure, "provider refused the message permanently");
                    return self.conclude(job, f).await;
                }
                ProviderError::RateLimited { retry_after, .. } => *retry_after,
                ProviderError::Transient { .. } => None,
            };
            match self.retry.decide(
                attempt as u32,
                retry_after,
                rand::random(),
                Utc::now(),
                job.expires_at,
            ) {
                Decision::RetryAfter(wait) => {
                    tracing::warn!(attempt, retry_in_ms = wait.as_millis() as u64, error = %failure, "attempt failed; will retry");
                    let lease = wait + self.attempt_timeout + LEASE_SLACK;
                    self.persist(|| self.store.record_failed_attempt(id, &f, lease))
                        .await?;
                    self.sleep(wait).await?;
                }
                Decision::Exhausted => {
                    f.state = DeliveryState::Failed;
                    return self.conclude(job, f).await;
                }
                Decision::WouldExpire => {
                    f.state = DeliveryState::Expired;
                    f.reason = Some("expired");
                    return self.conclude(job, f).await;
                }
            }
        }
    }

    async fn call(
        &self,
        provider: &Provider,
        job: &Job,
        message: &Message,
    ) -> Result<Sent, ProviderError> {
        match tokio::time::timeout(self.attempt_timeout, provider.send(&job.to, message)).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Transient {
                status: None,
                detail: format!("no answer within {} ms", self.attempt_timeout.as_millis()),
            }),
        }
    }

    fn observe_attempt(
        &self,
        provider: &Provider,
        job: &Job,
        result: &Result<Sent, ProviderError>,
        started: Instant,
    ) {
        let result_label = match result {
            Ok(_) => "sent",
            Err(ProviderError::Transient { .. }) => "transient",
            Err(ProviderError::Permanent { .. }) => "permanent",
            Err(ProviderError::RateLimited { .. }) => "rate_limited",
        };
        let (p, channel) = (provider.name(), job.channel.as_str());
        self.metrics
            .attempts
            .get_or_create(&AttemptLabels {
                provider: p,
                channel,
                result: result_label,
            })
            .inc();
        self.metrics
            .provider_latency
            .get_or_create(&ProviderLabels {
                provider: p,
                channel,
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Commits a terminal state, then publishes its event, then notes the event as published.
    pub(super) async fn conclude(&self, job: &Job, f: Finish<'_>) -> Result<Outcome, Interrupted> {
        let id = job.challenge_id.as_str();
        self.persist(|| self.store.finish(id, &f)).await?;
        self.metrics
            .jobs
            .get_or_create(&JobLabels {
                channel: job.channel.as_str(),
                state: f.state.as_str(),
            })
            .inc();
        let mut event = self.event(job, f.state);
        event.attempt = f.attempt;
        event.provider = f.provider;
        event.provider_message_id = f.provider_message_id;
        event.reason = f.reason;
        event.detail = f.detail;
        event.in_doubt = f.in_doubt;
        self.publish(&event).await?;
        self.persist(|| self.store.mark_event_published(id)).await?;
        Ok(Outcome::Finished(f.state))
    }
}

fn sent_finish<'a>(
    provider: &'a Provider,
    attempt: i32,
    sent: &'a Sent,
    latency_ms: u64,
    in_doubt: bool,
) -> Finish<'a> {
    Finish {
        state: DeliveryState::Sent,
        attempt,
        provider: Some(provider.name()),
        provider_message_id: sent.provider_message_id.as_deref(),
        reason: None,
        detail: None,
        response_status: sent.status,
        latency_ms: Some(latency_ms),
        in_doubt,
    }
}

/// The record of a failed attempt; `state` is Failed until the retry decision says otherwise.
fn failure_finish<'a>(
    provider: &'a Provider,
    attempt: i32,
    e: &ProviderError,
    latency_ms: u64,
    in_doubt: bool,
) -> Finish<'a> {
    let reason = match e {
        ProviderError::Permanent { reason, .. } => reason,
        ProviderError::RateLimited { .. } => "provider_rate_limited",
        ProviderError::Transient { .. } => "provider_transient",
    };
    Finish {
        state: DeliveryState::Failed,
        attempt,
        provider: Some(provider.name()),
        provider_message_id: None,
        reason: Some(reason),
        detail: None,
        response_status: e.status(),
        latency_ms: Some(latency_ms),
        in_doubt,
    }
}
