//! A code is a secret: after SMS, voice and email jobs (including a retried and a rejected one),
//! neither the code nor the full destination appears in any log line, at debug level for every
//! crate, or in any table. Its own test binary, because it installs the global subscriber.

mod support;

use otpd::config::SmtpTls;
use otpd::intake::Handled;
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::{ACCOUNT_SID, TestApp, id, job};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CODE: &str = "80417735";
const PHONE: &str = "+14155550188";
const EMAIL: &str = "secret.person@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_and_destination_appear_in_no_log_and_no_table() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "SM9"})))
        .mount(&server)
        .await;
    let smtp = support::smtp::FakeSmtp::start().await;
    let (base, port) = (server.uri(), smtp.port);
    let mut app = TestApp::spawn(move |s| {
        s.channels.sms = "twilio".into();
        s.channels.voice = "twilio".into();
        s.channels.email = "smtp".into();
        s.providers.twilio_mut("twilio").base_url = base.clone();
        s.providers.twilio_mut("twilio").account_sid = ACCOUNT_SID.into();
        s.providers.twilio_mut("twilio").auth_token = "tok".into();
        s.providers.twilio_mut("twilio").sms_from = "+15005550006".into();
        s.providers.twilio_mut("twilio").voice_from = "+15005550006".into();
        s.providers.smtp_mut("smtp").port = port;
        s.providers.smtp_mut("smtp").tls = SmtpTls::None;
    })
    .await;

    let mut rejected = job("sms", PHONE, CODE);
    rejected["template"] = "nonexistent".into();
    let jobs = [
        job("sms", PHONE, CODE),
        job("voice", PHONE, CODE),
        job("email", EMAIL, CODE),
        rejected,
    ];
    for j in &jobs {
        app.publish(j).await;
        let handled = app.report_for(&id(j)).await.handled;
        assert!(
            matches!(handled, Handled::Acked(_) | Handled::DeadLettered(_)),
            "{handled:?}"
        );
    }
    assert!(
        server.received_requests().await.unwrap().len() >= 3,
        "the code did go out to the provider"
    );

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(d)::text FROM deliveries d UNION ALL SELECT row_to_json(e)::text FROM delivery_events e",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(tables.len() >= 12, "rows were written: {tables:?}");
    for row in &tables {
        for secret in [CODE, PHONE, EMAIL] {
            assert!(!row.contains(secret), "{secret} stored in {row}");
        }
    }

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("job done"), "logs were captured");
    assert!(
        logs.contains("+1415•••0188"),
        "destinations are logged masked: {logs}"
    );
    for secret in [CODE, PHONE, EMAIL] {
        let line = logs.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{secret} logged in: {line:?}");
    }
}
