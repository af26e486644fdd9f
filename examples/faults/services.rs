//! Stopping and starting the machine's RabbitMQ and PostgreSQL, the same way `.ci/run` starts
//! them. An [`Outage`] restarts its service when dropped, so a failing or panicking scenario
//! never leaves the machine without a broker or a database.

use std::time::{Duration, Instant};
use tokio::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    RabbitMq,
    Postgres,
}

pub struct Outage {
    service: Service,
    over: bool,
}

fn pg_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "15".into())
}

async fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {status}", args.join(" ")))
    }
}

impl Outage {
    /// Stops the service; returns once it is down.
    pub async fn begin(service: Service) -> Result<Outage, String> {
        let outage = Outage {
            service,
            over: false,
        };
        match service {
            Service::RabbitMq => run("rabbitmqctl", &["shutdown"]).await?,
            Service::Postgres => {
                let v = pg_version();
                run(
                    "pg_ctlcluster",
                    &[
                        "--skip-systemctl-redirect",
                        &v,
                        "main",
                        "stop",
                        "-m",
                        "fast",
                    ],
                )
                .await?
            }
        }
        Ok(outage)
    }

    /// Starts the service again and waits until it accepts connections.
    pub async fn end(mut self) -> Result<(), String> {
        self.over = true;
        start(self.service).await
    }
}

async fn start(service: Service) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    match service {
        Service::RabbitMq => {
            run("rabbitmq-server", &["-detached"]).await?;
            // `await_startup` fails at once while the node is not yet reachable: try again.
            while run("rabbitmqctl", &["await_startup", "--timeout", "60"])
                .await
                .is_err()
            {
                if Instant::now() > deadline {
                    return Err("RabbitMQ did not start within 120 s".into());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            run("rabbitmq-diagnostics", &["-q", "check_port_connectivity"]).await
        }
        Service::Postgres => {
            let v = pg_version();
            run(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &v, "main", "start"],
            )
            .await?;
            while run("pg_isready", &["-h", "127.0.0.1", "-p", "5432", "-q"])
                .await
                .is_err()
            {
                if Instant::now() > deadline {
                    return Err("PostgreSQL did not start within 120 s".into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(())
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.over {
            return;
        }
        eprintln!("restoring {:?} after an interrupted scenario", self.service);
        let v = pg_version();
        let (program, args): (&str, Vec<&str>) = match self.service {
            Service::RabbitMq => ("rabbitmq-server", vec!["-detached"]),
            Service::Postgres => (
                "pg_ctlcluster",
                vec!["--skip-systemctl-redirect", &v, "main", "start"],
            ),
        };
        let _ = std::process::Command::new(program).args(args).status();
        if self.service == Service::RabbitMq {
            for _ in 0..120 {
                let up = std::process::Command::new("rabbitmqctl")
                    .args(["await_startup", "--timeout", "60"])
                    .status()
                    .is_ok_and(|s| s.success());
                if up {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
