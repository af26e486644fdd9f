//! Per-destination and per-account limits, in process (governor's GCRA). v1 limits hold per
//! instance; issue 4 makes them exact across instances in PostgreSQL.

use crate::config::{LimitSettings, Rate};
use crate::domain::{AccountId, Destination};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::time::Duration;

pub struct Limiter {
    enabled: bool,
    destination: DefaultKeyedRateLimiter<Vec<u8>>,
    account: DefaultKeyedRateLimiter<String>,
}

/// A refusal: the stable reason code and how long until a code would be allowed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub reason: &'static str,
    pub retry_after: Duration,
}

fn quota(rate: Rate) -> Quota {
    // Validated non-zero at config load; max(1) keeps this total anyway.
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(rate.period_secs.max(1)) / burst.get();
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

impl Limiter {
    pub fn new(s: &LimitSettings) -> Limiter {
        Limiter {
            enabled: s.enabled,
            destination: DefaultKeyedRateLimiter::keyed(quota(s.phone)),
            account: DefaultKeyedRateLimiter::keyed(quota(s.account)),
        }
    }

    /// Takes one unit from the destination's and the account's buckets, or says which refused.
    /// The destination is keyed by its HMAC, so the limiter holds no phone numbers.
    pub fn check(
        &self,
        to: &Destination,
        destination_hmac: &[u8],
        account: &AccountId,
    ) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        let clock = governor::clock::DefaultClock::default();
        let scope = match to {
            Destination::Phone(_) => "rate_limited.phone",
            Destination::Email(_) => "rate_limited.email",
        };
        let wait = |not_until: governor::NotUntil<_>| {
            use governor::clock::Clock;
            not_until.wait_time_from(clock.now())
        };
        self.destination
            .check_key(&destination_hmac.to_vec())
            .map_err(|n| Limited {
                reason: scope,
                retry_after: wait(n),
            })?;
        self.account
            .check_key(&account.as_str().to_string())
            .map_err(|n| Limited {
                reason: "rate_limited.account",
                retry_after: wait(n),
            })
    }

    /// Forgets keys whose buckets are full again, so memory does not grow with every number
    /// ever seen. Called periodically.
    pub fn shrink(&self) {
        self.destination.retain_recent();
        self.account.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;

    fn limiter(burst: u32) -> Limiter {
        Limiter::new(&LimitSettings {
            enabled: true,
            phone: Rate {
                burst,
                period_secs: 600,
            },
            account: Rate {
                burst: 100,
                period_secs: 600,
            },
        })
    }

    #[test]
    fn the_burst_is_allowed_then_the_destination_is_refused() {
        let l = limiter(3);
        let to = Destination::Phone(PhoneNumber::parse("+14155550123").unwrap());
        let acct = AccountId::parse("a").unwrap();
        for _ in 0..3 {
            assert!(l.check(&to, b"k1", &acct).is_ok());
        }
        let refused = l.check(&to, b"k1", &acct).unwrap_err();
        assert_eq!(refused.reason, "rate_limited.phone");
        // One unit refills every 600/3 = 200 s.
        assert!(
            refused.retry_after > Duration::from_secs(190)
                && refused.retry_after <= Duration::from_secs(200)
        );
        assert!(
            l.check(&to, b"k2", &acct).is_ok(),
            "other destinations are unaffected"
        );
    }

    #[test]
    fn the_account_limit_spans_destinations() {
        let l = Limiter::new(&LimitSettings {
            enabled: true,
            phone: Rate {
                burst: 5,
                period_secs: 600,
            },
            account: Rate {
                burst: 2,
                period_secs: 600,
            },
        });
        let to = Destination::Phone(PhoneNumber::parse("+14155550123").unwrap());
        let acct = AccountId::parse("a").unwrap();
        assert!(l.check(&to, b"1", &acct).is_ok());
        assert!(l.check(&to, b"2", &acct).is_ok());
        assert_eq!(
            l.check(&to, b"3", &acct).unwrap_err().reason,
            "rate_limited.account"
        );
    }
}
