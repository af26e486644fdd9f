//! Delivery receipts: a provider's word that a message reached the handset (or did not).
//!
//! Receipts arrive over HTTP (the webhook in [`crate::http`]), are checked and read by the
//! provider's own pure code ([`crate::providers::twilio_receipt`]), and are applied here: the
//! store moves the delivery out of `sent`, then the status event is published. Housekeeping
//! applies receipts that arrived before their delivery was recorded and republishes events the
//! broker did not confirm, since a provider does not send a callback twice.

use crate::config::{HttpReceiptSettings, ProviderConfig, Secret, Settings};
use crate::domain::{Channel, DeliveryState, FailReason};
use crate::events::{Publisher, StatusEvent};
use crate::metrics::{Metrics, ReceiptLabels};
use crate::providers::{Heard, Receipt, http_receipt, twilio_receipt, whatsapp_receipt};
use crate::store::{ReceiptOutcome, Receipted, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The signature is missing or wrong, or no Twilio account or public URL is configured.
    #[error("the callback's signature does not verify")]
    Forbidden,
    /// No `http` provider of that name describes receipts.
    #[error("no provider takes receipts here")]
    Unknown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Receipts {
    store: Store,
    publisher: Arc<Publisher>,
    metrics: Arc<Metrics>,
    /// The URL Twilio signs (the callback URL otpd gave it).
    twilio_url: Option<String>,
    /// Each configured Twilio instance's name, account SID and auth token.
    twilio_accounts: Vec<(String, String, Secret)>,
    /// Each configured WhatsApp Cloud instance.
    whatsapp_numbers: Vec<WhatsappNumber>,
    /// Each `http` provider that describes its receipts.
    http_vendors: Vec<HttpVendor>,
}

/// What `/webhooks/http/<name>` needs of one `http` provider.
struct HttpVendor {
    name: String,
    /// The URL the vendor posts to, which an HMAC may cover.
    url: String,
    receipts: HttpReceiptSettings,
    secrets: BTreeMap<String, Secret>,
}

/// What the WhatsApp webhook needs of one `whatsapp_cloud` instance.
struct WhatsappNumber {
    name: String,
    phone_number_id: String,
    app_secret: Secret,
    verify_token: Secret,
}

impl Receipts {
    pub fn new(
        settings: &Settings,
        store: Store,
        publisher: Arc<Publisher>,
        metrics: Arc<Metrics>,
    ) -> Receipts {
        let twilio_accounts = settings
            .providers
            .0
            .iter()
            .filter_map(|(name, p)| match p {
                ProviderConfig::Twilio(t) if !t.auth_token.is_empty() => {
                    Some((name.clone(), t.account_sid.clone(), t.auth_token.clone()))
                }
                _ => None,
            })
            .collect();
        let whatsapp_numbers = (settings.providers.0.iter())
            .filter_map(|(name, p)| match p {
                ProviderConfig::WhatsappCloud(w) => Some(WhatsappNumber {
                    name: name.clone(),
                    phone_number_id: w.phone_number_id.clone(),
                    app_secret: w.app_secret.clone(),
                    verify_token: w.verify_token.clone(),
                }),
                _ => None,
            })
            .collect();
        let http_vendors = (settings.providers.0.iter())
            .filter_map(|(name, p)| match p {
                ProviderConfig::Http(h) => Some(HttpVendor {
                    name: name.clone(),
                    url: settings.http.http_receipt_url(name),
                    receipts: *h.receipts.clone()?,
                    secrets: h.secrets.clone(),
                }),
                _ => None,
            })
            .collect();
        Receipts {
            store,
            publisher,
            metrics,
            twilio_url: settings.http.twilio_callback_url(),
            twilio_accounts,
            whatsapp_numbers,
            http_vendors,
        }
    }

    /// A receipt posted to `/webhooks/http/<provider>`, authenticated and read as that
    /// provider's `receipts` section says; it applies only to that provider's messages.
    pub async fn http(
        &self,
        provider: &str,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), ReceiptError> {
        let vendor = (self.http_vendors.iter())
            .find(|v| v.name == provider)
            .ok_or(ReceiptError::Unknown)?;
        let posted = http_receipt::Posted {
            url: &vendor.url,
            headers,
            body,
            now: chrono::Utc::now().timestamp(),
        };
        let secret = |name: &str| vendor.secrets.get(name).map(Secret::expose);
        if !http_receipt::verify(&vendor.receipts, secret, &posted) {
            return Err(ReceiptError::Forbidden);
        }
        if let Some(receipt) = http_receipt::read(&vendor.receipts, body) {
            self.apply(std::slice::from_ref(&vendor.name), &receipt)
                .await?;
        }
        Ok(())
    }

    /// Meta's webhook verification: the `hub.challenge` to echo, when `hub.verify_token` is a
    /// configured instance's.
    pub fn whatsapp_handshake<'a>(&self, query: &'a [(String, String)]) -> Option<&'a str> {
        let tokens = self
            .whatsapp_numbers
            .iter()
            .map(|n| n.verify_token.expose());
        whatsapp_receipt::handshake(query, tokens)
    }

    /// A WhatsApp webhook post: `body` is the raw JSON, `signature` its
    /// `X-Hub-Signature-256`. A status applies only to the instance whose business number
    /// sent it, and only when that instance's app secret signed the post.
    pub async fn whatsapp(&self, signature: Option<&str>, body: &[u8]) -> Result<(), ReceiptError> {
        let Some(signature) = signature else {
            return Err(ReceiptError::Forbidden);
        };
        let signed_by: Vec<&WhatsappNumber> = (self.whatsapp_numbers.iter())
            .filter(|n| whatsapp_receipt::verify(n.app_secret.expose(), body, signature))
            .collect();
        if signed_by.is_empty() {
            return Err(ReceiptError::Forbidden);
        }
        for (number, receipt) in whatsapp_receipt::read(body) {
            let providers: Vec<String> = (signed_by.iter())
                .filter(|n| n.phone_number_id == number)
                .map(|n| n.name.clone())
                .collect();
            if !providers.is_empty() {
                self.apply(&providers, &receipt).await?;
            }
        }
        Ok(())
    }

    /// A Twilio status callback: `body` is its form, `signature` its `X-Twilio-Signature`.
    /// The signing account is the one the callback names in `AccountSid`.
    pub async fn twilio(&self, signature: Option<&str>, body: &[u8]) -> Result<(), ReceiptError> {
        let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let account = params
            .iter()
            .find(|(k, _)| k == "AccountSid")
            .map(|(_, v)| v.as_str());
        let token = self
            .twilio_accounts
            .iter()
            .find(|(_, sid, _)| Some(sid.as_str()) == account)
            .map(|(_, _, token)| token);
        let (Some(url), Some(token), Some(signature)) = (&self.twilio_url, token, signature) else {
            return Err(ReceiptError::Forbidden);
        };
        if !twilio_receipt::verify(token.expose(), url, &params, signature) {
            return Err(ReceiptError::Forbidden);
        }
        let Some(receipt) = twilio_receipt::read(&params) else {
            return Ok(());
        };
        // Every instance on the signing account may have sent it.
        let providers: Vec<String> = self
            .twilio_accounts
            .iter()
            .filter(|(_, sid, _)| Some(sid.as_str()) == account)
            .map(|(name, _, _)| name.clone())
            .collect();
        self.apply(&providers, &receipt).await
    }

    /// Applies a receipt read by a provider (an SMPP deliver_sm, a checked Twilio callback) to
    /// the delivery one of `providers` sent with the receipt's message id.
    pub async fn apply(&self, providers: &[String], receipt: &Receipt) -> Result<(), ReceiptError> {
        // A carrier's error is the vendor's text: it may quote the destination.
        let error = receipt.error.as_deref().map(crate::domain::text::scrub);
        let outcome = self
            .store
            .apply_receipt(providers, &receipt.sid, receipt.state, error.as_deref())
            .await?;
        if let ReceiptOutcome::Applied(row) = outcome {
            self.announce(&row).await?;
        }
        Ok(())
    }

    /// Applies the receipts providers receive on their own sessions, until shutdown. A
    /// receipt that fails to apply (the database is down) is logged and dropped: the SMSC
    /// was already answered, and the delivery stays `sent`, which is true.
    pub async fn drain(
        &self,
        mut incoming: tokio::sync::mpsc::UnboundedReceiver<Heard>,
        shutdown: CancellationToken,
    ) {
        loop {
            let receipt = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = incoming.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
            };
            let providers = [receipt.provider];
            if let Err(e) = self.apply(&providers, &receipt.receipt).await {
                tracing::warn!(error = %e, "receipt not applied");
            }
        }
    }

    /// Runs [`Receipts::housekeeping`] every few seconds until shutdown.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    if let Err(e) = self.housekeeping().await {
                        tracing::debug!(error = %e, "receipt housekeeping failed; trying again later");
                    }
                }
            }
        }
    }

    /// Applies parked receipts and republishes unconfirmed receipt events.
    pub async fn housekeeping(&self) -> Result<(), StoreError> {
        for row in self.store.apply_pending_receipts().await? {
            self.announce(&row).await?;
        }
        for row in self.store.unpublished_receipts(10.0).await? {
            self.publish(&row).await?;
        }
        Ok(())
    }

    /// Counts a freshly applied receipt and publishes its event.
    async fn announce(&self, row: &Receipted) -> Result<(), StoreError> {
        let labels = ReceiptLabels {
            provider: row.provider.clone().unwrap_or_default(),
            channel: channel_label(row.channel.as_deref()),
            country: row.country.clone().unwrap_or_else(|| "none".into()),
            state: parse_state(&row.state).as_str(),
        };
        self.metrics.receipts.get_or_create(&labels).inc();
        if let (Some(secs), DeliveryState::Delivered) =
            (row.after_sent_secs, parse_state(&row.state))
        {
            self.metrics
                .delivery_latency
                .get_or_create(&crate::metrics::ProviderLabels {
                    provider: labels.provider,
                    channel: labels.channel,
                })
                .observe(secs.max(0.0));
        }
        self.publish(row).await
    }

    /// A publish failure is logged, not returned: the receipt is committed, and housekeeping
    /// republishes its event.
    async fn publish(&self, row: &Receipted) -> Result<(), StoreError> {
        let state = parse_state(&row.state);
        let metadata = BTreeMap::new();
        // A fallback step's record is keyed `<challenge_id>#<step>`; its events name both.
        let (challenge_id, step) = crate::domain::fallback::split_key(&row.challenge_id);
        let event = StatusEvent {
            version: 1,
            event_id: format!("{}/{}", row.challenge_id, state.event_name()),
            challenge_id,
            step,
            account_id: row.account_id.as_deref(),
            channel: row.channel.as_deref(),
            state: state.event_name(),
            attempt: row.attempt,
            provider: row.provider.as_deref(),
            provider_message_id: row.provider_message_id.as_deref(),
            reason: (state == DeliveryState::Undelivered)
                .then_some(FailReason::CarrierUndelivered.code()),
            detail: None,
            rule: None,
            retry_after_secs: None,
            carrier_error: row.carrier_error.as_deref(),
            in_doubt: false,
            metadata: &metadata,
            at: row.receipt_at,
        };
        match self.publisher.publish_event(&event).await {
            Ok(()) => self.store.mark_receipt_published(&row.challenge_id).await,
            Err(e) => {
                tracing::warn!(challenge_id = %row.challenge_id, error = %e,
                    "receipt event not published; housekeeping retries it");
                Ok(())
            }
        }
    }
}

/// The store only ever writes `delivered` or `undelivered` from a receipt.
fn parse_state(s: &str) -> DeliveryState {
    DeliveryState::parse(s).unwrap_or(DeliveryState::Undelivered)
}

fn channel_label(c: Option<&str>) -> &'static str {
    c.and_then(Channel::parse).map_or("none", Channel::as_str)
}
