//! PostgreSQL: the record of every job's fate. Only the dispatcher calls it; providers never
//! touch the store.
//!
//! Queries are written with `query`/`query_as` rather than the `query!` macros so that builds
//! need no database. Each state change is one statement (or one transaction) so that a crash
//! leaves either the old state or the new one, never half of both.

mod admission;
mod batch;
mod deliveries;
mod health;
mod limits;
mod open;
mod receipts;
mod types;
mod writes;

pub use admission::Admission;
pub use health::{Score, Standing};
pub use limits::Conversion;
pub use receipts::{ReceiptOutcome, Receipted};
pub use types::{Admit, Claim, Decide, NewDelivery, Owner, Rejected, Verdict};

use crate::config::{DatabaseSettings, Secret};
use crate::domain::text;
use batch::Batcher;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::sync::Arc;
use std::time::Duration;
use writes::{ClaimOp, FinishOp, StartOp};

/// What an audit event says: the part of a row the admin API's timeline shows, and what the
/// audit chain hashes.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EventFields {
    pub at: chrono::DateTime<chrono::Utc>,
    pub kind: String,
    pub state: Option<String>,
    pub attempt: Option<i32>,
    pub provider: Option<String>,
    pub response_status: Option<i32>,
    pub latency_ms: Option<i32>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub in_doubt: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unexpected state `{0}` in the deliveries table")]
    BadState(String),
    /// A batched write met an outage; every request of the batch gets its own copy.
    #[error("database: {0}")]
    Outage(String),
    #[error("the batched writer has stopped")]
    Closed,
    #[error("a batched write did not answer every request")]
    BatchShape,
}

impl StoreError {
    /// The database is unreachable (as opposed to refusing one statement): connection errors,
    /// pool timeouts, and PostgreSQL's connection-exception and shutdown codes.
    pub fn is_outage(&self) -> bool {
        let e = match self {
            StoreError::Database(e) => e,
            StoreError::Outage(_) => return true,
            _ => return false,
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Connection exceptions, operator intervention (shutdown), insufficient resources
            // (disk full, too many connections) and system errors: the server, not the write.
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                ["08", "57P", "53", "58"]
                    .iter()
                    .any(|class| c.starts_with(class))
            }),
            _ => false,
        }
    }

    /// Worth trying the same write again: an outage, a serialization failure or deadlock
    /// (the transaction lost a race and is meant to be rerun), or the batched writer shutting
    /// down. Anything else is the write itself being refused: a value the column cannot
    /// hold, a constraint, a bug. Retrying that would hold its job, and its prefetch slot,
    /// forever.
    pub fn is_retryable(&self) -> bool {
        if self.is_outage() || matches!(self, StoreError::Closed) {
            return true;
        }
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}

/// Free text as the store keeps it. Callers clean what they take in where it enters otpd; this
/// is the last guard, so that no text a column refuses (a NUL) or an unbounded one can turn a
/// job's commit into an error.
fn kept(s: &str) -> String {
    text::clean(s, text::MAX_DETAIL_CHARS)
}

/// A vendor's message id as the store keeps it (see [`kept`]).
fn kept_id(s: &str) -> String {
    text::clean(s, text::MAX_ID_CHARS)
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    hmac_key: Secret,
    writes: Arc<Writes>,
}

/// The batched writers of the hot path (`batch.rs`, `writes.rs`); their tasks end when the
/// last `Store` clone is dropped.
struct Writes {
    open: Batcher<open::OpenOp>,
    claim: Batcher<ClaimOp>,
    admit: Batcher<admission::AdmitOp>,
    start: Batcher<StartOp>,
    finish: Batcher<FinishOp>,
}

impl Store {
    /// Opens the pool lazily: start-up does not fail because PostgreSQL is briefly away, and
    /// `/readyz` reports it until it is back. Starts the batched writers' tasks, so it must be
    /// called within a tokio runtime.
    pub fn connect(settings: &DatabaseSettings, hmac_key: Secret) -> Result<Store, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect_lazy(settings.url.expose())?;
        let writes = Arc::new(Writes {
            open: Batcher::start(pool.clone()),
            claim: Batcher::start(pool.clone()),
            admit: Batcher::start(pool.clone()),
            start: Batcher::start(pool.clone()),
            finish: Batcher::start(pool.clone()),
        });
        Ok(Store {
            pool,
            hmac_key,
            writes,
        })
    }

    /// Creates the database if it does not exist, then applies pending migrations. Migrations
    /// take an advisory lock, so several instances starting together apply them once.
    pub async fn migrate(settings: &DatabaseSettings) -> Result<(), StoreError> {
        let url = settings.url.expose();
        if !sqlx::Postgres::database_exists(url).await? {
            sqlx::Postgres::create_database(url).await?;
        }
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        pool.close().await;
        Ok(())
    }

    /// A real round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The keyed HMAC of a destination: lets support find every delivery to one number or
    /// address without storing it. Email addresses are compared case-insensitively.
    pub fn destination_hmac(&self, destination: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.hmac_key.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(destination.to_lowercase().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// otpd's MAC on a fallback step it schedules, keyed like destinations: only otpd holds
    /// the key, so a step that verifies was scheduled by otpd for a job it had accepted.
    pub fn step_mac(&self, step: u8, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.hmac_key.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"otpd fallback step\0");
        mac.update(&[step, 0]);
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
