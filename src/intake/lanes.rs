//! The lanes of one session: each lane's consumer channel, its acks and its jobs in hand.
//!
//! A lane consumes its own queue on a channel of its own, so its prefetch is its own and the
//! broker never holds one lane's jobs behind another's. Of the jobs in hand, at most the lane's
//! `max_in_flight` are worked on at once, chosen round-robin across accounts (`fair.rs`); the
//! rest wait, unacked, in this session's memory, and are dropped unacked (so redelivered) when
//! the session ends.

use super::acks::Acks;
use super::fair::FairQueue;
use crate::amqp;
use crate::config::Lane;
use crate::metrics::{LaneLabels, Metrics};
use lapin::message::Delivery;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use prometheus_client::metrics::gauge::Gauge;
use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The longest account id fair sharing keys on; a longer one is cut (the job itself is judged
/// by `Job::parse`, which refuses it).
const ACCOUNT_KEY_BYTES: usize = 64;

pub(super) struct LaneRun {
    pub lane: Lane,
    pub channel: lapin::Channel,
    pub consumer_tag: String,
    pub acks: Acks,
    jobs: Mutex<FairQueue<Delivery>>,
    /// Whether jobs in hand can outnumber the lane's slots; if not, every job starts as it
    /// arrives and there is nothing to share.
    pub shared: bool,
    ended: AtomicBool,
    /// `otpd_lane_waiting` of this lane, resolved once rather than looked up per job.
    waiting: Gauge,
}

impl LaneRun {
    /// Opens the lane's channel with its prefetch and starts consuming its queue.
    pub async fn open(
        connection: &Connection,
        lane: Lane,
        tag: &str,
        metrics: &Metrics,
    ) -> Result<(LaneRun, Consumer), lapin::Error> {
        let channel = amqp::consumer_channel(connection, lane.prefetch).await?;
        let consumer_tag = format!("{tag}-{}", lane.name);
        let consumer = channel
            .basic_consume(
                lane.queue.as_str().into(),
                consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let labels = LaneLabels {
            lane: lane.name.clone(),
        };
        let waiting = metrics.lane_waiting.get_or_create(&labels).clone();
        let run = LaneRun {
            waiting,
            jobs: Mutex::new(FairQueue::new(lane.max_in_flight, lane.account_cap)),
            shared: lane.max_in_flight < u32::from(lane.prefetch),
            acks: Acks::start(channel.clone()),
            lane,
            channel,
            consumer_tag,
            ended: AtomicBool::new(false),
        };
        Ok((run, consumer))
    }

    /// Takes a delivery into the lane's hand.
    pub fn hold(&self, account: &str, delivery: Delivery) {
        let mut queue = self.queue();
        queue.push(account, delivery);
        self.waiting.set(queue.waiting() as i64);
    }

    /// The next job to start, if a slot is free and the session goes on.
    pub fn next(&self) -> Option<(Box<str>, Delivery)> {
        if self.ended.load(Ordering::Acquire) {
            return None;
        }
        let mut queue = self.queue();
        let next = queue.next();
        self.waiting.set(queue.waiting() as i64);
        next
    }

    /// A job that [`next`](Self::next) gave has finished.
    pub fn done(&self, account: &str) {
        self.queue().done(account);
    }

    /// The session is ending: nothing more starts, and jobs not started are let go.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.queue().clear_waiting();
        self.waiting.set(0);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, FairQueue<Delivery>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a job says about where it belongs, read before it is parsed: whose it is, for fair
/// sharing, and the lane it names. A hint only: `Job::parse` judges the job, and a body this
/// cannot read is shared as the account "" and worked where it came.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Peek {
    pub account: String,
    pub lane: Option<String>,
}

pub(super) fn peek(body: &[u8]) -> Peek {
    #[derive(serde::Deserialize)]
    struct Fields<'a> {
        #[serde(borrow, default)]
        account_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        lane: Option<Cow<'a, str>>,
    }
    let Ok(fields) = serde_json::from_slice::<Fields>(body) else {
        return Peek::default();
    };
    let mut account = fields.account_id.unwrap_or_default().into_owned();
    if account.len() > ACCOUNT_KEY_BYTES {
        let mut end = ACCOUNT_KEY_BYTES;
        while !account.is_char_boundary(end) {
            end -= 1;
        }
        account.truncate(end);
    }
    Peek {
        account,
        lane: fields.lane.map(Cow::into_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::{Peek, peek};

    #[test]
    fn a_peek_reads_the_account_and_lane_and_never_fails() {
        let p = peek(br#"{"account_id":"acct-1","lane":"bulk","code":"1"}"#);
        assert_eq!(
            p,
            Peek {
                account: "acct-1".into(),
                lane: Some("bulk".into())
            }
        );
        assert_eq!(peek(b"not json"), Peek::default());
        assert_eq!(peek(br#"{"account_id":7}"#), Peek::default());
        let long = format!(r#"{{"account_id":"{}"}}"#, "é".repeat(100));
        assert!(peek(long.as_bytes()).account.len() <= super::ACCOUNT_KEY_BYTES);
    }
}
