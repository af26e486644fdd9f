//! Fallback steps (docs/workflows.md): once a send of a challenge with a step after it is
//! `sent`, that step is scheduled in the broker before the job is acked. The step comes back
//! as a job after its delay and takes the same path as any other, under the key
//! `<challenge_id>#<step>`, so it fires once however often it is scheduled; if the code was
//! verified, the challenge cancelled or the code's time is up by then, it ends `cancelled`.

use super::{Dispatcher, Ending, Halt};
use crate::domain::{DeliveryState, Job};

impl Dispatcher {
    /// Schedules the step after this send, if the job has one and this message is the one
    /// that owes it: the job that took the send to `sent`, or a redelivered copy of it (whose
    /// first delivery may have committed and died before scheduling). A copy that only
    /// schedules it again is harmless: the step's own claim sends it once.
    pub(super) async fn schedule_next(
        &self,
        job: &Job,
        ending: Ending,
        owed: bool,
        body: &[u8],
    ) -> Result<(), Halt> {
        let Some((next, after)) = job.next_step() else {
            return Ok(());
        };
        let reached_sent = matches!(
            ending,
            Ending::Duplicate(
                DeliveryState::Sent | DeliveryState::Delivered | DeliveryState::Undelivered
            )
        );
        if ending != Ending::Finished(DeliveryState::Sent) && !(owed && reached_sent) {
            return Ok(());
        }
        let mac = hex::encode(self.store.step_mac(next, body));
        if let Err(e) = self.publisher.schedule_step(body, next, &mac, after).await {
            tracing::warn!(error = %e, step = next, "could not schedule the fallback step; leaving the job for redelivery");
            return Err(Halt::Interrupted);
        }
        let channel = (job.fallback.get(usize::from(next) - 1)).map_or("", |s| s.channel.as_str());
        self.metrics
            .fallback_scheduled
            .get_or_create(&crate::metrics::ChannelLabels { channel })
            .inc();
        tracing::info!(
            step = next,
            channel,
            after_secs = after.as_secs(),
            "fallback step scheduled"
        );
        Ok(())
    }
}
