//! The two text formats a scrape may ask for. The registry writes OpenMetrics; Prometheus's
//! classic text format (`text/plain; version=0.0.4`) differs in what matters to its parser: a
//! counter's HELP and TYPE name the sample (`otpd_jobs_total`, not the family `otpd_jobs`),
//! there is no `info` type, no `# UNIT` line and no `# EOF`. Served as OpenMetrics, a classic
//! parser drops the HELP and TYPE of every counter.

/// What a scrape gets, chosen from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Classic,
}

impl Format {
    /// OpenMetrics when the scraper lists it (as Prometheus does when it can parse it), the
    /// classic text format otherwise (`curl`, older scrapers, `promtool check metrics`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Classic,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The classic text format of an OpenMetrics exposition.
pub fn to_classic(openmetrics: &str) -> String {
    // A family's metadata lines come before its samples, and each family's TYPE names it.
    let renamed: Vec<(&str, String, &str)> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter_map(|(name, kind)| match kind {
            "counter" => Some((name, format!("{name}_total"), "counter")),
            "info" => Some((name, format!("{name}_info"), "gauge")),
            _ => None,
        })
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        let rewritten = meta.and_then(|(prefix, rest)| {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let (_, classic, kind) = renamed.iter().find(|(family, ..)| *family == name)?;
            Some(match prefix {
                "# TYPE " => format!("# TYPE {classic} {kind}"),
                _ => format!("# HELP {classic} {tail}"),
            })
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP otpd_jobs Jobs by terminal state.\n\
        # TYPE otpd_jobs counter\n\
        otpd_jobs_total{channel=\"sms\",state=\"sent\"} 3\n\
        # HELP otpd_store_available Whether the database answers.\n\
        # TYPE otpd_store_available gauge\n\
        otpd_store_available 1\n\
        # HELP otpd_build Build.\n\
        # TYPE otpd_build info\n\
        otpd_build_info{version=\"0.1.0\"} 1\n\
        # HELP otpd_latency_seconds Latency.\n\
        # TYPE otpd_latency_seconds histogram\n\
        # UNIT otpd_latency_seconds seconds\n\
        otpd_latency_seconds_sum 0.5\n\
        otpd_latency_seconds_count 1\n\
        otpd_latency_seconds_bucket{le=\"+Inf\"} 1\n\
        # EOF\n";

    #[test]
    fn counters_and_infos_are_named_by_their_samples_and_the_rest_is_kept() {
        let classic = to_classic(OPENMETRICS);
        for line in [
            "# HELP otpd_jobs_total Jobs by terminal state.",
            "# TYPE otpd_jobs_total counter",
            "otpd_jobs_total{channel=\"sms\",state=\"sent\"} 3",
            "# TYPE otpd_store_available gauge",
            "# HELP otpd_build_info Build.",
            "# TYPE otpd_build_info gauge",
            "# TYPE otpd_latency_seconds histogram",
            "otpd_latency_seconds_bucket{le=\"+Inf\"} 1",
        ] {
            assert!(classic.lines().any(|l| l == line), "{line} in:\n{classic}");
        }
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
    }

    #[test]
    fn the_accept_header_chooses() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(Format::negotiate(None), Format::Classic);
    }
}
