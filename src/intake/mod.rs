//! Intake: the only part of otpd that sees AMQP deliveries and their tags.
//!
//! It keeps one connection alive (reconnecting with capped, jittered backoff; each session's
//! setup is bounded by `amqp.setup_timeout_ms`, since lapin's handshake is not), consumes each
//! lane's queue with manual acks and the lane's prefetch (`lanes.rs`), starts the jobs in hand
//! as the lane's slots and its accounts' shares allow (`fair.rs`), runs each through the
//! dispatcher in its own task, and acks, dead-letters or abandons the message as the
//! dispatcher says (`handle.rs`). Acks go
//! out in runs with `multiple` (`acks.rs`). Tags of a dead channel are never acked: each
//! session has its own ack task, and an ack on a closed channel fails harmlessly while the
//! broker redelivers the job.

mod acks;
mod fair;
mod handle;
mod lanes;
mod liveness;

pub use liveness::Liveness;

use crate::amqp;
use crate::config::{AmqpSettings, Lane};
use crate::dispatch::{Dispatcher, Ending};
use crate::domain::RejectReason;
use crate::events::Publisher;
use crate::metrics::Metrics;
use backon::BackoffBuilder;
use futures_util::StreamExt;
use lanes::LaneRun;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;
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
    /// Every lane, the default first (`AmqpSettings::lanes`).
    pub lanes: Vec<Lane>,
}

/// What a job's task needs of its session.
#[derive(Clone)]
struct Ctx {
    failing: CancellationToken,
    shutdown: CancellationToken,
    jobs: TaskTracker,
}

/// Every lane's deliveries, tagged with the lane's index; `None` when its consumer ended.
type Deliveries = futures_util::stream::SelectAll<
    futures_util::stream::BoxStream<'static, (usize, Option<Result<Delivery, lapin::Error>>)>,
