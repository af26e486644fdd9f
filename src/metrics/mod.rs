//! Every metric otpd exports, defined in one place. Label values come from closed sets
//! (channels, states, providers, reason codes), so series counts stay bounded.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

mod exposition;
mod labels;
mod process;
mod zero;

pub use exposition::Format;
pub use labels::*;

pub struct Metrics {
    registry: Registry,
    /// otpd_build_info{version,commit}: always 1; the labels say which build runs.
    pub build_info: Family<BuildLabels, Gauge>,
    /// Every registered metric's name, without the `otpd_` prefix or a `_total` suffix.
    names: Vec<&'static str>,
    /// otpd_jobs_total{channel,state}: jobs that reached a terminal state.
    pub jobs: Family<JobLabels, Counter>,
    /// otpd_jobs_rejected_total{reason}: invalid jobs dead-lettered.
    pub rejected: Family<ReasonLabels, Counter>,
    /// otpd_duplicates_total{channel}: jobs for an already-finished challenge, not sent again.
    pub duplicates: Family<ChannelLabels, Counter>,
    /// otpd_fallback_scheduled_total{channel}: fallback steps scheduled, by the step's channel.
    pub fallback_scheduled: Family<ChannelLabels, Counter>,
    /// otpd_in_doubt_total{channel}: provider calls whose outcome is unknown (a crash during
    /// the call, found on takeover, or a timeout after the request was sent).
    pub in_doubt: Family<ChannelLabels, Counter>,
    /// otpd_provider_breaker_state{provider}: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<ProviderNameLabels, Gauge>,
    /// otpd_provider_unusable_total{provider,reason}: provider-wide permanent errors (bad
    /// credentials, suspended account); each one opens the breaker. Alert on any increase.
    pub provider_unusable: Family<ProviderReasonLabels, Counter>,
    /// otpd_store_available: 1 while PostgreSQL answers, 0 while otpd holds new work back.
    pub store_available: Gauge,
    /// otpd_provider_attempts_total{provider,channel,result}.
    pub attempts: Family<AttemptLabels, Counter>,
    /// otpd_provider_latency_seconds{provider,channel}: duration of each provider call.
    pub provider_latency: Family<ProviderLabels, Histogram>,
    /// otpd_jobs_in_flight: deliveries being processed by this instance.
    pub in_flight: Gauge,
    /// otpd_lane_waiting{lane}: jobs in a lane's hand waiting for one of its slots.
    pub lane_waiting: Family<LaneLabels, Gauge>,
    /// otpd_provider_demotion{provider,country}: places a provider has been moved down its
    /// chains for a country by delivery-health routing; 0: in its configured place.
    pub provider_demotion: Family<SegmentLabels, Gauge>,
    /// otpd_limited_total{channel,reason,rule}: jobs refused by a limit, budget, geo
    /// permission or conversion block.
    pub limited: Family<LimitLabels, Counter>,
    /// otpd_spend_total{channel,country}: the configured price of every message sent.
    pub spend: Family<SpendLabels, Counter<f64, AtomicU64>>,
    /// otpd_signature_failures_total{reason,mode}: jobs whose signature was missing, forged
    /// or stale (dead-lettered in require mode, only counted in warn mode).
    pub signature_failures: Family<SignatureLabels, Counter>,
    /// otpd_verified_total: `verified` feedback messages for known challenges.
    pub verified: Counter,
    /// otpd_prefixes_flagged_total{mode}: number ranges flagged for low conversion.
    pub prefixes_flagged: Family<ModeLabels, Counter>,
    /// otpd_retries_total{provider,channel}: provider calls after a job's first.
    pub retries: Family<ProviderLabels, Counter>,
    /// otpd_in_doubt_resends_total{channel}: provider calls made while an earlier call of the
    /// same job is in doubt; each may have sent the code a second time.
    pub in_doubt_resends: Family<ChannelLabels, Counter>,
    /// otpd_receipts_total{provider,channel,country,state}: final provider receipts applied.
    pub receipts: Family<ReceiptLabels, Counter>,
    /// otpd_delivery_latency_seconds{provider,channel}: from the provider's acceptance to its
    /// `delivered` receipt.
    pub delivery_latency: Family<ProviderLabels, Histogram>,
    /// otpd_queue_lag_seconds{channel}: from the job's AMQP `timestamp` (when the publisher
    /// set one) to otpd's first look at it.
    pub queue_lag: Family<ChannelLabels, Histogram>,
    /// otpd_webhook_rejected_total{reason}: provider callbacks refused (bad signature).
    pub webhook_rejected: Family<ReasonLabels, Counter>,
    /// otpd_sms_segments_total{provider,country}: SMS segments providers accepted; what
    /// vendors bill. Countries as for [`SpendLabels`].
    pub sms_segments: Family<SegmentLabels, Counter>,
}

/// Carrier receipts take seconds to minutes; queue lag is seconds-resolution (AMQP timestamps).
fn slow_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0,
    ])
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Registers a metric and remembers its name, so that [`Metrics::names`] can list families
/// that have no series yet (the exposition shows only those with at least one).
fn reg(
    registry: &mut Registry,
    names: &mut Vec<&'static str>,
    name: &'static str,
    help: &'static str,
    metric: impl prometheus_client::registry::Metric,
) {
    names.push(name);
    registry.register(name, help, metric);
}

