//! Receipts of the generic HTTP provider, authenticated and read as its `receipts` section
//! describes (an HMAC in a header or a field, basic auth, or an HS256 JWT). Pure: `receipts`
//! applies what this reads.

use super::Receipt;
use crate::config::{
    BodyFormat, HmacAlgorithm, HttpReceiptSettings, ReceiptAuth, SignatureEncoding,
};
use crate::domain::DeliveryState;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Digest;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// A receipt as it was posted.
pub struct Posted<'a> {
    /// This webhook's public URL, as the vendor called it (empty without `http.public_url`).
    pub url: &'a str,
    /// Headers by lower-case name.
    pub headers: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
    /// Seconds since the Unix epoch, for a JWT's `iat`.
    pub now: i64,
}

/// Whether the post proves it comes from the vendor; `secret` looks up the provider's secrets.
pub fn verify<'s>(
    r: &HttpReceiptSettings,
    secret: impl Fn(&str) -> Option<&'s str>,
    p: &Posted,
) -> bool {
    match &r.auth {
        ReceiptAuth::Hmac {
            header,
            field,
            algorithm,
            encoding,
            key_secret,
            signed,
        } => {
            let Some(key) = secret(key_secret) else {
                return false;
            };
            let mut params = fields(r.format, p.body);
            let given = match header.is_empty() {
                false => p.headers.get(&header.to_ascii_lowercase()).cloned(),
                true => params
                    .iter()
                    .find(|(k, _)| k == field)
                    .map(|(_, v)| v.clone()),
            };
            if header.is_empty() {
                params.retain(|(k, _)| k != field);
            }
            let Some(given) = given else { return false };
            let Some(text) = signed_text(signed, p, &params) else {
                return false;
            };
            let Some(mac) = hmac(*algorithm, key.as_bytes(), text.as_bytes()) else {
                return false;
            };
            given
                .split(',')
                .any(|sig| decode(*encoding, sig.trim()).is_some_and(|s| equal(&s, &mac)))
        }
        ReceiptAuth::Basic {
            username_secret,
            password_secret,
        } => {
            let (Some(user), Some(pass)) = (secret(username_secret), secret(password_secret))
            else {
                return false;
            };
            let Some(given) = p
                .headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Basic "))
            else {
                return false;
            };
            let expected = STANDARD.encode(format!("{user}:{pass}"));
            equal(given.trim().as_bytes(), expected.as_bytes())
        }
        ReceiptAuth::Jwt {
            secret: name,
            max_age_secs,
        } => {
            let token = p
                .headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Bearer "));
            match (secret(name), token) {
                (Some(key), Some(token)) => jwt(key, token.trim(), p, *max_age_secs),
                _ => false,
            }
        }
    }
}

/// The delivery receipt the post carries, if it is a final one for a message id.
pub fn read(r: &HttpReceiptSettings, body: &[u8]) -> Option<Receipt> {
    let status = lookup(r.format, body, &r.status)?;
    let state = if r.delivered.contains(&status) {
        DeliveryState::Delivered
    } else if r.undelivered.contains(&status) {
        DeliveryState::Undelivered
    } else {
        return None;
    };
    let sid = lookup(r.format, body, &r.message_id).filter(|id| !id.is_empty())?;
    let error = (!r.error_code.is_empty())
        .then(|| lookup(r.format, body, &r.error_code))
        .flatten()
        .filter(|e| !e.is_empty());
    Some(Receipt { sid, state, error })
}

/// The post's fields sorted by name: form pairs, or a JSON object's scalar members.
fn fields(format: BodyFormat, body: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = match format {
        BodyFormat::Form => form_urlencoded::parse(body).into_owned().collect(),
        BodyFormat::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => o
                .into_iter()
                .filter_map(|(k, v)| Some((k, scalar(&v)?)))
                .collect(),
            _ => Vec::new(),
        },
    };
    out.sort();
    out
}

/// A form field by name, or a JSON value by pointer.
fn lookup(format: BodyFormat, body: &[u8], at: &str) -> Option<String> {
    match format {
        BodyFormat::Form => form_urlencoded::parse(body)
            .find(|(k, _)| k == at)
            .map(|(_, v)| v.into_owned()),
        BodyFormat::Json => scalar(serde_json::from_slice::<Value>(body).ok()?.pointer(at)?),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn signed_text(template: &str, p: &Posted, params: &[(String, String)]) -> Option<String> {
    let ctx = minijinja::context! {
        url => p.url,
        body => String::from_utf8_lossy(p.body),
        params => params,
        headers => p.headers,
    };
    minijinja::Environment::new().render_str(template, ctx).ok()
}

fn hmac(algorithm: HmacAlgorithm, key: &[u8], text: &[u8]) -> Option<Vec<u8>> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], text: &[u8]) -> Option<Vec<u8>> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
        m.update(text);
        Some(m.finalize().into_bytes().to_vec())
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, text),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, text),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, text),
    }
}

fn decode(encoding: SignatureEncoding, sig: &str) -> Option<Vec<u8>> {
    match encoding {
        SignatureEncoding::Hex => hex::decode(sig).ok(),
        SignatureEncoding::Base64 => STANDARD.decode(sig).ok(),
    }
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An HS256 JWT over the body: signature, age, and the body's hash when claimed.
fn jwt(key: &str, token: &str, p: &Posted, max_age_secs: u64) -> bool {
    let mut parts = token.split('.');
    let (Some(head), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let json = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let (Some(head), Some(claims), Ok(sig)) =
        (json(head), json(claims), URL_SAFE_NO_PAD.decode(sig))
    else {
        return false;
    };
    let signed = &token[..token.rfind('.').unwrap_or(0)];
    let mac = hmac(HmacAlgorithm::Sha256, key.as_bytes(), signed.as_bytes());
    if head["alg"] != "HS256" || !mac.is_some_and(|m| equal(&m, &sig)) {
        return false;
    }
    let fresh = claims["iat"]
        .as_i64()
        .is_some_and(|iat| p.now.abs_diff(iat) <= max_age_secs);
    let body_hash = hex::encode(sha2::Sha256::digest(p.body));
    let hash_ok = match claims.get("payload_hash") {
        None => true,
        Some(h) => h
            .as_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(&body_hash)),
    };
    fresh && hash_ok
}

#[cfg(test)]
#[path = "http_receipt_tests.rs"]
mod tests;
