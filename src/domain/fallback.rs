//! Fallback steps (docs/workflows.md): a job's `fallback` array, parsed at the edge, and the
//! job of one step. Step 0 is the job as published; step `n` sends the same code on
//! `fallback[n - 1]`'s channel, `after` its previous step was sent, unless the code was
//! verified, the challenge cancelled or the code's time is up.

use super::rejection::{RejectReason, Rejection};
use super::{Channel, Destination, EmailAddress, PhoneNumber};
use serde_json::Value;
use std::time::Duration;

/// The most steps a job may add after its first send.
pub const MAX_STEPS: usize = 3;
/// The shortest and longest wait before a step, in seconds.
pub const AFTER_SECS: std::ops::RangeInclusive<u64> = 10..=600;
/// Joins a challenge_id and a step number in the key of the step's own record. No
/// challenge_id contains it, so a step's key is never a publisher's challenge.
pub const STEP_SEPARATOR: char = '#';

/// One fallback step.
#[derive(Debug, Clone)]
pub struct Step {
    pub channel: Channel,
    pub to: Destination,
    /// How long after the previous step was sent this one fires.
    pub after: Duration,
}

/// Reads `fallback`: at most [`MAX_STEPS`] objects `{channel, to?, after_secs}`. `to` defaults
/// to the job's own when the step's channel takes the same kind of address.
pub(super) fn parse(value: Option<&Value>, to: &Destination) -> Result<Vec<Step>, Rejection> {
    let bad = |detail: String| Rejection::new(RejectReason::InvalidFallback, detail);
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(bad("fallback must be an array of steps".into()));
    };
    if items.len() > MAX_STEPS {
        return Err(bad(format!("fallback has at most {MAX_STEPS} steps")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_step(item, to).map_err(|d| bad(format!("fallback[{i}]: {d}"))))
        .collect()
}

fn parse_step(item: &Value, job_to: &Destination) -> Result<Step, String> {
    let Value::Object(obj) = item else {
        return Err("a step is an object".into());
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["channel", "to", "after_secs"].contains(&k.as_str()))
    {
        let k: String = k.chars().take(64).collect();
        return Err(format!("unknown field `{k}`"));
    }
    let channel = obj
        .get("channel")
        .and_then(Value::as_str)
        .and_then(Channel::parse)
        .ok_or("channel must be one of sms, voice, whatsapp, email")?;
    let after = obj
        .get("after_secs")
        .and_then(Value::as_u64)
        .filter(|s| AFTER_SECS.contains(s))
        .ok_or("after_secs must be a whole number from 10 to 600")?;
    let to = match obj.get("to") {
        Some(Value::String(s)) if channel.is_phone() => {
            PhoneNumber::parse(s).map(Destination::Phone)?
        }
        Some(Value::String(s)) => EmailAddress::parse(s).map(Destination::Email)?,
        Some(_) => return Err("to must be a string".into()),
        None => match (channel.is_phone(), job_to) {
            (true, Destination::Phone(_)) | (false, Destination::Email(_)) => job_to.clone(),
            _ => {
                return Err(format!(
                    "a {channel} step after this job needs its own `to`"
                ));
            }
        },
    };
    Ok(Step {
        channel,
        to,
        after: Duration::from_secs(after),
    })
}

/// A record's key split into the challenge_id and the step.
pub fn split_key(key: &str) -> (&str, u8) {
    match key.split_once(STEP_SEPARATOR) {
        Some((id, n)) => (id, n.parse().unwrap_or(0)),
        None => (key, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Job;
    use serde_json::json;

    fn job(fallback: Value) -> Result<Job, Rejection> {
        let body = json!({"version": 1, "challenge_id": "c1", "account_id": "a", "channel": "sms",
            "to": "+447400123456", "code": "123456", "expires_at": "2030-01-01T00:00:00Z",
            "fallback": fallback});
        Job::parse(&serde_json::to_vec(&body).unwrap())
    }

    #[test]
    fn steps_default_their_address_only_when_its_kind_matches() {
        let j = job(json!([
            {"channel": "whatsapp", "after_secs": 30},
            {"channel": "email", "to": "a@example.com", "after_secs": 60},
            {"channel": "voice", "after_secs": 600}
        ]))
        .unwrap();
        assert_eq!(j.fallback.len(), 3);
        assert_eq!(j.next_step(), Some((1, Duration::from_secs(30))));
        assert_eq!(j.key(), "c1");
        let s2 = j.at_step(2).unwrap();
        assert_eq!(
            (s2.channel, s2.to.expose(), s2.step),
            (Channel::Email, "a@example.com", 2)
        );
        assert_eq!(s2.key(), "c1#2");
        assert_eq!(s2.next_step(), Some((3, Duration::from_secs(600))));
        let s3 = s2.at_step(3).unwrap();
        assert_eq!(
            (s3.channel, s3.to.expose()),
            (Channel::Voice, "+447400123456")
        );
        assert_eq!(s3.next_step(), None);
        assert_eq!(split_key("c1#3"), ("c1", 3));
        assert_eq!(split_key("c1"), ("c1", 0));
    }

    #[test]
    fn bad_steps_are_refused_with_their_index() {
        for (fallback, needle) in [
            (json!({"channel": "sms"}), "array"),
            (json!([{"channel": "email", "after_secs": 30}]), "own `to`"),
            (json!([{"channel": "fax", "after_secs": 30}]), "channel"),
            (json!([{"channel": "voice", "after_secs": 9}]), "after_secs"),
            (
                json!([{"channel": "voice", "after_secs": 601}]),
                "after_secs",
            ),
            (
                json!([{"channel": "voice", "after_secs": 30, "x": 1}]),
                "unknown field",
            ),
            (
                json!([{"channel": "voice", "to": "nope", "after_secs": 30}]),
                "fallback[0]",
            ),
            (
                json!(vec![json!({"channel": "voice", "after_secs": 10}); 4]),
                "at most 3",
            ),
        ] {
            let r = job(fallback).unwrap_err();
            assert_eq!(r.reason, RejectReason::InvalidFallback);
            assert!(r.detail.contains(needle), "{}", r.detail);
        }
        let j = job(json!([{"channel": "voice", "after_secs": 10}])).unwrap();
        assert!(j.at_step(2).is_err() && job(json!([])).unwrap().at_step(0).is_err());
    }
}
