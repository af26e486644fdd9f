//! The generic HTTP provider, end to end, with the shipped example configs for Vonage's SMS
//! API and Plivo's Message API, each against a fake on loopback that answers as the vendor
//! does. Only the URL's host and the secrets are changed from the examples.

use crate::support::{TestApp, id, job, life_window, provider_example as example};
use otpd::config::ProviderConfig;
use otpd::dispatch::Ending;
use otpd::domain::DeliveryState;
use otpd::intake::Handled;
use std::collections::HashMap;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SENT: Handled = Handled::Acked(Ending::Finished(DeliveryState::Sent));
const FAILED: Handled = Handled::Acked(Ending::Finished(DeliveryState::Failed));

async fn spawn(name: &'static str, provider: ProviderConfig) -> TestApp {
    TestApp::spawn(move |s| {
        s.providers.0.insert(name.into(), provider.clone());
        s.channels.sms = name.into();
    })
    .await
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vonage_example_sends_the_form_and_reads_the_status_inside_the_200() {
    let vonage = MockServer::start().await;
    let answer = |to: &str, status: &str| {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "message-count": "1",
            "messages": [{ "to": to, "message-id": "0A00000012345678", "status": status,
                           "remaining-balance": "3.14", "message-price": "0.0333", "network": "310260" }]
        }))
    };
    // The fake answers per destination: one accepted, one on a barred number (status 29).
    for (to, status) in [("14155550123", "0"), ("14155550124", "29")] {
        Mock::given(method("POST"))
            .and(path("/sms/json"))
            .and(wiremock::matchers::body_string_contains(format!("to={to}")))
            .respond_with(answer(to, status))
            .mount(&vonage)
            .await;
    }
    let secrets = [("api_key", "key123"), ("api_secret", "s3cret")];
    let mut app = spawn(
        "vonage",
        example("vonage.toml", "vonage", &vonage.uri(), &secrets),
    )
    .await;

    let ok = job("sms", "+14155550123", "246810");
    let before = chrono::Utc::now();
    app.publish(&ok).await;
    assert_eq!(app.report_for(&id(&ok)).await.handled, SENT);
    let after = chrono::Utc::now();
    let _accepted = app.event_for(&id(&ok)).await;
    let sent = app.event_for(&id(&ok)).await;
    assert_eq!(sent["provider"], "vonage");
    assert_eq!(sent["provider_message_id"], "0A00000012345678");

    let barred = job("sms", "+14155550124", "135790");
    app.publish(&barred).await;
    assert_eq!(app.report_for(&id(&barred)).await.handled, FAILED);
    let _accepted = app.event_for(&id(&barred)).await;
    assert_eq!(
        app.event_for(&id(&barred)).await["reason"],
        "invalid_destination"
    );

    let requests = vonage.received_requests().await.unwrap();
    let mut first = form(&requests[0].body);
    // Vonage's ttl is in milliseconds: the code's remaining life.
    let ttl: u64 = first.remove("ttl").unwrap().parse().unwrap();
    assert_eq!(ttl % 1000, 0);
    assert!(
        life_window(&ok, before, after).contains(&(ttl / 1000)),
        "ttl {ttl}"
    );
    let expected: HashMap<String, String> = [
        ("api_key", "key123"),
        ("api_secret", "s3cret"),
        ("from", "otpd"),
        ("to", "14155550123"),
        (
            "text",
            "246810 is your otpd verification code. It expires in 5 minutes.",
        ),
        ("type", "text"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(first, expected);
    // A permanent answer is not retried.
    assert_eq!(requests.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plivo_example_posts_json_with_basic_auth_and_reads_the_uuid() {
    let plivo = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/Account/MAXXXXXXXXXXXXXXXXXX/Message/"))
        // base64("MAXXXXXXXXXXXXXXXXXX:plivo-token")
        .and(header(
            "authorization",
            "Basic TUFYWFhYWFhYWFhYWFhYWFhYWFg6cGxpdm8tdG9rZW4=",
        ))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(202).set_body_json(serde_json::json!({
            "api_id": "d8c6e7a2-0000-11ee-8000-000000000000",
            "message": "message(s) queued",
            "message_uuid": ["db3ce55a-7f1d-11e1-8ea7-1231380bc196"]
        })))
        .mount(&plivo)
        .await;
    let secrets = [
        ("auth_id", "MAXXXXXXXXXXXXXXXXXX"),
        ("auth_token", "plivo-token"),
    ];
    let mut app = spawn(
        "plivo",
        example("plivo.toml", "plivo", &plivo.uri(), &secrets),
    )
    .await;

    let j = job("sms", "+14155550123", "864209");
    let before = chrono::Utc::now();
    app.publish(&j).await;
    assert_eq!(app.report_for(&id(&j)).await.handled, SENT);
    let after = chrono::Utc::now();
    let _accepted = app.event_for(&id(&j)).await;
    let sent = app.event_for(&id(&j)).await;
    assert_eq!(
        sent["provider_message_id"],
        "db3ce55a-7f1d-11e1-8ea7-1231380bc196"
    );

    let requests = plivo.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let mut body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    // Plivo's message_expiry is a JSON integer, in seconds: the code's remaining life.
    let expiry = body
        .as_object_mut()
        .unwrap()
        .remove("message_expiry")
        .unwrap();
    let expiry = expiry.as_u64().expect("message_expiry is a number");
    assert!(life_window(&j, before, after).contains(&expiry), "{expiry}");
    assert_eq!(
        body,
        serde_json::json!({
            "src": "+15005550006",
            "dst": "14155550123",
            "text": "864209 is your otpd verification code. It expires in 5 minutes."
        })
    );
}
