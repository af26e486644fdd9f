//! Scenario 7: a provider that stops answering. Bounded work and flat memory are what keep a
//! stalled vendor from taking the gateway down with it.

use crate::fake::{Mode, SID_A};
use crate::rig::{Rig, queue_stat};
use crate::scenarios::{DONE_LIMIT, HOUR, Report, secs};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The shipped default, set explicitly so that the check below cannot drift from it.
const PREFETCH: u64 = 1000;
const PREFETCH_ENV: &str = "1000";

/// Scenario 7: the provider stalls. In-flight work stays bounded and memory flat, SIGTERM
/// still exits within its drain deadline, and after a restart nothing is lost.
pub async fn stalled_provider() -> Report {
    let mut r = Report::new("7. provider stalls, then SIGTERM");
    let n = 5_000;
    let extra = [
        ("RETRY__ATTEMPT_TIMEOUT_MS", "2000"),
        ("RETRY__MAX_ATTEMPTS", "100"),
        ("DELIVERY__BREAKER_OPEN_MS", "2000"),
        ("SHUTDOWN__DRAIN_TIMEOUT_MS", "5000"),
        ("AMQP__PREFETCH", PREFETCH_ENV),
    ];
    let mut rig = Rig::new("stall", n, &extra).await;
    let fake = rig.fake.clone();
    let a = fake.account(SID_A);
    a.set_mode(Mode::Stalled);
    rig.publish(0..n, HOUR).await;
    rig.start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_early = rig.rss_kib().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss_late = rig.rss_kib().unwrap_or(0);
    let unacked = queue_stat(rig.jobs_queue(), "messages_unacknowledged").await;
    r.fig(
        "otpd RSS 5 s / 20 s into the stall (KiB)",
        format!("{rss_early} / {rss_late}"),
    );
    r.check(rss_early > 0 && rss_late <= rss_early + 8 * 1024, || {
        format!("memory grew from {rss_early} to {rss_late} KiB while the provider stalled")
    });
    let shown = unacked.map_or_else(|| "unknown".into(), |u| u.to_string());
    r.fig(
        "jobs held unacked (prefetch 1000) / calls to the stalled provider in 20 s",
        format!("{shown} / {}", a.calls.load(Ordering::SeqCst)),
    );
    r.check(unacked.is_some_and(|u| u <= PREFETCH), || {
        format!("{unacked:?} jobs unacked, over the prefetch")
    });
    let drain = rig.stop().await;
    r.fig("SIGTERM → exit (drain deadline 5 s)", secs(drain));
    r.check(drain < Duration::from_secs(8), || {
        "shutdown overran its deadline".into()
    });
    a.set_mode(Mode::Healthy);
    rig.start();
    if let Err(e) = rig.wait_done(n as i64, DONE_LIMIT).await {
        r.abort(e);
    }
    rig.stop().await;
    r.finish(&rig, 0..n, "sent").await;
    rig.cleanup(!r.failures.is_empty()).await;
    r
}
