//! Provider callbacks. Twilio posts a form, Meta's WhatsApp webhook posts JSON; a forged or
//! unsigned one gets 403 and changes nothing, a valid one 204 (Twilio) or 200 (Meta) whether
//! or not it moved a delivery (repeats are no-ops).

use super::HttpState;
use crate::metrics::ReasonLabels;
use crate::receipts::ReceiptError;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

pub(super) async fn twilio(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = header(&headers, "x-twilio-signature");
    let result = s.receipts.twilio(signature, &body).await;
    answer(&s, "Twilio", result, StatusCode::NO_CONTENT)
}

/// A receipt of an `http` provider that describes its receipts; 404 for any other name.
pub(super) async fn http_vendor(
    State(s): State<HttpState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers: BTreeMap<String, String> = (headers.iter())
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let result = s.receipts.http(&provider, &headers, &body).await;
    answer(&s, &provider, result, StatusCode::NO_CONTENT)
}

/// Meta's subscription handshake: the challenge echoed for our verify token, 403 otherwise.
pub(super) async fn whatsapp_verify(
    State(s): State<HttpState>,
    RawQuery(query): RawQuery,
) -> Response {
    let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    match s.receipts.whatsapp_handshake(&query) {
        Some(challenge) => challenge.to_string().into_response(),
        None => {
            tracing::warn!("refused a WhatsApp webhook handshake: wrong or missing verify token");
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

/// Meta retries a webhook that is not answered 200, so a valid post is answered 200 even
/// when it moved nothing.
pub(super) async fn whatsapp(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = header(&headers, "x-hub-signature-256");
    let result = s.receipts.whatsapp(signature, &body).await;
    answer(&s, "WhatsApp", result, StatusCode::OK)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn answer(
    s: &HttpState,
    vendor: &str,
    result: Result<(), ReceiptError>,
    ok: StatusCode,
) -> StatusCode {
    match result {
        Ok(()) => ok,
        Err(ReceiptError::Forbidden) => {
            let labels = ReasonLabels {
                reason: crate::metrics::webhook_refusal::BAD_SIGNATURE,
            };
            s.metrics.webhook_rejected.get_or_create(&labels).inc();
            tracing::warn!(vendor, "refused a callback whose signature does not verify");
            StatusCode::FORBIDDEN
        }
        Err(ReceiptError::Unknown) => StatusCode::NOT_FOUND,
        Err(ReceiptError::Store(e)) => {
            // A vendor that does not retry loses the receipt; the delivery stays `sent`, which
            // is the honest state.
            tracing::warn!(vendor, error = %e, "a receipt could not be recorded");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}
