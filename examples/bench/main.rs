//! The throughput benchmark (docs/performance.md):
//!
//! ```sh
//! cargo build --profile dist --examples --bins
//! ./target/dist/examples/bench [JOBS] [PROVIDER_DELAY_MS] [--paced N] [--rate R]
//! ./target/dist/examples/bench JOBS --mixed RATE
//! ./target/dist/examples/bench JOBS --health
//! ```
//!
//! `--mixed RATE` runs only the lane comparison of `mixed.rs` instead: JOBS bulk jobs from one
//! account, with interactive jobs at RATE a second beside them. `--health` times only the
//! delivery-health check over JOBS messages in its window (`health.rs`).
//!
//! It starts a fake Twilio on loopback that answers at once (or after PROVIDER_DELAY_MS), then:
//! 1. measures the ceiling: a bare lapin consumer that only acks JOBS messages (otpd's prefetch,
//!    consuming while they are published), and a batched UNNEST insert of as many audit rows;
//!    and the same-work floor: a bare consumer doing per job what otpd does with the broker and
//!    the database (two commits, two confirmed events, an ack) and nothing else (`floor.rs`);
//! 2. runs the release `otpd` binary as a child process on fresh queues and a fresh database,
//!    with the shipped configuration (limits on; destinations, accounts and client IPs spread so
//!    that no limit bites), publishes JOBS jobs (default 50,000) flat out and times them to
//!    their terminal events;
//! 3. publishes N more (default 10,000) at R jobs/s (default 1,000) to the same otpd;
//!
//! and prints one table: throughput, latency percentiles publish → provider request and
//! publish → terminal event for both runs, otpd's peak RSS and the ratio to the ceiling. Any
//! `OTPD__` variable set for the bench reaches the child too (e.g. `OTPD__AMQP__PREFETCH`), and
//! `BENCH_PG_QUERY` is appended to the measured database URLs (e.g. `sslmode=disable`).
//! `BENCH_TIMELINE=path.csv` writes every job's publish, provider and terminal times, to find
//! when a stall happened. It removes its queues and database.

mod ceiling;
mod child;
mod fake;
mod floor;
mod health;
#[path = "../../tests/kit/mod.rs"]
mod kit;
mod load;
mod mixed;

use lapin::options::ConfirmSelectOptions;
use lapin::{Connection, ConnectionProperties};
use load::{Target, Timeline};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const AMQP: &str = kit::names::AMQP_URL;

struct Args {
    jobs: usize,
    delay_ms: u64,
    paced: usize,
    rate: u32,
    mixed: Option<u32>,
    health: bool,
}

