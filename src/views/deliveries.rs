//! One delivery with its timeline, and pages of deliveries, for the admin API.

use super::Views;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    pub challenge_id: String,
    pub account_id: Option<String>,
    pub channel: Option<String>,
    pub state: String,
    pub destination_masked: Option<String>,
    pub country: Option<String>,
    pub attempt: i32,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub rule: Option<String>,
    pub carrier_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub receipt_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const VIEW_COLUMNS: &str = "challenge_id, account_id, channel, state, destination_masked, country, attempt, provider,
    provider_message_id, reason, detail, rule, carrier_error, created_at, sent_at, receipt_at, verified_at, updated_at";

/// One entry of a delivery's timeline: an audit event.
pub type TimelineEntry = crate::store::EventFields;

/// Filters of a deliveries page; newest first, continuing after `after` (created_at, id).
#[derive(Debug, Default)]
pub struct DeliveryFilter {
    pub account_id: Option<String>,
    pub state: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// The keyed HMAC of a destination (see [`Store::destination_hmac`]).
    pub destination_hmac: Option<Vec<u8>>,
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

impl Views {
    pub async fn delivery(
        &self,
        challenge_id: &str,
    ) -> Result<Option<(DeliveryView, Vec<TimelineEntry>)>, StoreError> {
        let sql = format!("SELECT {VIEW_COLUMNS} FROM deliveries WHERE challenge_id = $1");
        let Some(view) = sqlx::query_as::<_, DeliveryView>(sqlx::AssertSqlSafe(sql))
            .bind(challenge_id)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let timeline = sqlx::query_as(
            "SELECT at, kind, state, attempt, provider, response_status, latency_ms, reason, detail, in_doubt
               FROM delivery_events WHERE challenge_id = $1 ORDER BY id",
        )
        .bind(challenge_id)
        .fetch_all(self.pool())
        .await?;
        Ok(Some((view, timeline)))
    }

    pub async fn deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryView>, StoreError> {
        let sql = format!(
            "SELECT {VIEW_COLUMNS} FROM deliveries
              WHERE ($1::text IS NULL OR account_id = $1)
                AND ($2::text IS NULL OR state = $2)
                AND ($3::timestamptz IS NULL OR created_at >= $3)
                AND ($4::bytea IS NULL OR destination_hmac = $4)
                AND ($5::timestamptz IS NULL OR (created_at, challenge_id) < ($5, $6))
              ORDER BY created_at DESC, challenge_id DESC LIMIT $7"
        );
        let (after_at, after_id) = f.after.clone().unzip();
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&f.account_id)
            .bind(&f.state)
            .bind(f.since)
            .bind(&f.destination_hmac)
            .bind(after_at)
            .bind(after_id)
            .bind(f.limit)
            .fetch_all(self.pool())
            .await?)
    }
}
