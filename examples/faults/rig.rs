//! One scenario's rig: a fresh database and fresh AMQP names, the fake provider, the `otpd`
//! binary as a child process (so it can be killed with SIGKILL), and the figures read back from
//! PostgreSQL, RabbitMQ and the fake.

use crate::fake::{Fake, SID_A, SID_B};
use crate::kit::child;
use crate::kit::names::Names;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use otpd::config::Settings;
use sqlx::PgPool;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const AMQP: &str = crate::kit::names::AMQP_URL;

pub struct Rig {
    pub suffix: String,
    names: Names,
    pub fake: Arc<Fake>,
    pub db: PgPool,
    pub http: SocketAddr,
    pub log: PathBuf,
    settings: Settings,
    env: Vec<(String, String)>,
    amqp: Option<(Connection, Channel)>,
    child: Option<Child>,
    pub starts: u32,
    /// Added to every job's JSON object after its own fields (e.g. `,"fallback":[…]`).
    pub job_extra: String,
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl Rig {
    /// Sets up a scenario for `jobs` jobs; `extra` are `OTPD__…` settings for otpd (without the
    /// prefix), layered over the suite's: limits off, SMS through provider `a`.
    pub async fn new(label: &str, jobs: usize, extra: &[(&str, &str)]) -> Rig {
        let suffix = format!("{label}-{:x}", std::process::id());
        let fake = crate::fake::new(jobs);
        let url = crate::fake::serve(fake.clone()).await;
        let names = Names::with_suffix("faults", &suffix);
        let settings = names.settings();
        let http = free_port();
        let mut env = names.env();
        env.extend([
            ("AMQP__RECONNECT_MAX_DELAY_MS".into(), "2000".into()),
            ("HTTP__LISTEN".into(), http.to_string()),
            ("LIMITS__ENABLED".into(), "false".into()),
            ("CHANNELS__SMS".into(), "a".into()),
            (
                "STORE__DESTINATION_HMAC_KEY".into(),
                "fault-suite-destination-hmac-key-0123456789".into(),
            ),
            ("LOG__FILTER".into(), "info".into()),
        ]);
        for (name, sid) in [("A", SID_A), ("B", SID_B)] {
            for (key, value) in [
                ("KIND", "twilio"),
                ("BASE_URL", url.as_str()),
                ("ACCOUNT_SID", sid),
                ("AUTH_TOKEN", "fault-suite"),
                ("SMS_FROM", "+15005550006"),
            ] {
                env.push((format!("PROVIDERS__{name}__{key}"), value.into()));
            }
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        otpd::store::Store::migrate(&settings.database)
            .await
            .expect("create the scenario's database");
        let db = PgPool::connect(&names.database_url("")).await.unwrap();
        let log = std::env::temp_dir().join(format!("otpd-faults-{suffix}.log"));
        File::create(&log).unwrap();
        let mut rig = Rig {
            suffix,
            names,
            fake,
            db,
            http,
            log,
            settings,
            env,
            amqp: None,
            child: None,
            starts: 0,
            job_extra: String::new(),
        };
        rig.connect().await;
        let ch = rig.channel();
        otpd::amqp::declare_topology(ch, &rig.settings.amqp)
            .await
            .unwrap();
        // A durable queue that collects every status event, so none is missed across a broker
        // restart; it is read once the scenario is over.
        let watch = rig.watch_queue();
        ch.queue_declare(
            watch.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            watch.as_str().into(),
            rig.settings.amqp.events_exchange.as_str().into(),
            "delivery.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        rig
    }

    pub fn watch_queue(&self) -> String {
        format!("faults-{}.watch", self.suffix)
    }

    pub fn jobs_queue(&self) -> &str {
        &self.settings.amqp.jobs_queue
    }

    pub fn dead_queue(&self) -> &str {
        &self.settings.amqp.dead_letter_queue
    }

    /// (Re)opens the rig's own broker connection, with publisher confirms.
    pub async fn connect(&mut self) {
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        self.amqp = Some((conn, ch));
    }

    pub fn channel(&self) -> &Channel {
        &self.amqp.as_ref().expect("connected").1
    }

    /// Publishes jobs `range` (persistent, confirmed) with codes valid for `ttl`; returns
    /// their `expires_at` in Unix microseconds.
    pub async fn publish(&self, range: Range<usize>, ttl: Duration) -> u64 {
        let expires = chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap();
        self.publish_until(range, expires).await
    }

    /// Publishes jobs `range` with codes that expire at `expires`.
    pub async fn publish_until(
        &self,
        range: Range<usize>,
        expires: chrono::DateTime<chrono::Utc>,
    ) -> u64 {
        let expires_s = expires.to_rfc3339();
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let ch = self.channel();
        let mut pending = Vec::with_capacity(1000);
        for i in range {
            let body = job(i, &expires_s, &self.job_extra);
            let confirm = ch
                .basic_publish(
                    self.settings.amqp.jobs_exchange.as_str().into(),
                    "sms".into(),
                    BasicPublishOptions::default(),
                    &body,
                    props.clone(),
                )
                .await
                .unwrap();
            pending.push(confirm);
            if pending.len() == 1000 {
                for c in pending.drain(..) {
                    assert!(c.await.unwrap().is_ack(), "the broker confirms each job");
                }
            }
        }
        for c in pending {
            assert!(c.await.unwrap().is_ack(), "the broker confirms each job");
        }
        expires.timestamp_micros() as u64
    }

    /// Starts otpd; its log is appended to `self.log`.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "otpd is already running");
        let exe = child::beside_examples();
        let log = OpenOptions::new().append(true).open(&self.log).unwrap();
        let mut cmd = child::command(&exe, &self.env);
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(child::spawn(cmd, &exe));
        self.starts += 1;
    }

    /// SIGKILL: no drain, no release, no goodbye to the broker or the database.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// SIGTERM, as systemd stops it; returns how long the drain took.
    pub async fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        if let Some(mut otpd) = self.child.take() {
            child::stop(&mut otpd, Duration::from_secs(30)).await;
        }
        t0.elapsed()
    }

    /// otpd's resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        child::status_kib(pid, "VmRSS:")
    }

