//! The fault suite (docs/reliability.md), run with `scripts/fault-suite` (which builds the debug `otpd`
//! binary and this example, then runs `target/debug/examples/faults [SCENARIO…] [--seed N]`).
//!
//! It runs the real `otpd` binary as a child process against the machine's RabbitMQ and
//! PostgreSQL, with a fake Twilio on loopback, and injects one fault per scenario: SIGKILLs, a
//! RabbitMQ restart, a 30 s PostgreSQL outage, a flaky provider, a dead provider, codes that
//! expire during retries, a stalled provider. It prints a table of figures per scenario and
//! exits non-zero if any invariant broke. It stops and starts the machine's broker and
//! database, so it must not run while anything else uses them (CI runs it after the tests).
//!
//! Scenarios: crash, broker, pg, flaky, failover, expiry, stall, fallback (default: all, in that
//! order).

mod audit;
mod fake;
#[path = "../../tests/kit/mod.rs"]
mod kit;
mod rig;
mod scenarios;
mod services;
mod stall;
mod steps;

use std::time::Instant;

const ALL: [&str; 8] = [
    "crash", "broker", "pg", "flaky", "failover", "expiry", "stall", "fallback",
];

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut chosen: Vec<String> = Vec::new();
    let mut seed: u64 = rand::random::<u16>().into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()).expect("--seed N"),
            s if ALL.contains(&s) => chosen.push(arg),
            other => {
                eprintln!("unknown argument {other}; scenarios are {ALL:?}, plus --seed N");
                std::process::exit(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = ALL.iter().map(|s| s.to_string()).collect();
    }
    let started = Instant::now();
    let mut failed = 0;
    for name in &chosen {
        let t0 = Instant::now();
        eprintln!("[faults] running {name}…");
        let report = match name.as_str() {
            "crash" => scenarios::crashes(seed).await,
            "broker" => scenarios::broker_restart().await,
            "pg" => scenarios::database_outage().await,
            "flaky" => scenarios::flaky_provider().await,
            "failover" => scenarios::failover().await,
            "stall" => stall::stalled_provider().await,
            "fallback" => steps::fallback_across_broker_restart().await,
            _ => scenarios::expiry_during_retries().await,
        };
        let verdict = if report.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        println!(
            "\n### {} — {verdict} ({:.0} s)\n",
            report.name,
            t0.elapsed().as_secs_f64()
        );
        println!("| figure | value |\n|---|---|");
        for (k, v) in &report.figures {
            println!("| {k} | {v} |");
        }
        for f in &report.failures {
            println!("\nFAILED: {f}");
        }
        if !report.failures.is_empty() {
            failed += 1;
        }
    }
    println!(
        "\nfault suite: {} of {} scenarios passed in {:.0} s",
        chosen.len() - failed,
        chosen.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
