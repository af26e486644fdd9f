//! `/healthz` (the process answers), `/readyz` (a real round trip to PostgreSQL and an open
//! confirm-mode channel to RabbitMQ) and `/metrics` (Prometheus text).

use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::store::Store;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await,
        Ok(Ok(()))
    );
    let broker = s.publisher.is_connected();
    let body = serde_json::json!({ "database": database, "broker": broker });
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
