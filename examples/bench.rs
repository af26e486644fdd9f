//! The throughput benchmark (issue 6), run with
//! `cargo build --release && cargo run --release --example bench -- [JOBS] [PROVIDER_DELAY_MS]`.
//! With `BENCH_LIMITS=on` the shipped limit rules stay on (all but `prefix`, which the
//! consecutive numbers would trip by design), to measure the admission transaction's cost.
//!
//! It starts a fake Twilio on loopback that answers at once (or after a delay), runs the release
//! `otpd` binary as a child process on fresh queues and a fresh database, publishes JOBS jobs
//! (default 50,000; unique destinations, limits off), and measures jobs/s to a terminal event,
//! latency percentiles publish → provider request and publish → terminal event, and otpd's peak
//! RSS. In the same run it measures the ceiling: a bare lapin consumer that only acks the same
//! number of messages, and a batched (UNNEST) insert of as many audit rows.

use axum::extract::State;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PG: &str = "postgres://postgres@127.0.0.1:5432";
const SID: &str = "AC0123456789abcdef0123456789abcdef";

struct Fake {
    start: Instant,
    delay: Duration,
    /// Microseconds after `start` at which the request for job i arrived (0 = not yet).
    arrived: Vec<AtomicU64>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let delay_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let suffix = format!("{:x}", std::process::id());
    let start = Instant::now();
    let fake = Arc::new(Fake {
        start,
        delay: Duration::from_millis(delay_ms),
        arrived: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
    });
    let provider = serve_fake(fake.clone()).await;

    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let ack_ceiling = bare_ack_ceiling(&conn, &ch, jobs, &suffix).await;
    let insert_ceiling = insert_ceiling(jobs, &suffix).await;

    let settings = bench_settings(&suffix);
    otpd::amqp::declare_topology(&ch, &settings.amqp)
        .await
        .unwrap();
    let mut events = events_consumer(&conn, &settings.amqp.events_exchange).await;
    let mut child = spawn_otpd(&suffix, &provider);

    let published: Vec<AtomicU64> = (0..jobs).map(|_| AtomicU64::new(0)).collect();
    let t0 = Instant::now();
    publish_all(&ch, &settings.amqp.jobs_exchange, &published, start).await;
    let done = collect_terminal(&mut events, jobs, start).await;
    let elapsed = t0.elapsed();
    let rss_kib = peak_rss_kib(child.id());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    cleanup(&ch, &suffix).await;

    let to_provider = latencies(&published, |i| fake.arrived[i].load(Ordering::Relaxed));
    let to_terminal = latencies(&published, |i| done[i]);
    let rate = jobs as f64 / elapsed.as_secs_f64();
    let ceiling = ack_ceiling.min(insert_ceiling);
    println!(
        "\notpd benchmark: {jobs} SMS jobs through the Twilio client, provider delay {delay_ms} ms"
    );
    println!("| measure | value |\n|---|---|");
    println!("| otpd throughput (publish of first → last terminal event) | {rate:.0} jobs/s |");
    println!("| ceiling: bare consumer, ack only | {ack_ceiling:.0} msgs/s |");
    println!("| ceiling: batched UNNEST insert of audit rows | {insert_ceiling:.0} rows/s |");
    println!("| otpd / ceiling | {:.2} |", rate / ceiling);
    println!(
        "| publish → provider request p50 / p99 / max | {} |",
        fmt_pcts(&to_provider)
    );
    println!(
        "| publish → terminal event p50 / p99 / max | {} |",
        fmt_pcts(&to_terminal)
    );
    println!("| otpd peak RSS | {:.1} MiB |", rss_kib as f64 / 1024.0);
}

fn bench_settings(suffix: &str) -> otpd::config::Settings {
    let mut s = otpd::config::load(None).unwrap();
    s.amqp.jobs_exchange = format!("bench-{suffix}.jobs");
    s.amqp.jobs_queue = format!("bench-{suffix}.jobs");
    s.amqp.dead_letter_exchange = format!("bench-{suffix}.dlx");
    s.amqp.dead_letter_queue = format!("bench-{suffix}.dead");
    s.amqp.events_exchange = format!("bench-{suffix}.events");
    s
}

fn spawn_otpd(suffix: &str, provider: &str) -> std::process::Child {
    let limits_on = std::env::var("BENCH_LIMITS").is_ok_and(|v| v == "on");
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("otpd");
    let s = bench_settings(suffix);
    let mut child = Command::new(exe)
        .arg("run")
        .env("OTPD__AMQP__JOBS_EXCHANGE", &s.amqp.jobs_exchange)
        .env("OTPD__AMQP__JOBS_QUEUE", &s.amqp.jobs_queue)
        .env(
            "OTPD__AMQP__DEAD_LETTER_EXCHANGE",
            &s.amqp.dead_letter_exchange,
        )
        .env("OTPD__AMQP__DEAD_LETTER_QUEUE", &s.amqp.dead_letter_queue)
        .env("OTPD__AMQP__EVENTS_EXCHANGE", &s.amqp.events_exchange)
        .env("OTPD__DATABASE__URL", format!("{PG}/otpd_bench_{suffix}"))
        .env("OTPD__HTTP__LISTEN", "127.0.0.1:0")
        .env("OTPD__LIMITS__ENABLED", limits_on.to_string())
        .env("OTPD__LIMITS__RULES__PREFIX__ENABLED", "false")
        .env("OTPD__CHANNELS__SMS", "twilio")
        .env("OTPD__PROVIDERS__TWILIO__BASE_URL", provider)
        .env("OTPD__PROVIDERS__TWILIO__ACCOUNT_SID", SID)
        .env("OTPD__PROVIDERS__TWILIO__AUTH_TOKEN", "bench")
        .env("OTPD__PROVIDERS__TWILIO__SMS_FROM", "+15005550006")
        .env("OTPD__LOG__FILTER", "warn,otpd::intake=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("build the release binary first: cargo build --release");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("consuming jobs") {
            break;
        }
    }
    // Keep draining stderr so otpd never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

