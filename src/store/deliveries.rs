//! Queries on `deliveries` and `delivery_events`.

use super::open::{OpenOp, Opened};
use super::types::{Admit, Claim, NewDelivery, Owner, Rejected, Verdict};
use super::writes::{ClaimOp, FinishOp, StartOp};
use super::{Store, StoreError};
use crate::domain::{DeliveryState, Outcome, RejectReason};
use std::borrow::Cow;
use std::time::Duration;

/// The reason an aborted challenge records.
const INTERNAL_ERROR: &str = RejectReason::InternalError.code();

fn lease_secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

impl Store {
    /// Records a new challenge, takes over an abandoned one, or reports who has it.
    /// `token` fences the lease: later writes by this owner name it, and apply only while no
    /// one else has taken the challenge over. With `admit`, a new challenge's limits are taken
    /// in the same commit (`open.rs`); a challenge already recorded is claimed as one
    /// (`writes.rs`). Both are batched with other jobs' claims.
    pub async fn claim(
        &self,
        d: &NewDelivery<'_>,
        lease: Duration,
        token: i64,
        admit: Option<Admit>,
    ) -> Result<Claim, StoreError> {
        if let Some(admit) = admit {
            let op = OpenOp::new(d, token, lease_secs(lease), admit);
            match self.writes.open.submit(op).await? {
                Opened::Admitted => return Ok(Claim::New(Verdict::Admitted)),
                Opened::Refused(refusal) => return Ok(Claim::New(Verdict::Refused(refusal))),
                Opened::Exists => {}
            }
        }
        let op = ClaimOp {
            challenge_id: d.challenge_id.to_string(),
            account_id: d.account_id.to_string(),
            channel: d.channel.to_string(),
            destination_masked: d.destination_masked.to_string(),
            destination_hmac: d.destination_hmac.to_vec(),
            locale: d.locale.map(str::to_string),
            template: d.template.to_string(),
            expires_at: d.expires_at,
            lease_secs: lease_secs(lease),
            token,
            country: d.country.map(str::to_string),
            prefix: d.prefix.map(str::to_string),
        };
        self.writes.claim.submit(op).await
    }

    /// Marks the start of provider attempt `attempt`, its call under way, and extends the lease
    /// to cover it. After this commit, a crash leaves the challenge `sending`: its outcome is
    /// in doubt. The caller holds the provider's call slot, so that the mark means the call
    /// is about to leave. Batched with other jobs' starts.
    /// Returns false, changing nothing, if the lease was lost to another worker.
    pub async fn start_attempt(
        &self,
        owner: Owner<'_>,
        attempt: i32,
        provider: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let op = StartOp {
            challenge_id: owner.id.to_string(),
            attempt,
            provider: provider.to_string(),
            lease_secs: lease_secs(lease),
            token: owner.token,
        };
        self.writes.start.submit(op).await
    }

