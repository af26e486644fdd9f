//! WhatsApp through a loopback fake of Meta's Cloud API: the exact template request, the
//! webhook's verification handshake, and signed status posts that move a delivery once while
//! forged and unsigned ones are refused.

use crate::support::*;
use otpd::config::{ProviderConfig, Secret, WhatsappSettings, WhatsappTemplate};
use otpd::providers::whatsapp_receipt::signature;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NUMBER_ID: &str = "106540352242922";
const APP_SECRET: &str = "meta-app-secret";
const VERIFY_TOKEN: &str = "meta-verify-token";

async fn fake_meta() -> MockServer {
    let server = MockServer::start().await;
    let messages = format!("/v21.0/{NUMBER_ID}/messages");
    // The recipient without WhatsApp: Meta's 131026.
    Mock::given(method("POST"))
        .and(path(messages.clone()))
        .and(body_partial_json(json!({"to": "447400123999"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "(#131026) Message Undeliverable.", "type": "OAuthException",
            "code": 131026, "fbtrace_id": "AbC"}})))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(messages))
        .and(header("authorization", "Bearer meta-access-token"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": "447400123456", "wa_id": "447400123456"}],
            "messages": [{"id": "wamid.HBgLMTQ0NzQwMDEyMzQ1NhUCABEYEjQ"}]
        })))
        .mount(&server)
        .await;
    server
}

async fn spawn(meta: &MockServer) -> TestApp {
    let mut wa = WhatsappSettings {
        base_url: meta.uri(),
        phone_number_id: NUMBER_ID.into(),
        access_token: Secret::from("meta-access-token"),
        app_secret: Secret::from(APP_SECRET),
        verify_token: Secret::from(VERIFY_TOKEN),
        ..WhatsappSettings::default()
    };
    for (locale, language) in [("en", "en_US"), ("de", "de")] {
        let name = "otpd_code".to_string();
        let language = language.to_string();
        wa.templates
            .insert(locale.into(), WhatsappTemplate { name, language });
    }
    TestApp::spawn(move |s| {
        s.providers
            .0
            .insert("meta".into(), ProviderConfig::WhatsappCloud(wa.clone()));
        s.channels.whatsapp = "meta".into();
    })
    .await
}

/// Posts `body` to the webhook, signed with `secret` (None: unsigned).
async fn post(app: &TestApp, body: &Value, secret: Option<&str>) -> StatusCode {
    let raw = serde_json::to_vec(body).unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/webhooks/whatsapp", app.http))
        .header("content-type", "application/json");
    if let Some(secret) = secret {
        request = request.header("X-Hub-Signature-256", signature(secret, &raw));
    }
    request.body(raw).send().await.unwrap().status()
}

fn status_post(wamid: &str, status: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
    "field": "messages",
    "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": NUMBER_ID},
        "statuses": [{"id": wamid, "status": status, "timestamp": "1750263773",
                      "recipient_id": "447400123456"}]
    }}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_job_sends_the_authentication_template_and_takes_signed_receipts_once() {
    let meta = fake_meta().await;
    let mut app = spawn(&meta).await;
    let mut j = job("whatsapp", "+447400123456", "482913");
    j["locale"] = "de-AT".into();
    app.publish(&j).await;
    let sent = app
        .event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(&j))
        .await;
    let wamid = "wamid.HBgLMTQ0NzQwMDEyMzQ1NhUCABEYEjQ";
    assert_eq!(
        (
            &sent["channel"],
            &sent["provider"],
            &sent["provider_message_id"]
        ),
        (&json!("whatsapp"), &json!("meta"), &json!(wamid))
    );
    let requests = meta.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    let code = json!([{"type": "text", "text": "482913"}]);
    assert_eq!(
        body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "447400123456",
            "type": "template",
            "template": {
                "name": "otpd_code",
                "language": {"code": "de"},
                "components": [
                    {"type": "body", "parameters": code},
                    {"type": "button", "sub_type": "url", "index": "0", "parameters": code}
                ]
            }
        }),
        "de-AT falls back to the de template"
    );

    // The subscription handshake answers the challenge only for the verify token.
    let verify = |token: &str| {
        format!(
            "http://{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            app.http
        )
    };
    let ok = reqwest::get(verify(VERIFY_TOKEN)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let wrong = reqwest::get(verify("guess")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);

    let delivered = status_post(wamid, "delivered");
    assert_eq!(post(&app, &delivered, None).await, StatusCode::FORBIDDEN);
    assert_eq!(
        post(&app, &delivered, Some("not-the-secret")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.state_of(&id(&j)).await.0,
        "sent",
        "a forged post changes nothing"
    );

    assert_eq!(
        post(&app, &delivered, Some(APP_SECRET)).await,
        StatusCode::OK
    );
    let event = app.event_for(&id(&j)).await;
    assert_eq!(
        (&event["state"], &event["provider_message_id"]),
        (&json!("delivered"), &json!(wamid))
    );
    // A replay, a later `read` and a late `failed` change nothing.
    for again in [
        delivered,
        status_post(wamid, "read"),
        status_post(wamid, "failed"),
    ] {
        assert_eq!(post(&app, &again, Some(APP_SECRET)).await, StatusCode::OK);
    }
    let (state, events): (String, i64) = sqlx::query_as(
        "SELECT state, (SELECT count(*) FROM delivery_events e WHERE e.challenge_id = d.challenge_id
                          AND e.state IN ('delivered', 'undelivered'))
           FROM deliveries d WHERE challenge_id = $1",
    )
    .bind(id(&j))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((state.as_str(), events), ("delivered", 1));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otpd_webhook_rejected_total{reason="bad_signature"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_without_whatsapp_fails_as_an_invalid_destination() {
    let meta = fake_meta().await;
    let mut app = spawn(&meta).await;
    let j = job("whatsapp", "+447400123999", "135790");
    app.publish(&j).await;
    let failed = app
        .event_where(|k, e| k == "delivery.failed" && e["challenge_id"] == id(&j))
        .await;
    assert_eq!(failed["reason"], "invalid_destination");
    assert_eq!(
        meta.received_requests().await.unwrap().len(),
        1,
        "a destination error is not retried"
    );
}
