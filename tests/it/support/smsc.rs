//! A small SMSC on loopback speaking SMPP through rusmpp's codec: it binds transmitters and
//! transceivers (refusing a wrong password), answers enquire_link, accepts submit_sm with
//! message ids `m1`, `m2`, …, sends a transceiver that asked for one a DELIVRD receipt, and
//! can drop the connection after a submit to exercise reconnects.

use futures_util::{SinkExt, StreamExt};
use rusmpp::pdus::{BindTransceiverResp, BindTransmitterResp, DeliverSm, SubmitSmResp};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, MCDeliveryReceipt};
use rusmpp::{Command, CommandStatus, Pdu, tokio_codec::CommandCodec};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

/// The password the fake accepts.
pub const PASSWORD: &str = "secret";

#[derive(Debug, Clone)]
pub struct Submitted {
    pub system_id: String,
    pub source: String,
    pub destination: String,
    pub data_coding: u8,
    pub short_message: Vec<u8>,
    pub message_id: String,
    /// The validity_period field as sent (SMPP's absolute or relative time format).
    pub validity_period: String,
    /// Whether the submit asked for a final delivery receipt.
    pub receipt_requested: bool,
}

pub struct FakeSmsc {
    pub port: u16,
    pub submits: mpsc::UnboundedReceiver<Submitted>,
    pub binds: Arc<AtomicU32>,
    /// Drop the session right after answering the next submit_sm.
    pub drop_after_submit: Arc<AtomicBool>,
    /// One message per enquire_link received.
    pub enquire_links: mpsc::UnboundedReceiver<()>,
    /// Before each receipt, send a mobile-originated deliver_sm (esm_class 0) whose text reads
    /// like an UNDELIV receipt for the same message: anyone can send such a text.
    pub spoof_mo_receipt: Arc<AtomicBool>,
    /// Send UNDELIV receipts whose error field quotes the destination number.
    pub echo_destination: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Shared {
    submits: mpsc::UnboundedSender<Submitted>,
    binds: Arc<AtomicU32>,
    drop_after_submit: Arc<AtomicBool>,
    next_id: Arc<AtomicU32>,
    enquire_links: mpsc::UnboundedSender<()>,
    spoof_mo_receipt: Arc<AtomicBool>,
    echo_destination: Arc<AtomicBool>,
}

impl FakeSmsc {
    pub async fn start() -> FakeSmsc {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, submits) = mpsc::unbounded_channel();
        let (links_tx, enquire_links) = mpsc::unbounded_channel();
        let shared = Shared {
            enquire_links: links_tx,
            submits: tx,
            binds: Arc::default(),
            drop_after_submit: Arc::default(),
            next_id: Arc::default(),
            spoof_mo_receipt: Arc::default(),
            echo_destination: Arc::default(),
        };
        let fake = FakeSmsc {
            port,
            submits,
            binds: shared.binds.clone(),
            drop_after_submit: shared.drop_after_submit.clone(),
            enquire_links,
            spoof_mo_receipt: shared.spoof_mo_receipt.clone(),
            echo_destination: shared.echo_destination.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("smpp://127.0.0.1:{}", self.port)
    }
}

fn c<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    COctetString::from_str(s).unwrap()
}

async fn session(stream: TcpStream, shared: Shared) {
    let mut framed = Framed::new(stream, CommandCodec::new());
    let mut system_id = String::new();
    let mut transceiver = false;
    let mut sequence = 1_000;
    while let Some(Ok(command)) = framed.next().await {
        let seq = command.sequence_number();
        let reply = |status, pdu: Pdu| Command::new(status, seq, pdu);
        let Some(pdu) = command.pdu() else { continue };
        let response = match pdu {
            Pdu::BindTransmitter(b) => {
                system_id = b.system_id.to_string();
                bind_status(&shared, b.password.to_string()).map(|status| {
                    reply(
                        status,
                        BindTransmitterResp::builder()
                            .system_id(c("fake"))
                            .build()
                            .into(),
                    )
                })
            }
            Pdu::BindTransceiver(b) => {
                system_id = b.system_id.to_string();
                transceiver = true;
                bind_status(&shared, b.password.to_string()).map(|status| {
                    reply(
                        status,
                        BindTransceiverResp::builder()
                            .system_id(c("fake"))
                            .build()
                            .into(),
                    )
                })
            }
            Pdu::EnquireLink => {
                let _ = shared.enquire_links.send(());
                Some(reply(CommandStatus::EsmeRok, Pdu::EnquireLinkResp))
            }
            Pdu::Unbind => Some(reply(CommandStatus::EsmeRok, Pdu::UnbindResp)),
            Pdu::SubmitSm(s) => {
                let n = shared.next_id.fetch_add(1, Ordering::SeqCst) + 1;
                let wants = s.registered_delivery.mc_delivery_receipt()
                    != MCDeliveryReceipt::NoMcDeliveryReceiptRequested;
                let message_id = format!("m{n}");
                let _ = shared.submits.send(Submitted {
                    system_id: system_id.clone(),
                    source: s.source_addr.to_string(),
                    destination: s.destination_addr.to_string(),
                    data_coding: u8::from(s.data_coding),
                    short_message: s.short_message().as_ref().to_vec(),
                    message_id: message_id.clone(),
                    validity_period: s.validity_period.to_string(),
                    receipt_requested: wants,
                });
                let resp = SubmitSmResp::builder().message_id(c(&message_id)).build();
                framed
                    .send(reply(CommandStatus::EsmeRok, resp.into()))
                    .await
                    .unwrap();
                if shared.drop_after_submit.swap(false, Ordering::SeqCst) {
                    return;
                }
                if transceiver && wants {
                    let destination = s.destination_addr.to_string();
                    let (stat, err) = match shared.echo_destination.load(Ordering::SeqCst) {
                        true => ("UNDELIV", destination.as_str()),
                        false => ("DELIVRD", "000"),
                    };
                    let text = |stat: &str, err: &str| {
                        format!(
                            "id:{message_id} sub:001 dlvrd:001 submit date:2611231200 done date:2611231200 stat:{stat} err:{err} text:"
                        )
                    };
                    let mut receipts = Vec::new();
                    if shared.spoof_mo_receipt.load(Ordering::SeqCst) {
                        receipts.push((0x00, text("UNDELIV", "001")));
                    }
                    receipts.push((0x04, text(stat, err)));
                    for (esm_class, text) in receipts {
                        sequence += 1;
                        let receipt = DeliverSm::builder()
                            .source_addr(s.destination_addr.clone())
                            .destination_addr(s.source_addr.clone())
                            .esm_class(EsmClass::from(esm_class))
                            .short_message(OctetString::from_vec(text.into_bytes()).unwrap())
                            .build();
                        let command = Command::new(CommandStatus::EsmeRok, sequence, receipt);
                        framed.send(command).await.unwrap();
                    }
                }
                None
            }
            _ => None,
        };
        if let Some(response) = response
            && framed.send(response).await.is_err()
        {
            return;
        }
    }
}

fn bind_status(shared: &Shared, password: String) -> Option<CommandStatus> {
    if password == PASSWORD {
        shared.binds.fetch_add(1, Ordering::SeqCst);
        Some(CommandStatus::EsmeRok)
    } else {
        Some(CommandStatus::EsmeRinvpaswd)
    }
}
