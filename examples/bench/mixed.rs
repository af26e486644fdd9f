//! The mixed run (`--mixed`): a bulk flood from one account beside interactive jobs from many,
//! to measure what lanes buy a person waiting for a login code.
//!
//! Five runs, each on an otpd of its own with limits off (one account sends the whole flood):
//! 1. bulk only: JOBS jobs on routing key `bulk.sms`, flat out, in a `bulk` lane;
//! 2. mixed with lanes: the same flood, and beside it interactive jobs on `sms` at RATE a
//!    second from distinct accounts, for as long as the bulk-only run took;
//! 3. mixed on one queue: the same again with no lanes, so both wait in one queue;
//! 4. fair share: JOBS/2 jobs from one account in the bulk lane, then 50 from a second
//!    account, with the lane's `account_share` 0.5 and again with 1 (round-robin alone).
//!
//! It prints the bulk throughput of each, the interactive publish → provider latency, and the
//! second account's.

use crate::load::{self, Target, Timeline};
use crate::{child, fake};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use otpd::config::{LaneSettings, Settings, StringList};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The bulk lane as docs/operations.md suggests it: a window wide enough to see the other
/// accounts' jobs behind one account's flood, a share of the call slots (`BENCH_BULK_IN_FLIGHT`,
/// default 200, of the shipped 2,000), `share` of them per account.
fn bulk_lane(share: f64) -> LaneSettings {
    LaneSettings {
        routing_keys: StringList::from("bulk.*"),
        prefetch: 20_000,
        max_in_flight: bulk_in_flight(),
        account_share: share,
    }
}

