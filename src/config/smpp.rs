//! The SMPP provider's settings (`kind = "smpp"`).

use super::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmppBind {
    /// Submit only; no delivery receipts.
    Transmitter,
    /// Submit and receive delivery receipts (deliver_sm) on the same session.
    Transceiver,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmppSettings {
    /// `smpp://host:2775`, or `ssmpp://host:3550` for TLS.
    pub url: String,
    pub system_id: String,
    pub password: Secret,
    pub system_type: String,
    pub bind: SmppBind,
    /// The sender: digits (an international number, `+` optional) or an alphanumeric id.
    pub source_addr: String,
    /// Ask the SMSC for delivery receipts (transceiver binds only).
    pub registered_delivery: bool,
    /// enquire_link every this often keeps the session (and NATs) alive and finds a dead one.
    pub enquire_link_interval_ms: u64,
    /// A submit_sm without its response this long is a transient, in-doubt failure.
    pub response_timeout_ms: u64,
    /// After a lost session, the next attempt to reconnect waits at most this long.
    pub reconnect_max_delay_ms: u64,
    pub max_concurrency: u32,
    pub max_per_second: u32,
}

impl Default for SmppSettings {
    fn default() -> Self {
        SmppSettings {
            url: String::new(),
            system_id: String::new(),
            password: Secret::default(),
            system_type: String::new(),
            bind: SmppBind::Transceiver,
            source_addr: String::new(),
            registered_delivery: true,
            enquire_link_interval_ms: 30_000,
            response_timeout_ms: 10_000,
            reconnect_max_delay_ms: 30_000,
            max_concurrency: 32,
            max_per_second: 0,
        }
    }
}
