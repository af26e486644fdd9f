//! Providers deliver a rendered message to a destination. They never touch the store or the
//! broker: they take a message and return [`Sent`] or a classified [`ProviderError`], and the
//! dispatcher decides what that means for the job.
//!
//! A closed enum rather than a trait object: the set of providers is part of the config
//! contract, `match` makes every caller handle every provider, and no boxing or `async-trait`
//! is needed. Adding a provider is one variant and one match arm in `send`.

pub mod breaker;
mod build;
mod chain;
pub mod http;
pub mod http_receipt;
mod log;
pub mod smpp;
mod smtp;
mod standing;
pub mod throttle;
pub mod twilio;
pub mod twilio_receipt;
pub mod whatsapp;
pub mod whatsapp_receipt;

pub use chain::{Attempted, Pick, Providers, Reservation, Route};
pub use http::HttpProvider;
pub use log::LogProvider;
pub use smpp::SmppProvider;
pub use smtp::SmtpProvider;
pub use standing::Country;
pub use twilio::TwilioClient;
pub use whatsapp::WhatsappClient;

use crate::config::ProviderConfig;
use crate::domain::{Destination, FailReason};
use crate::render::Message;
use std::time::Duration;

/// A provider's final word on a message it accepted: delivered to the handset, or not. Read
/// by the provider's own pure code (Twilio's callbacks, SMPP's deliver_sm) and applied by
/// `crate::receipts`, never by the provider.
#[derive(Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The vendor's message id: otpd's `provider_message_id`.
    pub sid: String,
    pub state: crate::domain::DeliveryState,
    /// The vendor's error code or final status, when it gives one.
    pub error: Option<String>,
}

/// A receipt as a provider instance heard it on its own session (SMPP): receipts match a
/// delivery on the instance and the message id together, since two vendors' ids can collide.
#[derive(Debug, PartialEq, Eq)]
pub struct Heard {
    pub provider: String,
    pub receipt: Receipt,
}

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
    /// Worth retrying: network errors, timeouts, 5xx, SMTP 4xx replies. `in_doubt` when the
    /// vendor may have accepted the message anyway (the answer, not the request, was lost).
    #[error("transient failure: {detail}")]
    Transient {
        status: Option<u16>,
        detail: String,
        in_doubt: bool,
    },
    /// Retrying will not help. `reason` is what the status event says, such as
    /// `InvalidDestination` (this destination only) or `ProviderAuth` (the whole provider:
    /// see [`ProviderError::is_provider_wide`]).
    #[error("permanent failure ({reason}): {detail}")]
    Permanent {
        status: Option<u16>,
        reason: FailReason,
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

    /// A permanent error that every message through this provider would meet: fail over.
    pub fn is_provider_wide(&self) -> bool {
        matches!(self, ProviderError::Permanent { reason, .. } if reason.is_provider_wide())
    }

    /// The vendor may have accepted the message although the call failed.
    pub fn is_in_doubt(&self) -> bool {
        matches!(self, ProviderError::Transient { in_doubt: true, .. })
    }
}

pub enum Provider {
    Log(LogProvider),
    Twilio(Box<TwilioClient>),
    Smtp(SmtpProvider),
    Http(Box<HttpProvider>),
    Smpp(Box<SmppProvider>),
    Whatsapp(Box<WhatsappClient>),
}

