//! What a scenario left behind, read back from the three witnesses: PostgreSQL (the challenges'
//! states), the status events the broker received, and the fake provider's counts.

use crate::rig::{Rig, queue_depth};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

const TERMINAL: [&str; 5] = ["sent", "failed", "expired", "rate_limited", "rejected"];

#[derive(Debug, Default)]
pub struct Audit {
    /// Jobs published in the range.
    pub jobs: usize,
    /// Challenges of the range by recorded state (`missing` when there is no row at all).
    pub by_state: BTreeMap<String, usize>,
    /// Terminal status events received, all copies counted.
    pub terminal_events: usize,
    /// Challenges with at least one terminal event.
    pub with_terminal_event: usize,
    /// Challenges whose terminal events disagree with each other or with the database.
    pub conflicting: usize,
    /// Challenges whose terminal event is marked `in_doubt`.
    pub in_doubt_events: usize,
    /// Provider calls recorded as in doubt (`delivery_events.kind = 'in_doubt'`), and the
    /// challenges they concern.
    pub in_doubt: i64,
    pub doubted_challenges: i64,
    /// Challenges the fake provider accepted at least once, and accepted sends beyond the first.
    pub seen: usize,
    pub duplicates: u64,
    /// Challenges sent more often than one plus their calls in doubt: a duplicate that no
    /// in-doubt record owns.
    pub unexplained: usize,
    /// Challenges with a call in doubt that the provider accepted once only: the flagged call
    /// never reached it (a false flag).
    pub needless_doubts: usize,
    /// Messages left in the jobs queue and in the dead-letter queue.
    pub queue_left: Option<u64>,
    pub dead_lettered: Option<u64>,
}

