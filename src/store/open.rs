//! The fast path of a new challenge: claim, admission and the start of its first attempt in
//! one batched transaction (see `batch.rs`), instead of three.
//!
//! For each job of the batch: insert the challenge leased to its worker (a challenge that
//! already exists is left alone and answered [`Opened::Exists`]: its worker takes the slow
//! path, which knows takeovers and duplicates); judge its limits on the batch's [`Ledger`];
//! mark the admitted ones `sending` with their first attempt. A refused job stays `received`
//! and leased, for its worker to conclude. The audit events are the ones the slow path writes:
//! `received` for every new challenge, then `sending` for every started attempt.

use super::admission::{Decide, Key, Ledger};
use super::batch::Op;
use super::deliveries::NewDelivery;
use super::{Owner, Store, StoreError};
use crate::limits::Refusal;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::Duration;

/// What opening a challenge did.
#[derive(Debug)]
pub enum Opened {
    /// The challenge is new, admitted and `sending`: the caller makes attempt 1 now.
    Started,
    /// The challenge is new and leased to the caller, but a limit refused it.
    Refused(Refusal),
    /// The challenge was already recorded; nothing was written.
    Exists,
}

/// The first attempt a new challenge is opened with.
pub struct FirstAttempt<'a> {
    pub provider: &'a str,
    /// Counters to take, (rule, key), in the order `decide` expects; empty when no limit
    /// applies.
    pub keys: Vec<Key>,
    pub decide: Decide,
    pub lease: Duration,
}

impl Store {
    /// Records a new challenge owned by `owner`, takes its limits and starts its first
    /// attempt, all in one commit shared with other jobs.
    pub async fn open(
        &self,
        d: &NewDelivery<'_>,
        owner: Owner<'_>,
        first: &FirstAttempt<'_>,
    ) -> Result<Opened, StoreError> {
        let op = OpenOp {
            challenge_id: d.challenge_id.to_string(),
            account_id: d.account_id.to_string(),
            channel: d.channel.to_string(),
            destination_masked: d.destination_masked.to_string(),
            destination_hmac: d.destination_hmac.to_vec(),
            locale: d.locale.map(str::to_string),
            template: d.template.to_string(),
            expires_at: d.expires_at,
            country: d.country.map(str::to_string),
            prefix: d.prefix.map(str::to_string),
            token: owner.token,
            lease_secs: first.lease.as_secs_f64(),
            provider: first.provider.to_string(),
            keys: first.keys.clone(),
            decide: first.decide.clone(),
        };
        self.writes.open.submit(op).await
    }
}

pub(super) struct OpenOp {
    challenge_id: String,
    account_id: String,
    channel: String,
    destination_masked: String,
    destination_hmac: Vec<u8>,
    locale: Option<String>,
    template: String,
    expires_at: DateTime<Utc>,
    country: Option<String>,
    prefix: Option<String>,
    token: i64,
    lease_secs: f64,
    provider: String,
    keys: Vec<Key>,
    decide: Decide,
}

impl Op for OpenOp {
    type Output = Opened;

    fn key(&self) -> &str {
        &self.challenge_id
    }

    async fn run(pool: &PgPool, batch: &[&Self]) -> Result<Vec<Opened>, StoreError> {
        loop {
            let mut tx = pool.begin().await?;
            let new = insert(&mut tx, batch).await?;
            let fresh = batch.iter().filter(|o| new.contains(&o.challenge_id));
            let mut ledger = Ledger::lock(&mut tx, fresh.flat_map(|o| &o.keys)).await?;
            let mut outputs = Vec::with_capacity(batch.len());
            let mut started: Vec<&OpenOp> = Vec::new();
            for op in batch {
                if !new.contains(&op.challenge_id) {
                    outputs.push(Opened::Exists);
                    continue;
                }
                match ledger.judge(&op.keys, &op.decide) {
                    Ok(()) => {
                        started.push(op);
                        outputs.push(Opened::Started);
                    }
                    Err(refusal) => outputs.push(Opened::Refused(refusal)),
                }
            }
            if !ledger.write(&mut tx).await? {
                // Another batch created one of our new counters first: decide again on it.
                tx.rollback().await?;
                continue;
            }
            start(&mut tx, batch, &new, &started).await?;
            tx.commit().await?;
            return Ok(outputs);
        }
    }
}

