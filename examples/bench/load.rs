//! The offered load: the jobs, publishing them flat out or at a fixed rate, and the consumer
//! of otpd's status events that notes when each job reached its terminal state.

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Destinations for `n` jobs: valid US mobile-or-fixed numbers spread over many 8-digit
/// ranges, so that no limit of the shipped configuration bites (the `prefix` rule allows 30
/// per range per 10 minutes; these put at most 8 in one range per 60,000 jobs).
pub fn destinations(n: usize) -> Vec<String> {
    let deny = ["premium_rate", "shared_cost", "unknown"];
    let mut out = Vec::with_capacity(n);
    let mut candidate = 0u64;
    while out.len() < n {
        let (nxx, line) = (200 + candidate % 800, candidate / 800);
        candidate += 1;
        let to = format!("+1415{nxx}{:04}", (line % 10) * 1000 + line / 10);
        match otpd::domain::PhoneNumber::parse(&to) {
            Ok(p) if !deny.contains(&p.number_type()) => out.push(to),
            _ => {}
        }
    }
    out
}

/// Job `i`: its code is its index (the fake reads it back), and account and client IP are
/// unique, as in a storm of distinct users.
pub fn job(i: usize, to: &str, expires: &str) -> Vec<u8> {
    job_from(i, to, expires, &format!("a-{i}"))
}

/// Job `i` as `job` makes it, from `account`.
pub fn job_from(i: usize, to: &str, expires: &str, account: &str) -> Vec<u8> {
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    format!(
        r#"{{"version":1,"challenge_id":"b-{i}","account_id":"{account}","channel":"sms","to":"{to}","code":"{i:08}","expires_at":"{expires}","client_ip":"{ip}"}}"#
    )
    .into_bytes()
}

/// Microseconds since the run's start at which each job was published, reached the provider
/// and reached its terminal event (0: not yet).
pub struct Timeline {
    pub start: Instant,
    pub published: Vec<AtomicU64>,
    pub done: Vec<AtomicU64>,
}

impl Timeline {
    pub fn new(start: Instant, jobs: usize) -> Arc<Timeline> {
        let zeros = || (0..jobs).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Timeline {
            start,
            published: zeros(),
            done: zeros(),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

pub struct Target<'a> {
    pub channel: &'a Channel,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// Publishes `bodies` (job index, body), either as fast as the broker confirms (`rate` None)
/// or at `rate` jobs per second, and waits for every confirm.
pub async fn publish(
    to: Target<'_>,
    bodies: impl Iterator<Item = (usize, Vec<u8>)>,
    rate: Option<u32>,
    timeline: &Timeline,
) {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut ticks = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut pending = Vec::with_capacity(1000);
    for (i, body) in bodies {
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        timeline.published[i].store(timeline.now(), Ordering::Relaxed);
        let confirm = to
            .channel
            .basic_publish(
                to.exchange.into(),
                to.routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await
            .unwrap();
        pending.push(confirm);
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

/// Consumes status events in the background: notes each job's first terminal event, counts
/// terminal states, and publishes how many jobs are done on the returned watch.
/// A consumer (no acks) of the status events published to `exchange`, on an exclusive queue
/// of its own; the channel must be kept for as long as the consumer is read.
pub async fn event_consumer(conn: &Connection, exchange: &str) -> (Channel, Consumer) {
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
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let events = ch
        .basic_consume(
            q.name().clone(),
            "bench".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    (ch, events)
}

pub async fn collect_events(
    conn: &Connection,
    exchange: &str,
    timeline: Arc<Timeline>,
) -> (
    watch::Receiver<usize>,
    Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
) {
    let (ch, mut events) = event_consumer(conn, exchange).await;
    let (count_tx, count_rx) = watch::channel(0usize);
    let states = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let tally = states.clone();
    tokio::spawn(async move {
        let _keep = ch;
        let mut seen = 0;
        while let Some(Ok(d)) = events.next().await {
            #[derive(serde::Deserialize)]
            struct Event<'a> {
                challenge_id: &'a str,
                state: &'a str,
            }
            let Ok(e) = serde_json::from_slice::<Event>(&d.data) else {
                continue;
            };
            let Some(i) = e
                .challenge_id
                .strip_prefix("b-")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let done: &AtomicU64 = &timeline.done[i];
            if e.state == "accepted" || done.load(Ordering::Relaxed) != 0 {
                continue;
            }
            done.store(timeline.now(), Ordering::Relaxed);
            *tally
                .lock()
                .unwrap()
                .entry(e.state.to_string())
                .or_insert(0) += 1;
            seen += 1;
            let _ = count_tx.send(seen);
        }
    });
    (count_rx, states)
}

/// Waits until `n` jobs in all have reached a terminal state; panics if otpd stalls.
pub async fn wait_done(count: &mut watch::Receiver<usize>, n: usize) {
    let stalled = Duration::from_secs(120);
    loop {
        let before = *count.borrow();
        if before >= n {
            return;
        }
        tokio::time::timeout(stalled, count.changed())
            .await
            .unwrap_or_else(|_| panic!("otpd stalled at {before} of {n} jobs"))
            .unwrap();
    }
}

/// Sorted latencies (µs) from publish to `at(i)` for the jobs in `range` that got there.
pub fn latencies(
    timeline: &Timeline,
    range: std::ops::Range<usize>,
    at: impl Fn(usize) -> u64,
) -> Vec<u64> {
    let mut v: Vec<u64> = range
        .filter_map(|i| {
            let end = at(i);
            let start = timeline.published[i].load(Ordering::Relaxed);
            (end > 0).then(|| end.saturating_sub(start))
        })
        .collect();
    v.sort_unstable();
    v
}

pub fn fmt_pcts(sorted: &[u64]) -> String {
    if sorted.is_empty() {
        return "n/a".into();
    }
    let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!("{:.1} / {:.1} / {:.1} ms", p(0.5), p(0.99), p(1.0))
}

/// Writes every job's times as CSV (µs since `started`, a wall-clock time, so that stalls can
/// be matched against the broker's and the database's logs): publish, provider request,
/// terminal event; 0 where it never happened.
pub fn write_timeline(
    path: &str,
    started: chrono::DateTime<chrono::Utc>,
    timeline: &Timeline,
    arrived: impl Fn(usize) -> u64,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "# started {}", started.to_rfc3339())?;
    writeln!(out, "job,published_us,provider_us,terminal_us")?;
    for i in 0..timeline.published.len() {
        let at = |v: &[AtomicU64]| v[i].load(Ordering::Relaxed);
        let (p, d) = (at(&timeline.published), at(&timeline.done));
        writeln!(out, "{i},{p},{},{d}", arrived(i))?;
    }
    out.flush()
}
