//! A fake Twilio on loopback that speaks the Messages API, one behaviour per account SID, and
//! keeps what the harnesses measure: when each code's first request arrived, and how often
//! each code was accepted, and when.
//!
//! Codes are the job's index, so a count per index is a count per challenge. A call counts as
//! a send the moment the fake decides to accept it, before it answers: that is what a real
//! provider does, and it is why a caller that times out or dies mid-call is in doubt. Every
//! accepted message gets a SID of its own, as Twilio's do.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How an account answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 201, after the account's delay (none unless set).
    Healthy = 0,
    /// 503 to everything.
    Down = 1,
    /// 30% of calls fail: 10% 500, 10% 429 with Retry-After: 1, 10% accepted but answered only
    /// after 1.5 s (longer than the fault suite's attempt timeout).
    Flaky = 2,
    /// Never answers (within any sane timeout) and accepts nothing.
    Stalled = 3,
    /// 201 after 100 ms, accepted at the end of the wait, so that a run lasts long enough for
    /// a fault to land in its middle.
    Slow = 4,
}

/// Per-account behaviour and counters.
#[derive(Default)]
pub struct Account {
    mode: AtomicU8,
    /// How long a healthy answer takes, in ms.
    delay_ms: AtomicU64,
    pub calls: AtomicU64,
    pub accepted: AtomicU64,
    pub errors_500: AtomicU64,
    pub errors_503: AtomicU64,
    pub errors_429: AtomicU64,
    pub slow: AtomicU64,
    /// Unix microseconds of the first accepted call (0 = none).
    pub first_ok_us: AtomicU64,
    /// Unix microseconds of the latest accepted call.
    pub last_ok_us: AtomicU64,
}

impl Account {
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Down,
            2 => Mode::Flaky,
            3 => Mode::Stalled,
            4 => Mode::Slow,
            _ => Mode::Healthy,
        }
    }
}

pub struct Fake {
    pub accounts: HashMap<&'static str, Account>,
    origin: Instant,
    /// Microseconds after the origin at which the first request for job i arrived (0: none).
    pub arrived: Vec<AtomicU64>,
    /// Accepted sends per job index.
    pub sends: Vec<AtomicU32>,
    /// Unix microseconds of each job's first accepted send (0 = never).
    pub first_send_us: Vec<AtomicU64>,
    next_sid: AtomicU64,
}

pub fn now_us() -> u64 {
    chrono::Utc::now().timestamp_micros() as u64
}

impl Fake {
    /// A fake for `jobs` jobs, answering for the accounts `sids`; arrival times count from
    /// `origin`.
    pub fn new(jobs: usize, sids: &[&'static str], origin: Instant) -> Arc<Fake> {
        Arc::new(Fake {
            accounts: sids.iter().map(|sid| (*sid, Account::default())).collect(),
            origin,
            arrived: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
            sends: (0..jobs).map(|_| AtomicU32::new(0)).collect(),
            first_send_us: (0..jobs).map(|_| AtomicU64::new(0)).collect(),
            next_sid: AtomicU64::new(1),
        })
    }

    pub fn account(&self, sid: &str) -> &Account {
        &self.accounts[sid]
    }

    /// How often the provider accepted challenge `i`.
    pub fn sends(&self, i: usize) -> u32 {
        self.sends[i].load(Ordering::SeqCst)
    }

    /// Challenges the provider accepted at least once, and sends beyond the first.
    pub fn seen_and_duplicates(&self, range: std::ops::Range<usize>) -> (usize, u64) {
        let mut seen = 0;
        let mut dupes = 0;
        for i in range {
            let n = self.sends[i].load(Ordering::SeqCst);
            if n > 0 {
                seen += 1;
                dupes += u64::from(n - 1);
            }
        }
        (seen, dupes)
    }

    /// Notes the request's arrival; returns the job index its body names.
    fn arrive(&self, body: &str) -> Option<usize> {
        let at = self.origin.elapsed().as_micros() as u64;
        let index = url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "Body")
            .and_then(|(_, v)| v.split(' ').next().and_then(|c| c.parse::<usize>().ok()))
            .filter(|i| *i < self.arrived.len())?;
        let _ = self.arrived[index].compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst);
        Some(index)
    }

    /// Accepts the message: counts it and returns the body of a 201.
    fn accept(&self, account: &Account, index: Option<usize>) -> String {
        account.accepted.fetch_add(1, Ordering::SeqCst);
        account.last_ok_us.fetch_max(now_us(), Ordering::SeqCst);
        let _ =
            account
                .first_ok_us
                .compare_exchange(0, now_us(), Ordering::SeqCst, Ordering::SeqCst);
        if let Some(i) = index {
            self.sends[i].fetch_add(1, Ordering::SeqCst);
            let _ = self.first_send_us[i].compare_exchange(
                0,
                now_us(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        let sid = self.next_sid.fetch_add(1, Ordering::SeqCst);
        format!(r#"{{"sid":"SM{sid:032x}","status":"queued"}}"#)
    }
}

type Answer = (StatusCode, HeaderMap, String);

async fn messages(State(fake): State<Arc<Fake>>, Path(sid): Path<String>, body: String) -> Answer {
    let headers = HeaderMap::new();
    let Some(account) = fake.accounts.get(sid.as_str()) else {
        let body = r#"{"code":20404,"status":404}"#.to_string();
        return (StatusCode::NOT_FOUND, headers, body);
    };
    account.calls.fetch_add(1, Ordering::SeqCst);
    let index = fake.arrive(&body);
    match account.mode() {
        Mode::Healthy => {
            let delay = account.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
        Mode::Slow => tokio::time::sleep(Duration::from_millis(100)).await,
        Mode::Stalled => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return (StatusCode::SERVICE_UNAVAILABLE, headers, "{}".into());
        }
        Mode::Down => {
            account.errors_503.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::SERVICE_UNAVAILABLE, headers, "{}".into());
        }
        Mode::Flaky => {
            let roll: f64 = rand::random();
            if roll < 0.1 {
                account.errors_500.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::INTERNAL_SERVER_ERROR, headers, "{}".into());
            }
            if roll < 0.2 {
                account.errors_429.fetch_add(1, Ordering::SeqCst);
                let mut h = headers;
                h.insert("retry-after", HeaderValue::from_static("1"));
                let body = r#"{"code":20429,"status":429}"#.to_string();
                return (StatusCode::TOO_MANY_REQUESTS, h, body);
            }
            if roll < 0.3 {
                account.slow.fetch_add(1, Ordering::SeqCst);
                let created = fake.accept(account, index);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                return (StatusCode::CREATED, headers, created);
            }
        }
    }
    let created = fake.accept(account, index);
    (StatusCode::CREATED, headers, created)
}

/// Serves the fake on an ephemeral loopback port and returns its base URL.
pub async fn serve(fake: Arc<Fake>) -> String {
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            axum::routing::post(messages),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
