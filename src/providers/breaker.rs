//! A circuit breaker per provider: pure state, driven by the caller's clock, so it is tested
//! without time passing.
//!
//! Closed: every call goes through; `threshold` consecutive transient failures open it,
//! provided at least half of the last 20 calls failed (a provider-wide error such as bad
//! credentials opens it at once). Open: no calls until `open_for` has passed. Half-open: one
//! probe call goes through; its success closes the breaker, its failure opens it again. A probe that never reports (its job was cancelled) is
//! replaced by another after `open_for`.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

impl BreakerState {
    /// The value of the otpd_provider_breaker_state gauge.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen { .. } => 1,
            BreakerState::Open { .. } => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen { .. } => "half_open",
            BreakerState::Open { .. } => "open",
        }
    }
}

/// Whether a call may go to the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes; `probe` when this call is the half-open probe.
    Yes { probe: bool },
    /// Not before this instant.
    NotUntil(Instant),
}

/// How many recent calls the failure rate is taken over.
const WINDOW: u32 = 20;

#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    /// The last `seen` (at most `WINDOW`) outcomes, newest in bit 0; a set bit is a failure.
    recent: u32,
    seen: u32,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            recent: 0,
            seen: 0,
            threshold: threshold.max(1),
            open_for,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Asks to make a call at `now`; a `Yes { probe: true }` moves the breaker to half-open.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::Yes { probe: false },
            BreakerState::Open { until }
            | BreakerState::HalfOpen {
                probe_started: until,
            } if now < self.probe_due(until) => Admit::NotUntil(self.probe_due(until)),
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { probe_started: now };
                Admit::Yes { probe: true }
            }
        }
    }

    /// When the next probe may start, given the instant stored in the current state.
    fn probe_due(&self, stored: Instant) -> Instant {
        match self.state {
            BreakerState::HalfOpen { .. } => stored + self.open_for,
            _ => stored,
        }
    }

    /// The provider answered (sent, or refused only this destination, or asked to slow down).
    pub fn on_success(&mut self) {
        if !matches!(self.state, BreakerState::Closed) {
            // A recovered provider is judged afresh, not by the failures that opened it.
            self.recent = 0;
            self.seen = 0;
        }
        self.consecutive_failures = 0;
        self.record(false);
        self.state = BreakerState::Closed;
    }

    /// A transient failure: network, timeout, 5xx. Opens the breaker after `threshold`
    /// consecutive failures, but only if at least half of the recent calls failed too: under
    /// concurrency, a provider that fails one call in four still shows runs of failures, and
    /// cutting it off would cost more deliveries than it saves.
    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.record(true);
        let probing = matches!(self.state, BreakerState::HalfOpen { .. });
        let mostly_failing = self.recent.count_ones() * 2 >= self.seen;
        if probing || (self.consecutive_failures >= self.threshold && mostly_failing) {
            self.open(now);
        }
    }

    fn record(&mut self, failed: bool) {
        self.recent = ((self.recent << 1) | u32::from(failed)) & ((1 << WINDOW) - 1);
        self.seen = (self.seen + 1).min(WINDOW);
    }

    /// A provider-wide permanent error (bad credentials, suspended account): open at once.
    pub fn trip(&mut self, now: Instant) {
        self.consecutive_failures = self.threshold;
        self.open(now);
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.open_for,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, OPEN);
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.admit(t0), Admit::Yes { probe: false });
        b.on_failure(t0);
        assert_eq!(b.admit(t0), Admit::NotUntil(t0 + OPEN));
        assert_eq!(b.state().name(), "open");
    }

    #[test]
    fn a_run_of_failures_in_mostly_good_traffic_does_not_open_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(5, OPEN);
        (0..15).for_each(|_| b.on_success());
        // Five in a row, but 5 of the last 20 calls: a flaky provider, not a dead one.
        (0..5).for_each(|_| b.on_failure(t0));
        assert_eq!(b.state(), BreakerState::Closed);
        // Five more: now half of the last 20 failed.
        (0..4).for_each(|_| b.on_failure(t0));
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure(t0);
        assert_eq!(b.state().name(), "open");
    }

    #[test]
    fn one_probe_after_the_open_period_then_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, OPEN);
        b.on_failure(t0);
        let later = t0 + OPEN;
        assert_eq!(b.admit(later), Admit::Yes { probe: true });
        // Only one probe at a time.
        assert_eq!(b.admit(later), Admit::NotUntil(later + OPEN));
        b.on_success();
        assert_eq!(b.admit(later), Admit::Yes { probe: false });
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(5, OPEN);
        b.trip(t0);
        assert!(matches!(b.admit(t0 + OPEN), Admit::Yes { probe: true }));
        b.on_failure(t0 + OPEN);
        assert_eq!(b.admit(t0 + OPEN), Admit::NotUntil(t0 + OPEN + OPEN));
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_open_period() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, OPEN);
        b.trip(t0);
        assert!(matches!(b.admit(t0 + OPEN), Admit::Yes { probe: true }));
        let much_later = t0 + OPEN + OPEN;
        assert_eq!(b.admit(much_later), Admit::Yes { probe: true });
    }

    #[test]
    fn gauge_values_are_stable() {
        let t0 = Instant::now();
        assert_eq!(BreakerState::Closed.gauge(), 0);
        assert_eq!(BreakerState::HalfOpen { probe_started: t0 }.gauge(), 1);
        assert_eq!(BreakerState::Open { until: t0 }.gauge(), 2);
    }
}
