//! The store's vocabulary, shared by its modules and its callers: what a job records, who
//! owns a challenge, what a claim finds. Kept apart so that no store module imports another
//! that imports it back.

use crate::domain::{ChallengeId, Counter, Outcome, Refusal};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// What a newly arrived, valid job records before any work is done.
pub struct NewDelivery<'a> {
    pub challenge_id: &'a str,
    pub account_id: &'a str,
    pub channel: &'a str,
    pub destination_masked: &'a str,
    pub destination_hmac: &'a [u8],
    pub locale: Option<&'a str>,
    pub template: &'a str,
    pub expires_at: DateTime<Utc>,
    /// The phone's country and number range (for conversion tracking); None for email.
    pub country: Option<&'a str>,
    pub prefix: Option<&'a str>,
}

/// The result of trying to take ownership of a challenge.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First sight of this challenge: it is now `received` and ours, with its limits judged
    /// in the same commit when the claim offered them.
    New(Verdict),
    /// An earlier owner's lease ran out before it finished. `call_in_flight` when that owner
    /// had started a provider call whose outcome was never recorded (a new doubt, to record);
    /// `doubted` when an in-doubt call was already recorded for this challenge; `admitted`
    /// when the challenge already passed its limits (it is not counted again).
    TakenOver {
        attempt: i32,
        call_in_flight: bool,
        doubted: bool,
        admitted: bool,
    },
    /// The challenge already reached its outcome. `event_published` is set by the terminal
    /// commit itself: the job that committed it publishes the event before its message is
    /// acked, and if it never gets there the broker redelivers that message, whose copy
    /// publishes it again. False only on rows from before that rule, whose event may never
    /// have been confirmed.
    Done {
        outcome: Outcome<'static>,
        event_published: bool,
    },
    /// Another worker holds a live lease on it.
    Busy { lease_until: DateTime<Utc> },
}

/// What the claim of a new challenge decided about its limits.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its counters were taken and it is marked admitted.
    Admitted,
    /// A limit refused it; nothing was taken.
    Refused(Refusal),
    /// The claim did not judge it: the caller admits it (`Store::admit`) or ends it.
    Unjudged,
}

/// A refused job whose challenge_id could be read.
pub struct Rejected<'a> {
    pub challenge_id: &'a ChallengeId,
    pub reason: &'a str,
    pub detail: &'a str,
}

/// The current owner of a challenge: its id and the token its claim drew.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub id: &'a str,
    pub token: i64,
}

/// A limit counter's identity: (rule, key).
pub type Key = (String, String);

/// Judges one job's counters (in the order of its keys) at the database's clock: their new
/// states, or why the job is refused. Called once per attempt to admit, possibly again if a
/// batch is retried, so it must not have effects beyond the refusal cache's.
pub type Decide =
    Arc<dyn Fn(&[Counter], DateTime<Utc>) -> Result<Vec<Counter>, Refusal> + Send + Sync>;

/// The limits a new challenge is to be admitted by, in its claim's commit.
#[derive(Clone)]
pub struct Admit {
    /// Counters to take, (rule, key), in the order `decide` expects; empty when no limit
    /// applies.
    pub keys: Vec<Key>,
    pub decide: Decide,
}
