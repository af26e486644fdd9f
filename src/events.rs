//! Status events on `otpd.events` and dead-lettering, both with publisher confirms.
//!
//! One publishing channel is shared by every job; it is replaced when intake reconnects. A
//! publish that is not confirmed is an error, and the job is then not acked, so the broker
//! redelivers it and the event is published again.

use crate::domain::job::MAX_BODY_BYTES;
use crate::domain::{ChallengeId, DeliveryState, Outcome, Rejection};
use chrono::{DateTime, Utc};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A status event, as documented in docs/job-v1.md.
#[derive(Debug, Serialize)]
pub struct StatusEvent<'a> {
    pub version: u8,
    /// `<challenge_id>/<state>`, or `<challenge_id>#<step>/<state>` for a fallback step: the
    /// same for every copy of this event (a send has at most one event per state), so
    /// consumers deduplicate on it.
    pub event_id: String,
    pub challenge_id: &'a str,
    /// Which send of the challenge: 0 for the job as published, `n` for its fallback step `n`.
    pub step: u8,
    pub account_id: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub state: &'static str,
    pub attempt: i32,
    pub provider: Option<&'a str>,
    pub provider_message_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub detail: Option<&'a str>,
    /// For `rate_limited`: the limit rule that refused the job, and the seconds until it
    /// would have been allowed.
    pub rule: Option<&'a str>,
    pub retry_after_secs: Option<u64>,
    /// For `undelivered`: the carrier's or vendor's error code from the receipt.
    pub carrier_error: Option<&'a str>,
    pub in_doubt: bool,
    pub metadata: &'a BTreeMap<String, String>,
    pub at: DateTime<Utc>,
}

impl<'a> StatusEvent<'a> {
    /// An event with only the fields every state has.
    pub fn new(
        challenge_id: &'a ChallengeId,
        state: DeliveryState,
        metadata: &'a BTreeMap<String, String>,
    ) -> Self {
        StatusEvent {
            version: 1,
            event_id: format!("{}/{}", challenge_id.as_str(), state.event_name()),
            challenge_id: challenge_id.as_str(),
            step: 0,
            account_id: None,
            channel: None,
            state: state.event_name(),
            attempt: 0,
            provider: None,
            provider_message_id: None,
            reason: None,
            detail: None,
            rule: None,
            retry_after_secs: None,
            carrier_error: None,
            in_doubt: false,
            metadata,
            at: Utc::now(),
        }
    }
}

impl<'a> StatusEvent<'a> {
    /// The event of fallback step `step` (0: the first send).
    pub fn at_step(mut self, step: u8) -> Self {
        if step > 0 {
            self.step = step;
            let sep = crate::domain::fallback::STEP_SEPARATOR;
            self.event_id = format!("{}{sep}{step}/{}", self.challenge_id, self.state);
        }
        self
    }

    /// Adds what a challenge's outcome tells its watchers: the attempt, the provider and its
    /// message id, why it failed, and whether a call is in doubt.
    pub fn with_outcome(mut self, o: &'a Outcome<'_>) -> Self {
        self.attempt = o.attempt;
        self.provider = o.provider.as_deref();
        self.provider_message_id = o.provider_message_id.as_deref();
        self.reason = o.reason.as_deref();
        self.detail = o.detail.as_deref();
        self.rule = o.rule.as_deref();
        self.retry_after_secs = o.retry_at.map(retry_after_secs);
        self.in_doubt = o.in_doubt;
        self
    }
}

/// Whole seconds from now until `at`, rounded up (0 once it has passed).
fn retry_after_secs(at: DateTime<Utc>) -> u64 {
    let ms = (at - Utc::now()).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000)
}

/// An abuse alert on `otpd.events` (routing key `alert.prefix_flagged`): a number range whose
/// conversion fell below the threshold.
#[derive(Debug, Serialize)]
pub struct PrefixFlagged<'a> {
    pub version: u8,
    pub event: &'static str,
    /// `+` and the range's leading digits, country code included.
    pub prefix: String,
    pub country: Option<&'a str>,
    /// "shadow" (announced only) or "enforce" (no codes sent to it until `until`).
    pub mode: &'static str,
    pub sent: i64,
    pub verified: i64,
    pub conversion: f64,
    pub until: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// A delivery-health alert on `otpd.events` (`alert.provider_demoted`,
/// `alert.provider_restored`): a provider moved down or back up its chains for one country.
#[derive(Debug, Serialize)]
pub struct ProviderMoved<'a> {
    pub version: u8,
    pub event: &'static str,
    pub provider: &'a str,
    /// ISO 3166 region of the destinations judged; empty for email.
    pub country: &'a str,
    /// Places below its configured place in its chains now; 0 once fully restored.
    pub level: i32,
    /// The score over the window that moved it.
    pub delivered: i64,
    pub not_delivered: i64,
    pub delivered_ratio: Option<f64>,
    pub p95_ms: Option<f64>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no open channel to the broker")]
    NotConnected,
    #[error("publishing: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("encoding the event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The header carrying a dead-lettered job's reason code, and one with the human detail.
pub const REASON_HEADER: &str = "x-otpd-reason";
pub const DETAIL_HEADER: &str = "x-otpd-detail";
/// On a dead-lettered body that was over the size limit: its size in bytes before it was cut.
pub const ORIGINAL_SIZE_HEADER: &str = "x-otpd-original-size";
/// How much of an oversize body the dead-letter copy keeps.
pub const DEAD_LETTER_HEAD_BYTES: usize = 4096;

/// On a fallback step otpd schedules: the step number, and otpd's MAC over it and the body.
pub const STEP_HEADER: &str = "x-otpd-step";
pub const STEP_MAC_HEADER: &str = "x-otpd-step-mac";

