//! A database of its own for tests that drive migrations or the store without a daemon.

use super::{drop_database, new_suffix, test_settings};
use otpd::config::Settings;
use sqlx::PgPool;

/// Runs `work` to completion on a thread and runtime of its own, for Drop, which cannot await.
pub(crate) fn on_own_runtime(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(work);
    });
    let _ = worker.join();
}

/// An empty database of its own, for a test that drives migrations or the store directly;
/// dropped with the value, also after a failed assertion.
pub struct ScratchDb {
    pub settings: Settings,
    pub pool: PgPool,
    suffix: String,
}

impl ScratchDb {
    pub async fn create() -> ScratchDb {
        use sqlx::migrate::MigrateDatabase;
        let suffix = new_suffix();
        let settings = test_settings(&suffix);
        sqlx::Postgres::create_database(settings.database.url.expose())
            .await
            .unwrap();
        let pool = PgPool::connect(settings.database.url.expose())
            .await
            .unwrap();
        ScratchDb {
            settings,
            pool,
            suffix,
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let suffix = self.suffix.clone();
        on_own_runtime(async move { drop_database(&suffix).await });
    }
}
