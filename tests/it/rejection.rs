//! Bad input: every malformed or invalid job ends in the dead-letter queue with its reason in a
//! header, an audit row and a `rejected` event when its challenge_id was readable, and otpd
//! keeps consuming.

use crate::support::{TestApp, id, job};
use lapin::types::AMQPValue;
use otpd::dispatch::Ending;
use otpd::domain::{DeliveryState, RejectReason};
use otpd::intake::Handled;
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    body: Vec<u8>,
    reason: RejectReason,
    challenge_id: Option<String>,
}

fn case(name: &'static str, mutate: impl FnOnce(&mut Value), reason: RejectReason) -> Case {
    let mut j = job("sms", "+14155550123", "123456");
    j["challenge_id"] = Value::from(format!("bad-{name}"));
    mutate(&mut j);
    Case {
        name,
        body: serde_json::to_vec(&j).unwrap(),
        reason,
        challenge_id: Some(format!("bad-{name}")),
    }
}

fn cases() -> Vec<Case> {
    let mut oversize = job("sms", "+14155550123", "123456");
    oversize["metadata"] = json!({ "pad": "x".repeat(17 * 1024) });
    vec![
        Case {
            name: "malformed",
            body: b"{\"version\": 1, \"challenge_id\": ".to_vec(),
            reason: RejectReason::MalformedJson,
            challenge_id: None,
        },
        case(
            "unknown-field",
            |j| j["priority"] = json!("high"),
            RejectReason::UnknownField,
        ),
        case(
            "unknown-channel",
            |j| j["channel"] = json!("fax"),
            RejectReason::UnknownChannel,
        ),
        case(
            "bad-phone",
            |j| j["to"] = json!("+1415555"),
            RejectReason::InvalidDestination,
        ),
        case(
            "bad-email",
            |j| {
                j["channel"] = json!("email");
                j["to"] = json!("jane.example.com")
            },
            RejectReason::InvalidDestination,
        ),
        Case {
            name: "oversize",
            body: serde_json::to_vec(&oversize).unwrap(),
            reason: RejectReason::TooLarge,
            challenge_id: None,
        },
        case(
            "wrong-version",
            |j| j["version"] = json!(2),
            RejectReason::UnsupportedVersion,
        ),
    ]
}

fn header(msg: &lapin::message::BasicGetMessage, name: &str) -> String {
    let headers = msg.delivery.properties.headers().clone().unwrap();
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_jobs_are_dead_lettered_with_their_reason_and_consumption_goes_on() {
    let mut app = TestApp::spawn(|_| {}).await;
    for c in cases() {
        app.publish_raw(c.body.clone(), "sms").await;
        let report = app.next_report().await;
        assert_eq!(
            report.handled,
            Handled::DeadLettered(c.reason),
            "{}",
            c.name
        );
        assert_eq!(report.challenge_id, c.challenge_id, "{}", c.name);

        let dead = app
            .dead_letter()
            .await
            .unwrap_or_else(|| panic!("{} was dead-lettered", c.name));
        if c.body.len() > otpd::domain::job::MAX_BODY_BYTES {
            // An oversize body is kept as a bounded head, its size in a header.
            let head = &c.body[..otpd::events::DEAD_LETTER_HEAD_BYTES];
            assert!(dead.delivery.data == head, "{}: the head is kept", c.name);
            let headers = dead.delivery.properties.headers().clone().unwrap();
            assert_eq!(
                headers.inner().get(otpd::events::ORIGINAL_SIZE_HEADER),
                Some(&AMQPValue::LongLongInt(c.body.len() as i64))
            );
        } else {
            assert!(
                dead.delivery.data == c.body,
                "{}: the original body is kept",
                c.name
            );
        }
        assert_eq!(
            header(&dead, "x-otpd-reason"),
            c.reason.code(),
            "{}",
            c.name
        );
        assert!(!header(&dead, "x-otpd-detail").is_empty());

        if let Some(challenge_id) = &c.challenge_id {
            let event = app.event_for(challenge_id).await;
            assert_eq!(
                (event["state"].as_str(), event["reason"].as_str()),
                (Some("rejected"), Some(c.reason.code())),
                "{}",
                c.name
            );
            let (state, _, reason) = app.state_of(challenge_id).await;
            assert_eq!(
                (state.as_str(), reason.as_deref()),
                ("rejected", Some(c.reason.code())),
                "{}",
                c.name
            );
        }
    }
    assert!(
        app.dead_letter().await.is_none(),
        "exactly one dead letter per bad job"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 5, "an audit row for each readable challenge_id");

    let good = job("sms", "+14155550123", "654321");
    app.publish(&good).await;
    assert_eq!(
        app.report_for(&id(&good)).await.handled,
        Handled::Acked(Ending::Finished(DeliveryState::Sent))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_copy_does_not_rewrite_a_delivered_challenge() {
    let mut app = TestApp::spawn(|_| {}).await;
    let good = job("sms", "+14155550123", "654321");
    app.publish(&good).await;
    assert_eq!(
        app.report_for(&id(&good)).await.handled,
        Handled::Acked(Ending::Finished(DeliveryState::Sent))
    );

    let mut bad = good.clone();
    bad["channel"] = json!("fax");
    app.publish(&bad).await;
    assert_eq!(
        app.report_for(&id(&good)).await.handled,
        Handled::DeadLettered(RejectReason::UnknownChannel)
    );
    assert_eq!(
        app.state_of(&id(&good)).await.0,
        "sent",
        "the delivery keeps its state; the audit trail gains the rejection"
    );
}
