//! Delivery-health aggregates: per provider and channel over a recent window, and per
//! channel, provider and country since a point in time.

use super::Views;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One provider on one channel over a window.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProviderWindow {
    pub provider: String,
    pub channel: String,
    /// Provider calls made in the window, and how many the provider accepted.
    pub attempts: i64,
    pub accepted: i64,
    /// Milliseconds from the job's arrival to the provider's acceptance.
    pub to_sent_p50_ms: Option<f64>,
    pub to_sent_p95_ms: Option<f64>,
    /// Receipts in the window, and milliseconds from acceptance to the `delivered` receipt.
    pub delivered: i64,
    pub undelivered: i64,
    pub to_delivered_p50_ms: Option<f64>,
    pub to_delivered_p95_ms: Option<f64>,
}

/// Deliveries of one channel, provider and country since a point in time.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReportRow {
    pub channel: String,
    pub provider: String,
    pub country: String,
    pub volume: i64,
    /// Still being worked on.
    pub open: i64,
    /// Accepted by the provider (sent, delivered or undelivered).
    pub accepted: i64,
    pub delivered: i64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The commonest failure reasons, "reason ×count", most frequent first.
    #[sqlx(skip)]
    pub top_failures: Vec<(String, i64)>,
}

impl ReportRow {
    /// Accepted as a share of the finished deliveries, in percent.
    pub fn success_pct(&self) -> Option<f64> {
        let finished = self.volume - self.open;
        (finished > 0).then(|| 100.0 * self.accepted as f64 / finished as f64)
    }
}

/// Deliveries per minute over the last hour, for the status page's chart.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub accepted: i64,
    pub failed: i64,
}

const ACCEPTED: &str = "('sent', 'delivered', 'undelivered')";

impl Views {
    pub async fn provider_health(&self, minutes: i32) -> Result<Vec<ProviderWindow>, StoreError> {
        let sql = "WITH calls AS (
               SELECT e.provider, d.channel, count(*) AS attempts,
                      count(*) FILTER (WHERE e.kind = 'state' AND e.state = 'sent') AS accepted
                 FROM delivery_events e JOIN deliveries d USING (challenge_id)
                WHERE e.at >= now() - make_interval(mins => $1) AND e.provider IS NOT NULL
                  AND e.latency_ms IS NOT NULL
                GROUP BY 1, 2),
             sent AS (
               SELECT provider, channel,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS to_sent_p50_ms,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS to_sent_p95_ms
                 FROM (SELECT provider, channel, EXTRACT(EPOCH FROM sent_at - created_at) * 1000 AS ms
                         FROM deliveries WHERE sent_at >= now() - make_interval(mins => $1)) s
                GROUP BY 1, 2),
             receipts AS (
               SELECT provider, channel,
                      count(*) FILTER (WHERE state = 'delivered') AS delivered,
                      count(*) FILTER (WHERE state = 'undelivered') AS undelivered,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE state = 'delivered') AS to_delivered_p50_ms,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) FILTER (WHERE state = 'delivered') AS to_delivered_p95_ms
                 FROM (SELECT provider, channel, state, EXTRACT(EPOCH FROM receipt_at - sent_at) * 1000 AS ms
                         FROM deliveries WHERE receipt_at >= now() - make_interval(mins => $1)) r
                GROUP BY 1, 2)
             SELECT provider, channel, COALESCE(c.attempts, 0) AS attempts, COALESCE(c.accepted, 0) AS accepted,
                    s.to_sent_p50_ms::float8 AS to_sent_p50_ms, s.to_sent_p95_ms::float8 AS to_sent_p95_ms,
                    COALESCE(r.delivered, 0) AS delivered, COALESCE(r.undelivered, 0) AS undelivered,
                    r.to_delivered_p50_ms::float8 AS to_delivered_p50_ms, r.to_delivered_p95_ms::float8 AS to_delivered_p95_ms
               FROM calls c FULL JOIN sent s USING (provider, channel) FULL JOIN receipts r USING (provider, channel)
              ORDER BY provider, channel";
        Ok(sqlx::query_as(sql)
            .bind(minutes)
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn report(&self, since: DateTime<Utc>) -> Result<Vec<ReportRow>, StoreError> {
        let sql = format!(
            "SELECT COALESCE(channel, '-') AS channel, COALESCE(provider, '-') AS provider,
                    COALESCE(country, '-') AS country, count(*) AS volume,
                    count(*) FILTER (WHERE state IN ('received', 'sending')) AS open,
                    count(*) FILTER (WHERE state IN {ACCEPTED}) AS accepted,
                    count(*) FILTER (WHERE state = 'delivered') AS delivered,
                    (percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::float8 AS p50_ms,
                    (percentile_cont(0.95) WITHIN GROUP (ORDER BY ms))::float8 AS p95_ms,
                    (percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::float8 AS p99_ms
               FROM (SELECT *, EXTRACT(EPOCH FROM sent_at - created_at) * 1000 AS ms
                       FROM deliveries WHERE created_at >= $1) d
              GROUP BY 1, 2, 3 ORDER BY volume DESC, 1, 2, 3"
        );
        let mut rows: Vec<ReportRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .fetch_all(self.pool())
            .await?;
        let failures: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT COALESCE(channel, '-'), COALESCE(provider, '-'), COALESCE(country, '-'),
                    CASE WHEN state = 'undelivered' THEN 'undelivered:' || COALESCE(carrier_error, '?')
                         ELSE COALESCE(reason, state) END,
                    count(*)
               FROM deliveries
              WHERE created_at >= $1 AND state NOT IN ('received', 'sending', 'sent', 'delivered')
              GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC, 4",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        for (channel, provider, country, reason, n) in failures {
            let row = rows
                .iter_mut()
                .find(|r| r.channel == channel && r.provider == provider && r.country == country);
            if let Some(row) = row.filter(|r| r.top_failures.len() < 3) {
                row.top_failures.push((reason, n));
            }
        }
        Ok(rows)
    }

    pub async fn per_minute(&self, minutes: i32) -> Result<Vec<MinuteCount>, StoreError> {
        let sql = format!(
            "SELECT date_trunc('minute', created_at) AS minute,
                    count(*) FILTER (WHERE state IN {ACCEPTED}) AS accepted,
                    count(*) FILTER (WHERE state NOT IN {ACCEPTED} AND state NOT IN ('received', 'sending')) AS failed
               FROM deliveries WHERE created_at >= now() - make_interval(mins => $1)
              GROUP BY 1 ORDER BY 1"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(minutes)
            .fetch_all(self.pool())
            .await?)
    }
}
