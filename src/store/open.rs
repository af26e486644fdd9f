//! The claim of a new challenge, admitting it in the same commit: the challenge is recorded,
//! leased to its worker and its limits taken in one batched transaction (see `batch.rs`),
//! where a challenge found already recorded is claimed by `ClaimOp` (`writes.rs`) instead.
//!
//! One transaction per batch, of four round trips: BEGIN; lock the counters the batch takes
//! and read the database's clock; judge each job's limits on the batch's [`Ledger`], in
//! Rust; one statement that writes the counters and inserts every challenge leased to its
//! worker, admitted and `sending` or refused and `received`; COMMIT. The audit event is the one
//! every new challenge gets, `received`. An admitted row is written as `sending` at once,
//! though its first attempt starts later, so that the attempt's start changes no indexed
//! column and is a HOT update.
//!
//! A challenge already recorded (or recorded by another batch meanwhile: the insert waits
//! for that batch's commit) is not inserted. The transaction is then rolled back and the
//! batch decided again without it, since its counters must not be taken; it is answered
//! [`Opened::Exists`], and `Store::claim` claims it as a recorded challenge.

use super::StoreError;
use super::admission::{Ledger, bind_counters, counter_writes};
use super::batch::Op;
use super::types::{Admit, Decide, Key, NewDelivery};
use crate::domain::Refusal;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashSet;

/// What opening a challenge did.
#[derive(Debug)]
pub(super) enum Opened {
    /// The challenge is new, leased to the caller and admitted.
    Admitted,
    /// The challenge is new and leased to the caller, but a limit refused it.
    Refused(Refusal),
    /// The challenge was already recorded; nothing was written.
    Exists,
}

impl OpenOp {
    pub(super) fn new(d: &NewDelivery<'_>, token: i64, lease_secs: f64, admit: Admit) -> OpenOp {
        OpenOp {
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
            token,
            lease_secs,
            keys: admit.keys,
            decide: admit.decide,
        }
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
    keys: Vec<Key>,
    decide: Decide,
}

impl Op for OpenOp {
    type Output = Opened;
    // The longest write of a job (four round trips with limits on): at two, a storm's open
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
        // Challenges an earlier try found already recorded.
        let mut exists: HashSet<&str> = HashSet::new();
        loop {
            let fresh: Vec<&OpenOp> = batch
                .iter()
                .copied()
                .filter(|o| !exists.contains(o.challenge_id.as_str()))
                .collect();
            if fresh.is_empty() {
                return Ok(batch.iter().map(|_| Opened::Exists).collect());
            }
            let mut tx = pool.begin().await?;
            let mut ledger = Ledger::lock(&mut tx, fresh.iter().flat_map(|o| &o.keys)).await?;
            let verdicts: Vec<Result<(), Refusal>> = fresh
                .iter()
                .map(|o| ledger.judge(&o.keys, &o.decide))
                .collect();
            let written = write(&mut tx, &fresh, &verdicts, &ledger).await?;
            if written.counters_complete && written.inserted.len() == fresh.len() {
                tx.commit().await?;
                return Ok(outputs(batch, &exists, verdicts));
            }
            // Another batch created one of our new counters first, or one of the challenges
            // was recorded meanwhile: decide again, without the recorded ones.
            tx.rollback().await?;
            for o in &fresh {
                if !written.inserted.contains(&o.challenge_id) {
                    exists.insert(&o.challenge_id);
                }
            }
        }
    }
}

/// Each request's answer, in order: the fresh ones' verdicts, in order, and `Exists` for the
/// others.
fn outputs(
    batch: &[&OpenOp],
    exists: &HashSet<&str>,
    verdicts: Vec<Result<(), Refusal>>,
) -> Vec<Opened> {
    let mut verdicts = verdicts.into_iter();
    batch
        .iter()
        .map(|o| match exists.contains(o.challenge_id.as_str()) {
            true => Opened::Exists,
            false => match verdicts.next() {
                Some(Ok(())) => Opened::Admitted,
                Some(Err(refusal)) => Opened::Refused(refusal),
                None => Opened::Exists,
            },
        })
        .collect()
}

