//! What an attacker or a careless publisher sends, as proptest strategies: text with NULs,
//! control and bidirectional characters, phone numbers and 10 KiB runs; JSON values of the
//! wrong type; job bodies with fields replaced, keys added, bytes cut or inserted, and `\u`
//! escapes of lone surrogates.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Text as hostile as a string can be.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\\x7f\\u{85}\\u{200e}\\u{202e}\\u{2066}a-z0-9+@. :<>-]{0,48}",
        Just("\u{0}".to_string()),
        (1usize..12 * 1024).prop_map(|n| "\u{202e}x".repeat(n / 2)),
        "\\+[1-9][0-9]{6,14}",
        "[a-z]{1,12}@[a-z]{1,12}\\.com",
    ]
}

/// Any JSON value, biased towards hostile strings.
pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => text().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

use otpd::domain::job::KNOWN_FIELDS as FIELDS;

/// A valid job, then some of its fields replaced or removed, keys added, and its bytes
/// possibly mangled.
pub fn job_body() -> impl Strategy<Value = Vec<u8>> {
    let replaced = prop::collection::vec((0..FIELDS.len(), prop::option::of(value())), 0..4);
    let added = prop::collection::vec((text(), value()), 0..2);
    let mangle = prop_oneof![
        6 => Just(Mangle::None),
        1 => any::<prop::sample::Index>().prop_map(Mangle::Cut),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mangle::Insert(i, b)),
        1 => Just(Mangle::LoneSurrogate),
    ];
    let id = "[A-Za-z0-9._:-]{1,24}";
    let steps = prop::option::of(fallback());
    (id, replaced, added, steps, mangle).prop_map(|(id, replaced, added, steps, mangle)| {
        let mut job = valid(&id);
        if let Some(steps) = steps {
            job.insert("fallback".into(), steps);
        }
        for (field, v) in replaced {
            match v {
                Some(v) => job.insert(FIELDS[field].to_string(), v),
                None => job.remove(FIELDS[field]),
            };
        }
        for (k, v) in added {
            job.insert(k, v);
        }
        mangle.apply(serde_json::to_vec(&Value::Object(job)).unwrap())
    })
}

/// A `fallback` array of step-shaped objects (sometimes too many) whose channels, addresses
/// and delays are real, out of range or hostile.
fn fallback() -> impl Strategy<Value = Value> {
    let channel = prop_oneof![
        3 => prop::sample::select(vec!["sms", "voice", "whatsapp", "email"]).prop_map(Value::from),
        1 => value(),
    ];
    let after = prop_oneof![
        3 => (0u64..700).prop_map(Value::from),
        1 => value(),
    ];
    let step = (channel, prop::option::of(text()), after).prop_map(|(channel, to, after)| {
        let mut m = Map::new();
        m.insert("channel".into(), channel);
        if let Some(to) = to {
            m.insert("to".into(), Value::String(to));
        }
        m.insert("after_secs".into(), after);
        Value::Object(m)
    });
    prop::collection::vec(step, 0..5).prop_map(Value::Array)
}

/// A `verified` feedback body, hostile in the same ways.
pub fn verified_body() -> impl Strategy<Value = Vec<u8>> {
    let fields = prop::collection::btree_map(
        prop_oneof![
            Just("version".to_string()),
            Just("challenge_id".to_string()),
            text()
        ],
        value(),
        0..3,
    );
    prop_oneof![
        "[A-Za-z0-9._:-]{1,24}".prop_map(|id| {
            serde_json::to_vec(&serde_json::json!({"version": 1, "challenge_id": id})).unwrap()
        }),
        fields.prop_map(|m| serde_json::to_vec(&m).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn valid(id: &str) -> Map<String, Value> {
    let job = serde_json::json!({
        "version": 1,
        "challenge_id": id,
        "account_id": "acct-1",
        "channel": "sms",
        "to": "+14155550123",
        "code": "123456",
        "expires_at": (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339(),
        "metadata": {"purpose": "login"},
    });
    match job {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[derive(Debug, Clone)]
enum Mangle {
    None,
    Cut(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    LoneSurrogate,
}

impl Mangle {
    fn apply(self, mut body: Vec<u8>) -> Vec<u8> {
        match self {
            Mangle::None => body,
            Mangle::Cut(i) => {
                body.truncate(i.index(body.len().max(1)));
                body
            }
            Mangle::Insert(i, b) => {
                body.insert(i.index(body.len() + 1), b);
                body
            }
            Mangle::LoneSurrogate => {
                let s = String::from_utf8(body).unwrap();
                s.replacen("acct-1", "acct-\\ud800", 1).into_bytes()
            }
        }
    }
}
