//! Dispatch: one job from bytes to a committed outcome. Intake hands it a body and gets back a
//! [`Disposition`] saying what to do with the message; dispatch never sees delivery tags.
//!
//! One path for every job: parse → render → claim the challenge in PostgreSQL (`claim.rs`:
//! deduplication, and a new challenge's limits in the same commit) → admission where the
//! claim did not settle it (`admit.rs`) → provider attempts with retries (`deliver.rs`) →
//! commit the terminal state → publish its event → ack. A takeover or a duplicate takes the
//! same steps from where the claim finds the challenge.
//! Every step that must survive a crash is committed before the next begins, and intake acks
//! only after this returns [`Disposition::Ack`].

mod admit;
mod claim;
mod counting;
mod deliver;
mod inbound;
mod outage;
mod steps;

pub use crate::limits::signing::HEADER as SIGNATURE_HEADER;
pub use inbound::Inbound;

use crate::config::Settings;
use crate::domain::Outcome;
use crate::domain::{DeliveryState, Job, Rejection};
use crate::events::{Publisher, StatusEvent};
use crate::limits::Limits;
use crate::limits::signing::Verifier;
use crate::metrics::{ChannelLabels, Metrics};
use crate::providers::Providers;
use crate::render::Message;
use crate::retry::RetryPolicy;
use crate::store::{NewDelivery, Owner, Store};
use crate::templates::{RenderError, Templates};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What intake should do with the message once dispatch is done with it.
#[derive(Debug)]
pub enum Disposition {
    /// The outcome is committed (or the job was a duplicate): ack.
    Ack(Ending),
    /// The job is invalid: copy it to the dead-letter exchange with this reason, then ack.
    DeadLetter(Rejection),
    /// Shutdown or an outage interrupted the work: leave the message unacked so the broker
    /// redelivers it. Nothing half-done was recorded as done.
    Abandon,
}

/// How a job ended, for metrics, logs and anyone watching (the tests do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// This job took the challenge to this terminal state.
    Finished(DeliveryState),
    /// The challenge had already finished in this state; nothing was sent.
    Duplicate(DeliveryState),
    /// A `verified` feedback message was recorded.
    Verified,
    /// A `cancel` message was recorded.
    Cancelled,
}

/// The result of processing one message: the challenge it named (when readable) and what to
/// do with the message.
#[derive(Debug)]
pub struct Processed {
    pub challenge_id: Option<String>,
    pub disposition: Disposition,
}

/// Why work on a job stopped short of an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// Shutdown, or the broker could not take an event: leave the message unacked.
    Interrupted,
    /// Another worker took the challenge over (this one stalled past its lease), or a commit's
    /// answer was lost: claim again to find out where the challenge stands.
    LeaseLost,
    /// The database refused one of this job's writes (not an outage): the job ends.
    Refused,
}

/// Extra lease time beyond an attempt's timeout, for the commits around it. Short, because a
/// crashed owner's redelivered jobs wait it out before they are taken over.
const LEASE_SLACK: Duration = Duration::from_secs(2);

pub struct Dispatcher {
    store: Store,
    publisher: Arc<Publisher>,
    providers: Arc<Providers>,
    limits: Arc<Limits>,
    signing: Verifier,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    templates: Templates,
    /// How long after a code's expiry a `verified` message still counts for conversion.
    verified_late: Duration,
    attempt_timeout: Duration,
    resend_in_doubt: bool,
    publish_accepted: bool,
    store_gate: outage::StoreGate,
    shutdown: CancellationToken,
}

pub struct DispatcherParts {
    pub templates: Templates,
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub providers: Arc<Providers>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(settings: Settings, parts: DispatcherParts) -> Dispatcher {
        Dispatcher {
            store: parts.store,
            publisher: parts.publisher,
            providers: parts.providers,
            limits: parts.limits,
            signing: Verifier::new(&settings.signing),
            retry: RetryPolicy::from_settings(&settings.retry),
            metrics: parts.metrics,
            templates: parts.templates,
            verified_late: Duration::from_secs(settings.conversion.verified_late_secs),
            attempt_timeout: Duration::from_millis(settings.retry.attempt_timeout_ms),
            resend_in_doubt: settings.delivery.resend_in_doubt,
            publish_accepted: settings.amqp.publish_accepted,
            store_gate: outage::StoreGate::default(),
            shutdown: parts.shutdown,
        }
    }

