//! Adaptive concurrency per provider: at most `limit` calls in flight, where `limit` starts at the
//! configured maximum, halves on every 429 and grows back by one on every success (AIMD, as TCP
//! does). A rate-limited provider therefore slows down by itself instead of being hammered by
//! every waiting job at once (the retry storm Zitadel users reported), and other providers are
//! not affected.

use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

#[derive(Debug)]
struct Counts {
    limit: u32,
    in_flight: u32,
}

#[derive(Debug)]
pub struct Throttle {
    max: u32,
    counts: Mutex<Counts>,
    freed: Notify,
}

/// A call slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    throttle: Arc<Throttle>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.throttle.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
        drop(c);
        self.throttle.freed.notify_one();
    }
}

impl Throttle {
    pub fn new(max: u32) -> Arc<Throttle> {
        let max = max.max(1);
        Arc::new(Throttle {
            max,
            counts: Mutex::new(Counts {
                limit: max,
                in_flight: 0,
            }),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under a panic elsewhere: each update is one assignment.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot if one is free under the current limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut c = self.lock();
        if c.in_flight >= c.limit {
            return None;
        }
        c.in_flight += 1;
        Some(Slot {
            throttle: Arc::clone(self),
        })
    }

    /// Waits for a slot. Cancel-safe: dropping the future gives up the wait and takes nothing.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Register before checking, so a slot freed in between is not missed.
            freed.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            freed.await;
        }
    }

    /// The provider answered 429: halve the limit (never below one).
    pub fn on_rate_limited(&self) {
        let mut c = self.lock();
        c.limit = (c.limit / 2).max(1);
    }

    /// A call succeeded: grow the limit back by one, up to the maximum.
    pub fn on_success(&self) {
        let grew = {
            let mut c = self.lock();
            let before = c.limit;
            c.limit = (c.limit + 1).min(self.max);
            c.limit > before
        };
        if grew {
            self.freed.notify_one();
        }
    }

    pub fn limit(&self) -> u32 {
        self.lock().limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_429_and_regrows_by_one() {
        let t = Throttle::new(8);
        t.on_rate_limited();
        assert_eq!(t.limit(), 4);
        t.on_rate_limited();
        t.on_rate_limited();
        t.on_rate_limited();
        assert_eq!(t.limit(), 1, "never below one");
        for _ in 0..20 {
            t.on_success();
        }
        assert_eq!(t.limit(), 8, "never above the maximum");
    }

    #[test]
    fn holds_at_most_limit_slots() {
        let t = Throttle::new(2);
        let a = t.try_acquire().unwrap();
        let _b = t.try_acquire().unwrap();
        assert!(t.try_acquire().is_none());
        drop(a);
        assert!(t.try_acquire().is_some());
        t.on_rate_limited();
        assert!(t.try_acquire().is_none(), "over the lowered limit");
    }

    #[tokio::test]
    async fn a_waiter_gets_the_freed_slot() {
        let t = Throttle::new(1);
        let held = t.try_acquire().unwrap();
        let waiter = tokio::spawn({
            let t = Arc::clone(&t);
            async move { t.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let slot = waiter.await.unwrap();
        assert!(t.try_acquire().is_none());
        drop(slot);
        assert!(t.try_acquire().is_some());
    }
}
