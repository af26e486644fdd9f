//! What otpd's log looks like to a log shipper: the release binary as a child process, its
//! stderr read line by line. JSON lines parse, name the challenge as a plain string (rejected
//! jobs too), never carry two `message` keys, and an expired job says so once. Human lines
//! carry no colour codes when stderr is not a terminal, and start-up prints no notice of
//! PostgreSQL's about the migrations table.

use crate::support::{PATIENCE, TestApp, id, job};
use serde_json::Value;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// otpd as a child with `format` logs, its stderr lines sent down the returned channel.
async fn logging(
    app: &TestApp,
    format: &str,
) -> (tokio::process::Child, mpsc::UnboundedReceiver<String>) {
    let mut cmd = app.process(&[("LOG__FORMAT", format), ("LOG__FILTER", "info")]);
    cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = cmd.spawn().expect("the otpd binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Lines until one contains `needle`, that one included.
async fn until(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?} in time; saw {seen:#?}"))
            .expect("otpd is running");
        let done = line.contains(needle);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_name_the_challenge_plainly_and_once() {
    let mut app = TestApp::spawn(|_| {}).await;
    app.stop().await;
    let (mut otpd, mut rx) = logging(&app, "json").await;
    let mut lines = until(&mut rx, "consuming jobs").await;

    let sent = job("sms", "+14155550123", "271828");
    let mut invalid = job("sms", "+1", "271828");
    invalid["to"] = "not a number".into();
    let mut expired = job("sms", "+14155550124", "314159");
    expired["expires_at"] = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339()
        .into();
    for j in [&sent, &invalid, &expired] {
        app.publish(j).await;
    }
    // Their terminal events, in whichever order they come.
    let wanted = [
        (id(&sent), "sent"),
        (id(&invalid), "rejected"),
        (id(&expired), "expired"),
    ];
    let mut seen = std::collections::HashSet::new();
    while seen.len() < wanted.len() {
        let event = app
            .event_where(|_, e| {
                wanted
                    .iter()
                    .any(|(c, s)| e["challenge_id"] == *c && e["state"] == *s)
            })
            .await;
        seen.insert(event["challenge_id"].as_str().unwrap().to_string());
    }
    // The log line of each outcome precedes its event, so these are all there by now: read
    // up to a marker line that comes after them.
    app.publish(&job("sms", "+14155550125", "161803")).await;
    lines.extend(until(&mut rx, "log provider: delivered").await);
    lines.extend(until(&mut rx, "log provider: delivered").await);
    otpd.start_kill().unwrap();

    let mut named: Vec<(String, Value)> = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            line.matches("\"message\":").count() <= 1,
            "two messages: {line}"
        );
        for (key, field) in [("fields", &v["fields"]), ("span", &v["span"])] {
            for (name, value) in field.as_object().into_iter().flatten() {
                if let Some(s) = value.as_str() {
                    assert!(!s.starts_with("Some("), "{key}.{name} is {s}: {line}");
                }
            }
        }
        let challenge = v["span"]["challenge_id"]
            .as_str()
            .or(v["fields"]["challenge_id"].as_str());
        if let Some(c) = challenge {
            named.push((c.to_string(), v));
        }
    }
    let about = |j: &Value| -> Vec<&Value> {
        named
            .iter()
            .filter(|(c, _)| *c == id(j))
            .map(|(_, v)| v)
            .collect()
    };
    assert!(!about(&sent).is_empty(), "the sent job's lines name it");
    let rejected = about(&invalid);
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert_eq!(rejected[0]["fields"]["reason"], "invalid_destination");
    let expired_lines = about(&expired);
    assert_eq!(expired_lines.len(), 1, "{expired_lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_lines_have_no_colour_codes_off_a_terminal_and_no_migration_notice() {
    let mut app = TestApp::spawn(|_| {}).await;
    app.stop().await;
    let (mut otpd, mut rx) = logging(&app, "human").await;
    let lines = until(&mut rx, "consuming jobs").await;
    otpd.start_kill().unwrap();
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "a colour code: {line:?}");
        assert!(
            !line.contains("_sqlx_migrations"),
            "a migration notice: {line}"
        );
    }
}
