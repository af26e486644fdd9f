//! The fast path of a job for a new challenge: one commit (`Store::open`, shared with other
//! jobs) claims it, takes its limits and records its first attempt as begun, where the slow
//! path commits the claim, the admission and the attempt's start one after another.
//!
//! It applies only when everything that commit decides can be known beforehand: the code is
//! not about to expire, geo permissions and conversion blocks allow the destination, no cached
//! refusal applies and a provider's breaker admits a call. Otherwise, and for a challenge
//! already recorded (a duplicate, a redelivery, a takeover), the job takes the slow path, which
//! handles every case; the outcomes and audit rows are the same either way.
//!
//! The call slot is reserved after the commit (a paced provider's before it), so that jobs
//! waiting on their openings do not hold the provider's slots. An attempt recorded as begun may
//! then wait for its slot, with its lease renewed. The commit marks the call as under way only
//! when the slot is already held; otherwise the mark is written once it is, so that a job
//! killed while it waits for a slot is not taken for one whose call may have left
//! (docs/reliability.md).

use super::deliver::{Progress, Started};
use super::{Dispatcher, Halt, LEASE_SLACK, Outcome, admit};
use crate::domain::{DeliveryState, Job};
use crate::events::Pending;
use crate::limits::Refusal;
use crate::providers::{Attempted, Pick, ProviderError, Reservation};
use crate::render::Message;
use crate::store::{FirstAttempt, NewDelivery, Opened, Owner};
use chrono::Utc;
use std::time::Duration;

impl Dispatcher {
    /// Works the job through the fast path; `None` if the slow path must take it.
    pub(super) async fn open(
        &self,
        job: &Job,
        message: &Message,
        new: &NewDelivery<'_>,
        owner: Owner<'_>,
    ) -> Result<Option<Outcome>, Halt> {
        let allowed = self.limits.screen(job.channel, admit::phone(job)).is_ok();
        if !allowed || !self.retry.may_start(Utc::now(), job.expires_at) {
            return Ok(None);
        }
        let takes = self.takes(job, new.destination_hmac);
        if self.limits.cached(&takes).is_some() {
            return Ok(None);
        }
        let route = self.providers.route(job.channel, &job.to);
        let Pick::Use { index, probe } = self.providers.pick(route, None) else {
            return Ok(None);
        };
        let recheck = !probe && self.providers.has_alternative(route, index);
        // The call slot is reserved after the commit (`reserve_started`): under a storm the
        // commit's wait is far longer than the call, and jobs holding slots through it would
        // leave the provider idle while the slots' holders wait on the database. A paced provider's turn may be far off, so its slot is
        // reserved first, as the slow path does: an attempt marked as begun should not wait.
        let reservation = match self.providers.is_paced(index) {
            false => None,
            true => {
                // Bounded like the slow path's wait, which then chooses the provider again
                // (its breaker may have opened meanwhile).
                let reserved = tokio::select! {
                    r = self.providers.reserve(index, recheck) => match r {
                        Some(r) => r,
                        // The breaker opened while this job waited: the slow path picks again.
                        None => return Ok(None),
                    },
                    _ = self.shutdown.cancelled() => return Err(Halt::Interrupted),
                    _ = tokio::time::sleep(self.attempt_timeout) => return Ok(None),
                };
                // The wait for a slot may have been long.
                if !self.retry.may_start(Utc::now(), job.expires_at) {
                    return Ok(None);
                }
                Some(reserved)
            }
        };
        let (keys, decide) = self.judgement(takes);
        // In doubt only means in doubt: the commit marks the call as under way only when its
        // slot is already held. Otherwise the mark is written once the job holds its slot, so
        // a crash while it waits neither flags it in doubt nor, with resending off, fails it
        // unsent.
        let marked = reservation.is_some();
        let first = FirstAttempt {
            provider: self.providers.name(index),
            keys,
            decide,
            lease: self.attempt_timeout + LEASE_SLACK,
            marked,
        };
        match self.persist(|| self.store.open(new, owner, &first)).await? {
            Opened::Exists => Ok(None),
            Opened::Refused(refusal) => {
                drop(reservation);
                Box::pin(self.refused(job, owner, refusal)).await.map(Some)
            }
            Opened::Started => {
                // Not awaited before the call: the attempt is recorded as begun, and a broker
                // failure here must not strand it, which would make it look in doubt.
                let accepted = self.send_accepted(job).await;
                let p = Progress {
                    attempt: 1,
                    in_doubt: false,
                    avoid: None,
                };
                let started = Started {
                    index,
                    recheck,
                    reservation,
                };
                // Boxed: under load a job waits on its opening far longer than it delivers, and
                // an inline delivery would size every waiting job's task for the provider call
                // and hold that memory for the whole wait.
                let outcome = Box::pin(self.deliver(job, message, owner, p, Some(started))).await?;
                if let Some(accepted) = accepted
                    && let Err(e) = accepted.confirmed().await
                {
                    tracing::warn!(error = %e, "the accepted event was not confirmed");
                }
                Ok(Some(outcome))
            }
        }
    }
}