impl Provider {
    /// `valid_for` is the code's remaining life: an SMS provider hands it to the carrier as the
    /// message's validity, so a message stuck in a queue dies instead of arriving late.
    pub async fn send(
        &self,
        to: &Destination,
        message: &Message,
        valid_for: Duration,
    ) -> Result<Sent, ProviderError> {
        match self {
            Provider::Log(p) => Ok(p.send(to, message)),
            Provider::Twilio(p) => p.send(to, message, valid_for).await,
            Provider::Smtp(p) => p.send(to, message).await,
            Provider::Http(p) => p.send(to, message, valid_for).await,
            Provider::Smpp(p) => p.send(to, message, valid_for).await,
            Provider::Whatsapp(p) => p.send(to, message).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building the twilio client: {0}")]
    Twilio(String),
    #[error("building the smtp transport: {0}")]
    Smtp(String),
    #[error("{0}")]
    Http(String),
    #[error("channels name an undeclared provider `{0}`")]
    Unknown(String),
}

/// Where vendors should post delivery receipts: Twilio's `StatusCallback` (none without
/// `http.public_url`), and this instance's `/webhooks/http/<name>` (empty without it), which an
/// `http` provider's templates read as `receipt_url`.
pub(crate) struct CallbackUrls {
    pub twilio: Option<String>,
    pub http: String,
}

impl Provider {
    pub(crate) fn build(
        name: &str,
        config: &ProviderConfig,
        urls: CallbackUrls,
        receipts: &tokio::sync::mpsc::UnboundedSender<Heard>,
    ) -> Result<Provider, BuildError> {
        Ok(match config {
            ProviderConfig::Log(_) => Provider::Log(LogProvider),
            ProviderConfig::Twilio(t) => {
                Provider::Twilio(Box::new(TwilioClient::new(t, urls.twilio)?))
            }
            ProviderConfig::Smtp(m) => Provider::Smtp(SmtpProvider::new(m)?),
            ProviderConfig::Http(h) => {
                Provider::Http(Box::new(HttpProvider::new(name, h, urls.http)?))
            }
            ProviderConfig::Smpp(p) => {
                Provider::Smpp(Box::new(SmppProvider::new(name, p, receipts.clone())?))
            }
            ProviderConfig::WhatsappCloud(w) => {
                Provider::Whatsapp(Box::new(WhatsappClient::new(w)?))
            }
        })
    }
}

/// The HTTP client of a vendor's API: every call bounded by `timeout_ms` (connecting by at most
/// 5 s of it), and no retries of its own (dispatch retries, invariant 6).
pub(crate) fn http_client(timeout_ms: u64) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .connect_timeout(Duration::from_millis(timeout_ms.min(5000)))
        .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A vendor call that got no answer: transient, and in doubt when the vendor may have acted on
/// it before the answer was lost (a timeout, except while connecting: then the request never
/// left). Every HTTP provider's transport errors go through here. The detail leaves out the
/// URL (a configured vendor's may hold a secret); the body, which holds the code, is never in
/// reqwest's error text.
pub(crate) fn unanswered(e: reqwest::Error) -> ProviderError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    ProviderError::Transient {
        status: None,
        in_doubt: e.is_timeout() && !e.is_connect(),
        detail: format!("{kind} error: {}", e.without_url()),
    }
}

/// The most of a vendor's answer body that is read: every real answer is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A vendor's answer body, read up to [`MAX_ANSWER_BYTES`]: a vendor (or whatever answers in
/// its place) sending an endless or huge body costs a bounded buffer, not memory without end.
/// A body that fails midway is what was read of it.
pub(crate) async fn answer_body(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER_BYTES {
            break;
        }
    }
    body
}

/// A vendor's answer made safe to keep: whatever it says (an error text quoting the number, a
/// NUL in a message id, 10 KiB of HTML) reaches the store, logs and events only scrubbed and
/// bounded. Done here, once, for every provider.
pub(crate) fn scrubbed(result: Result<Sent, ProviderError>) -> Result<Sent, ProviderError> {
    use crate::domain::text::{MAX_ID_CHARS, clean, scrub};
    match result {
        Ok(mut sent) => {
            sent.provider_message_id = sent
                .provider_message_id
                .map(|id| clean(&id, MAX_ID_CHARS))
                .filter(|id| !id.is_empty());
            Ok(sent)
        }
        Err(mut e) => {
            match &mut e {
                ProviderError::Transient { detail, .. }
                | ProviderError::Permanent { detail, .. }
                | ProviderError::RateLimited { detail, .. } => *detail = scrub(detail),
            }
            Err(e)
        }
    }
}
