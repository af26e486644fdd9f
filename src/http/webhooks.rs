//! Provider callbacks. Twilio posts a form; a forged or unsigned one gets 403 and changes
//! nothing, a valid one 204 whether or not it moved a delivery (repeats are no-ops).

use super::HttpState;
use crate::metrics::ReasonLabels;
use crate::receipts::ReceiptError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

pub(super) async fn twilio(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    match s.receipts.twilio(signature, &body).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(ReceiptError::Forbidden) => {
            let labels = ReasonLabels {
                reason: crate::metrics::webhook_refusal::BAD_SIGNATURE,
            };
            s.metrics.webhook_rejected.get_or_create(&labels).inc();
            tracing::warn!("refused a Twilio callback whose signature does not verify");
            StatusCode::FORBIDDEN
        }
        Err(ReceiptError::Store(e)) => {
            // Twilio does not retry a callback by default; the receipt is lost and the delivery
            // stays `sent`, which is the honest state.
            tracing::warn!(error = %e, "a Twilio receipt could not be recorded");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}
