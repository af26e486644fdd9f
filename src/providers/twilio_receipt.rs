//! Twilio's status callbacks, read without touching the store: the `X-Twilio-Signature` check
//! and the mapping of message and call statuses to otpd's receipt states.

use super::Receipt;
use crate::domain::DeliveryState;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Twilio's signature: base64 of HMAC-SHA1, keyed with the account's auth token, over the full
/// URL Twilio requested followed by every POST parameter's name and value, sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mac = signed_mac(auth_token, url, params);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a callback's signature in constant time. A missing or undecodable header fails.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(claimed) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    signed_mac(auth_token, url, params)
        .verify_slice(&claimed)
        .is_ok()
}

fn signed_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// What a callback says, if it is final. Interim statuses (queued, sending, sent, ringing,
/// in-progress) are not receipts: otpd already knows the message left.
pub fn read(params: &[(String, String)]) -> Option<Receipt> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let error = get("ErrorCode")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    if let (Some(sid), Some(status)) = (get("MessageSid"), get("MessageStatus")) {
        let state = match status {
            "delivered" | "read" => DeliveryState::Delivered,
            "undelivered" | "failed" => DeliveryState::Undelivered,
            _ => return None,
        };
        let sid = sid.to_string();
        return Some(Receipt { sid, state, error });
    }
    let (sid, status) = (get("CallSid")?, get("CallStatus")?);
    let state = match status {
        "completed" => DeliveryState::Delivered,
        "busy" | "no-answer" | "failed" | "canceled" => DeliveryState::Undelivered,
        _ => return None,
    };
    let error = match state {
        DeliveryState::Undelivered => error.or_else(|| Some(status.to_string())),
        _ => None,
    };
    Some(Receipt {
        sid: sid.to_string(),
        state,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The worked example of Twilio's security documentation (the value was cross-checked
    /// with Python's hmac module).
    #[test]
    fn signature_matches_twilios_documented_example() {
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let sig = signature("12345", url, &params);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify("12345", url, &params, &sig));
        assert!(!verify(
            "12345",
            url,
            &params,
            "1/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!verify("54321", url, &params, &sig));
        assert!(!verify("12345", url, &params, "not base64!"));
        let mut tampered = params.clone();
        tampered[2].1 = "9999".into();
        assert!(!verify("12345", url, &tampered, &sig));
    }

    #[test]
    fn final_statuses_are_receipts_and_interim_ones_are_not() {
        let r = read(&p(&[("MessageSid", "SM1"), ("MessageStatus", "delivered")])).unwrap();
        assert_eq!(
            (r.sid.as_str(), r.state, r.error),
            ("SM1", DeliveryState::Delivered, None)
        );
        let r = read(&p(&[
            ("MessageSid", "SM2"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]))
        .unwrap();
        assert_eq!(r.state, DeliveryState::Undelivered);
        assert_eq!(r.error.as_deref(), Some("30003"));
        for interim in ["queued", "sending", "sent", "accepted"] {
            assert!(read(&p(&[("MessageSid", "SM3"), ("MessageStatus", interim)])).is_none());
        }
        let call = read(&p(&[("CallSid", "CA1"), ("CallStatus", "no-answer")])).unwrap();
        assert_eq!(call.state, DeliveryState::Undelivered);
        assert_eq!(call.error.as_deref(), Some("no-answer"));
        let call = read(&p(&[("CallSid", "CA2"), ("CallStatus", "completed")])).unwrap();
        assert_eq!(call.state, DeliveryState::Delivered);
        assert!(read(&p(&[("CallSid", "CA3"), ("CallStatus", "ringing")])).is_none());
        assert!(read(&p(&[("Foo", "bar")])).is_none());
    }
}
