//! SMPP 3.4/5.0 to an SMSC, over rusmppc: one bound session per instance, shared by every
//! call (SMPP multiplexes requests by sequence number), kept alive with enquire_link and
//! re-established on the next call after it is lost, with capped exponential backoff.
//!
//! A transceiver bind also receives delivery receipts (deliver_sm). They are answered at once
//! and handed, as [`Receipt`]s, to a channel that `crate::receipts` drains: the provider never
//! touches the store.

use super::{BuildError, Heard, ProviderError, Receipt, Sent};
use crate::config::{SmppBind, SmppSettings};
use crate::domain::{DeliveryState, Destination, FailReason};
use crate::render::Message;
use crate::segments;
use futures_util::StreamExt;
use rusmpp::pdus::{BindTransceiver, BindTransmitter, DeliverSmResp, SubmitSm};
use rusmpp::tlvs::MessageSubmissionRequestTlvValue;
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{
    DataCoding, IntermediateNotification, MCDeliveryReceipt, MessagePayload, MessageType, Npi,
    RegisteredDelivery, SmeOriginatedAcknowledgement, Ton,
};
use rusmpp::{CommandStatus, Pdu};
use rusmppc::error::Error as SmppError;
use rusmppc::{Client, ConnectionBuilder, Event};
use std::str::FromStr;
use std::sync::Mutex as SyncMutex;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

/// The first wait after a failed connect or bind; doubled up to `reconnect_max_delay_ms`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// `short_message` holds at most 254 octets; longer texts go in the message_payload TLV.
const SHORT_MESSAGE_MAX: usize = 254;

pub struct SmppProvider {
    settings: SmppSettings,
    session: Mutex<Option<Client>>,
    /// No reconnect before this instant, and the wait after the next failure.
    backoff: SyncMutex<(Option<Instant>, Duration)>,
    receipts: mpsc::UnboundedSender<Heard>,
    /// This instance's name, which its receipts carry.
    name: String,
}

impl SmppProvider {
    pub fn new(
        name: &str,
        s: &SmppSettings,
        receipts: mpsc::UnboundedSender<Heard>,
    ) -> Result<SmppProvider, BuildError> {
        Ok(SmppProvider {
            settings: s.clone(),
            session: Mutex::new(None),
            backoff: SyncMutex::new((None, FIRST_BACKOFF)),
            receipts,
            name: name.to_string(),
        })
    }

    pub async fn send(
        &self,
        to: &Destination,
        message: &Message,
        valid_for: Duration,
    ) -> Result<Sent, ProviderError> {
        let (Destination::Phone(phone), Message::Sms { body, .. }) = (to, message) else {
            return Err(ProviderError::Permanent {
                status: None,
                reason: FailReason::ProviderMisconfigured,
                detail: "smpp carries SMS only; check [channels]".into(),
            });
        };
        let submit = self.submit_sm(phone.as_e164(), body, valid_for)?;
        let client = self.session().await?;
        match client.submit_sm(submit).await {
            Ok(resp) => Ok(Sent {
                provider_message_id: Some(resp.message_id().to_string()),
                status: Some(0),
            }),
            Err(e) => Err(classify(e)),
        }
    }