impl Audit {
    pub async fn take(rig: &Rig, range: Range<usize>) -> Audit {
        let mut a = Audit {
            jobs: range.len(),
            ..Audit::default()
        };
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT challenge_id, state FROM deliveries")
                .fetch_all(&rig.db)
                .await
                .expect("read the deliveries");
        let states: HashMap<String, String> = rows.into_iter().collect();
        for i in range.clone() {
            let state = states.get(&format!("f-{i}")).map_or("missing", |s| s);
            *a.by_state.entry(state.to_string()).or_default() += 1;
        }
        (a.in_doubt, a.doubted_challenges) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT challenge_id) FROM delivery_events WHERE kind = 'in_doubt'",
        )
        .fetch_one(&rig.db)
        .await
        .unwrap();
        let doubts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT challenge_id, count(*) FROM delivery_events WHERE kind = 'in_doubt' GROUP BY challenge_id",
        )
        .fetch_all(&rig.db)
        .await
        .unwrap();
        let doubts: HashMap<String, i64> = doubts.into_iter().collect();
        for i in range.clone() {
            let doubted = doubts.get(&format!("f-{i}")).copied().unwrap_or(0);
            let sends = i64::from(rig.fake.sends(i));
            if sends - 1 > doubted {
                a.unexplained += 1;
            }
            if doubted > 0 && sends <= 1 {
                a.needless_doubts += 1;
            }
        }
        let events = read_terminal_events(rig).await;
        a.terminal_events = events.values().map(Vec::len).sum();
        for i in range.clone() {
            let id = format!("f-{i}");
            let Some(evs) = events.get(&id) else { continue };
            a.with_terminal_event += 1;
            if evs.iter().any(|(_, d)| *d) {
                a.in_doubt_events += 1;
            }
            let recorded = states.get(&id).map(String::as_str);
            if evs.iter().any(|(s, _)| Some(s.as_str()) != recorded) {
                a.conflicting += 1;
            }
        }
        (a.seen, a.duplicates) = rig.fake.seen_and_duplicates(range);
        a.queue_left = queue_depth(rig.jobs_queue()).await;
        a.dead_lettered = queue_depth(rig.dead_queue()).await;
        a
    }

    pub fn count(&self, state: &str) -> usize {
        self.by_state.get(state).copied().unwrap_or(0)
    }

    /// The invariants every scenario shares; pushes a line per broken one.
    pub fn check(&self, expected: &str, failures: &mut Vec<String>) {
        if self.count(expected) != self.jobs {
            failures.push(format!(
                "expected all {} challenges `{expected}`, found {:?}",
                self.jobs, self.by_state
            ));
        }
        if self.with_terminal_event != self.jobs {
            failures.push(format!(
                "{} of {} challenges have a terminal event",
                self.with_terminal_event, self.jobs
            ));
        }
        if self.conflicting != 0 {
            failures.push(format!(
                "{} challenges have terminal events that disagree with their state",
                self.conflicting
            ));
        }
        if self.unexplained > 0 {
            failures.push(format!(
                "{} challenges were sent more often than one plus their calls in doubt",
                self.unexplained
            ));
        }
        if self.in_doubt_events as i64 != self.doubted_challenges {
            failures.push(format!(
                "{} challenges had a call in doubt but {} terminal events say in_doubt",
                self.doubted_challenges, self.in_doubt_events
            ));
        }
        if self.queue_left != Some(0) || self.dead_lettered != Some(0) {
            failures.push(format!(
                "jobs queue holds {:?} and dead-letter queue {:?} messages (want 0 and 0)",
                self.queue_left, self.dead_lettered
            ));
        }
    }

    pub fn figures(&self) -> Vec<(String, String)> {
        let missing = self.count("missing");
        let not_terminal =
            self.jobs - missing - TERMINAL.iter().map(|s| self.count(s)).sum::<usize>();
        vec![
            ("challenges by state".into(), states_line(&self.by_state)),
            (
                "lost (no row) / not terminal".into(),
                format!("{missing} / {not_terminal}"),
            ),
            (
                "terminal events: challenges with one / copies received / disagreeing".into(),
                format!(
                    "{} / {} / {}",
                    self.with_terminal_event, self.terminal_events, self.conflicting
                ),
            ),
            (
                "provider accepted: challenges / duplicate sends".into(),
                format!("{} / {}", self.seen, self.duplicates),
            ),
            (
                "calls in doubt / challenges concerned / terminal events in_doubt".into(),
                format!(
                    "{} / {} / {}",
                    self.in_doubt, self.doubted_challenges, self.in_doubt_events
                ),
            ),
            (
                "duplicates no in-doubt call owns / in-doubt flags with one send".into(),
                format!("{} / {}", self.unexplained, self.needless_doubts),
            ),
            (
                "left in jobs queue / dead-lettered".into(),
                format!("{} / {}", opt(self.queue_left), opt(self.dead_lettered)),
            ),
        ]
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| v.to_string())
}

fn states_line(by_state: &BTreeMap<String, usize>) -> String {
    by_state
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drains the scenario's event queue: every terminal event by challenge, as (state, in_doubt).
async fn read_terminal_events(rig: &Rig) -> HashMap<String, Vec<(String, bool)>> {
    let ch = rig.channel();
    let q = ch
        .queue_declare(
            rig.watch_queue().as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the watch queue exists");
    let mut left = q.message_count();
    let mut out: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    if left == 0 {
        return out;
    }
    let mut consumer = ch
        .basic_consume(
            rig.watch_queue().as_str().into(),
            "audit".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    while left > 0 {
        let d = consumer.next().await.expect("events").expect("an event");
        left -= 1;
        let v: serde_json::Value = serde_json::from_slice(&d.data).expect("events are JSON");
        let state = v["state"].as_str().unwrap_or_default().to_string();
        if TERMINAL.contains(&state.as_str()) {
            let id = v["challenge_id"].as_str().unwrap_or_default().to_string();
            let in_doubt = v["in_doubt"].as_bool().unwrap_or(false);
            out.entry(id).or_default().push((state, in_doubt));
        }
    }
    out
}
