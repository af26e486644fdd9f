//! Deployment: the systemd watchdog protocol, spoken by the real binary to a notify socket
//! this test owns, as systemd would.

use crate::support::*;
use std::time::Duration;
use tokio::net::UnixDatagram;

/// Collects sd_notify datagrams until one equals `wanted`; returns all seen.
async fn until(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) {
    let mut buf = [0u8; 512];
    while !seen.iter().any(|m| m == wanted) {
        let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("`{wanted}` in time; got {seen:?}"))
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.extend(text.lines().map(str::to_string));
    }
}

#[tokio::test]
async fn the_daemon_reports_ready_and_feeds_the_watchdog_while_healthy() {
    let app = TestApp::spawn(|_| {}).await;
    let dir = std::env::temp_dir().join(format!("otpd-notify-{}", app.suffix));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = app.process(&[]);
    cmd.env("NOTIFY_SOCKET", &path).env(
        "WATCHDOG_USEC",
        Duration::from_millis(400).as_micros().to_string(),
    );
    let mut child = cmd.spawn().unwrap();
    let mut seen = Vec::new();
    until(&socket, "READY=1", &mut seen).await;
    // Two pings prove a repeating task, not a single notification at start-up.
    until(&socket, "WATCHDOG=1", &mut seen).await;
    seen.retain(|m| m != "WATCHDOG=1");
    until(&socket, "WATCHDOG=1", &mut seen).await;
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// lapin buffers 32 frames each way, so the frame size is resident memory: otpd asks for
/// 16 KiB frames rather than the broker's 128 KiB, and an operator's `frame_max` in the URL wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_connection_uses_small_frames_unless_the_url_names_a_size() {
    let mut s = test_settings("frames");
    let connection = otpd::amqp::connect(&s.amqp).await.unwrap();
    assert_eq!(connection.configuration().frame_max(), 16 * 1024);
    connection.close(200, "".into()).await.unwrap();

    s.amqp.url = format!("{AMQP_URL}?frame_max=65536").as_str().into();
    let connection = otpd::amqp::connect(&s.amqp).await.unwrap();
    assert_eq!(connection.configuration().frame_max(), 65536);
    connection.close(200, "".into()).await.unwrap();
}

/// `otpd <args>` with `env` on top of the test's database; its exit status, stdout, stderr.
async fn otpd(app: &TestApp, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpd"));
    cmd.args(args)
        .env("OTPD__LOG__FILTER", "warn")
        .env("RUST_BACKTRACE", "0");
    for (k, v) in app.settings_env() {
        cmd.env(format!("OTPD__{k}"), v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .expect("otpd answers in time")
        .expect("the otpd binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_asks_a_running_otpd_whether_it_is_ready() {
    let app = TestApp::spawn(|_| {}).await;
    let listen = ("OTPD__HTTP__LISTEN", app.http.to_string());
    let (code, out, err) = otpd(&app, &["healthcheck"], &[listen]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#""database":true"#), "{out}");

    // Nothing listens on a port just released.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let closed = ("OTPD__HTTP__LISTEN", free.to_string());
    let (code, _, err) = otpd(&app, &["healthcheck"], &[closed]).await;
    assert_ne!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_refuses_an_invalid_job_before_publishing_it() {
    let mut app = TestApp::spawn(|_| {}).await;
    let args = [
        "send",
        "--channel",
        "sms",
        "--to",
        "not-a-number",
        "--code",
        "123456",
    ];
    let (code, out, err) = otpd(&app, &args, &[]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("invalid_destination"), "{err}");
    // A valid one goes through, and is delivered.
    let args = [
        "send",
        "--channel",
        "sms",
        "--to",
        "+14155550123",
        "--code",
        "123456",
        "--challenge-id",
        "cli-ok",
    ];
    let (code, out, err) = otpd(&app, &args, &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(app.event_for("cli-ok").await["state"], "accepted");
    assert!(
        app.dead_letter().await.is_none(),
        "nothing was dead-lettered"
    );
}

#[test]
fn the_unit_loads_only_the_credentials_every_host_has_and_drop_ins_the_rest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let credentials = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("LoadCredential="))
            .map(|c| c.split(':').next().unwrap().to_string())
            .collect()
    };
    let unit = std::fs::read_to_string(root.join("otpd.service")).unwrap();
    assert_eq!(
        credentials(&unit),
        [
            "OTPD__AMQP__URL",
            "OTPD__DATABASE__URL",
            "OTPD__STORE__DESTINATION_HMAC_KEY"
        ],
        "an SMTP-only host must start without a Twilio token file"
    );
    for (drop_in, expected) in [
        ("twilio.conf", &["OTPD__PROVIDERS__TWILIO__AUTH_TOKEN"][..]),
        ("smtp.conf", &["OTPD__PROVIDERS__SMTP__PASSWORD"]),
        ("admin-api.conf", &["OTPD__HTTP__ADMIN_TOKEN"]),
        (
            "whatsapp.conf",
            &[
                "OTPD__PROVIDERS__META__ACCESS_TOKEN",
                "OTPD__PROVIDERS__META__APP_SECRET",
                "OTPD__PROVIDERS__META__VERIFY_TOKEN",
            ],
        ),
    ] {
        let text = std::fs::read_to_string(root.join("otpd.service.d").join(drop_in)).unwrap();
        assert!(text.contains("[Service]\n"), "{drop_in}");
        assert_eq!(credentials(&text), expected, "{drop_in}");
    }
}
