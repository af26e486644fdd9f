//! Shared limiter state (`limit_counters`) and conversion feedback.

use super::{Owner, Store, StoreError};
use crate::limits::Counter;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// The outcome of an admission.
#[derive(Debug)]
pub enum Admission<R> {
    /// Every counter was taken and the challenge is marked admitted.
    Admitted,
    /// The decision refused the job; nothing was taken.
    Refused(R),
    /// Another worker owns the challenge now; nothing was taken.
    LeaseLost,
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

/// A range's conversion over the window.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Conversion {
    pub prefix: String,
    pub country: Option<String>,
    pub sent: i64,
    pub verified: i64,
}

impl Store {
    /// Takes the counters `keys` (rule, key; sorted, so that concurrent admissions lock in
    /// the same order and cannot deadlock) in one transaction: the rows are locked, `decide`
    /// judges them at the database's clock, and only if it allows are the new states written
    /// and the challenge marked admitted, fenced by the owner's lease token.
    pub async fn admit<R>(
        &self,
        owner: Owner<'_>,
        keys: &[(&str, &str)],
        decide: impl FnOnce(&[Counter], DateTime<Utc>) -> Result<Vec<Counter>, R>,
    ) -> Result<Admission<R>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (rules, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        // The no-op update on conflict locks an existing row and returns it as it is.
        let rows: Vec<Row> = sqlx::query_as(
            "INSERT INTO limit_counters (rule, key)
             SELECT * FROM UNNEST($1::text[], $2::text[]) ORDER BY 1, 2
             ON CONFLICT (rule, key) DO UPDATE SET rule = EXCLUDED.rule
             RETURNING rule, key, tat, hour_start, hour_used, day_start, day_used, clock_timestamp() AS now",
        )
        .bind(&rules)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let now = rows.first().map_or_else(Utc::now, |r| r.now);
        let mut by_key: HashMap<(&str, &str), Counter> = rows
            .iter()
            .map(|r| {
                let c = Counter {
                    tat: r.tat,
                    hour_start: r.hour_start,
                    hour_used: r.hour_used,
                    day_start: r.day_start,
                    day_used: r.day_used,
                };
                ((r.rule.as_str(), r.key.as_str()), c)
            })
            .collect();
        let counters: Vec<Counter> = keys
            .iter()
            .map(|k| by_key.remove(k).unwrap_or_default())
            .collect();
        let next = match decide(&counters, now) {
            Ok(next) => next,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(Admission::Refused(refused));
            }
        };
        let admitted = sqlx::query(
            "UPDATE deliveries SET admitted = true, updated_at = now()
              WHERE challenge_id = $1 AND lease_token = $2",
        )
        .bind(owner.id)
        .bind(owner.token)
        .execute(&mut *tx)
        .await?;
        if admitted.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Admission::LeaseLost);
        }
        if !keys.is_empty() {
            write_counters(&mut tx, &rules, &names, &next).await?;
        }
        tx.commit().await?;
        Ok(Admission::Admitted)
    }

    /// An identity service reported the challenge's code as verified. Returns false if no
    /// such challenge was sent (the message is acknowledged and ignored).
    pub async fn record_verified(&self, challenge_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE deliveries SET verified_at = COALESCE(verified_at, now()) WHERE challenge_id = $1",
        )
        .bind(challenge_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sent and verified codes per number range, among codes sent between `window` and
    /// `grace` ago, for ranges with at least `min_sent` sent.
    pub async fn conversion(
        &self,
        window_secs: u64,
        grace_secs: u64,
        min_sent: u32,
    ) -> Result<Vec<Conversion>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT prefix, max(country) AS country, count(*) AS sent, count(verified_at) AS verified
               FROM deliveries
              WHERE prefix IS NOT NULL AND state = 'sent'
                AND created_at > now() - make_interval(secs => $1)
                AND created_at <= now() - make_interval(secs => $2)
              GROUP BY prefix HAVING count(*) >= $3",
        )
        .bind(window_secs as f64)
        .bind(grace_secs as f64)
        .bind(i64::from(min_sent))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Flags a range until `until` (in enforce mode, blocks it). Returns true if it was not
    /// flagged already, or its flag had run out: the caller announces it then.
    pub async fn flag_prefix(
        &self,
        c: &Conversion,
        mode: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO prefix_flags (prefix, country, mode, sent, verified, blocked_until)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (prefix) DO UPDATE
                SET mode = EXCLUDED.mode, sent = EXCLUDED.sent, verified = EXCLUDED.verified,
                    flagged_at = now(), blocked_until = EXCLUDED.blocked_until
              WHERE prefix_flags.blocked_until < now() OR prefix_flags.mode <> EXCLUDED.mode",
        )
        .bind(&c.prefix)
        .bind(&c.country)
        .bind(mode)
        .bind(c.sent.min(i32::MAX as i64) as i32)
        .bind(c.verified.min(i32::MAX as i64) as i32)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ranges blocked now (enforce mode), with when their block ends.
    pub async fn blocked_prefixes(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT prefix, blocked_until FROM prefix_flags WHERE mode = 'enforce' AND blocked_until > now()",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Deletes counters that no longer hold anything back: full buckets, past windows.
    pub async fn prune_counters(&self) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM limit_counters
              WHERE (tat IS NULL OR tat < now())
                AND (day_start IS NULL OR day_start < date_trunc('day', now(), 'UTC'))
                AND (hour_start IS NULL OR hour_start < date_trunc('hour', now(), 'UTC'))",
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

async fn write_counters(
    tx: &mut sqlx::PgConnection,
    rules: &[&str],
    keys: &[&str],
    next: &[Counter],
) -> Result<(), StoreError> {
    let col = |f: fn(&Counter) -> Option<DateTime<Utc>>| next.iter().map(f).collect::<Vec<_>>();
    let used = |f: fn(&Counter) -> i64| next.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "UPDATE limit_counters c
            SET tat = n.tat, hour_start = n.hour_start, hour_used = n.hour_used,
                day_start = n.day_start, day_used = n.day_used
           FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[],
                       $6::timestamptz[], $7::bigint[])
                AS n (rule, key, tat, hour_start, hour_used, day_start, day_used)
          WHERE c.rule = n.rule AND c.key = n.key",
    )
    .bind(rules)
    .bind(keys)
    .bind(col(|c| c.tat))
    .bind(col(|c| c.hour_start))
    .bind(used(|c| c.hour_used))
    .bind(col(|c| c.day_start))
    .bind(used(|c| c.day_used))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
