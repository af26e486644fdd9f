//! Settings for rate limits and abuse controls (docs/limits.md), and their validation.

use super::error::{ConfigError, invalid};
use super::{Secret, StringList};
use crate::domain::Channel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub enabled: bool,
    pub rules: BTreeMap<String, RuleSettings>,
}

/// What a rule counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Phone,
    Account,
    Ip,
    Country,
    Prefix,
    #[serde(alias = "account+channel")]
    AccountChannel,
    Global,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub scope: Scope,
    #[serde(default)]
    pub prefix_digits: u8,
    #[serde(default)]
    pub burst: u32,
    #[serde(default)]
    pub period_secs: u64,
    #[serde(default)]
    pub per_hour: u64,
    #[serde(default)]
    pub per_day: u64,
    /// Empty means every channel.
    #[serde(default)]
    pub channels: StringList,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    pub currency: String,
    pub per_hour: f64,
    pub per_day: f64,
    pub account_per_hour: f64,
    pub account_per_day: f64,
    /// Channel → country (or "default") → price per message.
    pub prices: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeoSettings {
    pub deny_number_types: StringList,
    pub sms: CountryRules,
    pub voice: CountryRules,
    #[serde(default)]
    pub whatsapp: CountryRules,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CountryRules {
    #[serde(default)]
    pub allow: StringList,
    #[serde(default)]
    pub deny: StringList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningMode {
    Off,
    Warn,
    Require,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    pub mode: SigningMode,
    pub max_age_secs: u64,
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversionMode {
    Off,
    Shadow,
    Enforce,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionSettings {
    pub mode: ConversionMode,
    pub prefix_digits: u8,
    pub window_secs: u64,
    pub grace_secs: u64,
    pub min_sent: u32,
    pub threshold: f64,
    pub block_secs: u64,
    pub check_interval_secs: u64,
    /// `verified` feedback counts up to this long after the code's expiry.
    pub verified_late_secs: u64,
}

/// The number types `geo.deny_number_types` may name (phonenumber's classification).
pub const NUMBER_TYPES: [&str; 17] = [
    "fixed_line",
    "mobile",
    "fixed_line_or_mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "emergency",
    "voicemail",
    "short_code",
    "standard_rate",
    "carrier",
    "no_international",
    "unknown",
];

pub(super) fn validate_rules(l: &LimitSettings) -> Result<(), ConfigError> {
    for (name, r) in &l.rules {
        let key = |field: &str| format!("limits.rules.{name}.{field}");
        if (r.burst == 0) != (r.period_secs == 0) {
            return Err(invalid(
                key("burst"),
                "burst and period_secs are set together (both 0: no rate)",
            ));
        }
        if r.burst == 0 && r.per_hour == 0 && r.per_day == 0 {
            return Err(invalid(
                key("burst"),
                "the rule limits nothing: set burst and period_secs, per_hour or per_day",
            ));
        }
        if r.scope == Scope::Prefix && !(1..=15).contains(&r.prefix_digits) {
            return Err(invalid(key("prefix_digits"), "must be 1 to 15"));
        }
        if r.scope != Scope::Prefix && r.prefix_digits != 0 {
            return Err(invalid(key("prefix_digits"), "only for scope \"prefix\""));
        }
        validate_channels(&key("channels"), &r.channels)?;
    }
    Ok(())
}

fn validate_channels(key: &str, list: &StringList) -> Result<(), ConfigError> {
    match list.0.iter().find(|c| Channel::parse(c).is_none()) {
        Some(c) => Err(invalid(
            key,
            format!("`{c}` is not sms, voice, whatsapp or email"),
        )),
        None => Ok(()),
    }
}

pub(super) fn validate_budget(b: &BudgetSettings) -> Result<(), ConfigError> {
    for (key, cap) in [
        ("budget.per_hour", b.per_hour),
        ("budget.per_day", b.per_day),
        ("budget.account_per_hour", b.account_per_hour),
        ("budget.account_per_day", b.account_per_day),
    ] {
        if !(cap >= 0.0 && cap.is_finite()) {
            return Err(invalid(key, "must be 0 (no cap) or a positive amount"));
        }
    }
    for (channel, table) in &b.prices {
        if Channel::parse(channel).is_none() {
            return Err(invalid(
                format!("budget.prices.{channel}"),
                "not sms, voice, whatsapp or email",
            ));
        }
        for (country, price) in table {
            if !(*price >= 0.0 && price.is_finite()) {
                return Err(invalid(
                    format!("budget.prices.{channel}.{country}"),
                    "must be a price of 0 or more",
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn validate_abuse(
    g: &GeoSettings,
    s: &SigningSettings,
    c: &ConversionSettings,
) -> Result<(), ConfigError> {
    if let Some(t) = g
        .deny_number_types
        .0
        .iter()
        .find(|t| !NUMBER_TYPES.contains(&t.as_str()))
    {
        return Err(invalid(
            "geo.deny_number_types",
            format!("`{t}` is not one of {}", NUMBER_TYPES.join(", ")),
        ));
    }
    for (key, list) in [
        ("geo.sms.allow", &g.sms.allow),
        ("geo.sms.deny", &g.sms.deny),
        ("geo.voice.allow", &g.voice.allow),
        ("geo.voice.deny", &g.voice.deny),
        ("geo.whatsapp.allow", &g.whatsapp.allow),
        ("geo.whatsapp.deny", &g.whatsapp.deny),
    ] {
        if let Some(c) = list.0.iter().find(|c| !is_country_code(c)) {
            return Err(invalid(
                key,
                format!("`{c}` is not an ISO 3166 alpha-2 code"),
            ));
        }
    }
    if s.mode != SigningMode::Off && s.keys.is_empty() {
        return Err(invalid(
            "signing.keys",
            "signing is on but no key is configured",
        ));
    }
    if let Some((id, _)) = s.keys.iter().find(|(_, k)| k.expose().len() < 32) {
        return Err(invalid(
            format!("signing.keys.{id}"),
            "must be at least 32 bytes",
        ));
    }
    if s.max_age_secs == 0 {
        return Err(invalid("signing.max_age_secs", "must be at least 1"));
    }
    if !(1..=15).contains(&c.prefix_digits) {
        return Err(invalid("conversion.prefix_digits", "must be 1 to 15"));
    }
    if !(0.0..=1.0).contains(&c.threshold) {
        return Err(invalid("conversion.threshold", "must be between 0 and 1"));
    }
    for (key, v) in [
        ("conversion.window_secs", c.window_secs),
        ("conversion.block_secs", c.block_secs),
        ("conversion.check_interval_secs", c.check_interval_secs),
        ("conversion.min_sent", u64::from(c.min_sent)),
    ] {
        if v == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    Ok(())
}

fn is_country_code(c: &str) -> bool {
    c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic())
}
