//! Intake: the only part of otpd that sees AMQP deliveries and their tags.
//!
//! It keeps one connection alive (reconnecting with capped, jittered backoff; each session's
//! setup is bounded by `amqp.setup_timeout_ms`, since lapin's handshake is not), consumes the
//! jobs queue with manual acks and a bounded prefetch, runs each job through the dispatcher in
//! its own task, and acks, dead-letters or abandons the message as the dispatcher says. Acks go
//! out in runs with `multiple` (`acks.rs`). Tags of a dead channel are never acked: each
//! session has its own ack task, and an ack on a closed channel fails harmlessly while the
//! broker redelivers the job.

mod acks;
mod liveness;

pub use liveness::Liveness;

use crate::amqp;
use crate::config::AmqpSettings;
use crate::dispatch::{Dispatcher, Disposition, Ending, Inbound, SIGNATURE_HEADER};
use crate::domain::{Channel, RejectReason};
use crate::events::{Publisher, STEP_HEADER, STEP_MAC_HEADER};
use crate::metrics::{ChannelLabels, Metrics};
use acks::Acks;
use backon::BackoffBuilder;
use futures_util::StreamExt;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What happened to one message, broadcast for observers (tests, future admin views).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Acked(Ending),
    DeadLettered(RejectReason),
    Abandoned,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub challenge_id: Option<String>,
    pub handled: Handled,
}

pub struct Intake {
    pub settings: AmqpSettings,
    pub dispatcher: Arc<Dispatcher>,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub reports: broadcast::Sender<Report>,
    pub drain_timeout: Duration,
    pub liveness: Arc<Liveness>,
}

/// How long a best-effort close of a channel or connection may take before it is abandoned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session ended other than by shutdown.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("{0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker ended the consumer")]
    ConsumerEnded,
    #[error("a job could not publish; rebuilding the connection")]
    Requested,
    #[error("the broker did not complete the session's setup within {0:?}")]
    SetupTimedOut(Duration),
}

impl Intake {
    /// Runs until `shutdown` is cancelled, then drains in-flight jobs for up to the drain
    /// timeout and closes the connection; whatever did not finish is redelivered by the broker.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let jobs = TaskTracker::new();
        let mut backoff = self.backoff();
        loop {
            let mut consumed = false;
            let result = self.session(&shutdown, &jobs, &mut consumed).await;
            if let Some(channel) = self.publisher.take_channel() {
                bounded(channel.close(200, "otpd session ended".into())).await;
            }
            match result {
                Ok(Some(connection)) => {
                    bounded(connection.close(200, "otpd shutting down".into())).await;
                    return;
                }
                Ok(None) => {
                    // Shut down before the session was set up: no job ran on it.
                    self.drain(&jobs).await;
                    return;
                }
                Err(e) => {
                    // A session that got as far as consuming was healthy: start backing off
                    // from the shortest delay again.
                    if consumed {
                        backoff = self.backoff();
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "AMQP session ended; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => { self.drain(&jobs).await; return; }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_millis(
                self.settings.reconnect_max_delay_ms.max(200),
            ))
            .with_jitter()
            .without_max_times()
            .build()
    }

    async fn drain(&self, jobs: &TaskTracker) {
        jobs.close();
        if tokio::time::timeout(self.drain_timeout, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = jobs.len(),
                "drain deadline passed; unfinished jobs stay unacked for redelivery"
            );
        }
    }

