//! `otpd report`: delivery health as a terminal table, from the same aggregates as `/status`.

use crate::views::ReportRow;
use std::fmt::Write;

const HEADERS: [&str; 10] = [
    "CHANNEL",
    "PROVIDER",
    "COUNTRY",
    "VOLUME",
    "SUCCESS",
    "DELIVERED",
    "P50 MS",
    "P95 MS",
    "P99 MS",
    "TOP FAILURES",
];

/// Renders the rows as aligned columns, with a totals line. `since` labels the window.
pub fn table(since: &str, rows: &[ReportRow]) -> String {
    let pct = |p: Option<f64>| p.map_or("–".into(), |p| format!("{p:.1}%"));
    let ms = crate::http::format_ms;
    let mut cells: Vec<[String; 10]> = vec![HEADERS.map(String::from)];
    for r in rows {
        cells.push([
            r.channel.clone(),
            r.provider.clone(),
            r.country.clone(),
            r.volume.to_string(),
            pct(r.success_pct()),
            r.delivered.to_string(),
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            crate::http::format_failures(r),
        ]);
    }
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "Delivery health since {since}\n");
    for row in &cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            // Text columns left-aligned, figures right-aligned; the last column unpadded.
            let _ = match i {
                0..=2 => write!(line, "{cell:<w$}  ", w = widths[i]),
                9 => write!(line, "{cell}"),
                _ => write!(line, "{cell:>w$}  ", w = widths[i]),
            };
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let volume: i64 = rows.iter().map(|r| r.volume).sum();
    let open: i64 = rows.iter().map(|r| r.open).sum();
    let accepted: i64 = rows.iter().map(|r| r.accepted).sum();
    let finished = volume - open;
    let success = (finished > 0).then(|| 100.0 * accepted as f64 / finished as f64);
    let _ = writeln!(
        out,
        "\n{volume} deliveries, {open} in progress, {} accepted by a provider",
        pct(success)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_totals_add_up() {
        let row = |provider: &str, volume, accepted| ReportRow {
            channel: "sms".into(),
            provider: provider.into(),
            country: "GB".into(),
            volume,
            open: 0,
            accepted,
            delivered: 0,
            p50_ms: Some(10.0),
            p95_ms: Some(20.0),
            p99_ms: Some(30.0),
            top_failures: vec![("provider_transient".into(), volume - accepted)],
        };
        let out = table("1h", &[row("twilio", 10, 9), row("twilio_backup", 2, 1)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "Delivery health since 1h");
        let header = lines[2];
        let first = lines[3];
        assert_eq!(
            header.find("VOLUME").map(|i| i + 6),
            first.find("10").map(|i| i + 2)
        );
        assert!(first.contains("90.0%") && first.contains("provider_transient ×1"));
        assert!(out.contains("12 deliveries, 0 in progress, 83.3% accepted by a provider"));
    }
}
