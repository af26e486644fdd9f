//! Building the provider instances and chains from settings: each named instance once, with
//! its breaker, throttle and pacer, however many chains name it.

use super::breaker::Breaker;
use super::standing::hears_receipts;
use super::throttle::Throttle;
use super::{BuildError, Provider};
use crate::config::{Chain, Settings};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// One configured provider instance.
pub(super) struct Slot {
    pub(super) name: String,
    pub(super) provider: Provider,
    pub(super) breaker: Mutex<Breaker>,
    pub(super) throttle: Arc<Throttle>,
    /// `max_per_second`, in process: the vendor's cap is per sender, not per otpd cluster,
    /// but one instance per sender is the common case and 429s still slow any excess.
    pub(super) pacer: Option<DefaultDirectRateLimiter>,
    /// Whether its receipts reach otpd, so that delivery health may judge it.
    pub(super) hears_receipts: bool,
}

/// The provider instances and chains as they are built: each named instance once, however many
/// chains name it (its breaker and throttle are shared by all of them).
pub(super) struct Built<'a> {
    pub(super) slots: Vec<Slot>,
    pub(super) chains: Vec<Vec<usize>>,
    pub(super) settings: &'a Settings,
    pub(super) receipts: mpsc::UnboundedSender<super::Heard>,
}

impl Built<'_> {
    /// Builds the chain's missing instances and returns the chain's index.
    pub(super) fn chain(&mut self, names: &Chain) -> Result<usize, BuildError> {
        let mut chain = Vec::with_capacity(names.0.len());
        for name in &names.0 {
            let index = match self.slots.iter().position(|slot| &slot.name == name) {
                Some(i) => i,
                None => {
                    self.slots.push(self.slot(name)?);
                    self.slots.len() - 1
                }
            };
            chain.push(index);
        }
        self.chains.push(chain);
        Ok(self.chains.len() - 1)
    }

    fn slot(&self, name: &str) -> Result<Slot, BuildError> {
        let s = self.settings;
        let config = s
            .providers
            .0
            .get(name)
            .ok_or_else(|| BuildError::Unknown(name.to_string()))?;
        let callback = s.http.twilio_callback_url();
        let urls = super::CallbackUrls {
            twilio: callback.clone(),
            http: s.http.http_receipt_url(name),
        };
        Ok(Slot {
            name: name.to_string(),
            hears_receipts: hears_receipts(config, callback.is_some()),
            provider: Provider::build(name, config, urls, &self.receipts)?,
            breaker: Mutex::new(Breaker::new(
                s.delivery.breaker_failures,
                Duration::from_millis(s.delivery.breaker_open_ms),
            )),
            throttle: Throttle::new(config.max_concurrency()),
            pacer: NonZeroU32::new(config.max_per_second())
                .map(|n| RateLimiter::direct(Quota::per_second(n))),
        })
    }
}

pub(super) fn lock(m: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    // Breaker updates are single assignments; a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
