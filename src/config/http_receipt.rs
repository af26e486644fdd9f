//! Receipts of the generic HTTP provider (`[providers.<name>.receipts]`): the vendor posts them
//! to `/webhooks/http/<name>`, and this describes how to authenticate and read them.

use super::BodyFormat;
use super::error::{ConfigError, invalid};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpReceiptSettings {
    /// How the vendor posts: `form` fields or a `json` object.
    pub format: BodyFormat,
    /// Where the vendor's message id is: a form field, or a JSON pointer (`/message_uuid`).
    pub message_id: String,
    /// Where its status is, likewise.
    pub status: String,
    /// Where its error code is, likewise; empty: none.
    #[serde(default)]
    pub error_code: String,
    /// Status values meaning the handset got the message.
    pub delivered: Vec<String>,
    /// Status values meaning it never will. Any other status is interim and changes nothing.
    pub undelivered: Vec<String>,
    pub auth: ReceiptAuth,
}

/// How a receipt proves it comes from the vendor. Secrets are named, from the provider's
/// `secrets`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiptAuth {
    /// An HMAC of a text the vendor builds from the request, in a header or a body field.
    Hmac {
        /// The header holding the signature (several, comma-separated, are each tried).
        #[serde(default)]
        header: String,
        /// Or the body field (form field or top-level JSON key) holding it; that field is left
        /// out of `params`.
        #[serde(default)]
        field: String,
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        /// The secret keying the HMAC.
        key_secret: String,
        /// A minijinja template of the signed text over `url` (this webhook's public URL),
        /// `body` (the raw body), `params` (the fields as `[name, value]` pairs sorted by
        /// name) and `headers` (by lower-case name).
        signed: String,
    },
    /// HTTP basic authentication with the two secrets.
    Basic {
        username_secret: String,
        password_secret: String,
    },
    /// `Authorization: Bearer <JWT>` signed HS256 with the secret; a `payload_hash` claim, when
    /// present, must be the SHA-256 of the body, and `iat` must be within `max_age_secs`.
    Jwt {
        secret: String,
        #[serde(default = "default_max_age")]
        max_age_secs: u64,
    },
}

fn default_max_age() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

impl HttpReceiptSettings {
    /// The secrets the auth names, with the key naming each.
    fn named_secrets(&self) -> Vec<(&'static str, &str)> {
        match &self.auth {
            ReceiptAuth::Hmac { key_secret, .. } => vec![("key_secret", key_secret)],
            ReceiptAuth::Basic {
                username_secret,
                password_secret,
            } => vec![
                ("username_secret", username_secret),
                ("password_secret", password_secret),
            ],
            ReceiptAuth::Jwt { secret, .. } => vec![("secret", secret)],
        }
    }
}

/// Checks a provider's receipt section; `secrets` are the provider's secret names.
pub(super) fn validate_receipts<'a>(
    name: &str,
    r: &HttpReceiptSettings,
    secrets: impl Iterator<Item = &'a String> + Clone,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("providers.{name}.receipts.{k}");
    if r.message_id.is_empty() || r.status.is_empty() {
        return Err(invalid(
            key("message_id"),
            "message_id and status must both be set",
        ));
    }
    if r.delivered.is_empty() && r.undelivered.is_empty() {
        return Err(invalid(
            key("delivered"),
            "list the final statuses in delivered and undelivered",
        ));
    }
    for (k, secret) in r.named_secrets() {
        if !secrets.clone().any(|s| s == secret) {
            return Err(invalid(
                key(&format!("auth.{k}")),
                format!("names `{secret}`, which is not in providers.{name}.secrets"),
            ));
        }
    }
    if let ReceiptAuth::Hmac {
        header,
        field,
        signed,
        ..
    } = &r.auth
    {
        if header.is_empty() == field.is_empty() {
            return Err(invalid(
                key("auth.header"),
                "set exactly one of header and field",
            ));
        }
        if let Err(e) = minijinja::Environment::new().template_from_str(signed) {
            return Err(invalid(key("auth.signed"), e.to_string()));
        }
    }
    Ok(())
}
