//! The fault suite's seven scenarios. Each builds its rig, injects its fault, waits (bounded) for
//! the work to finish, and reports figures plus every broken invariant.

use crate::audit::Audit;
use crate::fake::{Mode, SID_A, SID_B, now_us};
use crate::rig::{Rig, queue_depth};
use crate::services::{Outage, Service};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub struct Report {
    pub name: &'static str,
    pub figures: Vec<(String, String)>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(name: &'static str) -> Report {
        Report {
            name,
            figures: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub fn fig(&mut self, name: &str, value: impl ToString) {
        self.figures.push((name.to_string(), value.to_string()));
    }

    pub fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    /// Records an error that ended the scenario early.
    pub fn abort(&mut self, e: String) {
        self.failures.push(e);
    }

    pub async fn finish(&mut self, rig: &Rig, range: std::ops::Range<usize>, expected: &str) {
        let audit = Audit::take(rig, range).await;
        audit.check(expected, &mut self.failures);
        self.figures.extend(audit.figures());
    }
}

pub const HOUR: Duration = Duration::from_secs(3600);
pub const DONE_LIMIT: Duration = Duration::from_secs(600);

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// 1. Publish 20,000 jobs and SIGKILL otpd ten times at random moments, restarting it each time.
pub async fn crashes(seed: u64) -> Report {
    let mut r = Report::new("1. kill -9 ten times during 20,000 jobs");
    let n = 20_000;
    // Leases outlive a dead owner by the attempt timeout plus 2 s: a short timeout keeps each
    // restart's wait for the dead process's challenges short.
    let mut rig = Rig::new("crash", n, &[("RETRY__ATTEMPT_TIMEOUT_MS", "2000")]).await;
    rig.publish(0..n, HOUR).await;
    let t0 = Instant::now();
    rig.start();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut left = Vec::new();
    // Each kill falls at a random point of its own tenth of the first 92% of the work, so every
    // kill lands mid-run whatever the machine's speed (a wall-clock schedule let a fast CI run
    // finish before the last kill). A short random delay past the threshold varies what is in
    // flight at the moment of the kill.
    for i in 0..10u64 {
        let band = n as u64 * 92 / 1000;
        let at = rng.random_range(i * band + band / 5..(i + 1) * band) as i64;
        if let Err(e) = rig.wait_finished(at, DONE_LIMIT).await {
            r.abort(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        let finished = rig.finished().await.unwrap_or(0);
        rig.kill9().await;
        left.push(n as i64 - finished);
        rig.start();
    }
    match rig.wait_done(n as i64, DONE_LIMIT).await {
        Ok(_) => r.fig("all done after", secs(t0.elapsed())),
        Err(e) => r.abort(e),
    }
    r.fig(
        "seed / kills / starts",
        format!("{seed} / {} / {}", left.len(), rig.starts),
    );
    r.fig("jobs still open at each kill", format!("{left:?}"));
    r.check(left.iter().all(|l| *l > 0), || {
        "some kills came after the work was done".into()
    });
    rig.stop().await;
    r.finish(&rig, 0..n, "sent").await;
    r.check(rig.fake.seen_and_duplicates(0..n).0 == n, || {
        "the provider did not see every challenge".into()
    });
    rig.cleanup(!r.failures.is_empty()).await;
    r
}

/// 2. Restart RabbitMQ mid-run.
pub async fn broker_restart() -> Report {
    let r = Report::new("2. RabbitMQ restarted mid-run");
    service_outage(r, "broker", Service::RabbitMq, Duration::ZERO).await
}

/// 3. Stop PostgreSQL for 30 s mid-run.
pub async fn database_outage() -> Report {
    let r = Report::new("3. PostgreSQL stopped for 30 s mid-run");
    service_outage(r, "pg", Service::Postgres, Duration::from_secs(30)).await
}

/// 4,000 jobs with `service` stopped for at least `hold` once a quarter of them are done.
async fn service_outage(mut r: Report, label: &str, service: Service, hold: Duration) -> Report {
    let n = 4_000;
    let mut rig = Rig::new(label, n, &[("RETRY__ATTEMPT_TIMEOUT_MS", "2000")]).await;
    // At 64 calls of 100 ms at once (~640 jobs/s) the run lasts ~6 s, so the outage, begun
    // after 1,000 jobs, finds work left. Against an instant provider otpd could finish all
    // 4,000 while `rabbitmqctl shutdown` was still stopping the broker, and the scenario then
    // tested nothing (and failed: there was nothing left to resume).
    rig.fake.account(SID_A).set_mode(Mode::Slow);
    rig.publish(0..n, HOUR).await;
    rig.start();
    if let Err(e) = outage_mid_run(&mut rig, &mut r, service, hold, n as i64).await {
        r.abort(e);
    }
    // A broker restart closed the rig's own connection too.
    rig.connect().await;
    if let Err(e) = rig.wait_done(n as i64, DONE_LIMIT).await {
        r.abort(e);
    }
    rig.stop().await;
    r.finish(&rig, 0..n, "sent").await;
    rig.cleanup(!r.failures.is_empty()).await;
    r
}

/// Once a quarter of the `n` jobs are done, stops `service` for at least `hold`, and measures
/// what otpd did meanwhile and how soon after it came back it finished a job again.
async fn outage_mid_run(
    rig: &mut Rig,
    r: &mut Report,
    service: Service,
    hold: Duration,
    n: i64,
) -> Result<(), String> {
    rig.wait_finished(1000, Duration::from_secs(300)).await?;
    // Progress is counted in jobs handled (a terminal commit, or a redelivered copy of a
    // finished challenge recorded as a duplicate), which needs both services. Read before the
    // outage: the rig cannot ask PostgreSQL while it is down.
    let mut handled_before = rig.handled().await.unwrap_or(0);
    let outage = Outage::begin(service).await?;
    let down_at = Instant::now();
    // The broker is down once `rabbitmqctl shutdown` returns, and the database is still up: how
    // much work the outage found. (PostgreSQL cannot be asked during its own outage.)
    let finished_then = match service {
        Service::RabbitMq => rig.finished().await.unwrap_or(0),
        Service::Postgres => handled_before,
    };
    r.fig(
        "jobs finished when the outage began",
        format!("{finished_then} of {n}"),
    );
    r.check(finished_then < n, || {
        "the outage came after the work was done".into()
    });
    let key = match service {
        Service::RabbitMq => "broker",
        Service::Postgres => "database",
    };
    // /readyz must say which dependency is missing.
    let ready = rig.readyz().await;
    let ready_ok = matches!(&ready, Some((503, body)) if body[key] == false);
    let shown = ready.as_ref().map_or_else(
        || "no answer".into(),
        |(code, body)| format!("{code} {body}"),
    );
    r.fig("/readyz during the outage", shown);
    r.check(ready_ok, || format!("/readyz did not report {key}: false"));
    if service == Service::Postgres {
        // Once the jobs in flight have hit the outage, nothing may be acked until it ends: an
        // ack needs a commit first. RabbitMQ refreshes a queue's message count every 5 s
        // (collect_statistics_interval), so the first reading waits out one refresh; after
        // 1 s it could still show acks made before the outage (a CI run counted 46).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let before = queue_depth(rig.jobs_queue()).await;
        tokio::time::sleep(hold.saturating_sub(down_at.elapsed())).await;
        let after = queue_depth(rig.jobs_queue()).await;
        let acked = before.zip(after).map(|(b, a)| b as i64 - a as i64);
        let shown = acked.map_or_else(|| "unknown".into(), |a| a.to_string());
        r.fig(
            "jobs acked while PostgreSQL was down (24 s, from 6 s into the outage)",
            shown,
        );
        r.check(acked == Some(0), || {
            format!("acks during the outage: {acked:?}")
        });
    }
    outage.end().await?;
    r.fig("outage lasted", secs(down_at.elapsed()));
    if service == Service::RabbitMq {
        // Jobs in flight when the broker went away could still commit during the outage
        // (their events then wait for redelivery); count from the end of it. When the outage
        // came late in the run, those redeliveries may be all that is left to handle.
        handled_before = rig.handled().await.unwrap_or(0);
    }
    let back = Instant::now();
    let mut resumed = None;
    while back.elapsed() < Duration::from_secs(120) {
        if rig.handled().await.is_some_and(|h| h > handled_before) {
            resumed = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = resumed.map_or_else(|| "never".into(), secs);
    r.fig("first job handled after the service was back", shown);
    r.check(resumed.is_some(), || "consumption did not resume".into());
    Ok(())
}

/// 4. The provider fails 30% of calls (500, 429 with Retry-After, timeouts).
pub async fn flaky_provider() -> Report {
    let mut r = Report::new("4. provider fails 30% of calls");
    let n = 2_000;
    let extra = [
        ("RETRY__ATTEMPT_TIMEOUT_MS", "1000"),
        ("RETRY__MAX_ATTEMPTS", "12"),
        ("RETRY__INITIAL_DELAY_MS", "100"),
        ("RETRY__MAX_DELAY_MS", "2000"),
    ];
    let mut rig = Rig::new("flaky", n, &extra).await;
    rig.fake.account(SID_A).set_mode(Mode::Flaky);
    let published_us = now_us();
    let expires_us = rig.publish(0..n, Duration::from_secs(300)).await;
    rig.start();
    if let Err(e) = rig.wait_done(n as i64, DONE_LIMIT).await {
        r.abort(e);
    }
    rig.stop().await;
    let a = rig.fake.account(SID_A);
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::SeqCst);
    r.fig(
        "provider calls / 500 / 429 / answered after the timeout",
        format!(
            "{} / {} / {} / {}",
            get(&a.calls),
            get(&a.errors_500),
            get(&a.errors_429),
            get(&a.slow)
        ),
    );
    let mut lat: Vec<u64> = rig
        .fake
        .first_send_us
        .iter()
        .map(|t| t.load(Ordering::SeqCst))
        .collect();
    let late = lat.iter().filter(|t| **t == 0 || **t >= expires_us).count();
    lat.sort_unstable();
    let pct =
        |p: f64| (lat[((lat.len() - 1) as f64 * p) as usize].saturating_sub(published_us)) / 1000;
    r.fig(
        "publish → first accepted send p50 / p99 / max (ms)",
        format!("{} / {} / {}", pct(0.5), pct(0.99), pct(1.0)),
    );
    r.fig("delivered at or after expires_at, or never", late);
    r.check(late == 0, || {
        format!("{late} jobs not delivered before they expired")
    });
    r.finish(&rig, 0..n, "sent").await;
    rig.cleanup(!r.failures.is_empty()).await;
    r
}

/// 5. The first provider is down entirely; the second takes over; the first comes back.
pub async fn failover() -> Report {
    let mut r = Report::new("5. first provider down, then back");
    let n = 2_000;
    let half = n / 2;
    let extra = [
        ("CHANNELS__SMS", "a, b"),
        ("DELIVERY__BREAKER_FAILURES", "5"),
        ("DELIVERY__BREAKER_OPEN_MS", "2000"),
    ];
    let mut rig = Rig::new("failover", n, &extra).await;
    let fake = rig.fake.clone();
    let (a, b) = (fake.account(SID_A), fake.account(SID_B));
    a.set_mode(Mode::Down);
    rig.publish(0..half, HOUR).await;
    rig.start();
    if let Err(e) = rig.wait_done(half as i64, DONE_LIMIT).await {
        r.abort(e);
    }
    let calls_down = a.calls.load(Ordering::SeqCst);
    let by_b = b.accepted.load(Ordering::SeqCst);
    let straight_to_b: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE provider = 'b' AND attempt = 1")
            .fetch_one(&rig.db)
            .await
            .unwrap_or(-1);
    r.fig(
        "while A was down: calls to A / jobs sent by B / of them B first",
        format!("{calls_down} / {by_b} / {straight_to_b}"),
    );
    r.check(by_b as usize == half, || format!("B sent {by_b} of {half}"));
    // The breaker stops the storm: jobs queued behind A's slots when it opens pick again
    // rather than each calling the dead provider once.
    r.check(calls_down < (half / 4) as u64, || {
        format!("{calls_down} calls to A while it was down, for {half} jobs")
    });

    a.set_mode(Mode::Healthy);
    let back_us = now_us();
    // Offered over 4 s, past A's 2 s breaker window, so that there is traffic to probe A
    // with: otpd clears 1,000 jobs in well under the window, and an idle breaker is never
    // probed.
    for chunk in (half..n).step_by(100) {
        rig.publish(chunk..(chunk + 100).min(n), HOUR).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    if let Err(e) = rig.wait_done(n as i64, DONE_LIMIT).await {
        r.abort(e);
    }
    let first_ok = a.first_ok_us.load(Ordering::SeqCst);
    let restored_ms = (first_ok > 0).then(|| first_ok.saturating_sub(back_us) / 1000);
    let by_a: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE provider = 'a'")
        .fetch_one(&rig.db)
        .await
        .unwrap_or(-1);
    let shown = restored_ms.map_or_else(|| "never".into(), |ms| format!("{ms} ms"));
    r.fig(
        "A's first accepted call after it came back (breaker window 2,000 ms)",
        shown,
    );
    r.fig(
        "after A came back: jobs sent by A",
        format!("{by_a} of {half}"),
    );
    r.check(restored_ms.is_some_and(|ms| ms <= 3000), || {
        "A was not restored within its breaker window plus 1 s".into()
    });
    // Once a probe has succeeded, A is first in the chain again: B gets nothing more beyond
    // the calls already under way.
    let b_after_ms = (b.last_ok_us.load(Ordering::SeqCst) as i64 - first_ok as i64) / 1000;
    r.fig(
        "B's last accepted call, relative to A's first after recovery",
        format!("{b_after_ms:+} ms"),
    );
    r.check(first_ok > 0 && b_after_ms <= 500, || {
        format!("B still took calls {b_after_ms} ms after A recovered")
    });
    rig.stop().await;
    r.finish(&rig, 0..n, "sent").await;
    rig.cleanup(!r.failures.is_empty()).await;
    r
}

/// 6. A job that expires while it waits in retries ends `expired` and is never sent.
pub async fn expiry_during_retries() -> Report {
    let mut r = Report::new("6. code expires during retries");
    let n = 50;
    let extra = [
        ("RETRY__MAX_ATTEMPTS", "100"),
        ("RETRY__INITIAL_DELAY_MS", "200"),
        ("RETRY__MAX_DELAY_MS", "1000"),
        ("RETRY__EXPIRY_MARGIN_MS", "1000"),
        ("DELIVERY__BREAKER_OPEN_MS", "1000"),
    ];
    let mut rig = Rig::new("expiry", n, &extra).await;
    let fake = rig.fake.clone();
    let a = fake.account(SID_A);
    a.set_mode(Mode::Down);
    let expires = chrono::Utc::now() + chrono::Duration::seconds(8);
    rig.publish_until(0..n, expires).await;
    rig.start();
    if let Err(e) = rig.wait_done(n as i64, DONE_LIMIT).await {
        r.abort(e);
    }
    let attempts: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(attempt), 0)::bigint FROM deliveries")
            .fetch_one(&rig.db)
            .await
            .unwrap_or(-1);
    r.fig("attempts made before the codes expired", attempts);
    // The provider recovers and every job is redelivered: still nothing may be sent.
    a.set_mode(Mode::Healthy);
    rig.publish_until(0..n, expires).await;
    if let Err(e) = rig.wait_done(n as i64, DONE_LIMIT).await {
        r.abort(e);
    }
    let dupes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_events WHERE kind = 'duplicate'")
            .fetch_one(&rig.db)
            .await
            .unwrap_or(-1);
    r.fig("copies redelivered after expiry, acked unsent", dupes);
    r.check(dupes == n as i64, || {
        format!("{dupes} of {n} copies recorded as duplicates")
    });
    let sent = a.accepted.load(Ordering::SeqCst);
    r.fig("sends accepted by the provider", sent);
    r.check(sent == 0, || format!("{sent} expired codes were sent"));
    rig.stop().await;
    r.finish(&rig, 0..n, "expired").await;
    rig.cleanup(!r.failures.is_empty()).await;
    r
}
