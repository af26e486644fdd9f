//! Identifiers from the job contract.

use std::fmt;

/// 1–128 characters of `[A-Za-z0-9._:-]`. The idempotency key of a job: one challenge is
/// delivered at most once, however often its job arrives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChallengeId(String);

impl ChallengeId {
    pub fn parse(raw: &str) -> Result<ChallengeId, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if raw.is_empty() || raw.len() > 128 || !raw.chars().all(allowed) {
            return Err("challenge_id must be 1 to 128 characters of [A-Za-z0-9._:-]".into());
        }
        Ok(ChallengeId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChallengeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1–128 characters, no control characters. Opaque to otpd: it scopes limits and audit queries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(raw: &str) -> Result<AccountId, String> {
        let len = raw.chars().count();
        if len == 0 || len > 128 || raw.chars().any(char::is_control) {
            return Err("account_id must be 1 to 128 characters with no control characters".into());
        }
        Ok(AccountId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_ids_are_restricted() {
        assert!(ChallengeId::parse("login:42.a_b-c").is_ok());
        assert!(ChallengeId::parse(&"a".repeat(128)).is_ok());
        assert!(ChallengeId::parse(&"a".repeat(129)).is_err());
        assert!(ChallengeId::parse("").is_err());
        assert!(ChallengeId::parse("has space").is_err());
        assert!(ChallengeId::parse("semi;colon").is_err());
    }

    #[test]
    fn account_ids_refuse_control_characters() {
        assert!(AccountId::parse("acct-1").is_ok());
        assert!(AccountId::parse("a\nb").is_err());
        assert!(AccountId::parse("").is_err());
    }
}
