//! Why a message was refused: the stable reason codes of `rejected` events and dead letters.

use super::ChallengeId;

/// Why a job was refused. The string codes are part of the public contract: identity services
/// and dashboards branch on them, so they never change once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    TooLarge,
    MalformedJson,
    NotAnObject,
    UnknownField,
    MissingField,
    UnsupportedVersion,
    InvalidChallengeId,
    InvalidAccountId,
    UnknownChannel,
    InvalidDestination,
    InvalidCode,
    InvalidExpiresAt,
    InvalidLocale,
    InvalidTemplate,
    UnknownTemplate,
    TemplateError,
    InvalidClientIp,
    InvalidMetadata,
    Unsigned,
    BadSignature,
    SignatureExpired,
    InvalidFeedback,
    InvalidFallback,
    InvalidLane,
    /// The database refused to record the job (not an outage): otpd's fault, not the
    /// publisher's, but the job cannot go on.
    InternalError,
}

impl RejectReason {
    pub const fn code(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::MissingField => "missing_field",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::InvalidChallengeId => "invalid_challenge_id",
            RejectReason::InvalidAccountId => "invalid_account_id",
            RejectReason::UnknownChannel => "unknown_channel",
            RejectReason::InvalidDestination => "invalid_destination",
            RejectReason::InvalidCode => "invalid_code",
            RejectReason::InvalidExpiresAt => "invalid_expires_at",
            RejectReason::InvalidLocale => "invalid_locale",
            RejectReason::InvalidTemplate => "invalid_template",
            RejectReason::UnknownTemplate => "unknown_template",
            RejectReason::TemplateError => "template_error",
            RejectReason::InvalidClientIp => "invalid_client_ip",
            RejectReason::InvalidMetadata => "invalid_metadata",
            RejectReason::Unsigned => "unsigned",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::SignatureExpired => "signature_expired",
            RejectReason::InvalidFeedback => "invalid_feedback",
            RejectReason::InvalidFallback => "invalid_fallback",
            RejectReason::InvalidLane => "invalid_lane",
            RejectReason::InternalError => "internal_error",
        }
    }
}

/// A refused job: the reason, a human-readable detail (never containing the code), and the
/// challenge_id when one could be read and was itself valid.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
    pub challenge_id: Option<ChallengeId>,
}

impl Rejection {
    /// The detail may quote the publisher's text (an unknown field's name, say), so it is
    /// cleaned here, once, before it can reach a log line, the database or an event.
    pub fn new(reason: RejectReason, detail: impl AsRef<str>) -> Rejection {
        Rejection {
            reason,
            detail: super::text::clean(detail.as_ref(), super::text::MAX_DETAIL_CHARS),
            challenge_id: None,
        }
    }
}