impl Dispatcher {
    /// Concludes a job that a limit refused at its opening.
    async fn refused(
        &self,
        job: &Job,
        owner: Owner<'_>,
        refusal: Refusal,
    ) -> Result<Outcome, Halt> {
        self.publish_accepted(job).await?;
        self.conclude_refusal(job, owner, refusal).await
    }

    /// Publishes the `accepted` event and waits for its confirm, unless it is turned off.
    pub(super) async fn publish_accepted(&self, job: &Job) -> Result<(), Halt> {
        if !self.publish_accepted {
            return Ok(());
        }
        self.publish(&self.event(job, DeliveryState::Received))
            .await
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

    /// The call slot of the attempt the fast path recorded as begun, once its call may start:
    /// `None` if its provider's breaker opened, or the code's last moment to start a call
    /// passed, while it waited. The call is marked as under way first if the opening did not.
    pub(super) async fn started_slot(
        &self,
        job: &Job,
        owner: Owner<'_>,
        s: Started,
    ) -> Result<Option<Reservation>, Halt> {
        // The opening marked the call only if it held the slot already.
        let marked = s.reservation.is_some();
        let reserved = self
            .reserve_started(owner, s.index, s.recheck, s.reservation)
            .await?;
        // Checked before the opening commit too, but the slot may have come later.
        let in_time = self.retry.may_start(Utc::now(), job.expires_at);
        let Some(reservation) = reserved.filter(|_| in_time) else {
            return Ok(None);
        };
        if !marked {
            let lease = self.attempt_timeout + LEASE_SLACK;
            if !self
                .persist(|| self.store.mark_call_started(owner, lease))
                .await?
            {
                return Err(Halt::LeaseLost);
            }
        }
        Ok(Some(reservation))
    }

    /// The call slot of the attempt the fast path recorded as begun. If it did not reserve one
    /// before its commit, it waits behind the provider's calls in flight, renewing its lease
    /// (first within the lease's slack, then once per attempt timeout). Shutdown does not end
    /// the wait: an attempt recorded as begun and then abandoned would look in doubt. `None`:
    /// the provider's breaker opened meanwhile, and the attempt is not made.
    async fn reserve_started(
        &self,
        owner: Owner<'_>,
        index: usize,
        recheck: bool,
        reserved: Option<Reservation>,
    ) -> Result<Option<Reservation>, Halt> {
        if let Some(reservation) = reserved {
            return Ok(Some(reservation));
        }
        let reserve = self.providers.reserve(index, recheck);
        tokio::pin!(reserve);
        let mut renew_in = super::LEASE_SLACK / 2;
        loop {
            tokio::select! {
                r = &mut reserve => return Ok(r),
                _ = tokio::time::sleep(renew_in) => {
                    // Covers the next wait and a call that starts at its end.
                    renew_in = self.attempt_timeout;
                    let lease = renew_in + self.attempt_timeout + super::LEASE_SLACK;
                    if !self.persist(|| self.store.extend_lease(owner, lease)).await? {
                        return Err(Halt::LeaseLost);
                    }
                }
            }
        }
    }
}

/// The outcome of a started attempt that was not made: its provider's breaker opened, or the
/// code's time to start ran out, while it waited for a slot. It goes on like a transient
/// failure (failing over, or ending `expired`), not in doubt, since the provider never saw it.
pub(super) fn not_called() -> Attempted {
    Attempted {
        result: Err(ProviderError::Transient {
            status: None,
            detail:
                "not called: the provider's circuit breaker opened, or the code's time ran out, while the call waited for a slot"
                    .to_string(),
            in_doubt: false,
        }),
        latency: Duration::ZERO,
    }
}
