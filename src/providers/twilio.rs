//! otpd's own small Twilio client: Messages for SMS, Calls with inline TwiML for voice.
//!
//! Not `twilio-async` (unmaintained, hyper 0.14 and OpenSSL, hard-coded base URL, ignores HTTP
//! status). The request forms follow Twilio's OpenAPI description (`CreateMessage`,
//! `CreateCall` in api_v2010); a test checks them against it.

use super::{ProviderError, Sent};
use crate::config::{Secret, TwilioSettings};
use crate::domain::{Destination, FailReason};
use crate::render::Message;
use reqwest::{StatusCode, Url};
use std::time::Duration;

pub struct TwilioClient {
    http: reqwest::Client,
    messages_url: Url,
    calls_url: Url,
    account_sid: String,
    auth_token: Secret,
    sms_from: String,
    voice_from: String,
    /// Where Twilio posts status callbacks (`http.public_url` + `/webhooks/twilio`), if set.
    status_callback: Option<String>,
}

/// Destination-specific Twilio error codes: the number itself is wrong, so neither a retry nor
/// another provider will help. 21211 invalid To, 21214 not reachable, 21217 not a valid number,
/// 21614 not a mobile number, 13224 invalid voice number.
const INVALID_DESTINATION_CODES: [u64; 5] = [21211, 21214, 21217, 21614, 13224];

/// Account-wide Twilio error codes: every message through this account will fail the same way,
/// so otpd opens the breaker and fails over. 20003 authentication, 20005 and 10001 account not
/// active, 21212 and 21606 the sender number is invalid or cannot send, 21608 trial account.
const ACCOUNT_CODES: [u64; 6] = [20003, 20005, 10001, 21212, 21606, 21608];

impl TwilioClient {
    pub fn new(
        s: &TwilioSettings,
        status_callback: Option<String>,
    ) -> Result<TwilioClient, super::BuildError> {
        let err = |e: &dyn std::fmt::Display| super::BuildError::Twilio(e.to_string());
        let base = Url::parse(&s.base_url).map_err(|e| err(&e))?;
        let account = format!("2010-04-01/Accounts/{}/", s.account_sid);
        let account_url = base.join(&account).map_err(|e| err(&e))?;
        let http = super::http_client(s.timeout_ms).map_err(|e| err(&e))?;
        Ok(TwilioClient {
            http,
            messages_url: account_url.join("Messages.json").map_err(|e| err(&e))?,
            calls_url: account_url.join("Calls.json").map_err(|e| err(&e))?,
            account_sid: s.account_sid.clone(),
            auth_token: s.auth_token.clone(),
            sms_from: s.sms_from.clone(),
            voice_from: s.voice_from.clone(),
            status_callback,
        })
    }

    pub async fn send(
        &self,
        to: &Destination,
        message: &Message,
        valid_for: Duration,
    ) -> Result<Sent, ProviderError> {
        let callback = self.status_callback.as_deref();
        let (url, form) = match message {
            Message::Sms { body, .. } => {
                let validity = validity_period(valid_for);
                let form = message_form(to.expose(), &self.sms_from, body, validity, callback);
                (&self.messages_url, form)
            }
            Message::Voice { twiml } => (
                &self.calls_url,
                call_form(to.expose(), &self.voice_from, twiml, callback),
            ),
            Message::Email { .. } | Message::Whatsapp { .. } => {
                let detail = "twilio carries sms and voice only; check [channels]".to_string();
                return Err(ProviderError::Permanent {
                    status: None,
                    reason: FailReason::ProviderMisconfigured,
                    detail,
                });
            }
        };
        let response = self
            .http
            .post(url.clone())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(&form)
            .send()
            .await
            .map_err(super::unanswered)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        // A body that cannot be read counts as empty: the status alone decides the outcome.
        let body = super::answer_body(response).await;
        classify(status, retry_after, &body)
    }
}

/// Twilio's `ValidityPeriod` for a code with `valid_for` left: whole seconds, within the
/// 1–36000 Twilio accepts (a longer life is cut to Twilio's longest queue time, which is its
/// default anyway).
pub fn validity_period(valid_for: Duration) -> u64 {
    valid_for.as_secs().clamp(1, 36_000)
}

/// The CreateMessage form. A Messaging Service SID goes in `MessagingServiceSid`, a number or
/// alphanumeric sender in `From`. `ValidityPeriod` (seconds) drops the message from Twilio's
/// queue once the code is dead. `StatusCallback` asks Twilio to post the delivery receipt.
pub fn message_form(
    to: &str,
    from: &str,
    body: &str,
    validity_period: u64,
    status_callback: Option<&str>,
) -> Vec<(&'static str, String)> {
    let sender = if from.starts_with("MG") {
        "MessagingServiceSid"
    } else {
        "From"
    };
    let mut form = vec![
        ("To", to.to_string()),
        (sender, from.to_string()),
        ("Body", body.to_string()),
        ("ValidityPeriod", validity_period.to_string()),
    ];
    if let Some(url) = status_callback {
        form.push(("StatusCallback", url.to_string()));
    }
    form
}

