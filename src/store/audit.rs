//! The audit chain's sealer, its verification and audited purges.
//!
//! Writers insert events unsealed, so they never queue on a chain head. One sealer at a time
//! (a transaction-scoped advisory lock, across every instance) gives the unsealed events the
//! next places in the chain, in id order, and moves the head. A purge takes the same lock, so
//! it never races a seal.

use super::{Store, StoreError};
use crate::audit::chain::{self, COLUMNS, ChainedEvent, GENESIS};
use chrono::{DateTime, Utc};

/// The advisory lock key shared by the sealer and purges ("otpd" in ASCII).
const CHAIN_LOCK: i64 = 0x6f74_7064;
const SEAL_BATCH: i64 = 2000;

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

impl Store {
    /// Seals every unsealed event. Returns how many; 0 also when another instance is sealing.
    pub async fn seal(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut tx = self.pool().begin().await?;
            let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
                .bind(CHAIN_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                return Ok(total);
            }
            let head: Option<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, hash FROM audit_chain")
                .fetch_optional(&mut *tx)
                .await?;
            let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_vec()));
            let sql = format!(
                "SELECT {COLUMNS} FROM delivery_events WHERE seq IS NULL ORDER BY id LIMIT {SEAL_BATCH}"
            );
            let rows: Vec<ChainedEvent> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let (mut ids, mut seqs, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
            for row in &rows {
                seq += 1;
                prev = chain::hash(&prev, seq, row).to_vec();
                ids.push(row.id);
                seqs.push(seq);
                hashes.push(prev.clone());
            }
            sqlx::query(
                "UPDATE delivery_events e SET seq = u.seq, hash = u.hash
                   FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[]) AS u(id, seq, hash)
                  WHERE e.id = u.id",
            )
            .bind(&ids)
            .bind(&seqs)
            .bind(&hashes)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO audit_chain (singleton, seq, hash) VALUES (true, $1, $2)
                 ON CONFLICT (singleton) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
            )
            .bind(seq)
            .bind(&prev)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            total += rows.len() as u64;
            if (rows.len() as i64) < SEAL_BATCH {
                return Ok(total);
            }
        }
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
        let sql = format!(
            "SELECT {COLUMNS} FROM delivery_events WHERE seq > $1 ORDER BY seq LIMIT 10000"
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
        let head: Option<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, hash FROM audit_chain")
            .fetch_optional(self.pool())
            .await?;
        if let Some((head_seq, head_hash)) = head
            && (head_seq != seq || head_hash != prev)
        {
            v.problems.push(format!(
                "the chain ends at event {seq} but its recorded head is event {head_seq}: newest events were deleted or altered"
            ));
        }
        let (unsealed,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM delivery_events WHERE seq IS NULL")
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
        self.seal().await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *tx)
            .await?;
        let (through,): (Option<i64>,) = sqlx::query_as(
            "SELECT COALESCE((SELECT min(seq) - 1 FROM delivery_events WHERE seq IS NOT NULL AND at >= $1),
                             (SELECT max(seq) FROM delivery_events WHERE seq IS NOT NULL))",
        )
        .bind(older_than)
        .fetch_one(&mut *tx)
        .await?;
        let through = through.unwrap_or(0);
        let anchor: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT hash FROM delivery_events WHERE seq = $1")
                .bind(through)
                .fetch_optional(&mut *tx)
                .await?;
        let events = sqlx::query("DELETE FROM delivery_events WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
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