    /// The bound session, connecting and binding first if there is none.
    async fn session(&self) -> Result<Client, ProviderError> {
        let mut session = self.session.lock().await;
        if let Some(client) = session.as_ref().filter(|c| c.is_active()) {
            return Ok(client.clone());
        }
        *session = None;
        let not_before = self.backoff.lock().unwrap_or_else(|e| e.into_inner()).0;
        if let Some(at) = not_before.filter(|at| *at > Instant::now()) {
            return Err(transient(format!(
                "smpp session down; reconnecting in {} ms",
                at.duration_since(Instant::now()).as_millis()
            )));
        }
        match self.connect().await {
            Ok(client) => {
                *self.backoff.lock().unwrap_or_else(|e| e.into_inner()) = (None, FIRST_BACKOFF);
                *session = Some(client.clone());
                Ok(client)
            }
            Err(e) => {
                let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
                let max = Duration::from_millis(self.settings.reconnect_max_delay_ms);
                *backoff = (Some(Instant::now() + backoff.1), (backoff.1 * 2).min(max));
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Client, ProviderError> {
        let s = &self.settings;
        let timeout = Duration::from_millis(s.response_timeout_ms);
        let (client, events) = ConnectionBuilder::new()
            .enquire_link_interval(Duration::from_millis(s.enquire_link_interval_ms))
            .enquire_link_response_timeout(timeout)
            .response_timeout(timeout)
            .connect(s.url.as_str())
            .await
            .map_err(|e| transient(format!("smpp connect: {e}")))?;
        // The two bind PDUs have the same fields but distinct types.
        macro_rules! bind {
            ($method:ident, $pdu:ident) => {
                client
                    .$method(
                        $pdu::builder()
                            .system_id(field(&s.system_id))
                            .password(field(s.password.expose()))
                            .system_type(field(&s.system_type))
                            .build(),
                    )
                    .await
                    .map(|_| ())
            };
        }
        let bound = match s.bind {
            SmppBind::Transmitter => bind!(bind_transmitter, BindTransmitter),
            SmppBind::Transceiver => bind!(bind_transceiver, BindTransceiver),
        };
        if let Err(e) = bound {
            let _ = client.close().await;
            return Err(match classify(e) {
                // A refused bind is the credentials, whatever the status says.
                ProviderError::Permanent { status, detail, .. } => ProviderError::Permanent {
                    status,
                    reason: FailReason::ProviderAuth,
                    detail: format!("smpp bind refused: {detail}"),
                },
                other => other,
            });
        }
        let receipts = (self.name.clone(), self.receipts.clone());
        tokio::spawn(read_events(client.clone(), events, receipts));
        Ok(client)
    }

    /// The submit_sm for `text` to `to`: GSM-7 (data_coding 0, one septet per octet) when the
    /// text fits that alphabet, UCS-2 big-endian otherwise; valid for the code's remaining life.
    fn submit_sm(
        &self,
        to: &str,
        text: &str,
        valid_for: Duration,
    ) -> Result<SubmitSm, ProviderError> {
        let s = &self.settings;
        let (coding, bytes) = match segments::gsm7_unpacked(text) {
            Some(septets) => (DataCoding::McSpecific, septets),
            None => (
                DataCoding::Ucs2,
                text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            ),
        };
        let source = s.source_addr.trim_start_matches('+');
        let (source_ton, source_npi) = if source.bytes().all(|b| b.is_ascii_digit()) {
            (Ton::International, Npi::Isdn)
        } else {
            (Ton::Alphanumeric, Npi::Unknown)
        };
        let bad = |what: &str| ProviderError::Permanent {
            status: None,
            reason: FailReason::ProviderMisconfigured,
            detail: format!("smpp: {what} does not fit its field"),
        };
        let receipts = s.registered_delivery && s.bind == SmppBind::Transceiver;
        let mut submit = SubmitSm::builder()
            .source_addr_ton(source_ton)
            .source_addr_npi(source_npi)
            .source_addr(COctetString::from_str(source).map_err(|_| bad("source_addr"))?)
            .dest_addr_ton(Ton::International)
            .dest_addr_npi(Npi::Isdn)
            .destination_addr(
                COctetString::from_str(to.trim_start_matches('+')).map_err(|_| bad("to"))?,
            )
            .registered_delivery(if receipts {
                RegisteredDelivery::new(
                    MCDeliveryReceipt::McDeliveryReceiptRequestedWhereFinalDeliveryOutcomeIsSuccessOrFailure,
                    SmeOriginatedAcknowledgement::default(),
                    IntermediateNotification::default(),
                    0,
                )
            } else {
                RegisteredDelivery::default()
            })
            .validity_period(
                EmptyOrFullCOctetString::from_str(&relative_validity(valid_for))
                    .map_err(|_| bad("validity_period"))?,
            )
            .data_coding(coding);
        submit = if bytes.len() <= SHORT_MESSAGE_MAX {
            submit.short_message(OctetString::from_vec(bytes.clone()).map_err(|_| bad("text"))?)
        } else {
            submit.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_vec(bytes)),
            ))
        };
        Ok(submit.build())
    }
}

/// SMPP's relative time format (§7.1.1, `YYMMDDhhmmsstnnR`) for `valid_for`, in whole seconds
/// of at least one and at most 99 days: the SMSC drops the message once the code is dead.
fn relative_validity(valid_for: Duration) -> String {
    let secs = valid_for.as_secs().clamp(1, 99 * 86_400 + 86_399);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (hours, minutes, seconds) = (rest / 3600, rest % 3600 / 60, rest % 60);
    format!("0000{days:02}{hours:02}{minutes:02}{seconds:02}000R")
}