    /// Connects, declares the topology, opens the publishing and consuming channels and starts
    /// consuming. Unbounded in itself: `session` bounds it.
    async fn open(
        &self,
        tag: &str,
    ) -> Result<(Connection, lapin::Channel, lapin::Consumer), SessionEnd> {
        let s = &self.settings;
        let connection = amqp::connect(s).await?;
        let setup = connection.create_channel().await?;
        amqp::declare_topology(&setup, s).await?;
        let _ = setup.close(200, "topology declared".into()).await;
        self.publisher
            .set_channel(Some(amqp::publisher_channel(&connection).await?));
        let channel = amqp::consumer_channel(&connection, s.prefetch).await?;
        let consumer = channel
            .basic_consume(
                s.jobs_queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel, consumer))
    }

    /// One connection's life. On shutdown it drains the jobs in flight and returns the
    /// connection to close (`None` if shutdown came before the session was set up); otherwise
    /// the error that ended it. Sets `consumed` once the consumer is running.
    async fn session(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        jobs: &TaskTracker,
        consumed: &mut bool,
    ) -> Result<Option<Connection>, SessionEnd> {
        let s = &self.settings;
        let tag = format!("otpd-{}", std::process::id());
        // lapin's handshake has no timeout of its own: a broker that accepts the connection
        // and never answers (one wedged, or half up) would otherwise stop consumption for good.
        let limit = Duration::from_millis(s.setup_timeout_ms);
        let (connection, channel, mut consumer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            opened = tokio::time::timeout(limit, self.open(&tag)) => {
                opened.map_err(|_| SessionEnd::SetupTimedOut(limit))??
            }
        };
        let acks = Acks::start(channel.clone());
        // Ended by a job of this session that could not publish. Each session has its own: a
        // job of an old session that fails (its channel is gone) must not end the next one,
        // or a reconnect after an outage could be undone again and again by the jobs that
        // the outage itself interrupted.
        let failing = CancellationToken::new();
        tracing::info!(queue = %s.jobs_queue, prefetch = s.prefetch, "consuming jobs");
        // systemd's READY=1, sent on every (re)connection; systemd ignores repeats.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        *consumed = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Stop the broker pushing more jobs, and let those in flight finish while
                    // this channel is still open: their acks go out on it. (lapin closes a
                    // channel when its last handle is dropped, so the drain must happen here.)
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    self.drain(jobs).await;
                    acks.flush_and_stop().await;
                    bounded(channel.close(200, "otpd shutting down".into())).await;
                    return Ok(Some(connection));
                }
                _ = failing.cancelled() => {
                    bounded(connection.close(320, "otpd reconnecting".into())).await;
                    return Err(SessionEnd::Requested);
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        // While PostgreSQL is down, start nothing: this delivery and the rest of
                        // the prefetch wait unacked. (On shutdown it is dropped unacked.)
                        if !self.dispatcher.ready_for_work().await {
                            continue;
                        }
                        let me = Arc::clone(self);
                        let failing = failing.clone();
                        let shutdown = shutdown.clone();
                        let acks = acks.clone();
                        jobs.spawn(async move { me.handle(delivery, &acks, &failing, &shutdown).await });
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(SessionEnd::ConsumerEnded),
                },
            }
        }
    }

    async fn handle(
        &self,
        delivery: Delivery,
        acks: &Acks,
        failing: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        self.metrics.in_flight.inc();
        self.liveness.started();
        self.observe_lag(&delivery);
        let signature = header_str(&delivery.properties, SIGNATURE_HEADER);
        let step = header_str(&delivery.properties, STEP_HEADER);
        let step_mac = header_str(&delivery.properties, STEP_MAC_HEADER);
        let inbound = Inbound {
            body: &delivery.data,
            signature: signature.as_deref(),
            kind: delivery.properties.kind().as_ref().map(|k| k.as_str()),
            redelivered: delivery.redelivered,
            step: step
                .as_deref()
                .map(|s| (s, step_mac.as_deref().unwrap_or_default())),
        };
        let processed = self.dispatcher.process(inbound).await;
        let handled = match processed.disposition {
            Disposition::Ack(outcome) => {
                acks.finished(delivery.delivery_tag);
                Handled::Acked(outcome)
            }
            Disposition::DeadLetter(rejection) => {
                // Boxed: rare, and it would otherwise enlarge every job's future.
                let dead_letter =
                    self.publisher
                        .dead_letter(&delivery.data, &delivery.properties, &rejection);
                match Box::pin(dead_letter).await {
                    Ok(()) => {
                        acks.finished(delivery.delivery_tag);
                        Handled::DeadLettered(rejection.reason)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not dead-letter a rejected job; leaving it for redelivery");
                        Handled::Abandoned
                    }
                }
            }
            Disposition::Abandon => Handled::Abandoned,
        };
        if handled == Handled::Abandoned && !shutdown.is_cancelled() {
            // The broker connection is failing: rebuild it, which also returns this job. (A
            // no-op if this job's session has already ended.)
            failing.cancel();
        }
        self.metrics.in_flight.dec();
        self.liveness.finished();
        let _ = self.reports.send(Report {
            challenge_id: processed.challenge_id,
            handled,
        });
    }
}

impl Intake {
    /// Queue lag from the AMQP `timestamp` property (whole seconds), for jobs that carry one and
    /// were routed by a known channel.
    fn observe_lag(&self, delivery: &Delivery) {
        let (Some(ts), Some(channel)) = (
            *delivery.properties.timestamp(),
            Channel::parse(delivery.routing_key.as_str()),
        ) else {
            return;
        };
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let labels = ChannelLabels {
            channel: channel.as_str(),
        };
        let lag = now.saturating_sub(ts) as f64;
        self.metrics.queue_lag.get_or_create(&labels).observe(lag);
    }
}

/// Awaits a best-effort close for at most `CLOSE_TIMEOUT`; its result does not matter (the
/// peer may be gone).
async fn bounded<T>(close: impl Future<Output = T>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

/// A string header of the message, if present and a string.
fn header_str(props: &lapin::BasicProperties, name: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}
