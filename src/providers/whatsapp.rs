//! WhatsApp through Meta's Cloud API: an approved authentication template per locale, sent with
//! `POST {base_url}/{api_version}/{phone_number_id}/messages` and a bearer token.
//!
//! The template's text is Meta's. otpd fills its one body parameter with the code, and its
//! button (the copy-code or one-tap button every authentication template has) with the code
//! again. Receipts come back through `/webhooks/whatsapp`, read by [`super::whatsapp_receipt`].

use super::{BuildError, ProviderError, Sent};
use crate::config::{Secret, WhatsappSettings, WhatsappTemplate};
use crate::domain::{Destination, FailReason};
use crate::render::Message;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct WhatsappClient {
    http: reqwest::Client,
    messages_url: Url,
    access_token: Secret,
    /// Locale (lowercase) → template.
    templates: BTreeMap<String, WhatsappTemplate>,
}

/// Meta's throttling codes: 4 and 80007 (application and account request limits), 130429
/// (the number's throughput), 131056 (too many messages to one user in a short time).
const RATE_LIMIT_CODES: [i64; 4] = [4, 80007, 130429, 131056];
/// The recipient cannot get this message: 131026 (no WhatsApp, or an old app, or terms not
/// accepted), 131030 (not on a test number's allow list), 131021 (the sender itself).
const INVALID_DESTINATION_CODES: [i64; 3] = [131026, 131030, 131021];
/// Credentials: 0 (AuthException), 190 (token expired or invalid), 3 and 10 (capability or
/// permission missing), and the 200–299 permission range.
const AUTH_CODES: [i64; 4] = [0, 3, 10, 190];
/// The business account: 131031 (locked), 131042 (payment), 131045 (number not registered),
/// 368 (blocked for policy), 131047 is per-recipient and not here.
const ACCOUNT_CODES: [i64; 4] = [131031, 131042, 131045, 368];
/// The template as configured does not match Meta's: 132000 (parameter count), 132001 (no
/// such template or language), 132005 (text too long), 132007 (policy), 132012 (format).
const TEMPLATE_CODES: [i64; 5] = [132000, 132001, 132005, 132007, 132012];
/// Worth retrying: 1 and 2 (unknown, service), 131000 (something went wrong), 131016
/// (service unavailable), 133004 (server temporarily unavailable).
const TRANSIENT_CODES: [i64; 5] = [1, 2, 131000, 131016, 133004];

impl WhatsappClient {
    pub fn new(s: &WhatsappSettings) -> Result<WhatsappClient, BuildError> {
        let err = |e: &dyn std::fmt::Display| BuildError::Http(format!("whatsapp_cloud: {e}"));
        let base = Url::parse(&s.base_url).map_err(|e| err(&e))?;
        let path = format!("{}/{}/messages", s.api_version, s.phone_number_id);
        let http = super::http_client(s.timeout_ms).map_err(|e| err(&e))?;
        Ok(WhatsappClient {
            http,
            messages_url: base.join(&path).map_err(|e| err(&e))?,
            access_token: s.access_token.clone(),
            templates: (s.templates.iter())
                .map(|(l, t)| (l.to_ascii_lowercase(), t.clone()))
                .collect(),
        })
    }

    pub async fn send(&self, to: &Destination, message: &Message) -> Result<Sent, ProviderError> {
        let misconfigured = |detail: String| ProviderError::Permanent {
            status: None,
            reason: FailReason::ProviderMisconfigured,
            detail,
        };
        let (Destination::Phone(phone), Message::Whatsapp { code, locales }) = (to, message) else {
            return Err(misconfigured(
                "whatsapp_cloud carries whatsapp only; check [channels]".into(),
            ));
        };
        let Some(template) = locales.iter().find_map(|l| self.templates.get(l)) else {
            return Err(misconfigured(format!(
                "no template for locale {}",
                locales.first().map_or("", String::as_str)
            )));
        };
        let body = template_message(phone.as_e164(), template, code);
        let response = self
            .http
            .post(self.messages_url.clone())
            .bearer_auth(self.access_token.expose())
            .json(&body)
            .send()
            .await
            .map_err(super::unanswered)?;
        let status = response.status();
        let retry_after = super::twilio::retry_after(response.headers());
        let body = super::answer_body(response).await;
        classify(status, retry_after, &body)
    }
}

