//! The `otpd` command line.

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use lapin::options::BasicPublishOptions;
use otpd::audit::{PurgeTrigger, SEAL_PATIENCE, Trail};
use otpd::store::Store;
use otpd::{app::App, config};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Parser)]
#[command(name = "otpd", version, about = "OTP delivery gateway")]
struct Cli {
    /// Configuration file layered over the defaults (default: /etc/otpd/otpd.toml if present).
    #[arg(long, global = true, env = "OTPD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: consume jobs and deliver codes.
    Run,
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Validate the configuration and print the effective settings, secrets redacted.
    CheckConfig,
    /// Print delivery health per channel, provider and country.
    Report {
        /// How far back to look: 30m, 1h, 7d…
        #[arg(long, default_value = "1h")]
        since: String,
        /// "table" for people, "json" for scripts.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Delete deliveries and audit events older than the given age; the purge is recorded.
    Purge {
        /// 30d, 12h… Records younger than this are kept.
        #[arg(long)]
        older_than: String,
    },
    /// The hash-chained audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ask a running otpd (at `http.listen`) whether it is ready: exit 0 if `/readyz` says
    /// so, 1 if not. For container health checks, where the image has no HTTP client.
    Healthcheck,
    /// Publish one send-code job (for demos and smoke tests); the job is checked as otpd
    /// would check it, and refused here if invalid.
    Send {
        #[arg(long, default_value = "sms")]
        channel: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        code: String,
        #[arg(long, default_value = "demo-account")]
        account_id: String,
        /// Defaults to a fresh id.
        #[arg(long)]
        challenge_id: Option<String>,
        /// Seconds until the code expires.
        #[arg(long, default_value_t = 300)]
        ttl: i64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Seal pending events, then recompute the whole chain; exits 1 if any row was edited or
    /// deleted, 2 if the chain could not be checked (the database unreachable).
    Verify,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = config::load(cli.config.as_deref())?;
    otpd::telemetry::init(&settings.log);
    match cli.command {
        Command::Run => run(settings).await,
        Command::Migrate => {
            Store::migrate(&settings.database)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::CheckConfig => {
            otpd::app::compile(&settings)?;
            print!(
                "{}",
                toml::to_string(&settings).context("printing the configuration")?
            );
            Ok(())
        }
        Command::Report { since, format } => report(&settings, &since, &format).await,
        Command::Healthcheck => healthcheck(&settings).await,
        Command::Purge { older_than } => purge(&settings, &older_than).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            // 1 is kept for a broken chain (`verify` exits with it), so a script can tell a
            // tampered trail from one it could not read.
            if let Err(e) = verify(&settings).await {
                eprintln!("Error: {e:#}");
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Send {
            channel,
            to,
            code,
            account_id,
            challenge_id,
            ttl,
        } => {
            let challenge_id = challenge_id.unwrap_or_else(|| {
                format!(
                    "cli-{}",
                    Utc::now().timestamp_nanos_opt().unwrap_or_default()
                )
            });
            let job = serde_json::json!({
                "version": 1, "challenge_id": challenge_id, "account_id": account_id, "channel": channel,
                "to": to, "code": code, "expires_at": (Utc::now() + chrono::Duration::seconds(ttl)).to_rfc3339(),
            });
            let body = serde_json::to_vec(&job)?;
            // The daemon would dead-letter an invalid job; say why here instead.
            if let Err(r) = otpd::domain::Job::parse(&body) {
                anyhow::bail!("the job is invalid ({}): {}", r.reason.code(), r.detail);
            }
            send(&settings, &channel, &challenge_id, &body).await?;
            println!("published job {challenge_id}");
            Ok(())
        }
    }
}

/// GET `/readyz` on the configured listener (an unspecified address is asked on loopback).
async fn healthcheck(settings: &config::Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut addr = settings.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let answer = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .with_context(|| format!("asking otpd at {addr}"))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        eprintln!("not ready ({status}): {body}");
        std::process::exit(1);
    }
    println!("{body}");
    Ok(())
}

fn store(settings: &config::Settings) -> anyhow::Result<Store> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Store::connect(
        &settings.database,
        settings.store.destination_hmac_key.clone(),
    )
    .context("opening the database")
}

async fn report(settings: &config::Settings, since: &str, format: &str) -> anyhow::Result<()> {
    let age = otpd::audit::parse_age(since).map_err(|e| anyhow::anyhow!("--since {e}"))?;
    let rows = otpd::views::Views::new(&store(settings)?)
        .report(Utc::now() - age)
        .await
        .context("reading the deliveries")?;
    match format {
        "table" => print!("{}", otpd::report::table(since, &rows)),
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        other => anyhow::bail!("--format `{other}`: expected table or json"),
    }
    Ok(())
}

async fn purge(settings: &config::Settings, older_than: &str) -> anyhow::Result<()> {
    let age =
        otpd::audit::parse_age(older_than).map_err(|e| anyhow::anyhow!("--older-than {e}"))?;
    let trail = Trail::new(&store(settings)?);
    let cutoff = Utc::now() - age;
    trail
        .seal_all(SEAL_PATIENCE)
        .await
        .context("sealing the audit chain")?;
    let p = trail
        .purge(cutoff, PurgeTrigger::Command)
        .await
        .context("purging")?;
    println!(
        "purged {} deliveries and {} audit events older than {cutoff} (chain now starts after event {})",
        p.deliveries, p.events, p.through_seq
    );
    Ok(())
}

async fn verify(settings: &config::Settings) -> anyhow::Result<()> {
    let trail = Trail::new(&store(settings)?);
    trail
        .seal_all(SEAL_PATIENCE)
        .await
        .context("sealing the audit chain")?;
    let v = trail.verify_chain().await.context("reading the chain")?;
    println!(
        "checked {} events; head is event {} with hash {}; {} unsealed",
        v.checked,
        v.head_seq,
        hex::encode(&v.head_hash),
        v.unsealed
    );
    if v.problems.is_empty() {
        println!("the audit chain is intact");
        return Ok(());
    }
    for p in &v.problems {
        println!("BROKEN: {p}");
    }
    std::process::exit(1);
}

async fn run(settings: config::Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let app = App::build(settings, shutdown.clone()).await?;
    tracing::info!(http = %app.http_addr(), "otpd started");
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new jobs; draining those in flight");
        signals.cancel();
    });
    app.run(shutdown, TaskTracker::new()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon cannot stop gracefully; stop at once instead.
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn send(
    settings: &config::Settings,
    channel: &str,
    challenge_id: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let connection = otpd::amqp::connect(&settings.amqp)
        .await
        .context("connecting to RabbitMQ")?;
    let ch = otpd::amqp::publisher_channel(&connection).await?;
    otpd::amqp::declare_topology(&ch, &settings.amqp)
        .await
        .context("declaring the topology")?;
    let props = otpd::events::persistent_json().with_message_id(challenge_id.into());
    let confirm = ch
        .basic_publish(
            settings.amqp.jobs_exchange.as_str().into(),
            channel.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?
        .await?;
    anyhow::ensure!(confirm.is_ack(), "the broker did not confirm the job");
    connection.close(200, "done".into()).await?;
    Ok(())
}
