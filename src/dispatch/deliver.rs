//! The attempt loop: provider calls along the channel's failover chain, with retries, bounded
//! by the code's expiry and by the attempt budget.

use super::{Dispatcher, Ending, Halt};
use crate::domain::{DeliveryState, FailReason, Job, Outcome};
use crate::metrics::{ChannelLabels, JobLabels};
use crate::providers::{Pick, ProviderError, Reservation, Sent};
use crate::render::Message;
use crate::retry::Decision;
use crate::store::Owner;
use chrono::Utc;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// Where a job stands between attempts (the default: before its first).
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Attempts already made (by this worker or an earlier owner).
    pub attempt: i32,
    /// Some attempt's outcome is unknown: the final event says so.
    pub in_doubt: bool,
    /// The provider that failed the previous attempt; the next prefers another.
    pub avoid: Option<usize>,
}

/// What follows a failed attempt.
enum Next {
    /// Try again after this wait (zero: fail over at once).
    After(Duration),
    /// The job ends in this state.
    Stop(DeliveryState, Option<FailReason>),
}

/// What came of getting ready for the next attempt.
enum Begun {
    /// Call provider `index` now: the attempt is recorded as begun.
    Call(usize, Reservation),
    /// The job ended before another attempt (expired, out of attempts, in doubt).
    Concluded(Ending),
    /// The provider is chosen again: the chain waited for a breaker's probe, a breaker opened
    /// while the job waited for its slot, or the code's time ran out.
    Again,
}

impl Dispatcher {
    /// Calls providers until one accepts, the message is refused for good, or the code's time
    /// or the attempt budget runs out.
    pub(super) async fn deliver(
        &self,
        job: &Job,
        message: &Message,
        owner: Owner<'_>,
        mut p: Progress,
    ) -> Result<Ending, Halt> {
        loop {
            let (index, reservation) = match self.begin_attempt(job, owner, &mut p).await? {
                Begun::Call(index, reservation) => (index, reservation),
                Begun::Concluded(outcome) => return Ok(outcome),
                Begun::Again => continue,
            };
            let name = self.providers.name(index);
            let now = Utc::now();
            let timeout = self.retry.call_timeout(now, job.expires_at);
            let valid_for = crate::retry::remaining_life(now, job.expires_at);
            let attempted = self
                .providers
                .send(reservation, &job.to, message, timeout, valid_for)
                .await;
            self.observe_attempt(name, job, &attempted);
            let latency_ms = attempted.latency.as_millis() as u64;
            let failure = match attempted.result {
                Ok(sent) => {
                    self.count_segments(name, job, message);
                    let f = sent_outcome(name, p.attempt, &sent, latency_ms, p.in_doubt);
                    return self.conclude(job, owner, f).await;
                }
                Err(e) => e,
            };
            if failure.is_in_doubt() {
                p.in_doubt = true;
                self.note_in_doubt(job, p.attempt, Some(name), &failure.to_string())
                    .await?;
            }
            let mut f = failure_outcome(name, p.attempt, &failure, latency_ms, p.in_doubt);
            match self.next_after(job, &p, index, &failure) {
                Next::After(wait) => {
                    tracing::warn!(attempt = p.attempt, provider = name, retry_in_ms = wait.as_millis() as u64, error = %failure, "attempt failed; will retry");
                    let lease = wait + self.attempt_timeout + super::LEASE_SLACK;
                    if !self
                        .persist(|| self.store.record_failed_attempt(owner, &f, lease))
                        .await?
                    {
                        return Err(Halt::LeaseLost);
                    }
                    p.avoid = Some(index);
                    self.sleep(wait).await?;
                }
                Next::Stop(state, reason) => {
                    tracing::warn!(attempt = p.attempt, provider = name, error = %failure, %state, "attempt failed; giving up");
                    f.state = state;
                    if let Some(reason) = reason {
                        f.set_reason(reason);
                    }
                    return self.conclude(job, owner, f).await;
                }
            }
        }
    }

