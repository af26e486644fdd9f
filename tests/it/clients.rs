//! The publisher clients in clients/ (Python on pika, Node on amqplib, Go on amqp091-go, Rust
//! on lapin), each
//! run against the real broker and a running otpd that requires signed jobs: a job is built,
//! signed, published with confirms, and its `sent` event heard by the client itself. A client
//! that signed wrong would see its job dead-lettered and hear nothing.

use crate::support::{PATIENCE, TestApp};
use otpd::config::{Secret, SigningMode};
use serde_json::Value;
use std::path::Path;

const KEY_ID: &str = "k1";
const KEY: &str = "clients-test-signing-key-0123456789";

async fn signed_otpd() -> TestApp {
    TestApp::spawn(|s| {
        s.signing.mode = SigningMode::Require;
        s.signing.keys.insert(KEY_ID.into(), Secret::from(KEY));
    })
    .await
}

/// Runs a client's command-line example against `app`; its stdout, the terminal event.
async fn run(app: &TestApp, program: &str, script: &str, hint: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(root.join(script));
    run_command(app, cmd, script, hint).await
}

/// Runs `cmd` with the example's flags for `app`; its stdout, the terminal event.
async fn run_command(
    app: &TestApp,
    mut cmd: tokio::process::Command,
    script: &str,
    hint: &str,
) -> Value {
    let a = app.settings().amqp;
    let out = tokio::time::timeout(
        PATIENCE * 4,
        cmd.args(["--url", a.url.expose()])
            .args(["--jobs-exchange", &a.jobs_exchange])
            .args(["--events-exchange", &a.events_exchange])
            .args(["--to", "+14155550123", "--code", "271828"])
            .args(["--key-id", KEY_ID, "--key", KEY])
            .output(),
    )
    .await
    .expect("the client finishes in time")
    .unwrap_or_else(|e| panic!("{script}: {e} ({hint})"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}: {stdout}{stderr} ({hint})");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_publishes_a_signed_job_and_hears_it_sent() {
    let app = signed_otpd().await;
    let hint = "scripts/test installs pika: python3 -m pip install pika";
    let event = run(&app, "python3", "clients/python/send.py", hint).await;
    assert_eq!(event["state"], "sent", "{event}");
    assert!(event["challenge_id"].as_str().unwrap().starts_with("py-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_publishes_a_signed_job_and_hears_it_sent() {
    let app = signed_otpd().await;
    let hint = "scripts/test installs amqplib: npm ci --prefix clients/node";
    let event = run(&app, "node", "clients/node/send.js", hint).await;
    assert_eq!(event["state"], "sent", "{event}");
    assert!(event["challenge_id"].as_str().unwrap().starts_with("js-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_client_publishes_a_signed_job_and_hears_it_sent() {
    let app = signed_otpd().await;
    let hint = "scripts/test installs Debian's golang-go and golang-github-rabbitmq-amqp091-go-dev";
    // Debian packages amqp091-go for GOPATH builds; the client is laid out there beside it,
    // so the test needs no module proxy.
    let gopath = std::env::temp_dir().join(format!("otpd-go-{}", app.suffix));
    let package = gopath.join("src/github.com/otpd/otpd/clients/go");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/go"),
        &package,
    );
    let mut cmd = tokio::process::Command::new("go");
    cmd.args(["run", "github.com/otpd/otpd/clients/go/cmd/send"])
        .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "");
    let event = run_command(&app, cmd, "clients/go/cmd/send", hint).await;
    std::fs::remove_dir_all(&gopath).unwrap();
    assert_eq!(event["state"], "sent", "{event}");
    assert!(event["challenge_id"].as_str().unwrap().starts_with("go-"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_publishes_a_signed_job_and_hears_it_sent() {
    let app = signed_otpd().await;
    let a = app.settings().amqp;
    let options = otpd_client::Options {
        jobs_exchange: a.jobs_exchange.clone(),
        events_exchange: a.events_exchange.clone(),
        key: Some((KEY_ID.into(), KEY.as_bytes().to_vec())),
    };
    let otpd = otpd_client::Publisher::connect(a.url.expose(), options)
        .await
        .unwrap();
    let job = otpd_client::Job::new("sms", "+14155550123", "271828", "rust-client");
    let mut events = otpd.watch(&job.challenge_id).await.unwrap();
    otpd.publish(&job).await.unwrap();
    let event = events.terminal(PATIENCE).await.unwrap();
    assert_eq!(event["state"], "sent", "{event}");
    assert_eq!(event["challenge_id"], job.challenge_id.as_str());
    otpd.close().await.unwrap();
}
