//! Store outages and refusals. An outage (PostgreSQL unreachable, out of resources, a lost
//! serialization race) is retried until the write commits: a job is never acked without its
//! commit, and while PostgreSQL is unreachable no new job is started. Any other error is the
//! write itself being refused; it ends its own job (`end_refused`), so that one poison job
//! cannot hold its prefetch slot, and retry, forever.

use super::{Dispatcher, Disposition, Ending, Halt};
use crate::domain::{DeliveryState, Job, RejectReason, Rejection};
use crate::metrics::JobLabels;
use crate::store::{Owner, StoreError};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether the store answered the last time it was asked.
#[derive(Debug, Default)]
pub(super) struct StoreGate {
    down: AtomicBool,
}

impl Dispatcher {
    /// Ends a job one of whose writes the database refused. With an attempt behind it, the
    /// challenge ends `failed` (in doubt if a call may have left) and its event is published;
    /// without one, the job is dead-lettered as `internal_error` with a `rejected` event. The
    /// rest of the queue keeps flowing either way.
    pub(super) async fn end_refused(&self, job: &Job, owner: Owner<'_>) -> Disposition {
        const DETAIL: &str = "the database refused a write for this job; see otpd's log";
        let aborted = match self.persist(|| self.store.abort(owner, DETAIL)).await {
            Ok(aborted) => aborted,
            Err(Halt::Interrupted) => return Disposition::Abandon,
            // Even the plainest write is refused: the dead-letter queue keeps the job.
            Err(_) => None,
        };
        match aborted {
            Some(outcome) if outcome.state == DeliveryState::Failed => {
                self.metrics
                    .jobs
                    .get_or_create(&JobLabels {
                        channel: job.channel.as_str(),
                        state: DeliveryState::Failed.as_str(),
                    })
                    .inc();
                let event = self.event(job, outcome.state).with_outcome(&outcome);
                match self.publish(&event).await {
                    Ok(()) => Disposition::Ack(Ending::Finished(DeliveryState::Failed)),
                    Err(_) => Disposition::Abandon,
                }
            }
            _ => {
                let mut r = Rejection::new(RejectReason::InternalError, DETAIL);
                r.challenge_id = Some(job.challenge_id.clone());
                self.reject(r, &job.metadata).await
            }
        }
    }

    /// Runs a store operation until it succeeds or shutdown begins. An outage therefore holds
    /// the job (unacked) instead of failing it, and nothing is acked without a commit.
    pub(super) async fn persist<T, F, Fut>(&self, mut op: F) -> Result<T, Halt>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match op().await {
                Ok(v) => {
                    self.store_answered(true);
                    return Ok(v);
                }
                Err(e) if e.is_retryable() => {
                    if e.is_outage() {
                        self.store_answered(false);
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "store operation failed");
                }
                Err(e) => {
                    tracing::error!(error = %e, "the database refused this job's write; ending the job");
                    return Err(Halt::Refused);
                }
            }
            self.sleep(delay).await?;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn store_answered(&self, up: bool) {
        let was_down = self.store_gate.down.swap(!up, Ordering::Relaxed);
        if was_down == up {
            self.metrics.store_available.set(i64::from(up));
            if up {
                tracing::info!("PostgreSQL answers again; taking new work");
            } else {
                tracing::error!("PostgreSQL is unreachable; taking no new work until it is back");
            }
        }
    }

    /// Intake calls this before starting each job: while the store is down it waits, probing
    /// it every half second, so that new jobs stay in the broker (unacked, bounded by the
    /// prefetch) rather than pile up mid-way. Returns false if shutdown began meanwhile.
    pub async fn ready_for_work(&self) -> bool {
        while self.store_gate.down.load(Ordering::Relaxed) {
            if self.sleep(Duration::from_millis(500)).await.is_err() {
                return false;
            }
            if self.store.ping().await.is_ok() {
                self.store_answered(true);
            }
        }
        true
    }

    pub(super) async fn sleep(&self, d: Duration) -> Result<(), Halt> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Halt::Interrupted),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }
}
