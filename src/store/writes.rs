//! The hot writes of every job, as batched statements (see `batch.rs`): the claim of a
//! recorded challenge, the start of an attempt and the terminal commit.
//! Each takes UNNEST'ed arrays, one element per job, and does for every job exactly what the
//! single-row statement did: the same rows, the same audit events, the same fencing.

use super::StoreError;
use super::batch::Op;
use super::types::{Claim, Verdict};
use crate::domain::{DeliveryState, Outcome};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::borrow::Cow;
use std::collections::HashMap;

/// `Store::claim` for one job.
pub(super) struct ClaimOp {
    pub challenge_id: String,
    pub account_id: String,
    pub channel: String,
    pub destination_masked: String,
    pub destination_hmac: Vec<u8>,
    pub locale: Option<String>,
    pub template: String,
    pub expires_at: DateTime<Utc>,
    pub lease_secs: f64,
    pub token: i64,
    pub country: Option<String>,
    pub prefix: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    challenge_id: String,
    attempt: i32,
    call_in_flight: bool,
    inserted: bool,
    doubted: bool,
    admitted: bool,
}

/// A challenge as recorded, for a claim that could not take it.
#[derive(sqlx::FromRow)]
struct Current {
    challenge_id: String,
    state: String,
    attempt: i32,
    provider: Option<String>,
    provider_message_id: Option<String>,
    reason: Option<String>,
    detail: Option<String>,
    event_published: bool,
    lease_until: Option<DateTime<Utc>>,
    /// Some provider call for this challenge was in doubt.
    in_doubt: bool,
    rule: Option<String>,
    retry_at: Option<DateTime<Utc>>,
}

impl Current {
    fn outcome(self, state: DeliveryState) -> Outcome<'static> {
        Outcome {
            provider: self.provider.map(Cow::Owned),
            provider_message_id: self.provider_message_id.map(Cow::Owned),
            reason: self.reason.map(Cow::Owned),
            detail: self.detail.map(Cow::Owned),
            in_doubt: self.in_doubt,
            rule: self.rule.map(Cow::Owned),
            retry_at: self.retry_at,
            ..Outcome::new(state, self.attempt)
        }
    }
}

impl Op for ClaimOp {
    type Output = Claim;

    fn key(&self) -> &str {
        &self.challenge_id
    }

