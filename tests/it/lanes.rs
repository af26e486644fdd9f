//! Lanes and fair share, end to end: a backlog in one lane, or from one account, is overtaken
//! by the jobs behind it. The fake Twilio (the kit's) answers after a delay, so that a lane's
//! few slots keep a backlog waiting long enough to be seen; each job's code is its index, and
//! the fake notes when each index first reached it.
//!
//! Each test asserts the order, not a time: the interactive (or second account's) jobs all
//! reach the provider while most of the backlog published before them has not. Without lanes
//! (one queue) or without fair share (first come, first served) the backlog would have been
//! sent first. The latency these give a login code is measured by the benchmark's mixed run.

use crate::kit::twilio::{Fake, serve};
use crate::support::{ACCOUNT_SID, PATIENCE, TestApp, twilio_at};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use otpd::config::{LaneSettings, Settings};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const BACKLOG: usize = 3000;
const AHEAD: usize = 30;

fn settings(
    url: String,
    lanes: impl Fn(&mut Settings) + Send + Sync + 'static,
) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    let twilio = twilio_at(url);
    move |s| {
        twilio(s);
        // One number and one account for the whole backlog: limits would refuse most of it.
        s.limits.enabled = false;
        lanes(s);
    }
}

fn body(i: usize, account: &str, lane: Option<&str>) -> Vec<u8> {
    let mut job = serde_json::json!({
        "version": 1,
        "challenge_id": format!("lane-{i}-{}", uuid::Uuid::new_v4().simple()),
        "account_id": account,
        "channel": "sms",
        "to": "+447400123456",
        "code": format!("{i:08}"),
        "expires_at": (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339(),
    });
    if let Some(lane) = lane {
        job["lane"] = lane.into();
    }
    serde_json::to_vec(&job).unwrap()
}

/// Publishes every job, then waits for the broker's confirms of all of them.
async fn publish_all(app: &TestApp, jobs: Vec<(Vec<u8>, &str)>) {
    let exchange = format!("t-{}.jobs", app.suffix);
    let mut confirms = Vec::with_capacity(jobs.len());
    for (body, key) in &jobs {
        let props = BasicProperties::default().with_delivery_mode(2);
        let confirm = app
            .channel()
            .basic_publish(
                exchange.as_str().into(),
                (*key).into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack());
    }
}

/// Waits (polling the fake, bounded) until every job of `range` reached it; returns when the
/// last one did, in Unix microseconds.
async fn reached(fake: &Fake, range: std::ops::Range<usize>) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let times: Vec<u64> = range
            .clone()
            .map(|i| fake.first_send_us[i].load(Ordering::SeqCst))
            .collect();
        if times.iter().all(|t| *t > 0) {
            return times.into_iter().max().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "jobs {range:?} reached the provider in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the jobs published after the backlog (`BACKLOG..BACKLOG + AHEAD`) all reached
/// the provider, and asserts that most of the backlog had not by then; returns when the last
/// of them did.
async fn overtook_the_backlog(fake: &Fake, who: &str) -> u64 {
    let last = reached(fake, BACKLOG..BACKLOG + AHEAD).await;
    let behind = (0..BACKLOG)
        .filter(|i| {
            let t = fake.first_send_us[*i].load(Ordering::SeqCst);
            t == 0 || t > last
        })
        .count();
    assert!(
        behind >= BACKLOG / 3,
        "{who} reached the provider while most of the backlog published before them waited; only {behind} of {BACKLOG} were still to go"
    );
    last
}

async fn fake(delay_ms: u64) -> (Arc<Fake>, String) {
    let fake = Fake::new(BACKLOG + AHEAD + 1, &[ACCOUNT_SID], Instant::now());
    fake.account(ACCOUNT_SID)
        .set_delay(Duration::from_millis(delay_ms));
    let url = serve(fake.clone()).await;
    (fake, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_backlog_never_delays_an_interactive_code() {
    let (fake, url) = fake(20).await;
    let app = TestApp::spawn(settings(url, |s| {
        s.amqp.routing_keys = "*".into();
        let bulk = LaneSettings {
            routing_keys: "bulk.*".into(),
            prefetch: 4000,
            max_in_flight: 16,
            account_share: 0.5,
        };
        s.amqp.lanes.insert("bulk".into(), bulk);
    }))
    .await;
    let flood = (0..BACKLOG).map(|i| (body(i, "acct-flood", None), "bulk.sms"));
    publish_all(&app, flood.collect()).await;
    // Published on the interactive routing key, but its `lane` field moves it to the back of
    // the bulk queue.
    let moved = BACKLOG + AHEAD;
    publish_all(&app, vec![(body(moved, "acct-flood", Some("bulk")), "sms")]).await;
    let logins = (BACKLOG..BACKLOG + AHEAD).map(|i| (body(i, &format!("acct-{i}"), None), "sms"));
    publish_all(&app, logins.collect()).await;

    let last_login = overtook_the_backlog(&fake, "the interactive codes").await;
    let moved_at = fake.first_send_us[moved].load(Ordering::SeqCst);
    assert!(
        moved_at == 0 || moved_at > last_login,
        "the job naming the bulk lane waited in it"
    );
    // Nothing is lost on the way: the moved job is sent once the backlog before it is.
    reached(&fake, moved..moved + 1).await;
    assert_eq!(fake.sends(moved), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_account_is_not_queued_behind_the_first_ones_backlog() {
    let (fake, url) = fake(20).await;
    let app = TestApp::spawn(settings(url, |s| {
        s.amqp.prefetch = 4000;
        s.amqp.max_in_flight = 8;
        s.amqp.account_share = 0.5;
    }))
    .await;
    let backlog = (0..BACKLOG).map(|i| (body(i, "acct-a", None), "sms"));
    publish_all(&app, backlog.collect()).await;
    let theirs = (BACKLOG..BACKLOG + AHEAD).map(|i| (body(i, "acct-b", None), "sms"));
    publish_all(&app, theirs.collect()).await;

    overtook_the_backlog(&fake, "account B's jobs").await;
}
