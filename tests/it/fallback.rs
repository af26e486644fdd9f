//! Fallback steps end to end: a step fires after its delay when nothing was verified, on its
//! own channel and address; `verified`, `cancel`, the code's expiry and the step's own limits
//! stop it with a `cancelled` event; and it fires once with two instances, one of them killed with SIGKILL
//! before it is due.

use crate::support::smtp::FakeSmtp;
use crate::support::*;
use lapin::BasicProperties;
use otpd::config::{Settings, SmtpTls};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer};

async fn fake_twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("SMstep"))
        .mount(&server)
        .await;
    server
}

fn with_smtp(port: u16) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    move |s| {
        s.channels.email = "smtp".into();
        s.providers.smtp_mut("smtp").port = port;
        s.providers.smtp_mut("smtp").tls = SmtpTls::None;
        s.providers.smtp_mut("smtp").from = "Acme <no-reply@acme.test>".into();
    }
}

fn with_fallback(mut job: Value, steps: Value) -> Value {
    job["fallback"] = steps;
    job
}

fn at(event: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Publishes a `verified` or `cancel` message for the job's challenge.
async fn feedback(app: &TestApp, kind: &str, job: &Value) {
    let body = serde_json::to_vec(&json!({"version": 1, "challenge_id": id(job)})).unwrap();
    let props = BasicProperties::default().with_type(kind.into());
    app.publish_with(&body, kind, props).await;
}

async fn event_of_step(app: &mut TestApp, job: &Value, state: &str, step: u64) -> Value {
    let key = format!("delivery.{state}");
    app.event_where(|k, e| k == key && e["challenge_id"] == id(job) && e["step"] == step)
        .await
}

/// Waits for a `sent` event of `step` for every job, in whatever order they come.
async fn all_sent(app: &mut TestApp, jobs: &[Value], step: u64) {
    let mut waiting: std::collections::BTreeSet<String> = jobs.iter().map(id).collect();
    while !waiting.is_empty() {
        let e = app
            .event_where(|k, e| k == "delivery.sent" && e["step"] == step)
            .await;
        waiting.remove(e["challenge_id"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_fires_after_its_delay_on_its_own_channel_and_address() {
    let twilio_server = fake_twilio().await;
    let mut smtp = FakeSmtp::start().await;
    let (twilio, smtp_settings) = (twilio(&twilio_server), with_smtp(smtp.port));
    let mut app = TestApp::spawn(move |s| {
        twilio(s);
        smtp_settings(s);
    })
    .await;
    let steps = json!([
        {"channel": "voice", "after_secs": 10},
        {"channel": "email", "to": "reset@example.com", "after_secs": 10}
    ]);
    let j = with_fallback(job("sms", "+447400123456", "482913"), steps);
    app.publish(&j).await;
    let mut previous = event_of_step(&mut app, &j, "sent", 0).await;
    assert_eq!(previous["channel"], "sms");
    for (step, channel, provider) in [(1, "voice", "twilio"), (2, "email", "smtp")] {
        let sent = event_of_step(&mut app, &j, "sent", step).await;
        assert_eq!(
            (&sent["channel"], &sent["provider"], &sent["event_id"]),
            (
                &json!(channel),
                &json!(provider),
                &json!(format!("{}#{step}/sent", id(&j)))
            )
        );
        let waited = at(&sent) - at(&previous);
        assert!(
            waited >= chrono::Duration::seconds(10),
            "a step never fires early: {waited}"
        );
        previous = sent;
    }
    let metrics = app.metrics().await;
    for channel in ["voice", "email"] {
        let line = format!("otpd_fallback_scheduled_total{{channel=\"{channel}\"}} 1");
        assert!(metrics.contains(&line), "{line}");
    }
    let mail = smtp.messages.recv().await.unwrap();
    assert_eq!(mail.recipients, ["reset@example.com"]);
    assert!(mail.data.contains("482913"), "the same code");
    let requests = twilio_server.received_requests().await.unwrap();
    let paths: Vec<&str> = requests.iter().map(|r| r.url.path()).collect();
    assert!(
        paths.len() == 2
            && paths[0].ends_with("/Messages.json")
            && paths[1].ends_with("/Calls.json"),
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_cancel_expiry_and_limits_each_stop_a_pending_step() {
    let server = fake_twilio().await;
    let twilio = twilio(&server);
    let mut app = TestApp::spawn(move |s| {
        twilio(s);
        // Calls to France are denied; texts are not.
        s.geo.voice.deny.0 = vec!["FR".into()];
    })
    .await;
    let steps = json!([{"channel": "voice", "after_secs": 10}]);
    let verified = with_fallback(job("sms", "+447400123456", "111111"), steps.clone());
    let cancelled = with_fallback(job("sms", "+447400123457", "222222"), steps.clone());
    // Due 10 s after its send, by when a code that lives 10 s from now has expired.
    let mut late = with_fallback(job("sms", "+447400123458", "333333"), steps.clone());
    late["expires_at"] = (chrono::Utc::now() + chrono::Duration::seconds(10))
        .to_rfc3339()
        .into();
    let denied = with_fallback(job("sms", "+33612345678", "555555"), steps);
    for j in [&verified, &cancelled, &late, &denied] {
        app.publish(j).await;
        event_of_step(&mut app, j, "sent", 0).await;
    }
    feedback(&app, "verified", &verified).await;
    feedback(&app, "cancel", &cancelled).await;
    for (j, reason) in [
        (&verified, "verified"),
        (&cancelled, "cancelled"),
        (&late, "expired"),
        (&denied, "country_denied"),
    ] {
        let event = event_of_step(&mut app, j, "cancelled", 1).await;
        assert_eq!(
            (&event["reason"], &event["channel"]),
            (&json!(reason), &json!("voice"))
        );
    }
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r.url.path().ends_with("/Messages.json")),
        "no step placed a call"
    );
    assert_eq!(requests.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_fires_once_across_two_instances_one_killed_before_it_is_due() {
    let server = fake_twilio().await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let uri = server.uri();
    let mut other = app.spawn_process(&[
        ("CHANNELS__SMS", "twilio"),
        ("CHANNELS__VOICE", "twilio"),
        ("PROVIDERS__TWILIO__BASE_URL", &uri),
        ("PROVIDERS__TWILIO__ACCOUNT_SID", ACCOUNT_SID),
        ("PROVIDERS__TWILIO__AUTH_TOKEN", "test-token"),
        ("PROVIDERS__TWILIO__SMS_FROM", "+15005550006"),
        ("PROVIDERS__TWILIO__VOICE_FROM", "+15005550007"),
    ]);
    app.wait_for_consumers(2).await;
    let steps = json!([{"channel": "voice", "after_secs": 10}]);
    let jobs: Vec<Value> = (0..6)
        .map(|i| {
            with_fallback(
                job("sms", &format!("+44740012346{i}"), "444444"),
                steps.clone(),
            )
        })
        .collect();
    // Every job twice: the copies race for their challenge on both instances.
    for j in jobs.iter().chain(&jobs) {
        app.publish(j).await;
    }
    all_sent(&mut app, &jobs, 0).await;
    // The other instance dies before any step is due; the steps wait in the broker.
    other.start_kill().unwrap();
    other.wait().await.unwrap();
    all_sent(&mut app, &jobs, 1).await;
    let requests = server.received_requests().await.unwrap();
    let calls = requests
        .iter()
        .filter(|r| r.url.path().ends_with("/Calls.json"))
        .count();
    assert_eq!(
        (requests.len(), calls),
        (12, 6),
        "one SMS and one call each"
    );
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT challenge_id, state, attempt FROM deliveries ORDER BY challenge_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter().all(|(_, s, a)| s == "sent" && *a == 1),
        "{rows:?}"
    );
}
