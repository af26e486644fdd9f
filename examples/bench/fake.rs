//! A fake Twilio Messages endpoint on loopback that answers 201 at once or after a fixed delay,
//! and notes when the request for each job first arrived (the job's index is its code).

use axum::extract::State;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const SID: &str = "AC0123456789abcdef0123456789abcdef";

pub struct Fake {
    start: Instant,
    delay: Duration,
    /// Microseconds after `start` at which the request for job i arrived (0: not yet).
    pub arrived: Vec<AtomicU64>,
}

impl Fake {
    pub fn new(start: Instant, delay: Duration, jobs: usize) -> Arc<Fake> {
        Arc::new(Fake {
            start,
            delay,
            arrived: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
        })
    }
}

/// Serves the fake on an ephemeral port; returns its base URL.
pub async fn serve(fake: Arc<Fake>) -> String {
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    let app = axum::Router::new()
        .route(&path, axum::routing::post(messages))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn messages(State(f): State<Arc<Fake>>, body: String) -> (axum::http::StatusCode, String) {
    let at = f.start.elapsed().as_micros() as u64;
    // The SMS body starts with the code, which is the job's index.
    let index = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "Body")
        .and_then(|(_, v)| v.split(' ').next().and_then(|c| c.parse::<usize>().ok()));
    if let Some(i) = index.filter(|i| *i < f.arrived.len()) {
        let _ = f.arrived[i].compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
    }
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    let sid = format!(r#"{{"sid":"SM{}"}}"#, index.unwrap_or(0));
    (axum::http::StatusCode::CREATED, sid)
}