async fn serve_fake(fake: Arc<Fake>) -> String {
    async fn messages(
        State(f): State<Arc<Fake>>,
        body: String,
    ) -> (axum::http::StatusCode, &'static str) {
        let at = f.start.elapsed().as_micros() as u64;
        let code = url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "Body")
            .and_then(|(_, v)| v.split(' ').next().and_then(|c| c.parse::<usize>().ok()));
        if let Some(i) = code.filter(|i| *i < f.arrived.len()) {
            let _ = f.arrived[i].compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
        }
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        (axum::http::StatusCode::CREATED, r#"{"sid":"SMbench"}"#)
    }
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    let app = axum::Router::new()
        .route(&path, axum::routing::post(messages))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn job(i: usize, expires: &str) -> Vec<u8> {
    // The code carries the job's index so the fake provider can time its arrival; the number is
    // unique per job so no destination limit could bite.
    let to = format!("+1415{:07}", 2_000_000 + i);
    format!(
        r#"{{"version":1,"challenge_id":"b-{i}","account_id":"a-{i}","channel":"sms","to":"{to}","code":"{i:08}","expires_at":"{expires}"}}"#
    )
    .into_bytes()
}

async fn publish_all(ch: &Channel, exchange: &str, published: &[AtomicU64], start: Instant) {
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut pending = Vec::with_capacity(1000);
    for (i, at) in published.iter().enumerate() {
        at.store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        pending.push(
            ch.basic_publish(
                exchange.into(),
                "sms".into(),
                BasicPublishOptions::default(),
                &job(i, &expires),
                props.clone(),
            )
            .await
            .unwrap(),
        );
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    for c in pending {
        assert!(c.await.unwrap().is_ack());
    }
}

async fn collect_terminal(events: &mut lapin::Consumer, jobs: usize, start: Instant) -> Vec<u64> {
    let mut done = vec![0u64; jobs];
    let mut seen = 0;
    while seen < jobs {
        let d = tokio::time::timeout(Duration::from_secs(120), events.next())
            .await
            .expect("otpd stalled")
            .unwrap()
            .unwrap();
        let at = start.elapsed().as_micros() as u64;
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        let i: usize = v["challenge_id"].as_str().unwrap()[2..].parse().unwrap();
        if v["state"] != "accepted" && done[i] == 0 {
            done[i] = at;
            seen += 1;
        }
    }
    done
}

async fn events_consumer(conn: &Connection, exchange: &str) -> lapin::Consumer {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        "delivery.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        q.name().clone(),
        "bench".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// Publishes `jobs` persistent messages to a quorum queue, then times a consumer (same prefetch
/// as otpd's default) that only acks them.
async fn bare_ack_ceiling(conn: &Connection, ch: &Channel, jobs: usize, suffix: &str) -> f64 {
    let queue = format!("bench-{suffix}.ceiling");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut pending = Vec::new();
    for i in 0..jobs {
        pending.push(
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &job(i, &expires),
                props.clone(),
            )
            .await
            .unwrap(),
        );
    }
    for c in pending {
        c.await.unwrap();
    }
    let consumer_ch = conn.create_channel().await.unwrap();
    consumer_ch
        .basic_qos(64, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_ch
        .basic_consume(
            queue.as_str().into(),
            "ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    for _ in 0..jobs {
        let d = consumer.next().await.unwrap().unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let rate = jobs as f64 / t0.elapsed().as_secs_f64();
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    rate
}

/// Inserts `jobs` rows shaped like otpd's audit rows, 1,000 per UNNEST statement.
async fn insert_ceiling(jobs: usize, suffix: &str) -> f64 {
    let admin = sqlx::PgPool::connect(&format!("{PG}/test")).await.unwrap();
    let db = format!("otpd_bench_ceiling_{suffix}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&format!("{PG}/{db}")).await.unwrap();
    sqlx::query("CREATE TABLE e (id bigserial PRIMARY KEY, challenge_id text NOT NULL, at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL, state text)")
        .execute(&pool)
        .await
        .unwrap();
    let t0 = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|i| format!("b-{i}")).collect();
        sqlx::query("INSERT INTO e (challenge_id, kind, state) SELECT id, 'state', 'sent' FROM UNNEST($1::text[]) AS t(id)")
            .bind(&ids)
            .execute(&pool)
            .await
            .unwrap();
    }
    let rate = jobs as f64 / t0.elapsed().as_secs_f64();
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db}")))
        .execute(&admin)
        .await
        .unwrap();
    rate
}

async fn cleanup(ch: &Channel, suffix: &str) {
    let _ = otpd::amqp::delete_topology(ch, &bench_settings(suffix).amqp).await;
    let admin = sqlx::PgPool::connect(&format!("{PG}/test")).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS otpd_bench_{suffix} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn latencies(published: &[AtomicU64], at: impl Fn(usize) -> u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..published.len())
        .filter_map(|i| {
            let end = at(i);
            (end > 0).then(|| end.saturating_sub(published[i].load(Ordering::Relaxed)))
        })
        .collect();
    v.sort_unstable();
    v
}

fn fmt_pcts(sorted: &[u64]) -> String {
    if sorted.is_empty() {
        return "n/a".into();
    }
    let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!("{:.1} / {:.1} / {:.1} ms", p(0.5), p(0.99), p(1.0))
}
