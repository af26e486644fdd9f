//! Lanes: each kind of traffic in a queue of its own, so that a flood of one kind never waits
//! in front of another (docs/operations.md, "Lanes").
//!
//! The default lane is what `[amqp]` describes (`jobs_queue`, `prefetch`, `routing_keys`,
//! `max_in_flight`, `account_share`); each `[amqp.lanes.<name>]` adds one, consuming
//! `<jobs_queue>.<name>`. A lane's `max_in_flight` is its share of `delivery.max_in_flight`:
//! the shares never add up to more, so a lane's jobs never wait for a call slot another lane
//! holds.

use super::error::{ConfigError, invalid};
use super::{AmqpSettings, Settings, StringList};
use serde::{Deserialize, Serialize};

/// One extra lane, `[amqp.lanes.<name>]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LaneSettings {
    /// Topic patterns binding the lane's queue to the jobs exchange, e.g. `bulk.#`.
    pub routing_keys: StringList,
    /// Jobs of the lane held unacked at once: the window fair sharing chooses from.
    pub prefetch: u16,
    /// Jobs of the lane worked on at once.
    pub max_in_flight: u32,
    /// The most of `max_in_flight` one account holds while another account's jobs wait.
    pub account_share: f64,
}

/// A lane as intake runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub name: String,
    pub queue: String,
    pub routing_keys: Vec<String>,
    pub prefetch: u16,
    pub max_in_flight: u32,
    /// `account_share` of `max_in_flight`, in jobs, at least one.
    pub account_cap: u32,
}

impl AmqpSettings {
    /// Every lane, the default first. The default lane's `max_in_flight = 0` takes what the
    /// other lanes leave of `delivery_max`, at most its prefetch.
    pub fn lanes(&self, delivery_max: u32) -> Vec<Lane> {
        let others: u32 = self.lanes.values().map(|l| l.max_in_flight).sum();
        let default_in_flight = match self.max_in_flight {
            0 => delivery_max
                .saturating_sub(others)
                .clamp(1, u32::from(self.prefetch)),
            n => n,
        };
        let default = lane(
            &self.lane,
            self.jobs_queue.clone(),
            &self.routing_keys,
            (self.prefetch, default_in_flight, self.account_share),
        );
        let extra = self.lanes.iter().map(|(name, l)| {
            lane(
                name,
                format!("{}.{name}", self.jobs_queue),
                &l.routing_keys,
                (l.prefetch, l.max_in_flight, l.account_share),
            )
        });
        std::iter::once(default).chain(extra).collect()
    }
}

fn lane(
    name: &str,
    queue: String,
    keys: &StringList,
    (prefetch, max, share): (u16, u32, f64),
) -> Lane {
    let cap = (f64::from(max) * share).ceil() as u32;
    Lane {
        name: name.to_string(),
        queue,
        routing_keys: keys.0.clone(),
        prefetch,
        max_in_flight: max,
        account_cap: cap.clamp(1, max.max(1)),
    }
}

/// Checks every lane's settings, naming the key at fault.
pub(super) fn validate_lanes(s: &Settings) -> Result<(), ConfigError> {
    let a = &s.amqp;
    valid_name("amqp.lane", &a.lane)?;
    let mut keyed = vec![("amqp".to_string(), &a.routing_keys)];
    check_share("amqp.account_share", a.account_share)?;
    if a.max_in_flight > u32::from(a.prefetch) {
        return Err(invalid(
            "amqp.max_in_flight",
            "must not exceed amqp.prefetch",
        ));
    }
    let mut total = a.max_in_flight;
    for (name, l) in &a.lanes {
        let key = format!("amqp.lanes.{name}");
        valid_name(&key, name)?;
        if *name == a.lane {
            return Err(invalid(key, "names the default lane (amqp.lane)"));
        }
        if l.prefetch == 0 {
            return Err(invalid(format!("{key}.prefetch"), "must be at least 1"));
        }
        if l.max_in_flight == 0 || l.max_in_flight > u32::from(l.prefetch) {
            return Err(invalid(
                format!("{key}.max_in_flight"),
                "must be at least 1 and at most the lane's prefetch",
            ));
        }
        check_share(&format!("{key}.account_share"), l.account_share)?;
        total = total.saturating_add(l.max_in_flight);
        keyed.push((key, &l.routing_keys));
    }
    // The default lane's `max_in_flight = 0` takes the rest, so the rest must be one or more.
    let room = match a.max_in_flight {
        0 => total < s.delivery.max_in_flight,
        _ => total <= s.delivery.max_in_flight,
    };
    if !room {
        return Err(invalid(
            "amqp.lanes",
            format!(
                "the lanes' max_in_flight add up to {total}, more than \
                 delivery.max_in_flight ({}) leaves them",
                s.delivery.max_in_flight
            ),
        ));
    }
    check_bindings(&keyed)?;
    // Fallback steps come back from their delay queues with this routing key.
    let steps = keyed
        .iter()
        .any(|(_, keys)| keys.0.iter().any(|k| topics_overlap(k, "fallback")));
    match steps {
        true => Ok(()),
        false => Err(invalid(
            "amqp.routing_keys",
            "no lane binds the routing key `fallback`, which fallback steps return with",
        )),
    }
}

