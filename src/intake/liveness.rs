//! Whether intake is making progress, for `/readyz`. A broker connection and a database
//! round trip can both be fine while no job moves: every prefetch slot held by jobs that
//! never finish. That is what this catches: jobs in hand and none finished for a while.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    in_hand: AtomicUsize,
    /// Milliseconds since `epoch` of the last job finished, or of the first one taken after
    /// an idle spell (an idle intake is not a stalled one).
    last_progress_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            epoch: Instant::now(),
            in_hand: AtomicUsize::new(0),
            last_progress_ms: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn started(&self) {
        if self.in_hand.fetch_add(1, Ordering::Relaxed) == 0 {
            self.last_progress_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    pub(super) fn finished(&self) {
        self.last_progress_ms
            .store(self.now_ms(), Ordering::Relaxed);
        self.in_hand.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long jobs have been in hand with none finishing, if longer than `limit`.
    pub fn stalled(&self, limit: Duration) -> Option<Duration> {
        if self.in_hand.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = self.now_ms()
            - self
                .last_progress_ms
                .load(Ordering::Relaxed)
                .min(self.now_ms());
        let since = Duration::from_millis(since);
        (since > limit).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_or_moving_intake_is_not_stalled() {
        let l = Liveness::default();
        assert_eq!(l.stalled(Duration::ZERO), None, "nothing in hand");
        l.started();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            l.stalled(Duration::ZERO).is_some(),
            "in hand, nothing finished"
        );
        assert_eq!(l.stalled(Duration::from_secs(60)), None);
        l.finished();
        assert_eq!(l.stalled(Duration::ZERO), None);
    }
}
