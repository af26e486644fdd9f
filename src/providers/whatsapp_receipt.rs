//! Meta's WhatsApp webhooks, read without touching the store: the verification handshake, the
//! `X-Hub-Signature-256` check and the mapping of message statuses to otpd's receipt states.

use super::Receipt;
use crate::domain::DeliveryState;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The answer to Meta's subscription handshake (`GET ?hub.mode=subscribe&hub.verify_token=…
/// &hub.challenge=…`): the challenge, when the token is one of ours. The comparison is in
/// constant time; an empty configured token never matches.
pub fn handshake<'q, 't>(
    query: &'q [(String, String)],
    tokens: impl IntoIterator<Item = &'t str>,
) -> Option<&'q str> {
    use subtle::ConstantTimeEq;
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some("subscribe"), Some(token), Some(challenge)) = (
        get("hub.mode"),
        get("hub.verify_token"),
        get("hub.challenge"),
    ) else {
        return None;
    };
    let ours = tokens
        .into_iter()
        .filter(|t| !t.is_empty())
        .any(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
    // The challenge is echoed as the body: only digits are, so nothing else can be reflected.
    let plain = !challenge.is_empty()
        && challenge.len() <= 64
        && challenge.bytes().all(|b| b.is_ascii_digit());
    (ours && plain).then_some(challenge)
}

/// `sha256=` and the hex HMAC-SHA256 of the raw body, keyed with the app secret: the header
/// Meta sends, for tests and fakes.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = mac(app_secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `X-Hub-Signature-256` over the raw body in constant time. A missing prefix, bad hex
/// or an empty secret fails.
pub fn verify(app_secret: &str, body: &[u8], header: &str) -> bool {
    let Some(claimed) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(claimed) = hex::decode(claimed) else {
        return false;
    };
    if app_secret.is_empty() {
        return false;
    }
    let mut mac = mac(app_secret);
    mac.update(body);
    mac.verify_slice(&claimed).is_ok()
}

fn mac(key: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length")
}

/// The final statuses in a webhook body, each with the business number's id that sent it.
/// `delivered` and `read` are delivered, `failed` undelivered with Meta's error code; `sent`
/// is not a receipt (otpd already knows the message left). Anything malformed is skipped.
pub fn read(body: &[u8]) -> Vec<(String, Receipt)> {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let entries = json.get("entry").and_then(Value::as_array);
    for change in entries.into_iter().flatten().flat_map(changes) {
        let value = &change["value"];
        let Some(number) = value
            .pointer("/metadata/phone_number_id")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let statuses = value.get("statuses").and_then(Value::as_array);
        for status in statuses.into_iter().flatten() {
            if let Some(receipt) = receipt(status) {
                out.push((number.to_string(), receipt));
            }
        }
    }
    out
}

fn changes(entry: &Value) -> impl Iterator<Item = &Value> {
    entry
        .get("changes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn receipt(status: &Value) -> Option<Receipt> {
    let sid = status.get("id")?.as_str()?.to_string();
    let state = match status.get("status")?.as_str()? {
        "delivered" | "read" => DeliveryState::Delivered,
        "failed" => DeliveryState::Undelivered,
        _ => return None,
    };
    let error = status
        .pointer("/errors/0/code")
        .and_then(|c| c.as_i64().map(|c| c.to_string()));
    Some(Receipt { sid, state, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_handshake_echoes_the_challenge_only_for_our_token() {
        let ok = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "tok"),
            ("hub.challenge", "1158201444"),
        ]);
        assert_eq!(handshake(&ok, ["other", "tok"]), Some("1158201444"));
        assert_eq!(handshake(&ok, ["other"]), None);
        assert_eq!(handshake(&ok, [""]), None);
        let mut bad = ok.clone();
        bad[0].1 = "unsubscribe".into();
        assert_eq!(handshake(&bad, ["tok"]), None);
        let mut script = ok.clone();
        script[2].1 = "<script>".into();
        assert_eq!(handshake(&script, ["tok"]), None, "only digits are echoed");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_raw_body() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let header = signature("app-secret", body);
        assert!(header.starts_with("sha256=") && header.len() == 7 + 64);
        assert!(verify("app-secret", body, &header));
        assert!(!verify("other", body, &header));
        assert!(!verify("app-secret", b"{}", &header));
        assert!(!verify(
            "app-secret",
            body,
            header.trim_start_matches("sha256=")
        ));
        assert!(!verify("app-secret", body, "sha256=zz"));
        assert!(!verify("", body, &signature("", body)));
    }

    #[test]
    fn statuses_map_to_receipts_and_sent_is_not_one() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"106540352242922"},
            "statuses":[
              {"id":"wamid.A","status":"sent","timestamp":"1","recipient_id":"14155550123"},
              {"id":"wamid.A","status":"delivered","timestamp":"2","recipient_id":"14155550123"},
              {"id":"wamid.B","status":"read","timestamp":"3","recipient_id":"14155550124"},
              {"id":"wamid.C","status":"failed","timestamp":"4","recipient_id":"14155550125",
               "errors":[{"code":131026,"title":"Message undeliverable"}]},
              {"status":"failed"}
            ]}}]}]}"#;
        let got = read(body);
        let states: Vec<_> = got
            .iter()
            .map(|(n, r)| (n.as_str(), r.sid.as_str(), r.state, r.error.as_deref()))
            .collect();
        assert_eq!(
            states,
            [
                ("106540352242922", "wamid.A", DeliveryState::Delivered, None),
                ("106540352242922", "wamid.B", DeliveryState::Delivered, None),
                (
                    "106540352242922",
                    "wamid.C",
                    DeliveryState::Undelivered,
                    Some("131026")
                ),
            ]
        );
        assert!(read(b"not json").is_empty());
        assert!(
            read(
                br#"{"entry":[{"changes":[{"value":{"statuses":[{"id":"x","status":"read"}]}}]}]}"#
            )
            .is_empty()
        );
    }
}
