//! Typed settings. `config/default.toml` (compiled in, every key commented) is layered under the
//! file given with `--config` (or `/etc/otpd/otpd.toml` when present) and `OTPD__SECTION__KEY`
//! environment variables; the result is deserialised into [`Settings`] and validated once, so
//! the rest of the daemon never sees a raw string where a typed value belongs.

mod load;
mod secret;

pub use load::{ConfigError, DEFAULT_TOML, load};
pub use secret::Secret;

use crate::domain::Channel;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub app: AppSettings,
    pub amqp: AmqpSettings,
    pub database: DatabaseSettings,
    pub store: StoreSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub limits: LimitSettings,
    pub retry: RetrySettings,
    pub channels: ChannelSettings,
    pub providers: ProviderSettings,
    pub messages: MessageSettings,
    pub shutdown: ShutdownSettings,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    pub name: String,
    pub default_locale: String,
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
    pub prefetch: u16,
    pub delivery_limit: u32,
    pub reconnect_max_delay_ms: u64,
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

/// A rate with a burst: `burst` codes at once, refilled evenly over `period_secs`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    pub period_secs: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub enabled: bool,
    pub phone: Rate,
    pub account: Rate,
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

impl RetrySettings {
    pub fn expiry_margin(&self) -> Duration {
        Duration::from_millis(self.expiry_margin_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Log,
    Twilio,
    Smtp,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub sms: ProviderKind,
    pub voice: ProviderKind,
    pub email: ProviderKind,
}

impl ChannelSettings {
    pub fn provider_for(&self, channel: Channel) -> ProviderKind {
        match channel {
            Channel::Sms => self.sms,
            Channel::Voice => self.voice,
            Channel::Email => self.email,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub twilio: TwilioSettings,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// An E.164 sender number, or a Messaging Service SID (`MG…`) for SMS.
    pub sms_from: String,
    /// The caller id of voice calls: an E.164 number on the account.
    pub voice_from: String,
    pub timeout_ms: u64,
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: String,
    pub password: Secret,
    pub from: String,
    pub pool_max_size: u32,
    pub timeout_ms: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSettings {
    pub sms: String,
    pub email_subject: String,
    pub email_text: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub drain_timeout_ms: u64,
}
