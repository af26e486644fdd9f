//! The provider instances, each with its circuit breaker and adaptive concurrency, and the
//! ordered failover chain of each channel.
//!
//! The dispatcher asks [`Providers::pick`] for a provider per attempt, [`Providers::reserve`]s
//! a call slot (which may wait: this is where a stalled or rate-limited provider holds jobs
//! back, without holding memory beyond the prefetch), then [`Providers::send`]s. The breaker
//! and the throttle learn from every result here, so the dispatcher only decides what the
//! result means for its job.

use super::breaker::{Admit, BreakerState};
use super::build::{Built, Slot, lock};
use super::standing::{Country, Standings};
use super::throttle;
use super::{BuildError, ProviderError, Sent};
use crate::config::{RouteKey, Settings};
use crate::domain::{Channel, Destination};
use crate::metrics::{Metrics, ProviderNameLabels, ProviderReasonLabels};
use crate::render::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Which provider the next attempt goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The index of the provider to call; `probe` when this call is its breaker's half-open
    /// probe.
    Use { index: usize, probe: bool },
    /// Every provider of the chain has its breaker open: none before this instant.
    WaitUntil(Instant),
}

/// A reserved call: a slot under the provider's limit and one under the global limit.
pub struct Reservation {
    index: usize,
    _provider: throttle::Slot,
    _global: Option<OwnedSemaphorePermit>,
}

/// The result of one provider call and how long it took.
pub struct Attempted {
    pub result: Result<Sent, ProviderError>,
    pub latency: Duration,
}

/// The failover chain a job's attempts use, chosen by [`Providers::route`] from its channel and
/// destination, and the destination's country, whose delivery-health standings order it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    chain: usize,
    country: Country,
}

pub struct Providers {
    slots: Vec<Slot>,
    /// Every chain, as indexes into `slots`.
    chains: Vec<Vec<usize>>,
    /// The fallback chain of each channel, in `Channel::ALL` order.
    defaults: [usize; Channel::ALL.len()],
    /// Per channel: E.164 prefixes (longest first) and countries, each with its chain.
    routes: [Vec<(RouteKey, usize)>; Channel::ALL.len()],
    in_flight: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    standings: Standings,
}

fn channel_index(channel: Channel) -> usize {
    match channel {
        Channel::Sms => 0,
        Channel::Voice => 1,
        Channel::Whatsapp => 2,
        Channel::Email => 3,
    }
}

impl Providers {
    /// Builds every provider a chain names (others are not built: a declared but unused
    /// instance may be incomplete). Settings were validated, so the names resolve.
    /// `receipts` takes the delivery receipts of providers that receive them on their own
    /// session (SMPP); `crate::receipts` applies them.
    pub fn from_settings(
        s: &Settings,
        metrics: Arc<Metrics>,
        receipts: mpsc::UnboundedSender<super::Heard>,
    ) -> Result<Providers, BuildError> {
        let mut built = Built {
            slots: Vec::new(),
            chains: Vec::new(),
            settings: s,
            receipts,
        };
        let mut defaults = [0; Channel::ALL.len()];
        let mut routes: [Vec<(RouteKey, usize)>; Channel::ALL.len()] = Default::default();
        for channel in Channel::ALL {
            defaults[channel_index(channel)] = built.chain(s.channels.chain(channel))?;
            let mut these = Vec::new();
            for (key, chain) in s.channels.routes.of(channel).into_iter().flatten() {
                let key = RouteKey::parse(key).ok_or_else(|| BuildError::Unknown(key.clone()))?;
                these.push((key, built.chain(chain)?));
            }
            // Prefixes before countries, longer prefixes first: the most specific route wins.
            these.sort_by_key(|(k, _)| match k {
                RouteKey::Prefix(p) => (0, usize::MAX - p.len()),
                RouteKey::Country(_) => (1, 0),
            });
            routes[channel_index(channel)] = these;
        }
        let Built { slots, chains, .. } = built;
        for channel in Channel::ALL {
            metrics.start_channel(channel.as_str());
            let used = std::iter::once(defaults[channel_index(channel)])
                .chain(routes[channel_index(channel)].iter().map(|(_, c)| *c));
            for index in used.flat_map(|c| chains[c].iter()) {
                metrics.start_provider(&slots[*index].name, channel.as_str());
            }
        }
        for slot in &slots {
            metrics
                .breaker_state
                .get_or_create(&ProviderNameLabels {
                    provider: slot.name.clone(),
                })
                .set(0);
        }
        Ok(Providers {
            slots,
            chains,
            defaults,
            routes,
            in_flight: Arc::new(Semaphore::new(s.delivery.max_in_flight as usize)),
            metrics,
            standings: Standings::default(),
        })
    }

