use super::*;
use serde_json::json;

fn valid() -> Value {
    json!({
        "version": 1,
        "challenge_id": "ch-1",
        "account_id": "acct-1",
        "channel": "sms",
        "to": "+14155550123",
        "code": "123456",
        "expires_at": "2030-01-01T00:00:00Z",
    })
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut v = valid();
    v[field] = value;
    serde_json::to_vec(&v).unwrap()
}

fn reason(body: &[u8]) -> RejectReason {
    Job::parse(body).unwrap_err().reason
}

#[test]
fn a_minimal_job_parses_with_defaults() {
    let job = Job::parse(&serde_json::to_vec(&valid()).unwrap()).unwrap();
    assert_eq!(job.challenge_id.as_str(), "ch-1");
    assert_eq!(job.channel, Channel::Sms);
    assert_eq!(job.template, "default");
    assert_eq!(job.locale, None);
    assert!(job.metadata.is_empty());
}

#[test]
fn every_invalid_field_has_its_own_reason() {
    use RejectReason::*;
    assert_eq!(reason(&with("version", json!(2))), UnsupportedVersion);
    assert_eq!(
        reason(&with("challenge_id", json!("bad id"))),
        InvalidChallengeId
    );
    assert_eq!(reason(&with("account_id", json!(""))), InvalidAccountId);
    assert_eq!(reason(&with("channel", json!("fax"))), UnknownChannel);
    assert_eq!(reason(&with("to", json!("+1555"))), InvalidDestination);
    assert_eq!(reason(&with("code", json!(123456))), InvalidCode);
    assert_eq!(reason(&with("code", json!("12"))), InvalidCode);
    assert_eq!(
        reason(&with("expires_at", json!("tomorrow"))),
        InvalidExpiresAt
    );
    assert_eq!(reason(&with("locale", json!("english!"))), InvalidLocale);
    assert_eq!(reason(&with("template", json!("../etc"))), InvalidTemplate);
    assert_eq!(reason(&with("client_ip", json!("1.2.3"))), InvalidClientIp);
    assert_eq!(reason(&with("metadata", json!({"a": 1}))), InvalidMetadata);
    assert_eq!(
        reason(&with("metadata", json!({"a": "x".repeat(1100)}))),
        InvalidMetadata
    );
    assert_eq!(reason(&with("extra", json!(true))), UnknownField);
    assert_eq!(reason(b"{not json"), MalformedJson);
    assert_eq!(reason(b"[1,2]"), NotAnObject);
    assert_eq!(reason(&vec![b' '; MAX_BODY_BYTES + 1]), TooLarge);
}

#[test]
fn a_missing_field_is_named() {
    let mut v = valid();
    v.as_object_mut().unwrap().remove("expires_at");
    let r = Job::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(r.reason, RejectReason::MissingField);
    assert!(r.detail.contains("expires_at"), "{}", r.detail);
}

#[test]
fn the_challenge_id_survives_a_rejection_when_it_is_valid() {
    let r = Job::parse(&with("channel", json!("fax"))).unwrap_err();
    assert_eq!(r.challenge_id.unwrap().as_str(), "ch-1");
    let mut v = valid();
    v["challenge_id"] = json!("has spaces");
    v["channel"] = json!("fax");
    let r = Job::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(r.challenge_id.is_none());
}

#[test]
fn the_destination_must_match_the_channel() {
    let mut v = valid();
    v["channel"] = json!("email");
    assert_eq!(
        reason(&serde_json::to_vec(&v).unwrap()),
        RejectReason::InvalidDestination
    );
    v["to"] = json!("jane@example.com");
    assert!(Job::parse(&serde_json::to_vec(&v).unwrap()).is_ok());
}

#[test]
fn rejection_details_never_contain_the_code() {
    for body in [
        with("code", json!("12345678901")),
        with("to", json!("987654")),
    ] {
        let r = Job::parse(&body).unwrap_err();
        assert!(
            !r.detail.contains("12345678901") && !r.detail.contains("987654"),
            "{}",
            r.detail
        );
    }
}

#[test]
fn locales_follow_bcp47_shape() {
    assert!(parse_locale("en").is_ok());
    assert!(parse_locale("pt-BR").is_ok());
    assert!(parse_locale("zh-Hant-TW").is_ok());
    assert!(parse_locale("e").is_err());
    assert!(parse_locale("en_US").is_err());
}
