//! Signed messages: `otpd-signature: t=<unix seconds>,kid=<key id>,v2=<hex HMAC-SHA256>` over
//! `t + "\n" + type + "\n" + body`, where `type` is the message's AMQP `type` property (empty
//! when it has none; a type holding a newline never verifies, so the three parts cannot be
//! told apart two ways). The type is signed because it says what the body means: a signed
//! `verified` body republished without its type must not pass as a job. The timestamp bounds
//! replay to `max_age`; beyond it, the challenge_id's deduplication stops a replayed job from
//! sending twice anyway.
//!
//! The scheme is versioned by the key of its last field. `v1` signed the body alone and is
//! refused, since it lets the type be changed under a valid signature.

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
    #[error("the message carries no otpd-signature header")]
    Missing,
    #[error("the otpd-signature header is not t=…,kid=…,v2=…")]
    Malformed,
    #[error(
        "the otpd-signature is v1, which does not cover the message type; sign with v2 (docs/job-v1.md)"
    )]
    Outdated,
    #[error("no signing key has id `{0}`")]
    UnknownKey(String),
    #[error("the signature does not match the message")]
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

/// What a signature covers: the message's AMQP `type` (`None` for a job) and its body.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub kind: Option<&'a str>,
    pub body: &'a [u8],
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

    /// Checks `header` against the message at `now` (unix seconds).
    pub fn verify(
        &self,
        header: Option<&str>,
        message: Signed<'_>,
        now: i64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let (t, kid, sig) = parse(header)?;
        let key = self
            .keys
            .get(kid)
            // The publisher's text, on its way to a log line and a dead letter's header.
            .ok_or_else(|| SignatureError::UnknownKey(crate::domain::text::clean(kid, 64)))?;
        let sig = hex::decode(sig).map_err(|_| SignatureError::Malformed)?;
        if message.kind.is_some_and(|k| k.contains('\n')) {
            return Err(SignatureError::Mismatch);
        }
        // Constant-time comparison (`verify_slice`), so the answer's timing reveals nothing.
        mac(key.expose(), t, message)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Mismatch)?;
        let age = now - t;
        if age > self.max_age_secs || -age > FUTURE_SKEW_SECS {
            return Err(SignatureError::Stale(age));
        }
        Ok(())
    }
}

fn parse(header: &str) -> Result<(i64, &str, &str), SignatureError> {
    let (mut t, mut kid, mut v1, mut v2) = (None, None, false, None);
    for part in header.split(',') {
        match part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?
        {
            ("t", v) => t = v.parse().ok(),
            ("kid", v) => kid = Some(v),
            ("v1", _) => v1 = true,
            ("v2", v) => v2 = Some(v),
            _ => {}
        }
    }
    match (t, kid, v2) {
        (Some(t), Some(kid), Some(sig)) => Ok((t, kid, sig)),
        _ if v1 => Err(SignatureError::Outdated),
        _ => Err(SignatureError::Malformed),
    }
}

fn mac(key: &str, t: i64, message: Signed<'_>) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(message.kind.unwrap_or_default().as_bytes());
    mac.update(b"\n");
    mac.update(message.body);
    mac
}

/// The header value a producer sends: what identity services compute (docs/job-v1.md).
pub fn sign(kid: &str, key: &str, t: i64, message: Signed<'_>) -> String {
    let sig = hex::encode(mac(key, t, message).finalize().into_bytes());
    format!("t={t},kid={kid},v2={sig}")
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

    fn job(body: &[u8]) -> Signed<'_> {
        Signed { kind: None, body }
    }

    #[test]
    fn a_signature_by_any_live_key_verifies() {
        let v = verifier();
        let h = sign("k1", KEY, 1000, job(b"{}"));
        assert_eq!(v.verify(Some(&h), job(b"{}"), 1010), Ok(()));
        let h2 = sign("k2", "another key of at least 32 bytes!", 1000, job(b"{}"));
        assert_eq!(v.verify(Some(&h2), job(b"{}"), 1000), Ok(()));
    }

    #[test]
    fn forged_altered_unknown_and_missing_signatures_fail() {
        let v = verifier();
        let h = sign("k1", KEY, 1000, job(b"{\"a\":1}"));
        assert_eq!(
            v.verify(Some(&h), job(b"{\"a\":2}"), 1000),
            Err(SignatureError::Mismatch)
        );
        let forged = sign("k1", "not the key, but 32 bytes long!!", 1000, job(b"{}"));
        assert_eq!(
            v.verify(Some(&forged), job(b"{}"), 1000),
            Err(SignatureError::Mismatch)
        );
        let unknown = sign("k9\u{1b}[2J", KEY, 1000, job(b"{}"));
        assert_eq!(
            v.verify(Some(&unknown), job(b"{}"), 1000),
            Err(SignatureError::UnknownKey("k9[2J".into()))
        );
        assert_eq!(
            v.verify(Some(&unknown), job(b"{}"), 1000)
                .unwrap_err()
                .reason(),
            RejectReason::BadSignature
        );
        assert_eq!(
            v.verify(None, job(b"{}"), 1000).unwrap_err().reason(),
            RejectReason::Unsigned
        );
        assert_eq!(
            v.verify(Some("v2=zz"), job(b"{}"), 1000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_type_is_signed_with_the_body() {
        let v = verifier();
        let verified = Signed {
            kind: Some("verified"),
            body: b"{}",
        };
        let h = sign("k1", KEY, 1000, verified);
        assert_eq!(v.verify(Some(&h), verified, 1000), Ok(()));
        // The same body republished without its type, or with another, does not verify.
        assert_eq!(
            v.verify(Some(&h), job(b"{}"), 1000),
            Err(SignatureError::Mismatch)
        );
        let cancel = Signed {
            kind: Some("cancel"),
            body: b"{}",
        };
        assert_eq!(
            v.verify(Some(&h), cancel, 1000),
            Err(SignatureError::Mismatch)
        );
        // A type may not smuggle a separator into the signed bytes.
        let split = Signed {
            kind: Some("verified\n{}"),
            body: b"",
        };
        assert_eq!(
            v.verify(Some(&h), split, 1000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_v1_signature_is_refused_as_outdated() {
        let v = verifier();
        let v1 = "t=1000,kid=k1,v1=00ff";
        assert_eq!(
            v.verify(Some(v1), job(b"{}"), 1000),
            Err(SignatureError::Outdated)
        );
        assert_eq!(
            SignatureError::Outdated.reason(),
            RejectReason::BadSignature
        );
    }

    #[test]
    fn the_timestamp_is_signed_and_bounds_replay() {
        let v = verifier();
        let h = sign("k1", KEY, 1000, job(b"{}"));
        assert_eq!(
            v.verify(Some(&h), job(b"{}"), 1301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            v.verify(Some(&h), job(b"{}"), 900),
            Err(SignatureError::Stale(-100))
        );
        // Moving the timestamp forward breaks the signature.
        let moved = h.replace("t=1000", "t=1290");
        assert_eq!(
            v.verify(Some(&moved), job(b"{}"), 1300),
            Err(SignatureError::Mismatch)
        );
    }
}
