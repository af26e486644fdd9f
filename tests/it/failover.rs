//! Failover along a channel's provider chain, end to end: two Twilio accounts, each faked by its
//! own wiremock server, behind one SMS chain `primary, backup`.

use crate::support::{Signal, TestApp, created, id, job};
use otpd::config::Settings;
use otpd::dispatch::Ending;
use otpd::domain::DeliveryState;
use otpd::intake::Handled;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PRIMARY_SID: &str = "AC11111111111111111111111111111111";
const BACKUP_SID: &str = "AC22222222222222222222222222222222";

fn messages(sid: &str) -> String {
    format!("/2010-04-01/Accounts/{sid}/Messages.json")
}

/// SMS goes to `primary`, then `backup`; the breaker opens after two failures and stays open
/// for `open_ms`.
fn chain(
    primary: &MockServer,
    backup: &MockServer,
    open_ms: u64,
) -> impl Fn(&mut Settings) + Send + Sync + 'static {
    let urls = [(primary.uri(), PRIMARY_SID), (backup.uri(), BACKUP_SID)];
    move |s| {
        s.channels.sms = "primary, backup".into();
        for (name, (url, sid)) in ["primary", "backup"].iter().zip(&urls) {
            let t = s.providers.twilio_mut(name);
            t.base_url = url.clone();
            t.account_sid = (*sid).into();
            t.auth_token = "test-token".into();
            t.sms_from = "+15005550006".into();
        }
        s.delivery.breaker_failures = 2;
        s.delivery.breaker_open_ms = open_ms;
    }
}

async fn twilio_answering(sid: &str, response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages(sid)))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

fn twilio_error(status: u16, code: u32) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(serde_json::json!({ "code": code, "message": "refused", "status": status }))
}

async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

/// Sends one SMS job and returns the provider named by its terminal event.
async fn deliver_one(app: &mut TestApp) -> (Handled, serde_json::Value) {
    let job = job("sms", "+14155550123", "314159");
    app.publish(&job).await;
    let handled = app.report_for(&id(&job)).await.handled;
    let accepted = app.event_for(&id(&job)).await;
    assert_eq!(accepted["state"], "accepted");
    (handled, app.event_for(&id(&job)).await)
}

