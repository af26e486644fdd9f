//! Domain types: everything that crosses the edge is parsed into these once, so the rest of the
//! daemon never sees an unvalidated phone number, address or code.

mod fail;
pub mod fallback;
mod ids;
pub mod job;
mod limit;
mod mask;
mod outcome;
mod rejection;
mod secret_code;
mod state;
pub mod text;

pub use fail::FailReason;
pub use ids::{AccountId, ChallengeId};
pub use job::{Job, parse_locale};
pub use limit::{Counter, Refusal};
pub use mask::{mask_email, mask_phone};
pub use outcome::Outcome;
pub use rejection::{RejectReason, Rejection};
pub use secret_code::OtpCode;
pub use state::DeliveryState;

use std::fmt;

/// The delivery channels of the v1 contract. The routing key of a job equals its channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Voice,
    /// A WhatsApp authentication template (Meta's Cloud API).
    Whatsapp,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Sms,
        Channel::Voice,
        Channel::Whatsapp,
        Channel::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
            Channel::Whatsapp => "whatsapp",
            Channel::Email => "email",
        }
    }

    /// Whether the channel's destinations are phone numbers (sms, voice, whatsapp).
    pub fn is_phone(self) -> bool {
        !matches!(self, Channel::Email)
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated E.164 phone number. Parsing goes through the `phonenumber` crate so that numbers
/// that cannot exist (wrong length for the country, unassigned ranges) are refused at intake.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    e164: String,
    /// ISO 3166 alpha-2 region ("GB"), or "001" for non-geographic numbers.
    country: String,
    /// phonenumber's classification, snake_case ("mobile", "premium_rate", …).
    number_type: &'static str,
}

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<PhoneNumber, String> {
        if !raw.starts_with('+') {
            return Err("phone numbers must be in E.164 form, starting with +".into());
        }
        let parsed =
            phonenumber::parse(None, raw).map_err(|e| format!("not a phone number: {e}"))?;
        // One look-up of the number's region serves validity and country (phonenumber's own
        // `is_valid` and `country().id()` would each search for it again); the number is valid
        // exactly when its type is known, which is how `is_valid` decides too.
        let metadata = parsed.metadata(&phonenumber::metadata::DATABASE);
        let number_type = parsed.number_type(&phonenumber::metadata::DATABASE);
        let (Some(metadata), false) = (metadata, number_type == phonenumber::Type::Unknown) else {
            return Err("not a valid phone number for its country".into());
        };
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        if e164 != raw {
            return Err(
                "phone numbers must be in canonical E.164 form (digits only after +)".into(),
            );
        }
        let country = metadata
            .id()
            .parse::<phonenumber::country::Id>()
            .map_or_else(|_| "001".to_string(), |id| id.as_ref().to_string());
        let number_type = type_name(number_type);
        Ok(PhoneNumber {
            e164,
            country,
            number_type,
        })
    }

    pub fn as_e164(&self) -> &str {
        &self.e164
    }

    pub fn country(&self) -> &str {
        &self.country
    }

    pub fn number_type(&self) -> &'static str {
        self.number_type
    }

    /// The first `n` digits after the `+` (the country code included): a number range.
    pub fn prefix(&self, n: usize) -> &str {
        let digits = &self.e164[1..];
        &digits[..n.min(digits.len())]
    }
}

fn type_name(t: phonenumber::Type) -> &'static str {
    use phonenumber::Type as T;
    match t {
        T::FixedLine => "fixed_line",
        T::Mobile => "mobile",
        T::FixedLineOrMobile => "fixed_line_or_mobile",
        T::TollFree => "toll_free",
        T::PremiumRate => "premium_rate",
        T::SharedCost => "shared_cost",
        T::PersonalNumber => "personal_number",
        T::Voip => "voip",
        T::Pager => "pager",
        T::Uan => "uan",
        T::Emergency => "emergency",
        T::Voicemail => "voicemail",
        T::ShortCode => "short_code",
        T::StandardRate => "standard_rate",
        T::Carrier => "carrier",
        T::NoInternational => "no_international",
        T::Unknown => "unknown",
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", mask_phone(&self.e164))
    }
}

/// A syntactically valid email address, parsed by lettre so that whatever intake accepts the
/// SMTP provider can also address.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(lettre::Address);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<EmailAddress, String> {
        if raw.len() > 254 {
            return Err("email address longer than 254 characters".into());
        }
        raw.parse::<lettre::Address>()
            .map(EmailAddress)
            .map_err(|e| format!("not an email address: {e}"))
    }

    pub fn as_address(&self) -> &lettre::Address {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", mask_email(self.as_str()))
    }
}

/// Where a code goes. The variant always matches the job's channel: intake refuses a phone
/// number on the email channel and an address on sms/voice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Phone(PhoneNumber),
    Email(EmailAddress),
}

impl Destination {
    /// The full destination, for providers and the keyed HMAC only.
    pub fn expose(&self) -> &str {
        match self {
            Destination::Phone(p) => p.as_e164(),
            Destination::Email(e) => e.as_str(),
        }
    }

    /// The form that may be stored and shown: enough for a support agent to recognise, not
    /// enough to contact the person.
    pub fn masked(&self) -> String {
        match self {
            Destination::Phone(p) => mask_phone(p.as_e164()),
            Destination::Email(e) => mask_email(e.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_canonical_e164_and_valid() {
        assert!(PhoneNumber::parse("+14155550123").is_ok());
        assert!(PhoneNumber::parse("+447911123456").is_ok());
        assert!(PhoneNumber::parse("14155550123").is_err(), "missing +");
        assert!(
            PhoneNumber::parse("+1 415 555 0123").is_err(),
            "not canonical"
        );
        assert!(PhoneNumber::parse("+1415").is_err(), "too short");
        assert!(
            PhoneNumber::parse("+99912345678").is_err(),
            "no such country"
        );
        assert!(PhoneNumber::parse("hello").is_err());
    }

    #[test]
    fn debug_output_masks_destinations() {
        let p = PhoneNumber::parse("+14155550123").unwrap();
        assert_eq!(format!("{p:?}"), "PhoneNumber(+1415•••0123)");
        let e = EmailAddress::parse("jane.doe@example.com").unwrap();
        assert_eq!(format!("{e:?}"), "EmailAddress(j•••@example.com)");
    }

    #[test]
    fn email_addresses_are_checked() {
        assert!(EmailAddress::parse("a@example.com").is_ok());
        assert!(EmailAddress::parse("not-an-address").is_err());
        assert!(EmailAddress::parse("a@").is_err());
    }

    #[test]
    fn channels_round_trip_through_their_names() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("fax"), None);
    }
}