/// A C-octet string field; config validation keeps values within the field's size.
fn field<const MIN: usize, const MAX: usize>(v: &str) -> COctetString<MIN, MAX> {
    COctetString::from_str(v).unwrap_or_else(|_| COctetString::empty())
}

/// Answers the SMSC's deliver_sm and forwards delivery receipts until the session ends. Only
/// a deliver_sm whose `esm_class` marks it as an MC delivery receipt is read as one: a
/// mobile-originated message's text is the sender's to choose, and could otherwise mark any
/// message delivered or undelivered.
async fn read_events(
    client: Client,
    mut events: impl futures_util::Stream<Item = Event> + Unpin,
    (provider, receipts): (String, mpsc::UnboundedSender<Heard>),
) {
    while let Some(event) = events.next().await {
        match event {
            Event::Incoming(command) => {
                let sequence = command.sequence_number();
                let Some(Pdu::DeliverSm(deliver)) = command.pdu() else {
                    continue;
                };
                if let Err(e) = client
                    .deliver_sm_resp(sequence, DeliverSmResp::default())
                    .await
                {
                    tracing::warn!(error = %e, "smpp: deliver_sm_resp not sent");
                }
                if deliver.esm_class.message_type
                    != MessageType::ShortMessageContainsMCDeliveryReceipt
                {
                    tracing::debug!("smpp: a deliver_sm that is not a delivery receipt; ignored");
                    continue;
                }
                if let Some(receipt) = read_receipt(deliver.short_message().as_ref()) {
                    let provider = provider.clone();
                    let _ = receipts.send(Heard { provider, receipt });
                }
            }
            Event::Error(e) => tracing::warn!(error = %e, "smpp session error"),
        }
    }
}

/// The final state in an SMSC delivery receipt's text (SMPP 3.4 Appendix B):
/// `id:<id> sub:001 dlvrd:001 submit date:… done date:… stat:DELIVRD err:000 text:…`.
/// Interim states (ENROUTE, ACCEPTD) are not receipts.
pub fn read_receipt(text: &[u8]) -> Option<Receipt> {
    let text = std::str::from_utf8(text).ok()?;
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .map(str::to_string)
    };
    let sid = field("id:")?;
    let stat = field("stat:")?;
    let state = match stat.as_str() {
        "DELIVRD" => DeliveryState::Delivered,
        "UNDELIV" | "EXPIRED" | "REJECTD" | "DELETED" | "UNKNOWN" => DeliveryState::Undelivered,
        _ => return None,
    };
    let error = field("err:").filter(|e| !e.trim_start_matches('0').is_empty());
    let error = error.or_else(|| (state == DeliveryState::Undelivered).then_some(stat));
    Some(Receipt { sid, state, error })
}

fn transient(detail: String) -> ProviderError {
    ProviderError::Transient {
        status: None,
        detail,
        in_doubt: false,
    }
}

/// An SMPP failure in otpd's terms. A timeout or a lost session after the submit_sm was
/// written may hide an accepted message: in doubt.
fn classify(e: SmppError) -> ProviderError {
    let detail = e.to_string();
    let response = match e {
        SmppError::ResponseTimeout { .. }
        | SmppError::ConnectionClosed
        | SmppError::ConnectionClosedByPeer => {
            return ProviderError::Transient {
                status: None,
                detail,
                in_doubt: true,
            };
        }
        SmppError::UnexpectedResponse { response } => response,
        _ => return transient(detail),
    };
    let status = response.status();
    let code = u32::from(status);
    let detail = format!("smpp command_status 0x{code:08X} ({status:?})");
    let permanent = |reason| ProviderError::Permanent {
        status: None,
        reason,
        detail: detail.clone(),
    };
    match status {
        CommandStatus::EsmeRthrottled => ProviderError::RateLimited {
            status: None,
            retry_after: None,
            detail,
        },
        CommandStatus::EsmeRmsgqful | CommandStatus::EsmeRsyserr => transient(detail),
        CommandStatus::EsmeRinvdstadr => permanent(FailReason::InvalidDestination),
        CommandStatus::EsmeRbindfail
        | CommandStatus::EsmeRinvpaswd
        | CommandStatus::EsmeRinvsysid => permanent(FailReason::ProviderAuth),
        CommandStatus::EsmeRinvsrcadr => permanent(FailReason::ProviderMisconfigured),
        _ => permanent(FailReason::ProviderPermanent),
    }
}

#[cfg(test)]
#[path = "smpp_tests.rs"]
mod tests;
