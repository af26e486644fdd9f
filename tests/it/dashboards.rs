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

#[test]
fn every_panel_can_be_narrowed_to_one_instance() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../dashboards/otpd.json")).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "instance"));
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let selectors = expr.matches("otpd_").count();
            let narrowed = expr.matches(r#"instance=~"$instance""#).count();
            assert_eq!(selectors, narrowed, "{}: {expr}", panel["title"]);
        }
    }
}

#[test]
fn every_alert_links_to_its_section_of_the_runbook() {
    let alerts = include_str!("../../dashboards/alerts.yml");
    let runbook = include_str!("../../docs/operations.md");
    let headings: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(names.contains(&"OtpdDown"), "{names:?}");
    let links: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: docs/operations.md#"))
        .collect();
    assert_eq!(links.len(), names.len(), "one runbook_url per alert");
    for (name, link) in names.iter().zip(&links) {
        assert_eq!(*link, name.to_lowercase());
        assert!(
            headings.contains(*link),
            "no `### {name}` in docs/operations.md"
        );
    }
}
