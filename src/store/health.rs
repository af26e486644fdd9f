//! Delivery health: each judged provider's score per destination country, read from the
//! deliveries it accepted, and its standing, shared by every instance (`provider_health`).

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What one provider's receipts in one country say, over the window (or since its standing
/// last moved, if that is later).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Score {
    pub provider: String,
    pub country: String,
    pub delivered: i64,
    /// Receipts saying `undelivered`, and messages whose receipt is overdue.
    pub not_delivered: i64,
    /// Milliseconds from acceptance to the `delivered` receipt, 95th percentile.
    pub p95_ms: Option<f64>,
}

/// A provider's place in one country: `level` places down its chains since `changed_at`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Standing {
    pub provider: String,
    pub country: String,
    pub level: i32,
    pub changed_at: DateTime<Utc>,
    pub delivered: i64,
    pub not_delivered: i64,
    pub p95_ms: Option<f64>,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Store {
    /// The database's clock and the scores of `providers`' messages accepted within `window`
    /// and since their standing last moved. The database's clock judges, so that instances
    /// whose clocks differ still agree.
    pub async fn health_scores(
        &self,
        providers: &[String],
        window: Duration,
        receipt_timeout: Duration,
    ) -> Result<(DateTime<Utc>, Vec<Score>), StoreError> {
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(self.pool())
            .await?;
        let scores = sqlx::query_as(
            "SELECT d.provider, COALESCE(d.country, '') AS country,
                    count(*) FILTER (WHERE d.state = 'delivered') AS delivered,
                    count(*) FILTER (WHERE d.state = 'undelivered'
                        OR (d.state = 'sent' AND d.sent_at < $1 - make_interval(secs => $4 / 1000))) AS not_delivered,
                    (percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM d.receipt_at - d.sent_at) * 1000)
                        FILTER (WHERE d.state = 'delivered'))::float8 AS p95_ms
               FROM deliveries d
               LEFT JOIN provider_health h ON h.provider = d.provider AND h.country = COALESCE(d.country, '')
              WHERE d.sent_at >= $1 - make_interval(secs => $3 / 1000)
                AND d.sent_at >= COALESCE(h.changed_at, '-infinity')
                AND d.provider = ANY($2)
                AND d.state IN ('sent', 'delivered', 'undelivered')
              GROUP BY 1, 2",
        )
        .bind(now)
        .bind(providers)
        .bind(millis(window))
        .bind(millis(receipt_timeout))
        .fetch_all(self.pool())
        .await?;
        Ok((now, scores))
    }

    /// Whether this instance scores now: true for the first caller once the last scoring is
    /// at least `every` old (with a tenth of slack, so that timers drifting apart keep one
    /// scorer an interval).
    pub async fn take_health_check(&self, every: Duration) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO provider_health_checks AS c (id, checked_at) VALUES (1, now())
             ON CONFLICT (id) DO UPDATE SET checked_at = now()
              WHERE c.checked_at <= now() - make_interval(secs => $1 / 1000)",
        )
        .bind(millis(every) * 0.9)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every provider's standing in every country where it has one.
    pub async fn standings(&self) -> Result<Vec<Standing>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT provider, country, level, changed_at, delivered, not_delivered, p95_ms
               FROM provider_health ORDER BY provider, country",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Moves a provider's standing from `was` (None: it has none yet) to `level`, noting the
    /// score that moved it; false when another instance moved it first.
    pub async fn move_standing(
        &self,
        was: Option<&Standing>,
        level: i32,
        score: &Score,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO provider_health AS h
                    (provider, country, level, changed_at, delivered, not_delivered, p95_ms)
             VALUES ($1, $2, $3, now(), $4, $5, $6)
             ON CONFLICT (provider, country) DO UPDATE
                SET level = EXCLUDED.level, changed_at = EXCLUDED.changed_at,
                    delivered = EXCLUDED.delivered, not_delivered = EXCLUDED.not_delivered,
                    p95_ms = EXCLUDED.p95_ms
              WHERE h.level = $7 AND h.changed_at = $8",
        )
        .bind(&score.provider)
        .bind(&score.country)
        .bind(level)
        .bind(score.delivered)
        .bind(score.not_delivered)
        .bind(score.p95_ms)
        .bind(was.map(|w| w.level))
        .bind(was.map(|w| w.changed_at))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
