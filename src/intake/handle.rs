//! One delivery's life once it starts: through the dispatcher, then acked, dead-lettered or
//! abandoned as the dispatcher says.

use super::acks::Acks;
use super::{Handled, Intake, Report};
use crate::dispatch::{Disposition, Inbound, SIGNATURE_HEADER};
use crate::domain::Channel;
use crate::events::{STEP_HEADER, STEP_MAC_HEADER};
use crate::metrics::ChannelLabels;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use tokio_util::sync::CancellationToken;

impl Intake {
    pub(super) async fn handle(
        &self,
        delivery: Delivery,
        acks: &Acks,
        failing: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        self.metrics.in_flight.inc();
        self.liveness.started();
        self.observe_lag(&delivery);
        let signature = header_str(&delivery.properties, SIGNATURE_HEADER);
        let step = header_str(&delivery.properties, STEP_HEADER);
        let step_mac = header_str(&delivery.properties, STEP_MAC_HEADER);
        let inbound = Inbound {
            body: &delivery.data,
            signature: signature.as_deref(),
            kind: delivery.properties.kind().as_ref().map(|k| k.as_str()),
            redelivered: delivery.redelivered,
            step: step
                .as_deref()
                .map(|s| (s, step_mac.as_deref().unwrap_or_default())),
        };
        let processed = self.dispatcher.process(inbound).await;
        let handled = match processed.disposition {
            Disposition::Ack(outcome) => {
                acks.finished(delivery.delivery_tag);
                Handled::Acked(outcome)
            }
            Disposition::DeadLetter(rejection) => {
                // Boxed: rare, and it would otherwise enlarge every job's future.
                let dead_letter =
                    self.publisher
                        .dead_letter(&delivery.data, &delivery.properties, &rejection);
                match Box::pin(dead_letter).await {
                    Ok(()) => {
                        acks.finished(delivery.delivery_tag);
                        Handled::DeadLettered(rejection.reason)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not dead-letter a rejected job; leaving it for redelivery");
                        Handled::Abandoned
                    }
                }
            }
            Disposition::Abandon => Handled::Abandoned,
        };
        if handled == Handled::Abandoned && !shutdown.is_cancelled() {
            // The broker connection is failing: rebuild it, which also returns this job. (A
            // no-op if this job's session has already ended.)
            failing.cancel();
        }
        self.metrics.in_flight.dec();
        self.liveness.finished();
        let _ = self.reports.send(Report {
            challenge_id: processed.challenge_id,
            handled,
        });
    }
}

impl Intake {
    /// Queue lag from the AMQP `timestamp` property (whole seconds), for jobs that carry one and
    /// were routed by a known channel.
    fn observe_lag(&self, delivery: &Delivery) {
        let (Some(ts), Some(channel)) = (
            *delivery.properties.timestamp(),
            // A lane's routing keys may prefix the channel (`bulk.sms`).
            Channel::parse(
                delivery
                    .routing_key
                    .as_str()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default(),
            ),
        ) else {
            return;
        };
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let labels = ChannelLabels {
            channel: channel.as_str(),
        };
        let lag = now.saturating_sub(ts) as f64;
        self.metrics.queue_lag.get_or_create(&labels).observe(lag);
    }
}

/// A string header of the message, if present and a string.
fn header_str(props: &lapin::BasicProperties, name: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}
