//! otpd attacked through its public surfaces, on the real broker and database: poison jobs
//! that once stalled consumption, writes the database refuses, vendors that answer with NULs,
//! megabytes, a trickle or the destination in their error text, forged meanings under a valid
//! signature, and clients that open connections and never finish their request.

use crate::support::*;
use lapin::BasicProperties;
use otpd::config::SigningMode;
use otpd::dispatch::Ending;
use otpd::domain::text::{MAX_DETAIL_CHARS, is_clean};
use otpd::domain::{DeliveryState, RejectReason};
use otpd::intake::Handled;
use otpd::limits::signing::{self, Signed};
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SENT: Handled = Handled::Acked(Ending::Finished(DeliveryState::Sent));
const FAILED: Handled = Handled::Acked(Ending::Finished(DeliveryState::Failed));

/// Every row of both tables, as JSON text.
async fn all_rows(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT row_to_json(d)::text FROM deliveries d UNION ALL SELECT row_to_json(e)::text FROM delivery_events e",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = reqwest::get(format!("http://{}/readyz", app.http))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_beyond_the_prefetch_are_dead_lettered_and_a_good_job_behind_them_is_sent() {
    let mut app = TestApp::spawn(|s| s.amqp.prefetch = 4).await;
    // Field names PostgreSQL cannot store as they are (a NUL), or that a terminal would obey,
    // or that are long: three times the prefetch of them.
    let keys = ["\u{0}", "\u{1b}[2J\u{202e}evil", &"\u{0}x".repeat(1000)];
    let mut poison = Vec::new();
    for n in 0..12 {
        let id = format!("poison-{n}");
        let mut body = serde_json::Map::new();
        body.insert("challenge_id".into(), json!(id));
        body.insert(keys[n % keys.len()].to_string(), json!(1));
        app.publish_raw(serde_json::to_vec(&body).unwrap(), "sms")
            .await;
        poison.push(id);
    }
    let good = job("sms", "+14155550123", "123456");
    app.publish(&good).await;

    let mut handled = HashMap::new();
    while handled.len() < poison.len() + 1 {
        let report = app.next_report().await;
        handled.insert(report.challenge_id.unwrap(), report.handled);
    }
    assert_eq!(handled[&id(&good)], SENT);
    let mut rejected = HashMap::new();
    while rejected.len() < poison.len() {
        let e = app.event_where(|k, _| k == "delivery.rejected").await;
        rejected.insert(e["challenge_id"].as_str().unwrap().to_string(), e);
    }
    for id in &poison {
        assert_eq!(
            handled[id],
            Handled::DeadLettered(RejectReason::UnknownField)
        );
        let (state, _, reason) = app.state_of(id).await;
        assert_eq!(
            (state.as_str(), reason.as_deref()),
            ("rejected", Some("unknown_field"))
        );
        let detail = rejected[id]["detail"].as_str().unwrap();
        assert!(is_clean(detail, MAX_DETAIL_CHARS), "{detail:?}");
    }
    for row in all_rows(&app).await {
        assert!(
            !row.contains("\\u0000") && !row.contains("\\u001b"),
            "{row}"
        );
    }
    assert_eq!(readyz(&app).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_ends_only_its_own_job() {
    let server = MockServer::start().await;
    for (to, sid) in [("%2B14155550001", "SMrefused"), ("%2B14155550003", "SMok")] {
        Mock::given(method("POST"))
            .and(body_string_contains(format!("To={to}")))
            .respond_with(created(sid))
            .mount(&server)
            .await;
    }
    let mut app = TestApp::spawn(twilio(&server)).await;
    // Stand-ins for whatever a future bug or a schema change makes PostgreSQL refuse: not an
    // outage, so retrying would never end.
    sqlx::query(
        "ALTER TABLE deliveries ADD CONSTRAINT hostile_refuses
           CHECK (provider_message_id IS DISTINCT FROM 'SMrefused'
                  AND account_id IS DISTINCT FROM 'acct-refused')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let after_send = job("sms", "+14155550001", "111111");
    let mut before_send = job("sms", "+14155550002", "222222");
    before_send["account_id"] = json!("acct-refused");
    let good = job("sms", "+14155550003", "333333");
    for j in [&after_send, &before_send, &good] {
        app.publish(j).await;
    }
    let mut handled = HashMap::new();
    while handled.len() < 3 {
        let report = app.next_report().await;
        handled.insert(report.challenge_id.unwrap(), report.handled);
    }
    assert_eq!(handled[&id(&good)], SENT);
    // Sent, then refused: failed, and in doubt, since the vendor has the message.
    assert_eq!(handled[&id(&after_send)], FAILED);
    // Collected, not awaited one by one: the two jobs' events come in either order.
    let (mut failed, mut rejected) = (None, None);
    while failed.is_none() || rejected.is_none() {
        let e = app
            .event_where(|k, _| k == "delivery.failed" || k == "delivery.rejected")
            .await;
        if e["challenge_id"] == id(&after_send).as_str() {
            failed = Some(e);
        } else if e["challenge_id"] == id(&before_send).as_str() {
            rejected = Some(e);
        }
    }
    let (failed, rejected) = (failed.unwrap(), rejected.unwrap());
    assert_eq!(failed["reason"], "internal_error");
    assert_eq!(failed["in_doubt"], true);
    // Refused before anything was sent: dead-lettered, with a rejected event.
    assert_eq!(
        handled[&id(&before_send)],
        Handled::DeadLettered(RejectReason::InternalError)
    );
    assert_eq!(rejected["reason"], "internal_error");
    let dead = app.dead_letter().await.expect("dead-lettered");
    assert!(dead.delivery.data == serde_json::to_vec(&before_send).unwrap());
    assert_eq!(
        app.state_of(&id(&after_send)).await,
        ("failed".into(), 1, Some("internal_error".into()))
    );
    assert_eq!(
        app.state_of(&id(&before_send)).await.2.as_deref(),
        Some("internal_error")
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// A vendor that answers its status line and headers, then one body byte every 100 ms.
async fn trickling_vendor() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..600 {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if stream.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_answers_with_nuls_megabytes_trickles_and_the_number_end_only_their_job_and_leak_nothing()
 {
    let server = MockServer::start().await;
    let echo = json!({
        "code": 21211,
        "message": "The 'To' number +14155550011 is not a valid phone number.\u{0}\u{1b}[2J <jane.doe@example.com>",
    });
    let answers = [
        (
            "%2B14155550011",
            ResponseTemplate::new(400).set_body_json(echo),
        ),
        (
            "%2B14155550012",
            ResponseTemplate::new(201).set_body_json(json!({"sid": "SM\u{0}\u{202e}nul"})),
        ),
        (
            "%2B14155550013",
            ResponseTemplate::new(400).set_body_string(format!(
                "{{\"code\": 21211, \"message\": \"{}\"}}",
                "A".repeat(2 << 20)
            )),
        ),
    ];
    for (to, answer) in answers {
        Mock::given(method("POST"))
            .and(body_string_contains(format!("To={to}")))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    let trickle = trickling_vendor().await;
    let twilio = twilio(&server);
    let mut app = TestApp::spawn(move |s| {
        twilio(s);
        s.retry.max_attempts = 1;
        s.retry.attempt_timeout_ms = 1000;
        let slow = s.providers.twilio_mut("slow");
        slow.base_url = trickle.clone();
        slow.account_sid = ACCOUNT_SID.into();
        slow.auth_token = "test-token".into();
        slow.sms_from = "+15005550006".into();
        s.channels
            .routes
            .sms
            .insert("+14155550014".into(), "slow".into());
    })
    .await;
    let jobs: Vec<Value> = (11..=14)
        .map(|n| job("sms", &format!("+141555500{n}"), "654321"))
        .collect();
    for j in &jobs {
        app.publish(j).await;
    }
    let mut terminal = HashMap::new();
    while terminal.len() < jobs.len() {
        let e = app
            .event_where(|k, _| k != "delivery.accepted" && k.starts_with("delivery."))
            .await;
        terminal.insert(e["challenge_id"].as_str().unwrap().to_string(), e);
    }
    let echoed = &terminal[&id(&jobs[0])];
    assert_eq!(
        (&echoed["state"], &echoed["reason"]),
        (&json!("failed"), &json!("invalid_destination"))
    );
    let detail = echoed["detail"].as_str().unwrap();
    assert!(
        detail.contains("+1415•••0011") && detail.contains("j•••@example.com"),
        "{detail}"
    );
    let nul_id = &terminal[&id(&jobs[1])];
    assert_eq!(
        (&nul_id["state"], &nul_id["provider_message_id"]),
        (&json!("sent"), &json!("SMnul"))
    );
    let huge = &terminal[&id(&jobs[2])];
    assert_eq!(huge["state"], "failed");
    assert!(huge["detail"].as_str().unwrap().chars().count() <= MAX_DETAIL_CHARS);
    // The trickle is cut off by the attempt timeout; the vendor may have the message.
    let slow = &terminal[&id(&jobs[3])];
    assert_eq!(
        (&slow["state"], &slow["in_doubt"]),
        (&json!("failed"), &json!(true))
    );

    for (key, e) in &terminal {
        let text = e.to_string();
        assert!(
            !text.contains("4155550011") && !text.contains("jane.doe"),
            "{key}: {text}"
        );
        assert!(!text.contains("\\u0000"), "{key}: {text}");
    }
    for row in all_rows(&app).await {
        assert!(
            !row.contains("4155550011") && !row.contains("jane.doe"),
            "{row}"
        );
        assert!(
            !row.contains("\\u0000") && !row.contains("\\u001b"),
            "{row}"
        );
        assert!(
            row.len() < 8 * 1024,
            "a vendor's megabytes are not kept: {}",
            row.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_verified_body_republished_as_a_job_is_refused_and_names_no_challenge() {
    const KEY: &str = "0123456789abcdef0123456789abcdef";
    let mut app = TestApp::spawn(|s| {
        s.signing.mode = SigningMode::Require;
        s.signing.keys.insert("k1".into(), KEY.into());
    })
    .await;
    let body = serde_json::to_vec(&json!({"version": 1, "challenge_id": "real-login-1"})).unwrap();
    let now = chrono::Utc::now().timestamp();
    let verified = Signed {
        kind: Some("verified"),
        body: &body,
    };
    let header = signing::sign("k1", KEY, now, verified);
    let headers = || {
        let mut h = lapin::types::FieldTable::default();
        h.insert(
            signing::HEADER.into(),
            lapin::types::AMQPValue::LongString(header.as_str().into()),
        );
        h
    };
    // Republished without its type: the signature no longer matches.
    app.publish_with(
        &body,
        "verified",
        BasicProperties::default().with_headers(headers()),
    )
    .await;
    assert_eq!(
        app.next_report().await.handled,
        Handled::DeadLettered(RejectReason::BadSignature)
    );
    // With its type, the same message is feedback (for a challenge never sent: ignored).
    let props = BasicProperties::default()
        .with_headers(headers())
        .with_type("verified".into());
    app.publish_with(&body, "verified", props).await;
    assert_eq!(
        app.next_report().await.handled,
        Handled::Acked(Ending::Verified)
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing is recorded under the challenge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_holding_half_sent_requests_cannot_keep_out_healthz_or_stop_deliveries() {
    let mut app = TestApp::spawn(|s| s.http.max_connections = 16).await;
    // Three times the cap of connections, each with half a request head and never the rest.
    let mut held = Vec::new();
    for _ in 0..48 {
        let mut stream = tokio::net::TcpStream::connect(app.http).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: otpd\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(stream);
    }
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let health = tokio::time::timeout(
            PATIENCE,
            client.get(format!("http://{}/healthz", app.http)).send(),
        )
        .await
        .expect("/healthz answers while the slow clients hold their connections")
        .unwrap();
        assert_eq!(health.status(), 200);
    }
    let j = job("sms", "+14155550123", "123456");
    app.publish(&j).await;
    assert_eq!(app.report_for(&id(&j)).await.handled, SENT);
    // The listener accepts in arrival order, so the 32 oldest half-sent connections are the
    // ones that gave way to the 17th to 48th. Each one's close is awaited: the end of the
    // stream, or a reset where the server had unread bytes of the half-sent head.
    for (n, stream) in held.iter_mut().take(48 - 16).enumerate() {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("connection {n} was closed to make room"));
        assert!(matches!(read, Ok(0) | Err(_)), "connection {n}: {read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_bounds_slow_heads_slow_bodies_and_large_bodies() {
    let app = TestApp::spawn(|s| {
        s.http.header_timeout_ms = 300;
        s.http.request_timeout_ms = 300;
    })
    .await;
    // A head that never ends: closed once the header-read timeout passes.
    let mut slow_head = tokio::net::TcpStream::connect(app.http).await.unwrap();
    slow_head
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, slow_head.read(&mut buf))
        .await
        .expect("the server ends a head that never completes");
    // Closed, or told 408: either way the connection does not stay open.
    let ended = match read {
        Ok(0) | Err(_) => true,
        Ok(n) => String::from_utf8_lossy(&buf[..n]).contains(" 408 "),
    };
    assert!(ended);

    // A body promised and never sent: answered 503 once the request timeout passes.
    let mut slow_body = tokio::net::TcpStream::connect(app.http).await.unwrap();
    slow_body
        .write_all(
            b"POST /webhooks/twilio HTTP/1.1\r\nHost: otpd\r\nContent-Length: 1000\r\n\r\nAccount",
        )
        .await
        .unwrap();
    let n = tokio::time::timeout(PATIENCE, slow_body.read(&mut buf))
        .await
        .expect("the server answers a body that never completes")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503"));

    // A body over the limit: 413, whatever the route.
    let big = reqwest::Client::new()
        .post(format!("http://{}/webhooks/twilio", app.http))
        .body(vec![b'a'; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_jobs_are_in_hand_and_none_finishes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("SMslow").set_delay(std::time::Duration::from_secs(60)))
        .mount(&server)
        .await;
    let twilio = twilio(&server);
    let mut app = TestApp::spawn(move |s| {
        twilio(s);
        s.http.ready_stall_secs = 1;
        s.retry.attempt_timeout_ms = 120_000;
        s.shutdown.drain_timeout_ms = 100;
    })
    .await;
    assert_eq!(readyz(&app).await.0, 200, "idle is not stalled");
    app.publish(&job("sms", "+14155550123", "123456")).await;
    // The broker and the database answer throughout; only the intake stands still. The
    // stall is a state that builds up over a second, so it is polled, within the patience.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let body = loop {
        let (status, body) = readyz(&app).await;
        if status == 503 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never failed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&body["database"], &body["broker"], &body["intake"]),
        (&json!(true), &json!(true), &json!(false))
    );
    assert!(body["stalled_secs"].as_u64().unwrap() >= 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_feedback_message_is_refused_unread_and_dead_lettered_as_a_bounded_head() {
    let mut app = TestApp::spawn(|_| {}).await;
    let body = format!(
        "{{\"version\": 1, \"challenge_id\": \"c\", \"pad\": \"{}\"}}",
        "\u{0}".repeat(40 * 1024)
    )
    .into_bytes();
    let props = BasicProperties::default().with_type("verified".into());
    app.publish_with(&body, "verified", props).await;
    assert_eq!(
        app.next_report().await.handled,
        Handled::DeadLettered(RejectReason::TooLarge)
    );
    let dead = app.dead_letter().await.expect("dead-lettered");
    assert_eq!(
        dead.delivery.data.len(),
        otpd::events::DEAD_LETTER_HEAD_BYTES
    );
    let headers = dead.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get(otpd::events::ORIGINAL_SIZE_HEADER),
        Some(&lapin::types::AMQPValue::LongLongInt(body.len() as i64))
    );
}
