//! The one-time code. It is a secret: it is only ever exposed to a provider's request body.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// 4–10 ASCII digits. Wrapped in `SecretString` so it is zeroised on drop and its `Debug`
/// prints `[REDACTED]`; nothing in otpd implements `Display` or `Serialize` for it.
pub struct OtpCode(SecretString);

impl OtpCode {
    pub fn parse(raw: &str) -> Result<OtpCode, String> {
        let ok_len = (4..=10).contains(&raw.len());
        if !ok_len || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err("code must be 4 to 10 ASCII digits".into());
        }
        Ok(OtpCode(SecretString::from(raw)))
    }

    /// For rendering the message body only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_four_to_ten_digits() {
        assert!(OtpCode::parse("1234").is_ok());
        assert!(OtpCode::parse("0123456789").is_ok());
        assert!(OtpCode::parse("123").is_err());
        assert!(OtpCode::parse("12345678901").is_err());
        assert!(OtpCode::parse("12a456").is_err());
        assert!(
            OtpCode::parse("１２３４").is_err(),
            "non-ASCII digits are refused"
        );
    }

    #[test]
    fn debug_never_shows_the_code() {
        let c = OtpCode::parse("987654").unwrap();
        assert!(!format!("{c:?}").contains("987654"));
    }
}
