//! Rate limits and abuse controls (docs/limits.md).
//!
//! Everything here decides from state handed in: the shared counters come from PostgreSQL
//! (dispatch locks, passes and writes them back in one transaction), so the limits hold across
//! instances and this module never touches the store. The in-process caches (refusals, and
//! prefixes blocked for low conversion) can only make a decision stricter, never looser.

mod gcra;
mod geo;
pub mod signing;

pub use crate::domain::{Counter, Refusal};
pub use gcra::Spec;
use geo::GeoRefusal;

use crate::config::{ConversionMode, RuleSettings, Scope, Settings};
use crate::domain::{Channel, DeliveryState, FailReason, PhoneNumber};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Spend is counted in millionths of the configured currency.
const MICROS: f64 = 1_000_000.0;

/// A job as the limits see it, computed once.
pub struct Subject<'a> {
    pub channel: Channel,
    pub account: &'a str,
    /// Keyed HMAC (hex) of the destination.
    pub destination_key: &'a str,
    /// Keyed HMAC (hex) of the client IP (its /64 for IPv6).
    pub ip_key: Option<&'a str>,
    pub phone: Option<&'a PhoneNumber>,
}

/// One counter a job takes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    pub rule: String,
    pub key: String,
    pub spec: Spec,
    pub cost: i64,
    /// `RateLimit` or `Budget`.
    pub reason: FailReason,
}

struct Rule {
    name: String,
    scope: Scope,
    prefix_digits: usize,
    spec: Spec,
    channels: Vec<Channel>,
    reason: FailReason,
    /// Spend rules cost the message's price; others one unit.
    spend: bool,
}

pub struct Limits {
    enabled: bool,
    rules: Vec<Rule>,
    /// Channel → country (upper case, or "DEFAULT") → price in micros.
    prices: HashMap<Channel, HashMap<String, i64>>,
    geo: geo::Geo,
    conversion_digits: usize,
    enforce_conversion: bool,
    /// Rule → key → refused until. Counters only move forward, so a refusal stands at least
    /// until its retry_after, whatever other instances do. Nested so that a lookup borrows.
    refused: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// Prefix → blocked until (conversion enforce mode), refreshed from the database.
    blocked: RwLock<HashMap<String, DateTime<Utc>>>,
}

fn compile(name: &str, r: &RuleSettings) -> Rule {
    let cap = |n: u64| (n > 0).then(|| i64::try_from(n).unwrap_or(i64::MAX));
    Rule {
        name: name.to_string(),
        scope: r.scope,
        prefix_digits: usize::from(r.prefix_digits),
        spec: Spec {
            rate: (r.burst > 0).then(|| (r.burst, Duration::from_secs(r.period_secs))),
            per_hour: cap(r.per_hour),
            per_day: cap(r.per_day),
        },
        channels: r
            .channels
            .0
            .iter()
            .filter_map(|c| Channel::parse(c))
            .collect(),
        reason: FailReason::RateLimit,
        spend: false,
    }
}

fn budget_rule(name: &str, scope: Scope, per_hour: f64, per_day: f64) -> Option<Rule> {
    let cap = |v: f64| (v > 0.0).then(|| (v * MICROS).round() as i64);
    let spec = Spec {
        rate: None,
        per_hour: cap(per_hour),
        per_day: cap(per_day),
    };
    (spec.per_hour.is_some() || spec.per_day.is_some()).then(|| Rule {
        name: name.to_string(),
        scope,
        prefix_digits: 0,
        spec,
        channels: Vec::new(),
        reason: FailReason::Budget,
        spend: true,
    })
}

impl Limits {
    pub fn new(s: &Settings) -> Limits {
        let mut rules: Vec<Rule> = s
            .limits
            .rules
            .iter()
            .filter(|(_, r)| r.enabled)
            .map(|(name, r)| compile(name, r))
            .collect();
        let b = &s.budget;
        rules.extend(budget_rule("budget", Scope::Global, b.per_hour, b.per_day));
        rules.extend(budget_rule(
            "budget.account",
            Scope::Account,
            b.account_per_hour,
            b.account_per_day,
        ));
        let prices = b
            .prices
            .iter()
            .filter_map(|(channel, table)| {
                let table = table
                    .iter()
                    .map(|(c, p)| (c.to_ascii_uppercase(), (p * MICROS).round() as i64))
                    .collect();
                Some((Channel::parse(channel)?, table))
            })
            .collect();
        Limits {
            enabled: s.limits.enabled,
            rules,
            prices,
            geo: geo::Geo::new(&s.geo),
            conversion_digits: usize::from(s.conversion.prefix_digits),
            enforce_conversion: s.conversion.mode == ConversionMode::Enforce,
            refused: Mutex::new(HashMap::new()),
            blocked: RwLock::new(HashMap::new()),
        }
    }

    /// Whether any rule or budget counts jobs (`limits.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The price of one message on `channel` to `country`, in micros.
    pub fn price(&self, channel: Channel, country: Option<&str>) -> i64 {
        let Some(table) = self.prices.get(&channel) else {
            return 0;
        };
        country
            .and_then(|c| table.get(c))
            .or_else(|| table.get("DEFAULT"))
            .copied()
            .unwrap_or(0)
    }

