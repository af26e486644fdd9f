//! The fault suite's provider: the kit's fake Twilio with two accounts, `a` and `b`.

pub use crate::kit::twilio::{Fake, Mode, now_us, serve};
use std::sync::Arc;
use std::time::Instant;

pub const SID_A: &str = "AC0000000000000000000000000000000a";
pub const SID_B: &str = "AC0000000000000000000000000000000b";

/// A fake for `jobs` jobs (codes are job indexes) with both accounts healthy.
pub fn new(jobs: usize) -> Arc<Fake> {
    Fake::new(jobs, &[SID_A, SID_B], Instant::now())
}
