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
use super::{Owner, Store, StoreError};
use crate::limits::{Counter, Refusal};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Judges one job's counters (in the order of its keys) at the database's clock: their new
/// states, or why the job is refused. Called once per attempt to admit, possibly again if a
/// batch is retried, so it must not have effects beyond the refusal cache's.
pub type Decide =
    Arc<dyn Fn(&[Counter], DateTime<Utc>) -> Result<Vec<Counter>, Refusal> + Send + Sync>;

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

#[derive(sqlx::FromRow)]
struct Row {
    rule: String,
    key: String,
    tat: Option<DateTime<Utc>>,
    hour_start: Option<DateTime<Utc>>,
    hour_used: i64,
    day_start: Option<DateTime<Utc>>,
    day_used: i64,
    now: DateTime<Utc>,
}

type Key = (String, String);

impl Op for AdmitOp {
    type Output = Admission;

    fn key(&self) -> &str {
        &self.challenge_id
    }

    async fn run(pool: &PgPool, batch: &[&Self]) -> Result<Vec<Admission>, StoreError> {
        let mut tx = pool.begin().await?;
        let owned = lock_owned(&mut tx, batch).await?;
        let mut taken: Vec<&Key> = batch
            .iter()
            .filter(|o| owned.contains(&o.challenge_id))
            .flat_map(|o| &o.keys)
            .collect();
        taken.sort();
        taken.dedup();
        let (mut counters, now) = lock_counters(&mut tx, &taken).await?;
        let mut outputs = Vec::with_capacity(batch.len());
        let mut admitted: Vec<&str> = Vec::new();
        let mut changed: HashSet<&Key> = HashSet::new();
        for op in batch {
            if !owned.contains(&op.challenge_id) {
                outputs.push(Admission::LeaseLost);
                continue;
            }
            let current: Vec<Counter> = op
                .keys
                .iter()
                .map(|k| counters.get(k).cloned().unwrap_or_default())
                .collect();
            match (op.decide)(&current, now) {
                Ok(next) => {
                    for (k, c) in op.keys.iter().zip(next) {
                        counters.insert(k.clone(), c);
                        changed.insert(k);
                    }
                    admitted.push(&op.challenge_id);
                    outputs.push(Admission::Admitted);
                }
                Err(refusal) => outputs.push(Admission::Refused(refusal)),
            }
        }
        if !admitted.is_empty() {
            sqlx::query("UPDATE deliveries SET admitted = true, updated_at = now() WHERE challenge_id = ANY($1)")
                .bind(&admitted)
                .execute(&mut *tx)
                .await?;
            let mut changed: Vec<&Key> = changed.into_iter().collect();
            changed.sort();
            write_counters(&mut tx, &changed, &counters).await?;
        }
        tx.commit().await?;
        Ok(outputs)
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

/// Locks the counters `keys` (sorted), creating missing ones; returns them and the database's
/// clock.
async fn lock_counters(
    tx: &mut sqlx::PgConnection,
    keys: &[&Key],
) -> Result<(HashMap<Key, Counter>, DateTime<Utc>), StoreError> {
    if keys.is_empty() {
        return Ok((HashMap::new(), Utc::now()));
    }
    // Missing counters are created (an inserted row is locked by its transaction), existing
    // ones are locked without being rewritten, both in key order.
    let (rules, names): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|k| (k.0.as_str(), k.1.as_str())).unzip();
    sqlx::query(
        "INSERT INTO limit_counters (rule, key)
         SELECT * FROM UNNEST($1::text[], $2::text[]) ORDER BY 1, 2
         ON CONFLICT (rule, key) DO NOTHING",
    )
    .bind(&rules)
    .bind(&names)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.rule, c.key, tat, hour_start, hour_used, day_start, day_used, clock_timestamp() AS now
           FROM limit_counters c JOIN UNNEST($1::text[], $2::text[]) AS k(rule, key)
             ON c.rule = k.rule AND c.key = k.key
          ORDER BY c.rule, c.key
            FOR UPDATE OF c",
    )
    .bind(&rules)
    .bind(&names)
    .fetch_all(&mut *tx)
    .await?;
    let now = rows.first().map_or_else(Utc::now, |r| r.now);
    let counters = rows
        .into_iter()
        .map(|r| {
            let c = Counter {
                tat: r.tat,
                hour_start: r.hour_start,
                hour_used: r.hour_used,
                day_start: r.day_start,
                day_used: r.day_used,
            };
            ((r.rule, r.key), c)
        })
        .collect();
    Ok((counters, now))
}

async fn write_counters(
    tx: &mut sqlx::PgConnection,
    keys: &[&Key],
    counters: &HashMap<Key, Counter>,
) -> Result<(), StoreError> {
    let next: Vec<&Counter> = keys.iter().map(|k| &counters[*k]).collect();
    let col =
        |f: fn(&Counter) -> Option<DateTime<Utc>>| next.iter().map(|c| f(c)).collect::<Vec<_>>();
    let used = |f: fn(&Counter) -> i64| next.iter().map(|c| f(c)).collect::<Vec<_>>();
    sqlx::query(
        "UPDATE limit_counters c
            SET tat = n.tat, hour_start = n.hour_start, hour_used = n.hour_used,
                day_start = n.day_start, day_used = n.day_used
           FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[],
                       $6::timestamptz[], $7::bigint[])
                AS n (rule, key, tat, hour_start, hour_used, day_start, day_used)
          WHERE c.rule = n.rule AND c.key = n.key",
    )
    .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .bind(col(|c| c.tat))
    .bind(col(|c| c.hour_start))
    .bind(used(|c| c.hour_used))
    .bind(col(|c| c.day_start))
    .bind(used(|c| c.day_used))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
