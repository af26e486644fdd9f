//! Delivery-health standings as routing applies them: per destination country, how many places
//! each provider has been moved down its chains. `crate::health` decides the standings from
//! receipts and shares them through the store; this only orders a chain by them.

use crate::config::{ProviderConfig, SmppBind};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// A destination's region (`GB`, or `001` for non-geographic numbers) as a copyable key;
/// empty where a destination has none (email).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Country {
    bytes: [u8; 3],
    len: u8,
}

impl Country {
    /// Longer codes are cut to three bytes; every region id is at most three ASCII letters.
    pub fn new(code: &str) -> Country {
        let mut c = Country::default();
        for (i, b) in code.bytes().filter(u8::is_ascii).take(3).enumerate() {
            c.bytes[i] = b;
            c.len = i as u8 + 1;
        }
        c
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// Per country, the level of each provider slot (by index); countries where every provider
/// keeps its place are absent.
#[derive(Default)]
pub struct Standings(RwLock<HashMap<Country, Vec<u8>>>);

impl Standings {
    /// Replaces every standing: `(slot, country, level)`.
    pub fn set(&self, levels: impl IntoIterator<Item = (usize, Country, u8)>) {
        let mut map: HashMap<Country, Vec<u8>> = HashMap::new();
        for (slot, country, level) in levels.into_iter().filter(|l| l.2 > 0) {
            let row = map.entry(country).or_default();
            if row.len() <= slot {
                row.resize(slot + 1, 0);
            }
            row[slot] = level;
        }
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = map;
    }

    /// `chain` in the order routing tries it for a destination in `country`.
    pub fn order<'a>(&self, chain: &'a [usize], country: Country) -> Cow<'a, [usize]> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match map.get(&country) {
            Some(levels) => Cow::Owned(ordered(chain, levels)),
            None => Cow::Borrowed(chain),
        }
    }
}

/// A chain with each provider moved `levels[slot]` places down: sorted by position plus level,
/// and on a tie the more demoted one last, so that a provider one level down sits just behind
/// the provider that followed it. Pure.
pub fn ordered(chain: &[usize], levels: &[u8]) -> Vec<usize> {
    let level = |slot: usize| usize::from(levels.get(slot).copied().unwrap_or(0));
    let mut keyed: Vec<(usize, usize, usize)> = chain
        .iter()
        .enumerate()
        .map(|(position, &slot)| (position + level(slot), level(slot), slot))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, slot)| slot).collect()
}

/// Whether otpd hears this provider's delivery receipts, so that its delivery health can be
/// judged: a provider that never reports would look as if nothing it sent arrived.
pub fn hears_receipts(config: &ProviderConfig, twilio_callback: bool) -> bool {
    match config {
        ProviderConfig::Twilio(_) => twilio_callback,
        ProviderConfig::Smpp(p) => p.bind == SmppBind::Transceiver && p.registered_delivery,
        ProviderConfig::WhatsappCloud(_) => true,
        ProviderConfig::Http(h) => h.receipts.is_some(),
        ProviderConfig::Log(_) | ProviderConfig::Smtp(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demoted_provider_moves_one_place_per_level() {
        assert_eq!(ordered(&[0, 1, 2], &[1]), [1, 0, 2]);
        assert_eq!(ordered(&[0, 1, 2], &[2]), [1, 2, 0]);
        assert_eq!(ordered(&[0, 1, 2], &[5]), [1, 2, 0]);
        assert_eq!(ordered(&[0, 1, 2], &[0, 1]), [0, 2, 1]);
        assert_eq!(ordered(&[2, 0], &[0, 0, 1]), [0, 2]);
        assert_eq!(ordered(&[0, 1], &[]), [0, 1]);
    }

    #[test]
    fn standings_apply_per_country_only() {
        let s = Standings::default();
        s.set([(0, Country::new("GB"), 1), (1, Country::new("US"), 0)]);
        assert_eq!(&*s.order(&[0, 1], Country::new("GB")), &[1, 0]);
        assert_eq!(&*s.order(&[0, 1], Country::new("US")), &[0, 1]);
        assert_eq!(&*s.order(&[0, 1], Country::default()), &[0, 1]);
        assert_eq!(Country::new("001").as_str(), "001");
        assert_eq!(Country::new("").as_str(), "");
    }
}
