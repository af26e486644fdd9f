//! The fast path of a new challenge: claim, admission and the start of its first attempt in
//! one batched transaction (see `batch.rs`), instead of three.
//!
//! For each job of the batch: insert the challenge leased to its worker (a challenge that
//! already exists is left alone and answered [`Opened::Exists`]: its worker takes the slow
//! path, which knows takeovers and duplicates); judge its limits on the batch's [`Ledger`];
//! mark the admitted ones `sending` with their first attempt. A refused job stays `received`
//! and leased, for its worker to conclude. The audit events are the ones the slow path writes:
//! `received` for every new challenge, then `sending` for every started attempt.

use super::admission::{Decide, Key, Ledger, bind_counters, counter_writes};
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
    // The longest write of a job (five round trips with limits on): at two, a storm's open
    // batches queued behind each other while PostgreSQL's CPUs had time to spare
    // (docs/performance.md).
    const IN_FLIGHT: usize = 4;

    fn key(&self) -> &str {
        &self.challenge_id
    }

    async fn run(pool: &PgPool, batch: &[&Self]) -> Result<Vec<Opened>, StoreError> {
        if batch.iter().all(|o| o.keys.is_empty()) {
            return open_unlimited(pool, batch).await;
        }
        loop {
            let mut tx = pool.begin().await?;
            let (new, clock) = insert(&mut tx, batch).await?;
            let fresh = batch.iter().filter(|o| new.contains(&o.challenge_id));
            let mut ledger = Ledger::lock(&mut tx, fresh.flat_map(|o| &o.keys), clock).await?;
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
            if new.is_empty() || write(&mut tx, batch, &new, &started, &ledger).await? {
                tx.commit().await?;
                return Ok(outputs);
            }
            // Another batch created one of our new counters first: decide again on it.
            tx.rollback().await?;
        }
    }
}

/// Binds a batch's challenges as $1..$13 of an insert into `deliveries` that unnests them as
/// t(id, account, channel, masked, hmac, locale, template, expires, lease, token, country,
/// prefix, provider).
macro_rules! bind_challenges {
    ($query:expr, $batch:expr) => {{
        let batch: &[&OpenOp] = $batch;
        let text = |f: fn(&OpenOp) -> &str| batch.iter().map(|o| f(o)).collect::<Vec<_>>();
        let opt = |f: fn(&OpenOp) -> Option<&str>| batch.iter().map(|o| f(o)).collect::<Vec<_>>();
        $query
            .bind(text(|o| &o.challenge_id))
            .bind(text(|o| &o.account_id))
            .bind(text(|o| &o.channel))
            .bind(text(|o| &o.destination_masked))
            .bind(
                batch
                    .iter()
                    .map(|o| o.destination_hmac.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(opt(|o| o.locale.as_deref()))
            .bind(text(|o| &o.template))
            .bind(batch.iter().map(|o| o.expires_at).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.lease_secs).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.token).collect::<Vec<_>>())
            .bind(opt(|o| o.country.as_deref()))
            .bind(opt(|o| o.prefix.as_deref()))
            .bind(text(|o| &o.provider))
    }};
}

/// The UNNEST of [`bind_challenges`].
macro_rules! challenges {
    () => {
        "UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[],
                $8::timestamptz[], $9::float8[], $10::int8[], $11::text[], $12::text[], $13::text[])
         AS t(id, account, channel, masked, hmac, locale, template, expires, lease, token, country, prefix, provider)"
    };
}

