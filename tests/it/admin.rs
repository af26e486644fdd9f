//! The admin API through HTTP: the bearer token, "where is my code?", paging, provider
//! health, and every answer checked against the OpenAPI document in docs/.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

struct Admin {
    base: String,
    client: reqwest::Client,
    spec: Value,
}

impl Admin {
    fn new(app: &TestApp) -> Admin {
        let spec = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
        Admin {
            base: format!("http://{}", app.http),
            client: reqwest::Client::new(),
            spec,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let response = r.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The body must match the named schema of the OpenAPI document.
    fn conforms(&self, schema: &str, body: &Value) {
        let mut s = json!({ "$ref": format!("#/components/schemas/{schema}") });
        s["components"] = self.spec["components"].clone();
        let validator = jsonschema::validator_for(&s).unwrap();
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{schema}: {errors:?} in {body}");
    }
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_answers_where_a_code_is() {
    let mut app = TestApp::spawn(|s| s.http.admin_token = TOKEN.into()).await;
    let admin = Admin::new(&app);
    let mut first = job("sms", "+447400123456", "482913");
    first["account_id"] = "acct-a".into();
    let mut second = job("sms", "+447400123460", "482914");
    second["account_id"] = "acct-a".into();
    let other = job("email", "someone@example.com", "482915");
    for j in [&first, &second, &other] {
        app.publish(j).await;
        app.event_where(|k, e| k == "delivery.sent" && e["challenge_id"] == id(j))
            .await;
    }

    let path = format!("/v1/deliveries/{}", id(&first));
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = admin.get(&path, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(body["error"], "unauthorized");
    }
    let (status, body) = admin.get(&path, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    admin.conforms("Delivery", &body["delivery"]);
    assert_eq!(body["delivery"]["state"], "sent");
    assert_eq!(body["delivery"]["destination_masked"], "+4474•••3456");
    assert!(!body.to_string().contains("482913"), "never the code");
    assert!(
        !body.to_string().contains("+447400123456"),
        "never the whole number"
    );
    let states: Vec<&str> = body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            admin.conforms("TimelineEntry", e);
            e["state"].as_str().unwrap_or("-")
        })
        .collect();
    assert_eq!(states, ["received", "sending", "sent"]);
    let (status, _) = admin
        .get("/v1/deliveries/no-such-challenge", Some(TOKEN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Support has the user's number: every delivery to it, without the number being stored.
    let (_, found) = admin
        .get("/v1/deliveries?to=%2B447400123456", Some(TOKEN))
        .await;
    let ids: Vec<&str> = found["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["challenge_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id(&first)]);

    // Pages of one, newest first, until the cursor runs out.
    let mut seen = Vec::new();
    let mut query = "/v1/deliveries?account_id=acct-a&state=sent&limit=1".to_string();
    loop {
        let (status, page) = admin.get(&query, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        for d in page["deliveries"].as_array().unwrap() {
            admin.conforms("Delivery", d);
            seen.push(d["challenge_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                query = format!("/v1/deliveries?account_id=acct-a&state=sent&limit=1&cursor={c}")
            }
            None => break,
        }
    }
    assert_eq!(seen, [id(&second), id(&first)]);
    for bad in ["state=lost", "limit=0", "since=yesterday", "cursor=zz"] {
        let (status, body) = admin
            .get(&format!("/v1/deliveries?{bad}"), Some(TOKEN))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["detail"].is_string());
    }

    let (status, health) = admin.get("/v1/health/providers", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    admin.conforms("ProviderHealth", &health);
    let sms = health["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "log" && p["channel"] == "sms")
        .expect("the log provider's sms health");
    assert_eq!(sms["last_5m"]["attempts"], 2);
    assert_eq!(sms["last_5m"]["success_pct"], 100.0);
    assert_eq!(sms["circuit"], "closed");
    assert_eq!(health["circuits"]["log"], "closed");

    let served: Value = reqwest::get(format!("{}/v1/openapi.json", admin.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        served, admin.spec,
        "the served document is the one in docs/"
    );
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_refuses_everyone() {
    let app = TestApp::spawn(|_| {}).await;
    let admin = Admin::new(&app);
    let (status, _) = admin.get("/v1/health/providers", Some("")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = admin
        .get("/v1/deliveries", Some("anything-at-all-0123456789abcdef"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
