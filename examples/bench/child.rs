//! The release `otpd` binary as a child process on the run's own queues and database.

use super::fake::SID;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// The URL of database `db` for the measured connections (otpd's and the insert ceiling's):
/// `BENCH_PG_QUERY`, if set, is its query string, e.g. `sslmode=disable` to measure what TLS
/// costs (sqlx's default, `prefer`, negotiates TLS whenever the server offers it).
pub fn database_url(db: &str) -> String {
    match std::env::var("BENCH_PG_QUERY") {
        Ok(query) if !query.is_empty() => format!("{PG}/{db}?{query}"),
        _ => format!("{PG}/{db}"),
    }
}

/// The run's settings: the shipped defaults (and any `OTPD__` variable set for the bench, which
/// the child inherits too) with names of its own.
pub fn settings(suffix: &str) -> otpd::config::Settings {
    let mut s = otpd::config::load(None).expect("the defaults and OTPD__ variables load");
    s.amqp.jobs_exchange = format!("bench-{suffix}.jobs");
    s.amqp.jobs_queue = format!("bench-{suffix}.jobs");
    s.amqp.dead_letter_exchange = format!("bench-{suffix}.dlx");
    s.amqp.dead_letter_queue = format!("bench-{suffix}.dead");
    s.amqp.events_exchange = format!("bench-{suffix}.events");
    s
}

/// The provider's call limit, unless the caller set it. An instant fake runs at the shipped
/// limit (64 calls at once). A slow one is given 512: at 100 ms a call, 5,000 jobs/s needs 500
/// calls at once, which a provider contract would have to allow. A higher limit lets an open
/// batch's burst open more HTTP/1.1 connections (~40 KB each) than the rate needs.
const MAX_CONCURRENCY: &str = "OTPD__PROVIDERS__TWILIO__MAX_CONCURRENCY";

/// Starts otpd and returns once it is consuming. Its stderr is drained in the background.
pub fn spawn(suffix: &str, provider: &str, delay_ms: u64) -> Child {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("otpd");
    let s = settings(suffix);
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .env("OTPD__AMQP__JOBS_EXCHANGE", &s.amqp.jobs_exchange)
        .env("OTPD__AMQP__JOBS_QUEUE", &s.amqp.jobs_queue)
        .env(
            "OTPD__AMQP__DEAD_LETTER_EXCHANGE",
            &s.amqp.dead_letter_exchange,
        )
        .env("OTPD__AMQP__DEAD_LETTER_QUEUE", &s.amqp.dead_letter_queue)
        .env("OTPD__AMQP__EVENTS_EXCHANGE", &s.amqp.events_exchange)
        .env(
            "OTPD__DATABASE__URL",
            database_url(&format!("otpd_bench_{suffix}")),
        )
        .env("OTPD__HTTP__LISTEN", "127.0.0.1:0")
        .env("OTPD__CHANNELS__SMS", "twilio")
        .env(
            "OTPD__STORE__DESTINATION_HMAC_KEY",
            "bench-only-destination-hmac-key-0123456789",
        )
        .env("OTPD__PROVIDERS__TWILIO__BASE_URL", provider)
        .env("OTPD__PROVIDERS__TWILIO__ACCOUNT_SID", SID)
        .env("OTPD__PROVIDERS__TWILIO__AUTH_TOKEN", "bench")
        .env("OTPD__PROVIDERS__TWILIO__SMS_FROM", "+15005550006")
        .stderr(Stdio::piped());
    if delay_ms > 0 && std::env::var_os(MAX_CONCURRENCY).is_none() {
        cmd.env(MAX_CONCURRENCY, "512");
    }
    let mut child = cmd
        .spawn()
        .expect("build the release binary first: cargo build --release --examples --bins");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("consuming jobs") {
            break;
        }
        if line.contains("ERROR") {
            panic!("otpd failed to start: {line}");
        }
    }
    // Keep draining stderr so otpd never blocks on a full pipe; BENCH_OTPD_LOG keeps it.
    let mut keep = std::env::var_os("BENCH_OTPD_LOG")
        .map(|path| std::fs::File::create(path).expect("create BENCH_OTPD_LOG"));
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(file) = keep.as_mut() {
                let _ = writeln!(file, "{line}");
            }
        }
    });
    child
}

/// Peak resident set size of a live process (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CPU time used so far by a process (all threads, user and system) and by the whole machine
/// (every core, neither idle nor waiting), in ms. Linux reports both in USER_HZ ticks, which
/// is 100 a second on every architecture it runs on.
pub fn cpu_ms(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3; utime
    // and stime are fields 14 and 15.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let process = fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
    let all = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // cpu  user nice system idle iowait irq softirq steal …
    let ticks: Vec<u64> = all
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    (process * 10, busy * 10)
}

/// Stops otpd as systemd would (SIGTERM) and waits for it.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// Removes the run's queues, exchanges and database.
pub async fn cleanup(ch: &lapin::Channel, suffix: &str) {
    let _ = otpd::amqp::delete_topology(ch, &settings(suffix).amqp).await;
    let admin = sqlx::PgPool::connect(&format!("{PG}/postgres"))
        .await
        .unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS otpd_bench_{suffix} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}
