//! The bench's provider: the kit's fake Twilio with one account, answering at once or after
//! a fixed delay; it notes when the request for each job first arrived (the job's index is
//! its code).

pub use crate::kit::twilio::{Fake, serve};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn new(start: Instant, delay: Duration, jobs: usize) -> Arc<Fake> {
    let fake = Fake::new(jobs, &[super::child::SID], start);
    fake.account(super::child::SID).set_delay(delay);
    fake
}