    /// Processes one message. Never panics on input; every path ends in a disposition.
    pub async fn process(&self, m: Inbound<'_>) -> Processed {
        // The rare paths are boxed: a job's future is as large as its largest state, and a
        // thousand of them are in flight under load. Size comes first, before a signature is
        // computed or any parser runs, for every kind of message.
        if let Err(r) = crate::domain::job::check_size(m.body) {
            return Processed {
                challenge_id: None,
                disposition: Box::pin(self.reject(r, &BTreeMap::new())).await,
            };
        }
        // A step otpd scheduled was signed by its publisher when its first send was accepted.
        let step = match self.step_of(&m) {
            Ok(step) => step,
            Err(r) => {
                return Processed {
                    challenge_id: None,
                    disposition: Box::pin(self.reject(r, &BTreeMap::new())).await,
                };
            }
        };
        if step.is_none()
            && let Some(refused) = Box::pin(self.refuse_unsigned(&m)).await
        {
            return refused;
        }
        if let Some(kind) = inbound::Feedback::from_type(m.kind) {
            return Box::pin(self.feedback(kind, m.body)).await;
        }
        let parsed = Job::parse(m.body).and_then(|job| match step {
            Some(n) => job.at_step(n),
            None => Ok(job),
        });
        let job = match parsed {
            Ok(job) => job,
            Err(rejection) => {
                let challenge_id = rejection.challenge_id.as_ref().map(|c| c.to_string());
                let disposition = Box::pin(self.reject(rejection, &BTreeMap::new())).await;
                return Processed {
                    challenge_id,
                    disposition,
                };
            }
        };
        let challenge_id = Some(job.challenge_id.to_string());
        let span = tracing::info_span!("job", challenge_id = %job.challenge_id, channel = %job.channel, to = %job.to.masked());
        let disposition = async {
            let message = match self.templates.render(&job, Utc::now()) {
                Ok(m) => m,
                Err(e) => {
                    let reason = match e {
                        RenderError::Unknown { .. } => crate::domain::RejectReason::UnknownTemplate,
                        RenderError::Failed { .. } => crate::domain::RejectReason::TemplateError,
                    };
                    let mut r = Rejection::new(reason, e.to_string());
                    r.challenge_id = Some(job.challenge_id.clone());
                    return Box::pin(self.reject(r, &job.metadata)).await;
                }
            };
            self.process_valid(&job, &message, m).await
        }
        .instrument(span)
        .await;
        Processed {
            challenge_id,
            disposition,
        }
    }

    /// Claims the challenge and works it to an outcome; then, if the job has a fallback step
    /// after this send, schedules it before the job is acked.
    async fn process_valid(&self, job: &Job, message: &Message, m: Inbound<'_>) -> Disposition {
        let (disposition, owed) = self.claim_loop(job, message, m.redelivered).await;
        match disposition {
            // Boxed, like every rare step: most jobs have no fallback, and a job's task is
            // sized by its largest state.
            Disposition::Ack(ending) if job.next_step().is_some() => {
                match Box::pin(self.schedule_next(job, ending, owed, m.body)).await {
                    Ok(()) => Disposition::Ack(ending),
                    Err(Halt::Interrupted | Halt::LeaseLost) => Disposition::Abandon,
                    Err(Halt::Refused) => Disposition::Ack(ending),
                }
            }
            other => other,
        }
    }