    /// Checks whether another attempt may start, picks a provider, waits for a call slot and
    /// records the attempt as begun.
    async fn begin_attempt(
        &self,
        job: &Job,
        owner: Owner<'_>,
        p: &mut Progress,
    ) -> Result<Begun, Halt> {
        if let Some((state, reason, detail)) = self.stop_before_attempt(job, p) {
            tracing::warn!(attempt = p.attempt, %state, reason = reason.code(), "{detail}");
            let mut f = Outcome::ended(state, p.attempt, reason, detail);
            f.in_doubt = p.in_doubt;
            return self.conclude(job, owner, f).await.map(Begun::Concluded);
        }
        let route = self.providers.route(job.channel, &job.to);
        let (index, probe) = match self.providers.pick(route, p.avoid) {
            Pick::Use { index, probe } => (index, probe),
            Pick::WaitUntil(at) => {
                // Every breaker of the chain is open: wait for the first probe, holding the
                // lease, and check the code's expiry again.
                let wait = at.saturating_duration_since(Instant::now());
                self.hold(owner, wait.min(self.attempt_timeout)).await?;
                return Ok(Begun::Again);
            }
        };
        let recheck = !probe && self.providers.has_alternative(route, index);
        let Some(reservation) = self.wait_for_slot(job, owner, index, recheck).await? else {
            return Ok(Begun::Again);
        };
        p.attempt += 1;
        let name = self.providers.name(index);
        self.count_repeat(name, job, p);
        let lease = self.attempt_timeout + super::LEASE_SLACK;
        if !self
            .persist(|| self.store.start_attempt(owner, p.attempt, name, lease))
            .await?
        {
            return Err(Halt::LeaseLost);
        }
        Ok(Begun::Call(index, reservation))
    }

    /// Expiry and the attempt budget, checked before every attempt (including the first after
    /// a takeover, whose owner may have used them up).
    fn stop_before_attempt(
        &self,
        job: &Job,
        p: &Progress,
    ) -> Option<(DeliveryState, FailReason, &'static str)> {
        if !self.retry.may_start(Utc::now(), job.expires_at) {
            return Some((
                DeliveryState::Expired,
                FailReason::Expired,
                "the code expired before it could be delivered",
            ));
        }
        if p.in_doubt && !self.resend_in_doubt {
            return Some((
                DeliveryState::Failed,
                FailReason::InDoubt,
                "a provider call's outcome is unknown and resend_in_doubt is off",
            ));
        }
        if p.attempt as u32 >= self.retry.max_attempts {
            return Some((
                DeliveryState::Failed,
                FailReason::ProviderTransient,
                "every allowed attempt was made",
            ));
        }
        None
    }

    /// The retry decision for a failed attempt on provider `index`.
    fn next_after(&self, job: &Job, p: &Progress, index: usize, e: &ProviderError) -> Next {
        if e.is_in_doubt() && !self.resend_in_doubt {
            return Next::Stop(DeliveryState::Failed, Some(FailReason::InDoubt));
        }
        let retry_after = match e {
            // Another provider may work where this one cannot work at all: fail over at once.
            ProviderError::Permanent { .. } if e.is_provider_wide() => {
                return match self.providers.can_fail_over(job.channel, &job.to, index) {
                    true if (p.attempt as u32) < self.retry.max_attempts => {
                        Next::After(Duration::ZERO)
                    }
                    _ => Next::Stop(DeliveryState::Failed, None),
                };
            }
            ProviderError::Permanent { .. } => return Next::Stop(DeliveryState::Failed, None),
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            ProviderError::Transient { .. } => None,
        };
        // A Retry-After binds the provider that sent it; another provider may go sooner.
        let retry_after =
            retry_after.filter(|_| !self.providers.can_fail_over(job.channel, &job.to, index));
        match self.retry.decide(
            p.attempt as u32,
            retry_after,
            rand::random(),
            Utc::now(),
            job.expires_at,
        ) {
            Decision::RetryAfter(wait) => Next::After(wait),
            Decision::Exhausted => Next::Stop(DeliveryState::Failed, None),
            Decision::WouldExpire => Next::Stop(DeliveryState::Expired, Some(FailReason::Expired)),
        }
    }

