//! End to end through the public contract: a job on the real broker reaches a fake provider,
//! its row reaches its terminal state in the real database, and its status event arrives.

use crate::support::{Signal, TestApp, created, id, job, life_window, twilio};
use otpd::config::SmtpTls;
use otpd::dispatch::Ending;
use otpd::domain::DeliveryState;
use otpd::intake::Handled;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const CALLS: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";

fn form(request: &Request) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn sent() -> Handled {
    Handled::Acked(Ending::Finished(DeliveryState::Sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_job_reaches_twilio_and_ends_sent_with_an_event() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created("SM42"))
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let job = job("sms", "+14155550123", "246810");
    let before = chrono::Utc::now();
    app.publish(&job).await;

    assert_eq!(app.report_for(&id(&job)).await.handled, sent());
    let after = chrono::Utc::now();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let f = form(&requests[0]);
    assert_eq!(f["To"], "+14155550123");
    assert_eq!(f["From"], "+15005550006");
    // The message dies in Twilio's queue when the code does.
    let validity: u64 = f["ValidityPeriod"].parse().unwrap();
    assert!(
        life_window(&job, before, after).contains(&validity),
        "ValidityPeriod {validity}"
    );
    assert!(
        f["Body"].starts_with("246810 is your otpd verification code"),
        "{}",
        f["Body"]
    );
    let auth = requests[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        auth.starts_with("Basic "),
        "HTTP basic auth with the account SID and token"
    );

    assert_eq!(app.state_of(&id(&job)).await, ("sent".into(), 1, None));
    let accepted = app.event_for(&id(&job)).await;
    assert_eq!(accepted["state"], "accepted");
    let event = app.event_for(&id(&job)).await;
    assert_eq!(event["state"], "sent");
    assert_eq!(event["provider"], "twilio");
    assert_eq!(event["provider_message_id"], "SM42");
    assert_eq!(event["attempt"], 1);
    assert_eq!(event["account_id"], job["account_id"]);
    assert_eq!(
        event["metadata"],
        serde_json::json!({"purpose": "login"}),
        "metadata is echoed"
    );
    assert_eq!(event["event_id"], format!("{}/sent", id(&job)));
    // The daemon publishes exactly the fields docs/job-v1.md documents.
    let documented: Value =
        serde_json::from_str(include_str!("../../docs/examples/event-sent.json")).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let (mut published, mut expected) = (keys(&event), keys(&documented));
    published.sort();
    expected.sort();
    assert_eq!(published, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_job_places_a_call_that_reads_the_digits_twice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS))
        .respond_with(created("CA7"))
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let job = job("voice", "+14155550123", "9051");
    app.publish(&job).await;

    assert_eq!(app.report_for(&id(&job)).await.handled, sent());
    let requests = server.received_requests().await.unwrap();
    let f = form(&requests[0]);
    assert_eq!(
        (f["To"].as_str(), f["From"].as_str()),
        ("+14155550123", "+15005550007")
    );
    assert_eq!(
        f["Twiml"].matches("9, 0, 5, 1").count(),
        2,
        "{}",
        f["Twiml"]
    );
    // The shipped `en` voice: Twilio's Amazon Polly voice for US English.
    assert!(
        f["Twiml"].starts_with("<Response><Say language=\"en-US\" voice=\"Polly.Joanna\">Your otpd verification code is: 9, 0, 5, 1.</Say><Pause length=\"1\"/>"),
        "{}",
        f["Twiml"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_job_is_delivered_over_smtp_as_text_and_html() {
    let mut smtp = crate::support::smtp::FakeSmtp::start().await;
    let port = smtp.port;
    let mut app = TestApp::spawn(move |s| {
        s.channels.email = "smtp".into();
        s.providers.smtp_mut("smtp").port = port;
        s.providers.smtp_mut("smtp").tls = SmtpTls::None;
        s.providers.smtp_mut("smtp").from = "Acme <no-reply@acme.test>".into();
    })
    .await;
    let job = job("email", "jane@example.com", "771234");
    app.publish(&job).await;

    assert_eq!(app.report_for(&id(&job)).await.handled, sent());
    let mail = smtp.messages.recv().await.unwrap();
    assert_eq!(mail.recipients, ["jane@example.com"]);
    assert!(
        mail.data.contains("Subject: Your otpd verification code"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("From: Acme <no-reply@acme.test>"));
    assert!(mail.data.contains("text/plain") && mail.data.contains("text/html"));
    assert!(
        mail.data.matches("771234").count() >= 2,
        "the code is in both parts"
    );
    let event = app.event_for(&id(&job)).await;
    assert_eq!(event["state"], "accepted");
    assert_eq!(app.event_for(&id(&job)).await["provider"], "smtp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_and_redelivered_jobs_are_not_sent_twice_and_redeliveries_republish() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created("SM1"))
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let job = job("sms", "+14155550123", "135790");
    app.publish(&job).await;
    assert_eq!(app.report_for(&id(&job)).await.handled, sent());

    // The identity service publishes the same job again.
    app.publish(&job).await;
    assert_eq!(
        app.report_for(&id(&job)).await.handled,
        Handled::Acked(Ending::Duplicate(DeliveryState::Sent))
    );

    // A real broker redelivery, to a restarted otpd: the copy is returned unacked.
    app.stop().await;
    app.publish(&job).await;
    let queue = format!("t-{}.jobs", app.suffix);
    let taken = app
        .channel()
        .basic_get(queue.as_str().into(), Default::default())
        .await
        .unwrap()
        .unwrap();
    taken
        .delivery
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    app.start_again().await;
    assert_eq!(
        app.report_for(&id(&job)).await.handled,
        Handled::Acked(Ending::Duplicate(DeliveryState::Sent))
    );

    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "one send for three copies"
    );
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_events WHERE challenge_id = $1 AND kind = 'duplicate'",
    )
    .bind(id(&job))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(duplicates, 2);

    // The identity service's copy found the event published and sent none. The redelivered
    // copy may be the one whose first delivery committed and died before its event, so it
    // publishes the event again. A later job's terminal event closes the count.
    let marker = crate::support::job("sms", "+14155550124", "246802");
    app.publish(&marker).await;
    let mut sent_events = 0;
    loop {
        let event = app.event_where(|key, _| key.starts_with("delivery.")).await;
        if event["challenge_id"] == id(&marker) && event["state"] == "sent" {
            break;
        }
        if event["challenge_id"] == id(&job) && event["state"] == "sent" {
            sent_events += 1;
        }
    }
    assert_eq!(
        sent_events, 2,
        "the first delivery's event and the redelivery's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_job_is_not_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("SM1"))
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let mut job = job("sms", "+14155550123", "112233");
    job["expires_at"] =
        Value::from((chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    app.publish(&job).await;

    assert_eq!(
        app.report_for(&id(&job)).await.handled,
        Handled::Acked(Ending::Finished(DeliveryState::Expired))
    );
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(
        app.state_of(&id(&job)).await,
        ("expired".into(), 0, Some("expired".into()))
    );
    app.event_for(&id(&job)).await; // accepted
    assert_eq!(app.event_for(&id(&job)).await["state"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_and_the_job_ends_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(created("SM2"))
        .with_priority(2)
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let job = job("sms", "+14155550123", "445566");
    app.publish(&job).await;

    assert_eq!(app.report_for(&id(&job)).await.handled, sent());
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(app.state_of(&id(&job)).await, ("sent".into(), 2, None));
    let failed: (i32, i32, String) =
        sqlx::query_as("SELECT attempt, response_status, reason FROM delivery_events WHERE challenge_id = $1 AND kind = 'attempt'")
            .bind(id(&job))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(failed, (1, 500, "provider_transient".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_number_error_fails_without_retry() {
    let server = MockServer::start().await;
    let body = serde_json::json!({"code": 21211, "message": "The 'To' number +14155550123 is not a valid phone number.", "status": 400});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(body))
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let job = job("sms", "+14155550123", "778899");
    app.publish(&job).await;

    assert_eq!(
        app.report_for(&id(&job)).await.handled,
        Handled::Acked(Ending::Finished(DeliveryState::Failed))
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "no retry"
    );
    assert_eq!(
        app.state_of(&id(&job)).await,
        ("failed".into(), 1, Some("invalid_destination".into()))
    );
    app.event_for(&id(&job)).await; // accepted
    let event = app.event_for(&id(&job)).await;
    assert_eq!(
        (event["state"].as_str(), event["reason"].as_str()),
        (Some("failed"), Some("invalid_destination"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_round_trips_and_metrics_count_jobs() {
    let mut app = TestApp::spawn(|_| {}).await;
    let job = job("sms", "+14155550123", "5555");
    app.publish(&job).await;
    assert_eq!(app.report_for(&id(&job)).await.handled, sent());

    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{}/readyz", app.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        serde_json::json!({"database": true, "broker": true, "intake": true})
    );
    // A plain scrape gets the classic text format, whose counters are named by their samples.
    let classic = client
        .get(format!("http://{}/metrics", app.http))
        .send()
        .await
        .unwrap();
    assert_eq!(
        classic.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let metrics = classic.text().await.unwrap();
    assert!(
        metrics.contains(r#"otpd_jobs_total{channel="sms",state="sent"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE otpd_jobs_total counter\n"),
        "{metrics}"
    );
    assert!(metrics.contains("otpd_provider_latency_seconds_bucket"));
    assert!(!metrics.contains("# EOF"), "{metrics}");
    // Which build runs, the process's own figures, and series that exist before their first
    // event (a provider-wide refusal never happened here, a voice job never ran).
    let build = format!(
        r#"otpd_build_info{{version="{}",commit="#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&build), "{metrics}");
    for process in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
    ] {
        assert!(metrics.contains(process), "{process}: {metrics}");
    }
    for zero in [
        r#"otpd_provider_unusable_total{provider="log",reason="provider_auth"} 0"#,
        r#"otpd_jobs_total{channel="voice",state="failed"} 0"#,
        r#"otpd_in_doubt_total{channel="sms"} 0"#,
    ] {
        assert!(metrics.contains(zero), "{zero}: {metrics}");
    }
    // Prometheus asks for OpenMetrics first, and gets it.
    let open = client
        .get(format!("http://{}/metrics", app.http))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let metrics = open.text().await.unwrap();
    assert!(metrics.contains("# TYPE otpd_jobs counter\n") && metrics.ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_the_job_in_flight_finish_and_ack() {
    let server = MockServer::start().await;
    let slow = created("SM5").set_delay(std::time::Duration::from_millis(1500));
    let (arrived, mut calls) = tokio::sync::mpsc::unbounded_channel();
    Mock::given(method("POST"))
        .respond_with(Signal(arrived, slow))
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let job = job("sms", "+14155550123", "909090");
    app.publish(&job).await;
    tokio::time::timeout(crate::support::PATIENCE, calls.recv())
        .await
        .expect("the provider call started: the job is in flight");

    app.stop().await;
    assert_eq!(
        app.state_of(&id(&job)).await.0,
        "sent",
        "the call in flight finished during the drain"
    );
    let queue = format!("t-{}.jobs", app.suffix);
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = app
        .channel()
        .queue_declare(queue.as_str().into(), passive, Default::default())
        .await
        .unwrap();
    assert_eq!(
        q.message_count(),
        0,
        "the job was acked, not returned to the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_queue_can_be_chosen_instead_of_quorum() {
    let mut app = TestApp::spawn(|s| s.amqp.queue_type = otpd::config::QueueType::Classic).await;
    let job = job("sms", "+14155550123", "31415");
    app.publish(&job).await;
    assert_eq!(app.report_for(&id(&job)).await.handled, sent());
    let bad = b"not json".to_vec();
    app.publish_raw(bad.clone(), "sms").await;
    assert_eq!(
        app.next_report().await.handled,
        Handled::DeadLettered(otpd::domain::RejectReason::MalformedJson)
    );
    assert_eq!(
        app.dead_letter()
            .await
            .expect("dead-lettered on classic too")
            .delivery
            .data,
        bad
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_arriving_while_the_first_is_in_flight_waits_and_is_not_sent() {
    let server = MockServer::start().await;
    let slow = created("SM6").set_delay(std::time::Duration::from_millis(700));
    Mock::given(method("POST"))
        .respond_with(slow)
        .mount(&server)
        .await;
    let mut app = TestApp::spawn(twilio(&server)).await;
    let job = job("sms", "+14155550123", "271828");
    app.publish(&job).await;
    app.publish(&job).await;

    let mut handled = vec![
        app.report_for(&id(&job)).await.handled,
        app.report_for(&id(&job)).await.handled,
    ];
    handled.sort_by_key(|h| format!("{h:?}"));
    assert_eq!(
        handled,
        [
            Handled::Acked(Ending::Duplicate(DeliveryState::Sent)),
            sent()
        ]
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "the copy waited for the lease holder"
    );
}
