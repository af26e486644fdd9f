//! Delivery-health routing end to end: two fake Twilio accounts in one SMS chain `a, b`, with
//! receipts posted to the webhook as Twilio signs them. Account `a` accepts every message; when
//! its receipts say half of them were not delivered (or never come), it is demoted behind `b`
//! for the destinations' country, announced, shown on /status and in the metrics; after a quiet
//! window it is restored and takes the traffic again.

use crate::support::{TestApp, created, id, job};
use otpd::providers::twilio_receipt::signature;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SIDS: [(&str, &str); 2] = [
    ("a", "AC0000000000000000000000000000000a"),
    ("b", "AC0000000000000000000000000000000b"),
];
const PUBLIC_URL: &str = "https://otpd.example.com";
const CALLBACK: &str = "https://otpd.example.com/webhooks/twilio";

/// Answers each message with a message SID of its own: `SM<name><n>`.
struct Numbered(&'static str, AtomicUsize);

impl Respond for Numbered {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        created(&format!(
            "SM{}{}",
            self.0,
            self.1.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

async fn fake(name: &'static str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Numbered(name, AtomicUsize::new(0)))
        .mount(&server)
        .await;
    server
}

/// The chain `a, b`, limits off (one number range takes every job), and health judged over
/// a window of 3 s on 6 samples, checked every 50 ms.
async fn spawn(receipt_timeout_ms: u64) -> (TestApp, [MockServer; 2]) {
    let fakes = [fake("a").await, fake("b").await];
    let urls = [fakes[0].uri(), fakes[1].uri()];
    let app = TestApp::spawn(move |s| {
        s.channels.sms = "a, b".into();
        for ((name, sid), url) in SIDS.iter().zip(&urls) {
            let t = s.providers.twilio_mut(name);
            t.base_url = url.clone();
            t.account_sid = (*sid).into();
            t.auth_token = format!("token-{name}").as_str().into();
            t.sms_from = "+15005550006".into();
        }
        s.http.public_url = PUBLIC_URL.into();
        s.limits.enabled = false;
        let h = &mut s.delivery.health;
        h.enabled = true;
        h.window_ms = 3000;
        h.check_interval_ms = 50;
        h.min_samples = 6;
        h.min_delivered_ratio = 0.8;
        h.max_p95_ms = 0;
        h.receipt_timeout_ms = receipt_timeout_ms;
    })
    .await;
    (app, fakes)
}

/// Events as they come, keeping the alerts aside so that waiting for a status event never
/// loses one.
struct Watch {
    alerts: Vec<Value>,
}

impl Watch {
    async fn status(&mut self, app: &mut TestApp, challenge: &str, state: &str) -> Value {
        loop {
            let e = app
                .event_where(|k, e| {
                    k.starts_with("alert.provider_")
                        || (e["challenge_id"] == challenge && e["state"] == state)
                })
                .await;
            match e.get("event") {
                Some(_) => self.alerts.push(e),
                None => return e,
            }
        }
    }

    async fn alert(&mut self, app: &mut TestApp, event: &str) -> Value {
        if let Some(i) = self.alerts.iter().position(|a| a["event"] == event) {
            return self.alerts.remove(i);
        }
        app.event_where(|k, _| k == format!("alert.{event}")).await
    }
}

/// Sends an SMS to a GB number and returns its `sent` event.
async fn send(app: &mut TestApp, watch: &mut Watch, n: usize) -> Value {
    let job = job("sms", &format!("+447400123{n:03}"), "482913");
    app.publish(&job).await;
    watch.status(app, &id(&job), "sent").await
}

/// Posts the receipt Twilio would for a `sent` event, and waits for its status event.
async fn receipt(app: &mut TestApp, watch: &mut Watch, sent: &Value, delivered: bool) {
    let name = sent["provider"].as_str().unwrap();
    let (_, sid) = SIDS.iter().find(|(n, _)| *n == name).unwrap();
    let status = if delivered {
        "delivered"
    } else {
        "undelivered"
    };
    let params: Vec<(String, String)> = [
        ("AccountSid", *sid),
        ("MessageSid", sent["provider_message_id"].as_str().unwrap()),
        ("MessageStatus", status),
        ("ErrorCode", if delivered { "" } else { "30005" }),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let answer = reqwest::Client::new()
        .post(format!("http://{}/webhooks/twilio", app.http))
        .header(
            "X-Twilio-Signature",
            signature(&format!("token-{name}"), CALLBACK, &params),
        )
        .form(&params)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let challenge = sent["challenge_id"].as_str().unwrap();
    watch.status(app, challenge, status).await;
}

async fn page(app: &TestApp, path: &str) -> String {
    let url = format!("http://{}{path}", app.http);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_receipts_say_undelivered_is_demoted_then_drifts_back() {
    let (mut app, _fakes) = spawn(2000).await;
    let mut watch = Watch { alerts: Vec::new() };
    for n in 0..6 {
        let sent = send(&mut app, &mut watch, n).await;
        assert_eq!(sent["provider"], "a");
        receipt(&mut app, &mut watch, &sent, n % 2 == 0).await;
    }
    let demoted = watch.alert(&mut app, "provider_demoted").await;
    assert_eq!(
        (&demoted["provider"], &demoted["country"]),
        (&"a".into(), &"GB".into())
    );
    assert_eq!(demoted["level"], 1);
    assert!(
        demoted["delivered_ratio"].as_f64().unwrap() < 0.8,
        "{demoted}"
    );

    // Traffic to GB now goes to b first, and operators can see why.
    let sent = send(&mut app, &mut watch, 6).await;
    assert_eq!(
        (&sent["provider"], &sent["attempt"]),
        (&"b".into(), &1.into())
    );
    let status = page(&app, "/status").await;
    assert!(
        status.contains("a moved 1 place(s) down for GB"),
        "{status}"
    );
    let metrics = page(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"otpd_provider_demotion{provider="a",country="GB"} 1"#),
        "{metrics}"
    );

    // A window later with nothing bad heard, a is back in its place and delivers again.
    let restored = watch.alert(&mut app, "provider_restored").await;
    assert_eq!(
        (&restored["provider"], &restored["level"]),
        (&"a".into(), &0.into())
    );
    for n in 7..13 {
        let sent = send(&mut app, &mut watch, n).await;
        assert_eq!(sent["provider"], "a");
        receipt(&mut app, &mut watch, &sent, true).await;
    }
    assert!(
        page(&app, "/status")
            .await
            .contains("Every provider is in its configured place")
    );
    assert!(watch.alerts.is_empty(), "{:?}", watch.alerts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_that_never_come_count_as_not_delivered() {
    let (mut app, _fakes) = spawn(300).await;
    let mut watch = Watch { alerts: Vec::new() };
    for n in 0..6 {
        let sent = send(&mut app, &mut watch, n).await;
        assert_eq!(sent["provider"], "a");
    }
    let demoted = watch.alert(&mut app, "provider_demoted").await;
    assert_eq!(demoted["provider"], "a");
    assert_eq!(
        (&demoted["delivered"], &demoted["not_delivered"]),
        (&0.into(), &6.into())
    );
    let sent = send(&mut app, &mut watch, 6).await;
    assert_eq!(sent["provider"], "b");
}

/// Instances judge alike and concurrently: of several moving one standing from what they read,
/// one moves it, so each move is announced once and routing agrees everywhere; and of several
/// checking at once, one scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_instances_moving_one_standing_at_once_exactly_one_moves_it() {
    let (_db, store) = crate::store::scratch_store().await;
    let score = otpd::store::Score {
        provider: "a".into(),
        country: "GB".into(),
        delivered: 3,
        not_delivered: 3,
        p95_ms: Some(1200.0),
    };
    let moves =
        futures_util::future::join_all((0..4).map(|_| store.move_standing(None, 1, &score)));
    let won = moves
        .await
        .into_iter()
        .filter(|m| *m.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
    let standings = store.standings().await.unwrap();
    assert_eq!(standings.len(), 1);
    let was = &standings[0];
    assert_eq!((was.level, was.delivered, was.p95_ms), (1, 3, Some(1200.0)));
    assert!(store.move_standing(Some(was), 0, &score).await.unwrap());
    assert!(
        !store.move_standing(Some(was), 0, &score).await.unwrap(),
        "a stale standing moves nothing"
    );
    assert_eq!(store.standings().await.unwrap()[0].level, 0);

    // One instance scores per interval; the others only reload the standings.
    let minute = std::time::Duration::from_secs(60);
    let takes = futures_util::future::join_all((0..4).map(|_| store.take_health_check(minute)));
    let scorers = takes
        .await
        .into_iter()
        .filter(|t| *t.as_ref().unwrap())
        .count();
    assert_eq!(scorers, 1);
    assert!(
        store
            .take_health_check(std::time::Duration::ZERO)
            .await
            .unwrap()
    );
}
