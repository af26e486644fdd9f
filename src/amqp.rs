//! Broker connection and topology. Every option is spelled out with its reason.

use crate::config::{AmqpSettings, Lane, QueueType};
use lapin::options::{
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// The largest AMQP frame otpd asks the broker for, unless `amqp.url` sets `frame_max`.
/// lapin keeps a receive and a send buffer of 32 frames each, so RabbitMQ's default of 128 KiB
/// holds 8 MiB of memory resident for jobs and events of a few hundred bytes; at 16 KiB the
/// two cost 1 MiB. A larger message is split across frames, as AMQP allows any message to be.
const FRAME_MAX: u32 = 16 * 1024;

/// Opens a connection named after this process, so `rabbitmqctl list_connections` shows who
/// is who. lapin's own auto-recovery is not enabled: intake owns reconnection, because after a
/// reconnect it must drop every delivery tag of the old channel rather than ack it.
pub async fn connect(settings: &AmqpSettings) -> Result<Connection, lapin::Error> {
    let name = format!(
        "otpd {} pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    // Parsed here only to set the frame size; lapin reports a bad URL the same way.
    let mut uri: AMQPUri = settings
        .url
        .expose()
        .parse()
        .map_err(|e: String| lapin::Error::from(std::io::Error::other(e)))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Connection::connect_uri(
        uri,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
}

/// Declares the exchanges and queues otpd uses. Declarations are idempotent, so every instance
/// declares everything at start-up and after each reconnect; a declaration whose arguments
/// differ from the existing queue's fails with PRECONDITION_FAILED and stops start-up, which
/// is what an operator wants to hear about.
pub async fn declare_topology(channel: &Channel, s: &AmqpSettings) -> Result<(), lapin::Error> {
    // Durable: the exchanges must outlive broker restarts, or publishes during one are dropped.
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    // Durable, not exclusive, not auto-delete: jobs wait in it while no otpd is running.
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };

    channel
        .exchange_declare(
            s.jobs_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            s.events_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    // Fanout: whatever the reason (ours, or the broker's delivery limit), a dead job lands in
    // one queue for an operator to inspect.
    channel
        .exchange_declare(
            s.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;

    channel
        .queue_declare(
            s.dead_letter_queue.as_str().into(),
            durable_queue,
            queue_type_args(s.queue_type),
        )
        .await?;
    channel
        .queue_bind(
            s.dead_letter_queue.as_str().into(),
            s.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    for lane in s.lanes(0) {
        declare_lane(channel, s, &lane).await?;
    }
    Ok(())
}

/// One lane's queue and its bindings. Bindings add up across declarations; the `#` that the
/// default lane had before lanes existed is removed once it binds something narrower, or that
/// queue would still take a copy of every other lane's jobs.
async fn declare_lane(
    channel: &Channel,
    s: &AmqpSettings,
    lane: &Lane,
) -> Result<(), lapin::Error> {
    // Durable, not exclusive, not auto-delete: jobs wait in it while no otpd is running.
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let queue = lane.queue.as_str();
    channel
        .queue_declare(queue.into(), durable_queue, jobs_queue_args(s))
        .await?;
    // A pattern rather than one binding per channel (`#`, `*`, `bulk.*`): a job with an
    // unknown channel still reaches otpd and is rejected visibly, instead of being dropped as
    // unroutable.
    for key in &lane.routing_keys {
        channel
            .queue_bind(
                queue.into(),
                s.jobs_exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    if queue == s.jobs_queue && !lane.routing_keys.iter().any(|k| k == "#") {
        channel
            .queue_unbind(
                queue.into(),
                s.jobs_exchange.as_str().into(),
                "#".into(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Deletes everything `declare_topology` declares, jobs included. For tests and benchmarks
/// that run on throwaway names; never called by the daemon.
pub async fn delete_topology(channel: &Channel, s: &AmqpSettings) -> Result<(), lapin::Error> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let lanes = s.lanes(0).into_iter().map(|l| l.queue);
    for queue in lanes.chain([s.dead_letter_queue.clone()]) {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in [
        &s.jobs_exchange,
        &s.dead_letter_exchange,
        &s.events_exchange,
    ] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// The delay queue of fallback steps due `after` their previous send, declared before each
/// use; returns its name, `<jobs_queue>.fallback.<seconds>`. Nothing consumes it: a message
/// waits out the queue's TTL and is dead-lettered to the jobs exchange, where otpd takes it as
/// a job. One queue per delay, because RabbitMQ expires messages only at a queue's head: in a
/// queue of one TTL, the head is always the first due, so no step waits behind a longer one.
pub async fn declare_step_queue(
    channel: &Channel,
    s: &AmqpSettings,
    after: std::time::Duration,
) -> Result<String, lapin::Error> {
    let secs = after.as_secs();
    let name = format!("{}.fallback.{secs}", s.jobs_queue);
    let mut args = queue_type_args(s.queue_type);
    let ms = |secs: u64| AMQPValue::LongLongInt(secs.saturating_mul(1000) as i64);
    args.insert("x-message-ttl".into(), ms(secs));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(s.jobs_exchange.as_str().into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("fallback".into()),
    );
    if s.queue_type == QueueType::Quorum {
        // A quorum queue re-publishes what expires with confirms of its own, so a step is not
        // lost between the delay queue and the jobs exchange; that needs reject-publish.
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    // A delay no job uses any more leaves no queue behind: it goes a minute after its last
    // step was scheduled (each use declares it again), when every message in it is long gone.
    args.insert("x-expires".into(), ms(secs + 60));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.as_str().into(), durable, args)
        .await?;
    Ok(name)
}

fn queue_type_args(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    let name = match queue_type {
        QueueType::Quorum => "quorum",
        QueueType::Classic => "classic",
    };
    args.insert("x-queue-type".into(), AMQPValue::LongString(name.into()));
    args
}

fn jobs_queue_args(s: &AmqpSettings) -> FieldTable {
    let mut args = queue_type_args(s.queue_type);
    // Messages nacked without requeue, and (quorum) those over the delivery limit, go here.
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(s.dead_letter_exchange.as_str().into()),
    );
    if s.queue_type == QueueType::Quorum {
        // A message that makes otpd crash is redelivered; after this many deliveries the broker
        // dead-letters it instead of letting it loop (Kratos #402: one bad message blocked all).
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(s.delivery_limit.min(i32::MAX as u32) as i32),
        );
    }
    args
}

/// The consuming channel: manual acks with a bounded prefetch, so the broker never pushes
/// more unacked jobs than this instance will work on at once.
pub async fn consumer_channel(
    connection: &Connection,
    prefetch: u16,
) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    Ok(channel)
}

/// The publishing channel, in confirm mode: an event or dead-lettered job counts as published
/// only once the broker has taken responsibility for it.
pub async fn publisher_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}
