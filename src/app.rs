//! Wiring: builds every part from [`Settings`] and runs them under one cancellation token and
//! one task tracker, both passed explicitly.

use crate::audit;
use crate::background::Background;
use crate::config::{AuditSettings, Settings};
use crate::dispatch::{Dispatcher, DispatcherParts};
use crate::events::Publisher;
use crate::health::Health;
use crate::http::{self, HttpState};
use crate::intake::{Intake, Liveness, Report};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::providers::{BuildError, Providers};
use crate::receipts::Receipts;
use crate::store::{Store, StoreError};
use crate::watchdog;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("providers: {0}")]
    Providers(#[from] BuildError),
    #[error("{0}")]
    Templates(#[from] crate::templates::TemplateError),
    #[error("binding the HTTP listener on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the configuration compiles to before anything connects: the templates and the
/// providers, each template rendered with a sample. Start-up and `otpd check-config` run this
/// same stage, so what one accepts the other does.
pub struct Compiled {
    templates: crate::templates::Templates,
    providers: Providers,
    metrics: Arc<Metrics>,
    /// Receipts providers receive on their own sessions (SMPP), for `Receipts::drain`.
    provider_receipts: tokio::sync::mpsc::UnboundedReceiver<crate::providers::Heard>,
}

/// Compiles the templates and builds the providers; an error names the file or the key.
pub fn compile(settings: &Settings) -> Result<Compiled, AppError> {
    let templates = crate::templates::Templates::load(settings)?;
    let metrics = Arc::new(Metrics::new());
    let (receipts_tx, provider_receipts) = tokio::sync::mpsc::unbounded_channel();
    let providers = Providers::from_settings(settings, Arc::clone(&metrics), receipts_tx)?;
    Ok(Compiled {
        templates,
        providers,
        metrics,
        provider_receipts,
    })
}

/// The HTTP listener's bounds (`[http]`).
struct HttpBounds {
    serve: http::Bounds,
    request_timeout: Duration,
    max_body: usize,
}

pub struct App {
    intake: Arc<Intake>,
    http: (TcpListener, HttpState, HttpBounds),
    background: Arc<Background>,
    health: Arc<Health>,
    store: Store,
    audit: AuditSettings,
    /// Receipts providers receive on their own sessions (SMPP), for `Receipts::drain`.
    provider_receipts: tokio::sync::mpsc::UnboundedReceiver<crate::providers::Heard>,
}

impl App {
    /// Compiles templates and providers ([`compile`]), applies migrations (when configured)
    /// and binds the HTTP listener. Nothing is consumed until [`App::run`].
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> Result<App, AppError> {
        // rustls needs one process-wide crypto provider; ring is the only one compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Compiled {
            templates,
            providers,
            metrics,
            provider_receipts,
        } = compile(&settings)?;
        if settings.store.destination_hmac_key.expose() == crate::config::DEV_HMAC_KEY {
            tracing::warn!(
                "store.destination_hmac_key is the development default; set OTPD__STORE__DESTINATION_HMAC_KEY"
            );
        }
        if settings.database.migrate_on_start {
            Store::migrate(&settings.database).await?;
        }
        let store = Store::connect(
            &settings.database,
            settings.store.destination_hmac_key.clone(),
        )?;
        let publisher = Arc::new(Publisher::new(&settings.amqp));
        let addr = settings.http.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Http { addr, source })?;
        let receipts = Arc::new(Receipts::new(
            &settings,
            store.clone(),
            publisher.clone(),
            metrics.clone(),
        ));
        let liveness = Arc::new(Liveness::default());
        if settings.http.admin_token.is_empty() {
            tracing::info!("http.admin_token is not set: the admin API refuses every request");
        }
        let http_state = HttpState {
            store: store.clone(),
            views: crate::views::Views::new(&store),
            publisher: publisher.clone(),
            metrics: metrics.clone(),
            receipts,
            admin_token: settings.http.admin_token.clone(),
            providers: settings.providers.0.keys().cloned().collect(),
            liveness: liveness.clone(),
            ready_stall: Duration::from_secs(settings.http.ready_stall_secs),
        };
        let bounds = HttpBounds {
            serve: http::Bounds {
                header_timeout: Duration::from_millis(settings.http.header_timeout_ms),
                max_connections: settings.http.max_connections,
            },
            request_timeout: Duration::from_millis(settings.http.request_timeout_ms),
            max_body: settings.http.max_body_bytes,
        };
        let audit = settings.audit.clone();
        let drain_timeout = Duration::from_millis(settings.shutdown.drain_timeout_ms);
        let amqp = settings.amqp.clone();
        let lanes = amqp.lanes(settings.delivery.max_in_flight);
        let limits = Arc::new(Limits::new(&settings));
        let background = Arc::new(Background {
            store: store.clone(),
            limits: limits.clone(),
            publisher: publisher.clone(),
            metrics: metrics.clone(),
            conversion: settings.conversion.clone(),
        });
        let providers = Arc::new(providers);
        let health = Arc::new(Health {
            store: store.clone(),
            providers: providers.clone(),
            publisher: publisher.clone(),
            metrics: metrics.clone(),
            settings: settings.delivery.health.clone(),
        });
        let parts = DispatcherParts {
            templates,
            store: store.clone(),
            publisher: publisher.clone(),
            providers,
            limits,
            metrics: metrics.clone(),
            shutdown,
        };
        let dispatcher = Arc::new(Dispatcher::new(settings, parts));
        let (reports, _) = broadcast::channel(4096);
        let intake = Arc::new(Intake {
            lanes,
            settings: amqp,
            dispatcher,
            publisher,
            metrics,
            reports,
            drain_timeout,
            liveness,
        });
        Ok(App {
            intake,
            http: (listener, http_state, bounds),
            background,
            health,
            store,
            audit,
            provider_receipts,
        })
    }

    /// The bound HTTP address (useful when the config asked for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .0
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Reports of every handled message, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Report> {
        self.intake.reports.subscribe()
    }

    /// Runs until `shutdown` is cancelled, then drains and returns.
    pub async fn run(self, shutdown: CancellationToken, tracker: TaskTracker) {
        let (listener, state, bounds) = self.http;
        let receipts = state.receipts.clone();
        let token = shutdown.clone();
        tracker.spawn(async move { receipts.run(token).await });
        let receipts = state.receipts.clone();
        let token = shutdown.clone();
        let incoming = self.provider_receipts;
        tracker.spawn(async move { receipts.drain(incoming, token).await });
        tracker.spawn(audit::run(
            self.store.clone(),
            self.audit.clone(),
            shutdown.clone(),
        ));
        if let Ok(addr) = listener.local_addr() {
            tracker.spawn(watchdog::run(addr, shutdown.clone()));
        }
        let http_shutdown = shutdown.clone();
        let router = http::router(state, bounds.request_timeout, bounds.max_body);
        tracker.spawn(http::serve(listener, router, bounds.serve, http_shutdown));
        let background = self.background.clone();
        let token = shutdown.clone();
        tracker.spawn(async move { background.housekeeping(token).await });
        let background = self.background.clone();
        let token = shutdown.clone();
        tracker.spawn(async move { background.watch_conversion(token).await });
        let health = self.health.clone();
        let token = shutdown.clone();
        tracker.spawn(async move { health.run(token).await });
        tracker.spawn(self.intake.clone().run(shutdown.clone()));
        shutdown.cancelled().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracker.close();
        tracker.wait().await;
        self.store.close().await;
    }
}
