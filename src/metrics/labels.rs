//! The label sets of otpd's metrics, each a closed set of values.

use prometheus_client::encoding::EncodeLabelSet;

/// The `result` of `otpd_provider_attempts_total`.
pub mod attempt_result {
    pub const SENT: &str = "sent";
    pub const TRANSIENT: &str = "transient";
    pub const PERMANENT: &str = "permanent";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const ALL: [&str; 4] = [SENT, TRANSIENT, PERMANENT, RATE_LIMITED];
}

/// The `reason` of `otpd_webhook_rejected_total`.
pub mod webhook_refusal {
    pub const BAD_SIGNATURE: &str = "bad_signature";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub channel: &'static str,
    pub state: &'static str,
}

/// Lane names come from the configuration, a closed set at run time.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    pub lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub provider: String,
    pub channel: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
    pub channel: &'static str,
}

/// Provider instance names come from the configuration, a closed set at run time.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderNameLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderReasonLabels {
    pub provider: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: &'static str,
}

/// Rule names come from the configuration, a closed set at run time.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub channel: &'static str,
    pub reason: &'static str,
    pub rule: String,
}

/// Countries are ISO 3166 codes (about 250) or "none" for email.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpendLabels {
    pub channel: &'static str,
    pub country: String,
}

/// SMS segments by provider and destination country.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SegmentLabels {
    pub provider: String,
    pub country: String,
}

/// Receipts by final state; countries as for [`SpendLabels`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiptLabels {
    pub provider: String,
    pub channel: &'static str,
    pub country: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignatureLabels {
    pub reason: &'static str,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}
