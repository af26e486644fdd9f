//! Store outages: every write is retried until it commits (a job is never acked without its
//! commit), and while PostgreSQL is unreachable no new job is started.

use super::{Dispatcher, Halt};
use crate::store::StoreError;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether the store answered the last time it was asked.
#[derive(Debug, Default)]
pub(super) struct StoreGate {
    down: AtomicBool,
}

impl Dispatcher {
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
                Err(e) => {
                    if e.is_outage() {
                        self.store_answered(false);
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "store operation failed");
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
