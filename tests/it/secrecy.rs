//! A code is a secret: after SMS, voice and email jobs (including a retried and a rejected one),
//! neither the code nor the full destination appears in any log line, at debug level for every
//! crate, in any table or in any status event, even where a vendor quotes the destination back
//! in its error (Twilio, SMTP, an HTTP vendor, an SMSC's receipt). It installs the global
//! subscriber, so it relies on nextest running each test in a process of its own.

use crate::support::smsc::{FakeSmsc, PASSWORD};
use crate::support::{ACCOUNT_SID, TestApp, id, job, provider_example};
use otpd::config::{ProviderConfig, SmppSettings, SmtpTls};
use otpd::intake::Handled;
use std::io::Write;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{body_string_contains, method};
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
/// Destinations whose vendor quotes them back in its refusal.
const PHONE_ECHOED: &str = "+14155550199";
const EMAIL_ECHOED: &str = "nobody.secret@example.com";
const UK_ECHOED: &str = "+447911123456";
const FR_ECHOED: &str = "+33612345678";
const SECRETS: [&str; 9] = [
    CODE,
    PHONE,
    EMAIL,
    PHONE_ECHOED,
    EMAIL_ECHOED,
    UK_ECHOED,
    FR_ECHOED,
    // The same numbers without their `+`, as vendors often write them.
    "447911123456",
    "33612345678",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_and_destination_appear_in_no_log_and_no_table() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(otpd::telemetry::filter("debug"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = MockServer::start().await;
    let refusal = serde_json::json!({
        "code": 21211,
        "message": format!("The 'To' number {PHONE_ECHOED} is not a valid phone number."),
    });
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B14155550199"))
        .respond_with(ResponseTemplate::new(400).set_body_json(refusal))
        .with_priority(1)
        .mount(&server)
        .await;
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
    let vonage_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "messages": [{"status": "Destination 447911123456 is barred", "to": "447911123456"}],
        })))
        .mount(&vonage_server)
        .await;
    let vonage = provider_example("vonage.toml", "vonage", &vonage_server.uri(), &[]);
    let smsc = FakeSmsc::start().await;
    smsc.echo_destination
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let smpp = ProviderConfig::Smpp(SmppSettings {
        url: smsc.url(),
        system_id: "otpd".into(),
        password: PASSWORD.into(),
        source_addr: "Acme".into(),
        ..SmppSettings::default()
    });
    let smtp = crate::support::smtp::FakeSmtp::start().await;
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
        s.providers.0.insert("vonage".into(), vonage.clone());
        s.providers.0.insert("smsc".into(), smpp.clone());
        s.channels.routes.sms.insert("+44".into(), "vonage".into());
        s.channels.routes.sms.insert("+33".into(), "smsc".into());
    })
    .await;

    let mut rejected = job("sms", PHONE, CODE);
    rejected["template"] = "nonexistent".into();
    let jobs = [
        job("sms", PHONE, CODE),
        job("voice", PHONE, CODE),
        job("email", EMAIL, CODE),
        rejected,
        job("sms", PHONE_ECHOED, CODE),
        job("email", EMAIL_ECHOED, CODE),
        job("sms", UK_ECHOED, CODE),
        job("sms", FR_ECHOED, CODE),
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
    // Every event up to the SMSC's receipt, which quotes the number in its error field.
    let fr = id(&jobs[7]);
    let mut events = Vec::new();
    loop {
        let e = app.event_where(|_, _| true).await;
        let done = e["challenge_id"] == fr.as_str() && e["state"] == "undelivered";
        events.push(e);
        if done {
            break;
        }
    }
    let refused = |j: usize| {
        events
            .iter()
            .find(|e| e["challenge_id"] == id(&jobs[j]).as_str() && e["state"] == "failed")
            .unwrap_or_else(|| panic!("job {j} failed: {events:?}"))
    };
    assert!(
        refused(4)["detail"]
            .as_str()
            .unwrap()
            .contains("+1415•••0199")
    );
    assert!(
        refused(5)["detail"]
            .as_str()
            .unwrap()
            .contains("n•••@example.com")
    );
    assert!(
        refused(6)["detail"]
            .as_str()
            .unwrap()
            .contains("+4479•••3456")
    );
    let receipt = events.last().unwrap();
    assert_eq!(receipt["carrier_error"], "+3361•••5678");
    for e in &events {
        for secret in SECRETS {
            assert!(!e.to_string().contains(secret), "{secret} in the event {e}");
        }
    }

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(d)::text FROM deliveries d UNION ALL SELECT row_to_json(e)::text FROM delivery_events e",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(tables.len() >= 12, "rows were written: {tables:?}");
    for row in &tables {
        for secret in SECRETS {
            assert!(!row.contains(secret), "{secret} stored in {row}");
        }
    }

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("job done"), "logs were captured");
    assert!(
        logs.contains("+1415•••0188"),
        "destinations are logged masked: {logs}"
    );
    for secret in SECRETS {
        let line = logs.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{secret} logged in: {line:?}");
    }
}
