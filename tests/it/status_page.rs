//! `otpd report` and `/status` over a seeded database; the page is loaded in a real headless
//! Chromium (Debian's `chromium`, installed by .ci/run), which also takes a screenshot.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// 50 GB SMS through twilio (45 delivered, 3 undelivered with 30003, 2 failed), 20 FR SMS
/// through twilio_backup, 10 emails, 5 rate-limited SMS, and 7 deliveries from two hours ago
/// that a one-hour view must leave out.
const SEED: &str = "
INSERT INTO deliveries (challenge_id, account_id, channel, state, provider, country, reason, carrier_error, created_at, sent_at)
SELECT 'gb-' || i, 'acct', 'sms',
       CASE WHEN i <= 45 THEN 'delivered' WHEN i <= 48 THEN 'undelivered' ELSE 'failed' END,
       'twilio', 'GB', CASE WHEN i > 48 THEN 'provider_transient' END,
       CASE WHEN i BETWEEN 46 AND 48 THEN '30003' END,
       now() - interval '10 minutes',
       CASE WHEN i <= 48 THEN now() - interval '10 minutes' + make_interval(secs => i / 100.0) END
  FROM generate_series(1, 50) i;
INSERT INTO deliveries (challenge_id, account_id, channel, state, provider, country, created_at, sent_at)
SELECT 'fr-' || i, 'acct', 'sms', 'sent', 'twilio_backup', 'FR', now() - interval '5 minutes', now() - interval '5 minutes'
  FROM generate_series(1, 20) i;
INSERT INTO deliveries (challenge_id, account_id, channel, state, provider, created_at, sent_at)
SELECT 'mail-' || i, 'acct', 'email', 'sent', 'smtp', now() - interval '3 minutes', now() - interval '3 minutes'
  FROM generate_series(1, 10) i;
INSERT INTO deliveries (challenge_id, account_id, channel, state, country, reason, rule, created_at)
SELECT 'limited-' || i, 'acct', 'sms', 'rate_limited', 'GB', 'rate_limit', 'phone', now() - interval '1 minute'
  FROM generate_series(1, 5) i;
INSERT INTO deliveries (challenge_id, account_id, channel, state, provider, country, created_at, sent_at)
SELECT 'old-' || i, 'acct', 'sms', 'sent', 'twilio', 'US', now() - interval '2 hours', now() - interval '2 hours'
  FROM generate_series(1, 7) i;
";

async fn seeded() -> TestApp {
    let app = TestApp::spawn(|_| {}).await;
    sqlx::raw_sql(SEED).execute(&app.db).await.unwrap();
    app
}

#[tokio::test]
async fn the_report_command_tabulates_the_last_hour() {
    let app = seeded().await;
    let (status, out) = cli(&app.suffix, &["report", "--since", "1h"]).await;
    assert!(status.success(), "{out}");
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ") == prefix)
            .unwrap_or_else(|| panic!("no `{prefix}` row in:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // volume, success, delivered, p50 (10 ms steps: the median of 10..480 is 245), failures.
    assert!(
        line("sms twilio GB").starts_with("sms twilio GB 50 96.0% 45 245 "),
        "{out}"
    );
    assert!(
        line("sms twilio GB").ends_with("undelivered:30003 ×3, provider_transient ×2"),
        "{out}"
    );
    assert!(line("sms twilio_backup FR").starts_with("sms twilio_backup FR 20 100.0% 0 0 0 0"));
    assert!(line("email smtp -").starts_with("email smtp - 10 100.0%"));
    assert!(line("sms - GB").ends_with("rate_limit ×5"), "{out}");
    assert!(!out.contains(" US "), "two hours ago is outside the window");
    assert!(
        out.contains("85 deliveries, 0 in progress, 91.8% accepted by a provider"),
        "{out}"
    );

    let (status, json) = cli(
        &app.suffix,
        &["report", "--since", "3h", "--format", "json"],
    )
    .await;
    assert!(status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 5);
    let (status, _) = cli(&app.suffix, &["report", "--since", "yesterday"]).await;
    assert!(!status.success());
}

#[tokio::test]
async fn the_status_page_renders_the_figures_in_a_real_browser() {
    let app = seeded().await;
    let url = format!("http://{}/status", app.http);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("status-{}", app.suffix));
    std::fs::create_dir_all(&dir).unwrap();

    let dom = chromium(&dir, &["--dump-dom", &url]).await;
    assert!(dom.contains("otpd delivery status"), "{dom}");
    assert!(
        dom.contains(r#"<div class="tile" id="tile-volume"><b>85</b>"#),
        "{dom}"
    );
    assert!(
        dom.contains("<td>twilio_backup</td><td>FR</td><td>20</td>"),
        "{dom}"
    );
    assert!(dom.contains(r#"<td class="ok">96.0%</td>"#), "{dom}");
    assert!(dom.contains("undelivered:30003 ×3"));
    assert!(dom.contains(r#"<svg id="per-minute""#));
    assert!(
        dom.contains("<title>48 accepted</title>"),
        "the chart's bar for the GB minute: {dom}"
    );
    assert!(dom.contains(r#"http-equiv="refresh" content="30""#));

    let shot = dir.join("status.png");
    let screenshot = format!("--screenshot={}", shot.display());
    chromium(&dir, &[&screenshot, "--window-size=1280,900", &url]).await;
    let png = std::fs::read(&shot).expect("Chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 10_000,
        "a real page, not a blank one: {} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}

/// Runs headless Chromium with the flags this closed network needs (no background
/// connections) and a fresh profile, and returns its standard output.
async fn chromium(dir: &Path, args: &[&str]) -> String {
    let profile = dir.join(format!("profile-{}", uuid::Uuid::new_v4().simple()));
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("Chromium finished in time")
        .expect("chromium is installed (.ci/run installs Debian's package)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
