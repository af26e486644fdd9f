//! Dispatch: one job from bytes to a committed outcome. Intake hands it a body and gets back a
//! [`Disposition`] saying what to do with the message; dispatch never sees delivery tags.
//!
//! Order of work: parse → render → claim the challenge in PostgreSQL (deduplication) → expiry
//! → limits → provider attempts with retries → commit the terminal state → publish its event.
//! Every step that must survive a crash is committed before the next begins, and intake acks
//! only after this returns [`Disposition::Ack`].

mod deliver;

use crate::config::{MessageSettings, Settings};
use crate::domain::{DeliveryState, Job, Rejection};
use crate::events::{Publisher, StatusEvent};
use crate::limits::Limiter;
use crate::metrics::{ChannelLabels, Metrics, ReasonLabels};
use crate::providers::Providers;
use crate::render::{self, Message};
use crate::retry::RetryPolicy;
use crate::store::{Claim, NewDelivery, Recorded, Rejected, Store, StoreError};
use chrono::Utc;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What intake should do with the message once dispatch is done with it.
#[derive(Debug)]
pub enum Disposition {
    /// The outcome is committed (or the job was a duplicate): ack.
    Ack(Outcome),
    /// The job is invalid: copy it to the dead-letter exchange with this reason, then ack.
    DeadLetter(Rejection),
    /// Shutdown or an outage interrupted the work: leave the message unacked so the broker
    /// redelivers it. Nothing half-done was recorded as done.
    Abandon,
}

/// How a job ended, for metrics, logs and anyone watching (the tests do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This job took the challenge to this terminal state.
    Finished(DeliveryState),
    /// The challenge had already finished in this state; nothing was sent.
    Duplicate(DeliveryState),
}

/// The result of processing one message: the challenge it named (when readable) and what to
/// do with the message.
#[derive(Debug)]
pub struct Processed {
    pub challenge_id: Option<String>,
    pub disposition: Disposition,
}

/// The work was interrupted by shutdown or by a broker outage; the job must be left unacked.
#[derive(Debug)]
pub struct Interrupted;

/// Extra lease time beyond an attempt's timeout, for the commits around it.
const LEASE_SLACK: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    store: Store,
    publisher: Arc<Publisher>,
    providers: Providers,
    limiter: Limiter,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    app_name: String,
    messages: MessageSettings,
    attempt_timeout: Duration,
    shutdown: CancellationToken,
}

pub struct DispatcherParts {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub providers: Providers,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(settings: Settings, parts: DispatcherParts) -> Dispatcher {
        Dispatcher {
            store: parts.store,
            publisher: parts.publisher,
            providers: parts.providers,
            limiter: Limiter::new(&settings.limits),
            retry: RetryPolicy::from_settings(&settings.retry),
            metrics: parts.metrics,
            app_name: settings.app.name,
            messages: settings.messages,
            attempt_timeout: Duration::from_millis(settings.retry.attempt_timeout_ms),
            shutdown: parts.shutdown,
        }
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Processes one message body. Never panics on input; every path ends in a disposition.
    pub async fn process(&self, body: &[u8]) -> Processed {
        let job = match Job::parse(body) {
            Ok(job) => job,
            Err(rejection) => {
                let challenge_id = rejection.challenge_id.as_ref().map(|c| c.to_string());
                let disposition = self.reject(rejection, &BTreeMap::new()).await;
                return Processed {
                    challenge_id,
                    disposition,
                };
            }
        };
        let challenge_id = Some(job.challenge_id.to_string());
        let span = tracing::info_span!("job", challenge_id = %job.challenge_id, channel = %job.channel, to = %job.to.masked());
        let disposition = async {
            let message = match render::render(&job, &self.app_name, &self.messages, Utc::now()) {
                Ok(m) => m,
                Err(e) => {
                    let r = Rejection {
                        reason: crate::domain::RejectReason::UnknownTemplate,
                        detail: e.to_string(),
                        challenge_id: Some(job.challenge_id.clone()),
                    };
                    return self.reject(r, &job.metadata).await;
                }
            };
            match self.process_valid(&job, &message).await {
                Ok(outcome) => {
                    tracing::info!(?outcome, "job done");
                    Disposition::Ack(outcome)
                }
                Err(Interrupted) => {
                    // Best effort: let the redelivered job be taken over without waiting out the lease.
                    let _ = self.store.release(job.challenge_id.as_str()).await;
                    tracing::warn!("job interrupted; left unacked for redelivery");
                    Disposition::Abandon
                }
            }
        }
        .instrument(span)
        .await;
        Processed {
            challenge_id,
            disposition,
        }
    }

    async fn reject(&self, r: Rejection, metadata: &BTreeMap<String, String>) -> Disposition {
        tracing::warn!(reason = r.reason.code(), detail = %r.detail, challenge_id = ?r.challenge_id.as_ref().map(|c| c.as_str()), "job rejected");
        self.metrics
            .rejected
            .get_or_create(&ReasonLabels {
                reason: r.reason.code(),
            })
            .inc();
        if let Some(id) = &r.challenge_id {
            let rec = Rejected {
                challenge_id: id,
                reason: r.reason.code(),
                detail: &r.detail,
            };
            if self
                .persist(|| self.store.record_rejection(&rec))
                .await
                .is_err()
            {
                return Disposition::Abandon;
            }
            let mut event = StatusEvent::new(id, DeliveryState::Rejected, metadata);
            event.reason = Some(r.reason.code());
            event.detail = Some(&r.detail);
            if let Err(e) = self.publisher.publish_event(&event).await {
                tracing::warn!(error = %e, "could not publish the rejected event");
                return Disposition::Abandon;
            }
        }
        Disposition::DeadLetter(r)
    }

