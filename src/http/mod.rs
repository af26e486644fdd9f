//! The HTTP listener: `/healthz` (the process answers), `/readyz` (a real round trip to
//! PostgreSQL and an open confirm-mode channel to RabbitMQ), `/metrics` (OpenMetrics or Prometheus text, as the scrape asks),
//! `/status` (the status page), `/webhooks/twilio` and `/webhooks/whatsapp` (delivery receipts) and the admin API
//! under `/v1` (bearer token).

mod admin;
mod serve;
mod status;
mod webhooks;

pub use serve::{Bounds, serve};
pub use status::{format_failures, format_ms};

use crate::config::Secret;
use crate::events::Publisher;
use crate::intake::Liveness;
use crate::metrics::Metrics;
use crate::receipts::Receipts;
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub views: crate::views::Views,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub receipts: Arc<Receipts>,
    /// The admin API's bearer token; empty: every admin request is refused.
    pub admin_token: Secret,
    /// Configured provider instance names, for circuit states in the health view.
    pub providers: Arc<[String]>,
    /// Whether intake is moving, and how long it may stand still before `/readyz` fails.
    pub liveness: Arc<Liveness>,
    pub ready_stall: Duration,
}

/// Every route, each bounded by `request_timeout` and reading at most `max_body` bytes.
pub fn router(state: HttpState, request_timeout: Duration, max_body: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status::page))
        .route("/webhooks/twilio", post(webhooks::twilio))
        .route("/webhooks/http/{provider}", post(webhooks::http_vendor))
        .route(
            "/webhooks/whatsapp",
            get(webhooks::whatsapp_verify).post(webhooks::whatsapp),
        )
        .merge(admin::router(state.clone()))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| within(request_timeout, request, next),
        ))
}

/// Answers 503 for a request not answered in time (a body trickled in, a view stuck).
async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await,
        Ok(Ok(()))
    );
    let broker = s.publisher.is_connected();
    // Jobs in hand and none finished for a while: the parts answer, but nothing moves.
    let stalled = s.liveness.stalled(s.ready_stall);
    let intake = stalled.is_none();
    let mut body = serde_json::json!({ "database": database, "broker": broker, "intake": intake });
    if let Some(for_) = stalled {
        body["stalled_secs"] = for_.as_secs().into();
    }
    let status = if database && broker && intake {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// The metrics in the format the scrape asks for (`metrics::Format`).
async fn metrics(State(s): State<HttpState>, headers: header::HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        s.metrics.encode_as(format),
    )
}

/// A store failure behind an operator view: logged, answered 503 without details.
fn unavailable(e: crate::store::StoreError) -> (StatusCode, &'static str) {
    tracing::warn!(error = %e, "an HTTP view could not read the store");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is unavailable\n",
    )
}
