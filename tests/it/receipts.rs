//! Provider receipts through the public contract: Twilio's signed status callbacks move a
//! `sent` delivery to `delivered` or `undelivered`, once, and publish the event.

use crate::support::*;
use otpd::providers::twilio_receipt::signature;
use reqwest::StatusCode;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PUBLIC_URL: &str = "https://otpd.example.com";
const CALLBACK: &str = "https://otpd.example.com/webhooks/twilio";

/// A fake Twilio that answers each destination with its own message SID.
async fn fake_twilio(sids: &[(&str, &str)]) -> MockServer {
    let server = MockServer::start().await;
    for (to, sid) in sids {
        let to = to.replace('+', "%2B");
        Mock::given(method("POST"))
            .and(body_string_contains(format!("To={to}")))
            .respond_with(
                ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": sid })),
            )
            .mount(&server)
            .await;
    }
    server
}

async fn spawn(server: &MockServer) -> TestApp {
    let twilio = twilio(server);
    TestApp::spawn(move |s| {
        twilio(s);
        s.http.public_url = PUBLIC_URL.into();
    })
    .await
}

/// Posts a callback signed with `token` (None: unsigned).
async fn callback(app: &TestApp, params: &[(&str, &str)], token: Option<&str>) -> StatusCode {
    let mut all = vec![("AccountSid", ACCOUNT_SID)];
    all.extend_from_slice(params);
    let owned: Vec<(String, String)> = all
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/webhooks/twilio", app.http))
        .form(&all);
    if let Some(token) = token {
        request = request.header("X-Twilio-Signature", signature(token, CALLBACK, &owned));
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn signed_receipts_move_a_sent_sms_on_once_and_forged_ones_change_nothing() {
    let server = fake_twilio(&[
        ("+447400123456", "SMdelivered1"),
        ("+447400123457", "SMundeliv1"),
    ])
    .await;
    let mut app = spawn(&server).await;
    let ok = job("sms", "+447400123456", "482913");
    let lost = job("sms", "+447400123457", "482914");
    for j in [&ok, &lost] {
        app.publish(j).await;
        let sent = app
            .event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(j))
            .await;
        assert_eq!(sent["carrier_error"], serde_json::Value::Null);
    }
    let requests = server.received_requests().await.unwrap();
    let body = String::from_utf8_lossy(&requests[0].body).into_owned();
    assert!(
        body.contains("StatusCallback=https%3A%2F%2Fotpd.example.com%2Fwebhooks%2Ftwilio"),
        "every send asks for a receipt: {body}"
    );

    let delivered = [
        ("MessageSid", "SMdelivered1"),
        ("MessageStatus", "delivered"),
    ];
    assert_eq!(
        callback(&app, &delivered, None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        callback(&app, &delivered, Some("not-the-token")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.state_of(&id(&ok)).await.0,
        "sent",
        "a forged receipt changes nothing"
    );

    let interim = [("MessageSid", "SMdelivered1"), ("MessageStatus", "sent")];
    assert_eq!(
        callback(&app, &interim, Some("test-token")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        callback(&app, &delivered, Some("test-token")).await,
        StatusCode::NO_CONTENT
    );
    let event = app.event_for(&id(&ok)).await;
    assert_eq!(
        (&event["state"], &event["provider_message_id"]),
        (&"delivered".into(), &"SMdelivered1".into())
    );
    assert_eq!(event["event_id"], format!("{}/delivered", id(&ok)));
    assert_eq!(event["account_id"], ok["account_id"]);

    // A repeat, and a late failure report, never move it back.
    let late = [
        ("MessageSid", "SMdelivered1"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    assert_eq!(
        callback(&app, &delivered, Some("test-token")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        callback(&app, &late, Some("test-token")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.state_of(&id(&ok)).await.0, "delivered");

    let undelivered = [
        ("MessageSid", "SMundeliv1"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    assert_eq!(
        callback(&app, &undelivered, Some("test-token")).await,
        StatusCode::NO_CONTENT
    );
    let event = app.event_for(&id(&lost)).await;
    assert_eq!(event["state"], "undelivered");
    assert_eq!(event["carrier_error"], "30003");
    assert_eq!(event["reason"], "carrier_undelivered");
    let (carrier_error, events): (Option<String>, i64) = sqlx::query_as(
        "SELECT carrier_error, (SELECT count(*) FROM delivery_events e WHERE e.challenge_id = d.challenge_id AND e.state = 'undelivered')
           FROM deliveries d WHERE challenge_id = $1",
    )
    .bind(id(&lost))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((carrier_error.as_deref(), events), (Some("30003"), 1));

    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"otpd_receipts_total{provider="twilio",channel="sms",country="GB",state="delivered"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"otpd_webhook_rejected_total{reason="bad_signature"} 2"#));
    assert!(
        metrics
            .contains("otpd_delivery_latency_seconds_count{provider=\"twilio\",channel=\"sms\"} 1")
    );
}

/// Twilio can post a receipt before otpd has committed `sent` (its answer and the callback
/// race); the receipt is parked and applied once the delivery is recorded.
#[tokio::test]
async fn a_receipt_that_overtakes_the_send_is_applied_afterwards_and_calls_have_receipts_too() {
    let server = fake_twilio(&[("+447400123458", "SMearly1"), ("+447400123459", "CAcall1")]).await;
    let mut app = spawn(&server).await;
    let early = [("MessageSid", "SMearly1"), ("MessageStatus", "delivered")];
    assert_eq!(
        callback(&app, &early, Some("test-token")).await,
        StatusCode::NO_CONTENT
    );
    let sms = job("sms", "+447400123458", "111222");
    app.publish(&sms).await;
    let delivered = app
        .event_where(|k, e| k == "delivery.delivered" && e["challenge_id"] == id(&sms))
        .await;
    assert_eq!(delivered["provider_message_id"], "SMearly1");

    let call = job("voice", "+447400123459", "333444");
    app.publish(&call).await;
    app.event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(&call))
        .await;
    let busy = [("CallSid", "CAcall1"), ("CallStatus", "no-answer")];
    assert_eq!(
        callback(&app, &busy, Some("test-token")).await,
        StatusCode::NO_CONTENT
    );
    let event = app.event_for(&id(&call)).await;
    assert_eq!(
        (&event["state"], &event["carrier_error"]),
        (&"undelivered".into(), &"no-answer".into())
    );
    let pending: (i64,) = sqlx::query_as("SELECT count(*) FROM pending_receipts")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(pending.0, 0);
}

/// Pumping detection with receipts on: receipts move rows on from `sent`, and a burst on one
/// number range whose codes nobody enters must still be flagged, whatever its receipts said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pumping_is_flagged_when_receipts_have_moved_the_codes_on_from_sent() {
    let numbers: Vec<(String, String)> = (0..12)
        .map(|i| (format!("+141555511{i:02}"), format!("SMpump{i:02}")))
        .collect();
    let pairs: Vec<(&str, &str)> = numbers
        .iter()
        .map(|(to, sid)| (to.as_str(), sid.as_str()))
        .collect();
    let server = fake_twilio(&pairs).await;
    let twilio = twilio(&server);
    let mut app = TestApp::spawn(move |s| {
        twilio(s);
        s.http.public_url = PUBLIC_URL.into();
        crate::limits::judge_bursts_of_12(s, otpd::config::ConversionMode::Shadow);
    })
    .await;
    // Each code's receipt arrives as soon as it is sent, half delivered and half not, so no
    // more than one of the range is ever in `sent` when the check runs.
    for (i, (to, sid)) in numbers.iter().enumerate() {
        let j = job("sms", to, "2222");
        app.publish(&j).await;
        app.event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(&j))
            .await;
        let status = if i % 2 == 0 {
            "delivered"
        } else {
            "undelivered"
        };
        let params = [("MessageSid", sid.as_str()), ("MessageStatus", status)];
        assert_eq!(
            callback(&app, &params, Some("test-token")).await,
            StatusCode::NO_CONTENT
        );
        assert_ne!(app.state_of(&id(&j)).await.0, "sent");
    }
    crate::limits::pumping_burst_flagged(&mut app).await;
}
