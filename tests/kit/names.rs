//! Names of a run's own: its exchanges, queues and database, so that runs go in parallel and
//! leave nothing behind. Every harness names things the same way, `<prefix>-<suffix>.jobs`
//! and `otpd_<prefix>_<suffix>`.

use otpd::config::Settings;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// Where databases are created and dropped from: the `postgres` maintenance database, or
/// whatever `OTPD_TEST_ADMIN_URL` names.
pub fn pg_admin_url() -> String {
    std::env::var("OTPD_TEST_ADMIN_URL").unwrap_or_else(|_| format!("{PG_URL}/postgres"))
}

/// A run's names: `prefix` says which harness (`t`, `bench`, `faults`), `suffix` which run.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: &'static str,
    pub suffix: String,
}

impl Names {
    /// Names with a fresh random suffix.
    pub fn new(prefix: &'static str) -> Names {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Names { prefix, suffix }
    }

    pub fn with_suffix(prefix: &'static str, suffix: &str) -> Names {
        Names {
            prefix,
            suffix: suffix.to_string(),
        }
    }

    fn amqp(&self, what: &str) -> String {
        format!("{}-{}.{what}", self.prefix, self.suffix)
    }

    /// The database's name: lower case, with `-` turned to `_`, so it needs no quoting.
    pub fn database(&self) -> String {
        format!("otpd_{}_{}", self.prefix, self.suffix).replace('-', "_")
    }

    /// The database's URL; `query`, if not empty, is appended (`sslmode=disable`).
    pub fn database_url(&self, query: &str) -> String {
        match query.is_empty() {
            true => format!("{PG_URL}/{}", self.database()),
            false => format!("{PG_URL}/{}?{query}", self.database()),
        }
    }

    /// Puts the run's names into `s`.
    pub fn apply(&self, s: &mut Settings) {
        s.amqp.url = AMQP_URL.into();
        s.amqp.jobs_exchange = self.amqp("jobs");
        s.amqp.jobs_queue = self.amqp("jobs");
        s.amqp.dead_letter_exchange = self.amqp("jobs.dlx");
        s.amqp.dead_letter_queue = self.amqp("jobs.dead");
        s.amqp.events_exchange = self.amqp("events");
        s.database.url = self.database_url("").as_str().into();
    }

    /// The shipped defaults (and any `OTPD__` variable set) with the run's names.
    pub fn settings(&self) -> Settings {
        let mut s = otpd::config::load(None).expect("the defaults and OTPD__ variables load");
        self.apply(&mut s);
        s
    }

    /// The same names as settings for a child otpd: `OTPD__` variables without the prefix.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AMQP__URL", AMQP_URL.to_string()),
            ("AMQP__JOBS_EXCHANGE", self.amqp("jobs")),
            ("AMQP__JOBS_QUEUE", self.amqp("jobs")),
            ("AMQP__DEAD_LETTER_EXCHANGE", self.amqp("jobs.dlx")),
            ("AMQP__DEAD_LETTER_QUEUE", self.amqp("jobs.dead")),
            ("AMQP__EVENTS_EXCHANGE", self.amqp("events")),
            ("DATABASE__URL", self.database_url("")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates the database (empty: otpd or the caller migrates it).
    pub async fn create_database(&self) {
        let admin = sqlx::PgPool::connect(&pg_admin_url()).await.unwrap();
        let sql = format!("CREATE DATABASE {}", self.database());
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    }

    /// Removes the run's exchanges, queues and database; best effort, so that it can run after
    /// a failure.
    pub async fn cleanup(&self) {
        use lapin::{Connection, ConnectionProperties};
        if let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
            if let Ok(ch) = conn.create_channel().await {
                let _ = otpd::amqp::delete_topology(&ch, &self.settings().amqp).await;
            }
            let _ = conn.close(200, "cleanup".into()).await;
        }
        self.drop_database().await;
    }

    pub async fn drop_database(&self) {
        if let Ok(pool) = sqlx::PgPool::connect(&pg_admin_url()).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database());
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }
}
