//! The `otpd` command line.

mod cli;

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use cli::{Age, AuditCommand, Cli, Command, Format};
use lapin::options::BasicPublishOptions;
use otpd::audit::{PurgeTrigger, SEAL_PATIENCE, Trail};
use otpd::store::Store;
use otpd::{app::App, config};
use std::io::Write;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // What needs no configuration runs before it is read, so that a broken file cannot stop
    // an editor's schema or a shell's completions.
    let printed = match &cli.command {
        Command::Completions { shell } => Some(cli::completions(*shell)),
        Command::Man => Some(cli::man()?),
        Command::ConfigSchema => {
            let schema = config::schema(&config::load_from_str("")?);
            Some(serde_json::to_vec_pretty(&schema)?)
        }
        _ => None,
    };
    if let Some(bytes) = printed {
        std::io::stdout().write_all(&bytes)?;
        return Ok(());
    }
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
        Command::Report { since, format } => report(&settings, &since, format).await,
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
        Command::Completions { .. } | Command::Man | Command::ConfigSchema => Ok(()),
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
            let channel = channel.as_str();
            let job = serde_json::json!({
                "version": 1, "challenge_id": challenge_id, "account_id": account_id, "channel": channel,
                "to": to, "code": code, "expires_at": (Utc::now() + chrono::Duration::seconds(ttl)).to_rfc3339(),
            });
            let body = serde_json::to_vec(&job)?;
            // The daemon would dead-letter an invalid job; say why here instead.
            if let Err(r) = otpd::domain::Job::parse(&body) {
                anyhow::bail!("the job is invalid ({}): {}", r.reason.code(), r.detail);
            }
            send(&settings, channel, &challenge_id, &body).await?;
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

async fn report(settings: &config::Settings, since: &Age, format: Format) -> anyhow::Result<()> {
    let rows = otpd::views::Views::new(&store(settings)?)
        .report(Utc::now() - since.duration)
        .await
        .context("reading the deliveries")?;
    match format {
        Format::Table => print!("{}", otpd::report::table(&since.text, &rows)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
    }
    Ok(())
}

async fn purge(settings: &config::Settings, older_than: &Age) -> anyhow::Result<()> {
    let trail = Trail::new(&store(settings)?);
    let cutoff = Utc::now() - older_than.duration;
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
