//! The public contracts agree with the code: the documented job examples validate against the
//! JSON Schema and parse in the daemon, invalid jobs fail both, and otpd's Twilio requests
//! match Twilio's own OpenAPI description of CreateMessage and CreateCall.

use otpd::domain::Job;
use otpd::providers::twilio::{call_form, message_form};
use serde_json::{Value, json};
use std::path::Path;

fn read(path: impl AsRef<Path>) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn job_schema() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&read("docs/job-v1.schema.json"))
        .unwrap()
}

#[test]
fn the_documented_examples_validate_and_parse() {
    let schema = job_schema();
    for name in [
        "sms-login",
        "sms-fallback",
        "voice-minimal",
        "whatsapp-login",
        "email-reset",
    ] {
        let example = read(format!("docs/examples/{name}.json"));
        let errors: Vec<String> = schema
            .iter_errors(&example)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        assert!(
            Job::parse(&serde_json::to_vec(&example).unwrap()).is_ok(),
            "{name} parses"
        );
    }
}

#[test]
fn the_schema_and_the_daemon_refuse_the_same_jobs() {
    let schema = job_schema();
    let base = read("docs/examples/sms-login.json");
    type Breakage = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, Breakage)> = vec![
        ("unknown field", Box::new(|j| j["priority"] = json!(1))),
        ("version 2", Box::new(|j| j["version"] = json!(2))),
        (
            "challenge_id with a space",
            Box::new(|j| j["challenge_id"] = json!("a b")),
        ),
        (
            "challenge_id too long",
            Box::new(|j| j["challenge_id"] = json!("a".repeat(129))),
        ),
        (
            "empty account_id",
            Box::new(|j| j["account_id"] = json!("")),
        ),
        ("unknown channel", Box::new(|j| j["channel"] = json!("fax"))),
        (
            "number without +",
            Box::new(|j| j["to"] = json!("14155550123")),
        ),
        (
            "email on sms",
            Box::new(|j| j["to"] = json!("a@example.com")),
        ),
        ("code too short", Box::new(|j| j["code"] = json!("123"))),
        ("code as a number", Box::new(|j| j["code"] = json!(123456))),
        (
            "date without time",
            Box::new(|j| j["expires_at"] = json!("2030-06-01")),
        ),
        (
            "locale with underscore",
            Box::new(|j| j["locale"] = json!("en_US")),
        ),
        (
            "template with a slash",
            Box::new(|j| j["template"] = json!("a/b")),
        ),
        (
            "metadata with a number",
            Box::new(|j| j["metadata"] = json!({"n": 1})),
        ),
        (
            "fallback step too soon",
            Box::new(|j| j["fallback"] = json!([{"channel": "voice", "after_secs": 5}])),
        ),
        (
            "four fallback steps",
            Box::new(|j| {
                j["fallback"] = json!(vec![json!({"channel": "voice", "after_secs": 10}); 4])
            }),
        ),
        (
            "fallback step with an unknown field",
            Box::new(|j| j["fallback"] = json!([{"channel": "voice", "after_secs": 10, "x": 1}])),
        ),
        (
            "missing code",
            Box::new(|j| {
                j.as_object_mut().unwrap().remove("code");
            }),
        ),
    ];
    for (name, mutate) in broken {
        let mut job = base.clone();
        mutate(&mut job);
        assert!(!schema.is_valid(&job), "the schema accepts: {name}");
        assert!(
            Job::parse(&serde_json::to_vec(&job).unwrap()).is_err(),
            "the daemon accepts: {name}"
        );
    }
}

#[test]
fn the_status_event_example_has_every_documented_field() {
    let event = read("docs/examples/event-sent.json");
    let fields = [
        "version",
        "event_id",
        "challenge_id",
        "step",
        "account_id",
        "channel",
        "state",
        "attempt",
        "provider",
        "provider_message_id",
        "reason",
        "detail",
        "rule",
        "retry_after_secs",
        "carrier_error",
        "in_doubt",
        "metadata",
        "at",
    ];
    let keys: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), fields.len());
    for f in fields {
        assert!(keys.contains(&f), "{f}");
    }
}

/// The form-encoded request body schema of one Twilio operation, closed to unknown fields so a
/// misspelt parameter fails, with the spec's components beside it so `$ref`s resolve.
fn twilio_request_schema(path: &str) -> jsonschema::Validator {
    let spec = read("tests/fixtures/twilio/twilio_api_v2010.subset.json");
    let op = &spec["paths"][path]["post"];
    let mut schema =
        op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"].clone();
    schema["additionalProperties"] = json!(false);
    schema["components"] = spec["components"].clone();
    jsonschema::options()
        .should_validate_formats(false)
        .build(&schema)
        .unwrap()
}

/// A form as the JSON object the spec describes: a field the spec types as an integer is one.
fn as_object(form: Vec<(&'static str, String)>) -> Value {
    const INTEGERS: [&str; 1] = ["ValidityPeriod"];
    Value::Object(
        form.into_iter()
            .map(|(k, v)| match INTEGERS.contains(&k) {
                true => (k.to_string(), json!(v.parse::<u64>().expect("an integer"))),
                false => (k.to_string(), Value::String(v)),
            })
            .collect(),
    )
}

#[test]
fn twilio_requests_match_twilios_openapi_description() {
    let messages = twilio_request_schema("/2010-04-01/Accounts/{AccountSid}/Messages.json");
    for form in [
        message_form(
            "+14155550123",
            "+15005550006",
            "123456 is your code",
            1,
            None,
        ),
        message_form(
            "+14155550123",
            "MG0123456789abcdef0123456789abcdef",
            "123456 is your code",
            36_000,
            Some("https://otpd.example.com/webhooks/twilio"),
        ),
    ] {
        let body = as_object(form);
        let errors: Vec<String> = messages.iter_errors(&body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "CreateMessage: {errors:?}");
    }
    let calls = twilio_request_schema("/2010-04-01/Accounts/{AccountSid}/Calls.json");
    let body = as_object(call_form(
        "+14155550123",
        "+15005550006",
        "<Response><Say>1, 2</Say></Response>",
        Some("https://otpd.example.com/webhooks/twilio"),
    ));
    let errors: Vec<String> = calls.iter_errors(&body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "CreateCall: {errors:?}");
    assert!(
        !calls.is_valid(&json!({"To": "+1", "From": "+1", "TwiML": "x"})),
        "the closed schema catches a misspelt field"
    );
}

#[test]
fn the_asyncapi_document_names_the_shipped_exchanges_and_the_schemas_beside_it() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.yaml"))
            .unwrap();
    assert!(doc.starts_with("# ") && doc.contains("\nasyncapi: 3.0.0\n"));
    let defaults = otpd::config::load_from_str("").unwrap();
    let a = &defaults.amqp;
    for name in [&a.jobs_exchange, &a.events_exchange, &a.dead_letter_queue] {
        assert!(doc.contains(&format!("address: {name}\n")), "{name}");
    }
    let refs: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.trim().strip_prefix("$ref: './"))
        .map(|r| r.trim_end_matches('\''))
        .collect();
    assert_eq!(refs, ["job-v1.schema.json", "event-v1.schema.json"]);
    for schema in refs {
        let schema = read(format!("docs/{schema}"));
        jsonschema::options().build(&schema).unwrap();
    }
}
