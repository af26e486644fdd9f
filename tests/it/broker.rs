//! The broker connection: a broker that accepts a connection and never answers (one wedged, or
//! half up after a restart) must not stop consumption for good. lapin's handshake has no
//! timeout of its own; `amqp.setup_timeout_ms` bounds a session's setup.

use crate::support::{TestApp, created, id, job, twilio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use wiremock::{Mock, MockServer};

/// A loopback proxy to the real RabbitMQ whose first connection is accepted and then ignored,
/// as a wedged broker would. Returns its address and the count of connections it accepted.
async fn wedged_then_healthy() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        // Held open, never read or written, until the test ends.
        let mut silent = Vec::new();
        while let Ok((mut client, _)) = listener.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                silent.push(client);
                continue;
            }
            tokio::spawn(async move {
                let mut broker = TcpStream::connect("127.0.0.1:5672").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_the_handshake_is_given_up_and_consumption_starts() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(created("SM1"))
        .mount(&server)
        .await;
    let (proxy, accepted) = wedged_then_healthy().await;
    let with_twilio = twilio(&server);
    let mut app = TestApp::spawn(move |s| {
        with_twilio(s);
        s.amqp.url = format!("amqp://guest:guest@{proxy}/%2f").as_str().into();
        s.amqp.setup_timeout_ms = 300;
    })
    .await;

    // Published straight to the broker; otpd's first session is stuck in the silent
    // handshake, so the job is handled only if otpd gives that session up and connects again.
    let j = job("sms", "+14155550123", "482913");
    app.publish(&j).await;
    let challenge = id(&j);
    let sent = app
        .event_where(|_, e| e["challenge_id"] == challenge && e["state"] != "accepted")
        .await;
    assert_eq!(sent["state"], "sent");
    assert!(accepted.load(Ordering::SeqCst) >= 2, "otpd connected again");
}
