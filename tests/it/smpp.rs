//! The SMPP provider against an SMSC on loopback (`support::smsc`): bind as a transceiver,
//! submit GSM-7 text, turn the SMSC's deliver_sm receipt into a `delivered` event, reconnect
//! after the SMSC drops the session, and refuse to deliver with a wrong password.

use crate::support::smsc::{FakeSmsc, PASSWORD};
use crate::support::{PATIENCE, TestApp, id, job, life_window};
use otpd::config::{ProviderConfig, SmppSettings};
use otpd::dispatch::Ending;
use otpd::domain::DeliveryState;
use otpd::intake::Handled;
use std::sync::atomic::Ordering;

const SENT: Handled = Handled::Acked(Ending::Finished(DeliveryState::Sent));

fn smpp(url: String, password: &'static str) -> impl Fn(&mut otpd::config::Settings) + Send + Sync {
    with(url, password, |_| {})
}

fn with(
    url: String,
    password: &'static str,
    tweak: impl Fn(&mut SmppSettings) + Send + Sync,
) -> impl Fn(&mut otpd::config::Settings) + Send + Sync {
    move |s| {
        let mut p = SmppSettings {
            url: url.clone(),
            system_id: "otpd".into(),
            password: password.into(),
            source_addr: "Acme".into(),
            ..SmppSettings::default()
        };
        tweak(&mut p);
        s.providers.0.insert("smsc".into(), ProviderConfig::Smpp(p));
        s.channels.sms = "smsc".into();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transceiver_submits_gets_its_receipt_and_reconnects_after_a_drop() {
    let mut smsc = FakeSmsc::start().await;
    let mut app = TestApp::spawn(smpp(smsc.url(), PASSWORD)).await;

    // The SMSC drops the session right after answering the first submit_sm.
    smsc.drop_after_submit.store(true, Ordering::SeqCst);
    let first = job("sms", "+14155550123", "246810");
    let before = chrono::Utc::now();
    app.publish(&first).await;
    assert_eq!(app.report_for(&id(&first)).await.handled, SENT);
    let after = chrono::Utc::now();
    let submitted = smsc.submits.recv().await.unwrap();
    // Relative form, YYMMDDhhmmss then tenths, "00" and R: the code's remaining life.
    let v = &submitted.validity_period;
    assert!(
        v.len() == 16 && v.starts_with("0000") && v.ends_with("000R"),
        "{v}"
    );
    let field = |i: usize| v[i..i + 2].parse::<u64>().unwrap();
    let validity = field(4) * 86_400 + field(6) * 3600 + field(8) * 60 + field(10);
    assert!(
        life_window(&first, before, after).contains(&validity),
        "{v}"
    );
    assert_eq!(submitted.system_id, "otpd");
    assert_eq!(submitted.source, "Acme");
    assert_eq!(submitted.destination, "14155550123");
    assert_eq!(
        submitted.data_coding, 0,
        "GSM-7, the SMSC's default alphabet"
    );
    assert_eq!(
        submitted.short_message,
        b"246810 is your otpd verification code. It expires in 5 minutes."
    );
    assert_eq!(app.event_for(&id(&first)).await["state"], "accepted");
    let sent = app.event_for(&id(&first)).await;
    assert_eq!(
        (sent["state"].as_str(), sent["provider_message_id"].as_str()),
        (Some("sent"), Some("m1"))
    );

    // The next job binds a new session and this time gets a receipt back.
    let second = job("sms", "+14155550124", "135790");
    app.publish(&second).await;
    assert_eq!(app.report_for(&id(&second)).await.handled, SENT);
    assert_eq!(smsc.submits.recv().await.unwrap().message_id, "m2");
    assert_eq!(smsc.binds.load(Ordering::SeqCst), 2, "one bind per session");
    assert_eq!(app.event_for(&id(&second)).await["state"], "accepted");
    assert_eq!(app.event_for(&id(&second)).await["state"], "sent");
    let delivered = app.event_for(&id(&second)).await;
    assert_eq!(delivered["state"], "delivered");
    assert_eq!(delivered["provider"], "smsc");
    assert_eq!(delivered["provider_message_id"], "m2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bind_fails_the_job_as_provider_auth() {
    let smsc = FakeSmsc::start().await;
    let mut app = TestApp::spawn(smpp(smsc.url(), "wrong")).await;
    let j = job("sms", "+14155550123", "246810");
    app.publish(&j).await;
    assert_eq!(
        app.report_for(&id(&j)).await.handled,
        Handled::Acked(Ending::Finished(DeliveryState::Failed))
    );
    assert_eq!(app.event_for(&id(&j)).await["state"], "accepted");
    assert_eq!(app.event_for(&id(&j)).await["reason"], "provider_auth");
    assert_eq!(smsc.binds.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transmitter_asks_for_no_receipt_and_keeps_its_session_alive() {
    let mut smsc = FakeSmsc::start().await;
    let tweak = |p: &mut SmppSettings| {
        p.bind = otpd::config::SmppBind::Transmitter;
        p.enquire_link_interval_ms = 50;
    };
    let mut app = TestApp::spawn(with(smsc.url(), PASSWORD, tweak)).await;
    let j = job("sms", "+14155550123", "246810");
    app.publish(&j).await;
    assert_eq!(app.report_for(&id(&j)).await.handled, SENT);
    assert!(!smsc.submits.recv().await.unwrap().receipt_requested);
    // enquire_link keeps an idle session alive: two of them, on the one bound session.
    for _ in 0..2 {
        tokio::time::timeout(PATIENCE, smsc.enquire_links.recv())
            .await
            .expect("enquire_link within the patience")
            .unwrap();
    }
    assert_eq!(smsc.binds.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_originated_message_that_reads_like_a_receipt_changes_nothing() {
    let mut smsc = FakeSmsc::start().await;
    // Before the real DELIVRD receipt, the SMSC passes on an MO (esm_class 0) whose text
    // reads `stat:UNDELIV` for the same message id: a sender may write anything.
    smsc.spoof_mo_receipt.store(true, Ordering::SeqCst);
    let mut app = TestApp::spawn(smpp(smsc.url(), PASSWORD)).await;
    let j = job("sms", "+14155550123", "246810");
    app.publish(&j).await;
    assert_eq!(app.report_for(&id(&j)).await.handled, SENT);
    assert_eq!(smsc.submits.recv().await.unwrap().message_id, "m1");
    assert_eq!(app.event_for(&id(&j)).await["state"], "accepted");
    assert_eq!(app.event_for(&id(&j)).await["state"], "sent");
    // Events come in order: had the MO been read as a receipt, this one would be undelivered.
    assert_eq!(app.event_for(&id(&j)).await["state"], "delivered");
}
