//! otpd: an OTP delivery gateway.
//!
//! Identity services publish send-code jobs to RabbitMQ; otpd validates each one, deduplicates
//! it by challenge_id, applies limits, renders the message, delivers it through a provider
//! (Twilio, SMTP, SMPP, a vendor's HTTP API described in config, or the development `log`
//! provider), records its fate in PostgreSQL and publishes status events. Data flows one way:
//!
//! ```text
//! intake ──► dispatch ──► limits
//!                    ├──► templates ──► render
//!                    ├──► providers (twilio, smtp, smpp, http, whatsapp, log)
//!                    ├──► store (PostgreSQL)
//!                    └──► events (status events, dead letters)
//! http (webhooks) ──► receipts ──► store, events
//! health ──► store, providers (standings), events (alerts)
//! ```
//!
//! - [`domain`]: the job contract and the newtypes it is parsed into (`PhoneNumber`,
//!   `EmailAddress`, `OtpCode`, …), and the reason codes (`RejectReason`, `FailReason`).
//!   Everything from outside is parsed here once.
//! - [`intake`]: the AMQP consumer. The only module that sees delivery tags; it acks only what
//!   dispatch says is committed.
//! - [`dispatch`]: one job from bytes to a committed outcome: claim, limits, attempts, retries.
//! - [`background`]: conversion tracking and limiter housekeeping, beside the jobs.
//! - [`health`]: delivery-health routing: providers whose receipts say their messages do not
//!   arrive move down their chains per country, and drift back.
//! - [`retry`]: the pure retry policy (capped exponential backoff, full jitter, expiry).
//! - [`limits`]: per-destination and per-account rate limits.
//! - [`templates`]: localised minijinja templates, checked with a sample at start-up;
//!   [`render`]: the rendered message of each channel; [`segments`]: what an SMS costs.
//! - [`providers`]: delivery to vendors; they never touch the store or the broker.
//! - [`store`]: PostgreSQL: the per-challenge state and the append-only audit trail.
//! - [`events`]: status events and dead-lettering, with publisher confirms.
//! - [`amqp`]: connection and topology.
//! - [`http`]: health, readiness, metrics, the status page, the admin API and provider
//!   webhooks; [`metrics`]: every metric name.
//! - [`receipts`]: provider delivery receipts, applied once to `sent` deliveries.
//! - [`views`]: read models for the admin API, `/status` and `otpd report`.
//! - [`audit`]: the hash-chained audit trail: its sealer, verification and retention, over the
//!   store's database; [`report`]: `otpd report`.
//! - [`watchdog`]: systemd watchdog pings, each after a real `/healthz` round trip.
//! - [`config`]: layered settings with field checks; [`telemetry`]: logging; [`app`]: the
//!   wiring, and `app::compile`, which builds templates and providers for start-up and
//!   `otpd check-config` alike.
//!
//! No module names one that names it back (`tests/it/layering.rs`). See ARCHITECTURE.md for
//! the invariants.

pub mod amqp;
pub mod app;
pub mod audit;
pub mod background;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod health;
pub mod http;
pub mod intake;
pub mod limits;
pub mod metrics;
pub mod providers;
pub mod receipts;
pub mod render;
pub mod report;
pub mod retry;
pub mod segments;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod views;
pub mod watchdog;