/// The Cloud API's template message: the code fills the body's one parameter and the button's
/// (`sub_type` `url`, index 0), which is how Meta's authentication templates take it for both
/// copy-code and one-tap buttons.
pub fn template_message(to_e164: &str, template: &WhatsappTemplate, code: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to_e164.trim_start_matches('+'),
        "type": "template",
        "template": {
            "name": template.name,
            "language": { "code": template.language },
            "components": [
                { "type": "body", "parameters": [{ "type": "text", "text": code }] },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{ "type": "text", "text": code }]
                }
            ]
        }
    })
}

/// Maps a Graph API answer to the outcome: a 2xx with `messages[0].id` is sent; otherwise
/// Meta's `error.code` decides, then the HTTP status.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Sent, ProviderError> {
    let json: Value = serde_json::from_slice(body).unwrap_or_default();
    let http = Some(status.as_u16());
    if status.is_success() {
        let id = json.pointer("/messages/0/id").and_then(Value::as_str);
        return Ok(Sent {
            provider_message_id: id.map(str::to_string),
            status: http,
        });
    }
    let code = json.pointer("/error/code").and_then(Value::as_i64);
    let detail = match code {
        Some(c) => format!("HTTP {} (Meta error {c})", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    let permanent = |reason| ProviderError::Permanent {
        status: http,
        reason,
        detail: detail.clone(),
    };
    let transient = || ProviderError::Transient {
        status: http,
        detail: detail.clone(),
        in_doubt: false,
    };
    match code {
        Some(c) if RATE_LIMIT_CODES.contains(&c) => Err(ProviderError::RateLimited {
            status: http,
            retry_after,
            detail,
        }),
        Some(c) if INVALID_DESTINATION_CODES.contains(&c) => {
            Err(permanent(FailReason::InvalidDestination))
        }
        Some(c) if AUTH_CODES.contains(&c) || (200..300).contains(&c) => {
            Err(permanent(FailReason::ProviderAuth))
        }
        Some(c) if ACCOUNT_CODES.contains(&c) => Err(permanent(FailReason::ProviderAccount)),
        Some(c) if TEMPLATE_CODES.contains(&c) => Err(permanent(FailReason::ProviderMisconfigured)),
        Some(c) if TRANSIENT_CODES.contains(&c) => Err(transient()),
        _ => match status {
            StatusCode::TOO_MANY_REQUESTS => Err(ProviderError::RateLimited {
                status: http,
                retry_after,
                detail,
            }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(permanent(FailReason::ProviderAuth))
            }
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Err(transient()),
            _ => Err(permanent(FailReason::ProviderPermanent)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> ProviderError {
        classify(StatusCode::from_u16(status).unwrap(), None, body.as_bytes()).unwrap_err()
    }

    fn reason(e: ProviderError) -> String {
        match e {
            ProviderError::Permanent { reason, .. } => reason.code().to_string(),
            ProviderError::RateLimited { .. } => "rate_limited".into(),
            ProviderError::Transient { .. } => "transient".into(),
        }
    }

    #[test]
    fn metas_error_codes_map_to_outcome_classes() {
        let meta = |code: i64| {
            format!(
                r#"{{"error":{{"message":"x","type":"OAuthException","code":{code},"fbtrace_id":"A"}}}}"#
            )
        };
        assert_eq!(reason(err(400, &meta(130429))), "rate_limited");
        assert_eq!(reason(err(400, &meta(131056))), "rate_limited");
        assert_eq!(reason(err(400, &meta(131026))), "invalid_destination");
        assert_eq!(reason(err(401, &meta(190))), "provider_auth");
        assert_eq!(reason(err(403, &meta(200))), "provider_auth");
        assert_eq!(reason(err(400, &meta(131031))), "provider_account");
        assert_eq!(reason(err(404, &meta(132001))), "provider_misconfigured");
        assert_eq!(reason(err(500, &meta(131000))), "transient");
        assert_eq!(reason(err(503, "<html>")), "transient");
        assert_eq!(reason(err(429, "")), "rate_limited");
        assert_eq!(reason(err(400, &meta(100))), "provider_permanent");
        let e = err(400, &meta(131026));
        assert!(!e.is_provider_wide());
        assert!(err(401, &meta(190)).is_provider_wide());
    }

    #[test]
    fn success_reads_the_wamid() {
        let body = br#"{"messaging_product":"whatsapp","contacts":[{"input":"14155550123","wa_id":"14155550123"}],"messages":[{"id":"wamid.HBgL"}]}"#;
        let sent = classify(StatusCode::OK, None, body).unwrap();
        assert_eq!(sent.provider_message_id.as_deref(), Some("wamid.HBgL"));
    }
}
