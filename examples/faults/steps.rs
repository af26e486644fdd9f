//! Scenario 8: fallback steps wait in the broker, and the broker restarts while they wait.
//! Nothing of a pending step lives in otpd, so what this shows is that the delay queues keep
//! them across a restart and that each still fires once.

use crate::rig::Rig;
use crate::scenarios::{DONE_LIMIT, HOUR, Report, secs};
use crate::services::{Outage, Service};
use std::time::{Duration, Instant};

/// The step's delay: long enough for the broker to be down when the steps fall due.
const AFTER_SECS: u64 = 10;

/// Scenario 8: every job has one fallback step (SMS again, after 10 s); RabbitMQ is stopped
/// once every first send is done and started again, and every step must still be sent, once.
pub async fn fallback_across_broker_restart() -> Report {
    let mut r = Report::new("8. fallback steps pending across a RabbitMQ restart");
    let n = 500;
    let mut rig = Rig::new("fallback", n, &[]).await;
    rig.job_extra = format!(r#","fallback":[{{"channel":"sms","after_secs":{AFTER_SECS}}}]"#);
    rig.publish(0..n, HOUR).await;
    rig.start();
    if let Err(e) = restart_while_steps_wait(&mut rig, &mut r, n as i64).await {
        r.abort(e);
    }
    rig.connect().await;
    let t0 = Instant::now();
    match rig.wait_done(2 * n as i64, DONE_LIMIT).await {
        Ok(_) => r.fig("every step sent, after the restart", secs(t0.elapsed())),
        Err(e) => r.abort(e),
    }
    rig.stop().await;
    let per_code: Vec<u32> = (0..n).map(|i| rig.fake.sends(i)).collect();
    let twice = per_code.iter().filter(|&&c| c == 2).count();
    r.fig(
        "codes sent by first send and step, exactly twice",
        format!("{twice} of {n}"),
    );
    r.check(twice == n, || {
        let odd: Vec<_> = (per_code.iter().enumerate())
            .filter(|(_, c)| **c != 2)
            .take(5)
            .collect();
        format!("every code is sent once per step; (index, sends): {odd:?}")
    });
    let steps = step_records(&rig).await;
    r.check(steps == n as i64, || {
        format!("{steps} step records sent, of {n}")
    });
    rig.cleanup(!r.failures.is_empty()).await;
    r
}

/// Waits for every first send, then stops RabbitMQ and starts it again while the steps wait.
async fn restart_while_steps_wait(rig: &mut Rig, r: &mut Report, n: i64) -> Result<(), String> {
    let t0 = Instant::now();
    rig.wait_finished(n, Duration::from_secs(120)).await?;
    r.fig("first sends done", secs(t0.elapsed()));
    let outage = Outage::begin(Service::RabbitMq).await?;
    // Read once the broker is down: every step was still waiting in it.
    let early = step_records(rig).await;
    r.fig("steps already sent when the broker stopped", early);
    r.check(early == 0, || {
        format!("{early} steps fired before their delay")
    });
    outage.end().await?;
    r.fig("broker back after", secs(t0.elapsed()));
    Ok(())
}

/// The step records sent so far (-1 if the database cannot be asked).
async fn step_records(rig: &Rig) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE challenge_id LIKE 'f-%#1' AND state = 'sent'",
    )
    .fetch_one(&rig.db)
    .await
    .unwrap_or(-1)
}
