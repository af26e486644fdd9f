//! Typed settings. `config/default.toml` (compiled in, every key commented) is layered under the
//! file given with `--config` (or `/etc/otpd/otpd.toml` when present) and `OTPD__SECTION__KEY`
//! environment variables; the result is deserialised into [`Settings`] and validated once, so
//! the rest of the daemon never sees a raw string where a typed value belongs.

mod error;
mod health;
mod http;
mod http_receipt;
mod lanes;
mod limits;
mod load;
mod providers;
mod schema;
mod secret;
mod smpp;
mod validate_providers;
mod whatsapp;

pub use error::ConfigError;
pub use health::HealthSettings;
pub use http::{BodyFormat, HttpProviderSettings, ResponseRule, RuleOutcome};
pub use http_receipt::{HmacAlgorithm, HttpReceiptSettings, ReceiptAuth, SignatureEncoding};
pub use lanes::{Lane, LaneSettings, topics_overlap};
pub use limits::{
    BudgetSettings, ConversionMode, ConversionSettings, CountryRules, GeoSettings, LimitSettings,
    RuleSettings, Scope, SigningMode, SigningSettings,
};
pub use load::{DEFAULT_TOML, DEV_HMAC_KEY, load, load_from_str};
pub use providers::{
    Chain, ChannelSettings, ProviderConfig, ProviderSettings, RouteKey, RouteSettings,
    SmtpSettings, SmtpTls, TwilioSettings,
};
pub use schema::schema;
pub use secret::Secret;
pub use smpp::{SmppBind, SmppSettings};
pub use whatsapp::{WhatsappSettings, WhatsappTemplate};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::time::Duration;

/// A list of names, written `"a, b"` (so that it can be set from an environment variable) or
/// as a TOML array; blanks are dropped. Provider chains, rule channels and country lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl From<&str> for StringList {
    fn from(s: &str) -> StringList {
        StringList::from_items(s.split(','))
    }
}

impl StringList {
    fn from_items<'a>(items: impl Iterator<Item = &'a str>) -> StringList {
        StringList(
            items
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => StringList::from(s.as_str()),
            Raw::Many(v) => StringList::from_items(v.iter().map(String::as_str)),
        })
    }
}

impl Serialize for StringList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.join(", ").serialize(s)
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub app: AppSettings,
    pub amqp: AmqpSettings,
    pub database: DatabaseSettings,
    pub store: StoreSettings,
    pub http: HttpSettings,
    pub audit: AuditSettings,
    pub log: LogSettings,
    pub limits: LimitSettings,
    pub budget: BudgetSettings,
    pub geo: GeoSettings,
    pub signing: SigningSettings,
    pub conversion: ConversionSettings,
    pub retry: RetrySettings,
    pub delivery: DeliverySettings,
    pub channels: ChannelSettings,
    pub providers: ProviderSettings,
    pub templates: TemplateSettings,
    pub shutdown: ShutdownSettings,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    pub name: String,
    pub default_locale: String,
    /// WebOTP: the origin's host; SMS messages end with `@<domain> #<code>`. Empty: off.
    pub webotp_domain: String,
    /// Android SMS Retriever: the app's 11-character hash, on its own line. Empty: off.
    pub android_app_hash: String,
    /// The From of emails (`Name <address>`); empty: the SMTP provider's own `from`.
    pub email_from: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub url: Secret,
    pub jobs_exchange: String,
    pub jobs_queue: String,
    pub queue_type: QueueType,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub events_exchange: String,
    pub publish_accepted: bool,
    /// The default lane: its name, bindings, jobs worked at once (0: what the other lanes
    /// leave of `delivery.max_in_flight`) and an account's share of them.
    pub lane: String,
    pub routing_keys: StringList,
    pub prefetch: u16,
    pub max_in_flight: u32,
    pub account_share: f64,
    /// Lanes beside the default one (`lanes.rs`).
    #[serde(default)]
    pub lanes: std::collections::BTreeMap<String, LaneSettings>,
    pub delivery_limit: u32,
    pub reconnect_max_delay_ms: u64,
    pub setup_timeout_ms: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
    pub migrate_on_start: bool,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub destination_hmac_key: Secret,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// The base URL the outside world (Twilio) reaches this listener at; empty for none.
    pub public_url: String,
    /// The admin API's bearer token; empty turns the admin API off.
    pub admin_token: Secret,
    /// A connection must send its request head within this long.
    pub header_timeout_ms: u64,
    /// A request must be answered within this long.
    pub request_timeout_ms: u64,
    /// Connections open at once; past it the oldest idle one gives way.
    pub max_connections: usize,
    /// The largest request body any route reads.
    pub max_body_bytes: usize,
    /// `/readyz` fails once jobs are in hand and none has finished for this long.
    pub ready_stall_secs: u64,
}

impl HttpSettings {
    /// Where Twilio posts status callbacks, when a public URL is configured.
    pub fn twilio_callback_url(&self) -> Option<String> {
        let base = self.public_url.trim_end_matches('/');
        (!base.is_empty()).then(|| format!("{base}/webhooks/twilio"))
    }

    /// Where the `http` provider `name`'s vendor posts receipts; empty without `public_url`.
    pub fn http_receipt_url(&self, name: &str) -> String {
        let base = self.public_url.trim_end_matches('/');
        match base.is_empty() {
            true => String::new(),
            false => format!("{base}/webhooks/http/{name}"),
        }
    }
}

/// The audit chain's sealer and retention.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    pub seal_interval_ms: u64,
    pub retention_days: u32,
    pub purge_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub expiry_margin_ms: u64,
    pub attempt_timeout_ms: u64,
}

/// Failover, circuit breaking, concurrency and in-doubt handling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub max_in_flight: u32,
    pub resend_in_doubt: bool,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
    pub health: HealthSettings,
}

impl RetrySettings {
    pub fn expiry_margin(&self) -> Duration {
        Duration::from_millis(self.expiry_margin_ms)
    }
}

/// Where templates come from and what they may do; see docs/templates.md.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    /// A directory of `<template>/<locale>/<file>` layered over the shipped templates.
    pub dir: String,
    /// SMS messages may not render (with a sample) to more segments than this.
    pub sms_max_segments: u32,
    /// Job metadata keys templates may read as `metadata.<key>`.
    pub metadata: StringList,
    /// TwiML `<Say>` language and voice per locale, found along the locale's fallback chain.
    pub voices: std::collections::BTreeMap<String, VoiceSettings>,
    /// Per template: the app it speaks for, overriding `[app]` field by field. One template
    /// per app lets one otpd serve several apps, each with its own name, origin and sender.
    #[serde(default)]
    pub apps: std::collections::BTreeMap<String, TemplateApp>,
}

/// A template's app; an empty field inherits `[app]`'s.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateApp {
    pub name: String,
    pub webotp_domain: String,
    pub android_app_hash: String,
    pub email_from: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceSettings {
    /// `<Say language="…">`, e.g. `pt-BR`; empty leaves Twilio's default (en-US).
    pub language: String,
    /// `<Say voice="…">`, e.g. `Polly.Camila`; empty leaves Twilio's default.
    pub voice: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub drain_timeout_ms: u64,
}