fn valid_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(invalid(
            key,
            "a lane's name is 1 to 32 of a-z, 0-9, _ and -",
        )),
    }
}

fn check_share(key: &str, share: f64) -> Result<(), ConfigError> {
    match share > 0.0 && share <= 1.0 {
        true => Ok(()),
        false => Err(invalid(key, "must be more than 0 and at most 1")),
    }
}

/// Every lane needs a binding, and no routing key may reach two lanes: the topic exchange
/// would copy such a job into both, and it would be worked twice as far as the broker goes.
fn check_bindings(keyed: &[(String, &StringList)]) -> Result<(), ConfigError> {
    for (i, (key, keys)) in keyed.iter().enumerate() {
        if keys.0.is_empty() {
            return Err(invalid(
                format!("{key}.routing_keys"),
                "must name at least one pattern",
            ));
        }
        for (other, other_keys) in &keyed[..i] {
            let clash = keys.0.iter().find_map(|p| {
                other_keys
                    .0
                    .iter()
                    .find(|q| topics_overlap(p, q))
                    .map(|q| (p, q))
            });
            if let Some((p, q)) = clash {
                return Err(invalid(
                    format!("{key}.routing_keys"),
                    format!(
                        "`{p}` matches keys that `{q}` of {other} matches too; a job would reach both lanes"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether some routing key matches both AMQP topic patterns (`*` one word, `#` any number).
pub fn topics_overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    // seen[i][j]: the first i words of `a` and the first j of `b` can match one key's prefix.
    let mut seen = vec![vec![false; b.len() + 1]; a.len() + 1];
    seen[0][0] = true;
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            if !seen[i][j] {
                continue;
            }
            let (wa, wb) = (a.get(i).copied(), b.get(j).copied());
            // `#` may match no word: skip it.
            if wa == Some("#") {
                seen[i + 1][j] = true;
            }
            if wb == Some("#") {
                seen[i][j + 1] = true;
            }
            if let (Some(x), Some(y)) = (wa, wb) {
                if x == "*" || y == "*" || x == y {
                    seen[i + 1][j + 1] = true;
                }
                // A `#` takes one more word of the other side and stays (then may be skipped).
                if x == "#" {
                    seen[i][j + 1] = true;
                }
                if y == "#" {
                    seen[i + 1][j] = true;
                }
            }
        }
    }
    seen[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::topics_overlap;

    #[test]
    fn topic_patterns_overlap_where_one_key_matches_both() {
        for (a, b, both) in [
            ("#", "bulk.#", true),
            ("*", "bulk.#", true), // `bulk` itself
            ("*", "bulk.*", false),
            ("sms", "email", false),
            ("bulk.*", "bulk.sms", true),
            ("bulk.#", "interactive.#", false),
            ("#.sms", "bulk.*", true),
            ("*.*", "*", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.c", false),
            ("#", "#", true),
        ] {
            assert_eq!(topics_overlap(a, b), both, "{a} / {b}");
            assert_eq!(topics_overlap(b, a), both, "{b} / {a}");
        }
    }
}
