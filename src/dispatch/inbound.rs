//! What arrives besides plain jobs: signatures to check before anything else, and
//! `verified` feedback messages (docs/job-v1.md) that feed conversion tracking.

use super::{Dispatcher, Disposition, Halt, Outcome, Processed};
use crate::config::SigningMode;
use crate::domain::{Job, RejectReason, Rejection};
use crate::limits::signing::Signed;
use crate::metrics::SignatureLabels;
use std::collections::BTreeMap;

/// The AMQP `type` property of a feedback message.
pub const VERIFIED_TYPE: &str = "verified";

/// One message as intake hands it over: the body and the properties dispatch needs.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub body: &'a [u8],
    /// The `otpd-signature` header.
    pub signature: Option<&'a str>,
    /// The AMQP `type` property: absent (or anything else) for a job, "verified" for feedback.
    pub kind: Option<&'a str>,
    /// The broker delivered this message before, and it was not acked: if its challenge turns
    /// out finished, that earlier delivery may have committed the outcome and died before
    /// publishing the event, so the event is published again.
    pub redelivered: bool,
}

impl Dispatcher {
    /// In require mode, a message without a valid signature: refused before it is read, and
    /// not recorded under its challenge_id, since anyone could have written it and a forged
    /// rejection must not take a real challenge's place. In warn mode it is counted and let
    /// through.
    pub(super) async fn refuse_unsigned(&self, m: &Inbound<'_>) -> Option<Processed> {
        if self.signing.mode == SigningMode::Off {
            return None;
        }
        let now = chrono::Utc::now().timestamp();
        let signed = Signed {
            kind: m.kind,
            body: m.body,
        };
        let error = self.signing.verify(m.signature, signed, now).err()?;
        let mode = match self.signing.mode {
            SigningMode::Require => "require",
            _ => "warn",
        };
        self.metrics
            .signature_failures
            .get_or_create(&SignatureLabels {
                reason: error.reason().code(),
                mode,
            })
            .inc();
        if self.signing.mode == SigningMode::Warn {
            tracing::warn!(reason = error.reason().code(), error = %error, "job signature invalid (warn mode: processed anyway)");
            return None;
        }
        let challenge_id = Job::parse(m.body).ok().map(|j| j.challenge_id.to_string());
        let disposition = self
            .reject(
                Rejection::new(error.reason(), error.to_string()),
                &BTreeMap::new(),
            )
            .await;
        Some(Processed {
            challenge_id,
            disposition,
        })
    }

    /// Records that a challenge's code was verified. Feedback for an unknown, unsent or long
    /// expired challenge is acknowledged and ignored; a malformed message is dead-lettered.
    pub(super) async fn verified(&self, body: &[u8]) -> Processed {
        let id = match crate::domain::job::parse_verified(body) {
            Ok(id) => id,
            Err(r) => {
                return Processed {
                    challenge_id: None,
                    disposition: self.reject(r, &BTreeMap::new()).await,
                };
            }
        };
        let late = std::time::Duration::from_secs(self.conversion.verified_late_secs);
        let disposition = match self
            .persist(|| self.store.record_verified(id.as_str(), late))
            .await
        {
            Ok(true) => {
                self.metrics.verified.inc();
                Disposition::Ack(Outcome::Verified)
            }
            Ok(false) => {
                tracing::info!(challenge_id = %id, "verified feedback for a challenge never sent, or long expired; ignored");
                Disposition::Ack(Outcome::Verified)
            }
            Err(Halt::Refused) => {
                let r = Rejection::new(
                    RejectReason::InternalError,
                    "the database refused the feedback",
                );
                self.reject(r, &BTreeMap::new()).await
            }
            Err(_) => Disposition::Abandon,
        };
        Processed {
            challenge_id: Some(id.to_string()),
            disposition,
        }
    }
}
