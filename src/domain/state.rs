//! The per-challenge state machine, as stored in `deliveries.state`.

use std::fmt;

/// `received → sending → sent | failed | expired | rate_limited | rejected`; a job may also go
/// straight from `received` to `expired`, `rate_limited` or `rejected`, and a fallback step to
/// `cancelled`. A provider's final
/// receipt moves `sent` on to `delivered` or `undelivered`, once; nothing else leaves a terminal
/// state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Received,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Expired,
    RateLimited,
    Rejected,
    /// A fallback step that did not send: the code was verified, the challenge cancelled, the
    /// code's time was up or a limit refused the step.
    Cancelled,
}

impl DeliveryState {
    const ALL: [DeliveryState; 10] = [
        DeliveryState::Received,
        DeliveryState::Sending,
        DeliveryState::Sent,
        DeliveryState::Delivered,
        DeliveryState::Undelivered,
        DeliveryState::Failed,
        DeliveryState::Expired,
        DeliveryState::RateLimited,
        DeliveryState::Rejected,
        DeliveryState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Received => "received",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Undelivered => "undelivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Expired => "expired",
            DeliveryState::RateLimited => "rate_limited",
            DeliveryState::Rejected => "rejected",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, DeliveryState::Received | DeliveryState::Sending)
    }

    /// The state's name in status events: `received` is announced as `accepted`.
    pub fn event_name(self) -> &'static str {
        match self {
            DeliveryState::Received => "accepted",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_two_states_are_open() {
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
        let open: Vec<_> = DeliveryState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(open, [DeliveryState::Received, DeliveryState::Sending]);
        assert_eq!(DeliveryState::Received.event_name(), "accepted");
    }
}
