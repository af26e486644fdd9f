//! The mixed run (`--mixed`): a bulk flood from one account beside interactive jobs from many,
//! to measure what lanes buy a person waiting for a login code.
//!
//! Three runs, each on an otpd of its own with limits off (one account sends the whole flood):
//! 1. bulk only: JOBS jobs on routing key `bulk.sms`, flat out, in a `bulk` lane;
//! 2. mixed with lanes: the same flood, and beside it interactive jobs on `sms` at RATE a
//!    second from distinct accounts, for as long as the bulk-only run took;
//! 3. mixed on one queue: the same again with no lanes, so both wait in one queue.
//!
//! It prints the bulk throughput of each and the interactive publish → provider latency.

use crate::load::{self, Target, Timeline};
use crate::{child, fake};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use otpd::config::{LaneSettings, Settings, StringList};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The bulk lane as docs/operations.md suggests it: a window wide enough to see the other
/// accounts' jobs behind one account's flood, a share of the call slots (`BENCH_BULK_IN_FLIGHT`,
/// default 200, of the shipped 2,000), half of them per account.
const BULK_LANE: [(&str, &str); 5] = [
    ("LIMITS__ENABLED", "false"),
    ("AMQP__ROUTING_KEYS", "*"),
    ("AMQP__LANES__BULK__ROUTING_KEYS", "bulk.*"),
    ("AMQP__LANES__BULK__PREFETCH", "20000"),
    ("AMQP__LANES__BULK__ACCOUNT_SHARE", "0.5"),
];
const BULK_IN_FLIGHT: &str = "AMQP__LANES__BULK__MAX_IN_FLIGHT";

fn bulk_in_flight() -> String {
    std::env::var("BENCH_BULK_IN_FLIGHT").unwrap_or_else(|_| "200".into())
}

/// The bench's own view of the lanes, to declare and remove the queues otpd will consume.
fn with_bulk_lane(s: &mut Settings) {
    s.amqp.routing_keys = StringList::from("*");
    let bulk = LaneSettings {
        routing_keys: StringList::from("bulk.*"),
        prefetch: 20_000,
        max_in_flight: bulk_in_flight()
            .parse()
            .expect("BENCH_BULK_IN_FLIGHT is a number"),
        account_share: 0.5,
    };
    s.amqp.lanes.insert("bulk".into(), bulk);
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    BulkOnly,
    Lanes,
    OneQueue,
}

/// What one run measured.
struct Outcome {
    bulk_rate: f64,
    bulk_secs: f64,
    interactive: Vec<u64>,
}

pub async fn run(conn: &Connection, bulk: usize, rate: u32) {
    let only = one(conn, Kind::BulkOnly, bulk, 0, rate).await;
    // As many interactive jobs as arrive at `rate` while the flood alone was being worked off.
    let n = ((only.bulk_secs * f64::from(rate)) as usize).max(20);
    let lanes = one(conn, Kind::Lanes, bulk, n, rate).await;
    let shared = one(conn, Kind::OneQueue, bulk, n, rate).await;
    println!(
        "\nmixed run: {bulk} bulk SMS jobs from one account flat out, {n} interactive ones from distinct accounts at {rate}/s beside them; bulk lane max_in_flight {}; provider answers at once, limits off",
        bulk_in_flight()
    );
    println!("| measure | bulk only, bulk lane | mixed, two lanes | mixed, one queue |");
    println!("|---|---|---|---|");
    println!(
        "| bulk throughput to a terminal event | {:.0} jobs/s | {:.0} jobs/s | {:.0} jobs/s |",
        only.bulk_rate, lanes.bulk_rate, shared.bulk_rate
    );
    println!(
        "| interactive publish → provider request p50 / p99 / max | | {} | {} |",
        load::fmt_pcts(&lanes.interactive),
        load::fmt_pcts(&shared.interactive)
    );
}

async fn one(conn: &Connection, kind: Kind, bulk: usize, interactive: usize, rate: u32) -> Outcome {
    let suffix = format!("{:x}m{}", std::process::id(), kind as u8);
    let total = bulk + interactive;
    let start = Instant::now();
    let fake = fake::new(start, Duration::ZERO, total);
    let provider = fake::serve(fake.clone()).await;
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let to = load::destinations(total);
    let body = |i: usize| match i < bulk {
        true => load::job_from(i, &to[i], &expires, "bulk-account"),
        false => load::job(i, &to[i], &expires),
    };

    let mut settings = child::settings(&suffix);
    let in_flight = bulk_in_flight();
    let mut extra = BULK_LANE.to_vec();
    extra.push((BULK_IN_FLIGHT, &in_flight));
    match kind {
        Kind::OneQueue => extra.truncate(1),
        _ => with_bulk_lane(&mut settings),
    }
    let (bulk_ch, interactive_ch) = (channel(conn).await, channel(conn).await);
    otpd::amqp::declare_topology(&bulk_ch, &settings.amqp)
        .await
        .unwrap();
    let timeline = Timeline::new(start, total);
    let (mut done, _) =
        load::collect_events(conn, &settings.amqp.events_exchange, timeline.clone()).await;
    let otpd = child::spawn(&suffix, &provider, 0, &extra).await;
    let target = |channel, routing_key| Target {
        channel,
        exchange: &settings.amqp.jobs_exchange,
        routing_key,
    };
    let flood = load::publish(
        target(&bulk_ch, "bulk.sms"),
        (0..bulk).map(|i| (i, body(i))),
        None,
        &timeline,
    );
    let steady = load::publish(
        target(&interactive_ch, "sms"),
        (bulk..total).map(|i| (i, body(i))),
        Some(rate),
        &timeline,
    );
    tokio::join!(flood, steady);
    load::wait_done(&mut done, total).await;
    child::stop(otpd).await;
    let _ = otpd::amqp::delete_topology(&bulk_ch, &settings.amqp).await;
    child::names(&suffix).drop_database().await;

    let at = |v: &[std::sync::atomic::AtomicU64], i: usize| v[i].load(Ordering::Relaxed);
    let last = (0..bulk).map(|i| at(&timeline.done, i)).max().unwrap_or(0);
    let bulk_secs = last.saturating_sub(at(&timeline.published, 0)) as f64 / 1e6;
    let arrived = |i: usize| fake.arrived[i].load(Ordering::Relaxed);
    Outcome {
        bulk_rate: bulk as f64 / bulk_secs,
        bulk_secs,
        interactive: load::latencies(&timeline, bulk..total, arrived),
    }
}

async fn channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}
