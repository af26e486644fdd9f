//! The shipped Grafana dashboard and alert rules only name metrics otpd exports.

use otpd::metrics::Metrics;
use std::collections::BTreeSet;

/// Metric names in PromQL text: `otpd_…`, with the exposition suffixes stripped.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("otpd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_total", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

fn exported() -> BTreeSet<String> {
    Metrics::new().names().collect()
}

#[test]
fn the_dashboard_and_alerts_use_only_exported_metrics() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../dashboards/otpd.json")).unwrap();
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = names(&exprs);
    assert!(used.len() >= 12, "{used:?}");
    let alerts = names(include_str!("../../dashboards/alerts.yml"));
    assert!(alerts.len() >= 6, "{alerts:?}");
    for name in used.iter().chain(&alerts) {
        assert!(
            exported.contains(name),
            "{name} is not exported: {exported:?}"
        );
    }
    for needed in [
        "otpd_receipts",
        "otpd_queue_lag_seconds",
        "otpd_provider_breaker_state",
        "otpd_jobs",
    ] {
        assert!(alerts.contains(needed), "an alert on {needed}");
    }
}
