//! The retry policy: pure, so it is tested without clocks or providers.
//!
//! Capped exponential backoff with full jitter (AWS's "full jitter": a uniform draw between zero
//! and the capped exponential delay), so that many jobs failing together do not retry together.
//! A provider's `Retry-After` is a floor. No attempt starts within `expiry_margin` of the code's
//! expiry: a code that arrives as it expires only frustrates its user.
//!
//! backon's builder is not used here because its jitter adds up to one extra delay (it is not
//! full jitter) and it cannot see the code's deadline; it does drive AMQP reconnects.

use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub expiry_margin: Duration,
    /// The longest one provider call may take.
    pub attempt_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// `max_attempts` have been made.
    Exhausted,
    /// The next attempt would start too close to (or after) the code's expiry.
    WouldExpire,
}

impl RetryPolicy {
    pub fn from_settings(s: &crate::config::RetrySettings) -> RetryPolicy {
        RetryPolicy {
            max_attempts: s.max_attempts,
            initial_delay: Duration::from_millis(s.initial_delay_ms),
            max_delay: Duration::from_millis(s.max_delay_ms),
            expiry_margin: s.expiry_margin(),
            attempt_timeout: Duration::from_millis(s.attempt_timeout_ms),
        }
    }

    /// How long a call starting at `now` may take: the attempt timeout, cut short at the code's
    /// expiry, so that otpd never has a call in flight for an expired code. (A provider may
    /// still act on a request it had received; that call is then in doubt.)
    pub fn call_timeout(&self, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Duration {
        let left = (expires_at - now).to_std().unwrap_or_default();
        self.attempt_timeout.min(left)
    }

    /// The capped exponential delay after the `attempt`-th failure (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    /// Decides what follows the failed attempt number `attempt`. `jitter` is a uniform draw in
    /// [0, 1]; `retry_after` is the provider's own hint, if it gave one.
    pub fn decide(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Decision {
        if attempt >= self.max_attempts {
            return Decision::Exhausted;
        }
        let jittered = self.ceiling(attempt).mul_f64(jitter.clamp(0.0, 1.0));
        let delay = retry_after.map_or(jittered, |hint| hint.max(jittered));
        if !self.may_start(now + delay, expires_at) {
            return Decision::WouldExpire;
        }
        Decision::RetryAfter(delay)
    }

    /// Whether an attempt may start at `at` for a code expiring at `expires_at`.
    pub fn may_start(&self, at: DateTime<Utc>, expires_at: DateTime<Utc>) -> bool {
        let margin =
            chrono::Duration::from_std(self.expiry_margin).unwrap_or(chrono::Duration::MAX);
        at.checked_add_signed(margin)
            .is_some_and(|t| t < expires_at)
    }
}

/// The code's remaining life at `now`: what an SMS carries to the carrier as its validity, so
/// that a message stuck in a queue dies rather than arriving with a dead code. Zero once past.
pub fn remaining_life(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Duration {
    (expires_at - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
            expiry_margin: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + s, 0).unwrap()
    }

    #[test]
    fn the_ceiling_doubles_and_is_capped() {
        let p = policy();
        let ms: Vec<u128> = (1..=6).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(4), "no overflow");
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let p = policy();
        assert_eq!(
            p.decide(3, None, 0.0, t(0), t(600)),
            Decision::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            p.decide(3, None, 1.0, t(0), t(600)),
            Decision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(3, None, 0.25, t(0), t(600)),
            Decision::RetryAfter(Duration::from_millis(500))
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = policy();
        let d = p.decide(1, Some(Duration::from_secs(30)), 1.0, t(0), t(600));
        assert_eq!(d, Decision::RetryAfter(Duration::from_secs(30)));
        let d = p.decide(4, Some(Duration::from_millis(1)), 1.0, t(0), t(600));
        assert_eq!(d, Decision::RetryAfter(Duration::from_secs(4)));
    }

    #[test]
    fn attempts_are_bounded() {
        assert_eq!(
            policy().decide(5, None, 0.5, t(0), t(600)),
            Decision::Exhausted
        );
    }

    #[test]
    fn no_attempt_starts_inside_the_expiry_margin() {
        let p = policy();
        // Retry-After of 56 s + 5 s margin lands past expiry at 60 s.
        assert_eq!(
            p.decide(1, Some(Duration::from_secs(56)), 0.0, t(0), t(60)),
            Decision::WouldExpire
        );
        assert_eq!(
            p.decide(1, Some(Duration::from_secs(54)), 0.0, t(0), t(60)),
            Decision::RetryAfter(Duration::from_secs(54))
        );
        assert!(!p.may_start(t(55), t(60)));
        assert!(p.may_start(t(54), t(60)));
    }

    #[test]
    fn no_call_outlives_the_code() {
        let p = policy();
        assert_eq!(p.call_timeout(t(0), t(600)), Duration::from_secs(10));
        assert_eq!(p.call_timeout(t(54), t(60)), Duration::from_secs(6));
        assert_eq!(p.call_timeout(t(61), t(60)), Duration::ZERO);
    }

    #[test]
    fn remaining_life_is_the_time_to_expiry_and_never_negative() {
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(90);
        assert_eq!(remaining_life(now, later), Duration::from_secs(90));
        assert_eq!(remaining_life(later, now), Duration::ZERO);
    }
}
