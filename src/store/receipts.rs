//! Provider receipts: a `sent` delivery moves on to `delivered` or `undelivered`, once.
//!
//! A receipt only ever moves a row out of `sent`, so a repeated or out-of-order callback (a
//! `sent` status after `delivered`, a second `delivered`) changes nothing. A final receipt that
//! arrives before otpd has recorded the message as sent is parked in `pending_receipts` and
//! applied by housekeeping.

use super::{Store, StoreError};
use crate::domain::DeliveryState;
use chrono::{DateTime, Utc};

/// A delivery a receipt has just moved: what its status event and metrics need.
#[derive(Debug, sqlx::FromRow)]
pub struct Receipted {
    pub challenge_id: String,
    pub account_id: Option<String>,
    pub channel: Option<String>,
    pub state: String,
    pub attempt: i32,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub carrier_error: Option<String>,
    pub country: Option<String>,
    /// Seconds from the provider's acceptance to the receipt.
    pub after_sent_secs: Option<f64>,
    pub receipt_at: DateTime<Utc>,
}

/// What became of one receipt.
#[derive(Debug)]
pub enum ReceiptOutcome {
    /// It moved a `sent` delivery on.
    Applied(Box<Receipted>),
    /// The delivery had already left `sent` (a repeat, or a later receipt than this one).
    Ignored,
    /// No delivery carries this message id yet; parked until one does.
    Pending,
}

const RETURNING: &str =
    "RETURNING challenge_id, account_id, channel, state, attempt, provider, provider_message_id,
                   carrier_error, country, receipt_at,
                   EXTRACT(EPOCH FROM receipt_at - sent_at)::float8 AS after_sent_secs";

impl Store {
    /// Applies a final receipt (`Delivered` or `Undelivered`) for a provider's message id, to
    /// the delivery that one of `providers` (the instances that may have sent it) sent.
    pub async fn apply_receipt(
        &self,
        providers: &[String],
        provider_message_id: &str,
        state: DeliveryState,
        carrier_error: Option<&str>,
    ) -> Result<ReceiptOutcome, StoreError> {
        // Kept as the terminal commit keeps ids, so that a vendor's odd id still matches.
        let id = super::kept_id(provider_message_id);
        let provider_message_id = id.as_str();
        let carrier_error = carrier_error.map(super::kept);
        let carrier_error = carrier_error.as_deref();
        // Twice: the delivery may have committed `sent` between the first try and the look-up.
        for _ in 0..2 {
            if let Some(row) = self
                .move_sent(
                    providers,
                    provider_message_id,
                    state.as_str(),
                    carrier_error,
                )
                .await?
            {
                return Ok(ReceiptOutcome::Applied(Box::new(row)));
            }
            let known: Option<(String,)> = sqlx::query_as(
                "SELECT d.state FROM provider_messages m JOIN deliveries d USING (challenge_id)
                  WHERE m.provider_message_id = $1 AND d.provider = ANY($2) LIMIT 1",
            )
            .bind(provider_message_id)
            .bind(providers)
            .fetch_optional(self.pool())
            .await?;
            match known {
                Some((s,)) if s == "sent" => continue,
                Some(_) => return Ok(ReceiptOutcome::Ignored),
                None => break,
            }
        }
        sqlx::query(
            "INSERT INTO pending_receipts (provider_message_id, state, carrier_error, providers)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (provider_message_id, providers) DO NOTHING",
        )
        .bind(provider_message_id)
        .bind(state.as_str())
        .bind(carrier_error)
        .bind(providers)
        .execute(self.pool())
        .await?;
        Ok(ReceiptOutcome::Pending)
    }

    /// One statement: the row leaves `sent` and the audit trail gains the transition.
    async fn move_sent(
        &self,
        providers: &[String],
        provider_message_id: &str,
        state: &str,
        carrier_error: Option<&str>,
    ) -> Result<Option<Receipted>, StoreError> {
        let sql = format!(
            "WITH d AS (UPDATE deliveries
                           SET state = $2, carrier_error = $3, receipt_at = now(), updated_at = now(),
                               receipt_published = false
                         WHERE challenge_id IN (SELECT challenge_id FROM provider_messages
                                                 WHERE provider_message_id = $1)
                           AND provider = ANY($4) AND state = 'sent' {RETURNING}),
                  e AS (INSERT INTO delivery_events (challenge_id, kind, state, attempt, provider, reason)
                        SELECT challenge_id, 'state', state, attempt, provider, carrier_error FROM d)
             SELECT * FROM d"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(provider_message_id)
            .bind(state)
            .bind(carrier_error)
            .bind(providers)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Applies parked receipts whose delivery is now recorded, and forgets those older than a
    /// day (their message was never recorded as sent by this database).
    pub async fn apply_pending_receipts(&self) -> Result<Vec<Receipted>, StoreError> {
        let pending: Vec<(String, String, Option<String>, Vec<String>)> = sqlx::query_as(
            "SELECT p.provider_message_id, p.state, p.carrier_error, p.providers FROM pending_receipts p
              WHERE EXISTS (SELECT 1 FROM provider_messages m WHERE m.provider_message_id = p.provider_message_id)
              LIMIT 500",
        )
        .fetch_all(self.pool())
        .await?;
        let mut applied = Vec::new();
        for (id, state, error, providers) in pending {
            if let Some(row) = self
                .move_sent(&providers, &id, &state, error.as_deref())
                .await?
            {
                applied.push(row);
            }
            sqlx::query(
                "DELETE FROM pending_receipts WHERE provider_message_id = $1 AND providers = $2",
            )
            .bind(&id)
            .bind(&providers)
            .execute(self.pool())
            .await?;
        }
        sqlx::query("DELETE FROM pending_receipts WHERE received_at < now() - interval '1 day'")
            .execute(self.pool())
            .await?;
        Ok(applied)
    }

    /// Receipts whose status event the broker has not confirmed for at least `older_than_secs`.
    pub async fn unpublished_receipts(
        &self,
        older_than_secs: f64,
    ) -> Result<Vec<Receipted>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT challenge_id, account_id, channel, state, attempt, provider, provider_message_id,
                    carrier_error, country, receipt_at,
                    EXTRACT(EPOCH FROM receipt_at - sent_at)::float8 AS after_sent_secs
               FROM deliveries
              WHERE NOT receipt_published AND receipt_at < now() - make_interval(secs => $1)
              ORDER BY receipt_at LIMIT 500",
        )
        .bind(older_than_secs)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn mark_receipt_published(&self, challenge_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET receipt_published = true WHERE challenge_id = $1")
            .bind(challenge_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
