//! The pure judgement: where a provider's score puts it.

use crate::config::HealthSettings;
use crate::store::{Score, Standing};
use chrono::{DateTime, Utc};

/// What one check does to a provider's standing in one country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// One place further down its chains.
    Down,
    /// One place back up.
    Up,
    Stay,
}

/// Whether a score is bad: enough messages of known fate, and too few of them delivered or the
/// delivered ones too slow.
pub fn is_bad(score: &Score, rules: &HealthSettings) -> bool {
    let samples = score.delivered + score.not_delivered;
    if samples < i64::from(rules.min_samples) {
        return false;
    }
    let ratio = score.delivered as f64 / samples as f64;
    let slow = rules.max_p95_ms > 0 && score.p95_ms.is_some_and(|p| p > rules.max_p95_ms as f64);
    ratio < rules.min_delivered_ratio || slow
}

/// A bad score moves a provider one place down (no further than `max_level`); a provider that
/// is down and has gone a whole window since its last move without a bad score moves one
/// place up. The score counts only messages sent since the last move, so a move is judged on
/// what followed it, and a demoted provider that gets no traffic drifts back a step a window.
pub fn judge(
    score: Option<&Score>,
    standing: Option<&Standing>,
    now: DateTime<Utc>,
    rules: &HealthSettings,
    max_level: i32,
) -> Move {
    let level = standing.map_or(0, |s| s.level);
    let bad = score.is_some_and(|s| is_bad(s, rules));
    if bad {
        return match level < max_level {
            true => Move::Down,
            false => Move::Stay,
        };
    }
    let settled = standing
        .is_some_and(|s| (now - s.changed_at).to_std().unwrap_or_default() >= rules.window());
    match level > 0 && settled {
        true => Move::Up,
        false => Move::Stay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn rules() -> HealthSettings {
        crate::config::load(None).unwrap().delivery.health
    }

    fn score(delivered: i64, not_delivered: i64, p95_ms: Option<f64>) -> Score {
        Score {
            provider: "a".into(),
            country: "GB".into(),
            delivered,
            not_delivered,
            p95_ms,
        }
    }

    fn standing(level: i32, ago_ms: i64) -> Standing {
        Standing {
            provider: "a".into(),
            country: "GB".into(),
            level,
            changed_at: Utc::now() - TimeDelta::milliseconds(ago_ms),
            delivered: 0,
            not_delivered: 0,
            p95_ms: None,
        }
    }

    #[test]
    fn a_score_is_bad_only_with_enough_samples() {
        let r = rules();
        let n = i64::from(r.min_samples);
        assert!(is_bad(&score(n / 2, n / 2, None), &r));
        assert!(!is_bad(&score(0, n - 1, None), &r));
        assert!(!is_bad(&score(n, 0, Some(1000.0)), &r));
        let slow = r.max_p95_ms as f64 + 1.0;
        assert!(is_bad(&score(n, 0, Some(slow)), &r));
        let off = HealthSettings {
            max_p95_ms: 0,
            ..r.clone()
        };
        assert!(!is_bad(&score(n, 0, Some(slow)), &off));
    }

    #[test]
    fn bad_moves_down_to_the_end_of_the_chain_and_no_further() {
        let r = rules();
        let bad = score(0, i64::from(r.min_samples), None);
        let now = Utc::now();
        assert_eq!(judge(Some(&bad), None, now, &r, 1), Move::Down);
        assert_eq!(
            judge(Some(&bad), Some(&standing(0, 0)), now, &r, 1),
            Move::Down
        );
        assert_eq!(
            judge(Some(&bad), Some(&standing(1, 0)), now, &r, 1),
            Move::Stay
        );
        assert_eq!(
            judge(Some(&bad), Some(&standing(1, 0)), now, &r, 2),
            Move::Down
        );
    }

    #[test]
    fn a_demoted_provider_drifts_back_a_step_per_quiet_window() {
        let r = rules();
        let window = r.window_ms as i64;
        let now = Utc::now();
        let good = score(i64::from(r.min_samples), 0, Some(10.0));
        assert_eq!(
            judge(None, Some(&standing(2, window - 1000)), now, &r, 2),
            Move::Stay
        );
        assert_eq!(
            judge(None, Some(&standing(2, window + 1)), now, &r, 2),
            Move::Up
        );
        assert_eq!(
            judge(Some(&good), Some(&standing(1, window + 1)), now, &r, 2),
            Move::Up
        );
        assert_eq!(
            judge(Some(&good), Some(&standing(0, window + 1)), now, &r, 2),
            Move::Stay
        );
        assert_eq!(judge(None, None, now, &r, 2), Move::Stay);
    }
}