    /// The chain for a job on `channel` to `to`: the most specific matching route, or the
    /// channel's own chain.
    pub fn route(&self, channel: Channel, to: &Destination) -> Route {
        let i = channel_index(channel);
        let Destination::Phone(phone) = to else {
            return Route {
                chain: self.defaults[i],
                country: Country::default(),
            };
        };
        let matched = self.routes[i].iter().find(|(key, _)| match key {
            RouteKey::Prefix(p) => phone.as_e164().starts_with(p.as_str()),
            RouteKey::Country(c) => phone.country() == c,
        });
        Route {
            chain: matched.map_or(self.defaults[i], |(_, chain)| *chain),
            country: Country::new(phone.country()),
        }
    }

    /// The providers whose delivery health is judged: those whose receipts reach otpd.
    pub fn judged(&self) -> Vec<String> {
        let heard = self.slots.iter().filter(|s| s.hears_receipts);
        heard.map(|s| s.name.clone()).collect()
    }

    /// The most places a provider can usefully be moved down: its longest chain's length − 1.
    pub fn max_demotion(&self) -> u8 {
        let longest = self.chains.iter().map(Vec::len).max().unwrap_or(1);
        u8::try_from(longest.saturating_sub(1)).unwrap_or(u8::MAX)
    }

    /// Replaces the delivery-health standings: `(provider, country, level)`; unknown providers
    /// (another instance's configuration) are passed over.
    pub fn set_standings<'a>(&self, levels: impl IntoIterator<Item = (&'a str, &'a str, u8)>) {
        let known = levels.into_iter().filter_map(|(name, country, level)| {
            let slot = self.slots.iter().position(|s| s.name == name)?;
            Some((slot, Country::new(country), level))
        });
        self.standings.set(known);
    }

    /// Whether a job on `channel` to `to` has a provider other than `index` to fail over to.
    pub fn can_fail_over(&self, channel: Channel, to: &Destination, index: usize) -> bool {
        self.has_alternative(self.route(channel, to), index)
    }

    /// Whether the route's chain has a provider other than `index` to fail over to.
    pub fn has_alternative(&self, route: Route, index: usize) -> bool {
        self.chains[route.chain].iter().any(|&i| i != index)
    }

    pub fn name(&self, index: usize) -> &str {
        &self.slots[index].name
    }

    /// Chooses the provider for the next attempt of a job on `route`: the first in chain
    /// order (after delivery-health standings) whose breaker admits a call, passing over
    /// `avoid` (the provider that failed this job's previous attempt) while another is admitted.
    pub fn pick(&self, route: Route, avoid: Option<usize>) -> Pick {
        let chain = self
            .standings
            .order(&self.chains[route.chain], route.country);
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        let preferred = chain.iter().filter(|&&i| Some(i) != avoid);
        let last_resort = chain.iter().filter(|&&i| Some(i) == avoid);
        for &index in preferred.chain(last_resort) {
            match self.admit(index, now) {
                Admit::Yes { probe } => return Pick::Use { index, probe },
                Admit::NotUntil(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
            }
        }
        // A chain is never empty (validated), so `earliest` is set when nothing was admitted.
        Pick::WaitUntil(earliest.unwrap_or(now))
    }

    fn admit(&self, index: usize, now: Instant) -> Admit {
        let slot = &self.slots[index];
        let admit = lock(&slot.breaker).admit(now);
        if let Admit::Yes { probe: true } = admit {
            tracing::info!(provider = %slot.name, "circuit breaker half-open: probing the provider");
            self.gauge(slot, lock(&slot.breaker).state());
        }
        admit
    }

    /// Waits for a call slot on provider `index` and under the global in-flight limit.
    /// Cancel-safe: dropping the future takes nothing.
    ///
    /// With `recheck` (the call is not the breaker's probe, and its chain has another
    /// provider), `None` when the provider's breaker left `closed` while this call waited: the
    /// caller picks again. Without this, every job queued behind a provider's slots when it
    /// fails would still call it (a thousand at prefetch 1000) instead of failing over. With
    /// nowhere to fail over to, the call goes ahead: re-picking would only park it until the
    /// probe, and a flaky provider's breaker would then throttle all its traffic to one call
    /// per window.
    pub async fn reserve(&self, index: usize, recheck: bool) -> Option<Reservation> {
        let slot = &self.slots[index];
        let provider = slot.throttle.acquire().await;
        // The semaphore is never closed, so this is always a permit; were it closed, the call
        // would merely go unbounded, which is no reason to drop a delivery.
        let global = Arc::clone(&self.in_flight).acquire_owned().await.ok();
        // Paced last, holding the slots, so that a call starts as soon as its turn comes.
        // `until_ready` takes its cell only when it returns, so cancelling it takes nothing.
        if let Some(pacer) = &slot.pacer {
            pacer.until_ready().await;
        }
        if recheck && !matches!(lock(&slot.breaker).state(), BreakerState::Closed) {
            return None;
        }
        Some(Reservation {
            index,
            _provider: provider,
            _global: global,
        })
    }

    /// Makes the call, bounded by `timeout`, and lets the breaker and throttle learn from it.
    /// `valid_for` is the code's remaining life, which SMS providers pass to the carrier.
    pub async fn send(
        &self,
        reservation: Reservation,
        to: &Destination,
        message: &Message,
        timeout: Duration,
        valid_for: Duration,
    ) -> Attempted {
        let slot = &self.slots[reservation.index];
        let started = Instant::now();
        let call = slot.provider.send(to, message, valid_for);
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Transient {
                status: None,
                detail: format!("no answer within {} ms", timeout.as_millis()),
                in_doubt: true,
            }),
        };
        let latency = started.elapsed();
        drop(reservation);
        let result = super::scrubbed(result);
        self.learn(slot, &result);
        Attempted { result, latency }
    }

    fn learn(&self, slot: &Slot, result: &Result<Sent, ProviderError>) {
        let now = Instant::now();
        let before = lock(&slot.breaker).state();
        match result {
            Ok(_) => {
                slot.throttle.on_success();
                lock(&slot.breaker).on_success();
            }
            Err(ProviderError::RateLimited { .. }) => {
                // Alive but overloaded: slow down, do not fail over.
                slot.throttle.on_rate_limited();
                lock(&slot.breaker).on_success();
            }
            Err(ProviderError::Transient { .. }) => lock(&slot.breaker).on_failure(now),
            Err(e @ ProviderError::Permanent { reason, .. }) if e.is_provider_wide() => {
                tracing::error!(provider = %slot.name, reason = reason.code(), error = %e, "provider refuses every message: check its configuration and account; failing over");
                self.metrics
                    .provider_unusable
                    .get_or_create(&ProviderReasonLabels {
                        provider: slot.name.clone(),
                        reason: reason.code(),
                    })
                    .inc();
                lock(&slot.breaker).trip(now);
            }
            Err(ProviderError::Permanent { .. }) => lock(&slot.breaker).on_success(),
        }
        let after = lock(&slot.breaker).state();
        if before.name() != after.name() {
            match after {
                BreakerState::Open { .. } => {
                    tracing::warn!(provider = %slot.name, "circuit breaker opened: traffic goes to the next provider")
                }
                _ => {
                    tracing::info!(provider = %slot.name, state = after.name(), "circuit breaker changed")
                }
            }
            self.gauge(slot, after);
        }
    }

    fn gauge(&self, slot: &Slot, state: BreakerState) {
        self.metrics
            .breaker_state
            .get_or_create(&ProviderNameLabels {
                provider: slot.name.clone(),
            })
            .set(state.gauge());
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
