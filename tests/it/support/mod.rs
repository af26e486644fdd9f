//! The test harness: `spawn_app` runs a real otpd against the real RabbitMQ and PostgreSQL on
//! this machine, with a database and AMQP names of its own so that tests run in parallel, and
//! removes both when the test ends, passed or failed.

pub mod hostile;
pub mod scratch;
pub mod smsc;
pub mod smtp;

use scratch::on_own_runtime;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use otpd::app::App;
use otpd::config::{self, Settings};
use otpd::intake::Report;
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::kit::names::AMQP_URL;
use crate::kit::names::Names;
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The destination HMAC key of every test otpd, in process or not: real providers refuse the
/// public development key, and two instances must hash destinations alike.
pub const HMAC_KEY: &str = "test-only-destination-hmac-key-0123456789";
/// How long a test waits for a signal before failing; a bound, not a synchronisation.
pub const PATIENCE: Duration = Duration::from_secs(30);

type Overrides = Box<dyn Fn(&mut Settings) + Send + Sync>;

pub struct TestApp {
    pub suffix: String,
    pub db: PgPool,
    pub http: std::net::SocketAddr,
    overrides: Overrides,
    reports: broadcast::Receiver<Report>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
    channel: Channel,
    _connection: Connection,
    events: lapin::Consumer,
}

/// Settings for one test: unique names, fast retries, port 0 for HTTP.
pub fn test_settings(suffix: &str) -> Settings {
    let mut s = config::load(None).expect("the shipped defaults load");
    names(suffix).apply(&mut s);
    s.database.max_connections = 4;
    s.store.destination_hmac_key = HMAC_KEY.into();
    s.http.listen = "127.0.0.1:0".parse().unwrap();
    s.retry.initial_delay_ms = 5;
    s.retry.max_delay_ms = 20;
    s.retry.expiry_margin_ms = 1000;
    s.retry.attempt_timeout_ms = 5000;
    s.shutdown.drain_timeout_ms = 5000;
    s
}

impl TestApp {
    /// Starts otpd with the test settings changed by `overrides`.
    pub async fn spawn(overrides: impl Fn(&mut Settings) + Send + Sync + 'static) -> TestApp {
        let suffix = new_suffix();
        let overrides: Overrides = Box::new(overrides);
        let settings = settings_for(&suffix, &overrides);
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        otpd::amqp::declare_topology(&channel, &settings.amqp)
            .await
            .unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let events = events_consumer(&connection, &settings.amqp.events_exchange).await;
        let (app, token) = build(settings).await;
        let db = PgPool::connect(&names(&suffix).database_url(""))
            .await
            .unwrap();
        let mut test = TestApp {
            suffix,
            db,
            http: app.http_addr(),
            overrides,
            reports: app.subscribe(),
            running: None,
            channel,
            _connection: connection,
            events,
        };
        test.running = Some((
            token.clone(),
            tokio::spawn(app.run(token, TaskTracker::new())),
        ));
        test
    }

    /// Stops otpd gracefully (as SIGTERM does) and waits until it has.
    pub async fn stop(&mut self) {
        if let Some((token, handle)) = self.running.take() {
            token.cancel();
            handle.await.unwrap();
        }
    }

