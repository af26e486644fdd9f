//! Read models for operators, over the store's database: one delivery with its timeline and
//! pages of deliveries (the admin API), and the delivery-health aggregates behind
//! `/v1/health/providers`, `/status` and `otpd report`. Nothing here writes, returns a
//! destination other than masked, or returns a code.

mod deliveries;
mod health;

pub use deliveries::{DeliveryFilter, DeliveryView, TimelineEntry};
pub use health::{MinuteCount, ProviderWindow, ReportRow};

use crate::store::Store;
use sqlx::PgPool;

/// The read models' handle: the store's pool, read only.
#[derive(Clone)]
pub struct Views {
    pool: PgPool,
}

impl Views {
    pub fn new(store: &Store) -> Views {
        Views {
            pool: store.pool().clone(),
        }
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
