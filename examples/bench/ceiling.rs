//! The ceiling otpd is compared with, measured in the same run on the same machine: what the
//! broker and the database allow for the same messages when nothing else is done with them.

use super::load::{self, Target, Timeline};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};
use std::time::Instant;

use crate::kit::names::Names;

/// A bare lapin consumer on a quorum queue that only acks, with otpd's prefetch, consuming
/// while the same jobs are published as fast as the broker confirms them (as otpd's full-speed
/// run is): messages/s from the first publish to the last ack.
pub async fn broker(conn: &Connection, ch: &Channel, bodies: &[Vec<u8>], prefetch: u16) -> f64 {
    let queue = format!("bench-{:x}.ceiling", std::process::id());
    let (consumer_ch, mut consumer) = quorum_consumer(conn, ch, &queue, prefetch).await;
    let n = bodies.len();
    let t0 = Instant::now();
    let drain = tokio::spawn(async move {
        for _ in 0..n {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
    let timeline = Timeline::new(t0, n);
    let to = Target {
        channel: ch,
        exchange: "",
        routing_key: &queue,
    };
    load::publish(to, bodies.iter().cloned().enumerate(), None, &timeline).await;
    drain.await.unwrap();
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    // The consumer goes first: deleting a queue under it makes the broker cancel it, which
    // lapin may take for a protocol error.
    let _ = consumer_ch.close(200, "done".into()).await;
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    rate
}

/// A durable quorum queue `queue`, as otpd's jobs queue is, and a consumer of it on a channel
/// of its own with `prefetch`.
pub async fn quorum_consumer(
    conn: &Connection,
    ch: &Channel,
    queue: &str,
    prefetch: u16,
) -> (Channel, Consumer) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, args).await.unwrap();
    let consumer_ch = conn.create_channel().await.unwrap();
    consumer_ch
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer = consumer_ch
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (consumer_ch, consumer)
}

/// Rows/s of a batched insert of `n` rows shaped like otpd's audit rows, 1,000 per UNNEST
/// statement, into a fresh database.
pub async fn database(n: usize) -> f64 {
    let db = Names::with_suffix("bench", &format!("ceiling-{:x}", std::process::id()));
    let pool = create_database(&db).await;
    sqlx::query("CREATE TABLE e (id bigserial PRIMARY KEY, challenge_id text NOT NULL, at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL, state text)")
        .execute(&pool)
        .await
        .unwrap();
    let t0 = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|i| format!("b-{i}")).collect();
        sqlx::query("INSERT INTO e (challenge_id, kind, state) SELECT id, 'state', 'sent' FROM UNNEST($1::text[]) AS t(id)")
            .bind(&ids)
            .execute(&pool)
            .await
            .unwrap();
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    pool.close().await;
    drop_database(&db).await;
    rate
}

/// Creates the database `names` names and connects to it.
pub async fn create_database(names: &Names) -> sqlx::PgPool {
    names.create_database().await;
    let url = names.database_url(&super::child::pg_query());
    sqlx::PgPool::connect(&url).await.unwrap()
}

pub async fn drop_database(names: &Names) {
    names.drop_database().await;
}
