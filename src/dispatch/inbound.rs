//! What arrives besides plain jobs: signatures to check before anything else, and
//! `verified` feedback messages (docs/job-v1.md) that feed conversion tracking.

use super::{Dispatcher, Disposition, Ending, Halt, Processed};
use crate::config::SigningMode;
use crate::domain::DeliveryState;
use crate::domain::{Job, RejectReason, Rejection};
use crate::events::StatusEvent;
use crate::limits::signing::Signed;
use crate::metrics::{ReasonLabels, SignatureLabels};
use crate::store::Rejected;
use std::collections::BTreeMap;

/// What a message about a challenge (not a job) says, by its AMQP `type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feedback {
    /// `verified`: the code was entered correctly.
    Verified,
    /// `cancel`: the publisher abandoned the challenge.
    Cancel,
}

impl Feedback {
    pub(super) fn from_type(kind: Option<&str>) -> Option<Feedback> {
        match kind? {
            "verified" => Some(Feedback::Verified),
            "cancel" => Some(Feedback::Cancel),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Feedback::Verified => "verified",
            Feedback::Cancel => "cancel",
        }
    }
}

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
    /// On a fallback step otpd scheduled: the step number and otpd's MAC over it and the body
    /// (`crate::events::STEP_HEADER`, `STEP_MAC_HEADER`).
    pub step: Option<(&'a str, &'a str)>,
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

    /// The fallback step a message is, if it carries one: only otpd schedules steps, so the
    /// step header must come with otpd's MAC over the step and the body. The publisher's
    /// signature was checked when the first send was accepted, and may since have aged past
    /// `signing.max_age_secs`.
    pub(super) fn step_of(&self, m: &Inbound<'_>) -> Result<Option<u8>, Rejection> {
        use subtle::ConstantTimeEq;
        let Some((step, mac)) = m.step else {
            return Ok(None);
        };
        let step = step
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=crate::domain::fallback::MAX_STEPS as u8).contains(n));
        let expected = step.map(|n| hex::encode(self.store.step_mac(n, m.body)));
        match (step, expected) {
            (Some(n), Some(e)) if bool::from(e.as_bytes().ct_eq(mac.as_bytes())) => Ok(Some(n)),
            _ => Err(Rejection::new(
                RejectReason::BadSignature,
                "a fallback step that otpd did not schedule",
            )),
        }
    }

    /// Records a `verified` or `cancel` message. Verified feedback counts for conversion and
    /// stops the challenge's pending fallback steps; a cancel only stops them. A message for
    /// an unknown, unsent or long expired challenge is acknowledged and ignored; a malformed
    /// one is dead-lettered.
    pub(super) async fn feedback(&self, kind: Feedback, body: &[u8]) -> Processed {
        let id = match crate::domain::job::parse_verified(body) {
            Ok(id) => id,
            Err(r) => {
                return Processed {
                    challenge_id: None,
                    disposition: self.reject(r, &BTreeMap::new()).await,
                };
            }
        };
        let late = self.verified_late;
        let recorded = self
            .persist(|| async {
                match kind {
                    Feedback::Verified => self.store.record_verified(id.as_str(), late).await,
                    Feedback::Cancel => self.store.record_cancel(id.as_str()).await,
                }
            })
            .await;
        let ending = match kind {
            Feedback::Verified => Ending::Verified,
            Feedback::Cancel => Ending::Cancelled,
        };
        let disposition = match recorded {
            Ok(true) => {
                if kind == Feedback::Verified {
                    self.metrics.verified.inc();
                }
                Disposition::Ack(ending)
            }
            Ok(false) => {
                tracing::info!(challenge_id = %id, kind = kind.as_str(), "feedback for a challenge never sent, or long expired; ignored");
                Disposition::Ack(ending)
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

    /// Dead-letters a refused message: counted, and recorded with a `rejected` event when it
    /// names a challenge. A refused record does not stop the event or the dead letter.
    pub(super) async fn reject(
        &self,
        r: Rejection,
        metadata: &BTreeMap<String, String>,
    ) -> Disposition {
        let challenge_id = r.challenge_id.as_ref().map(|c| c.as_str());
        tracing::warn!(reason = r.reason.code(), detail = %r.detail, challenge_id, "job rejected");
        self.metrics
            .rejected
            .get_or_create(&ReasonLabels {
                reason: r.reason.code(),
            })
            .inc();
        if let Some(id) = &r.challenge_id {
            let rec = Rejected {
                challenge_id: id,
                reason: r.reason.code(),
                detail: &r.detail,
            };
            if let Err(Halt::Interrupted) = self.persist(|| self.store.record_rejection(&rec)).await
            {
                return Disposition::Abandon;
            }
            let mut event = StatusEvent::new(id, DeliveryState::Rejected, metadata);
            event.reason = Some(r.reason.code());
            event.detail = Some(&r.detail);
            if let Err(e) = self.publisher.publish_event(&event).await {
                tracing::warn!(error = %e, "could not publish the rejected event");
                return Disposition::Abandon;
            }
        }
        Disposition::DeadLetter(r)
    }
}
