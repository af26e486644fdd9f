//! Named provider instances and the per-channel failover chains that use them.
//!
//! `[providers.<name>]` declares one instance; its `kind` defaults to its name, so the shipped
//! `[providers.twilio]` and `[providers.smtp]` need none, while a second Twilio account is
//! `[providers.twilio_eu] kind = "twilio"`. `[channels] sms = "twilio, twilio_eu"` is an ordered
//! chain: the first provider whose circuit breaker admits a call gets it.

use super::Secret;
use super::http::HttpProviderSettings;
use super::smpp::SmppSettings;
use super::whatsapp::WhatsappSettings;
use crate::domain::Channel;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// The `kind` of a provider instance: which variant of [`ProviderConfig`] its table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProviderKind {
    Log,
    Twilio,
    Smtp,
    Http,
    Smpp,
    WhatsappCloud,
}

impl ProviderKind {
    fn from_name(name: &str) -> Option<ProviderKind> {
        match name {
            "log" => Some(ProviderKind::Log),
            "twilio" => Some(ProviderKind::Twilio),
            "smtp" => Some(ProviderKind::Smtp),
            "http" => Some(ProviderKind::Http),
            "smpp" => Some(ProviderKind::Smpp),
            "whatsapp_cloud" => Some(ProviderKind::WhatsappCloud),
            _ => None,
        }
    }
}

/// One provider instance. Serialised tagged by `kind` (for `otpd check-config`); read by
/// [`ProviderSettings`]'s own deserialiser.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Log(LogSettings),
    Twilio(TwilioSettings),
    Smtp(SmtpSettings),
    Http(HttpProviderSettings),
    Smpp(SmppSettings),
    WhatsappCloud(WhatsappSettings),
}

impl ProviderConfig {
    /// Calls this provider may have in flight at once (before adaptive slow-down on 429s).
    pub fn max_concurrency(&self) -> u32 {
        match self {
            ProviderConfig::Log(s) => s.max_concurrency,
            ProviderConfig::Twilio(s) => s.max_concurrency,
            ProviderConfig::Smtp(s) => s.max_concurrency,
            ProviderConfig::Http(s) => s.max_concurrency,
            ProviderConfig::Smpp(s) => s.max_concurrency,
            ProviderConfig::WhatsappCloud(s) => s.max_concurrency,
        }
    }

    /// Calls per second this provider may start (0: unpaced). Vendors cap throughput per
    /// sender (Twilio: 1/s for a long code, 100/s for a short code) and answer 429 past it.
    pub fn max_per_second(&self) -> u32 {
        match self {
            ProviderConfig::Log(s) => s.max_per_second,
            ProviderConfig::Twilio(s) => s.max_per_second,
            ProviderConfig::Smtp(s) => s.max_per_second,
            ProviderConfig::Http(s) => s.max_per_second,
            ProviderConfig::Smpp(s) => s.max_per_second,
            ProviderConfig::WhatsappCloud(s) => s.max_per_second,
        }
    }
}

/// Every provider instance by name. Deserialised by hand so that an error names the entry
/// (`providers.twilio_eu: unknown field …`) and `kind` can default to the entry's name.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings(pub BTreeMap<String, ProviderConfig>);

impl<'de> Deserialize<'de> for ProviderSettings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // config's own `Value` keeps its lenient conversions (an all-digit token from the
        // environment still deserialises into a string field).
        let raw = BTreeMap::<String, config::Value>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let mut table = value
                .into_table()
                .map_err(|e| D::Error::custom(format!("providers.{name}: {e}")))?;
            // Dispatch on `kind` here rather than through serde's internally tagged enum: that
            // buffers the values, and a buffered integer (an all-digit phone number from the
            // environment, `+15005550006` parsed as a number) no longer fits a string field.
            let kind = match table.remove("kind") {
                Some(kind) => kind
                    .into_string()
                    .map_err(|e| D::Error::custom(format!("providers.{name}.kind: {e}")))?,
                None => name.clone(),
            };
            let Some(kind) = ProviderKind::from_name(&kind) else {
                return Err(D::Error::custom(format!(
                    "providers.{name}.kind: \"{kind}\" is not a provider kind; it must be \"log\", \"twilio\", \"smtp\", \"http\", \"smpp\" or \"whatsapp_cloud\""
                )));
            };
            let value = config::Value::from(table);
            let config = match kind {
                ProviderKind::Log => value.try_deserialize().map(ProviderConfig::Log),
                ProviderKind::Twilio => value.try_deserialize().map(ProviderConfig::Twilio),
                ProviderKind::Smtp => value.try_deserialize().map(ProviderConfig::Smtp),
                ProviderKind::Http => value.try_deserialize().map(ProviderConfig::Http),
                ProviderKind::Smpp => value.try_deserialize().map(ProviderConfig::Smpp),
                ProviderKind::WhatsappCloud => {
                    value.try_deserialize().map(ProviderConfig::WhatsappCloud)
                }
            }
            .map_err(|e| D::Error::custom(format!("providers.{name}: {e}")))?;
            out.insert(name, config);
        }
        Ok(ProviderSettings(out))
    }
}

