//! The rules as compiled from the shipped configuration: which counters a job takes, and how a
//! decision over them comes out.

use super::*;
use crate::config::{self, Settings};

fn settings() -> Settings {
    config::load(None).expect("the shipped defaults load")
}

fn phone(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s).unwrap()
}

fn subject<'a>(channel: Channel, p: Option<&'a PhoneNumber>, ip: Option<&'a str>) -> Subject<'a> {
    Subject {
        channel,
        account: "acct-1",
        destination_key: "d1",
        ip_key: ip,
        phone: p,
    }
}

fn keys(takes: &[Take]) -> Vec<(&str, &str)> {
    takes
        .iter()
        .map(|t| (t.rule.as_str(), t.key.as_str()))
        .collect()
}

#[test]
fn an_sms_job_takes_the_shipped_rules_by_their_keys_in_lock_order() {
    let limits = Limits::new(&settings());
    let p = phone("+14155550142");
    let takes = limits.takes(&subject(Channel::Sms, Some(&p), Some("ip1")));
    assert_eq!(
        keys(&takes),
        [
            ("account", "acct-1"),
            ("ip", "ip1"),
            ("phone", "d1"),
            ("prefix", "14155550")
        ]
    );
}

#[test]
fn rules_without_their_key_or_channel_do_not_apply() {
    let limits = Limits::new(&settings());
    // An email has no prefix (and the prefix rule is for sms and voice); no client_ip, no ip rule.
    let takes = limits.takes(&subject(Channel::Email, None, None));
    assert_eq!(keys(&takes), [("account", "acct-1"), ("phone", "d1")]);
}

#[test]
fn budgets_cost_the_price_of_the_destination_country() {
    let mut s = settings();
    s.budget.per_day = 1.0;
    s.budget
        .prices
        .get_mut("sms")
        .unwrap()
        .insert("GB".into(), 0.04);
    s.limits.enabled = true;
    let limits = Limits::new(&s);
    let gb = phone("+447400123456");
    let takes = limits.takes(&subject(Channel::Sms, Some(&gb), None));
    let budget = takes.iter().find(|t| t.rule == "budget").unwrap();
    assert_eq!(
        (budget.cost, budget.reason, budget.key.as_str()),
        (40_000, FailReason::Budget, "")
    );
    assert_eq!(
        limits.price(Channel::Sms, Some("US")),
        8_300,
        "the default price"
    );
}

#[test]
fn a_refused_job_takes_nothing_and_the_longest_wait_is_reported_then_cached() {
    let limits = Limits::new(&settings());
    let p = phone("+14155550142");
    let takes = limits.takes(&subject(Channel::Sms, Some(&p), None));
    let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
    let mut counters = vec![Counter::default(); takes.len()];
    for _ in 0..5 {
        counters = limits.decide(&takes, &counters, now).unwrap();
    }
    let refusal = limits.decide(&takes, &counters, now).unwrap_err();
    assert_eq!(refusal.rule.as_deref(), Some("phone"));
    assert_eq!(refusal.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(refusal.state, DeliveryState::RateLimited);
    let cached = limits.cached(&takes).expect("the refusal is cached");
    assert_eq!(cached.rule.as_deref(), Some("phone"));
}

#[test]
fn turning_limits_off_takes_nothing() {
    let mut s = settings();
    s.limits.enabled = false;
    s.budget.per_day = 1.0;
    let limits = Limits::new(&s);
    let p = phone("+14155550142");
    assert!(
        limits
            .takes(&subject(Channel::Sms, Some(&p), Some("ip")))
            .is_empty()
    );
}
