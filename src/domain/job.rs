//! The job contract v1 (docs/job-v1.md): bytes from the queue → a validated [`Job`] or a
//! [`Rejection`] with a stable machine-readable reason.
//!
//! Parsing is done field by field over a JSON object rather than with one serde derive so that
//! every failure names its field with its own reason code, and so that the challenge_id is
//! recovered from an otherwise invalid job (it keys the audit row and the `rejected` event).

use super::fallback::{STEP_SEPARATOR, Step};
use super::rejection::{RejectReason, Rejection};
use super::{AccountId, ChallengeId, Channel, Destination, EmailAddress, OtpCode, PhoneNumber};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// The largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The largest `metadata` object accepted, measured as its compact JSON encoding.
pub const MAX_METADATA_BYTES: usize = 1024;

/// Every field of the job contract.
pub const KNOWN_FIELDS: [&str; 13] = [
    "version",
    "challenge_id",
    "account_id",
    "channel",
    "to",
    "code",
    "expires_at",
    "locale",
    "template",
    "client_ip",
    "metadata",
    "fallback",
    "lane",
];

/// A send-code job that passed validation.
#[derive(Debug)]
pub struct Job {
    pub challenge_id: ChallengeId,
    pub account_id: AccountId,
    pub channel: Channel,
    pub to: Destination,
    pub code: OtpCode,
    pub expires_at: DateTime<Utc>,
    /// None means the configured default locale.
    pub locale: Option<String>,
    pub template: String,
    pub client_ip: Option<IpAddr>,
    /// Echoed in status events; never interpreted.
    pub metadata: BTreeMap<String, String>,
    /// The channels to try next, in order, while the code is not verified (docs/workflows.md).
    pub fallback: Vec<Step>,
    /// Which send of the challenge this job is: 0 for the job as published, `n` for its
    /// `fallback[n - 1]` (see [`Job::at_step`]).
    pub step: u8,
}

impl Job {
    /// Parses and validates one message body.
    pub fn parse(body: &[u8]) -> Result<Job, Rejection> {
        check_size(body)?;
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            // serde_json's message gives line and column only, never the offending text.
            Rejection::new(RejectReason::MalformedJson, format!("not valid JSON: {e}"))
        })?;
        let Value::Object(obj) = value else {
            return Err(Rejection::new(
                RejectReason::NotAnObject,
                "the body must be a JSON object",
            ));
        };
        let challenge_id = obj
            .get("challenge_id")
            .and_then(Value::as_str)
            .and_then(|s| ChallengeId::parse(s).ok());
        Job::from_object(&obj).map_err(|mut r| {
            r.challenge_id = challenge_id;
            r
        })
    }

    fn from_object(obj: &Map<String, Value>) -> Result<Job, Rejection> {
        if let Some(unknown) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            let detail = format!("unknown field `{}`", truncate(unknown, 64));
            return Err(Rejection::new(RejectReason::UnknownField, detail));
        }
        match obj.get("version") {
            Some(v) if v.as_u64() == Some(1) => {}
            Some(_) => {
                return Err(Rejection::new(
                    RejectReason::UnsupportedVersion,
                    "version must be 1",
                ));
            }
            None => return Err(missing("version")),
        }
        let challenge_id = parse_str(
            obj,
            "challenge_id",
            RejectReason::InvalidChallengeId,
            ChallengeId::parse,
        )?;
        let account_id = parse_str(
            obj,
            "account_id",
            RejectReason::InvalidAccountId,
            AccountId::parse,
        )?;
        let channel = parse_str(obj, "channel", RejectReason::UnknownChannel, |s| {
            Channel::parse(s)
                .ok_or_else(|| "channel must be one of sms, voice, whatsapp, email".to_string())
        })?;
        let to = parse_str(
            obj,
            "to",
            RejectReason::InvalidDestination,
            |s| match channel {
                Channel::Sms | Channel::Voice | Channel::Whatsapp => {
                    PhoneNumber::parse(s).map(Destination::Phone)
                }
                Channel::Email => EmailAddress::parse(s).map(Destination::Email),
            },
        )?;
        let code = parse_str(obj, "code", RejectReason::InvalidCode, OtpCode::parse)?;
        let expires_at = parse_str(obj, "expires_at", RejectReason::InvalidExpiresAt, |s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("expires_at must be an RFC 3339 time: {e}"))
        })?;
        let locale = optional_str(obj, "locale", RejectReason::InvalidLocale, parse_locale)?;
        let template = optional_str(
            obj,
            "template",
            RejectReason::InvalidTemplate,
            parse_template_name,
        )?
        .unwrap_or_else(|| "default".to_string());
        let client_ip = optional_str(obj, "client_ip", RejectReason::InvalidClientIp, |s| {
            s.parse::<IpAddr>()
                .map_err(|_| "client_ip must be an IPv4 or IPv6 address".to_string())
        })?;
        let metadata = parse_metadata(obj.get("metadata"))?;
        let fallback = super::fallback::parse(obj.get("fallback"), &to)?;
        // Read by intake before the job is parsed, to move it to the lane it names; here only
        // checked, so that a malformed one is refused like any other field.
        optional_str(obj, "lane", RejectReason::InvalidLane, parse_lane)?;
        Ok(Job {
            challenge_id,
            account_id,
            channel,
            to,
            code,
            expires_at,
            locale,
            template,
            client_ip,
            metadata,
            fallback,
            step: 0,
        })
    }
}