    /// Starts a fresh otpd process on the same database and queues.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "stop first");
        let (app, token) = build(settings_for(&self.suffix, &self.overrides)).await;
        self.reports = app.subscribe();
        self.running = Some((
            token.clone(),
            tokio::spawn(app.run(token, TaskTracker::new())),
        ));
    }

    pub fn settings(&self) -> Settings {
        settings_for(&self.suffix, &self.overrides)
    }

    /// Publishes a job as an identity service would: persistent JSON, routing key = channel.
    pub async fn publish(&self, job: &Value) {
        let key = job["channel"].as_str().unwrap_or("sms").to_string();
        self.publish_raw(serde_json::to_vec(job).unwrap(), &key)
            .await;
    }

    pub async fn publish_raw(&self, body: Vec<u8>, routing_key: &str) {
        self.publish_with(&body, routing_key, BasicProperties::default())
            .await;
    }

    /// Publishes with extra properties (headers, type), persistent JSON as always.
    pub async fn publish_with(&self, body: &[u8], routing_key: &str, props: BasicProperties) {
        let props = props
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let exchange = format!("t-{}.jobs", self.suffix);
        let confirm = self
            .channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// Starts another otpd as a separate process of the built binary, on this test's database
    /// and queues, with `env` (`OTPD__` variables without the prefix) on top. It is killed
    /// when the handle is dropped.
    pub fn spawn_process(&self, env: &[(&str, &str)]) -> tokio::process::Child {
        self.process(env).spawn().expect("the otpd binary starts")
    }

    /// This test's settings for another otpd process: `OTPD__` variables without the prefix.
    pub fn settings_env(&self) -> Vec<(String, String)> {
        let mut base = names(&self.suffix).env();
        base.extend(
            [
                ("DATABASE__MAX_CONNECTIONS", "4".to_string()),
                ("HTTP__LISTEN", "127.0.0.1:0".to_string()),
                ("STORE__DESTINATION_HMAC_KEY", HMAC_KEY.to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        base
    }

    /// The command [`TestApp::spawn_process`] runs, for a caller to add to before spawning.
    pub fn process(&self, env: &[(&str, &str)]) -> tokio::process::Command {
        let mut base = self.settings_env();
        base.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        crate::kit::child::command(std::path::Path::new(env!("CARGO_BIN_EXE_otpd")), &base)
    }

    /// Waits (polling the broker, bounded) until the jobs queue has `n` consumers.
    pub async fn wait_for_consumers(&self, n: u32) {
        let queue = format!("t-{}.jobs", self.suffix);
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let q = self
                .channel
                .queue_declare(queue.as_str().into(), opts, FieldTable::default())
                .await
                .unwrap();
            if q.consumer_count() >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} consumers in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The report for `challenge_id`, skipping reports about other jobs.
    pub async fn report_for(&mut self, challenge_id: &str) -> Report {
        loop {
            let report = self.next_report().await;
            if report.challenge_id.as_deref() == Some(challenge_id) {
                return report;
            }
        }
    }

    pub async fn next_report(&mut self) -> Report {
        tokio::time::timeout(PATIENCE, self.reports.recv())
            .await
            .expect("a job was handled in time")
            .expect("reports flow")
    }

    /// The next status event for `challenge_id`, in publication order.
    pub async fn event_for(&mut self, challenge_id: &str) -> Value {
        self.event_where(|key, event| {
            key.starts_with("delivery.") && event["challenge_id"] == challenge_id
        })
        .await
    }

    /// The next event (status or alert) for which `pred(routing key, event)` holds; the
    /// others are consumed and dropped. Status events must carry their state's routing key.
    pub async fn event_where(&mut self, pred: impl Fn(&str, &Value) -> bool) -> Value {
        loop {
            let delivery = tokio::time::timeout(PATIENCE, self.events.next())
                .await
                .expect("an event in time")
                .unwrap()
                .unwrap();
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            let event: Value = serde_json::from_slice(&delivery.data).unwrap();
            let key = delivery.routing_key.as_str();
            if key.starts_with("delivery.") {
                assert_eq!(
                    key,
                    format!("delivery.{}", event["state"].as_str().unwrap())
                );
                // Every status event a test sees is held to the published schema.
                let errors: Vec<String> = event_schema()
                    .iter_errors(&event)
                    .map(|e| format!("{} at {}", e, e.instance_path))
                    .collect();
                assert!(errors.is_empty(), "{event}: {errors:?}");
            }
            if pred(key, &event) {
                return event;
            }
        }
    }

    /// Takes one message from the dead-letter queue, if any.
    pub async fn dead_letter(&self) -> Option<lapin::message::BasicGetMessage> {
        let queue = format!("t-{}.jobs.dead", self.suffix);
        self.channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn state_of(&self, challenge_id: &str) -> (String, i32, Option<String>) {
        sqlx::query_as("SELECT state, attempt, reason FROM deliveries WHERE challenge_id = $1")
            .bind(challenge_id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

/// docs/event-v1.schema.json, compiled once.
fn event_schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = include_str!("../../../docs/event-v1.schema.json");
        let schema: Value = serde_json::from_str(text).expect("the event schema is JSON");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the event schema compiles")
    })
}

fn settings_for(suffix: &str, overrides: &Overrides) -> Settings {
    let mut s = test_settings(suffix);
    overrides(&mut s);
    s
}

async fn build(settings: Settings) -> (App, CancellationToken) {
    let token = CancellationToken::new();
    let app = App::build(settings, token.clone())
        .await
        .expect("otpd starts");
    (app, token)
}

async fn events_consumer(connection: &Connection, exchange: &str) -> lapin::Consumer {
    let ch = connection.create_channel().await.unwrap();
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("".into(), opts, FieldTable::default())
        .await
        .unwrap();
    for key in ["delivery.#", "alert.#"] {
        ch.queue_bind(
            q.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_consume(
        q.name().clone(),
        "events".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

impl Drop for TestApp {
    /// Removes the test's queues, exchanges and database, also after a failed assertion. It
    /// runs on its own thread and runtime because Drop cannot await.
    fn drop(&mut self) {
        if let Some((token, _)) = &self.running {
            token.cancel();
        }
        let suffix = self.suffix.clone();
        on_own_runtime(async move { cleanup(&suffix).await });
    }
}

async fn cleanup(suffix: &str) {
    names(suffix).cleanup().await;
}

/// One test's names: `t-<suffix>.jobs`, `otpd_t_<suffix>` (the kit's, as the bench's).
fn names(suffix: &str) -> Names {
    Names::with_suffix("t", suffix)
}

/// A fresh suffix for one test's database (`otpd_t_<suffix>`) and AMQP names.
pub(crate) fn new_suffix() -> String {
    Names::new("t").suffix
}

pub(crate) async fn drop_database(suffix: &str) {
    names(suffix).drop_database().await;
}

/// Settings that send SMS and voice through the fake Twilio at `server`.
pub fn twilio(server: &wiremock::MockServer) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    twilio_at(server.uri())
}

/// Settings that send SMS and voice through a fake Twilio at `base`.
pub fn twilio_at(base: String) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    move |s| {
        s.channels.sms = "twilio".into();
        s.channels.voice = "twilio".into();
        let t = s.providers.twilio_mut("twilio");
        t.base_url = base.clone();
        t.account_sid = ACCOUNT_SID.into();
        t.auth_token = "test-token".into();
        t.sms_from = "+15005550006".into();
        t.voice_from = "+15005550007".into();
    }
}

/// The fake Twilio's answer to a message or call it accepted, with `sid` as its id.
pub fn created(sid: &str) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(201)
        .set_body_json(serde_json::json!({ "sid": sid, "status": "queued" }))
}

/// A fake provider's answer that also signals when each request arrived.
pub struct Signal(
    pub tokio::sync::mpsc::UnboundedSender<std::time::Instant>,
    pub wiremock::ResponseTemplate,
);

impl wiremock::Respond for Signal {
    fn respond(&self, _: &wiremock::Request) -> wiremock::ResponseTemplate {
        let _ = self.0.send(std::time::Instant::now());
        self.1.clone()
    }
}

/// A valid job with a fresh challenge_id, expiring in five minutes.
pub fn job(channel: &str, to: &str, code: &str) -> Value {
    serde_json::json!({
        "version": 1,
        "challenge_id": format!("ch-{}", uuid::Uuid::new_v4().simple()),
        "account_id": format!("acct-{}", uuid::Uuid::new_v4().simple()),
        "channel": channel,
        "to": to,
        "code": code,
        "expires_at": (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339(),
        "metadata": {"purpose": "login"},
    })
}

/// The code's remaining life, in whole seconds, as a provider may have been told it: the
/// bounds are the job's expiry seen from `before` its publish and from `after` its report.
pub fn life_window(
    job: &Value,
    before: chrono::DateTime<chrono::Utc>,
    after: chrono::DateTime<chrono::Utc>,
) -> std::ops::RangeInclusive<u64> {
    let expires_at = chrono::DateTime::parse_from_rfc3339(job["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let secs = |from: chrono::DateTime<chrono::Utc>| (expires_at - from).num_seconds() as u64;
    secs(after).saturating_sub(1)..=secs(before)
}

/// Runs an `otpd` command (not `run`) of the built binary against this test's database and
/// returns its exit status and standard output.
pub async fn cli(suffix: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .args(args)
        .env("OTPD__DATABASE__URL", names(suffix).database_url(""))
        .env("OTPD__LOG__FILTER", "warn")
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .expect("the otpd binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.len() < 4000, "otpd {args:?} wrote: {stderr}");
    (out.status, stdout)
}

pub fn id(job: &Value) -> String {
    job["challenge_id"].as_str().unwrap().to_string()
}

/// The example's provider `name`, pointed at `base` with `secrets`.
pub fn provider_example(
    file: &str,
    name: &str,
    base: &str,
    secrets: &[(&str, &str)],
) -> otpd::config::ProviderConfig {
    let path = format!(
        "{}/docs/examples/providers/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    // A real provider needs a key of its own (the development key is refused with one).
    let toml = std::fs::read_to_string(path).unwrap()
        + &format!("\n[store]\ndestination_hmac_key = \"{HMAC_KEY}\"\n");
    let mut s = otpd::config::load_from_str(&toml).unwrap();
    let Some(otpd::config::ProviderConfig::Http(mut h)) = s.providers.0.remove(name) else {
        panic!("{file} has no http provider {name}")
    };
    h.url = h
        .url
        .replace("https://rest.nexmo.com", base)
        .replace("https://api.plivo.com", base);
    for (k, v) in secrets {
        h.secrets
            .insert(k.to_string(), otpd::config::Secret::from(*v));
    }
    otpd::config::ProviderConfig::Http(h)
}