    /// The number range conversion is tracked by.
    pub fn conversion_prefix<'p>(&self, phone: &'p PhoneNumber) -> &'p str {
        phone.prefix(self.conversion_digits)
    }

    /// Geo permissions and conversion blocks: refusals that need no shared counter.
    pub fn screen(&self, channel: Channel, phone: Option<&PhoneNumber>) -> Result<(), Refusal> {
        let Some(phone) = phone else { return Ok(()) };
        if let Err(refusal) = self.geo.check(channel, phone) {
            let (reason, detail) = match refusal {
                GeoRefusal::Country(c) => (
                    FailReason::CountryDenied,
                    format!("{channel} to {c} is not allowed"),
                ),
                GeoRefusal::NumberType(t) => (
                    FailReason::NumberTypeDenied,
                    format!("{t} numbers are not sent to"),
                ),
            };
            return Err(Refusal {
                state: DeliveryState::Rejected,
                reason,
                rule: None,
                retry_after: None,
                detail,
            });
        }
        if self.enforce_conversion {
            let prefix = self.conversion_prefix(phone);
            let until = read(&self.blocked).get(prefix).copied();
            if let Some(wait) = until.and_then(|u| (u - Utc::now()).to_std().ok()) {
                return Err(Refusal {
                    state: DeliveryState::RateLimited,
                    reason: FailReason::LowConversion,
                    rule: Some("conversion".into()),
                    retry_after: Some(wait),
                    detail: format!("the range +{prefix} is blocked for low conversion"),
                });
            }
        }
        Ok(())
    }

    /// Replaces the set of prefixes blocked for low conversion.
    pub fn set_blocked(&self, blocked: HashMap<String, DateTime<Utc>>) {
        *self.blocked.write().unwrap_or_else(PoisonError::into_inner) = blocked;
    }

    /// The counters `subject` takes from, in a stable order (the lock order).
    pub fn takes(&self, s: &Subject<'_>) -> Vec<Take> {
        if !self.enabled {
            return Vec::new();
        }
        let country = s.phone.map(PhoneNumber::country);
        let mut takes: Vec<Take> = self
            .rules
            .iter()
            .filter(|r| r.channels.is_empty() || r.channels.contains(&s.channel))
            .filter_map(|r| {
                let key = match r.scope {
                    Scope::Phone => s.destination_key.to_string(),
                    Scope::Account => s.account.to_string(),
                    Scope::Ip => s.ip_key?.to_string(),
                    Scope::Country => country?.to_string(),
                    Scope::Prefix => s.phone?.prefix(r.prefix_digits).to_string(),
                    Scope::AccountChannel => format!("{}/{}", s.account, s.channel),
                    Scope::Global => String::new(),
                };
                let cost = if r.spend {
                    self.price(s.channel, country)
                } else {
                    1
                };
                (cost > 0).then(|| Take {
                    rule: r.name.clone(),
                    key,
                    spec: r.spec,
                    cost,
                    reason: r.reason,
                })
            })
            .collect();
        takes.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
        takes
    }

    /// A refusal this instance already knows will stand, sparing the database round trip.
    pub fn cached(&self, takes: &[Take]) -> Option<Refusal> {
        let now = Instant::now();
        let refused = lock(&self.refused);
        takes.iter().find_map(|t| {
            let until = *refused.get(&t.rule)?.get(&t.key)?;
            (until > now).then(|| refusal(t, until - now))
        })
    }

    /// Takes every counter at `now` (the database's clock), or refuses the job as a whole: a
    /// refused job takes nothing. `counters` are in the order of `takes`.
    pub fn decide(
        &self,
        takes: &[Take],
        counters: &[Counter],
        now: DateTime<Utc>,
    ) -> Result<Vec<Counter>, Refusal> {
        let mut next = Vec::with_capacity(takes.len());
        let mut worst: Option<(&Take, Duration)> = None;
        for (t, c) in takes.iter().zip(counters) {
            match gcra::take(&t.spec, c, now, t.cost) {
                Ok(n) => next.push(n),
                Err(wait) => {
                    // A spend refusal may not stand for a cheaper message: only unit costs
                    // are cached, which keeps the cache exact.
                    if t.cost == 1 {
                        let until = Instant::now() + wait;
                        lock(&self.refused)
                            .entry(t.rule.clone())
                            .or_default()
                            .insert(t.key.clone(), until);
                    }
                    if worst.is_none_or(|(_, w)| wait > w) {
                        worst = Some((t, wait));
                    }
                }
            }
        }
        match worst {
            Some((t, wait)) => Err(refusal(t, wait)),
            None => Ok(next),
        }
    }

    /// Forgets refusals that have run out. Called periodically.
    pub fn shrink(&self) {
        let now = Instant::now();
        let mut refused = lock(&self.refused);
        for keys in refused.values_mut() {
            keys.retain(|_, until| *until > now);
        }
        refused.retain(|_, keys| !keys.is_empty());
    }
}

fn refusal(t: &Take, wait: Duration) -> Refusal {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    Refusal {
        state: DeliveryState::RateLimited,
        reason: t.reason,
        rule: Some(t.rule.clone()),
        retry_after: Some(wait),
        detail: format!("limit `{}`: retry after {secs} s", t.rule),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update is a single insert or retain; a panic elsewhere cannot leave it half-done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
