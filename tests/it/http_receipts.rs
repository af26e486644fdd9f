//! Receipts of the generic HTTP provider, end to end with the shipped examples: Plivo's status
//! callbacks (a form signed with `X-Plivo-Signature-V2`), Vonage's DLRs (JSON signed with
//! `sig`) and Vonage Messages API status webhooks (an HS256 JWT), each posted as the vendor
//! posts them; forged ones are refused and change nothing.

use crate::support::{TestApp, id, job, provider_example as example};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use otpd::config::{BodyFormat, HttpReceiptSettings, ProviderConfig, ReceiptAuth};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const PUBLIC_URL: &str = "https://otpd.example.com";

fn hmac256(key: &str, text: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    m.update(text.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Starts otpd with `provider` as the SMS chain, at the public URL vendors post to, against a
/// fake vendor answering every send with `answer`.
async fn spawn(name: &'static str, provider: ProviderConfig) -> TestApp {
    TestApp::spawn(move |s| {
        s.providers.0.insert(name.into(), provider.clone());
        s.channels.sms = name.into();
        s.http.public_url = PUBLIC_URL.into();
    })
    .await
}

async fn vendor(answer: Value, status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_json(answer))
        .mount(&server)
        .await;
    server
}

/// Sends one SMS and returns its `sent` event.
async fn sent(app: &mut TestApp, to: &str) -> Value {
    let j = job("sms", to, "864209");
    app.publish(&j).await;
    app.event_where(|_, e| e["challenge_id"] == id(&j) && e["state"] == "sent")
        .await
}

async fn post(
    app: &TestApp,
    name: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    form: bool,
) -> StatusCode {
    let mut r = reqwest::Client::new()
        .post(format!("http://{}/webhooks/http/{name}", app.http))
        .header(
            "content-type",
            if form {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            },
        )
        .body(body);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plivo_status_callbacks_signed_v2_move_the_message_once_and_forged_ones_are_refused() {
    let uuid = "db3ce55a-7f1d-11e1-8ea7-1231380bc196";
    let plivo = vendor(serde_json::json!({ "message_uuid": [uuid] }), 202).await;
    let secrets = [
        ("auth_id", "MAXXXXXXXXXXXXXXXXXX"),
        ("auth_token", "plivo-token"),
    ];
    let mut app = spawn(
        "plivo",
        example("plivo.toml", "plivo", &plivo.uri(), &secrets),
    )
    .await;
    let s = sent(&mut app, "+14155550123").await;
    assert_eq!(s["provider_message_id"], uuid);
    let request: Value =
        serde_json::from_slice(&plivo.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        request["url"],
        "https://otpd.example.com/webhooks/http/plivo"
    );

    let url = "https://otpd.example.com/webhooks/http/plivo";
    let signed = |nonce: &str, token: &str| {
        vec![
            (
                "X-Plivo-Signature-V2",
                STANDARD.encode(hmac256(token, &format!("{url}{nonce}"))),
            ),
            ("X-Plivo-Signature-V2-Nonce", nonce.to_string()),
        ]
    };
    let form = |status: &str| {
        format!("MessageUUID={uuid}&Status={status}&ErrorCode=30&To=14155550123").into_bytes()
    };
    assert_eq!(
        post(&app, "plivo", &[], form("undelivered"), true).await,
        StatusCode::FORBIDDEN
    );
    let forged = signed("88", "not-the-token");
    assert_eq!(
        post(&app, "plivo", &forged, form("undelivered"), true).await,
        StatusCode::FORBIDDEN
    );
    let mut replayed = signed("88", "plivo-token");
    replayed[1].1 = "89".into();
    assert_eq!(
        post(&app, "plivo", &replayed, form("undelivered"), true).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.state_of(&id_of(&s)).await.0,
        "sent",
        "a forged receipt changes nothing"
    );
    assert_eq!(
        post(
            &app,
            "nobody",
            &signed("1", "plivo-token"),
            form("delivered"),
            true
        )
        .await,
        StatusCode::NOT_FOUND
    );

    let ok = signed("90", "plivo-token");
    assert_eq!(
        post(&app, "plivo", &ok, form("queued"), true).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post(&app, "plivo", &ok, form("undelivered"), true).await,
        StatusCode::NO_CONTENT
    );
    let event = app
        .event_where(|_, e| e["challenge_id"] == s["challenge_id"] && e["state"] != "sent")
        .await;
    assert_eq!(
        (&event["state"], &event["carrier_error"]),
        (&"undelivered".into(), &"30".into())
    );
    assert_eq!(
        post(&app, "plivo", &ok, form("delivered"), true).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.state_of(&id_of(&s)).await.0,
        "undelivered",
        "a final receipt is final"
    );
}

fn id_of(event: &Value) -> String {
    event["challenge_id"].as_str().unwrap().to_string()
}

async fn vonage(receipts: Option<HttpReceiptSettings>) -> (TestApp, MockServer) {
    let answer = serde_json::json!({ "message-count": "1", "messages": [{ "status": "0", "message-id": "0A00000012345678" }] });
    let server = vendor(answer, 200).await;
    let secrets = [
        ("api_key", "key123"),
        ("api_secret", "s3cret"),
        ("signature_secret", "sig-secret"),
    ];
    let mut provider = example("vonage.toml", "vonage", &server.uri(), &secrets);
    if let (ProviderConfig::Http(h), Some(r)) = (&mut provider, receipts) {
        h.receipts = Some(Box::new(r));
    }
    (spawn("vonage", provider).await, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vonage_dlrs_signed_with_sig_are_taken_and_forged_ones_refused() {
    let (mut app, server) = vonage(None).await;
    let s = sent(&mut app, "+14155550123").await;
    let request =
        String::from_utf8(server.received_requests().await.unwrap()[0].body.clone()).unwrap();
    assert!(
        request.contains("callback=https%3A%2F%2Fotpd.example.com%2Fwebhooks%2Fhttp%2Fvonage"),
        "{request}"
    );

    // The DLR as Vonage posts it with signed webhooks on: every field but `sig`, sorted.
    let fields = [
        ("err-code", "0"),
        ("message-timestamp", "2030-01-01 12:00:00"),
        ("messageId", "0A00000012345678"),
        ("msisdn", "14155550123"),
        ("network-code", "310260"),
        ("status", "delivered"),
        ("timestamp", "1893499200"),
    ];
    let text: String = fields.iter().map(|(k, v)| format!("&{k}={v}")).collect();
    let body = |sig: &str, status: &str| {
        let mut o: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        o.insert("status".into(), status.into());
        o.insert("sig".into(), sig.into());
        serde_json::to_vec(&o).unwrap()
    };
    let sig = hex::encode(hmac256("sig-secret", &text));
    assert_eq!(
        post(&app, "vonage", &[], body(&sig, "failed"), false).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(&app, "vonage", &[], body("00ff", "delivered"), false).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.state_of(&id_of(&s)).await.0, "sent");
    assert_eq!(
        post(&app, "vonage", &[], body(&sig, "delivered"), false).await,
        StatusCode::NO_CONTENT
    );
    let event = app
        .event_where(|_, e| e["challenge_id"] == s["challenge_id"] && e["state"] != "sent")
        .await;
    assert_eq!(
        (&event["state"], &event["provider"]),
        (&"delivered".into(), &"vonage".into())
    );
}

fn jwt(claims: Value, key: &str) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mac = hmac256(key, &format!("{head}.{claims}"));
    format!("Bearer {head}.{claims}.{}", URL_SAFE_NO_PAD.encode(mac))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vonage_messages_status_webhooks_signed_with_a_jwt_are_taken_and_forged_ones_refused() {
    let receipts = HttpReceiptSettings {
        format: BodyFormat::Json,
        message_id: "/message_uuid".into(),
        status: "/status".into(),
        error_code: "/error/type".into(),
        delivered: vec!["delivered".into()],
        undelivered: vec!["rejected".into(), "undeliverable".into()],
        auth: ReceiptAuth::Jwt {
            secret: "signature_secret".into(),
            max_age_secs: 300,
        },
    };
    let (mut app, _server) = vonage(Some(receipts)).await;
    let s = sent(&mut app, "+14155550123").await;
    let body = serde_json::json!({
        "message_uuid": "0A00000012345678", "to": "14155550123", "from": "otpd",
        "timestamp": "2030-01-01T12:00:00Z", "status": "undeliverable", "channel": "sms",
        "error": { "type": "https://developer.vonage.com/api-errors/messages#1320", "title": "1320" }
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let hash = hex::encode(Sha256::digest(&bytes));
    let now = chrono::Utc::now().timestamp();
    let claims =
        serde_json::json!({ "iat": now, "jti": "j-1", "iss": "Vonage", "payload_hash": hash });
    let auth = |c: Value, key: &str| vec![("authorization", jwt(c, key))];
    let other_body =
        serde_json::json!({ "iat": now, "payload_hash": hex::encode(Sha256::digest(b"{}")) });
    let stale = serde_json::json!({ "iat": now - 3600, "payload_hash": hash });
    for (headers, why) in [
        (auth(claims.clone(), "not-the-secret"), "wrong key"),
        (auth(other_body, "sig-secret"), "another body"),
        (auth(stale, "sig-secret"), "too old"),
        (vec![], "unsigned"),
    ] {
        assert_eq!(
            post(&app, "vonage", &headers, bytes.clone(), false).await,
            StatusCode::FORBIDDEN,
            "{why}"
        );
    }
    assert_eq!(app.state_of(&id_of(&s)).await.0, "sent");
    assert_eq!(
        post(&app, "vonage", &auth(claims, "sig-secret"), bytes, false).await,
        StatusCode::NO_CONTENT
    );
    let event = app
        .event_where(|_, e| e["challenge_id"] == s["challenge_id"] && e["state"] != "sent")
        .await;
    assert_eq!(event["state"], "undelivered");
    assert_eq!(
        event["carrier_error"],
        "https://developer.vonage.com/api-errors/messages#1320"
    );
}
