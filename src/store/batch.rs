//! Group commit: the hot writes of many jobs, run as one statement per batch.
//!
//! Every job makes the same few writes (the claim or the open transaction, the start of an
//! attempt, the terminal commit). As statements of their own they cost a round trip, a plan
//! and a WAL flush each, and under a storm PostgreSQL spends its CPU on that overhead rather
//! than on rows. A [`Batcher`] per kind of write takes each caller's request over a channel;
//! one task gathers whatever requests are waiting, up to [`MAX_BATCH`], runs them as one
//! statement over UNNEST'ed arrays and answers every caller. At most
//! [`Op::IN_FLIGHT`] batches of a kind run at once (more than one only once a queue has
//! formed), so the requests that arrive meanwhile form the next batch: there is no timer, a
//! lone request costs one round trip as before, and under load hundreds share one.
//!
//! A batch never holds two requests for one challenge (a statement may change a row only
//! once); the later one waits for the next batch. Requests are sorted by challenge so that
//! concurrent batches lock rows in the same order. A statement that fails for a reason other
//! than an outage is run again one request at a time, so one bad request fails alone.

use super::StoreError;
use futures_util::stream::{FuturesUnordered, StreamExt};
use sqlx::PgPool;
use std::collections::VecDeque;
use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// The most requests in one statement: bounds the statement's size and a batch's latency.
pub(super) const MAX_BATCH: usize = 512;
/// Batches of one kind running at once (each on its own pooled connection), unless the kind
/// says otherwise.
pub(super) const IN_FLIGHT: usize = 2;
/// Requests waiting before a batch starts beside one already running.
const SECOND_BATCH_MIN: usize = 32;

/// One kind of write that can be batched.
pub(super) trait Op: Send + Sync + Sized + 'static {
    type Output: Send + 'static;

    /// Batches of this kind running at once. A kind whose statement is long (a transaction
    /// of several round trips) needs more, or its batches queue while the database's CPUs
    /// wait on the round trips.
    const IN_FLIGHT: usize = IN_FLIGHT;

    /// Requests waiting before a batch starts beside one already running. A kind whose
    /// callers hold something scarce while they wait (a provider's call slot) starts the next
    /// batch at once instead, since every millisecond it queues is a millisecond of that slot.
    const SECOND_BATCH_MIN: usize = SECOND_BATCH_MIN;

    /// The challenge the request writes to.
    fn key(&self) -> &str;

    /// Runs requests with distinct keys, sorted by key, as one statement; returns one output
    /// per request, in order.
    fn run(
        pool: &PgPool,
        batch: &[&Self],
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send;
}

struct Request<O: Op> {
    op: O,
    reply: oneshot::Sender<Result<O::Output, StoreError>>,
}

/// The queue of one kind of write; its task ends when the last handle is dropped, after
/// finishing what was submitted.
pub(super) struct Batcher<O: Op> {
    requests: mpsc::UnboundedSender<Request<O>>,
}

impl<O: Op> Batcher<O> {
    /// Starts the gathering task; needs a tokio runtime.
    pub fn start(pool: PgPool) -> Batcher<O> {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(gather(pool, queue));
        Batcher { requests }
    }