pub struct Publisher {
    channel: Mutex<Option<Channel>>,
    events_exchange: ShortString,
    dead_letter_exchange: ShortString,
    amqp: crate::config::AmqpSettings,
}

impl Publisher {
    pub fn new(s: &crate::config::AmqpSettings) -> Publisher {
        Publisher {
            channel: Mutex::new(None),
            events_exchange: s.events_exchange.as_str().into(),
            dead_letter_exchange: s.dead_letter_exchange.as_str().into(),
            amqp: s.clone(),
        }
    }

    /// Schedules fallback step `step` of the job `body`: a copy of the job, with the step and
    /// otpd's `mac` in headers, waits `after` in a delay queue of its own length, then returns
    /// to the jobs exchange. Confirmed before it returns, so that the job that scheduled it is
    /// acked only once the step is safe in the broker.
    pub async fn schedule_step(
        &self,
        body: &[u8],
        step: u8,
        mac: &str,
        after: std::time::Duration,
    ) -> Result<(), PublishError> {
        let queue = crate::amqp::declare_step_queue(&self.channel()?, &self.amqp, after).await?;
        let mut headers = FieldTable::default();
        headers.insert(
            STEP_HEADER.into(),
            AMQPValue::LongString(step.to_string().into()),
        );
        headers.insert(STEP_MAC_HEADER.into(), AMQPValue::LongString(mac.into()));
        let props = persistent_json().with_headers(headers);
        self.publish("".into(), queue.into(), body, props).await
    }

    /// Moves a job, as it came, to the queue of the lane its `lane` field names; confirmed
    /// before it returns, so that the copy it came from is acked only once this one is safe.
    pub async fn forward(
        &self,
        body: &[u8],
        original: &BasicProperties,
        queue: &str,
    ) -> Result<(), PublishError> {
        let props = original.clone().with_delivery_mode(2);
        self.publish("".into(), queue.into(), body, props).await
    }

    /// Installs the channel of a new connection (already in confirm mode), or clears it.
    pub fn set_channel(&self, channel: Option<Channel>) {
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) = channel;
    }

    /// Removes the channel, so the caller can close it before the connection.
    pub fn take_channel(&self) -> Option<Channel> {
        self.channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn is_connected(&self) -> bool {
        let guard = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().is_some_and(|c| c.status().connected())
    }

    fn channel(&self) -> Result<Channel, PublishError> {
        let guard = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or(PublishError::NotConnected)
    }

    pub async fn publish_event(&self, event: &StatusEvent<'_>) -> Result<(), PublishError> {
        self.send_event(event).await?.confirmed().await
    }

    /// Hands the event to the broker without waiting for its confirm, which the caller awaits
    /// later with [`Pending::confirmed`].
    pub async fn send_event(&self, event: &StatusEvent<'_>) -> Result<Pending, PublishError> {
        let body = serde_json::to_vec(event)?;
        let routing_key = format!("delivery.{}", event.state);
        let props = persistent_json().with_message_id(event.challenge_id.into());
        self.send(
            self.events_exchange.clone(),
            routing_key.into(),
            &body,
            props,
        )
        .await
    }

    /// Publishes an alert under `alert.<event>`; `event` is the alert's own `event` field.
    pub async fn publish_alert(
        &self,
        event: &str,
        alert: &impl Serialize,
    ) -> Result<(), PublishError> {
        let body = serde_json::to_vec(alert)?;
        let routing_key = format!("alert.{event}");
        self.publish(
            self.events_exchange.clone(),
            routing_key.into(),
            &body,
            persistent_json(),
        )
        .await
    }

    /// Copies a refused job to the dead-letter exchange with its reason in headers. The caller
    /// acks the original only after this is confirmed, so the job is never lost in between.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        original: &BasicProperties,
        r: &Rejection,
    ) -> Result<(), PublishError> {
        let mut headers = original.headers().clone().unwrap_or_default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(r.reason.code().into()),
        );
        headers.insert(
            DETAIL_HEADER.into(),
            AMQPValue::LongString(r.detail.as_str().into()),
        );
        // An oversize body is kept as a bounded head: enough to see what sent it, while a flood
        // of huge messages cannot fill the dead-letter queue's disk.
        let kept = match body.len() > MAX_BODY_BYTES {
            true => {
                headers.insert(
                    ORIGINAL_SIZE_HEADER.into(),
                    AMQPValue::LongLongInt(body.len() as i64),
                );
                &body[..DEAD_LETTER_HEAD_BYTES]
            }
            false => body,
        };
        let props = original.clone().with_headers(headers).with_delivery_mode(2);
        self.publish(
            self.dead_letter_exchange.clone(),
            r.reason.code().into(),
            kept,
            props,
        )
        .await
    }

    async fn publish(
        &self,
        exchange: ShortString,
        key: ShortString,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        self.send(exchange, key, body, props)
            .await?
            .confirmed()
            .await
    }

    async fn send(
        &self,
        exchange: ShortString,
        key: ShortString,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<Pending, PublishError> {
        let channel = self.channel()?;
        let confirm = channel
            .basic_publish(exchange, key, BasicPublishOptions::default(), body, props)
            .await?;
        Ok(Pending(confirm))
    }
}

/// A message handed to the broker whose confirm has not been awaited yet.
pub struct Pending(lapin::PublisherConfirm);

impl Pending {
    /// Waits for the broker to take responsibility for the message.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        if self.0.await?.is_ack() {
            Ok(())
        } else {
            Err(PublishError::Nacked)
        }
    }
}

/// Persistent (delivery mode 2) so events survive a broker restart once confirmed.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(FieldTable::default())
}
