//! Conversion feedback, a publisher's cancel, what stops a pending fallback step, prefix flags
//! and the pruning of spent limit counters (admission itself is `admission.rs`).

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A range's conversion over the window.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Conversion {
    pub prefix: String,
    pub country: Option<String>,
    pub sent: i64,
    pub verified: i64,
}

impl Store {
    /// An identity service reported the challenge's code as verified. Counted only for a code
    /// a provider took (`sent`, `delivered`, `undelivered`) whose expiry is at most `late`
    /// behind: a code never sent cannot have been typed, and feedback for one long expired is
    /// a replay. Returns false if nothing was recorded (the message is acknowledged and
    /// ignored).
    pub async fn record_verified(
        &self,
        challenge_id: &str,
        late: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE deliveries SET verified_at = COALESCE(verified_at, now())
              WHERE challenge_id = $1 AND state IN ('sent', 'delivered', 'undelivered')
                AND expires_at + make_interval(secs => $2) >= now()",
        )
        .bind(challenge_id)
        .bind(late.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A publisher abandoned the challenge: its pending fallback steps will not send. Returns
    /// false if no such challenge is recorded.
    pub async fn record_cancel(&self, challenge_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE deliveries SET cancelled_at = COALESCE(cancelled_at, now()) WHERE challenge_id = $1",
        )
        .bind(challenge_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether the challenge's code was verified or the challenge cancelled: a fallback step
    /// then does not send. Read from the first send's record, where both are written.
    pub async fn step_stopper(
        &self,
        challenge_id: &str,
    ) -> Result<Option<crate::domain::FailReason>, StoreError> {
        let row: Option<(bool, bool)> = sqlx::query_as(
            "SELECT verified_at IS NOT NULL, cancelled_at IS NOT NULL FROM deliveries WHERE challenge_id = $1",
        )
        .bind(challenge_id)
        .fetch_optional(&self.pool)
        .await?;
        use crate::domain::FailReason;
        Ok(match row {
            Some((true, _)) => Some(FailReason::Verified),
            Some((_, true)) => Some(FailReason::Cancelled),
            _ => None,
        })
    }

    /// Sent and verified codes per number range, among codes sent between `window` and
    /// `grace` ago, for ranges with at least `min_sent` sent. A code counts as sent once a
    /// provider took it, whatever its receipt said later: receipts move rows on from `sent`.
    pub async fn conversion(
        &self,
        window_secs: u64,
        grace_secs: u64,
        min_sent: u32,
    ) -> Result<Vec<Conversion>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT prefix, max(country) AS country, count(*) AS sent, count(verified_at) AS verified
               FROM deliveries
              WHERE prefix IS NOT NULL AND state IN ('sent', 'delivered', 'undelivered')
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
