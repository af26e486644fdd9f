//! Per-country routing, end to end: `[channels.routes.sms]` sends +91 numbers through one
//! Twilio account, a UK mobile prefix through a second, and everything else through the
//! channel's own chain, each account faked by its own wiremock server.

use crate::support::{TestApp, id, job};
use otpd::config::Chain;
use otpd::dispatch::Ending;
use otpd::domain::DeliveryState;
use otpd::intake::Handled;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SIDS: [(&str, &str); 3] = [
    ("twilio", "AC00000000000000000000000000000000"),
    ("india", "AC91919191919191919191919191919191"),
    ("uk_mobile", "AC44444444444444444444444444444444"),
];

const SENT: Handled = Handled::Acked(Ending::Finished(DeliveryState::Sent));

async fn fake(sid: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{sid}/Messages.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({ "sid": "SM1" })))
        .mount(&server)
        .await;
    server
}

/// The destinations each fake was asked to deliver to.
async fn destinations(server: &MockServer) -> Vec<String> {
    let mut out = Vec::new();
    for r in server.received_requests().await.unwrap() {
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&r.body).into_owned().collect();
        out.push(form["To"].clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_goes_through_the_route_of_its_country_or_prefix() {
    let mut fakes = Vec::new();
    for (_, sid) in SIDS {
        fakes.push(fake(sid).await);
    }
    let urls: Vec<String> = fakes.iter().map(|f| f.uri()).collect();
    let mut app = TestApp::spawn(move |s| {
        s.channels.sms = "twilio".into();
        for ((name, sid), url) in SIDS.iter().zip(&urls) {
            let t = s.providers.twilio_mut(name);
            t.base_url = url.clone();
            t.account_sid = (*sid).into();
            t.auth_token = "test-token".into();
            t.sms_from = "+15005550006".into();
        }
        let routes = &mut s.channels.routes.sms;
        routes.insert("IN".into(), Chain::from("india, twilio"));
        // A prefix beats the country (GB) it lies in, and a longer prefix a shorter one.
        routes.insert("GB".into(), Chain::from("twilio"));
        routes.insert("+447".into(), Chain::from("uk_mobile"));
        routes.insert("+44".into(), Chain::from("twilio"));
    })
    .await;
    let to = [
        "+919876543210",
        "+447911123456",
        "+442071838750",
        "+14155550123",
    ];
    for (i, number) in to.iter().enumerate() {
        let job = job("sms", number, &format!("24680{i}"));
        app.publish(&job).await;
        let report = app.report_for(&id(&job)).await;
        assert_eq!(report.handled, SENT, "{number}");
    }
    assert_eq!(destinations(&fakes[1]).await, ["+919876543210"], "india");
    assert_eq!(
        destinations(&fakes[2]).await,
        ["+447911123456"],
        "uk_mobile"
    );
    assert_eq!(
        destinations(&fakes[0]).await,
        ["+442071838750", "+14155550123"],
        "the channel's own chain"
    );
}