/// With no limit to take, a new challenge goes straight to `sending`, with both its audit
/// events, in one statement and one commit.
async fn open_unlimited(pool: &PgPool, batch: &[&OpenOp]) -> Result<Vec<Opened>, StoreError> {
    let new: Vec<String> = bind_challenges!(
        sqlx::query_scalar(concat!(
            "WITH d AS (
               INSERT INTO deliveries (challenge_id, account_id, channel, destination_masked, destination_hmac,
                                       locale, template, expires_at, state, attempt, provider, admitted,
                                       call_started_at, lease_until, lease_token, country, prefix)
               SELECT id, account, channel, masked, hmac, locale, template, expires, 'sending', 1, provider, true,
                      now(), now() + make_interval(secs => lease), token, country, prefix
                 FROM ",
            challenges!(),
            "
               ON CONFLICT (challenge_id) DO NOTHING
               RETURNING challenge_id, provider),
             e AS (INSERT INTO delivery_events (challenge_id, kind, state, attempt, provider)
                   SELECT d.challenge_id, 'state', s.state, s.attempt, s.provider
                     FROM d CROSS JOIN LATERAL (VALUES (1, 'received', NULL::int4, NULL::text),
                                                       (2, 'sending', 1, d.provider)) AS s(n, state, attempt, provider)
                    ORDER BY d.challenge_id, s.n)
             SELECT challenge_id FROM d"
        )),
        batch
    )
    .fetch_all(pool)
    .await?;
    let new: HashSet<String> = new.into_iter().collect();
    Ok(batch
        .iter()
        .map(|o| match new.contains(&o.challenge_id) {
            true => Opened::Started,
            false => Opened::Exists,
        })
        .collect())
}

/// Inserts the challenges not yet recorded, `received` and leased; returns their ids and the
/// database's clock.
async fn insert(
    tx: &mut sqlx::PgConnection,
    batch: &[&OpenOp],
) -> Result<(HashSet<String>, Option<DateTime<Utc>>), StoreError> {
    let rows: Vec<(String, DateTime<Utc>)> = bind_challenges!(
        sqlx::query_as(concat!(
            "INSERT INTO deliveries (challenge_id, account_id, channel, destination_masked, destination_hmac,
                                     locale, template, expires_at, state, lease_until, lease_token, country, prefix)
             SELECT id, account, channel, masked, hmac, locale, template, expires, 'received',
                    now() + make_interval(secs => lease), token, country, prefix
               FROM ",
            challenges!(),
            "
             ON CONFLICT (challenge_id) DO NOTHING
             RETURNING challenge_id, clock_timestamp()"
        )),
        batch
    )
    .fetch_all(&mut *tx)
    .await?;
    let clock = rows.first().map(|(_, at)| *at);
    Ok((rows.into_iter().map(|(id, _)| id).collect(), clock))
}

/// One statement for the rest: the counters, attempt 1 of the admitted challenges, and the
/// audit events of every new one (`received`, then `sending` where an attempt started).
/// Returns false if another batch created one of the new counters first.
async fn write(
    tx: &mut sqlx::PgConnection,
    batch: &[&OpenOp],
    new: &HashSet<String>,
    started: &[&OpenOp],
    ledger: &Ledger,
) -> Result<bool, StoreError> {
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
    let writes = ledger.writes();
    let expected = writes.new.rules.len() as i64;
    let inserted: i64 = bind_counters!(
        sqlx::query_scalar(concat!(
            counter_writes!(),
            ",
             st AS (UPDATE deliveries
                       SET state = 'sending', attempt = 1, provider = t.provider, admitted = true,
                           call_started_at = now(), updated_at = now()
                      FROM UNNEST($15::text[], $16::text[]) AS t(id, provider)
                     WHERE deliveries.challenge_id = t.id),
             ev AS (INSERT INTO delivery_events (challenge_id, kind, state, attempt, provider)
                    SELECT id, 'state', state, attempt, provider
                      FROM UNNEST($17::text[], $18::text[], $19::int4[], $20::text[]) WITH ORDINALITY
                           AS e(id, state, attempt, provider, n)
                     ORDER BY n)
             SELECT count(*) FROM ci"
        )),
        writes
    )
    .bind(started.iter().map(|o| o.challenge_id.as_str()).collect::<Vec<_>>())
    .bind(started.iter().map(|o| o.provider.as_str()).collect::<Vec<_>>())
    .bind(ids)
    .bind(states)
    .bind(attempts)
    .bind(providers)
    .fetch_one(&mut *tx)
    .await?;
    Ok(inserted == expected)
}
