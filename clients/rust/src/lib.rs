//! A small publisher for otpd (docs/job-v1.md), on lapin: it builds a send-code job, signs it
//! when given a key (the `otpd-signature` v2 scheme), publishes it with publisher confirms, and
//! can wait for the challenge's status events.
//!
//! ```no_run
//! # async fn demo() -> Result<(), otpd_client::Error> {
//! use otpd_client::{Job, Options, Publisher};
//! let otpd = Publisher::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Options::default()).await?;
//! let job = Job::new("sms", "+14155550123", "271828", "user-1");
//! let mut events = otpd.watch(&job.challenge_id).await?;
//! otpd.publish(&job).await?;
//! let event = events.terminal(std::time::Duration::from_secs(30)).await?;
//! println!("{}", event["state"]);
//! # Ok(()) }
//! ```

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Serialize;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::time::Duration;

/// The AMQP header of a signed message.
pub const SIGNATURE_HEADER: &str = "otpd-signature";
/// A challenge's job ends in one of these; receipts may later move `sent` on.
pub const TERMINAL: [&str; 7] = [
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "expired",
    "rate_limited",
    "rejected",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not confirm the message")]
    NotConfirmed,
    #[error("no terminal event for {0} in time")]
    Timeout(String),
    #[error("the events stream ended")]
    Closed,
}

/// A version 1 job. Optional fields are left out when `None`.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub version: u8,
    /// The idempotency key: a challenge is delivered at most once.
    pub challenge_id: String,
    pub account_id: String,
    pub channel: String,
    pub to: String,
    pub code: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

impl Job {
    /// A job with a fresh challenge_id whose code expires in five minutes.
    pub fn new(channel: &str, to: &str, code: &str, account_id: &str) -> Job {
        Job {
            version: 1,
            challenge_id: format!("rs-{}", uuid::Uuid::new_v4().simple()),
            account_id: account_id.to_string(),
            channel: channel.to_string(),
            to: to.to_string(),
            code: code.to_string(),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
            locale: None,
            template: None,
            metadata: BTreeMap::new(),
            client_ip: None,
        }
    }
}

/// The otpd-signature header: HMAC-SHA256 over `"<t>\n<type>\n<body>"`.
pub fn sign(body: &[u8], key_id: &str, key: &[u8], kind: &str, now: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{now}\n{kind}\n").as_bytes());
    mac.update(body);
    format!(
        "t={now},kid={key_id},v2={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Where to publish and listen, and the signing key if jobs are signed.
#[derive(Debug, Clone)]
pub struct Options {
    pub jobs_exchange: String,
    pub events_exchange: String,
    /// (key id, key) as under otpd's `[signing.keys]`.
    pub key: Option<(String, Vec<u8>)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            jobs_exchange: "otpd.jobs".into(),
            events_exchange: "otpd.events".into(),
            key: None,
        }
    }
}

pub struct Publisher {
    connection: Connection,
    channel: Channel,
    options: Options,
}

impl Publisher {
    pub async fn connect(url: &str, options: Options) -> Result<Publisher, Error> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            connection,
            channel,
            options,
        })
    }

    /// Starts listening for a challenge's events; call it before publishing the job.
    pub async fn watch(&self, challenge_id: &str) -> Result<Events, Error> {
        let ch = self.connection.create_channel().await?;
        let opts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare("".into(), opts, FieldTable::default())
            .await?;
        ch.queue_bind(
            q.name().clone(),
            self.options.events_exchange.as_str().into(),
            "delivery.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let consumer = ch
            .basic_consume(
                q.name().clone(),
                "otpd-client".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Events {
            _channel: ch,
            consumer,
            challenge_id: challenge_id.to_string(),
        })
    }

    /// Publishes a job; returns once the broker confirms it.
    pub async fn publish(&self, job: &Job) -> Result<(), Error> {
        let body = serde_json::to_vec(job).expect("a job serializes");
        self.send(&body, &job.channel, &job.challenge_id, "").await
    }

    /// Reports that the challenge's code was entered correctly.
    pub async fn verified(&self, challenge_id: &str) -> Result<(), Error> {
        self.feedback("verified", challenge_id).await
    }

    /// Abandons the challenge: its pending fallback steps are not sent.
    pub async fn cancel(&self, challenge_id: &str) -> Result<(), Error> {
        self.feedback("cancel", challenge_id).await
    }

    async fn feedback(&self, kind: &str, challenge_id: &str) -> Result<(), Error> {
        let body = serde_json::json!({"version": 1, "challenge_id": challenge_id});
        let body = serde_json::to_vec(&body).expect("JSON serializes");
        self.send(&body, kind, challenge_id, kind).await
    }

    async fn send(&self, body: &[u8], key: &str, id: &str, kind: &str) -> Result<(), Error> {
        let mut headers = FieldTable::default();
        if let Some((key_id, secret)) = &self.options.key {
            let now = chrono::Utc::now().timestamp();
            let signature = sign(body, key_id, secret, kind, now);
            headers.insert(
                SIGNATURE_HEADER.into(),
                AMQPValue::LongString(signature.into()),
            );
        }
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(id.into())
            .with_headers(headers);
        if !kind.is_empty() {
            props = props.with_type(kind.into());
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = self
            .channel
            .basic_publish(
                self.options.jobs_exchange.as_str().into(),
                key.into(),
                options,
                body,
                props,
            )
            .await?
            .await?;
        // An unroutable message is acked by the broker but returned with it.
        if !confirm.is_ack() || confirm.take_message().is_some() {
            return Err(Error::NotConfirmed);
        }
        Ok(())
    }

    pub async fn close(self) -> Result<(), Error> {
        self.connection.close(200, "done".into()).await?;
        Ok(())
    }
}

/// A queue of its own on the events exchange, read for one challenge.
pub struct Events {
    _channel: Channel,
    consumer: lapin::Consumer,
    challenge_id: String,
}

impl Events {
    /// The challenge's first terminal event.
    pub async fn terminal(&mut self, within: Duration) -> Result<serde_json::Value, Error> {
        let id = self.challenge_id.clone();
        let wait = async {
            while let Some(delivery) = self.consumer.next().await {
                let delivery = delivery?;
                let Ok(event) = serde_json::from_slice::<serde_json::Value>(&delivery.data) else {
                    continue;
                };
                let state = event["state"].as_str().unwrap_or_default();
                if event["challenge_id"] == id.as_str() && TERMINAL.contains(&state) {
                    return Ok(event);
                }
            }
            Err(Error::Closed)
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| Error::Timeout(id.clone()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_the_time_the_type_and_the_body() {
        let s = sign(b"{}", "k1", b"secret", "", 1_700_000_000);
        assert!(s.starts_with("t=1700000000,kid=k1,v2="), "{s}");
        assert_ne!(s, sign(b"{}", "k1", b"secret", "verified", 1_700_000_000));
        assert_ne!(s, sign(b"{ }", "k1", b"secret", "", 1_700_000_000));
    }

    #[test]
    fn a_job_leaves_out_what_it_does_not_have() {
        let job = serde_json::to_value(Job::new("sms", "+14155550123", "271828", "a")).unwrap();
        assert_eq!(job["version"], 1);
        assert!(job.get("locale").is_none() && job.get("metadata").is_none());
    }
}
