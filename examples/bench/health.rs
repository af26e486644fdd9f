//! The delivery-health check's cost (`--health N`): what one instance's check reads from
//! PostgreSQL, with N messages accepted within the shipped window (15 minutes) and four times
//! as many older ones, over 2 providers and 10 countries.

use crate::kit::names::Names;
use std::time::{Duration, Instant};

pub async fn run(n: usize) {
    let names = Names::with_suffix("bench", &format!("health{:x}", std::process::id()));
    let settings = names.settings();
    names.create_database().await;
    otpd::store::Store::migrate(&settings.database)
        .await
        .unwrap();
    let store = otpd::store::Store::connect(
        &settings.database,
        settings.store.destination_hmac_key.clone(),
    )
    .unwrap();
    let pool = sqlx::PgPool::connect(&names.database_url(""))
        .await
        .unwrap();
    // 80% delivered, 10% undelivered, 10% still `sent` (half of those past the receipt
    // timeout); the older rows lie a day back, outside the window.
    sqlx::query(
        "INSERT INTO deliveries (challenge_id, account_id, channel, state, provider, country, sent_at, receipt_at)
         SELECT 'h-' || g, 'acct', 'sms',
                CASE WHEN g % 10 < 8 THEN 'delivered' WHEN g % 10 = 8 THEN 'undelivered' ELSE 'sent' END,
                CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,
                (ARRAY['GB','US','DE','FR','IN','BR','NG','ID','MX','PH'])[1 + (g / 2) % 10],
                s, CASE WHEN g % 10 < 9 THEN s + (g % 20000) * interval '1 ms' END
           FROM generate_series(1, $1::int * 5) g,
                LATERAL (SELECT now() - (g % 890000) * interval '1 ms'
                                - CASE WHEN g > $1 THEN interval '1 day' ELSE interval '0' END AS s) t",
    )
    .bind(n as i32)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE deliveries")
        .execute(&pool)
        .await
        .unwrap();
    let h = &settings.delivery.health;
    let providers = vec!["a".to_string(), "b".to_string()];
    let mut took = Vec::new();
    let mut keys = 0;
    for _ in 0..7 {
        let t0 = Instant::now();
        let (_, scores) = store
            .health_scores(&providers, h.window(), h.receipt_timeout())
            .await
            .unwrap();
        store.standings().await.unwrap();
        took.push(t0.elapsed());
        keys = scores.len();
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\ndelivery-health check: {n} messages in the window, {} older; {keys} provider × country scores",
        n * 4
    );
    println!(
        "| one check (scores and standings), 7 runs | median {:.1} ms, max {:.1} ms |",
        ms(took[3]),
        ms(took[6])
    );
    pool.close().await;
    store.close().await;
    names.drop_database().await;
}
