//! Admission against the shared limit counters, batched (see `batch.rs`).
//!
//! One transaction per batch: lock the challenges still owned by their callers (fenced by the
//! lease token, `FOR UPDATE` so that no one takes them over meanwhile), lock every counter the
//! batch takes (sorted, so concurrent batches lock in one order and cannot deadlock), judge each
//! job in arrival order with its caller's pure decision at the database's clock, each seeing
//! the counters as the jobs before it left them, then write the counters and the `admitted`
//! flags together. That is what serial per-job transactions at one instant would decide, in one
//! round trip per step instead of one per job and step.

use super::batch::Op;
use super::types::{Decide, Key, Owner};
use super::{Store, StoreError};
use crate::domain::{Counter, Refusal};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};

/// The outcome of an admission.
#[derive(Debug)]
pub enum Admission {
    /// Every counter was taken and the challenge is marked admitted.
    Admitted,
    /// The decision refused the job; nothing was taken.
    Refused(Refusal),
    /// Another worker owns the challenge now; nothing was taken.
    LeaseLost,
}

impl Store {
    /// Takes the counters `keys` for the challenge, if `decide` allows, and marks it admitted,
    /// fenced by the owner's lease token. Batched with other jobs' admissions.
    pub async fn admit(
        &self,
        owner: Owner<'_>,
        keys: Vec<(String, String)>,
        decide: Decide,
    ) -> Result<Admission, StoreError> {
        let op = AdmitOp {
            challenge_id: owner.id.to_string(),
            token: owner.token,
            keys,
            decide,
        };
        self.writes.admit.submit(op).await
    }
}

/// `Store::admit` for one job.
pub(super) struct AdmitOp {
    pub challenge_id: String,
    pub token: i64,
    /// (rule, key) of every counter the job takes, in the order `decide` expects.
    pub keys: Vec<(String, String)>,
    pub decide: Decide,
}

/// A locked counter, or (with no rule, last) the database's clock read after the locks.
#[derive(sqlx::FromRow)]
struct Row {
    rule: Option<String>,
    key: Option<String>,
    tat: Option<DateTime<Utc>>,
    hour_start: Option<DateTime<Utc>>,
    hour_used: i64,
    day_start: Option<DateTime<Utc>>,
    day_used: i64,
    now: Option<DateTime<Utc>>,
}

/// The statement text that writes a [`Ledger`]'s counters: `cu` updates the existing ones
/// ($1..$7), `ci` inserts the new ones ($8..$14) and returns a row for each it inserted. A
/// statement built on it adds its own writes and ends with `SELECT count(*) FROM ci`.
macro_rules! counter_writes {
    () => {
        "WITH cu AS (UPDATE limit_counters c
                        SET tat = n.tat, hour_start = n.hour_start, hour_used = n.hour_used,
                            day_start = n.day_start, day_used = n.day_used
                       FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[],
                                   $6::timestamptz[], $7::bigint[])
                            AS n (rule, key, tat, hour_start, hour_used, day_start, day_used)
                      WHERE c.rule = n.rule AND c.key = n.key),
              ci AS (INSERT INTO limit_counters (rule, key, tat, hour_start, hour_used, day_start, day_used)
                     SELECT * FROM UNNEST($8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],
                                          $12::bigint[], $13::timestamptz[], $14::bigint[])
                     ON CONFLICT (rule, key) DO NOTHING
                     RETURNING 1)"
    };
}
pub(super) use counter_writes;

/// Binds a [`CounterWrites`] as $1..$14 of a statement built on [`counter_writes`].
macro_rules! bind_counters {
    ($query:expr, $w:expr) => {{
        let w = $w;
        $query
            .bind(w.old.rules)
            .bind(w.old.keys)
            .bind(w.old.tat)
            .bind(w.old.hour_start)
            .bind(w.old.hour_used)
            .bind(w.old.day_start)
            .bind(w.old.day_used)
            .bind(w.new.rules)
            .bind(w.new.keys)
            .bind(w.new.tat)
            .bind(w.new.hour_start)
            .bind(w.new.hour_used)
            .bind(w.new.day_start)
            .bind(w.new.day_used)
    }};
}
pub(super) use bind_counters;