    /// Runs `op` in the next batch and returns its output. If the caller stops waiting, the
    /// write still happens (as a statement already sent would).
    pub async fn submit(&self, op: O) -> Result<O::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { op, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Gathers requests into batches and runs up to [`Op::IN_FLIGHT`] at once.
async fn gather<O: Op>(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Request<O>>) {
    let mut waiting: VecDeque<Request<O>> = VecDeque::new();
    let mut running = FuturesUnordered::new();
    let mut open = true;
    loop {
        while may_start(
            running.len(),
            waiting.len(),
            O::IN_FLIGHT,
            O::SECOND_BATCH_MIN,
        ) {
            running.push(execute(pool.clone(), take_batch(&mut waiting)));
        }
        if !open && running.is_empty() && waiting.is_empty() {
            return;
        }
        tokio::select! {
            received = queue.recv(), if open => match received {
                Some(request) => {
                    waiting.push_back(request);
                    while let Ok(request) = queue.try_recv() {
                        waiting.push_back(request);
                    }
                }
                None => open = false,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}

/// Whether to start a batch now, with `running` of at most `in_flight` batches under way and
/// `waiting` requests. The first starts at once; another only for a queue worth it. At a
/// modest rate a second batch of one or two rows would cost a statement, a commit and a
/// connection for no gain: those requests ride with the next batch a moment later instead,
/// and PostgreSQL spends its CPU on rows rather than on statements (docs/performance.md).
fn may_start(running: usize, waiting: usize, in_flight: usize, second_min: usize) -> bool {
    match running {
        0 => waiting > 0,
        r if r < in_flight => waiting >= second_min.max(1),
        _ => false,
    }
}

/// Takes up to [`MAX_BATCH`] of the oldest requests, sorted by key, one per key; a later
/// request for a key already taken goes back to the front of the queue, in order.
fn take_batch<O: Op>(waiting: &mut VecDeque<Request<O>>) -> Vec<Request<O>> {
    let n = waiting.len().min(MAX_BATCH);
    let mut taken: Vec<Request<O>> = waiting.drain(..n).collect();
    // Stable: among requests for one key, the oldest comes first and is the one kept.
    taken.sort_by(|a, b| a.op.key().cmp(b.op.key()));
    let mut batch: Vec<Request<O>> = Vec::with_capacity(taken.len());
    let mut again = Vec::new();
    for request in taken {
        match batch.last() {
            Some(last) if last.op.key() == request.op.key() => again.push(request),
            _ => batch.push(request),
        }
    }
    for request in again.into_iter().rev() {
        waiting.push_front(request);
    }
    batch
}

async fn execute<O: Op>(pool: PgPool, batch: Vec<Request<O>>) {
    let result = {
        let ops: Vec<&O> = batch.iter().map(|r| &r.op).collect();
        run_checked(&pool, &ops).await
    };
    match result {
        Ok(outputs) => {
            for (request, output) in batch.into_iter().zip(outputs) {
                let _ = request.reply.send(Ok(output));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(request) = batch.into_iter().next() {
                let _ = request.reply.send(Err(e));
            }
        }
        Err(e) if e.is_outage() => {
            let message = e.to_string();
            for request in batch {
                let _ = request.reply.send(Err(StoreError::Outage(message.clone())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = batch.len(), "a batched write failed; running its requests one by one");
            for request in batch {
                let output = run_checked(&pool, &[&request.op]).await;
                let _ = request
                    .reply
                    .send(output.and_then(|mut v| v.pop().ok_or(StoreError::BatchShape)));
            }
        }
    }
}

/// Runs a batch and checks that it answered every request.
async fn run_checked<O: Op>(pool: &PgPool, ops: &[&O]) -> Result<Vec<O::Output>, StoreError> {
    let outputs = O::run(pool, ops).await?;
    if outputs.len() == ops.len() {
        Ok(outputs)
    } else {
        Err(StoreError::BatchShape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Key(&'static str);

    impl Op for Key {
        type Output = ();
        fn key(&self) -> &str {
            self.0
        }
        async fn run(_: &PgPool, batch: &[&Self]) -> Result<Vec<()>, StoreError> {
            Ok(vec![(); batch.len()])
        }
    }

    fn queue(keys: &[&'static str]) -> VecDeque<Request<Key>> {
        keys.iter()
            .map(|k| Request {
                op: Key(k),
                reply: oneshot::channel().0,
            })
            .collect()
    }

    fn keys(requests: impl IntoIterator<Item = Request<Key>>) -> Vec<&'static str> {
        requests.into_iter().map(|r| r.op.0).collect()
    }

    #[test]
    fn a_batch_is_sorted_and_holds_one_request_per_key() {
        let mut waiting = queue(&["c", "a", "c", "b", "a", "c"]);
        assert_eq!(keys(take_batch(&mut waiting)), ["a", "b", "c"]);
        // The repeats wait, oldest first, and the next batch again takes one per key.
        let left: Vec<&str> = waiting.iter().map(|r| r.op.0).collect();
        assert_eq!(left, ["a", "c", "c"]);
        assert_eq!(keys(take_batch(&mut waiting)), ["a", "c"]);
        assert_eq!(keys(take_batch(&mut waiting)), ["c"]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_second_batch_runs_beside_the_first_only_for_a_queue() {
        assert!(!may_start(0, 0, 2, SECOND_BATCH_MIN));
        assert!(
            may_start(0, 1, 2, SECOND_BATCH_MIN),
            "a lone request goes at once"
        );
        assert!(
            !may_start(1, SECOND_BATCH_MIN - 1, 2, SECOND_BATCH_MIN),
            "a few wait for the next batch"
        );
        assert!(may_start(1, SECOND_BATCH_MIN, 2, SECOND_BATCH_MIN));
        assert!(!may_start(2, MAX_BATCH, 2, SECOND_BATCH_MIN));
        assert!(
            may_start(3, SECOND_BATCH_MIN, 4, SECOND_BATCH_MIN),
            "a kind may allow more"
        );
        assert!(!may_start(4, MAX_BATCH, 4, SECOND_BATCH_MIN));
        assert!(
            may_start(1, 1, 4, 1),
            "an eager kind starts a batch for one request"
        );
        assert!(!may_start(1, 0, 4, 0), "but never an empty one");
    }

    #[test]
    fn a_batch_takes_at_most_max_batch() {
        let many: Vec<&'static str> = (0..MAX_BATCH + 10)
            .map(|i| &*Box::leak(format!("{i:05}").into_boxed_str()))
            .collect();
        let mut waiting = queue(&many);
        assert_eq!(take_batch(&mut waiting).len(), MAX_BATCH);
        assert_eq!(waiting.len(), 10);
    }
}