const SENT: Handled = Handled::Acked(Ending::Finished(DeliveryState::Sent));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_trips_its_breaker_and_the_next_in_the_chain_delivers() {
    let primary = twilio_answering(PRIMARY_SID, ResponseTemplate::new(503)).await;
    let backup = twilio_answering(BACKUP_SID, created("SMbackup")).await;
    let mut app = TestApp::spawn(chain(&primary, &backup, 600_000)).await;

    // The first two jobs each try the primary once, then fail over at once to the backup.
    for _ in 0..2 {
        let (handled, event) = deliver_one(&mut app).await;
        assert_eq!(handled, SENT);
        assert_eq!(event["provider"], "backup");
        assert_eq!(event["attempt"], 2);
    }
    // Two consecutive failures opened the primary's breaker: later jobs skip it.
    for _ in 0..3 {
        let (handled, event) = deliver_one(&mut app).await;
        assert_eq!(handled, SENT);
        assert_eq!(event["provider"], "backup");
        assert_eq!(event["attempt"], 1);
    }
    assert_eq!(calls(&primary).await, 2);
    assert_eq!(calls(&backup).await, 5);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otpd_provider_breaker_state{provider="primary"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"otpd_provider_breaker_state{provider="backup"} 0"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_probes_the_provider_and_closes_when_it_answers() {
    let primary = MockServer::start().await;
    // The primary fails twice (opening its breaker for 1 ms), then recovers.
    Mock::given(method("POST"))
        .and(path(messages(PRIMARY_SID)))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&primary)
        .await;
    Mock::given(method("POST"))
        .and(path(messages(PRIMARY_SID)))
        .respond_with(created("SMprimary"))
        .mount(&primary)
        .await;
    let backup = twilio_answering(BACKUP_SID, created("SMbackup")).await;
    let mut app = TestApp::spawn(chain(&primary, &backup, 1)).await;

    for _ in 0..2 {
        let (_, event) = deliver_one(&mut app).await;
        assert_eq!(event["provider"], "backup");
    }
    // The breaker's window has passed by the next job: it is the probe, and it succeeds.
    for _ in 0..2 {
        let (handled, event) = deliver_one(&mut app).await;
        assert_eq!(handled, SENT);
        assert_eq!(event["provider"], "primary");
        assert_eq!(event["attempt"], 1);
    }
    assert_eq!(calls(&primary).await, 4);
    assert_eq!(calls(&backup).await, 2);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otpd_provider_breaker_state{provider="primary"} 0"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_over_at_once_and_are_counted() {
    // Twilio's answer to a wrong auth token.
    let primary = twilio_answering(PRIMARY_SID, twilio_error(401, 20003)).await;
    let backup = twilio_answering(BACKUP_SID, created("SMbackup")).await;
    let mut app = TestApp::spawn(chain(&primary, &backup, 600_000)).await;

    let (handled, event) = deliver_one(&mut app).await;
    assert_eq!(handled, SENT);
    assert_eq!(event["provider"], "backup");
    // One error is enough to take the provider out: the next job goes straight to the backup.
    let (_, event) = deliver_one(&mut app).await;
    assert_eq!(event["attempt"], 1);
    assert_eq!(calls(&primary).await, 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"otpd_provider_unusable_total{provider="primary",reason="provider_auth"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"otpd_provider_breaker_state{provider="primary"} 2"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_number_does_not_fail_over() {
    // 21211: "The 'To' number is not a valid phone number" — true at every provider.
    let primary = twilio_answering(PRIMARY_SID, twilio_error(400, 21211)).await;
    let backup = twilio_answering(BACKUP_SID, created("SMbackup")).await;
    let mut app = TestApp::spawn(chain(&primary, &backup, 600_000)).await;

    let (handled, event) = deliver_one(&mut app).await;
    assert_eq!(
        handled,
        Handled::Acked(Ending::Finished(DeliveryState::Failed))
    );
    assert_eq!(event["reason"], "invalid_destination");
    assert_eq!(event["provider"], "primary");
    assert_eq!(calls(&backup).await, 0);
    // A destination's error says nothing about the provider: its breaker stays closed.
    assert!(
        app.metrics()
            .await
            .contains(r#"otpd_provider_breaker_state{provider="primary"} 0"#)
    );
}

/// How long the fake Twilio takes to answer each call in the burst test.
const CALL: std::time::Duration = std::time::Duration::from_millis(25);

/// A burst of new jobs takes the fast path, which reserves each call after the job's opening
/// commits: the provider's call limit must still hold, and each job be sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_call_limit_holds_under_a_burst_and_each_job_is_sent_once() {
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages(crate::support::ACCOUNT_SID)))
        .respond_with(Signal(arrivals, created("SM1").set_delay(CALL)))
        .mount(&server)
        .await;
    let twilio = crate::support::twilio(&server);
    let mut app = TestApp::spawn(move |s| {
        twilio(s);
        s.providers.twilio_mut("twilio").max_concurrency = 2;
    })
    .await;
    let jobs: Vec<_> = (0..20)
        .map(|i| job("sms", &format!("+1415555{:04}", 100 + i), "271828"))
        .collect();
    for j in &jobs {
        app.publish(j).await;
    }
    let mut handled = std::collections::HashMap::new();
    for _ in &jobs {
        let report = app.next_report().await;
        handled.insert(report.challenge_id.unwrap(), report.handled);
    }
    for j in &jobs {
        assert_eq!(handled.get(&id(j)), Some(&SENT));
    }
    assert_eq!(calls(&server).await, 20, "each job sent once");
    // A call is in flight on the fake from its arrival for at least CALL, and inside its slot
    // for all of that: no arrival may find two others still inside that span.
    let mut times = Vec::new();
    while let Ok(t) = arrived.try_recv() {
        times.push(t);
    }
    let arrived = times;
    let most = arrived
        .iter()
        .map(|&t| arrived.iter().filter(|&&a| a <= t && t < a + CALL).count())
        .max();
    assert!(
        most <= Some(2),
        "{most:?} calls at once, over the limit of 2"
    );
}
