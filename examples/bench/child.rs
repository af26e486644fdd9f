//! The `otpd` binary beside the bench (release or dist) as a child process on the run's own queues and database, through
//! the kit (`tests/kit`): its names, its child process, its fake Twilio.

use crate::kit::child;
use crate::kit::names::Names;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

/// The fake's one account.
pub const SID: &str = "AC0123456789abcdef0123456789abcdef";

/// The run's names: `bench-<suffix>.jobs`, `otpd_bench_<suffix>`.
pub fn names(suffix: &str) -> Names {
    Names::with_suffix("bench", suffix)
}

/// `BENCH_PG_QUERY`, if set: the query string of the measured connections (otpd's and the
/// ceilings'), e.g. `sslmode=disable` to measure what TLS costs (sqlx's default, `prefer`,
/// negotiates TLS whenever the server offers it).
pub fn pg_query() -> String {
    std::env::var("BENCH_PG_QUERY").unwrap_or_default()
}

/// The run's settings: the shipped defaults (and any `OTPD__` variable set for the bench, which
/// the child inherits too) with names of its own.
pub fn settings(suffix: &str) -> otpd::config::Settings {
    names(suffix).settings()
}

/// The provider's call limit, unless the caller set it. An instant fake runs at the shipped
/// limit (64 calls at once). A slow one is given 512: at 100 ms a call, 5,000 jobs/s needs 500
/// calls at once, which a provider contract would have to allow. A higher limit lets a claim
/// batch's burst open more HTTP/1.1 connections (~40 KB each) than the rate needs.
const MAX_CONCURRENCY: &str = "OTPD__PROVIDERS__TWILIO__MAX_CONCURRENCY";

/// Starts otpd and returns once it is consuming, with `extra` settings (keys without the
/// `OTPD__` prefix) over the run's own. Its stderr is drained in the background.
pub async fn spawn(suffix: &str, provider: &str, delay_ms: u64, extra: &[(&str, &str)]) -> Child {
    let exe = child::beside_examples();
    let names = names(suffix);
    let mut env = names.env();
    env.retain(|(k, _)| k != "DATABASE__URL");
    env.extend(
        [
            ("DATABASE__URL", names.database_url(&pg_query())),
            ("HTTP__LISTEN", "127.0.0.1:0".into()),
            ("CHANNELS__SMS", "twilio".into()),
            (
                "STORE__DESTINATION_HMAC_KEY",
                "bench-only-destination-hmac-key-0123456789".into(),
            ),
            ("PROVIDERS__TWILIO__BASE_URL", provider.into()),
            ("PROVIDERS__TWILIO__ACCOUNT_SID", SID.into()),
            ("PROVIDERS__TWILIO__AUTH_TOKEN", "bench".into()),
            ("PROVIDERS__TWILIO__SMS_FROM", "+15005550006".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut cmd = child::command(&exe, &env);
    cmd.stderr(std::process::Stdio::piped());
    if delay_ms > 0 && std::env::var_os(MAX_CONCURRENCY).is_none() {
        cmd.env(MAX_CONCURRENCY, "512");
    }
    let mut otpd = child::spawn(cmd, &exe);
    let mut lines = BufReader::new(otpd.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("consuming jobs") {
            break;
        }
        if line.contains("ERROR") {
            panic!("otpd failed to start: {line}");
        }
    }
    // Keep draining stderr so otpd never blocks on a full pipe; BENCH_OTPD_LOG keeps it.
    let mut keep = match std::env::var_os("BENCH_OTPD_LOG") {
        Some(path) => Some(
            tokio::fs::File::create(path)
                .await
                .expect("create BENCH_OTPD_LOG"),
        ),
        None => None,
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(file) = keep.as_mut() {
                let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            }
        }
    });
    otpd
}

/// Peak resident set size of a live process (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    child::status_kib(pid, "VmHWM:").unwrap_or(0)
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
pub async fn stop(mut otpd: Child) {
    child::stop(&mut otpd, std::time::Duration::from_secs(60)).await;
}

/// Removes the run's queues, exchanges and database.
pub async fn cleanup(suffix: &str) {
    names(suffix).cleanup().await;
}
