//! Delivery-health routing: the circuit breaker reacts to a provider's errors, this to its
//! receipts. A provider that accepts every message and then fails to deliver it, or delivers
//! it late, moves down its chains for that country, and drifts back a step at a time once its
//! score recovers (docs/operations.md, "Delivery health").
//!
//! Every instance runs the check: the first to find the last scoring an interval old scores
//! the judged providers from the deliveries in the store and moves their standings there (a
//! compare-and-set, so that of instances judging at once one moves each); every instance then
//! loads every standing into its own routing. Whichever instance moved a standing announces
//! it, so each move is announced once.

mod judge;

use judge::{Move, judge};

use crate::config::HealthSettings;
use crate::events::{ProviderMoved, Publisher};
use crate::metrics::{Metrics, SegmentLabels};
use crate::providers::Providers;
use crate::store::{Score, Standing, Store, StoreError};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Health {
    pub store: Store,
    pub providers: Arc<Providers>,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub settings: HealthSettings,
}

type Key = (String, String);

impl Health {
    /// Checks every `check_interval_ms` until shutdown.
    pub async fn run(&self, shutdown: CancellationToken) {
        if !self.settings.enabled {
            return;
        }
        let mut every = tokio::time::interval(self.settings.check_interval());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    if let Err(e) = self.check().await {
                        tracing::warn!(error = %e, "delivery-health check failed; routing keeps its last standings until the next one");
                    }
                }
            }
        }
    }

    /// One check: scores, moves, loads the standings into routing, then announces the moves
    /// this instance made, so that whoever acts on an alert finds routing already changed.
    pub async fn check(&self) -> Result<(), StoreError> {
        let judged = self.providers.judged();
        let every = self.settings.check_interval();
        let mut standings = self.store.standings().await?;
        let moved = match !judged.is_empty() && self.store.take_health_check(every).await? {
            true => self.judge_all(&judged, &standings).await?,
            false => Vec::new(),
        };
        if !moved.is_empty() {
            standings = self.store.standings().await?;
        }
        self.providers.set_standings(standings.iter().map(|s| {
            let level = u8::try_from(s.level).unwrap_or(u8::MAX);
            (s.provider.as_str(), s.country.as_str(), level)
        }));
        for s in &standings {
            self.metrics
                .provider_demotion
                .get_or_create(&SegmentLabels {
                    provider: s.provider.clone(),
                    country: s.country.clone(),
                })
                .set(i64::from(s.level));
        }
        for (score, from, to) in moved {
            self.announce(&score, from, to).await;
        }
        Ok(())
    }

    /// Moves the standings the scores call for; returns the moves this instance made.
    async fn judge_all(
        &self,
        judged: &[String],
        standings: &[Standing],
    ) -> Result<Vec<(Score, i32, i32)>, StoreError> {
        let h = &self.settings;
        let (now, scores) = self
            .store
            .health_scores(judged, h.window(), h.receipt_timeout())
            .await?;
        let mut keys: BTreeMap<Key, (Option<Score>, Option<&Standing>)> = BTreeMap::new();
        for s in scores {
            let key = (s.provider.clone(), s.country.clone());
            keys.entry(key).or_default().0 = Some(s);
        }
        for s in standings.iter().filter(|s| judged.contains(&s.provider)) {
            let key = (s.provider.clone(), s.country.clone());
            keys.entry(key).or_default().1 = Some(s);
        }
        let max_level = i32::from(self.providers.max_demotion());
        let mut moved = Vec::new();
        for ((provider, country), (score, standing)) in keys {
            let level = standing.map_or(0, |s| s.level);
            let to = match judge(score.as_ref(), standing, now, h, max_level) {
                Move::Down => level + 1,
                Move::Up => level - 1,
                Move::Stay => continue,
            };
            let score = score.unwrap_or(Score {
                provider,
                country,
                delivered: 0,
                not_delivered: 0,
                p95_ms: None,
            });
            if self.store.move_standing(standing, to, &score).await? {
                moved.push((score, level, to));
            }
        }
        Ok(moved)
    }

    async fn announce(&self, score: &Score, from: i32, to: i32) {
        let samples = score.delivered + score.not_delivered;
        let ratio = (samples > 0).then(|| score.delivered as f64 / samples as f64);
        let (provider, country, p95) = (&score.provider, &score.country, score.p95_ms);
        let event = if to > from {
            tracing::warn!(provider, country, level = to, delivered = score.delivered, not_delivered = score.not_delivered, p95_ms = ?p95, "provider demoted for poor delivery: traffic to this country goes to the next provider of its chains first");
            "provider_demoted"
        } else {
            tracing::info!(
                provider,
                country,
                level = to,
                "provider restored one place after a window without a poor delivery score"
            );
            "provider_restored"
        };
        let alert = ProviderMoved {
            version: 1,
            event,
            provider,
            country,
            level: to,
            delivered: score.delivered,
            not_delivered: score.not_delivered,
            delivered_ratio: ratio,
            p95_ms: p95,
            at: Utc::now(),
        };
        if let Err(e) = self.publisher.publish_alert(event, &alert).await {
            tracing::warn!(error = %e, event, "could not publish the delivery-health alert");
        }
    }
}
