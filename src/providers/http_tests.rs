//! The response classification of the shipped vendor examples, and template rendering.

use super::*;
use crate::config::{ProviderConfig, load_from_str};

fn example(file: &str, name: &str) -> HttpProviderSettings {
    let path = format!(
        "{}/docs/examples/providers/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    // A real provider needs a key of its own (the development key is refused with one).
    let toml = std::fs::read_to_string(path).unwrap()
        + "\n[store]\ndestination_hmac_key = \"test-only-destination-hmac-key-0123456789\"\n";
    let s = load_from_str(&toml).unwrap();
    match s.providers.0.get(name) {
        Some(ProviderConfig::Http(h)) => h.clone(),
        other => panic!("{other:?}"),
    }
}

fn spec(h: &HttpProviderSettings) -> HttpProviderSettings {
    h.clone()
}

fn reason(r: Result<Sent, ProviderError>) -> String {
    match r {
        Ok(sent) => format!("sent {:?}", sent.provider_message_id),
        Err(ProviderError::Transient { .. }) => "transient".into(),
        Err(ProviderError::RateLimited { retry_after, .. }) => {
            format!("rate_limited {retry_after:?}")
        }
        Err(ProviderError::Permanent { reason, .. }) => reason.code().into(),
    }
}

fn vonage(status: &str) -> String {
    let spec = spec(&example("vonage.toml", "vonage"));
    let body = serde_json::json!({"message-count": "1", "messages": [
        {"to": "14155550123", "message-id": "0A0000001", "status": status}
    ]});
    reason(classify(&spec, 200, None, body.to_string().as_bytes()))
}

#[test]
fn vonage_reads_the_status_inside_a_200() {
    assert_eq!(vonage("0"), "sent Some(\"0A0000001\")");
    assert_eq!(vonage("1"), "rate_limited None");
    assert_eq!(vonage("5"), "transient");
    assert_eq!(vonage("29"), "invalid_destination");
    assert_eq!(vonage("4"), "provider_auth");
    assert_eq!(vonage("9"), "provider_account");
    assert_eq!(vonage("15"), "provider_misconfigured");
    assert_eq!(
        vonage("12"),
        "provider_permanent",
        "Message Too Long: no rule"
    );
    let spec = spec(&example("vonage.toml", "vonage"));
    assert_eq!(reason(classify(&spec, 503, None, b"")), "transient");
}

#[test]
fn plivo_reads_statuses_and_the_uuid_array() {
    let spec = spec(&example("plivo.toml", "plivo"));
    let ok = br#"{"api_id":"a","message":"message(s) queued","message_uuid":["db3ce55a-7f1d"]}"#;
    assert_eq!(
        reason(classify(&spec, 202, None, ok)),
        "sent Some(\"db3ce55a-7f1d\")"
    );
    let err = br#"{"api_id":"a","error":"invalid dst"}"#;
    assert_eq!(
        reason(classify(&spec, 400, None, err)),
        "provider_permanent"
    );
    assert_eq!(reason(classify(&spec, 401, None, err)), "provider_auth");
    assert_eq!(reason(classify(&spec, 402, None, err)), "provider_account");
    assert_eq!(
        reason(classify(&spec, 404, None, err)),
        "provider_misconfigured"
    );
    let wait = Some(Duration::from_secs(2));
    assert_eq!(
        reason(classify(&spec, 429, wait, b"")),
        "rate_limited Some(2s)"
    );
    assert_eq!(reason(classify(&spec, 500, None, b"not json")), "transient");
}

#[test]
fn templates_render_the_message_and_secrets() {
    let mut h = example("plivo.toml", "plivo");
    h.secrets.insert("auth_id".into(), "MA123".into());
    h.secrets.insert("auth_token".into(), "tok".into());
    let p = RequestTemplates::compile("plivo", &h, String::new()).unwrap();
    let vars = Vars {
        ttl_secs: 240,
        ..p.vars("+14155550123", "Код 4071", 1, Encoding::Ucs2)
    };
    let Rendered {
        url,
        headers,
        fields,
    } = p.render(&vars).unwrap();
    assert_eq!(url, "https://api.plivo.com/v1/Account/MA123/Message/");
    // base64("MA123:tok")
    assert_eq!(
        headers,
        [(
            "Authorization".to_string(),
            "Basic TUExMjM6dG9r".to_string()
        )]
    );
    let body = p.json_body(fields.clone()).unwrap();
    assert_eq!(body["message_expiry"], serde_json::json!(240));
    let fields: BTreeMap<_, _> = fields.into_iter().collect();
    assert_eq!(fields["dst"], "14155550123");
    assert_eq!(fields["text"], "Код 4071");
    for (ttl, expected) in [(2, "5"), (86_400, "10799")] {
        let vars = Vars {
            ttl_secs: ttl,
            ..p.vars("+1", "x", 1, Encoding::Gsm7)
        };
        let fields: BTreeMap<_, _> = p.render(&vars).unwrap().fields.into_iter().collect();
        assert_eq!(fields["message_expiry"], expected, "plivo's range");
    }
    let v = example("vonage.toml", "vonage");
    let p = RequestTemplates::compile("vonage", &v, String::new()).unwrap();
    for (encoding, expected) in [(Encoding::Ucs2, "unicode"), (Encoding::Gsm7, "text")] {
        let vars = Vars {
            ttl_secs: 90,
            ..p.vars("+1", "x", 1, encoding)
        };
        let rendered = p.render(&vars).unwrap();
        let fields: BTreeMap<_, _> = rendered.fields.into_iter().collect();
        assert_eq!(fields["type"], expected);
        assert_eq!(fields["ttl"], "90000", "milliseconds");
    }
    let vars = Vars {
        ttl_secs: 3,
        ..p.vars("+1", "x", 1, Encoding::Gsm7)
    };
    let fields: BTreeMap<_, _> = p.render(&vars).unwrap().fields.into_iter().collect();
    assert_eq!(fields["ttl"], "20000", "vonage's floor");
}

#[test]
fn a_broken_template_or_method_names_its_key() {
    let mut h = example("vonage.toml", "vonage");
    h.body.insert("text".into(), "{{ txt }}".into());
    let err = RequestTemplates::compile("vonage", &h, String::new())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("providers.vonage.body.text") && err.contains("undefined"),
        "{err}"
    );
    let mut h = example("vonage.toml", "vonage");
    h.method = "DELETE".into();
    let err = RequestTemplates::compile("vonage", &h, String::new())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("providers.vonage.method"), "{err}");
    let compile_err = |h: &HttpProviderSettings| {
        RequestTemplates::compile("plivo", h, String::new())
            .err()
            .unwrap()
            .to_string()
    };
    let mut h = example("plivo.toml", "plivo");
    h.json_numbers.push("ttl".into());
    let err = compile_err(&h);
    assert!(err.contains("providers.plivo.json_numbers"), "{err}");
    let mut h = example("plivo.toml", "plivo");
    h.json_numbers.push("text".into());
    let err = compile_err(&h);
    assert!(err.contains("providers.plivo.body.text"), "{err}");
}