/// The CreateCall form with inline TwiML, so no webhook has to serve it. With a callback,
/// Twilio posts only the `completed` event (its default), which carries the call's end status.
pub fn call_form(
    to: &str,
    from: &str,
    twiml: &str,
    status_callback: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("To", to.to_string()),
        ("From", from.to_string()),
        ("Twiml", twiml.to_string()),
    ];
    if let Some(url) = status_callback {
        form.push(("StatusCallback", url.to_string()));
    }
    form
}

/// Maps a Twilio response to the outcome. Every 2xx is success (Kratos #3399 counted a 202 as
/// failure); 429 is rate limiting; 5xx transient; other 4xx permanent.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Sent, ProviderError> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = Some(status.as_u16());
    if status.is_success() {
        let sid = json.get("sid").and_then(|v| v.as_str()).map(str::to_string);
        return Ok(Sent {
            provider_message_id: sid,
            status: code,
        });
    }
    let twilio_code = json.get("code").and_then(|v| v.as_u64());
    let message = json.get("message").and_then(|v| v.as_str()).unwrap_or("");
    let detail = match twilio_code {
        Some(c) => format!(
            "HTTP {} (Twilio error {c}): {}",
            status.as_u16(),
            truncate(message)
        ),
        None => format!("HTTP {}", status.as_u16()),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ProviderError::RateLimited {
            status: code,
            retry_after,
            detail,
        });
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(ProviderError::Transient {
            status: code,
            detail,
            in_doubt: false,
        });
    }
    let reason = match (status, twilio_code) {
        (_, Some(c)) if INVALID_DESTINATION_CODES.contains(&c) => FailReason::InvalidDestination,
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => FailReason::ProviderAuth,
        (_, Some(c)) if ACCOUNT_CODES.contains(&c) => FailReason::ProviderAccount,
        _ => FailReason::ProviderPermanent,
    };
    Err(ProviderError::Permanent {
        status: code,
        reason,
        detail,
    })
}

/// Retry-After in seconds (Twilio does not send HTTP dates).
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(200).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> ProviderError {
        classify(StatusCode::from_u16(status).unwrap(), None, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn every_2xx_is_success() {
        for s in [200, 201, 202, 204] {
            let sent =
                classify(StatusCode::from_u16(s).unwrap(), None, br#"{"sid":"SM1"}"#).unwrap();
            assert_eq!(sent.status, Some(s));
        }
        let sent = classify(StatusCode::CREATED, None, br#"{"sid":"SMabc"}"#).unwrap();
        assert_eq!(sent.provider_message_id.as_deref(), Some("SMabc"));
        assert!(classify(StatusCode::ACCEPTED, None, b"not json").is_ok());
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(err(500, ""), ProviderError::Transient { .. }));
        assert!(matches!(err(503, "{}"), ProviderError::Transient { .. }));
        let r = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"{}",
        )
        .unwrap_err();
        assert!(
            matches!(r, ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let invalid = err(
            400,
            r#"{"code":21211,"message":"The 'To' number is not valid."}"#,
        );
        assert!(matches!(
            invalid,
            ProviderError::Permanent {
                reason: FailReason::InvalidDestination,
                ..
            }
        ));
        assert!(matches!(
            err(401, r#"{"code":20003}"#),
            ProviderError::Permanent {
                reason: FailReason::ProviderAuth,
                ..
            }
        ));
        let sender = err(400, r#"{"code":21606}"#);
        assert!(matches!(
            sender,
            ProviderError::Permanent {
                reason: FailReason::ProviderAccount,
                ..
            }
        ));
        assert!(sender.is_provider_wide());
        assert!(!invalid.is_provider_wide());
        assert!(matches!(
            err(400, r#"{"code":30007}"#),
            ProviderError::Permanent {
                reason: FailReason::ProviderPermanent,
                ..
            }
        ));
    }

    #[test]
    fn messaging_service_sids_use_their_own_field() {
        let f = message_form("+1", "MG0123456789abcdef0123456789abcdef", "hi", 60, None);
        assert_eq!(f[1].0, "MessagingServiceSid");
        assert_eq!(
            message_form("+1", "+15005550006", "hi", 60, None)[1].0,
            "From"
        );
    }

    #[test]
    fn validity_period_is_whole_seconds_within_twilios_range() {
        assert_eq!(validity_period(Duration::from_millis(299_900)), 299);
        assert_eq!(validity_period(Duration::ZERO), 1);
        assert_eq!(validity_period(Duration::from_secs(86_400)), 36_000);
    }
}
