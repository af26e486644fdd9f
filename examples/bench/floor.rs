//! The same-work floor: a bare lapin consumer that does with the broker and the database what
//! otpd does per job, with none of otpd's logic (no parsing, limits, rendering, provider, lease
//! or audit chain), measured in the same run. Per job: consume; insert its row and an event
//! (one batched statement for everything in hand) and commit; update its row and insert a
//! second event, commit again; publish two persistent events with publisher confirms (otpd's
//! `accepted` and terminal events, to a topic exchange a consumer drains); ack, with
//! `multiple`. otpd ÷ this floor is the share of the machine's possible throughput that otpd's
//! own work leaves.

use super::load::{self, Target, Timeline};
use crate::kit::names::Names;
use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use sqlx::PgPool;
use std::time::Instant;

/// The most jobs one round takes, as otpd's batches do.
const BATCH: usize = 512;

/// Jobs/s from the first publish to the last ack.
pub async fn same_work(conn: &Connection, ch: &Channel, bodies: &[Vec<u8>], prefetch: u16) -> f64 {
    let name = format!("bench-{:x}.floor", std::process::id());
    let (db, pool) = database().await;
    declare(ch, &name).await;
    // Drained as the bench drains otpd's events.
    let (events_in, mut events) = load::event_consumer(conn, &name).await;
    let drain = tokio::spawn(async move {
        let _keep = events_in;
        while let Some(Ok(_)) = events.next().await {}
    });
    let (consumer_ch, mut consumer) =
        super::ceiling::quorum_consumer(conn, ch, &name, prefetch).await;
    let events_ch = conn.create_channel().await.unwrap();
    events_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let n = bodies.len();
    let t0 = Instant::now();
    let worker = {
        let (pool, name) = (pool.clone(), name.clone());
        tokio::spawn(async move {
            let mut handled = 0;
            while handled < n {
                let mut batch = vec![consumer.next().await.unwrap().unwrap()];
                while batch.len() < BATCH {
                    match futures_util::FutureExt::now_or_never(consumer.next()) {
                        Some(Some(d)) => batch.push(d.unwrap()),
                        _ => break,
                    }
                }
                handled += batch.len();
                let ids: Vec<String> = (0..batch.len())
                    .map(|i| format!("f-{handled}-{i}"))
                    .collect();
                write(&pool, &ids).await;
                publish_events(&events_ch, &name, &ids).await;
                let last = batch.last().unwrap();
                last.acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
            }
        })
    };
    let timeline = Timeline::new(t0, n);
    let to = Target {
        channel: ch,
        exchange: "",
        routing_key: &name,
    };
    load::publish(to, bodies.iter().cloned().enumerate(), None, &timeline).await;
    worker.await.unwrap();
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let _ = consumer_ch.close(200, "done".into()).await;
    drain.abort();
    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    pool.close().await;
    super::ceiling::drop_database(&db).await;
    rate
}

/// A fresh database with a row table and an event table shaped like otpd's.
async fn database() -> (Names, PgPool) {
    let db = Names::with_suffix("bench", &format!("floor-{:x}", std::process::id()));
    let pool = super::ceiling::create_database(&db).await;
    for ddl in [
        "CREATE TABLE d (challenge_id text PRIMARY KEY, state text NOT NULL, attempt int NOT NULL, provider text, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE e (id bigserial PRIMARY KEY, challenge_id text NOT NULL, at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL, state text, xid bigint NOT NULL DEFAULT txid_current())",
    ] {
        sqlx::query(ddl).execute(&pool).await.unwrap();
    }
    (db, pool)
}

/// The events exchange; the job queue is declared with its consumer.
async fn declare(ch: &Channel, name: &str) {
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Topic,
        exchange,
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// The two commits of a job: its opening (row and event) and its end (update and event).
async fn write(pool: &PgPool, ids: &[String]) {
    sqlx::query(
        "WITH d AS (INSERT INTO d (challenge_id, state, attempt, provider)
                    SELECT id, 'sending', 1, 'twilio' FROM UNNEST($1::text[]) AS t(id) RETURNING challenge_id)
         INSERT INTO e (challenge_id, kind, state) SELECT challenge_id, 'attempt', 'sending' FROM d",
    )
    .bind(ids)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH d AS (UPDATE d SET state = 'sent', updated_at = now() FROM UNNEST($1::text[]) AS t(id)
                     WHERE d.challenge_id = t.id RETURNING d.challenge_id)
         INSERT INTO e (challenge_id, kind, state) SELECT challenge_id, 'state', 'sent' FROM d",
    )
    .bind(ids)
    .execute(pool)
    .await
    .unwrap();
}

/// Two persistent events per job, confirmed.
async fn publish_events(ch: &Channel, exchange: &str, ids: &[String]) {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut pending = Vec::with_capacity(ids.len() * 2);
    for id in ids {
        for state in ["accepted", "sent"] {
            let body = format!(
                r#"{{"version":1,"event_id":"{id}/{state}","challenge_id":"{id}","state":"{state}","attempt":1,"provider":"twilio"}}"#
            );
            let key = format!("delivery.{state}");
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props.clone(),
                )
                .await
                .unwrap();
            pending.push(confirm);
        }
    }
    for confirm in join_all(pending).await {
        confirm.unwrap();
    }
}