    /// Whether otpd exited by itself (it must not).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Challenges in a terminal state (committed; their events are confirmed before their
    /// jobs are acked).
    pub async fn finished(&self) -> Option<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM deliveries
              WHERE state IN ('sent','failed','expired','rate_limited','rejected')",
        )
        .fetch_one(&self.db)
        .await
        .ok()
    }

    /// Jobs handled so far: terminal commits, plus copies of finished challenges recorded as
    /// `duplicate` (a redelivery after an outage is handled without a new commit).
    pub async fn handled(&self) -> Option<i64> {
        let duplicates: i64 =
            sqlx::query_scalar("SELECT count(*) FROM delivery_events WHERE kind = 'duplicate'")
                .fetch_one(&self.db)
                .await
                .ok()?;
        Some(self.finished().await? + duplicates)
    }

    /// Waits (polling, bounded by `limit`) until `n` challenges are finished and the jobs queue
    /// is empty (its count includes unacked messages): every copy was acked, so every terminal
    /// event was confirmed.
    pub async fn wait_done(&mut self, n: i64, limit: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(status) = self.exited() {
                return Err(format!("otpd exited by itself: {status}"));
            }
            let done = matches!(self.finished().await, Some(f) if f >= n);
            if done && queue_depth(self.jobs_queue()).await == Some(0) {
                return Ok(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let finished = self.finished().await;
        Err(format!(
            "not done after {limit:?}: finished {finished:?} of {n}"
        ))
    }

    /// Waits until at least `n` challenges are finished.
    pub async fn wait_finished(&self, n: i64, limit: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if matches!(self.finished().await, Some(f) if f >= n) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("fewer than {n} finished after {limit:?}"))
    }

    /// `/readyz`: status code and body, or None if otpd does not answer.
    pub async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let r = reqwest::get(format!("http://{}/readyz", self.http))
            .await
            .ok()?;
        Some((r.status().as_u16(), r.json().await.ok()?))
    }

    /// Deletes the scenario's queues, exchanges and database. If the scenario failed, first
    /// prints otpd's warnings and the end of its log: CI keeps nothing else of a failed run.
    pub async fn cleanup(mut self, failed: bool) {
        self.stop().await;
        if failed {
            self.print_log_tail();
        }
        let ch = self.channel();
        let _ = otpd::amqp::delete_topology(ch, &self.settings.amqp).await;
        let _ = ch
            .queue_delete(
                self.watch_queue().as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
        self.db.close().await;
        self.names.drop_database().await;
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Rig {
    /// Up to 40 WARN or ERROR lines of otpd's log, then its last 40 lines, on stderr.
    fn print_log_tail(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let loud: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        eprintln!(
            "[faults] otpd's log: {} lines, {} WARN or ERROR; the first 40 of those:",
            lines.len(),
            loud.len()
        );
        for l in loud.iter().take(40) {
            eprintln!("  {l}");
        }
        eprintln!("[faults] the last 40 lines of otpd's log:");
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("  {l}");
        }
    }
}

/// Messages in a queue, ready and unacknowledged together (`rabbitmqctl`, since AMQP's passive
/// declare counts only the ready ones).
pub async fn queue_depth(queue: &str) -> Option<u64> {
    queue_stat(queue, "messages").await
}

/// One `rabbitmqctl list_queues` column of one queue.
pub async fn queue_stat(queue: &str, column: &str) -> Option<u64> {
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name", column])
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next()? == queue).then(|| cols.next()?.parse().ok())?
    })
}

/// Job `i`: its code is its index, so the fake counts sends per challenge; destinations and
/// accounts are distinct.
pub fn job(i: usize, expires: &str, extra: &str) -> Vec<u8> {
    let to = format!("+1415{:07}", 2_000_000 + i);
    format!(
        r#"{{"version":1,"challenge_id":"f-{i}","account_id":"a-{i}","channel":"sms","to":"{to}","code":"{i:08}","expires_at":"{expires}"{extra}}}"#
    )
    .into_bytes()
}