>;

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

    /// Connects, declares the topology, opens the publishing channel and each lane's consuming
    /// channel, and starts consuming. Unbounded in itself: `session` bounds it.
    async fn open(
        &self,
        tag: &str,
    ) -> Result<(Connection, Vec<Arc<LaneRun>>, Deliveries), SessionEnd> {
        let s = &self.settings;
        let connection = amqp::connect(s).await?;
        let setup = connection.create_channel().await?;
        amqp::declare_topology(&setup, s).await?;
        let _ = setup.close(200, "topology declared".into()).await;
        self.publisher
            .set_channel(Some(amqp::publisher_channel(&connection).await?));
        let mut runs = Vec::new();
        let mut consumers = Vec::new();
        for lane in &self.lanes {
            let (run, consumer) =
                LaneRun::open(&connection, lane.clone(), tag, &self.metrics).await?;
            runs.push(Arc::new(run));
            // Each lane's stream ends with `None`, so that one consumer ended by the broker
            // ends the session rather than silently leaving its lane unconsumed.
            let i = consumers.len();
            consumers.push(
                consumer
                    .map(move |d| (i, Some(d)))
                    .chain(futures_util::stream::once(async move { (i, None) }))
                    .boxed(),
            );
        }
        Ok((
            connection,
            runs,
            futures_util::stream::select_all(consumers),
        ))
    }

    /// One connection's life. On shutdown it drains the jobs in flight and returns the
    /// connection to close (`None` if shutdown came before the session was set up); otherwise
    /// the error that ended it. Sets `consumed` once the consumers are running.
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
        let (connection, runs, mut deliveries) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            opened = tokio::time::timeout(limit, self.open(&tag)) => {
                opened.map_err(|_| SessionEnd::SetupTimedOut(limit))??
            }
        };
        // Ended by a job of this session that could not publish. Each session has its own: a
        // job of an old session that fails (its channel is gone) must not end the next one,
        // or a reconnect after an outage could be undone again and again by the jobs that
        // the outage itself interrupted.
        let ctx = Ctx {
            failing: CancellationToken::new(),
            shutdown: shutdown.clone(),
            jobs: jobs.clone(),
        };
        for run in &runs {
            let l = &run.lane;
            tracing::info!(lane = %l.name, queue = %l.queue, prefetch = l.prefetch, max_in_flight = l.max_in_flight, "consuming jobs");
        }
        // systemd's READY=1, sent on every (re)connection; systemd ignores repeats.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        *consumed = true;
        let ended = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = ctx.failing.cancelled() => break Err(SessionEnd::Requested),
                next = deliveries.next() => match next {
                    Some((i, Some(Ok(delivery)))) => {
                        // While PostgreSQL is down, start nothing: this delivery and the rest of
                        // the prefetch wait unacked. (On shutdown it is dropped unacked.)
                        if !self.dispatcher.ready_for_work().await {
                            continue;
                        }
                        self.take(&runs, i, delivery, &ctx);
                    }
                    Some((_, Some(Err(e)))) => break Err(e.into()),
                    Some((_, None)) | None => break Err(SessionEnd::ConsumerEnded),
                },
            }
        };
        // Nothing more starts on this session; jobs in hand that had not started go back to
        // the broker with the channel.
        for run in &runs {
            run.end();
        }
        if let Err(e) = ended {
            bounded(connection.close(320, "otpd reconnecting".into())).await;
            return Err(e);
        }
        // Stop the broker pushing more jobs, and let those in flight finish while the channels
        // are still open: their acks go out on them. (lapin closes a channel when its last
        // handle is dropped, so the drain must happen here.)
        for run in &runs {
            let tag = run.consumer_tag.as_str().into();
            let _ = run
                .channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await;
        }
        self.drain(jobs).await;
        for run in &runs {
            run.acks.flush_and_stop().await;
            bounded(run.channel.close(200, "otpd shutting down".into())).await;
        }
        Ok(Some(connection))
    }

    /// Takes a delivery of lane `i` into hand: moves it to the lane its `lane` field names, or
    /// holds it in its own lane and starts what may start.
    fn take(self: &Arc<Self>, runs: &[Arc<LaneRun>], i: usize, delivery: Delivery, ctx: &Ctx) {
        let run = &runs[i];
        // The body is read early only where its account or lane can change what happens.
        let peek = match runs.len() > 1 || run.shared {
            true => lanes::peek(&delivery.data),
            false => lanes::Peek::default(),
        };
        let named = peek.lane.as_deref().filter(|l| *l != run.lane.name);
        match named.and_then(|l| runs.iter().find(|r| r.lane.name == l)) {
            Some(to) => self.forward(run, delivery, to.lane.queue.clone(), ctx),
            None => {
                run.hold(&peek.account, delivery);
                self.start_ready(run, ctx);
            }
        }
    }

    /// Starts the lane's jobs that may start now; each, when it finishes, starts the next.
    fn start_ready(self: &Arc<Self>, run: &Arc<LaneRun>, ctx: &Ctx) {
        while let Some((account, delivery)) = run.next() {
            let (me, run, ctx2) = (Arc::clone(self), Arc::clone(run), ctx.clone());
            ctx.jobs.spawn(async move {
                me.handle(delivery, &run.acks, &ctx2.failing, &ctx2.shutdown)
                    .await;
                run.done(&account);
                me.start_ready(&run, &ctx2);
            });
        }
    }

    /// A job whose `lane` field names another lane goes to that lane's queue as it came, and is
    /// acked here once the broker has the copy.
    fn forward(self: &Arc<Self>, run: &Arc<LaneRun>, delivery: Delivery, queue: String, ctx: &Ctx) {
        let (me, run, ctx) = (Arc::clone(self), Arc::clone(run), ctx.clone());
        ctx.jobs.clone().spawn(async move {
            let forwarded = me.publisher.forward(&delivery.data, &delivery.properties, &queue);
            match forwarded.await {
                Ok(()) => run.acks.finished(delivery.delivery_tag),
                Err(e) => {
                    tracing::warn!(error = %e, "could not move a job to its lane; leaving it for redelivery");
                    if !ctx.shutdown.is_cancelled() {
                        ctx.failing.cancel();
                    }
                }
            }
        });
    }
}

/// Awaits a best-effort close for at most `CLOSE_TIMEOUT`; its result does not matter (the
/// peer may be gone).
async fn bounded<T>(close: impl Future<Output = T>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}
