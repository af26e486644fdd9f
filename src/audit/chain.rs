//! The pure part of the audit chain: how one event is encoded and hashed.
//!
//! Each field is written as a 4-byte big-endian length and its bytes (an absent field as
//! length 0xFFFF_FFFF), so no two different rows encode alike. A row's hash is
//! SHA-256(previous hash ‖ encoding); the first row's previous hash is 32 zero bytes, or the
//! anchor a purge left behind.

pub use crate::store::EventFields;
use sha2::{Digest, Sha256};

pub const GENESIS: [u8; 32] = [0; 32];

/// One audit event as it is chained.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainedEvent {
    pub id: i64,
    /// The event's place and hash, from its seal; absent before it is sealed.
    #[sqlx(default)]
    pub seq: Option<i64>,
    #[sqlx(default)]
    pub hash: Option<Vec<u8>>,
    /// The writing transaction's id. Not chained: it only orders sealing.
    #[sqlx(default)]
    pub xid: i64,
    pub challenge_id: String,
    #[sqlx(flatten)]
    pub fields: EventFields,
}

/// The event columns [`ChainedEvent`] reads, for every query that loads one (a seal's `seq`
/// and `hash` come from `audit_seals`).
pub const COLUMNS: &str = "id, challenge_id, at, kind, state, attempt, provider, \
                           response_status, latency_ms, reason, detail, in_doubt";

fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

/// The hash of `e` placed at `seq` after `prev`.
pub fn hash(prev: &[u8], seq: i64, row: &ChainedEvent) -> [u8; 32] {
    let e = &row.fields;
    let mut out = Vec::with_capacity(160);
    let num = |n: Option<i64>| n.map(|n| n.to_string().into_bytes());
    field(&mut out, Some(&seq.to_be_bytes()));
    field(&mut out, Some(&row.id.to_be_bytes()));
    field(&mut out, Some(row.challenge_id.as_bytes()));
    field(&mut out, Some(&e.at.timestamp_micros().to_be_bytes()));
    field(&mut out, Some(e.kind.as_bytes()));
    field(&mut out, e.state.as_deref().map(str::as_bytes));
    field(&mut out, num(e.attempt.map(i64::from)).as_deref());
    field(&mut out, e.provider.as_deref().map(str::as_bytes));
    field(&mut out, num(e.response_status.map(i64::from)).as_deref());
    field(&mut out, num(e.latency_ms.map(i64::from)).as_deref());
    field(&mut out, e.reason.as_deref().map(str::as_bytes));
    field(&mut out, e.detail.as_deref().map(str::as_bytes));
    field(&mut out, Some(&[u8::from(e.in_doubt)]));
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&out);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ChainedEvent {
        ChainedEvent {
            id: 7,
            seq: None,
            hash: None,
            xid: 0,
            challenge_id: "c1".into(),
            fields: EventFields {
                at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
                kind: "state".into(),
                state: Some("sent".into()),
                attempt: Some(1),
                provider: Some("twilio".into()),
                response_status: Some(201),
                latency_ms: Some(42),
                reason: None,
                detail: None,
                in_doubt: false,
            },
        }
    }

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let base = hash(&GENESIS, 1, &event());
        assert_eq!(base, hash(&GENESIS, 1, &event()), "deterministic");
        assert_ne!(base, hash(&[1; 32], 1, &event()));
        assert_ne!(base, hash(&GENESIS, 2, &event()));
        let edits: [fn(&mut ChainedEvent); 8] = [
            |e| e.challenge_id.push('x'),
            |e| e.fields.at += chrono::Duration::microseconds(1),
            |e| e.fields.state = Some("failed".into()),
            |e| e.fields.attempt = None,
            |e| e.fields.latency_ms = Some(43),
            |e| e.fields.reason = Some(String::new()),
            |e| e.fields.detail = Some("x".into()),
            |e| e.fields.in_doubt = true,
        ];
        for edit in edits {
            let mut e = event();
            edit(&mut e);
            assert_ne!(base, hash(&GENESIS, 1, &e));
        }
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let mut a = event();
        a.fields.provider = Some("ab".into());
        a.fields.reason = Some("c".into());
        let mut b = event();
        b.fields.provider = Some("a".into());
        b.fields.reason = Some("bc".into());
        assert_ne!(hash(&GENESIS, 1, &a), hash(&GENESIS, 1, &b));
    }
}
