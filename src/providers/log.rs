//! The development provider: it logs that a delivery happened, with the destination masked and
//! without the code, so that `otpd run` works with no vendor account.

use super::Sent;
use crate::domain::Destination;
use crate::render::Message;

pub struct LogProvider;

impl LogProvider {
    pub fn send(&self, to: &Destination, message: &Message) -> Sent {
        tracing::info!(to = %to.masked(), rendered = ?message, "log provider: delivered (code not shown)");
        Sent {
            provider_message_id: None,
            status: None,
        }
    }
}