    async fn process_valid(&self, job: &Job, message: &Message) -> Result<Outcome, Interrupted> {
        let id = job.challenge_id.as_str();
        let hmac = self.store.destination_hmac(job.to.expose());
        let masked = job.to.masked();
        let new = NewDelivery {
            challenge_id: id,
            account_id: job.account_id.as_str(),
            channel: job.channel.as_str(),
            destination_masked: &masked,
            destination_hmac: &hmac,
            locale: job.locale.as_deref(),
            template: &job.template,
            expires_at: job.expires_at,
        };
        match self.claim(&new).await? {
            Claim::New => {
                let event = self.event(job, DeliveryState::Received);
                self.publish(&event).await?;
                if let Some(outcome) = self.refuse_before_sending(job, &hmac).await? {
                    return Ok(outcome);
                }
                self.deliver(job, message, 0, false).await
            }
            Claim::TakenOver { attempt, in_doubt } => {
                if in_doubt {
                    self.metrics
                        .in_doubt
                        .get_or_create(&ChannelLabels {
                            channel: job.channel.as_str(),
                        })
                        .inc();
                    tracing::warn!(
                        attempt,
                        "taking over a challenge whose provider call was in flight: in doubt"
                    );
                }
                self.deliver(job, message, attempt, in_doubt).await
            }
            Claim::Done { state, row } => self.duplicate(job, state, &row).await,
            // `claim` waits until the challenge is no longer busy, so this arm is never taken.
            Claim::Busy { .. } => Err(Interrupted),
        }
    }

    /// Claims the challenge, waiting while another worker holds a live lease on it: that worker
    /// will finish it (and this job then turns out a duplicate) or its lease runs out.
    async fn claim(&self, new: &NewDelivery<'_>) -> Result<Claim, Interrupted> {
        let mut poll = Duration::from_millis(100);
        loop {
            match self
                .persist(|| self.store.claim(new, self.attempt_timeout + LEASE_SLACK))
                .await?
            {
                Claim::Busy { lease_until } => {
                    let until_lease = (lease_until - Utc::now()).to_std().unwrap_or_default();
                    let wait = poll.min(until_lease).max(Duration::from_millis(10));
                    poll = (poll * 2).min(Duration::from_secs(2));
                    self.sleep(wait).await?;
                }
                claim => return Ok(claim),
            }
        }
    }

    /// Expiry and limits, checked once for a new challenge. Returns the outcome if refused.
    async fn refuse_before_sending(
        &self,
        job: &Job,
        hmac: &[u8],
    ) -> Result<Option<Outcome>, Interrupted> {
        if !self.retry.may_start(Utc::now(), job.expires_at) {
            return self
                .conclude(
                    job,
                    deliver::terminal(
                        DeliveryState::Expired,
                        0,
                        "expired",
                        "the code expired, or would before it could be delivered",
                    ),
                )
                .await
                .map(Some);
        }
        if let Err(limited) = self.limiter.check(&job.to, hmac, &job.account_id) {
            let detail = format!("retry after {} s", limited.retry_after.as_secs().max(1));
            return self
                .conclude(
                    job,
                    deliver::terminal(DeliveryState::RateLimited, 0, limited.reason, &detail),
                )
                .await
                .map(Some);
        }
        Ok(None)
    }

    /// A job for a challenge that already finished: never sent again. If its terminal event
    /// was never confirmed (a crash between commit and publish), it is published now.
    async fn duplicate(
        &self,
        job: &Job,
        state: DeliveryState,
        row: &Recorded,
    ) -> Result<Outcome, Interrupted> {
        tracing::info!(%state, "duplicate job for a finished challenge; not sent again");
        self.persist(|| self.store.record_duplicate(job.challenge_id.as_str()))
            .await?;
        self.metrics
            .duplicates
            .get_or_create(&ChannelLabels {
                channel: job.channel.as_str(),
            })
            .inc();
        if !row.event_published {
            let mut event = self.event(job, state);
            event.attempt = row.attempt;
            event.provider = row.provider.as_deref();
            event.provider_message_id = row.provider_message_id.as_deref();
            event.reason = row.reason.as_deref();
            event.detail = row.detail.as_deref();
            self.publish(&event).await?;
            self.persist(|| self.store.mark_event_published(job.challenge_id.as_str()))
                .await?;
        }
        Ok(Outcome::Duplicate(state))
    }

    fn event<'a>(&self, job: &'a Job, state: DeliveryState) -> StatusEvent<'a> {
        let mut event = StatusEvent::new(&job.challenge_id, state, &job.metadata);
        event.account_id = Some(job.account_id.as_str());
        event.channel = Some(job.channel.as_str());
        event
    }

    async fn publish(&self, event: &StatusEvent<'_>) -> Result<(), Interrupted> {
        self.publisher.publish_event(event).await.map_err(|e| {
            tracing::warn!(error = %e, state = event.state, "could not publish a status event");
            Interrupted
        })
    }

    /// Runs a store operation until it succeeds or shutdown begins. An outage therefore holds
    /// the job (unacked) instead of failing it, and nothing is acked without a commit.
    async fn persist<T, F, Fut>(&self, mut op: F) -> Result<T, Interrupted>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "store operation failed")
                }
            }
            self.sleep(delay).await?;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn sleep(&self, d: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Interrupted),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }
}