impl Serialize for ProviderSettings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl ProviderSettings {
    /// The Twilio instance `name`, created with defaults if absent (for tests and tools).
    pub fn twilio_mut(&mut self, name: &str) -> &mut TwilioSettings {
        let entry = self
            .0
            .entry(name.to_string())
            .or_insert_with(|| ProviderConfig::Twilio(TwilioSettings::default()));
        if !matches!(entry, ProviderConfig::Twilio(_)) {
            *entry = ProviderConfig::Twilio(TwilioSettings::default());
        }
        match entry {
            ProviderConfig::Twilio(t) => t,
            _ => unreachable!("replaced above"),
        }
    }

    /// The SMTP instance `name`, created with defaults if absent.
    pub fn smtp_mut(&mut self, name: &str) -> &mut SmtpSettings {
        let entry = self
            .0
            .entry(name.to_string())
            .or_insert_with(|| ProviderConfig::Smtp(SmtpSettings::default()));
        if !matches!(entry, ProviderConfig::Smtp(_)) {
            *entry = ProviderConfig::Smtp(SmtpSettings::default());
        }
        match entry {
            ProviderConfig::Smtp(t) => t,
            _ => unreachable!("replaced above"),
        }
    }
}

/// An ordered failover chain of provider names, written `"a, b"` (environment-friendly) or as
/// a TOML array.
pub type Chain = super::StringList;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub sms: Chain,
    pub voice: Chain,
    pub whatsapp: Chain,
    pub email: Chain,
    /// Chains per destination for the phone channels; the chains above are the fallback.
    #[serde(default)]
    pub routes: RouteSettings,
}

/// `[channels.routes.sms] IN = "vonage, twilio"`: a key is an ISO 3166 country code (`IN`) or
/// an E.164 prefix (`"+4475"`); the longest matching prefix wins, then the country.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteSettings {
    pub sms: BTreeMap<String, Chain>,
    pub voice: BTreeMap<String, Chain>,
    pub whatsapp: BTreeMap<String, Chain>,
}

impl RouteSettings {
    /// The routes of a channel (email has none: an address has no country).
    pub fn of(&self, channel: Channel) -> Option<&BTreeMap<String, Chain>> {
        match channel {
            Channel::Sms => Some(&self.sms),
            Channel::Voice => Some(&self.voice),
            Channel::Whatsapp => Some(&self.whatsapp),
            Channel::Email => None,
        }
    }
}

/// Where a route applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKey {
    /// An ISO 3166-1 alpha-2 code, uppercased.
    Country(String),
    /// An E.164 prefix, `+` and 1 to 15 digits.
    Prefix(String),
}

impl RouteKey {
    pub fn parse(key: &str) -> Option<RouteKey> {
        let key = key.trim();
        if let Some(digits) = key.strip_prefix('+') {
            let ok = (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
            return ok.then(|| RouteKey::Prefix(key.to_string()));
        }
        let ok = key.len() == 2 && key.bytes().all(|b| b.is_ascii_alphabetic());
        ok.then(|| RouteKey::Country(key.to_ascii_uppercase()))
    }
}

impl ChannelSettings {
    /// Every provider name any chain or route mentions (repeats included).
    pub fn chains(&self) -> impl Iterator<Item = &str> {
        let routes = (self.routes.sms.values())
            .chain(self.routes.voice.values())
            .chain(self.routes.whatsapp.values());
        [&self.sms, &self.voice, &self.whatsapp, &self.email]
            .into_iter()
            .chain(routes)
            .flat_map(|chain| chain.0.iter().map(String::as_str))
    }

    pub fn chain(&self, channel: Channel) -> &Chain {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Voice => &self.voice,
            Channel::Whatsapp => &self.whatsapp,
            Channel::Email => &self.email,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub max_concurrency: u32,
    pub max_per_second: u32,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            max_concurrency: 64,
            max_per_second: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioSettings {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// An E.164 sender number, or a Messaging Service SID (`MG…`) for SMS.
    pub sms_from: String,
    /// The caller id of voice calls: an E.164 number on the account.
    pub voice_from: String,
    pub timeout_ms: u64,
    pub max_concurrency: u32,
    pub max_per_second: u32,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        TwilioSettings {
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            sms_from: String::new(),
            voice_from: String::new(),
            timeout_ms: 10_000,
            max_concurrency: 32,
            max_per_second: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP; only for a relay on loopback or a trusted network.
    None,
    /// Upgrade with STARTTLS, refusing to send if the server does not offer it.
    Starttls,
    /// Implicit TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: String,
    pub password: Secret,
    pub from: String,
    pub pool_max_size: u32,
    pub timeout_ms: u64,
    pub max_concurrency: u32,
    pub max_per_second: u32,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: String::new(),
            password: Secret::default(),
            from: "otpd <no-reply@localhost>".into(),
            pool_max_size: 8,
            timeout_ms: 10_000,
            max_concurrency: 8,
            max_per_second: 0,
        }
    }
}