fn bulk_in_flight() -> u32 {
    std::env::var("BENCH_BULK_IN_FLIGHT").map_or(200, |v| {
        v.parse().expect("BENCH_BULK_IN_FLIGHT is a number")
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    BulkOnly,
    Lanes,
    OneQueue,
    /// One lane: the flood from one account, then a few jobs from a second account.
    Fair,
    /// The same with `account_share = 1`: round-robin across accounts alone, with no slots
    /// kept back from the flood.
    Unfair,
}

/// What one run measured.
struct Outcome {
    bulk_rate: f64,
    bulk_secs: f64,
    /// Publish → provider request of the flood's jobs, and of the others.
    flood: Vec<u64>,
    others: Vec<u64>,
}

/// Jobs a second account sends after the flood in the fairness runs.
const SECOND_ACCOUNT_JOBS: usize = 50;

pub async fn run(conn: &Connection, bulk: usize, rate: u32) {
    let only = one(conn, Kind::BulkOnly, bulk, 0, rate).await;
    // As many interactive jobs as arrive at `rate` while the flood alone was being worked off.
    let n = ((only.bulk_secs * f64::from(rate)) as usize).max(20);
    let lanes = one(conn, Kind::Lanes, bulk, n, rate).await;
    let shared = one(conn, Kind::OneQueue, bulk, n, rate).await;
    let fair = one(conn, Kind::Fair, bulk / 2, SECOND_ACCOUNT_JOBS, rate).await;
    let unfair = one(conn, Kind::Unfair, bulk / 2, SECOND_ACCOUNT_JOBS, rate).await;
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
        load::fmt_pcts(&lanes.others),
        load::fmt_pcts(&shared.others)
    );
    println!(
        "\nfair share in the bulk lane: {} jobs from account A, then {SECOND_ACCOUNT_JOBS} from account B",
        bulk / 2
    );
    println!(
        "| publish → provider request p50 / p99 / max | account_share 0.5 | account_share 1 (round-robin alone) |"
    );
    println!("|---|---|---|");
    let row = |who: &str, f: &[u64], u: &[u64]| {
        println!("| {who} | {} | {} |", load::fmt_pcts(f), load::fmt_pcts(u));
    };
    row("account A, the backlog", &fair.flood, &unfair.flood);
    row("account B", &fair.others, &unfair.others);
}

/// The settings (beyond the run's names) an otpd of `kind` runs with: set on the bench's own
/// view (to declare and remove the queues otpd will consume) and returned as the child's
/// environment.
fn lanes_of(kind: Kind, settings: &mut Settings) -> Vec<(&'static str, String)> {
    let mut env = vec![("LIMITS__ENABLED", "false".to_string())];
    let share = match kind {
        Kind::OneQueue => return env,
        Kind::Unfair => 1.0,
        _ => 0.5,
    };
    let lane = bulk_lane(share);
    env.extend([
        ("AMQP__ROUTING_KEYS", "*".to_string()),
        (
            "AMQP__LANES__BULK__ROUTING_KEYS",
            lane.routing_keys.0.join(","),
        ),
        ("AMQP__LANES__BULK__PREFETCH", lane.prefetch.to_string()),
        (
            "AMQP__LANES__BULK__MAX_IN_FLIGHT",
            lane.max_in_flight.to_string(),
        ),
        (
            "AMQP__LANES__BULK__ACCOUNT_SHARE",
            lane.account_share.to_string(),
        ),
    ]);
    settings.amqp.routing_keys = StringList::from("*");
    settings.amqp.lanes.insert("bulk".into(), lane);
    env
}

async fn one(conn: &Connection, kind: Kind, bulk: usize, others: usize, rate: u32) -> Outcome {
    let suffix = format!("{:x}m{}", std::process::id(), kind as u8);
    let total = bulk + others;
    let start = Instant::now();
    let fake = fake::new(start, Duration::ZERO, total);
    let provider = fake::serve(fake.clone()).await;
    let mut settings = child::settings(&suffix);
    let extra = lanes_of(kind, &mut settings);
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (bulk_ch, other_ch) = (channel(conn).await, channel(conn).await);
    otpd::amqp::declare_topology(&bulk_ch, &settings.amqp)
        .await
        .unwrap();
    let timeline = Timeline::new(start, total);
    let (mut done, _) =
        load::collect_events(conn, &settings.amqp.events_exchange, timeline.clone()).await;
    let otpd = child::spawn(&suffix, &provider, 0, &extra).await;
    let channels = (&bulk_ch, &other_ch);
    publish(
        kind,
        channels,
        &settings.amqp.jobs_exchange,
        (bulk, total),
        rate,
        &timeline,
    )
    .await;
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
        flood: load::latencies(&timeline, 0..bulk, arrived),
        others: load::latencies(&timeline, bulk..total, arrived),
    }
}

/// The flood (jobs `0..bulk`, one account, `bulk.sms`, flat out) and the others: interactive
/// jobs from distinct accounts on `sms` at `rate` beside it, or, in the fairness runs, a second
/// account's jobs on `bulk.sms` right after it.
async fn publish(
    kind: Kind,
    (bulk_ch, other_ch): (&Channel, &Channel),
    exchange: &str,
    (bulk, total): (usize, usize),
    rate: u32,
    timeline: &Timeline,
) {
    let to = load::destinations(total);
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let fairness = matches!(kind, Kind::Fair | Kind::Unfair);
    let body = |i: usize| match (i < bulk, fairness) {
        (true, _) => load::job_from(i, &to[i], &expires, "bulk-account"),
        (false, true) => load::job_from(i, &to[i], &expires, "second-account"),
        (false, false) => load::job(i, &to[i], &expires),
    };
    let target = |channel, routing_key| Target {
        channel,
        exchange,
        routing_key,
    };
    let flood = (0..bulk).map(|i| (i, body(i)));
    let flood = load::publish(target(bulk_ch, "bulk.sms"), flood, None, timeline);
    let others = (bulk..total).map(|i| (i, body(i)));
    if fairness {
        flood.await;
        load::publish(target(other_ch, "bulk.sms"), others, None, timeline).await;
    } else {
        let steady = load::publish(target(other_ch, "sms"), others, Some(rate), timeline);
        tokio::join!(flood, steady);
    }
}

async fn channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}
