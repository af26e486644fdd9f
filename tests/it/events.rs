//! Status event options: with `amqp.publish_accepted = false` a job's first event is its
//! terminal one, on every path that would otherwise announce `accepted` first.

use crate::support::{TestApp, created, id, job, twilio};
use serde_json::Value;
use wiremock::{Mock, MockServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_accepted_events_the_first_event_is_the_terminal_one() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(created("SM1"))
        .mount(&server)
        .await;
    let with_twilio = twilio(&server);
    let mut app = TestApp::spawn(move |s| {
        with_twilio(s);
        s.amqp.publish_accepted = false;
    })
    .await;

    // The shipped phone rule allows a burst of 5: the sixth is refused by the same batched
    // admission that starts the others' first attempts.
    for expected in ["sent", "sent", "sent", "sent", "sent", "rate_limited"] {
        let j = job("sms", "+14155550123", "482913");
        app.publish(&j).await;
        assert_eq!(app.event_for(&id(&j)).await["state"], expected);
    }
    // An expired job takes the slower path, which announced `accepted` on its own.
    let mut expired = job("sms", "+14155550124", "482913");
    expired["expires_at"] =
        Value::from((chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    app.publish(&expired).await;
    assert_eq!(app.event_for(&id(&expired)).await["state"], "expired");
}
