//! The claim: a job takes ownership of its challenge and learns where it stands, then works
//! it from there. A new challenge is recorded and, when its limits can be judged now, admitted
//! in the same commit, shared with other jobs' claims (`Store::claim` with an [`Admit`]). A
//! recorded one is taken over from an owner whose lease ran out, found finished (the job is a
//! duplicate), or waited for while another worker holds it. Whatever the claim finds, the
//! steps after it are the same: admission if it is still owed, the attempts, the conclusion.

use super::admit::Screened;
use super::deliver::Progress;
use super::{Dispatcher, Ending, Halt, LEASE_SLACK};
use crate::domain::{DeliveryState, FailReason, Job, Outcome};
use crate::events::Pending;
use crate::render::Message;
use crate::store::{Admit, Claim, NewDelivery, Owner, Verdict};
use chrono::Utc;
use std::time::Duration;

/// One pass of a job through the claim: whether it may be the one that owes the challenge's
/// terminal event (see `duplicate`), and whether the challenge may be new.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pass {
    pub owed: bool,
    pub first: bool,
    /// Why a fallback step must not send (the code was verified, the challenge cancelled).
    pub stopper: Option<FailReason>,
}

impl Dispatcher {
    /// Claims the challenge and works it from where it stands to an outcome. Every step after
    /// the claim is boxed: a job's task is as large as its largest state, a thousand tasks
    /// wait at once under load, and the common one waits in `deliver` for a call slot.
    pub(super) async fn claim_and_work(
        &self,
        job: &Job,
        message: &Message,
        new: &NewDelivery<'_>,
        owner: Owner<'_>,
        pass: Pass,
    ) -> Result<Ending, Halt> {
        // A job is most likely the first for its challenge, so its limits are offered with the
        // claim. After a lost lease the challenge is recorded, and the claim takes it over.
        // Anything but the counters deciding the job keeps them out of the claim, so that no
        // counter is taken for a job that is ended anyway.
        let admit = match pass.first && pass.stopper.is_none() {
            true => match self.screen(job, new.destination_hmac) {
                Screened::Counters(admit) => Some(admit),
                Screened::Expired | Screened::Refused(_) => None,
            },
            false => None,
        };
        let hmac = new.destination_hmac;
        let claim = self.claim(new, owner.token, admit).await?;
        // A step stopped before it fired ends here, unless an earlier owner already called.
        if let (Some(reason), Claim::New(_) | Claim::TakenOver { attempt: 0, .. }) =
            (pass.stopper, &claim)
        {
            return Box::pin(self.stop_step(job, owner, reason)).await;
        }
        match claim {
            Claim::New(verdict) => self.work_new(job, message, owner, hmac, verdict).await,
            Claim::TakenOver {
                attempt,
                call_in_flight,
                doubted,
                admitted,
            } => {
                // An owner that crashed before its admission committed counted and sent
                // nothing: admission runs now.
                if attempt == 0
                    && !admitted
                    && let Some(outcome) =
                        Box::pin(self.refuse_before_sending(job, owner, hmac)).await?
                {
                    return Ok(outcome);
                }
                if call_in_flight {
                    let detail = "taken over after the owner crashed during a provider call";
                    Box::pin(self.note_in_doubt(job, attempt, None, detail)).await?;
                }
                let p = Progress {
                    attempt,
                    in_doubt: call_in_flight || doubted,
                    avoid: None,
                };
                Box::pin(self.deliver(job, message, owner, p)).await
            }
            Claim::Done {
                outcome,
                event_published,
            } => Box::pin(self.duplicate(job, &outcome, event_published, pass.owed)).await,
            // `claim` waits until the challenge is no longer busy.
            Claim::Busy { .. } => Err(Halt::LeaseLost),
        }
    }

    /// Works a challenge this job just recorded: its `accepted` event, then the limits' verdict
    /// (judged now if the claim did not), then the attempts.
    async fn work_new(
        &self,
        job: &Job,
        message: &Message,
        owner: Owner<'_>,
        hmac: &[u8],
        verdict: Verdict,
    ) -> Result<Ending, Halt> {
        // Not awaited before the work: the confirm is not worth a round trip ahead of the
        // call, and events go out in order on one channel, so it precedes the terminal event.
        let accepted = self.send_accepted(job).await;
        let refused = match verdict {
            Verdict::Admitted => None,
            Verdict::Refused(refusal) => {
                Some(Box::pin(self.conclude_refusal(job, owner, refusal)).await?)
            }
            Verdict::Unjudged => Box::pin(self.refuse_before_sending(job, owner, hmac)).await?,
        };
        let outcome = match refused {
            Some(outcome) => outcome,
            None => Box::pin(self.deliver(job, message, owner, Progress::default())).await?,
        };
        if let Some(accepted) = accepted
            && let Err(e) = accepted.confirmed().await
        {
            tracing::warn!(error = %e, "the accepted event was not confirmed");
        }
        Ok(outcome)
    }

    /// Ends a fallback step that must not send: its code was verified, or its challenge
    /// cancelled, before it fired.
    async fn stop_step(
        &self,
        job: &Job,
        owner: Owner<'_>,
        reason: FailReason,
    ) -> Result<Ending, Halt> {
        let detail = match reason {
            FailReason::Verified => "the code was verified before this step was due",
            _ => "the challenge was cancelled before this step was due",
        };
        tracing::info!(
            step = job.step,
            reason = reason.code(),
            "{detail}; step not sent"
        );
        let f = Outcome::ended(DeliveryState::Cancelled, 0, reason, detail);
        self.conclude(job, owner, f).await
    }

    /// Claims the challenge, waiting while another worker holds a live lease on it: that worker
    /// will finish it (and this job then turns out a duplicate) or its lease runs out.
    async fn claim(
        &self,
        new: &NewDelivery<'_>,
        token: i64,
        mut admit: Option<Admit>,
    ) -> Result<Claim, Halt> {
        let lease = self.attempt_timeout + LEASE_SLACK;
        let mut poll = Duration::from_millis(100);
        loop {
            // Once the challenge is found recorded, it is claimed as such.
            let offer = admit.take();
            let claimed = self
                .persist(|| self.store.claim(new, lease, token, offer.clone()))
                .await?;
            match claimed {
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

    /// Sends the `accepted` event, returning its pending confirm (`None` if it is turned off or
    /// could not even be sent: the job goes on, and its terminal event is what the broker must
    /// take).
    async fn send_accepted(&self, job: &Job) -> Option<Pending> {
        if !self.publish_accepted {
            return None;
        }
        match self
            .publisher
            .send_event(&self.event(job, DeliveryState::Received))
            .await
        {
            Ok(pending) => Some(pending),
            Err(e) => {
                tracing::warn!(error = %e, "could not send the accepted event");
                None
            }
        }
    }
}
