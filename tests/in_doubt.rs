//! A provider call that outlives its timeout may or may not have sent the code: it is *in
//! doubt*. otpd says so in the event and the metric, and resends only if configured to.

mod support;

use otpd::config::Settings;
use otpd::dispatch::Outcome;
use otpd::domain::DeliveryState;
use otpd::intake::Handled;
use std::time::Duration;
use support::{TestApp, id, job, twilio};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

/// A Twilio whose first answer comes after the attempt timeout, and whose later ones at once.
async fn slow_then_fast() -> MockServer {
    let server = MockServer::start().await;
    let created = ResponseTemplate::new(201)
        .set_body_json(serde_json::json!({ "sid": "SM1", "status": "queued" }));
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created.clone().set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created)
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
        Handled::Acked(Outcome::Finished(DeliveryState::Sent))
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
        Handled::Acked(Outcome::Finished(DeliveryState::Failed))
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
