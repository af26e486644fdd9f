//! The audit chain's sealer, its verification and audited purges.
//!
//! Writers insert events unsealed and never touch them again, so they never queue on a chain
//! head. One sealer at a time (a transaction-scoped advisory lock, across every instance)
//! seals the events that are final, in the order of the transactions that wrote them, with one
//! `audit_seals` row each, and moves the head. A purge takes the same lock, so it never races
//! a seal.

use super::chain::{self, COLUMNS, ChainedEvent, GENESIS};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// The advisory lock key shared by the sealer and purges ("otpd" in ASCII).
const CHAIN_LOCK: i64 = 0x6f74_7064;
const SEAL_BATCH: i64 = 2000;
/// How long a command waits for running transactions before it seals (see [`Trail::seal_all`]).
pub const SEAL_PATIENCE: Duration = Duration::from_secs(10);

/// The result of checking the whole chain.
#[derive(Debug, Default)]
pub struct Verification {
    pub checked: u64,
    pub head_seq: i64,
    pub head_hash: Vec<u8>,
    /// Events not sealed yet (inserted since the sealer last ran).
    pub unsealed: i64,
    /// Every break found: an edited row, a missing place, a head that does not match.
    pub problems: Vec<String>,
}

/// What a purge removed.
#[derive(Debug, PartialEq, Eq)]
pub struct Purged {
    pub through_seq: i64,
    pub events: u64,
    pub deliveries: u64,
}

/// Who asked for a purge, as recorded in `audit_purges`.
#[derive(Debug, Clone, Copy)]
pub enum PurgeTrigger {
    Command,
    Scheduled,
}

/// Where the chain stands: its last seal, and the last event sealed, as the cursor the next
/// seal continues after.
struct Head {
    seq: i64,
    hash: Vec<u8>,
    cursor: (i64, i64),
}

/// The audit trail of a store's database: its sealer, verification and purges.
#[derive(Clone)]
pub struct Trail {
    pool: PgPool,
}