    /// The claim, over lost leases, to an outcome. `owed`: this message may be the one whose
    /// delivery committed the outcome without publishing its event (see `duplicate`); it is
    /// returned, since such a message also owes the schedule of the next fallback step.
    async fn claim_loop(
        &self,
        job: &Job,
        message: &Message,
        mut owed: bool,
    ) -> (Disposition, bool) {
        let key = job.key();
        let id = key.as_ref();
        let hmac = self.store.destination_hmac(job.to.expose());
        let masked = job.to.masked();
        let stopper = match job.step {
            0 => None,
            _ => {
                match Box::pin(self.persist(|| self.store.step_stopper(job.challenge_id.as_str())))
                    .await
                {
                    Ok(stopper) => stopper,
                    // The step has no record yet, so no owner: nothing is aborted, and the job
                    // is dead-lettered as `internal_error`.
                    Err(Halt::Refused) => {
                        return (
                            Box::pin(self.end_refused(job, Owner { id, token: 0 })).await,
                            owed,
                        );
                    }
                    Err(_) => return (Disposition::Abandon, owed),
                }
            }
        };
        let new = NewDelivery {
            challenge_id: id,
            account_id: job.account_id.as_str(),
            channel: job.channel.as_str(),
            destination_masked: &masked,
            destination_hmac: &hmac,
            locale: job.locale.as_deref(),
            template: &job.template,
            expires_at: job.expires_at,
            country: admit::phone(job).map(|p| p.country()),
            // Conversion compares a range's sends with its verified codes, and feedback names
            // the first send: a fallback step is not counted as a send of its own.
            prefix: admit::phone(job)
                .filter(|_| job.step == 0)
                .map(|p| self.limits.conversion_prefix(p)),
        };
        let mut first = true;
        loop {
            let owner = Owner {
                id,
                token: rand::random(),
            };
            let pass = claim::Pass {
                owed,
                first: std::mem::take(&mut first),
                stopper,
            };
            match self.claim_and_work(job, message, &new, owner, pass).await {
                Ok(outcome) => {
                    tracing::debug!(?outcome, "job done");
                    return (Disposition::Ack(outcome), owed);
                }
                Err(Halt::LeaseLost) => {
                    // This task's own terminal commit may have gone through with its answer
                    // lost; if so, the event is this task's to publish.
                    owed = true;
                    tracing::info!("lost the lease on the challenge; claiming it again");
                }
                Err(Halt::Interrupted) => {
                    // Best effort: let the redelivered job be taken over without waiting out
                    // the lease. A call in flight keeps its mark, so it counts as in doubt.
                    let _ = self.store.release(owner).await;
                    tracing::warn!("job interrupted; left unacked for redelivery");
                    return (Disposition::Abandon, owed);
                }
                Err(Halt::Refused) => return (Box::pin(self.end_refused(job, owner)).await, owed),
            }
        }
    }

    /// A job for a challenge that already finished: never sent again. Its terminal event is
    /// published again if this message may be the one that committed it (`owed`: a
    /// redelivery, or a retry after this task's own commit lost its answer), or if the row is
    /// older than the rule that the commit implies the event (`!event_published`).
    async fn duplicate(
        &self,
        job: &Job,
        outcome: &Outcome<'_>,
        event_published: bool,
        owed: bool,
    ) -> Result<Ending, Halt> {
        let state = outcome.state;
        tracing::info!(%state, "duplicate job for a finished challenge; not sent again");
        // Only an audit note: a refusal of it must not end a finished challenge's job.
        let key = job.key();
        match self.persist(|| self.store.record_duplicate(&key)).await {
            Ok(()) | Err(Halt::Refused) => {}
            Err(halt) => return Err(halt),
        }
        self.metrics
            .duplicates
            .get_or_create(&ChannelLabels {
                channel: job.channel.as_str(),
            })
            .inc();
        if owed || !event_published {
            self.publish(&self.event(job, state).with_outcome(outcome))
                .await?;
        }
        Ok(Ending::Duplicate(state))
    }

    fn event<'a>(&self, job: &'a Job, state: DeliveryState) -> StatusEvent<'a> {
        let mut event = StatusEvent::new(&job.challenge_id, state, &job.metadata);
        event.account_id = Some(job.account_id.as_str());
        event.channel = Some(job.channel.as_str());
        event.at_step(job.step)
    }

    async fn publish(&self, event: &StatusEvent<'_>) -> Result<(), Halt> {
        self.publisher.publish_event(event).await.map_err(|e| {
            tracing::warn!(error = %e, state = event.state, "could not publish a status event");
            Halt::Interrupted
        })
    }
}
