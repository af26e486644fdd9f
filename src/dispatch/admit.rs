//! Admission: what a new challenge passes before any provider call. Expiry, then geo
//! permissions and conversion blocks (no shared state), then the limit rules and budgets,
//! taken in PostgreSQL in one transaction with the challenge marked admitted, so that a
//! challenge is counted exactly once whatever crashes and redeliveries follow. Most
//! challenges are admitted by their claim's commit (`claim.rs`); what is here admits the
//! rest (a takeover of a challenge whose owner crashed before its admission committed) and
//! ends the refused.

use super::{Dispatcher, Ending, Halt};
use crate::domain::{DeliveryState, Destination, FailReason, Job, Outcome, PhoneNumber};
use crate::limits::{Refusal, Subject, Take};
use crate::metrics::LimitLabels;
use crate::store::{Admission, Admit, Decide, Owner};
use chrono::{TimeDelta, Utc};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// What decides a new challenge before the shared counters do.
pub(super) enum Screened {
    /// The code expires, or would before it could be delivered.
    Expired,
    /// Geo permissions, a conversion block or a cached refusal refuse it.
    Refused(Refusal),
    /// Only the counters remain: these, judged by this decision.
    Counters(Admit),
}

impl Dispatcher {
    /// Screens a new challenge: its code's time, then what needs no shared state, then the
    /// counters it would take. The claim offers `Counters` to its own commit; a challenge
    /// admitted later (`refuse_before_sending`) acts on each answer itself.
    pub(super) fn screen(&self, job: &Job, hmac: &[u8]) -> Screened {
        if !self.retry.may_start(Utc::now(), job.expires_at) {
            return Screened::Expired;
        }
        if let Err(refusal) = self.limits.screen(job.channel, phone(job)) {
            return Screened::Refused(refusal);
        }
        let takes = self.takes(job, hmac);
        match self.limits.cached(&takes) {
            Some(refusal) => Screened::Refused(refusal),
            None => Screened::Counters(self.judgement(takes)),
        }
    }

    /// Screens and admits a challenge its claim did not admit; returns the outcome if the job
    /// is refused before sending.
    pub(super) async fn refuse_before_sending(
        &self,
        job: &Job,
        owner: Owner<'_>,
        hmac: &[u8],
    ) -> Result<Option<Ending>, Halt> {
        let refusal = match self.screen(job, hmac) {
            Screened::Expired => {
                const DETAIL: &str = "the code expired, or would before it could be delivered";
                tracing::info!("{DETAIL}; not sent");
                let f = Outcome::ended(DeliveryState::Expired, 0, FailReason::Expired, DETAIL);
                return self.conclude(job, owner, f).await.map(Some);
            }
            Screened::Refused(refusal) => refusal,
            // No limit applies (limits off): nothing to take or to record.
            Screened::Counters(admit) if admit.keys.is_empty() => return Ok(None),
            Screened::Counters(Admit { keys, decide }) => {
                let admission = self
                    .persist(|| self.store.admit(owner, keys.clone(), Arc::clone(&decide)))
                    .await?;
                match admission {
                    Admission::Admitted => return Ok(None),
                    Admission::Refused(refusal) => refusal,
                    Admission::LeaseLost => return Err(Halt::LeaseLost),
                }
            }
        };
        self.conclude_refusal(job, owner, refusal).await.map(Some)
    }

    /// Ends a job that a limit or abuse control refused, before any provider call.
    pub(super) async fn conclude_refusal(
        &self,
        job: &Job,
        owner: Owner<'_>,
        r: Refusal,
    ) -> Result<Ending, Halt> {
        tracing::info!(reason = r.reason.code(), rule = r.rule.as_deref(), detail = %r.detail, "job refused by a limit or abuse control");
        self.metrics
            .limited
            .get_or_create(&LimitLabels {
                channel: job.channel.as_str(),
                reason: r.reason.code(),
                rule: r.rule.clone().unwrap_or_default(),
            })
            .inc();
        let mut f = Outcome::ended(r.state, 0, r.reason, r.detail.as_str());
        f.rule = r.rule.as_deref().map(Cow::Borrowed);
        f.retry_at = r
            .retry_after
            .and_then(|d| TimeDelta::from_std(d).ok())
            .map(|d| Utc::now() + d);
        self.conclude(job, owner, f).await
    }

    /// The counters the job takes (none with limits off).
    pub(super) fn takes(&self, job: &Job, hmac: &[u8]) -> Vec<Take> {
        if !self.limits.enabled() {
            return Vec::new();
        }
        let destination_key = hex::encode(hmac);
        let ip_key = job
            .client_ip
            .map(|ip| hex::encode(self.store.destination_hmac(&ip_scope(ip))));
        let subject = Subject {
            channel: job.channel,
            account: job.account_id.as_str(),
            destination_key: &destination_key,
            ip_key: ip_key.as_deref(),
            phone: phone(job),
        };
        self.limits.takes(&subject)
    }

    /// The store's view of `takes`: their (rule, key)s, and the decision over their counters.
    pub(super) fn judgement(&self, takes: Vec<Take>) -> Admit {
        let keys = takes
            .iter()
            .map(|t| (t.rule.clone(), t.key.clone()))
            .collect();
        let limits = Arc::clone(&self.limits);
        let decide: Decide = Arc::new(move |counters, now| limits.decide(&takes, counters, now));
        Admit { keys, decide }
    }
}

pub(super) fn phone(job: &Job) -> Option<&PhoneNumber> {
    match &job.to {
        Destination::Phone(p) => Some(p),
        Destination::Email(_) => None,
    }
}

/// What an IP is counted by: the address itself for IPv4, its /64 for IPv6, since one
/// subscriber commonly holds a whole /64 and can rotate through it.
fn ip_scope(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(ip_scope(a), ip_scope(b));
        assert_eq!(ip_scope("203.0.113.7".parse().unwrap()), "203.0.113.7");
    }
}
