//! The generic HTTP SMS provider's settings (`kind = "http"`): a vendor's API described in
//! config. See docs/providers.md and the examples in docs/examples/providers/.

use super::Secret;
use crate::domain::FailReason;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// A JSON object of the rendered fields: strings, except those in `json_numbers`.
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpProviderSettings {
    /// `POST`, `PUT` or `GET` (fields then go in the query string).
    pub method: String,
    /// A template, e.g. `https://api.plivo.com/v1/Account/{{ secrets.auth_id }}/Message/`.
    pub url: String,
    /// Header name → template, e.g. `Authorization = "Bearer {{ secrets.token }}"`.
    pub headers: BTreeMap<String, String>,
    pub body_format: BodyFormat,
    /// Field name → template, e.g. `text = "{{ text }}"`.
    pub body: BTreeMap<String, String>,
    /// Body fields a `json` body carries as numbers, not strings (a vendor's integer
    /// parameter, e.g. a validity rendered from `ttl_secs`).
    pub json_numbers: Vec<String>,
    /// Values templates read as `secrets.<name>`; set them from the environment
    /// (`OTPD__PROVIDERS__<NAME>__SECRETS__<KEY>`) or systemd credentials.
    pub secrets: BTreeMap<String, Secret>,
    /// HTTP statuses that mean "accepted" (when `success_pointer` agrees).
    pub success_status: Vec<u16>,
    /// A JSON pointer into the answer that must equal `success_value` for success
    /// (vendors that answer 200 with an error inside, like Vonage); empty: status only.
    pub success_pointer: String,
    pub success_value: String,
    /// A JSON pointer to the vendor's message id in a successful answer; empty: none.
    pub message_id_pointer: String,
    /// A JSON pointer to the vendor's error code, which `rules` match on; empty: none.
    pub error_code_pointer: String,
    /// Classification of failed answers, first match wins; unmatched answers fall back to
    /// 429 rate limited, 408 and 5xx transient, 401/403 provider_auth, the rest permanent.
    pub rules: Vec<ResponseRule>,
    pub timeout_ms: u64,
    pub max_concurrency: u32,
    pub max_per_second: u32,
    /// How the vendor's delivery receipts are authenticated and read; none: no receipts.
    pub receipts: Option<Box<super::HttpReceiptSettings>>,
}

impl Default for HttpProviderSettings {
    fn default() -> Self {
        HttpProviderSettings {
            method: "POST".into(),
            url: String::new(),
            headers: BTreeMap::new(),
            body_format: BodyFormat::Form,
            body: BTreeMap::new(),
            json_numbers: Vec::new(),
            secrets: BTreeMap::new(),
            success_status: vec![200, 201, 202],
            success_pointer: String::new(),
            success_value: String::new(),
            message_id_pointer: String::new(),
            error_code_pointer: String::new(),
            rules: Vec::new(),
            timeout_ms: 10_000,
            max_concurrency: 32,
            max_per_second: 0,
            receipts: None,
        }
    }
}

/// One classification rule: it matches when the status is listed (or none are) and the
/// vendor's error code is listed (or none are); at least one list is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRule {
    #[serde(default)]
    pub status: Vec<u16>,
    #[serde(default)]
    pub codes: Vec<String>,
    pub outcome: RuleOutcome,
}

/// What a matched answer means, in `ProviderError` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    /// Retry (a network blip, the vendor's internal error).
    Transient,
    /// Slow down and retry (the vendor's throttling).
    RateLimited,
    /// This number is wrong: neither a retry nor another provider helps.
    InvalidDestination,
    /// Credentials refused: fail over, open the breaker.
    ProviderAuth,
    /// The account is suspended or out of credit: fail over, open the breaker.
    ProviderAccount,
    /// The provider's configuration is wrong (sender, parameters): fail over.
    ProviderMisconfigured,
    /// This message cannot be sent (too long, refused content).
    Permanent,
}

impl RuleOutcome {
    /// The reason of a permanent outcome.
    pub fn reason(self) -> FailReason {
        match self {
            RuleOutcome::InvalidDestination => FailReason::InvalidDestination,
            RuleOutcome::ProviderAuth => FailReason::ProviderAuth,
            RuleOutcome::ProviderAccount => FailReason::ProviderAccount,
            RuleOutcome::ProviderMisconfigured => FailReason::ProviderMisconfigured,
            RuleOutcome::Transient | RuleOutcome::RateLimited | RuleOutcome::Permanent => {
                FailReason::ProviderPermanent
            }
        }
    }
}
