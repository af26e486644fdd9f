//! Why a well-formed job ended without reaching its destination: the `reason` of a `failed`,
//! `expired`, `rate_limited`, `undelivered`, `cancelled` or policy-`rejected` status event. Malformed jobs
//! have [`super::RejectReason`] instead. The codes are part of the event contract
//! (docs/job-v1.md) and are written to the database and metrics as they are.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The code's time ran out before delivery, or would have before the next retry.
    Expired,
    /// A rule under `[limits.rules]` refused it.
    RateLimit,
    /// The spend budget is used up.
    Budget,
    /// The destination's number range is blocked for low conversion.
    LowConversion,
    /// Geo permissions forbid the destination's country.
    CountryDenied,
    /// Geo permissions forbid the destination's number type.
    NumberTypeDenied,
    /// The provider says the number or mailbox is invalid.
    InvalidDestination,
    /// Transient failures on every allowed attempt.
    ProviderTransient,
    /// The provider kept answering "slow down" on every allowed attempt.
    ProviderRateLimited,
    /// Any other permanent refusal by the provider.
    ProviderPermanent,
    /// The provider refused otpd's credentials.
    ProviderAuth,
    /// The provider's account is suspended, out of funds or not allowed this destination.
    ProviderAccount,
    /// The provider cannot carry this channel or use this sender.
    ProviderMisconfigured,
    /// An attempt's outcome is unknown and resending is off.
    InDoubt,
    /// The provider's receipt reported non-delivery.
    CarrierUndelivered,
    /// The database refused to record the job (not an outage).
    InternalError,
    /// A fallback step not sent because the code was verified.
    Verified,
    /// A fallback step not sent because its publisher cancelled the challenge.
    Cancelled,
}

impl FailReason {
    pub fn code(self) -> &'static str {
        match self {
            FailReason::Expired => "expired",
            FailReason::RateLimit => "rate_limit",
            FailReason::Budget => "budget",
            FailReason::LowConversion => "low_conversion",
            FailReason::CountryDenied => "country_denied",
            FailReason::NumberTypeDenied => "number_type_denied",
            FailReason::InvalidDestination => "invalid_destination",
            FailReason::ProviderTransient => "provider_transient",
            FailReason::ProviderRateLimited => "provider_rate_limited",
            FailReason::ProviderPermanent => "provider_permanent",
            FailReason::ProviderAuth => "provider_auth",
            FailReason::ProviderAccount => "provider_account",
            FailReason::ProviderMisconfigured => "provider_misconfigured",
            FailReason::InDoubt => "in_doubt",
            FailReason::CarrierUndelivered => "carrier_undelivered",
            FailReason::InternalError => "internal_error",
            FailReason::Verified => "verified",
            FailReason::Cancelled => "cancelled",
        }
    }

    /// A permanent refusal that every message through the provider would meet (credentials,
    /// the account, a sender or channel it cannot use), rather than one about this
    /// destination: the job fails over.
    pub fn is_provider_wide(self) -> bool {
        matches!(
            self,
            FailReason::ProviderAuth
                | FailReason::ProviderAccount
                | FailReason::ProviderMisconfigured
        )
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
