//! Geo permissions: which countries and number types a phone channel may send to. Pure.

use crate::config::{CountryRules, GeoSettings};
use crate::domain::{Channel, PhoneNumber};
use std::collections::BTreeSet;

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeoRefusal {
    Country(String),
    NumberType(&'static str),
}

struct Countries {
    /// Empty: every country not denied.
    allow: BTreeSet<String>,
    deny: BTreeSet<String>,
}

impl Countries {
    fn new(r: &CountryRules) -> Countries {
        let set = |l: &[String]| l.iter().map(|c| c.to_ascii_uppercase()).collect();
        Countries {
            allow: set(&r.allow.0),
            deny: set(&r.deny.0),
        }
    }

    fn permits(&self, country: &str) -> bool {
        !self.deny.contains(country) && (self.allow.is_empty() || self.allow.contains(country))
    }
}

pub struct Geo {
    deny_types: BTreeSet<String>,
    sms: Countries,
    voice: Countries,
    whatsapp: Countries,
}

impl Geo {
    pub fn new(s: &GeoSettings) -> Geo {
        Geo {
            deny_types: s.deny_number_types.0.iter().cloned().collect(),
            sms: Countries::new(&s.sms),
            voice: Countries::new(&s.voice),
            whatsapp: Countries::new(&s.whatsapp),
        }
    }

    pub fn check(&self, channel: Channel, phone: &PhoneNumber) -> Result<(), GeoRefusal> {
        let countries = match channel {
            Channel::Sms => &self.sms,
            Channel::Voice => &self.voice,
            Channel::Whatsapp => &self.whatsapp,
            Channel::Email => return Ok(()),
        };
        if !countries.permits(phone.country()) {
            return Err(GeoRefusal::Country(phone.country().to_string()));
        }
        if self.deny_types.contains(phone.number_type()) {
            return Err(GeoRefusal::NumberType(phone.number_type()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StringList;

    fn list(items: &[&str]) -> StringList {
        StringList(items.iter().map(|s| s.to_string()).collect())
    }

    fn geo(allow: &[&str], deny: &[&str]) -> Geo {
        Geo::new(&GeoSettings {
            deny_number_types: list(&["premium_rate", "shared_cost", "unknown"]),
            sms: CountryRules {
                allow: list(allow),
                deny: list(deny),
            },
            voice: CountryRules::default(),
            whatsapp: CountryRules {
                allow: list(&[]),
                deny: list(deny),
            },
        })
    }

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap()
    }

    #[test]
    fn denied_countries_are_refused_and_others_pass() {
        let g = geo(&[], &["gb"]);
        assert_eq!(
            g.check(Channel::Sms, &phone("+447400123456")),
            Err(GeoRefusal::Country("GB".into()))
        );
        assert_eq!(g.check(Channel::Sms, &phone("+14155550123")), Ok(()));
        assert_eq!(
            g.check(Channel::Voice, &phone("+447400123456")),
            Ok(()),
            "per channel"
        );
        assert_eq!(
            g.check(Channel::Whatsapp, &phone("+447400123456")),
            Err(GeoRefusal::Country("GB".into())),
            "whatsapp has its own list"
        );
        assert_eq!(g.check(Channel::Email, &phone("+447400123456")), Ok(()));
    }

    #[test]
    fn an_allow_list_admits_only_its_countries() {
        let g = geo(&["US", "CA"], &[]);
        assert_eq!(g.check(Channel::Sms, &phone("+14155550123")), Ok(()));
        assert!(g.check(Channel::Sms, &phone("+33612345678")).is_err());
    }

    #[test]
    fn premium_rate_and_shared_cost_numbers_are_refused() {
        let g = geo(&[], &[]);
        // UK 09 numbers are premium rate, French 081 numbers shared cost; UK 07400 is a mobile.
        assert_eq!(
            g.check(Channel::Sms, &phone("+449098790000")),
            Err(GeoRefusal::NumberType("premium_rate"))
        );
        assert_eq!(
            g.check(Channel::Sms, &phone("+33810123456")),
            Err(GeoRefusal::NumberType("shared_cost"))
        );
        assert_eq!(phone("+447400123456").number_type(), "mobile");
        assert_eq!(g.check(Channel::Sms, &phone("+447400123456")), Ok(()));
    }
}