fn args() -> Args {
    let mut a = Args {
        jobs: 50_000,
        delay_ms: 0,
        paced: 10_000,
        rate: 1_000,
        mixed: None,
        health: false,
    };
    let mut positional = 0;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> u64 { it.next().and_then(|v| v.parse().ok()).expect("a number") };
        match arg.as_str() {
            "--paced" => a.paced = value() as usize,
            "--rate" => a.rate = value() as u32,
            "--mixed" => a.mixed = Some(value() as u32),
            "--health" => a.health = true,
            n => {
                let n: u64 = n.parse().expect("JOBS and PROVIDER_DELAY_MS are numbers");
                match positional {
                    0 => a.jobs = n as usize,
                    _ => a.delay_ms = n,
                }
                positional += 1;
            }
        }
    }
    a
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args();
    if a.health {
        health::run(a.jobs).await;
        return;
    }
    if let Some(rate) = a.mixed {
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .unwrap();
        mixed::run(&conn, a.jobs, rate).await;
        return;
    }
    let total = a.jobs + a.paced;
    let suffix = format!("{:x}", std::process::id());
    let start = Instant::now();
    let started = chrono::Utc::now();
    let fake = fake::new(start, Duration::from_millis(a.delay_ms), total);
    let provider = fake::serve(fake.clone()).await;
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let to = load::destinations(total);
    let bodies: Vec<Vec<u8>> = (0..total).map(|i| load::job(i, &to[i], &expires)).collect();

    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let settings = child::settings(&suffix);
    let broker_ceiling =
        ceiling::broker(&conn, &ch, &bodies[..a.jobs], settings.amqp.prefetch).await;
    let insert_ceiling = ceiling::database(a.jobs).await;
    let floor = floor::same_work(&conn, &ch, &bodies[..a.jobs], settings.amqp.prefetch).await;

    otpd::amqp::declare_topology(&ch, &settings.amqp)
        .await
        .unwrap();
    let timeline = Timeline::new(start, total);
    let (mut done, states) =
        load::collect_events(&conn, &settings.amqp.events_exchange, timeline.clone()).await;
    let otpd = child::spawn(&suffix, &provider, a.delay_ms, &[]).await;
    let pid = otpd.id().expect("otpd is running");
    let target = || Target {
        channel: &ch,
        exchange: &settings.amqp.jobs_exchange,
        routing_key: "sms",
    };
    let jobs = |range: std::ops::Range<usize>| range.map(|i| (i, bodies[i].clone()));

    let t0 = Instant::now();
    let cpu0 = child::cpu_ms(pid);
    load::publish(target(), jobs(0..a.jobs), None, &timeline).await;
    load::wait_done(&mut done, a.jobs).await;
    let full_rate = a.jobs as f64 / t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let cpu1 = child::cpu_ms(pid);
    load::publish(target(), jobs(a.jobs..total), Some(a.rate), &timeline).await;
    load::wait_done(&mut done, total).await;
    let paced_rate = a.paced as f64 / t1.elapsed().as_secs_f64();
    let cpu2 = child::cpu_ms(pid);
    // CPU µs per job: otpd's own, and the machine's (broker, database, bench and fake too).
    let per_job = |from: (u64, u64), to: (u64, u64), n: usize| {
        let us = |a: u64, b: u64| (b - a) as f64 * 1000.0 / n.max(1) as f64;
        format!("{:.0} / {:.0} µs", us(from.0, to.0), us(from.1, to.1))
    };

    let rss_kib = child::peak_rss_kib(pid);
    child::stop(otpd).await;
    child::cleanup(&suffix).await;

    let arrived = |i: usize| fake.arrived[i].load(Ordering::Relaxed);
    let finished = |i: usize| timeline.done[i].load(Ordering::Relaxed);
    let pcts = |range: std::ops::Range<usize>, at: &dyn Fn(usize) -> u64| {
        load::fmt_pcts(&load::latencies(&timeline, range, at))
    };
    if let Ok(path) = std::env::var("BENCH_TIMELINE") {
        load::write_timeline(&path, started, &timeline, arrived).expect("writing the timeline");
    }
    let ceiling = broker_ceiling.min(insert_ceiling);
    println!(
        "\notpd benchmark: SMS jobs through the Twilio client, provider delay {} ms, prefetch {}, limits {}",
        a.delay_ms,
        settings.amqp.prefetch,
        if settings.limits.enabled { "on" } else { "off" }
    );
    println!("| measure | full speed | {} jobs/s offered |", a.rate);
    println!("|---|---|---|");
    println!("| jobs | {} | {} |", a.jobs, a.paced);
    println!("| throughput to a terminal event | {full_rate:.0} jobs/s | {paced_rate:.0} jobs/s |");
    println!(
        "| publish → provider request p50 / p99 / max | {} | {} |",
        pcts(0..a.jobs, &arrived),
        pcts(a.jobs..total, &arrived)
    );
    println!(
        "| publish → terminal event p50 / p99 / max | {} | {} |",
        pcts(0..a.jobs, &finished),
        pcts(a.jobs..total, &finished)
    );
    println!(
        "| CPU per job: otpd / whole machine | {} | {} |",
        per_job(cpu0, cpu1, a.jobs),
        per_job(cpu1, cpu2, a.paced)
    );
    println!("| terminal states | {:?} | |", states.lock().unwrap());
    println!("| ceiling: bare consumer, ack only | {broker_ceiling:.0} msgs/s | |");
    println!("| ceiling: batched UNNEST insert of audit rows | {insert_ceiling:.0} rows/s | |");
    println!(
        "| same-work floor: a bare consumer doing otpd's broker and database work per job | {floor:.0} jobs/s | |"
    );
    println!(
        "| otpd ÷ ceiling / otpd ÷ same-work floor | {:.2} / {:.2} | |",
        full_rate / ceiling,
        full_rate / floor
    );
    println!("| otpd peak RSS | {:.1} MiB | |", rss_kib as f64 / 1024.0);
}