/// Inserts the challenges not yet recorded, `received` and leased; returns their ids.
async fn insert(
    tx: &mut sqlx::PgConnection,
    batch: &[&OpenOp],
) -> Result<HashSet<String>, StoreError> {
    let text = |f: fn(&OpenOp) -> &str| batch.iter().map(|o| f(o)).collect::<Vec<_>>();
    let opt = |f: fn(&OpenOp) -> Option<&str>| batch.iter().map(|o| f(o)).collect::<Vec<_>>();
    let new: Vec<String> = sqlx::query_scalar(
        "INSERT INTO deliveries (challenge_id, account_id, channel, destination_masked, destination_hmac,
                                 locale, template, expires_at, state, lease_until, lease_token, country, prefix)
         SELECT id, account, channel, masked, hmac, locale, template, expires, 'received',
                now() + make_interval(secs => lease), token, country, prefix
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[],
                       $8::timestamptz[], $9::float8[], $10::int8[], $11::text[], $12::text[])
                AS t(id, account, channel, masked, hmac, locale, template, expires, lease, token, country, prefix)
         ON CONFLICT (challenge_id) DO NOTHING
         RETURNING challenge_id",
    )
    .bind(text(|o| &o.challenge_id))
    .bind(text(|o| &o.account_id))
    .bind(text(|o| &o.channel))
    .bind(text(|o| &o.destination_masked))
    .bind(batch.iter().map(|o| o.destination_hmac.as_slice()).collect::<Vec<_>>())
    .bind(opt(|o| o.locale.as_deref()))
    .bind(text(|o| &o.template))
    .bind(batch.iter().map(|o| o.expires_at).collect::<Vec<_>>())
    .bind(batch.iter().map(|o| o.lease_secs).collect::<Vec<_>>())
    .bind(batch.iter().map(|o| o.token).collect::<Vec<_>>())
    .bind(opt(|o| o.country.as_deref()))
    .bind(opt(|o| o.prefix.as_deref()))
    .fetch_all(&mut *tx)
    .await?;
    Ok(new.into_iter().collect())
}

/// Starts attempt 1 of the admitted challenges, and writes the audit events of every new one:
/// `received`, then `sending` where an attempt started.
async fn start(
    tx: &mut sqlx::PgConnection,
    batch: &[&OpenOp],
    new: &HashSet<String>,
    started: &[&OpenOp],
) -> Result<(), StoreError> {
    if !started.is_empty() {
        sqlx::query(
            "UPDATE deliveries
                SET state = 'sending', attempt = 1, provider = t.provider, admitted = true,
                    call_started_at = now(), updated_at = now()
               FROM UNNEST($1::text[], $2::text[]) AS t(id, provider)
              WHERE deliveries.challenge_id = t.id",
        )
        .bind(
            started
                .iter()
                .map(|o| o.challenge_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            started
                .iter()
                .map(|o| o.provider.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    let mut ids: Vec<&str> = Vec::with_capacity(new.len() + started.len());
    let mut states: Vec<&str> = Vec::with_capacity(ids.capacity());
    let mut attempts: Vec<Option<i32>> = Vec::with_capacity(ids.capacity());
    let mut providers: Vec<Option<&str>> = Vec::with_capacity(ids.capacity());
    for o in batch.iter().filter(|o| new.contains(&o.challenge_id)) {
        ids.push(&o.challenge_id);
        states.push("received");
        attempts.push(None);
        providers.push(None);
    }
    for o in started {
        ids.push(&o.challenge_id);
        states.push("sending");
        attempts.push(Some(1));
        providers.push(Some(&o.provider));
    }
    sqlx::query(
        "INSERT INTO delivery_events (challenge_id, kind, state, attempt, provider)
         SELECT id, 'state', state, attempt, provider
           FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[]) WITH ORDINALITY
                AS t(id, state, attempt, provider, n)
          ORDER BY n",
    )
    .bind(ids)
    .bind(states)
    .bind(attempts)
    .bind(providers)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