    /// Extends the lease while the owner waits (for a provider slot or an open breaker).
    /// Returns false if the lease was lost.
    pub async fn extend_lease(
        &self,
        owner: Owner<'_>,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE deliveries SET lease_until = now() + make_interval(secs => $3)
              WHERE challenge_id = $1 AND lease_token = $2 AND state IN ('received', 'sending')",
        )
        .bind(owner.id)
        .bind(owner.token)
        .bind(lease_secs(lease))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records that a provider call's outcome is unknown (see the migration's comment).
    pub async fn record_in_doubt(
        &self,
        id: &str,
        attempt: i32,
        provider: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO delivery_events (challenge_id, kind, attempt, provider, detail, in_doubt)
             VALUES ($1, 'in_doubt', $2, $3, $4, true)",
        )
        .bind(id)
        .bind(attempt)
        .bind(provider)
        .bind(super::kept(detail))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt that will be retried, extending the lease over the wait.
    /// Returns false if the lease was lost.
    pub async fn record_failed_attempt(
        &self,
        owner: Owner<'_>,
        f: &Outcome<'_>,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "WITH d AS (UPDATE deliveries SET lease_until = now() + make_interval(secs => $8), updated_at = now(),
                                  call_started_at = NULL
                         WHERE challenge_id = $1 AND lease_token = $9 RETURNING challenge_id)
             INSERT INTO delivery_events (challenge_id, kind, attempt, provider, response_status, latency_ms, reason, detail)
             SELECT challenge_id, 'attempt', $2, $3, $4, $5, $6, $7 FROM d",
        )
        .bind(owner.id)
        .bind(f.attempt)
        .bind(f.provider.as_deref())
        .bind(f.response_status.map(i32::from))
        .bind(f.latency_ms.map(|ms| ms.min(i32::MAX as u64) as i32))
        .bind(f.reason.as_deref())
        .bind(f.detail.as_deref().map(super::kept))
        .bind(lease_secs(lease))
        .bind(owner.token)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Commits a terminal state and its audit event in one statement. Returns false, changing
    /// nothing, if the lease was lost (the new owner records the outcome).
    pub async fn finish(&self, owner: Owner<'_>, f: &Outcome<'_>) -> Result<bool, StoreError> {
        let owned = |s: &Option<std::borrow::Cow<'_, str>>| s.as_deref().map(super::kept);
        let op = FinishOp {
            challenge_id: owner.id.to_string(),
            token: owner.token,
            state: f.state.as_str(),
            attempt: f.attempt,
            provider: owned(&f.provider),
            provider_message_id: f.provider_message_id.as_deref().map(super::kept_id),
            reason: owned(&f.reason),
            detail: owned(&f.detail),
            response_status: f.response_status.map(i32::from),
            latency_ms: f.latency_ms.map(|ms| ms.min(i32::MAX as u64) as i32),
            in_doubt: f.in_doubt,
            rule: owned(&f.rule),
            retry_at: f.retry_at,
        };
        self.writes.finish.submit(op).await
    }

    /// Records a refused job. A new challenge gets a `rejected` row; an existing one keeps its
    /// state and gains only the audit event, so a malformed copy cannot rewrite a real delivery.
    pub async fn record_rejection(&self, r: &Rejected<'_>) -> Result<(), StoreError> {
        let detail = super::kept(r.detail);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO deliveries (challenge_id, state, reason, detail, event_published)
             VALUES ($1, 'rejected', $2, $3, true)
             ON CONFLICT (challenge_id) DO NOTHING",
        )
        .bind(r.challenge_id.as_str())
        .bind(r.reason)
        .bind(&detail)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO delivery_events (challenge_id, kind, state, reason, detail)
             VALUES ($1, 'state', 'rejected', $2, $3)",
        )
        .bind(r.challenge_id.as_str())
        .bind(r.reason)
        .bind(&detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a challenge whose own writes the database refused (not an outage: something in
    /// the write itself), with no text from outside in the statement. A challenge with an
    /// attempt behind it ends `failed`, in doubt if a call may have left, with its audit
    /// event; one without ends `rejected` (the caller records that rejection). `None`: the
    /// owner no longer holds it, or it had already ended.
    pub async fn abort(
        &self,
        owner: Owner<'_>,
        detail: &'static str,
    ) -> Result<Option<Outcome<'static>>, StoreError> {
        let row: Option<(String, i32, Option<String>, bool)> = sqlx::query_as(
            "WITH o AS (SELECT challenge_id, call_started_at IS NOT NULL
                                OR EXISTS (SELECT 1 FROM delivery_events x
                                            WHERE x.challenge_id = $1 AND x.kind = 'in_doubt') AS doubt
                           FROM deliveries WHERE challenge_id = $1),
                  d AS (UPDATE deliveries
                           SET state = CASE WHEN attempt > 0 THEN 'failed' ELSE 'rejected' END,
                               reason = $4, detail = $3,
                               lease_until = NULL, lease_token = NULL, call_started_at = NULL,
                               event_published = true, updated_at = now()
                          FROM o
                         WHERE deliveries.challenge_id = o.challenge_id AND lease_token = $2
                           AND state IN ('received', 'sending')
                     RETURNING deliveries.challenge_id, state, attempt, provider, o.doubt AS in_doubt),
                  e AS (INSERT INTO delivery_events (challenge_id, kind, state, attempt, provider, reason, detail, in_doubt)
                        SELECT challenge_id, 'state', state, attempt, provider, $4, $3, in_doubt
                          FROM d WHERE state = 'failed')
             SELECT state, attempt, provider, in_doubt FROM d",
        )
        .bind(owner.id)
        .bind(owner.token)
        .bind(detail)
        .bind(INTERNAL_ERROR)
        .fetch_optional(&self.pool)
        .await?;
        let Some((state, attempt, provider, in_doubt)) = row else {
            return Ok(None);
        };
        let state = DeliveryState::parse(&state).ok_or(StoreError::BadState(state))?;
        Ok(Some(Outcome {
            provider: provider.map(Cow::Owned),
            reason: Some(Cow::Borrowed(INTERNAL_ERROR)),
            detail: Some(Cow::Borrowed(detail)),
            in_doubt,
            ..Outcome::new(state, attempt)
        }))
    }

    /// Notes in the audit trail that a job for a finished challenge arrived and was not sent.
    pub async fn record_duplicate(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO delivery_events (challenge_id, kind) VALUES ($1, 'duplicate')")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives up ownership at shutdown so that the redelivered job is taken over at once. A call
    /// still in flight keeps its mark, so the taker treats that attempt as in doubt.
    pub async fn release(&self, owner: Owner<'_>) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET lease_until = now() WHERE challenge_id = $1 AND lease_token = $2 AND state IN ('received', 'sending')")
            .bind(owner.id)
            .bind(owner.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