impl Op for AdmitOp {
    type Output = Admission;

    fn key(&self) -> &str {
        &self.challenge_id
    }

    async fn run(pool: &PgPool, batch: &[&Self]) -> Result<Vec<Admission>, StoreError> {
        loop {
            let mut tx = pool.begin().await?;
            let owned = lock_owned(&mut tx, batch).await?;
            let jobs = batch.iter().filter(|o| owned.contains(&o.challenge_id));
            let mut ledger = Ledger::lock(&mut tx, jobs.flat_map(|o| &o.keys)).await?;
            let mut outputs = Vec::with_capacity(batch.len());
            let mut admitted: Vec<&str> = Vec::new();
            for op in batch {
                if !owned.contains(&op.challenge_id) {
                    outputs.push(Admission::LeaseLost);
                    continue;
                }
                match ledger.judge(&op.keys, &op.decide) {
                    Ok(()) => {
                        admitted.push(&op.challenge_id);
                        outputs.push(Admission::Admitted);
                    }
                    Err(refusal) => outputs.push(Admission::Refused(refusal)),
                }
            }
            let writes = ledger.writes();
            let expected = writes.new.rules.len() as i64;
            let inserted: i64 = bind_counters!(
                sqlx::query_scalar(concat!(
                    counter_writes!(),
                    ", ad AS (UPDATE deliveries SET admitted = true, updated_at = now()
                               WHERE challenge_id = ANY($15))
                     SELECT count(*) FROM ci"
                )),
                writes
            )
            .bind(&admitted)
            .fetch_one(&mut *tx)
            .await?;
            if inserted == expected {
                tx.commit().await?;
                return Ok(outputs);
            }
            // Another batch created one of our new counters first: decide again on its value.
            tx.rollback().await?;
        }
    }
}