impl Job {
    /// The job of fallback step `n` (1-based): the same challenge, code and expiry on the
    /// step's channel and destination.
    pub fn at_step(mut self, n: u8) -> Result<Job, Rejection> {
        let Some(step) = (n as usize)
            .checked_sub(1)
            .and_then(|i| self.fallback.get(i))
        else {
            let mut r = Rejection::new(
                RejectReason::InvalidFallback,
                format!("the job has no fallback step {n}"),
            );
            r.challenge_id = Some(self.challenge_id.clone());
            return Err(r);
        };
        self.channel = step.channel;
        self.to = step.to.clone();
        self.step = n;
        Ok(self)
    }

    /// The key of this step's own record: the challenge_id for the first send, and
    /// `<challenge_id>#<n>` for step `n`.
    pub fn key(&self) -> Cow<'_, str> {
        match self.step {
            0 => Cow::Borrowed(self.challenge_id.as_str()),
            n => Cow::Owned(format!("{}{STEP_SEPARATOR}{n}", self.challenge_id.as_str())),
        }
    }

    /// The step after this one, and how long after this one's send it fires.
    pub fn next_step(&self) -> Option<(u8, Duration)> {
        let next = self.fallback.get(self.step as usize)?;
        Some((self.step + 1, next.after))
    }
}

fn missing(field: &str) -> Rejection {
    Rejection::new(
        RejectReason::MissingField,
        format!("missing required field `{field}`"),
    )
}

fn parse_str<T>(
    obj: &Map<String, Value>,
    field: &str,
    reason: RejectReason,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, Rejection> {
    optional_str(obj, field, reason, parse)?.ok_or_else(|| missing(field))
}

fn optional_str<T>(
    obj: &Map<String, Value>,
    field: &str,
    reason: RejectReason,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, Rejection> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => parse(s).map(Some).map_err(|d| Rejection::new(reason, d)),
        Some(_) => Err(Rejection::new(
            reason,
            format!("`{field}` must be a string"),
        )),
    }
}

/// A pragmatic BCP 47 check: 2–35 characters, subtags of 1–8 letters or digits separated by
/// hyphens, the first subtag 2–3 letters. Full registry validation is left to the templates.
pub fn parse_locale(s: &str) -> Result<String, String> {
    let err = || "locale must be a BCP 47 tag such as en or pt-BR".to_string();
    if s.len() < 2 || s.len() > 35 {
        return Err(err());
    }
    let mut subtags = s.split('-');
    let first = subtags.next().unwrap_or_default();
    if !(2..=3).contains(&first.len()) || !first.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(err());
    }
    if subtags.all(|t| (1..=8).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphanumeric())) {
        Ok(s.to_string())
    } else {
        Err(err())
    }
}

fn parse_template_name(s: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if s.is_empty() || s.len() > 64 || !s.chars().all(allowed) {
        return Err("template must be 1 to 64 characters of [A-Za-z0-9_.-]".into());
    }
    Ok(s.to_string())
}

fn parse_lane(s: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-');
    match !s.is_empty() && s.len() <= 32 && s.chars().all(allowed) {
        true => Ok(()),
        false => Err("lane must be 1 to 32 characters of [a-z0-9_-]".into()),
    }
}

fn parse_metadata(value: Option<&Value>) -> Result<BTreeMap<String, String>, Rejection> {
    let bad = |d: &str| Rejection::new(RejectReason::InvalidMetadata, d);
    let Some(value) = value else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(map) = value else {
        return Err(bad("metadata must be an object of string values"));
    };
    if value.to_string().len() > MAX_METADATA_BYTES {
        return Err(bad("metadata is larger than 1024 bytes"));
    }
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(bad("metadata values must be strings")),
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The size limit of every message, checked before anything reads it.
pub fn check_size(body: &[u8]) -> Result<(), Rejection> {
    if body.len() <= MAX_BODY_BYTES {
        return Ok(());
    }
    let detail = format!(
        "body is {} bytes; the limit is {MAX_BODY_BYTES}",
        body.len()
    );
    Err(Rejection::new(RejectReason::TooLarge, detail))
}

/// A `verified` or `cancel` message (docs/job-v1.md): `{"version": 1, "challenge_id": "…"}`.
pub fn parse_verified(body: &[u8]) -> Result<ChallengeId, Rejection> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Verified {
        version: u8,
        challenge_id: String,
    }
    let invalid = |detail: String| Rejection::new(RejectReason::InvalidFeedback, detail);
    check_size(body)?;
    let v: Verified = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    match v.version {
        1 => ChallengeId::parse(&v.challenge_id).map_err(invalid),
        n => Err(invalid(format!("unsupported version {n}"))),
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
