use super::*;
use crate::config::load_from_str;

const HEAD: &str = "[channels]\nsms = \"v\"\n[store]\ndestination_hmac_key = \"unit-test-destination-hmac-key-0123456789\"\n";

/// A provider's receipt section from TOML, as an operator writes it.
fn settings(receipts: &str) -> HttpReceiptSettings {
    let toml = format!(
        "{HEAD}[providers.v]\nkind = \"http\"\nurl = \"https://v.example/send\"\n[providers.v.secrets]\ntoken = \"s3cret\"\n[providers.v.receipts]\n{receipts}"
    );
    let s = load_from_str(&toml).unwrap();
    match s.providers.0.get("v") {
        Some(crate::config::ProviderConfig::Http(h)) => *h.receipts.clone().unwrap(),
        other => panic!("{other:?}"),
    }
}

fn secret(name: &str) -> Option<&'static str> {
    (name == "token").then_some("s3cret")
}

fn posted<'a>(headers: &'a BTreeMap<String, String>, body: &'a [u8]) -> Posted<'a> {
    Posted {
        url: "https://otpd.example/webhooks/http/v",
        headers,
        body,
        now: 1_700_000_000,
    }
}

const PLIVO_LIKE: &str = r#"format = "form"
message_id = "MessageUUID"
status = "Status"
error_code = "ErrorCode"
delivered = ["delivered"]
undelivered = ["undelivered", "failed"]
auth = { kind = "hmac", header = "X-Sig", algorithm = "sha256", encoding = "base64", key_secret = "token", signed = "{{ url }}{{ headers['x-nonce'] }}" }
"#;

#[test]
fn an_hmac_header_over_url_and_nonce_verifies_and_a_forged_one_does_not() {
    let r = settings(PLIVO_LIKE);
    let body = b"MessageUUID=m-1&Status=failed&ErrorCode=300";
    let mac = hmac(
        HmacAlgorithm::Sha256,
        b"s3cret",
        b"https://otpd.example/webhooks/http/v12345",
    )
    .unwrap();
    let mut h = BTreeMap::from([("x-nonce".to_string(), "12345".to_string())]);
    h.insert(
        "x-sig".into(),
        format!("bm90LWl0, {}", STANDARD.encode(&mac)),
    );
    assert!(verify(&r, secret, &posted(&h, body)));
    h.insert("x-nonce".into(), "12346".into());
    assert!(!verify(&r, secret, &posted(&h, body)), "another nonce");
    h.remove("x-sig");
    assert!(!verify(&r, secret, &posted(&h, body)), "unsigned");
    let got = read(&r, body).unwrap();
    assert_eq!(
        (got.sid.as_str(), got.state, got.error.as_deref()),
        ("m-1", DeliveryState::Undelivered, Some("300"))
    );
    assert!(
        read(&r, b"MessageUUID=m-1&Status=queued").is_none(),
        "interim"
    );
}

#[test]
fn an_hmac_in_a_body_field_signs_the_other_fields_sorted() {
    let r = settings(
        r#"format = "json"
message_id = "/messageId"
status = "/status"
delivered = ["delivered"]
undelivered = ["failed", "rejected", "expired"]
auth = { kind = "hmac", field = "sig", algorithm = "sha256", encoding = "hex", key_secret = "token", signed = "{% for k, v in params %}&{{ k }}={{ v }}{% endfor %}" }
"#,
    );
    let mac = hmac(
        HmacAlgorithm::Sha256,
        b"s3cret",
        b"&messageId=0A1&status=delivered&timestamp=1700000000",
    )
    .unwrap();
    let body = format!(
        r#"{{"status":"delivered","messageId":"0A1","timestamp":1700000000,"sig":"{}"}}"#,
        hex::encode_upper(mac)
    );
    let h = BTreeMap::new();
    assert!(verify(&r, secret, &posted(&h, body.as_bytes())));
    let tampered = body.replace("delivered", "failed");
    assert!(!verify(&r, secret, &posted(&h, tampered.as_bytes())));
    assert_eq!(
        read(&r, body.as_bytes()).unwrap().state,
        DeliveryState::Delivered
    );
}

fn jwt_token(claims: &Value, key: &[u8]) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mac = hmac(
        HmacAlgorithm::Sha256,
        key,
        format!("{head}.{claims}").as_bytes(),
    )
    .unwrap();
    format!("{head}.{claims}.{}", URL_SAFE_NO_PAD.encode(mac))
}

#[test]
fn a_jwt_must_be_signed_fresh_and_over_this_body() {
    let r = settings(
        r#"format = "json"
message_id = "/message_uuid"
status = "/status"
delivered = ["delivered"]
undelivered = ["rejected", "undeliverable"]
auth = { kind = "jwt", secret = "token" }
"#,
    );
    let body = br#"{"message_uuid":"u-1","status":"undeliverable","error":{"type":"x"}}"#;
    let hash = hex::encode(sha2::Sha256::digest(body));
    let check = |claims: Value, key: &[u8]| {
        let h = BTreeMap::from([(
            "authorization".to_string(),
            format!("Bearer {}", jwt_token(&claims, key)),
        )]);
        verify(&r, secret, &posted(&h, body))
    };
    let now = 1_700_000_000;
    assert!(check(
        serde_json::json!({"iat": now - 10, "payload_hash": hash}),
        b"s3cret"
    ));
    assert!(
        check(serde_json::json!({"iat": now}), b"s3cret"),
        "no payload_hash claimed"
    );
    assert!(
        !check(
            serde_json::json!({"iat": now, "payload_hash": hash}),
            b"other"
        ),
        "wrong key"
    );
    assert!(
        !check(
            serde_json::json!({"iat": now - 301, "payload_hash": hash}),
            b"s3cret"
        ),
        "too old"
    );
    assert!(
        !check(
            serde_json::json!({"iat": now, "payload_hash": "00"}),
            b"s3cret"
        ),
        "another body"
    );
    assert!(
        !check(serde_json::json!({"payload_hash": hash}), b"s3cret"),
        "no iat"
    );
    assert_eq!(read(&r, body).unwrap().state, DeliveryState::Undelivered);
}

#[test]
fn basic_auth_takes_exactly_the_configured_pair() {
    let r = settings(
        r#"format = "form"
message_id = "id"
status = "s"
delivered = ["ok"]
undelivered = ["ko"]
auth = { kind = "basic", username_secret = "token", password_secret = "token" }
"#,
    );
    let with = |v: String| BTreeMap::from([("authorization".to_string(), v)]);
    let good = with(format!("Basic {}", STANDARD.encode("s3cret:s3cret")));
    assert!(verify(&r, secret, &posted(&good, b"id=1&s=ok")));
    let bad = with(format!("Basic {}", STANDARD.encode("s3cret:guess")));
    assert!(!verify(&r, secret, &posted(&bad, b"id=1&s=ok")));
}

#[test]
fn a_receipt_section_naming_an_unknown_secret_is_refused_naming_the_key() {
    let toml = HEAD.to_string()
        + "[providers.v]\nkind = \"http\"\nurl = \"https://v.example/send\"\n[providers.v.receipts]\nformat = \"form\"\nmessage_id = \"id\"\nstatus = \"s\"\ndelivered = [\"ok\"]\nundelivered = []\nauth = { kind = \"jwt\", secret = \"nope\" }\n";
    let e = load_from_str(&toml).unwrap_err().to_string();
    assert!(e.contains("providers.v.receipts.auth.secret"), "{e}");
}
