//! Signed jobs: `otpd-signature: t=<unix seconds>,kid=<key id>,v1=<hex HMAC-SHA256>` over
//! `"<t>." + body`. The timestamp bounds replay to `max_age`; beyond it, the challenge_id's
//! deduplication stops a replayed job from sending twice anyway.

use crate::config::{Secret, SigningMode, SigningSettings};
use crate::domain::RejectReason;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

/// The AMQP header that carries the signature.
pub const HEADER: &str = "otpd-signature";
/// How far a signer's clock may run ahead of otpd's.
const FUTURE_SKEW_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the job carries no otpd-signature header")]
    Missing,
    #[error("the otpd-signature header is not t=…,kid=…,v1=…")]
    Malformed,
    #[error("no signing key has id `{0}`")]
    UnknownKey(String),
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signature's timestamp is {0} s from now, outside the allowed window")]
    Stale(i64),
}

impl SignatureError {
    /// The rejection reason of the job contract.
    pub fn reason(&self) -> RejectReason {
        match self {
            SignatureError::Missing => RejectReason::Unsigned,
            SignatureError::Stale(_) => RejectReason::SignatureExpired,
            _ => RejectReason::BadSignature,
        }
    }
}

pub struct Verifier {
    pub mode: SigningMode,
    max_age_secs: i64,
    keys: BTreeMap<String, Secret>,
}

impl Verifier {
    pub fn new(s: &SigningSettings) -> Verifier {
        Verifier {
            mode: s.mode,
            max_age_secs: i64::try_from(s.max_age_secs).unwrap_or(i64::MAX),
            keys: s.keys.clone(),
        }
    }

    /// Checks `header` against `body` at `now` (unix seconds).
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let (t, kid, sig) = parse(header).ok_or(SignatureError::Malformed)?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| SignatureError::UnknownKey(kid.to_string()))?;
        let sig = hex::decode(sig).map_err(|_| SignatureError::Malformed)?;
        // Constant-time comparison (`verify_slice`), so the answer's timing reveals nothing.
        mac(key.expose(), t, body)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Mismatch)?;
        let age = now - t;
        if age > self.max_age_secs || -age > FUTURE_SKEW_SECS {
            return Err(SignatureError::Stale(age));
        }
        Ok(())
    }
}

fn parse(header: &str) -> Option<(i64, &str, &str)> {
    let (mut t, mut kid, mut sig) = (None, None, None);
    for part in header.split(',') {
        match part.trim().split_once('=')? {
            ("t", v) => t = v.parse().ok(),
            ("kid", v) => kid = Some(v),
            ("v1", v) => sig = Some(v),
            _ => {}
        }
    }
    Some((t?, kid?, sig?))
}

fn mac(key: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value a producer sends: what identity services compute (docs/limits.md).
pub fn sign(kid: &str, key: &str, t: i64, body: &[u8]) -> String {
    let sig = hex::encode(mac(key, t, body).finalize().into_bytes());
    format!("t={t},kid={kid},v1={sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        let mut keys = BTreeMap::new();
        keys.insert("k1".to_string(), Secret::from(KEY));
        keys.insert(
            "k2".to_string(),
            Secret::from("another key of at least 32 bytes!"),
        );
        Verifier::new(&SigningSettings {
            mode: SigningMode::Require,
            max_age_secs: 300,
            keys,
        })
    }

    #[test]
    fn a_signature_by_any_live_key_verifies() {
        let v = verifier();
        let h = sign("k1", KEY, 1000, b"{}");
        assert_eq!(v.verify(Some(&h), b"{}", 1010), Ok(()));
        let h2 = sign("k2", "another key of at least 32 bytes!", 1000, b"{}");
        assert_eq!(v.verify(Some(&h2), b"{}", 1000), Ok(()));
    }

    #[test]
    fn forged_altered_unknown_and_missing_signatures_fail() {
        let v = verifier();
        let h = sign("k1", KEY, 1000, b"{\"a\":1}");
        assert_eq!(
            v.verify(Some(&h), b"{\"a\":2}", 1000),
            Err(SignatureError::Mismatch)
        );
        let forged = sign("k1", "not the key, but 32 bytes long!!", 1000, b"{}");
        assert_eq!(
            v.verify(Some(&forged), b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        let unknown = sign("k9", KEY, 1000, b"{}");
        assert_eq!(
            v.verify(Some(&unknown), b"{}", 1000).unwrap_err().reason(),
            RejectReason::BadSignature
        );
        assert_eq!(
            v.verify(None, b"{}", 1000).unwrap_err().reason(),
            RejectReason::Unsigned
        );
        assert_eq!(
            v.verify(Some("v1=zz"), b"{}", 1000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_timestamp_is_signed_and_bounds_replay() {
        let v = verifier();
        let h = sign("k1", KEY, 1000, b"{}");
        assert_eq!(
            v.verify(Some(&h), b"{}", 1301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            v.verify(Some(&h), b"{}", 900),
            Err(SignatureError::Stale(-100))
        );
        // Moving the timestamp forward breaks the signature.
        let moved = h.replace("t=1000", "t=1290");
        assert_eq!(
            v.verify(Some(&moved), b"{}", 1300),
            Err(SignatureError::Mismatch)
        );
    }
}
