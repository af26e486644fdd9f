//! The admin API under `/v1`, for support and ops: one delivery with its timeline, pages of
//! deliveries, and provider health. Every route but the OpenAPI document needs
//! `Authorization: Bearer <http.admin_token>`, compared in constant time.

use super::{HttpState, unavailable};
use crate::domain::DeliveryState;
use crate::metrics::ProviderNameLabels;
use crate::views::{DeliveryFilter, DeliveryView, ProviderWindow};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The OpenAPI description of this API, kept in docs/ and served as is.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub(super) fn router(state: HttpState) -> Router<HttpState> {
    let guarded = Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/{challenge_id}", get(one))
        .route("/v1/health/providers", get(health))
        .route_layer(middleware::from_fn_with_state(state, authorise));
    guarded.route(
        "/v1/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
    )
}

async fn authorise(State(s): State<HttpState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let expected = s.admin_token.expose();
    // Comparing digests keeps the comparison constant-time in the token's length too.
    let matches = presented.is_some_and(|p| {
        !expected.is_empty()
            && bool::from(Sha256::digest(p.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())))
    });
    if !matches {
        let body = json!({ "error": "unauthorized", "detail": "a valid bearer token is required" });
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(body),
        )
            .into_response();
    }
    next.run(request).await
}

fn bad_request(detail: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "bad_request", "detail": detail })),
    )
        .into_response()
}

async fn one(State(s): State<HttpState>, Path(challenge_id): Path<String>) -> Response {
    match s.views.delivery(&challenge_id).await {
        Ok(Some((delivery, timeline))) => {
            Json(json!({ "delivery": delivery, "timeline": timeline })).into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "not_found", "detail": "no delivery has this challenge_id" })),
        )
            .into_response(),
        Err(e) => unavailable(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    account_id: Option<String>,
    state: Option<String>,
    since: Option<String>,
    /// A phone number (E.164) or email address; matched by its keyed HMAC.
    to: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Page {
    deliveries: Vec<DeliveryView>,
    next_cursor: Option<String>,
}

async fn list(State(s): State<HttpState>, Query(q): Query<ListQuery>) -> Response {
    let filter = match filter(&s, q) {
        Ok(f) => f,
        Err(detail) => return bad_request(detail),
    };
    match s.views.deliveries(&filter).await {
        Ok(deliveries) => {
            let full = deliveries.len() as i64 == filter.limit;
            let next_cursor = deliveries
                .last()
                .filter(|_| full)
                .map(|d| encode_cursor(d.created_at, &d.challenge_id));
            Json(Page {
                deliveries,
                next_cursor,
            })
            .into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}

fn filter(s: &HttpState, q: ListQuery) -> Result<DeliveryFilter, String> {
    if let Some(state) = &q.state
        && DeliveryState::parse(state).is_none()
    {
        return Err(format!("state `{state}` is not a delivery state"));
    }
    let since = q
        .since
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("since `{t}` is not an RFC 3339 time"))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err("limit must be between 1 and 500".into());
    }
    let after = q.cursor.map(|c| decode_cursor(&c)).transpose()?;
    // Stored HMACs are of the canonical E.164 number or the address, lower-cased.
    let destination_hmac = q.to.map(|to| s.store.destination_hmac(to.trim()));
    Ok(DeliveryFilter {
        account_id: q.account_id,
        state: q.state,
        since,
        destination_hmac,
        after,
        limit,
    })
}

fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    let raw = format!("{}:{id}", at.timestamp_micros());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, String), String> {
    let bad = || "cursor is not one this API returned".to_string();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, id.to_string()))
}

#[derive(Serialize)]
struct Window {
    attempts: i64,
    success_pct: Option<f64>,
    to_sent_p50_ms: Option<f64>,
    to_sent_p95_ms: Option<f64>,
    delivered: i64,
    undelivered: i64,
    to_delivered_p50_ms: Option<f64>,
    to_delivered_p95_ms: Option<f64>,
}

impl From<&ProviderWindow> for Window {
    fn from(w: &ProviderWindow) -> Window {
        Window {
            attempts: w.attempts,
            success_pct: (w.attempts > 0).then(|| 100.0 * w.accepted as f64 / w.attempts as f64),
            to_sent_p50_ms: w.to_sent_p50_ms,
            to_sent_p95_ms: w.to_sent_p95_ms,
            delivered: w.delivered,
            undelivered: w.undelivered,
            to_delivered_p50_ms: w.to_delivered_p50_ms,
            to_delivered_p95_ms: w.to_delivered_p95_ms,
        }
    }
}

async fn health(State(s): State<HttpState>) -> Response {
    let (short, long) =
        match tokio::try_join!(s.views.provider_health(5), s.views.provider_health(60)) {
            Ok(both) => both,
            Err(e) => return unavailable(e).into_response(),
        };
    let mut keys: Vec<(String, String)> = long
        .iter()
        .chain(&short)
        .map(|w| (w.provider.clone(), w.channel.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let find = |rows: &[ProviderWindow], k: &(String, String)| {
        rows.iter()
            .find(|w| w.provider == k.0 && w.channel == k.1)
            .map(Window::from)
    };
    let providers: Vec<_> = keys
        .iter()
        .map(|k| {
            json!({
                "provider": k.0, "channel": k.1, "circuit": circuit(&s, &k.0),
                "last_5m": find(&short, k), "last_60m": find(&long, k),
            })
        })
        .collect();
    let circuits: serde_json::Map<String, serde_json::Value> = s
        .providers
        .iter()
        .map(|p| (p.clone(), circuit(&s, p).into()))
        .collect();
    Json(json!({ "generated_at": Utc::now(), "providers": providers, "circuits": circuits }))
        .into_response()
}

/// This instance's breaker for a provider: closed, half_open or open.
fn circuit(s: &HttpState, provider: &str) -> &'static str {
    let labels = ProviderNameLabels {
        provider: provider.to_string(),
    };
    match s.metrics.breaker_state.get_or_create(&labels).get() {
        2 => "open",
        1 => "half_open",
        _ => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        let c = encode_cursor(at, "login:a:b");
        assert_eq!(decode_cursor(&c).unwrap(), (at, "login:a:b".to_string()));
        for bad in ["", "!!", "bm90LWEtY3Vyc29y"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
