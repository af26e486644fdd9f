//! The arithmetic of one counter: a GCRA rate with a burst, and caps per UTC clock hour and
//! day. Pure: the state comes from PostgreSQL and goes back there, and `now` is the
//! database's clock so that every instance judges by the same time.

use crate::domain::Counter;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use std::time::Duration;

/// What a counter allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// `burst` units at once, refilled evenly over `period`.
    pub rate: Option<(u32, Duration)>,
    pub per_hour: Option<i64>,
    pub per_day: Option<i64>,
}

/// Takes `cost` units at `now`: the new state, or how long until it would be allowed.
pub fn take(spec: &Spec, c: &Counter, now: DateTime<Utc>, cost: i64) -> Result<Counter, Duration> {
    let mut next = c.clone();
    let mut wait = TimeDelta::zero();
    if let Some((burst, period)) = spec.rate {
        let period = TimeDelta::from_std(period).unwrap_or(TimeDelta::MAX);
        let interval = period / burst.max(1) as i32;
        let start = c.tat.map_or(now, |t| t.max(now));
        let tat = start + interval * cost.clamp(0, i32::MAX as i64) as i32;
        // Allowed while the bucket, after this take, holds no more than `period` of debt.
        let over = tat - now - period;
        if over > TimeDelta::zero() {
            wait = wait.max(over);
        } else {
            next.tat = Some(tat);
        }
    }
    if let Some(cap) = spec.per_hour {
        let window = window_start(now, TimeDelta::hours(1));
        match window_take(cap, c.hour_start, c.hour_used, window, cost) {
            Some(used) => (next.hour_start, next.hour_used) = (Some(window), used),
            None => wait = wait.max(window + TimeDelta::hours(1) - now),
        }
    }
    if let Some(cap) = spec.per_day {
        let window = window_start(now, TimeDelta::days(1));
        match window_take(cap, c.day_start, c.day_used, window, cost) {
            Some(used) => (next.day_start, next.day_used) = (Some(window), used),
            None => wait = wait.max(window + TimeDelta::days(1) - now),
        }
    }
    if wait > TimeDelta::zero() {
        // Round up to whole milliseconds so that a retry at `now + wait` is allowed.
        let ms = wait.num_milliseconds() + i64::from(wait.subsec_nanos() % 1_000_000 != 0);
        Err(Duration::from_millis(ms.max(1) as u64))
    } else {
        Ok(next)
    }
}

fn window_start(now: DateTime<Utc>, size: TimeDelta) -> DateTime<Utc> {
    now.duration_trunc(size).unwrap_or(now)
}

/// The units used in `window` after taking `cost`, or None if that would pass `cap`.
fn window_take(
    cap: i64,
    start: Option<DateTime<Utc>>,
    used: i64,
    window: DateTime<Utc>,
    cost: i64,
) -> Option<i64> {
    let used = if start == Some(window) { used } else { 0 };
    (used + cost <= cap).then_some(used + cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn rate(burst: u32, secs: u64) -> Spec {
        Spec {
            rate: Some((burst, Duration::from_secs(secs))),
            per_hour: None,
            per_day: None,
        }
    }

    #[test]
    fn a_burst_is_allowed_then_one_unit_per_interval() {
        let spec = rate(5, 600);
        let t0 = at("2026-11-22T10:00:00Z");
        let mut c = Counter::default();
        for _ in 0..5 {
            c = take(&spec, &c, t0, 1).unwrap();
        }
        // The sixth waits one interval (600 / 5 = 120 s) from the first take.
        assert_eq!(take(&spec, &c, t0, 1), Err(Duration::from_secs(120)));
        let later = t0 + TimeDelta::seconds(119);
        assert_eq!(take(&spec, &c, later, 1), Err(Duration::from_secs(1)));
        let c = take(&spec, &c, t0 + TimeDelta::seconds(120), 1).unwrap();
        assert!(take(&spec, &c, t0 + TimeDelta::seconds(120), 1).is_err());
    }

    #[test]
    fn a_refusal_leaves_the_counter_unchanged_so_waiting_clients_are_not_punished() {
        let spec = rate(1, 60);
        let t0 = at("2026-11-22T10:00:00Z");
        let c = take(&spec, &Counter::default(), t0, 1).unwrap();
        for s in 1..60 {
            assert!(take(&spec, &c, t0 + TimeDelta::seconds(s), 1).is_err());
        }
        assert!(take(&spec, &c, t0 + TimeDelta::seconds(60), 1).is_ok());
    }

    #[test]
    fn hourly_caps_reset_on_the_clock_hour() {
        let spec = Spec {
            rate: None,
            per_hour: Some(3),
            per_day: None,
        };
        let t0 = at("2026-11-22T10:59:00Z");
        let mut c = Counter::default();
        for _ in 0..3 {
            c = take(&spec, &c, t0, 1).unwrap();
        }
        assert_eq!(take(&spec, &c, t0, 1), Err(Duration::from_secs(60)));
        let c = take(&spec, &c, at("2026-11-22T11:00:00Z"), 1).unwrap();
        assert_eq!(c.hour_used, 1);
    }

    #[test]
    fn spend_is_counted_by_cost_against_a_daily_cap() {
        let spec = Spec {
            rate: None,
            per_hour: None,
            per_day: Some(100_000),
        };
        let t0 = at("2026-11-22T23:00:00Z");
        let c = take(&spec, &Counter::default(), t0, 60_000).unwrap();
        // 60,000 + 60,000 passes the cap; a cheaper message still fits.
        assert_eq!(take(&spec, &c, t0, 60_000), Err(Duration::from_secs(3600)));
        assert_eq!(take(&spec, &c, t0, 40_000).unwrap().day_used, 100_000);
    }

    #[test]
    fn the_longest_wait_of_rate_and_caps_is_reported() {
        let spec = Spec {
            rate: Some((10, Duration::from_secs(10))),
            per_hour: Some(1),
            per_day: None,
        };
        let t0 = at("2026-11-22T10:30:00Z");
        let c = take(&spec, &Counter::default(), t0, 1).unwrap();
        assert_eq!(take(&spec, &c, t0, 1), Err(Duration::from_secs(1800)));
    }
}
