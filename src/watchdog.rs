//! The systemd watchdog. With `WatchdogSec=` set, systemd restarts otpd unless it hears
//! `WATCHDOG=1` in time. A timer alone would prove only that one task runs; this one first
//! asks otpd's own HTTP listener for `/healthz`, so the ping also proves that the runtime
//! accepts connections and schedules other tasks. It does not depend on PostgreSQL or
//! RabbitMQ: otpd rides out their outages itself, and a restart would not bring them back.

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub async fn run(http: SocketAddr, shutdown: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) else {
        return;
    };
    // Ping twice per watchdog period, as sd_watchdog_enabled(3) advises.
    let period = timeout / 2;
    let client = match reqwest::Client::builder().timeout(period / 2).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "watchdog client could not be built; no watchdog pings");
            return;
        }
    };
    let url = format!("http://{}/healthz", loopback(http));
    let mut every = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    Ok(r) => tracing::warn!(status = %r.status(), "health check failed; withholding the watchdog ping"),
                    Err(e) => tracing::warn!(error = %e, "health check failed; withholding the watchdog ping"),
                }
            }
        }
    }
}

/// A listener bound to 0.0.0.0 or [::] is reached on loopback.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}