impl Trail {
    pub fn new(store: &Store) -> Trail {
        Trail {
            pool: store.pool().clone(),
        }
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Seals every event that is final now (see the migration `audit_seals`): those written
    /// by transactions older than the oldest one still running. Returns how many; 0 also when
    /// another instance is sealing.
    pub async fn seal(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        while let Some(sealed) = self.seal_batch().await? {
            total += sealed;
            if sealed < SEAL_BATCH as u64 {
                break;
            }
        }
        Ok(total)
    }

    /// Seals every event committed before the call. An event behind a transaction that was
    /// still running when the call began cannot be sealed until that transaction ends, and
    /// PostgreSQL offers no way to wait for another transaction but polling its horizon; so
    /// this polls, for at most `patience`, then seals what it can. Commands use it so that
    /// `verify` and `purge` cover everything written before them.
    pub async fn seal_all(&self, patience: Duration) -> Result<u64, StoreError> {
        let (target,): (i64,) =
            sqlx::query_as("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
                .fetch_one(self.pool())
                .await?;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let (horizon,): (i64,) =
                sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(self.pool())
                    .await?;
            if horizon >= target || tokio::time::Instant::now() >= deadline {
                return self.seal().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Seals up to [`SEAL_BATCH`] events in one transaction; `None` when another instance
    /// holds the chain.
    async fn seal_batch(&self) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Neither this nor the head's read gives the transaction an id, so the events query
        // below is the one whose snapshot sets the horizon.
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        let mut head = head(&mut tx).await?;
        // The horizon is read in the same statement, hence from the same snapshot, as the
        // events: every event below it that committed is visible to this query.
        let sql = format!(
            "SELECT xid, {COLUMNS} FROM delivery_events
              WHERE (xid, id) > ($1, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
              ORDER BY xid, id LIMIT {SEAL_BATCH}"
        );
        let rows: Vec<ChainedEvent> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(head.cursor.0)
            .bind(head.cursor.1)
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(Some(0));
        };
        head.cursor = (last.xid, last.id);
        let (mut seqs, mut ids, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            head.seq += 1;
            head.hash = chain::hash(&head.hash, head.seq, row).to_vec();
            seqs.push(head.seq);
            ids.push(row.id);
            hashes.push(head.hash.clone());
        }
        sqlx::query(
            "INSERT INTO audit_seals (seq, event_id, hash)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[])",
        )
        .bind(&seqs)
        .bind(&ids)
        .bind(&hashes)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_chain (singleton, seq, hash, cursor_xid, cursor_id) VALUES (true, $1, $2, $3, $4)
             ON CONFLICT (singleton) DO UPDATE
                SET seq = EXCLUDED.seq, hash = EXCLUDED.hash,
                    cursor_xid = EXCLUDED.cursor_xid, cursor_id = EXCLUDED.cursor_id",
        )
        .bind(head.seq)
        .bind(&head.hash)
        .bind(head.cursor.0)
        .bind(head.cursor.1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(rows.len() as u64))
    }

    /// Recomputes the chain from the last purge's anchor to the head.
    pub async fn verify_chain(&self) -> Result<Verification, StoreError> {
        let anchor: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT through_seq, anchor_hash FROM audit_purges ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        let (mut seq, anchor_hash) = anchor.unwrap_or((0, None));
        let mut prev = anchor_hash.unwrap_or_else(|| GENESIS.to_vec());
        let mut v = Verification::default();
        // An event deleted without its seal drops out of the join and shows as a gap.
        let sql = format!(
            "SELECT s.seq, s.hash, {COLUMNS} FROM audit_seals s JOIN delivery_events e ON e.id = s.event_id
              WHERE s.seq > $1 ORDER BY s.seq LIMIT 10000"
        );
        loop {
            let rows: Vec<ChainedEvent> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(seq)
                .fetch_all(self.pool())
                .await?;
            let Some(last) = rows.last().and_then(|r| r.seq) else {
                break;
            };
            for row in &rows {
                v.check(row, &mut seq, &mut prev);
            }
            seq = last;
        }
        // A missing head row reads as the genesis, so deleting it shows too.
        let recorded = head(&mut *self.pool().acquire().await?).await?;
        if recorded.seq != seq || recorded.hash != prev {
            v.problems.push(format!(
                "the chain ends at event {seq} but its recorded head is event {}: newest events were deleted or altered",
                recorded.seq
            ));
        }
        let (unsealed,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM delivery_events WHERE (xid, id) > ($1, $2)")
                .bind(recorded.cursor.0)
                .bind(recorded.cursor.1)
                .fetch_one(self.pool())
                .await?;
        v.unsealed = unsealed;
        v.head_seq = seq;
        v.head_hash = prev;
        Ok(v)
    }

    /// Removes deliveries and their events older than `older_than`, and records the purge.
    /// Events go as a prefix of the chain (everything before the first one to keep), and its
    /// last hash is kept as the new anchor so that verification still closes.
    pub async fn purge(
        &self,
        older_than: DateTime<Utc>,
        trigger: PurgeTrigger,
    ) -> Result<Purged, StoreError> {
        // Only sealed events are purged, so seal first: the chain then covers all it removes.
        // This does not wait for running transactions (the command does, before calling):
        // an event not sealed yet stays, with its delivery, until the next purge.
        self.seal().await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *tx)
            .await?;
        let (through, anchor, events) = remove_prefix(&mut tx, older_than).await?;
        // A delivery's receipt look-up row goes with it.
        let deliveries: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM deliveries d
                            WHERE d.created_at < $1 AND d.state NOT IN ('received', 'sending')
                              AND NOT EXISTS (SELECT 1 FROM delivery_events e WHERE e.challenge_id = d.challenge_id)
                        RETURNING challenge_id, provider_message_id),
                  m AS (DELETE FROM provider_messages m USING gone
                         WHERE m.provider_message_id = gone.provider_message_id
                           AND m.challenge_id = gone.challenge_id)
             SELECT count(*) FROM gone",
        )
        .bind(older_than)
        .fetch_one(&mut *tx)
        .await?;
        let deliveries = deliveries as u64;
        if events > 0 || deliveries > 0 {
            self.record_purge(
                &mut tx, older_than, trigger, through, anchor, events, deliveries,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Purged {
            through_seq: through,
            events,
            deliveries,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_purge(
        &self,
        tx: &mut sqlx::PgConnection,
        older_than: DateTime<Utc>,
        trigger: PurgeTrigger,
        through: i64,
        anchor: Option<(Vec<u8>,)>,
        events: u64,
        deliveries: u64,
    ) -> Result<(), StoreError> {
        // A purge that removed no event keeps the previous anchor.
        let (through, anchor) = match (events, anchor) {
            (0, _) => self.current_anchor(tx).await?,
            (_, a) => (through, a.map(|(h,)| h)),
        };
        let trigger = match trigger {
            PurgeTrigger::Command => "command",
            PurgeTrigger::Scheduled => "scheduled",
        };
        sqlx::query(
            "INSERT INTO audit_purges (older_than, trigger, through_seq, anchor_hash, events_deleted, deliveries_deleted)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(older_than)
        .bind(trigger)
        .bind(through)
        .bind(anchor)
        .bind(events as i64)
        .bind(deliveries as i64)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn current_anchor(
        &self,
        tx: &mut sqlx::PgConnection,
    ) -> Result<(i64, Option<Vec<u8>>), StoreError> {
        let last: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT through_seq, anchor_hash FROM audit_purges ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        Ok(last.unwrap_or((0, None)))
    }
}

/// Deletes the chain's prefix before the first event to keep (with its seals); returns the
/// last removed place, its hash (the new anchor) and how many events went.
async fn remove_prefix(
    tx: &mut sqlx::PgConnection,
    older_than: DateTime<Utc>,
) -> Result<(i64, Option<(Vec<u8>,)>, u64), StoreError> {
    // Walked in chain order, so the query reads about as many seals as it will delete.
    let (through,): (Option<i64>,) = sqlx::query_as(
        "SELECT COALESCE((SELECT s.seq - 1 FROM audit_seals s JOIN delivery_events e ON e.id = s.event_id
                           WHERE e.at >= $1 ORDER BY s.seq LIMIT 1),
                         (SELECT max(seq) FROM audit_seals))",
    )
    .bind(older_than)
    .fetch_one(&mut *tx)
    .await?;
    let through = through.unwrap_or(0);
    let anchor: Option<(Vec<u8>,)> = sqlx::query_as("SELECT hash FROM audit_seals WHERE seq = $1")
        .bind(through)
        .fetch_optional(&mut *tx)
        .await?;
    let events: i64 = sqlx::query_scalar(
        "WITH seals AS (DELETE FROM audit_seals WHERE seq <= $1 RETURNING event_id),
              gone AS (DELETE FROM delivery_events e USING seals WHERE e.id = seals.event_id RETURNING 1)
         SELECT count(*) FROM gone",
    )
    .bind(through)
    .fetch_one(&mut *tx)
    .await?;
    let events = events as u64;
    Ok((through, anchor, events))
}

/// The chain's head, or the genesis with the cursor before every event.
async fn head(tx: &mut sqlx::PgConnection) -> Result<Head, StoreError> {
    let row: Option<(i64, Vec<u8>, i64, i64)> =
        sqlx::query_as("SELECT seq, hash, cursor_xid, cursor_id FROM audit_chain")
            .fetch_optional(&mut *tx)
            .await?;
    Ok(match row {
        Some((seq, hash, xid, id)) => Head {
            seq,
            hash,
            cursor: (xid, id),
        },
        None => Head {
            seq: 0,
            hash: GENESIS.to_vec(),
            cursor: (0, 0),
        },
    })
}

impl Verification {
    /// Checks one row against its expected place and predecessor, then moves on from the
    /// row's stored hash, so that one edited row is reported once rather than poisoning the
    /// rest of the chain.
    fn check(&mut self, row: &ChainedEvent, seq: &mut i64, prev: &mut Vec<u8>) {
        let at = row.seq.unwrap_or_default();
        let stored = row.hash.clone().unwrap_or_default();
        if at != *seq + 1 {
            // The row's predecessor is gone, so its own hash cannot be checked.
            self.problems.push(format!(
                "events {} to {} are missing from the chain (deleted)",
                *seq + 1,
                at - 1
            ));
        } else if chain::hash(prev, at, row).as_slice() != stored.as_slice() {
            self.problems.push(format!(
                "event {at} (challenge {}) does not match its hash: it was edited",
                row.challenge_id
            ));
        }
        self.checked += 1;
        *seq = at;
        *prev = stored;
    }
}