/// The batch's challenges that are still owned by the token their caller holds, locked.
async fn lock_owned(
    tx: &mut sqlx::PgConnection,
    batch: &[&AdmitOp],
) -> Result<HashSet<String>, StoreError> {
    let owned: Vec<String> = sqlx::query_scalar(
        "SELECT d.challenge_id FROM deliveries d
           JOIN UNNEST($1::text[], $2::int8[]) AS t(id, token)
             ON d.challenge_id = t.id AND d.lease_token = t.token
          ORDER BY d.challenge_id
            FOR UPDATE OF d",
    )
    .bind(
        batch
            .iter()
            .map(|o| o.challenge_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|o| o.token).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    Ok(owned.into_iter().collect())
}

/// The counters a batch takes, within its transaction: the existing ones locked, the missing
/// ones assumed new, every job judged in turn against what the jobs before it left, and each
/// changed counter written once at the end, by the caller's statement.
pub(super) struct Ledger {
    counters: HashMap<Key, Counter>,
    /// Keys with a row in `limit_counters` (locked); the others are inserted.
    existing: HashSet<Key>,
    changed: HashSet<Key>,
    now: DateTime<Utc>,
}

impl Ledger {
    /// Locks the existing counters among `keys` (in key order, so that concurrent batches
    /// cannot deadlock) and reads the database's clock after the locks, in one round trip.
    pub async fn lock<'k>(
        tx: &mut sqlx::PgConnection,
        keys: impl Iterator<Item = &'k Key>,
    ) -> Result<Ledger, StoreError> {
        let mut keys: Vec<&Key> = keys.collect();
        keys.sort();
        keys.dedup();
        let (rules, names): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|k| (k.0.as_str(), k.1.as_str())).unzip();
        // UNION ALL reads its branches in order: the clock row comes after every lock.
        let rows: Vec<Row> = sqlx::query_as(
            "WITH locked AS (
               SELECT c.rule, c.key, tat, hour_start, hour_used, day_start, day_used
                 FROM limit_counters c JOIN UNNEST($1::text[], $2::text[]) AS k(rule, key)
                   ON c.rule = k.rule AND c.key = k.key
                ORDER BY c.rule, c.key
                  FOR UPDATE OF c)
             SELECT *, NULL::timestamptz AS now FROM locked
             UNION ALL
             SELECT NULL, NULL, NULL, NULL, 0, NULL, 0, clock_timestamp()",
        )
        .bind(&rules)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let now = rows.iter().find_map(|r| r.now).unwrap_or_else(Utc::now);
        let mut ledger = Ledger {
            counters: HashMap::with_capacity(keys.len()),
            existing: HashSet::with_capacity(rows.len()),
            changed: HashSet::new(),
            now,
        };
        for r in rows {
            let (Some(rule), Some(key)) = (r.rule, r.key) else {
                continue;
            };
            let key = (rule, key);
            let counter = Counter {
                tat: r.tat,
                hour_start: r.hour_start,
                hour_used: r.hour_used,
                day_start: r.day_start,
                day_used: r.day_used,
            };
            ledger.existing.insert(key.clone());
            ledger.counters.insert(key, counter);
        }
        Ok(ledger)
    }

    /// Judges one job: if `decide` allows, its takes are applied for the jobs after it.
    pub fn judge(&mut self, keys: &[Key], decide: &Decide) -> Result<(), Refusal> {
        let current: Vec<Counter> = keys
            .iter()
            .map(|k| self.counters.get(k).cloned().unwrap_or_default())
            .collect();
        let next = decide(&current, self.now)?;
        for (k, c) in keys.iter().zip(next) {
            self.counters.insert(k.clone(), c);
            self.changed.insert(k.clone());
        }
        Ok(())
    }

    /// The changed counters, split into updates of existing rows (in place: only the primary
    /// key is indexed) and inserts of new ones, in key order. If another transaction inserted
    /// one of the new ones since [`Ledger::lock`], the insert skips it and its `count(*)`
    /// comes short: the caller rolls back and starts over.
    pub fn writes(&self) -> CounterWrites<'_> {
        let mut changed: Vec<&Key> = self.changed.iter().collect();
        changed.sort();
        let (old, new): (Vec<&Key>, Vec<&Key>) = changed
            .into_iter()
            .partition(|k| self.existing.contains(*k));
        CounterWrites {
            old: Columns::of(&old, &self.counters),
            new: Columns::of(&new, &self.counters),
        }
    }
}

/// What [`bind_counters`] binds.
pub(super) struct CounterWrites<'a> {
    pub old: Columns<'a>,
    pub new: Columns<'a>,
}

/// The arrays counters are written from, in the order of the statement's parameters.
pub(super) struct Columns<'a> {
    pub rules: Vec<&'a str>,
    pub keys: Vec<&'a str>,
    pub tat: Vec<Option<DateTime<Utc>>>,
    pub hour_start: Vec<Option<DateTime<Utc>>>,
    pub hour_used: Vec<i64>,
    pub day_start: Vec<Option<DateTime<Utc>>>,
    pub day_used: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(keys: &[&'a Key], counters: &HashMap<Key, Counter>) -> Columns<'a> {
        let c = |k: &Key| &counters[k];
        Columns {
            rules: keys.iter().map(|k| k.0.as_str()).collect(),
            keys: keys.iter().map(|k| k.1.as_str()).collect(),
            tat: keys.iter().map(|k| c(k).tat).collect(),
            hour_start: keys.iter().map(|k| c(k).hour_start).collect(),
            hour_used: keys.iter().map(|k| c(k).hour_used).collect(),
            day_start: keys.iter().map(|k| c(k).day_start).collect(),
            day_used: keys.iter().map(|k| c(k).day_used).collect(),
        }
    }
}
