//! The `otpd` command line.

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use lapin::options::BasicPublishOptions;
use otpd::{app::App, config, store::Store};
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
    /// Publish one send-code job (for demos and smoke tests).
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
            print!(
                "{}",
                toml::to_string(&settings).context("printing the configuration")?
            );
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
            send(
                &settings,
                &channel,
                &challenge_id,
                &serde_json::to_vec(&job)?,
            )
            .await?;
            println!("published job {challenge_id}");
            Ok(())
        }
    }
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