    async fn run(pool: &PgPool, batch: &[&Self]) -> Result<Vec<Claim>, StoreError> {
        // The update branch fires only for an open challenge whose lease has run out, so at
        // most one worker at a time owns a challenge, across instances. The `received` audit
        // event is written in the same statement, only for a first sighting.
        let col = |f: fn(&ClaimOp) -> String| batch.iter().map(|o| f(o)).collect::<Vec<_>>();
        let opt =
            |f: fn(&ClaimOp) -> Option<String>| batch.iter().map(|o| f(o)).collect::<Vec<_>>();
        let claimed: Vec<Claimed> = sqlx::query_as(
            "WITH d AS (
               INSERT INTO deliveries (challenge_id, account_id, channel, destination_masked, destination_hmac,
                                       locale, template, expires_at, state, lease_until, lease_token, country, prefix)
               SELECT id, account, channel, masked, hmac, locale, template, expires, 'received',
                      now() + make_interval(secs => lease), token, country, prefix
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[],
                             $8::timestamptz[], $9::float8[], $10::int8[], $11::text[], $12::text[])
                      AS t(id, account, channel, masked, hmac, locale, template, expires, lease, token, country, prefix)
               ON CONFLICT (challenge_id) DO UPDATE
                  SET lease_until = EXCLUDED.lease_until, lease_token = EXCLUDED.lease_token, updated_at = now()
                WHERE deliveries.state IN ('received', 'sending') AND deliveries.lease_until < now()
               RETURNING challenge_id, attempt, call_started_at IS NOT NULL AS call_in_flight,
                         (xmax = 0) AS inserted, admitted),
             e AS (INSERT INTO delivery_events (challenge_id, kind, state)
                   SELECT challenge_id, 'state', 'received' FROM d WHERE inserted)
             SELECT challenge_id, attempt, call_in_flight, inserted, admitted,
                    CASE WHEN inserted THEN false
                         ELSE EXISTS (SELECT 1 FROM delivery_events x
                                       WHERE x.challenge_id = d.challenge_id AND x.kind = 'in_doubt') END AS doubted
               FROM d",
        )
        .bind(col(|o| o.challenge_id.clone()))
        .bind(col(|o| o.account_id.clone()))
        .bind(col(|o| o.channel.clone()))
        .bind(col(|o| o.destination_masked.clone()))
        .bind(batch.iter().map(|o| o.destination_hmac.clone()).collect::<Vec<_>>())
        .bind(opt(|o| o.locale.clone()))
        .bind(col(|o| o.template.clone()))
        .bind(batch.iter().map(|o| o.expires_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.lease_secs).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.token).collect::<Vec<_>>())
        .bind(opt(|o| o.country.clone()))
        .bind(opt(|o| o.prefix.clone()))
        .fetch_all(pool)
        .await?;
        let mut claims: HashMap<String, Claim> = claimed
            .into_iter()
            .map(|c| {
                let claim = match c.inserted {
                    true => Claim::New(Verdict::Unjudged),
                    false => Claim::TakenOver {
                        attempt: c.attempt,
                        call_in_flight: c.call_in_flight,
                        doubted: c.doubted,
                        admitted: c.admitted,
                    },
                };
                (c.challenge_id, claim)
            })
            .collect();
        let others: Vec<&str> = batch
            .iter()
            .map(|o| o.challenge_id.as_str())
            .filter(|id| !claims.contains_key(*id))
            .collect();
        if !others.is_empty() {
            current(pool, &others, &mut claims).await?;
        }
        Ok(batch
            .iter()
            .map(|o| {
                // Gone between the two statements (purged): claim it again shortly.
                claims.remove(&o.challenge_id).unwrap_or(Claim::Busy {
                    lease_until: Utc::now(),
                })
            })
            .collect())
    }
}

/// Where challenges that could not be claimed stand: finished, or owned by a live lease.
async fn current(
    pool: &PgPool,
    ids: &[&str],
    claims: &mut HashMap<String, Claim>,
) -> Result<(), StoreError> {
    let rows: Vec<Current> = sqlx::query_as(
        "SELECT challenge_id, state, attempt, provider, provider_message_id, reason, detail, event_published,
                lease_until, rule, retry_at,
                EXISTS (SELECT 1 FROM delivery_events e
                         WHERE e.challenge_id = d.challenge_id AND e.kind = 'in_doubt') AS in_doubt
           FROM deliveries d WHERE challenge_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let state = DeliveryState::parse(&row.state)
            .ok_or_else(|| StoreError::BadState(row.state.clone()))?;
        let challenge_id = row.challenge_id.clone();
        let claim = match (state.is_terminal(), row.lease_until) {
            (true, _) => Claim::Done {
                event_published: row.event_published,
                outcome: row.outcome(state),
            },
            (false, Some(lease_until)) => Claim::Busy { lease_until },
            // An open row always has a lease; treat a missing one as just expired.
            (false, None) => Claim::Busy {
                lease_until: Utc::now(),
            },
        };
        claims.insert(challenge_id, claim);
    }
    Ok(())
}

/// `Store::start_attempt` for one job.
pub(super) struct StartOp {
    pub challenge_id: String,
    pub attempt: i32,
    pub provider: String,
    pub lease_secs: f64,
    pub token: i64,
}

impl Op for StartOp {
    type Output = bool;
    // Each caller holds its provider's call slot until its start commits (the call must not
    // start before it), so starts never queue behind a running batch for company: a commit
    // slowed by a busy disk would otherwise cost every slot twice that commit.
    const IN_FLIGHT: usize = 4;
    const SECOND_BATCH_MIN: usize = 1;

    fn key(&self) -> &str {
        &self.challenge_id
    }