/// Binds a batch's challenges as the next 12 parameters ($1..$12 in `challenges!`) of an
/// insert into `deliveries` that unnests them as t(id, account, channel, masked, hmac,
/// locale, template, expires, lease, token, country, prefix).
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
    }};
}

/// The UNNEST of [`bind_challenges`].
macro_rules! challenges {
    () => {
        "UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[],
                $8::timestamptz[], $9::float8[], $10::int8[], $11::text[], $12::text[])
         AS t(id, account, channel, masked, hmac, locale, template, expires, lease, token, country, prefix)"
    };
}

/// With no limit to take, a new challenge is recorded admitted (`sending`), with its audit
/// event, in one statement and one commit.
async fn open_unlimited(pool: &PgPool, batch: &[&OpenOp]) -> Result<Vec<Opened>, StoreError> {
    let new: Vec<String> = bind_challenges!(
        sqlx::query_scalar(concat!(
            "WITH d AS (
               INSERT INTO deliveries (challenge_id, account_id, channel, destination_masked, destination_hmac,
                                       locale, template, expires_at, state, admitted, lease_until, lease_token,
                                       country, prefix)
               SELECT id, account, channel, masked, hmac, locale, template, expires, 'sending', true,
                      now() + make_interval(secs => lease), token, country, prefix
                 FROM ",
            challenges!(),
            "
               ON CONFLICT (challenge_id) DO NOTHING
               RETURNING challenge_id),
             e AS (INSERT INTO delivery_events (challenge_id, kind, state)
                   SELECT challenge_id, 'state', 'received' FROM d ORDER BY challenge_id)
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
            true => Opened::Admitted,
            false => Opened::Exists,
        })
        .collect())
}

/// What [`write`] did, for the caller to commit or roll back.
struct Written {
    /// Every new counter was inserted (none was created by another batch first).
    counters_complete: bool,
    /// The challenges inserted; the others were already recorded.
    inserted: HashSet<String>,
}

/// One statement for everything: the counters, and every challenge inserted leased, admitted
/// and `sending` where its verdict (`verdicts`, in the order of `fresh`) allows and `received`
/// where it refuses, with its audit event.
async fn write(
    tx: &mut sqlx::PgConnection,
    fresh: &[&OpenOp],
    verdicts: &[Result<(), Refusal>],
    ledger: &Ledger,
) -> Result<Written, StoreError> {
    let writes = ledger.writes();
    let expected = writes.new.rules.len() as i64;
    let admitted: Vec<bool> = verdicts.iter().map(Result::is_ok).collect();
    let (inserted_counters, inserted): (i64, Vec<String>) = bind_challenges!(
        bind_counters!(
            sqlx::query_as(concat!(
                counter_writes!(),
                ",
                 d AS (INSERT INTO deliveries (challenge_id, account_id, channel, destination_masked,
                                               destination_hmac, locale, template, expires_at, state,
                                               admitted, lease_until, lease_token, country, prefix)
                       SELECT id, account, channel, masked, hmac, locale, template, expires,
                              CASE WHEN go THEN 'sending' ELSE 'received' END, go,
                              now() + make_interval(secs => lease), token, country, prefix
                         FROM UNNEST($15::text[], $16::text[], $17::text[], $18::text[], $19::bytea[],
                                     $20::text[], $21::text[], $22::timestamptz[], $23::float8[], $24::int8[],
                                     $25::text[], $26::text[], $27::bool[])
                              AS t(id, account, channel, masked, hmac, locale, template, expires, lease, token,
                                   country, prefix, go)
                       ON CONFLICT (challenge_id) DO NOTHING
                       RETURNING challenge_id),
                 ev AS (INSERT INTO delivery_events (challenge_id, kind, state)
                        SELECT challenge_id, 'state', 'received' FROM d ORDER BY challenge_id)
                 SELECT (SELECT count(*) FROM ci), ARRAY(SELECT challenge_id FROM d)"
            )),
            writes
        ),
        fresh
    )
    .bind(admitted)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Written {
        counters_complete: inserted_counters == expected,
        inserted: inserted.into_iter().collect(),
    })
}
