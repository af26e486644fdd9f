//! Acknowledgements with `multiple`: one frame for a run of finished jobs.
//!
//! RabbitMQ pays far more for an ack frame than for a message's share of a `multiple` ack: a
//! quorum queue settles every ack through its log, so acking each message caps a consumer well
//! below what it reaches acking runs (docs/performance.md).
//! So a finished job hands its delivery tag to its session's [`Acks`] task, which every
//! [`FLUSH`] acks the run of consecutive finished tags with one `multiple` frame. Jobs finish out
//! of order: a finished tag waiting behind a slower job (a retry, a stalled provider) is acked on
//! its own after [`HOLD`], so that one slow job does not pin the prefetch slots behind it.
//!
//! Tags of a channel are consecutive from 1, and a tag reaches this module only once its job
//! may be acked (its outcome committed, or its dead-letter copy confirmed). A tag is never acked
//! twice, which the broker would punish by closing the channel: a `multiple` frame names the
//! highest tag of its run that was not acked on its own.

use lapin::Channel;
use lapin::options::BasicAckOptions;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long finished tags gather before their ack frame: a few milliseconds more of a prefetch
/// slot, against one frame per run instead of one per job.
pub const FLUSH: Duration = Duration::from_millis(5);
/// How long a finished tag waits for the slower jobs before it to finish before it is acked on
/// its own.
pub const HOLD: Duration = Duration::from_millis(100);

enum Message {
    Finished(u64),
    /// Ack everything finished, then stop (the session is ending).
    Stop(oneshot::Sender<()>),
}

/// The ack queue of one consumer channel. Handles of an ended session ack nothing: their task
/// has stopped, and their tags are redelivered by the broker.
#[derive(Clone)]
pub struct Acks {
    queue: mpsc::UnboundedSender<Message>,
}

impl Acks {
    /// Starts the task that acks on `channel`.
    pub fn start(channel: Channel) -> Acks {
        let (queue, messages) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, messages));
        Acks { queue }
    }

    /// The job of delivery `tag` may be acked.
    pub fn finished(&self, tag: u64) {
        let _ = self.queue.send(Message::Finished(tag));
    }

    /// Acks every tag already finished and stops; returns once their frames are sent.
    pub async fn flush_and_stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.queue.send(Message::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }
}

async fn run(channel: Channel, mut messages: mpsc::UnboundedReceiver<Message>) {
    let mut pending = Pending::default();
    let mut stop = None;
    while stop.is_none() {
        let wake = pending.next_wake();
        tokio::select! {
            message = messages.recv() => match message {
                Some(Message::Finished(tag)) => pending.finished(tag, Instant::now()),
                Some(Message::Stop(done)) => stop = Some(done),
                None => return,
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
        let frames = match stop {
            Some(_) => pending.all(),
            None => pending.due(Instant::now()),
        };
        for (tag, multiple) in frames {
            if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                // The channel is closing: the broker redelivers these jobs, and deduplication
                // acks them without sending again.
                tracing::warn!(error = %e, "ack failed; the jobs will be redelivered and deduplicated");
                return;
            }
        }
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Finished tags not yet acked, and the pure decision of which frames to send.
#[derive(Debug, Default)]
struct Pending {
    /// Every tag up to this one is finished (and acked, or in a frame being sent).
    through: u64,
    /// Finished tags above `through`: when each finished and whether it was acked on its own.
    waiting: BTreeMap<u64, (Instant, bool)>,
    /// Since when finished tags have waited unacked (the flush timer's start).
    since: Option<Instant>,
}

impl Pending {
    fn finished(&mut self, tag: u64, now: Instant) {
        if tag > self.through {
            self.waiting.insert(tag, (now, false));
            self.since.get_or_insert(now);
        }
    }

    /// When to look again: the next flush while anything finished is unacked (holds are
    /// checked at flushes, to within [`FLUSH`]).
    fn next_wake(&self) -> Option<Instant> {
        self.since.map(|t| t + FLUSH)
    }

    /// The frames due at `now`: once [`FLUSH`] has passed since the oldest unacked tag
    /// finished, the run of consecutive tags, and the tags held longer than [`HOLD`] alone.
    fn due(&mut self, now: Instant) -> Vec<(u64, bool)> {
        if self.since.is_none_or(|t| now < t + FLUSH) {
            return Vec::new();
        }
        let mut frames: Vec<(u64, bool)> = self.run().into_iter().collect();
        for (tag, (at, acked)) in self.waiting.iter_mut() {
            if !*acked && now >= *at + HOLD {
                *acked = true;
                frames.push((*tag, false));
            }
        }
        let unacked = self.waiting.values().any(|(_, acked)| !acked);
        self.since = unacked.then_some(now);
        frames
    }

    /// Every frame that acks what has finished, run and stragglers alike.
    fn all(&mut self) -> Vec<(u64, bool)> {
        let mut frames: Vec<(u64, bool)> = self.run().into_iter().collect();
        for (tag, (_, acked)) in std::mem::take(&mut self.waiting) {
            if !acked {
                frames.push((tag, false));
            }
        }
        self.since = None;
        frames
    }

    /// Takes the run of consecutive finished tags after `through`; returns the `multiple`
    /// frame that acks it, naming its highest tag not acked on its own (none if all were).
    fn run(&mut self) -> Option<(u64, bool)> {
        let mut last = None;
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.through + 1 {
                break;
            }
            let (tag, (_, acked)) = entry.remove_entry();
            self.through = tag;
            if !acked {
                last = Some(tag);
            }
        }
        last.map(|tag| (tag, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn a_run_of_finished_tags_is_one_multiple_ack_after_the_flush_delay() {
        let mut p = Pending::default();
        for tag in [2, 1, 3] {
            p.finished(tag, at(0));
        }
        assert_eq!(p.due(at(1)), [], "nothing before the flush delay");
        assert_eq!(p.next_wake(), Some(at(0) + FLUSH));
        assert_eq!(p.due(at(5)), [(3, true)]);
        assert_eq!(p.through, 3);
        assert_eq!(p.next_wake(), None);
    }

    #[test]
    fn a_tag_behind_a_slow_job_is_acked_alone_after_the_hold_and_never_again() {
        let mut p = Pending::default();
        p.finished(1, at(0));
        p.finished(3, at(0)); // 2 is still working
        p.finished(4, at(0));
        assert_eq!(p.due(at(5)), [(1, true)]);
        assert_eq!(p.due(at(50)), []);
        assert_eq!(p.due(at(100)), [(3, false), (4, false)]);
        // 2 finishes: the run 2..=4 is acked by naming 2, the only one not yet acked.
        p.finished(2, at(120));
        assert_eq!(p.due(at(125)), [(2, true)]);
        assert_eq!(p.through, 4);
        assert!(p.waiting.is_empty());
    }

    #[test]
    fn a_run_whose_tags_were_all_acked_alone_needs_no_frame() {
        let mut p = Pending::default();
        p.finished(2, at(0));
        assert_eq!(p.due(at(100)), [(2, false)]);
        p.finished(1, at(0));
        assert_eq!(p.due(at(200)), [(1, true)]);
        p.finished(3, at(200));
        // Tag 3 starts a fresh run; nothing below it is left.
        assert_eq!(p.due(at(205)), [(3, true)]);
    }

    #[test]
    fn stopping_acks_every_finished_tag_and_skips_the_unfinished() {
        let mut p = Pending::default();
        for tag in [1, 2, 4, 6] {
            p.finished(tag, at(0));
        }
        assert_eq!(p.all(), [(2, true), (4, false), (6, false)]);
        assert!(p.waiting.is_empty());
    }
}