impl Metrics {
    /// The full name of every metric family, e.g. `otpd_jobs` (exposed as `otpd_jobs_total`).
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.names.iter().map(|n| format!("otpd_{n}"))
    }

    pub fn new() -> Metrics {
        // The standard process metrics go unprefixed beside otpd's own.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::Process));
        let otpd = registry.sub_registry_with_prefix("otpd");
        let mut names = Vec::new();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("OTPD_COMMIT"),
            })
            .set(1);
        reg(
            otpd,
            &mut names,
            "build_info",
            "The running build: its version and commit (always 1)",
            build_info.clone(),
        );
        let jobs = Family::default();
        let rejected = Family::default();
        let duplicates = Family::default();
        let fallback_scheduled = Family::default();
        let in_doubt = Family::default();
        let attempts = Family::default();
        let provider_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let in_flight = Gauge::default();
        let breaker_state = Family::default();
        let provider_unusable = Family::default();
        let store_available = Gauge::default();
        store_available.set(1);
        reg(
            otpd,
            &mut names,
            "jobs",
            "Jobs that reached a terminal state",
            jobs.clone(),
        );
        reg(
            otpd,
            &mut names,
            "jobs_rejected",
            "Invalid jobs dead-lettered, by reason",
            rejected.clone(),
        );
        reg(
            otpd,
            &mut names,
            "duplicates",
            "Jobs for an already-finished challenge, not sent again",
            duplicates.clone(),
        );
        reg(
            otpd,
            &mut names,
            "fallback_scheduled",
            "Fallback steps scheduled to fire after their delay, by the step's channel",
            fallback_scheduled.clone(),
        );
        reg(
            otpd,
            &mut names,
            "in_doubt",
            "Provider calls whose outcome is unknown: interrupted by a crash, or timed out",
            in_doubt.clone(),
        );
        reg(
            otpd,
            &mut names,
            "provider_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        reg(
            otpd,
            &mut names,
            "provider_unusable",
            "Provider-wide permanent errors (credentials, account); each opens the breaker",
            provider_unusable.clone(),
        );
        reg(
            otpd,
            &mut names,
            "store_available",
            "1 while PostgreSQL answers; 0 while new work is held back",
            store_available.clone(),
        );
        reg(
            otpd,
            &mut names,
            "provider_attempts",
            "Provider calls by result",
            attempts.clone(),
        );
        reg(
            otpd,
            &mut names,
            "provider_latency_seconds",
            "Duration of provider calls",
            provider_latency.clone(),
        );
        reg(
            otpd,
            &mut names,
            "jobs_in_flight",
            "Deliveries being processed by this instance",
            in_flight.clone(),
        );
        let lane_waiting = Family::default();
        reg(
            otpd,
            &mut names,
            "lane_waiting",
            "Jobs in a lane's hand waiting for one of its slots",
            lane_waiting.clone(),
        );
        let provider_demotion = Family::default();
        reg(
            otpd,
            &mut names,
            "provider_demotion",
            "Places a provider has been moved down its chains for a country by delivery health",
            provider_demotion.clone(),
        );
        let limited = Family::default();
        let spend = Family::default();
        let signature_failures = Family::default();
        let verified = Counter::default();
        let prefixes_flagged = Family::default();
        reg(
            otpd,
            &mut names,
            "limited",
            "Jobs refused by a limit, budget, geo permission or conversion block",
            limited.clone(),
        );
        reg(
            otpd,
            &mut names,
            "spend",
            "Configured price of the messages sent, in the budget's currency",
            spend.clone(),
        );
        reg(
            otpd,
            &mut names,
            "signature_failures",
            "Jobs with a missing, forged or stale signature",
            signature_failures.clone(),
        );
        reg(
            otpd,
            &mut names,
            "verified",
            "Verified feedback for known challenges",
            verified.clone(),
        );
        reg(
            otpd,
            &mut names,
            "prefixes_flagged",
            "Number ranges flagged for low conversion",
            prefixes_flagged.clone(),
        );
        let retries = Family::default();
        let in_doubt_resends = Family::default();
        let receipts = Family::default();
        let delivery_latency = Family::new_with_constructor(slow_histogram as fn() -> Histogram);
        let queue_lag = Family::new_with_constructor(slow_histogram as fn() -> Histogram);
        let webhook_rejected = Family::default();
        reg(
            otpd,
            &mut names,
            "retries",
            "Provider calls after a job's first",
            retries.clone(),
        );
        reg(
            otpd,
            &mut names,
            "in_doubt_resends",
            "Provider calls made while an earlier call of the job is in doubt",
            in_doubt_resends.clone(),
        );
        reg(
            otpd,
            &mut names,
            "receipts",
            "Final provider receipts applied, by state",
            receipts.clone(),
        );
        reg(
            otpd,
            &mut names,
            "delivery_latency_seconds",
            "From the provider's acceptance to its delivered receipt",
            delivery_latency.clone(),
        );
        reg(
            otpd,
            &mut names,
            "queue_lag_seconds",
            "From the job's AMQP timestamp to otpd's first look at it",
            queue_lag.clone(),
        );
        reg(
            otpd,
            &mut names,
            "webhook_rejected",
            "Provider callbacks refused, by reason",
            webhook_rejected.clone(),
        );
        let sms_segments = Family::default();
        reg(
            otpd,
            &mut names,
            "sms_segments",
            "SMS segments accepted by providers (what vendors bill)",
            sms_segments.clone(),
        );
        Metrics {
            registry,
            build_info,
            names,
            sms_segments,
            retries,
            in_doubt_resends,
            receipts,
            delivery_latency,
            queue_lag,
            webhook_rejected,
            limited,
            spend,
            signature_failures,
            verified,
            prefixes_flagged,
            jobs,
            rejected,
            duplicates,
            fallback_scheduled,
            in_doubt,
            breaker_state,
            provider_unusable,
            store_available,
            attempts,
            provider_latency,
            in_flight,
            lane_waiting,
            provider_demotion,
        }
    }

    /// The Prometheus text exposition.
    /// The registry in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The registry in the format a scrape negotiated.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Classic => exposition::to_classic(&self.encode()),
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
