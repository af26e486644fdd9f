//! A provider call that outlives its timeout may or may not have sent the code: it is *in
//! doubt*. otpd says so in the event and the metric, and resends only if configured to.

use crate::support::{ACCOUNT_SID, PATIENCE, Signal, TestApp, created, id, job, twilio};
use otpd::config::Settings;
use otpd::dispatch::Ending;
use otpd::domain::DeliveryState;
use otpd::intake::Handled;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond};

const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

/// A Twilio whose first answer comes after the attempt timeout, and whose later ones at once.
async fn slow_then_fast() -> MockServer {
    first_then_created(created("SM1").set_delay(Duration::from_secs(3))).await
}

/// A Twilio that answers its first message with `first`, and later ones at once.
async fn first_then_created(first: impl Respond + 'static) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created("SM2"))
        .mount(&server)
        .await;
    server
}

fn settings(server: &MockServer, resend: bool) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    let fake = twilio(server);
    move |s| {
        fake(s);
        s.retry.attempt_timeout_ms = 300;
        s.delivery.resend_in_doubt = resend;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_is_resent_and_the_event_says_in_doubt() {
    let server = slow_then_fast().await;
    let mut app = TestApp::spawn(settings(&server, true)).await;
    let job = job("sms", "+14155550123", "271828");
    app.publish(&job).await;

    assert_eq!(
        app.report_for(&id(&job)).await.handled,
        Handled::Acked(Ending::Finished(DeliveryState::Sent))
    );
    assert_eq!(app.event_for(&id(&job)).await["state"], "accepted");
    let event = app.event_for(&id(&job)).await;
    assert_eq!(event["state"], "sent");
    assert_eq!(event["attempt"], 2);
    assert_eq!(event["in_doubt"], true);
    let noted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_events WHERE challenge_id = $1 AND kind = 'in_doubt'",
    )
    .bind(id(&job))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(noted, 1);
    assert!(
        app.metrics()
            .await
            .contains(r#"otpd_in_doubt_total{channel="sms"} 1"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resend_off_a_timed_out_call_ends_failed_in_doubt_without_a_second_send() {
    let server = slow_then_fast().await;
    let mut app = TestApp::spawn(settings(&server, false)).await;
    let job = job("sms", "+14155550123", "271828");
    app.publish(&job).await;

    assert_eq!(
        app.report_for(&id(&job)).await.handled,
        Handled::Acked(Ending::Finished(DeliveryState::Failed))
    );
    assert_eq!(
        app.state_of(&id(&job)).await,
        ("failed".into(), 1, Some("in_doubt".into()))
    );
    assert_eq!(app.event_for(&id(&job)).await["state"], "accepted");
    let event = app.event_for(&id(&job)).await;
    assert_eq!(event["in_doubt"], true);
    assert_eq!(event["reason"], "in_doubt");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// A job whose worker is killed while it waits for its call slot, after its claim committed,
/// was never sent: the worker that takes it over sends it, not in doubt, whether resending is
/// on or off. (The job holding the slot was calling, so it is in doubt: resent with resending
/// on, failed with it off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_while_waiting_for_its_call_slot_is_sent_by_the_takeover_not_in_doubt() {
    killed_while_waiting_for_its_slot(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resend_off_a_job_killed_while_waiting_for_its_call_slot_is_sent_by_the_takeover() {
    killed_while_waiting_for_its_slot(false).await;
}

async fn killed_while_waiting_for_its_slot(resend: bool) {
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    // The first call holds the only slot for longer than the test runs; later ones are answered.
    let held = created("SM1").set_delay(Duration::from_secs(60));
    let server = first_then_created(Signal(arrived, held)).await;
    let overrides = settings(&server, resend);
    let mut app = TestApp::spawn(move |s| {
        overrides(s);
        s.retry.attempt_timeout_ms = 5000;
        s.providers.twilio_mut("twilio").max_concurrency = 1;
    })
    .await;
    // The worker to kill is a process of its own, with the same settings.
    app.stop().await;
    let uri = server.uri();
    let mut worker = app.spawn_process(&[
        ("CHANNELS__SMS", "twilio"),
        ("PROVIDERS__TWILIO__BASE_URL", uri.as_str()),
        ("PROVIDERS__TWILIO__ACCOUNT_SID", ACCOUNT_SID),
        ("PROVIDERS__TWILIO__AUTH_TOKEN", "test-token"),
        ("PROVIDERS__TWILIO__SMS_FROM", "+15005550006"),
        ("PROVIDERS__TWILIO__MAX_CONCURRENCY", "1"),
        ("RETRY__ATTEMPT_TIMEOUT_MS", "5000"),
        (
            "DELIVERY__RESEND_IN_DOUBT",
            if resend { "true" } else { "false" },
        ),
    ]);
    let calling = job("sms", "+14155550123", "271828");
    app.publish(&calling).await;
    tokio::time::timeout(PATIENCE, arrivals.recv())
        .await
        .expect("the first call reached the provider");
    let waiting = job("sms", "+14155550124", "314159");
    app.publish(&waiting).await;
    // Its claim is committed (admitted, no attempt begun) while the slot is taken.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while claimed(&app, &id(&waiting)).await != Some((true, 0)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();

    app.start_again().await;
    // Both terminal events, in whichever order they come.
    let ids = [id(&waiting), id(&calling)];
    let mut terminal = std::collections::HashMap::new();
    while terminal.len() < 2 {
        let event = app
            .event_where(|_, e| {
                ids.iter().any(|i| e["challenge_id"] == *i) && e["state"] != "accepted"
            })
            .await;
        terminal.insert(event["challenge_id"].as_str().unwrap().to_string(), event);
    }
    let sent = &terminal[&id(&waiting)];
    assert_eq!(sent["state"], "sent", "{sent}");
    assert_eq!(sent["in_doubt"], false, "{sent}");
    let doubted = &terminal[&id(&calling)];
    let expected = if resend { "sent" } else { "failed" };
    assert_eq!(doubted["state"], expected, "{doubted}");
    assert_eq!(doubted["in_doubt"], true, "{doubted}");
    // The held call, the waiting job's call made once by the new worker, and with resending
    // on the held job's second call.
    let calls = if resend { 3 } else { 2 };
    assert_eq!(server.received_requests().await.unwrap().len(), calls);
}

/// Whether a challenge's row is admitted, and its attempts, if it has a row yet.
async fn claimed(app: &TestApp, challenge_id: &str) -> Option<(bool, i32)> {
    sqlx::query_as("SELECT admitted, attempt FROM deliveries WHERE challenge_id = $1")
        .bind(challenge_id)
        .fetch_optional(&app.db)
        .await
        .unwrap()
}