    /// Waits for a call slot on provider `index`: the one wait for a slot, made before the
    /// attempt is recorded as begun, so that a job killed while it waits is not taken for one
    /// whose call may have left. The job keeps its place in the provider's queue, renewing its
    /// lease as it waits. `None` means the provider choice is made again: its breaker opened
    /// meanwhile, or the code can no longer start (the caller then ends it).
    async fn wait_for_slot(
        &self,
        job: &Job,
        owner: Owner<'_>,
        index: usize,
        recheck: bool,
    ) -> Result<Option<Reservation>, Halt> {
        let reserve = self.providers.reserve(index, recheck);
        tokio::pin!(reserve);
        // Half an attempt timeout: the claim leased the challenge for a timeout and some
        // slack, and this wait began some commits after it.
        let renew_every = self.attempt_timeout / 2;
        loop {
            tokio::select! {
                r = &mut reserve => return Ok(r.filter(|_| self.retry.may_start(Utc::now(), job.expires_at))),
                _ = self.shutdown.cancelled() => return Err(Halt::Interrupted),
                _ = tokio::time::sleep(renew_every) => {
                    self.hold(owner, Duration::ZERO).await?;
                    if !self.retry.may_start(Utc::now(), job.expires_at) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Renews the lease over `wait` plus an attempt, then waits.
    async fn hold(&self, owner: Owner<'_>, wait: Duration) -> Result<(), Halt> {
        let lease = wait + self.attempt_timeout + super::LEASE_SLACK;
        if !self
            .persist(|| self.store.extend_lease(owner, lease))
            .await?
        {
            return Err(Halt::LeaseLost);
        }
        self.sleep(wait).await
    }

    /// Records and counts a provider call whose outcome is unknown.
    pub(super) async fn note_in_doubt(
        &self,
        job: &Job,
        attempt: i32,
        provider: Option<&str>,
        detail: &str,
    ) -> Result<(), Halt> {
        let channel = job.channel.as_str();
        self.metrics
            .in_doubt
            .get_or_create(&ChannelLabels { channel })
            .inc();
        tracing::warn!(
            attempt,
            provider,
            detail,
            "a provider call's outcome is unknown: in doubt"
        );
        let key = job.key();
        self.persist(|| self.store.record_in_doubt(&key, attempt, provider, detail))
            .await
    }

    /// Commits a terminal state, then publishes its event. The commit also notes the event as
    /// published: until the broker confirms it, this job's message stays unacked, so if the
    /// publish never happens the message comes back redelivered and its copy publishes it.
    pub(super) async fn conclude(
        &self,
        job: &Job,
        owner: Owner<'_>,
        mut f: Outcome<'_>,
    ) -> Result<Ending, Halt> {
        // A fallback step that never reached a provider did not fail: it was not needed, or
        // not allowed, and says why.
        let unsent = matches!(
            f.state,
            DeliveryState::Expired | DeliveryState::RateLimited | DeliveryState::Rejected
        );
        if job.step > 0 && f.attempt == 0 && unsent {
            f.state = DeliveryState::Cancelled;
        }
        if !self.persist(|| self.store.finish(owner, &f)).await? {
            // Taken over meanwhile, or this very commit went through but its answer was lost:
            // either way the claim loop finds the recorded outcome and its event.
            return Err(Halt::LeaseLost);
        }
        self.metrics
            .jobs
            .get_or_create(&JobLabels {
                channel: job.channel.as_str(),
                state: f.state.as_str(),
            })
            .inc();
        if f.state == DeliveryState::Sent {
            self.count_spend(job);
        }
        self.publish(&self.event(job, f.state).with_outcome(&f))
            .await?;
        Ok(Ending::Finished(f.state))
    }
}

fn sent_outcome<'a>(
    provider: &'a str,
    attempt: i32,
    sent: &'a Sent,
    latency_ms: u64,
    in_doubt: bool,
) -> Outcome<'a> {
    Outcome {
        provider: Some(Cow::Borrowed(provider)),
        provider_message_id: sent.provider_message_id.as_deref().map(Cow::Borrowed),
        response_status: sent.status,
        latency_ms: Some(latency_ms),
        in_doubt,
        ..Outcome::new(DeliveryState::Sent, attempt)
    }
}

/// The record of a failed attempt; `state` is Failed until the retry decision says otherwise.
fn failure_outcome<'a>(
    provider: &'a str,
    attempt: i32,
    e: &ProviderError,
    latency_ms: u64,
    in_doubt: bool,
) -> Outcome<'a> {
    let reason = match e {
        ProviderError::Permanent { reason, .. } => *reason,
        ProviderError::RateLimited { .. } => FailReason::ProviderRateLimited,
        ProviderError::Transient { .. } => FailReason::ProviderTransient,
    };
    Outcome {
        provider: Some(Cow::Borrowed(provider)),
        response_status: e.status(),
        latency_ms: Some(latency_ms),
        in_doubt,
        ..Outcome::ended(DeliveryState::Failed, attempt, reason, e.to_string())
    }
}
