//! Email over SMTP with lettre: pooled connections, STARTTLS, implicit TLS, or plain SMTP for a
//! relay on loopback. An SMTP server's acceptance (250 after DATA) is the end of what otpd can
//! know: email has no delivery receipt, so `sent` is the final good state for this channel.

use super::{BuildError, ProviderError, Sent};
use crate::config::{SmtpSettings, SmtpTls};
use crate::domain::{Destination, FailReason};
use crate::render::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

pub struct SmtpProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpProvider {
    pub fn new(s: &SmtpSettings) -> Result<SmtpProvider, BuildError> {
        let err = |e: &dyn std::fmt::Display| BuildError::Smtp(e.to_string());
        let builder = match s.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                .map_err(|e| err(&e))?,
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host).map_err(|e| err(&e))?
            }
        };
        let mut builder = builder
            .port(s.port)
            .timeout(Some(Duration::from_millis(s.timeout_ms)))
            .pool_config(PoolConfig::new().max_size(s.pool_max_size));
        if !s.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                s.username.clone(),
                s.password.expose().to_string(),
            ));
        }
        let from = s.from.parse::<Mailbox>().map_err(|e| err(&e))?;
        Ok(SmtpProvider {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(&self, to: &Destination, message: &Message) -> Result<Sent, ProviderError> {
        let (
            Destination::Email(address),
            Message::Email {
                subject,
                text,
                html,
                from,
            },
        ) = (to, message)
        else {
            let detail = "smtp can only deliver email; check [channels]".to_string();
            return Err(ProviderError::Permanent {
                status: None,
                reason: FailReason::ProviderMisconfigured,
                detail,
            });
        };
        // The app's From was checked at config load; a failure here is a misconfiguration.
        let from = match from.as_deref().map(str::parse::<Mailbox>) {
            None => self.from.clone(),
            Some(Ok(mailbox)) => mailbox,
            Some(Err(e)) => {
                return Err(ProviderError::Permanent {
                    status: None,
                    reason: FailReason::ProviderMisconfigured,
                    detail: format!("app.email_from: {e}"),
                });
            }
        };
        let email = lettre::Message::builder()
            .from(from)
            .to(Mailbox::new(None, address.as_address().clone()))
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(
                text.clone(),
                html.clone(),
            ))
            .map_err(|e| ProviderError::Permanent {
                status: None,
                reason: FailReason::ProviderPermanent,
                detail: format!("building the email: {e}"),
            })?;
        match self.transport.send(email).await {
            Ok(response) => Ok(Sent {
                provider_message_id: response.first_line().map(|l| l.chars().take(128).collect()),
                status: response.code().to_string().parse().ok(),
            }),
            Err(e) => Err(classify(&e)),
        }
    }
}

/// SMTP 4xx replies and connection problems are transient; 5xx replies are permanent, and the
/// ones about the mailbox itself (550, 553) are the destination's fault.
fn classify(e: &lettre::transport::smtp::Error) -> ProviderError {
    let status = e.status().and_then(|c| c.to_string().parse::<u16>().ok());
    let detail = e.to_string();
    if e.is_permanent() {
        let reason = match status {
            Some(550 | 553) => FailReason::InvalidDestination,
            Some(530 | 535) => FailReason::ProviderAuth,
            _ => FailReason::ProviderPermanent,
        };
        return ProviderError::Permanent {
            status,
            reason,
            detail,
        };
    }
    // A timeout may strike after the server took the message: the outcome is then unknown.
    ProviderError::Transient {
        status,
        detail,
        in_doubt: e.is_timeout(),
    }
}