    async fn run(pool: &PgPool, batch: &[&Self]) -> Result<Vec<bool>, StoreError> {
        // No indexed column changes for a row its claim admitted (already `sending`;
        // `updated_at` is left to the terminal commit), so this is a HOT update: no index is
        // written.
        let started: Vec<String> = sqlx::query_scalar(
            "WITH d AS (UPDATE deliveries
                           SET state = 'sending', attempt = t.attempt, provider = t.provider,
                               call_started_at = now(), lease_until = now() + make_interval(secs => t.lease)
                          FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::float8[], $5::int8[])
                               AS t(id, attempt, provider, lease, token)
                         WHERE deliveries.challenge_id = t.id AND deliveries.lease_token = t.token
                     RETURNING t.id, t.attempt, t.provider),
                  e AS (INSERT INTO delivery_events (challenge_id, kind, state, attempt, provider)
                        SELECT id, 'state', 'sending', attempt, provider FROM d)
             SELECT id FROM d",
        )
        .bind(batch.iter().map(|o| o.challenge_id.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.attempt).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.provider.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.lease_secs).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.token).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        Ok(matched(batch, started))
    }
}

/// `Store::finish` for one job.
pub(super) struct FinishOp {
    pub challenge_id: String,
    pub token: i64,
    pub state: &'static str,
    pub attempt: i32,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub response_status: Option<i32>,
    pub latency_ms: Option<i32>,
    pub in_doubt: bool,
    pub rule: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
}

impl Op for FinishOp {
    type Output = bool;

    fn key(&self) -> &str {
        &self.challenge_id
    }

    async fn run(pool: &PgPool, batch: &[&Self]) -> Result<Vec<bool>, StoreError> {
        let opt = |f: fn(&FinishOp) -> Option<&str>| batch.iter().map(|o| f(o)).collect::<Vec<_>>();
        let finished: Vec<String> = sqlx::query_scalar(
            "WITH d AS (UPDATE deliveries
                           SET state = t.state, attempt = t.attempt, provider = COALESCE(t.provider, deliveries.provider),
                               provider_message_id = t.message_id, reason = t.reason, detail = t.detail,
                               rule = t.rule, retry_at = t.retry_at,
                               lease_until = NULL, lease_token = NULL, call_started_at = NULL, updated_at = now(),
                               event_published = true,
                               sent_at = CASE WHEN t.state = 'sent' THEN now() END
                          FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int4[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::int4[], $10::int4[], $11::bool[], $12::text[],
                                      $13::timestamptz[])
                               AS t(id, token, state, attempt, provider, message_id, reason, detail, status,
                                    latency, in_doubt, rule, retry_at)
                         WHERE deliveries.challenge_id = t.id AND deliveries.lease_token = t.token
                     RETURNING t.*),
                  e AS (INSERT INTO delivery_events (challenge_id, kind, state, attempt, provider, response_status,
                                                     latency_ms, reason, detail, in_doubt)
                        SELECT id, 'state', state, attempt, provider, status, latency, reason, detail, in_doubt FROM d),
                  m AS (INSERT INTO provider_messages (provider_message_id, challenge_id)
                        SELECT message_id, id FROM d WHERE message_id IS NOT NULL
                        ON CONFLICT DO NOTHING)
             SELECT id FROM d",
        )
        .bind(batch.iter().map(|o| o.challenge_id.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.token).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.state).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.attempt).collect::<Vec<_>>())
        .bind(opt(|o| o.provider.as_deref()))
        .bind(opt(|o| o.provider_message_id.as_deref()))
        .bind(opt(|o| o.reason.as_deref()))
        .bind(opt(|o| o.detail.as_deref()))
        .bind(batch.iter().map(|o| o.response_status).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.latency_ms).collect::<Vec<_>>())
        .bind(batch.iter().map(|o| o.in_doubt).collect::<Vec<_>>())
        .bind(opt(|o| o.rule.as_deref()))
        .bind(batch.iter().map(|o| o.retry_at).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        Ok(matched(batch, finished))
    }
}

/// For each request, whether the statement returned its challenge (its fenced update applied).
fn matched<O: Op>(batch: &[&O], returned: Vec<String>) -> Vec<bool> {
    let returned: std::collections::HashSet<String> = returned.into_iter().collect();
    batch.iter().map(|o| returned.contains(o.key())).collect()
}
