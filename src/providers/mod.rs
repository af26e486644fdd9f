//! Providers deliver a rendered message to a destination. They never touch the store or the
//! broker: they take a message and return [`Sent`] or a classified [`ProviderError`], and the
//! dispatcher decides what that means for the job.
//!
//! A closed enum rather than a trait object: the set of providers is part of the config
//! contract, `match` makes every caller handle every provider, and no boxing or `async-trait`
//! is needed. Adding a provider is one variant and one match arm in `send`.

mod log;
mod smtp;
pub mod twilio;

pub use log::LogProvider;
pub use smtp::SmtpProvider;
pub use twilio::TwilioClient;

use crate::config::{ProviderKind, Settings};
use crate::domain::{Channel, Destination};
use crate::render::Message;
use std::sync::Arc;
use std::time::Duration;

/// A provider accepted the message.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// The vendor's id for the message or call, when it gives one.
    pub provider_message_id: Option<String>,
    /// HTTP status or SMTP reply code, for the audit trail.
    pub status: Option<u16>,
}

/// How a failed attempt is classified. The dispatcher's retry decision depends only on this.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying: network errors, timeouts, 5xx, SMTP 4xx replies.
    #[error("transient failure: {detail}")]
    Transient { status: Option<u16>, detail: String },
    /// Retrying will not help. `reason` is a stable code for the status event, such as
    /// `invalid_destination` or `provider_permanent`.
    #[error("permanent failure ({reason}): {detail}")]
    Permanent {
        status: Option<u16>,
        reason: &'static str,
        detail: String,
    },
    /// The vendor asked us to slow down, possibly saying for how long.
    #[error("rate limited by provider: {detail}")]
    RateLimited {
        status: Option<u16>,
        retry_after: Option<Duration>,
        detail: String,
    },
}

impl ProviderError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Transient { status, .. }
            | ProviderError::Permanent { status, .. }
            | ProviderError::RateLimited { status, .. } => *status,
        }
    }
}

pub enum Provider {
    Log(LogProvider),
    Twilio(Box<TwilioClient>),
    Smtp(SmtpProvider),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Log(_) => "log",
            Provider::Twilio(_) => "twilio",
            Provider::Smtp(_) => "smtp",
        }
    }

    pub async fn send(&self, to: &Destination, message: &Message) -> Result<Sent, ProviderError> {
        match self {
            Provider::Log(p) => Ok(p.send(to, message)),
            Provider::Twilio(p) => p.send(to, message).await,
            Provider::Smtp(p) => p.send(to, message).await,
        }
    }
}

/// The provider of each channel. Providers are built once and shared, so the Twilio client's
/// connection pool serves both SMS and voice.
pub struct Providers {
    sms: Arc<Provider>,
    voice: Arc<Provider>,
    email: Arc<Provider>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the twilio client: {0}")]
    Twilio(String),
    #[error("building the smtp transport: {0}")]
    Smtp(String),
}

impl Providers {
    pub fn from_settings(s: &Settings) -> Result<Providers, BuildError> {
        let mut built: Vec<(ProviderKind, Arc<Provider>)> = Vec::new();
        let mut get = |kind: ProviderKind| -> Result<Arc<Provider>, BuildError> {
            if let Some((_, p)) = built.iter().find(|(k, _)| *k == kind) {
                return Ok(p.clone());
            }
            let p = Arc::new(match kind {
                ProviderKind::Log => Provider::Log(LogProvider),
                ProviderKind::Twilio => {
                    Provider::Twilio(Box::new(TwilioClient::new(&s.providers.twilio)?))
                }
                ProviderKind::Smtp => Provider::Smtp(SmtpProvider::new(&s.providers.smtp)?),
            });
            built.push((kind, p.clone()));
            Ok(p)
        };
        Ok(Providers {
            sms: get(s.channels.sms)?,
            voice: get(s.channels.voice)?,
            email: get(s.channels.email)?,
        })
    }

    pub fn for_channel(&self, channel: Channel) -> &Provider {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Voice => &self.voice,
            Channel::Email => &self.email,
        }
    }
}
