//! `/status`: a server-rendered page of the last hour's delivery health, with no external
//! assets (inline CSS and SVG) so it works on an isolated network, refreshing every 30 s.
//! Aggregates only: no destination, account or code appears on it.

use super::{HttpState, unavailable};
use crate::render::xml_escape as esc;
use crate::store::Standing;
use crate::views::{MinuteCount, ReportRow};
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use std::fmt::Write;

pub(super) async fn page(State(s): State<HttpState>) -> Response {
    let now = Utc::now();
    let data = tokio::try_join!(
        s.views.report(now - Duration::hours(1)),
        s.views.per_minute(60),
        s.store.standings()
    );
    match data {
        Ok((rows, minutes, standings)) => {
            Html(render(now, &rows, &minutes, &standings)).into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}

/// The whole page.
pub fn render(
    now: DateTime<Utc>,
    rows: &[ReportRow],
    minutes: &[MinuteCount],
    standings: &[Standing],
) -> String {
    let mut html = String::with_capacity(8192);
    html.push_str(HEAD);
    let _ = write!(
        html,
        "<h1>otpd delivery status</h1><p class=muted>Last 60 minutes, generated {} UTC; refreshes every 30 s.</p>",
        now.format("%Y-%m-%d %H:%M:%S")
    );
    tiles(&mut html, rows);
    html.push_str("<h2>Deliveries per minute</h2>");
    minute_chart(&mut html, now, minutes);
    html.push_str("<h2>By channel, provider and country</h2>");
    table(&mut html, rows);
    demotions(&mut html, standings);
    html.push_str("</body></html>\n");
    html
}

/// The providers delivery-health routing has moved down, one line each.
fn demotions(html: &mut String, standings: &[Standing]) {
    html.push_str("<h2>Delivery-health routing</h2>");
    let down: Vec<&Standing> = standings.iter().filter(|s| s.level > 0).collect();
    if down.is_empty() {
        html.push_str("<p id=demotions class=ok>Every provider is in its configured place.</p>");
        return;
    }
    html.push_str("<ul id=demotions>");
    for s in down {
        let country = if s.country.is_empty() {
            "–"
        } else {
            &s.country
        };
        let p95 = s
            .p95_ms
            .map_or("–".into(), |p| format!("{:.1} s", p / 1000.0));
        let _ = write!(
            html,
            "<li class=bad>{} moved {} place(s) down for {} since {} UTC: {} of {} delivered, p95 to delivered {}</li>",
            esc(&s.provider),
            s.level,
            esc(country),
            s.changed_at.format("%Y-%m-%d %H:%M:%S"),
            s.delivered,
            s.delivered + s.not_delivered,
            esc(&p95)
        );
    }
    html.push_str("</ul>");
}

const HEAD: &str = "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta http-equiv=refresh content=30><meta name=viewport content='width=device-width'>\
<title>otpd status</title><style>\
body{font:14px system-ui,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}\
.tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{background:#fff;border:1px solid #dde;border-radius:6px;padding:10px 16px;min-width:130px}\
.tile b{display:block;font-size:24px}.muted{color:#667}table{border-collapse:collapse;background:#fff}\
td,th{border:1px solid #dde;padding:4px 10px;text-align:right}\
td:nth-child(-n+3),th:nth-child(-n+3),td:last-child,th:last-child{text-align:left}\
.bad{color:#b3261e}.ok{color:#1b7f3b}</style></head><body>";

fn tiles(html: &mut String, rows: &[ReportRow]) {
    let volume: i64 = rows.iter().map(|r| r.volume).sum();
    let open: i64 = rows.iter().map(|r| r.open).sum();
    let accepted: i64 = rows.iter().map(|r| r.accepted).sum();
    let delivered: i64 = rows.iter().map(|r| r.delivered).sum();
    let finished = volume - open;
    let pct = |n: i64, of: i64| {
        if of > 0 {
            format!("{:.1}%", 100.0 * n as f64 / of as f64)
        } else {
            "–".into()
        }
    };
    let tiles = [
        ("volume", volume.to_string()),
        ("accepted by provider", pct(accepted, finished)),
        ("delivered (receipts)", pct(delivered, accepted)),
        ("in progress", open.to_string()),
    ];
    html.push_str("<div class=tiles>");
    for (label, value) in tiles {
        let _ = write!(
            html,
            "<div class=tile id='tile-{}'><b>{}</b>{}</div>",
            label.split(' ').next().unwrap_or(label),
            esc(&value),
            esc(label)
        );
    }
    html.push_str("</div>");
}

/// Stacked bars, one per minute of the last hour: accepted (green) under failed (red).
fn minute_chart(html: &mut String, now: DateTime<Utc>, minutes: &[MinuteCount]) {
    const W: i64 = 600;
    const H: i64 = 120;
    let max = minutes
        .iter()
        .map(|m| m.accepted + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = write!(
        html,
        "<svg id=per-minute width={W} height={} viewBox='0 0 {W} {}' role=img aria-label='deliveries per minute'>",
        H + 16,
        H + 16
    );
    for m in minutes {
        let age = (now - m.minute).num_minutes().clamp(0, 59);
        let x = (59 - age) * (W / 60);
        let ok_h = m.accepted * H / max;
        let bad_h = m.failed * H / max;
        let _ = write!(
            html,
            "<rect x={x} y={} width=8 height={ok_h} fill='#2e9d55'><title>{} accepted</title></rect>\
             <rect x={x} y={} width=8 height={bad_h} fill='#d04437'><title>{} failed</title></rect>",
            H - ok_h,
            m.accepted,
            H - ok_h - bad_h,
            m.failed
        );
    }
    let _ = write!(
        html,
        "<text x=0 y={} font-size=11 fill='#667'>−60 min</text>\
         <text x={W} y={} font-size=11 fill='#667' text-anchor=end>now (max {max}/min)</text></svg>",
        H + 14,
        H + 14
    );
}

fn table(html: &mut String, rows: &[ReportRow]) {
    html.push_str(
        "<table id=health><tr><th>channel</th><th>provider</th><th>country</th><th>volume</th>\
         <th>success</th><th>delivered</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>top failures</th></tr>",
    );
    for r in rows {
        let success = r.success_pct();
        let class = match success {
            Some(p) if p < 90.0 => "bad",
            Some(_) => "ok",
            None => "muted",
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class={class}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.channel),
            esc(&r.provider),
            esc(&r.country),
            r.volume,
            success.map_or("–".into(), |p| format!("{p:.1}%")),
            r.delivered,
            format_ms(r.p50_ms),
            format_ms(r.p95_ms),
            format_ms(r.p99_ms),
            esc(&format_failures(r)),
        );
    }
    html.push_str("</table>");
}

/// "reason ×n, …" for a report row.
pub fn format_failures(r: &ReportRow) -> String {
    r.top_failures
        .iter()
        .map(|(reason, n)| format!("{reason} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn format_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(provider: &str) -> ReportRow {
        ReportRow {
            channel: "sms".into(),
            provider: provider.into(),
            country: "GB".into(),
            volume: 10,
            open: 0,
            accepted: 9,
            delivered: 7,
            p50_ms: Some(12.4),
            p95_ms: Some(80.0),
            p99_ms: None,
            top_failures: vec![("provider_transient".into(), 1)],
        }
    }

    #[test]
    fn the_page_escapes_names_and_shows_the_figures() {
        let html = render(Utc::now(), &[row("<script>x</script>")], &[], &[]);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("90.0%") && html.contains("provider_transient ×1"));
        assert!(html.contains("<svg id=per-minute"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
    }
}
