//! The dev-only kit that the integration tests, the benchmark and the fault suite share:
//! names of their own for every run (`names`), otpd as a child process (`child`), and a fake
//! Twilio on loopback (`twilio`). Each includes it with `#[path]`, so it compiles against
//! the same `otpd` crate as its includer. Not every includer uses every part.
#![allow(dead_code)]

pub mod child;
pub mod names;
pub mod twilio;
