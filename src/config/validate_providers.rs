//! Validation of the provider instances and the chains that name them.

use super::error::{ConfigError, invalid};
use super::{ProviderConfig, Settings, SmtpSettings, TwilioSettings};
use crate::domain::Channel;

/// Every chain names declared providers that can carry its channel, each at most once.
pub(super) fn validate_providers(s: &Settings) -> Result<(), ConfigError> {
    for (name, p) in &s.providers.0 {
        if p.max_concurrency() == 0 {
            return Err(invalid(
                format!("providers.{name}.max_concurrency"),
                "must be at least 1",
            ));
        }
    }
    for channel in Channel::ALL {
        validate_chain(
            s,
            &format!("channels.{channel}"),
            s.channels.chain(channel),
            channel,
        )?;
        for (dest, chain) in s.channels.routes.of(channel).into_iter().flatten() {
            let key = format!("channels.routes.{channel}.{dest}");
            if super::RouteKey::parse(dest).is_none() {
                return Err(invalid(
                    key,
                    "a route is an ISO country code (IN) or an E.164 prefix (\"+4475\")",
                ));
            }
            validate_chain(s, &key, chain, channel)?;
        }
    }
    Ok(())
}

fn validate_chain(
    s: &Settings,
    key: &str,
    chain: &super::Chain,
    channel: Channel,
) -> Result<(), ConfigError> {
    let chain = &chain.0;
    if chain.is_empty() {
        return Err(invalid(key, "must name at least one provider"));
    }
    for (i, name) in chain.iter().enumerate() {
        if chain[..i].contains(name) {
            return Err(invalid(key, format!("names `{name}` twice")));
        }
        let Some(p) = s.providers.0.get(name) else {
            return Err(invalid(
                key,
                format!("names `{name}`, but there is no [providers.{name}]"),
            ));
        };
        match p {
            ProviderConfig::Log(_) => {}
            ProviderConfig::Twilio(t) => validate_twilio(name, t, channel)?,
            ProviderConfig::Smtp(m) => validate_smtp(name, m, channel)?,
            ProviderConfig::Http(h) => validate_http_provider(name, h, channel)?,
            ProviderConfig::Smpp(p) => validate_smpp(name, p, channel)?,
            ProviderConfig::WhatsappCloud(w) => {
                validate_whatsapp(name, w, channel, &s.app.default_locale)?
            }
        }
    }
    Ok(())
}

fn validate_http_provider(
    name: &str,
    h: &super::HttpProviderSettings,
    channel: Channel,
) -> Result<(), ConfigError> {
    if channel != Channel::Sms {
        return Err(invalid(
            format!("channels.{channel}"),
            format!("names `{name}`, an http provider, which carries SMS only"),
        ));
    }
    for (i, rule) in h.rules.iter().enumerate() {
        if rule.status.is_empty() && rule.codes.is_empty() {
            return Err(invalid(
                format!("providers.{name}.rules[{i}]"),
                "a rule needs `status`, `codes` or both",
            ));
        }
    }
    if h.success_status.is_empty() {
        return Err(invalid(
            format!("providers.{name}.success_status"),
            "must list at least one status",
        ));
    }
    if let Some(r) = &h.receipts {
        super::http_receipt::validate_receipts(name, r, h.secrets.keys())?;
    }
    // The request templates are compiled, and rendered with a sample, by `app::compile`.
    Ok(())
}

fn validate_twilio(name: &str, t: &TwilioSettings, channel: Channel) -> Result<(), ConfigError> {
    let key = |field: &str| format!("providers.{name}.{field}");
    let url =
        reqwest::Url::parse(&t.base_url).map_err(|e| invalid(key("base_url"), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(key("base_url"), "must be an http or https URL"));
    }
    if !(t.account_sid.starts_with("AC") && t.account_sid.len() == 34) {
        return Err(invalid(
            key("account_sid"),
            "must be an Account SID (AC + 32 hex digits)",
        ));
    }
    if t.auth_token.is_empty() {
        return Err(invalid(
            key("auth_token"),
            "must be set when a channel uses this provider",
        ));
    }
    let (field, from) = match channel {
        Channel::Voice => ("voice_from", &t.voice_from),
        Channel::Sms => ("sms_from", &t.sms_from),
        Channel::Email | Channel::Whatsapp => {
            return Err(invalid(
                format!("channels.{channel}"),
                format!("`{name}` is a twilio provider, which carries sms and voice only"),
            ));
        }
    };
    if from.is_empty() {
        return Err(invalid(
            key(field),
            format!("must be set because channels.{channel} uses `{name}`"),
        ));
    }
    Ok(())
}

fn validate_smtp(name: &str, m: &SmtpSettings, channel: Channel) -> Result<(), ConfigError> {
    let key = |field: &str| format!("providers.{name}.{field}");
    if channel != Channel::Email {
        return Err(invalid(
            format!("channels.{channel}"),
            format!("`{name}` is an smtp provider, which can deliver only email"),
        ));
    }
    if m.host.is_empty() {
        return Err(invalid(key("host"), "must be set when a channel uses it"));
    }
    if m.from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(invalid(
            key("from"),
            "must be a mailbox such as \"Example <no-reply@example.com>\"",
        ));
    }
    if m.pool_max_size == 0 {
        return Err(invalid(key("pool_max_size"), "must be at least 1"));
    }
    Ok(())
}

fn validate_smpp(name: &str, p: &super::SmppSettings, channel: Channel) -> Result<(), ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    if channel != Channel::Sms {
        return Err(invalid(
            format!("channels.{channel}"),
            format!("names `{name}`, an smpp provider, which carries SMS only"),
        ));
    }
    let scheme_ok = ["smpp://", "ssmpp://", "smpps://"]
        .iter()
        .any(|s| p.url.starts_with(s));
    if !scheme_ok {
        return Err(invalid(
            key("url"),
            "must be smpp://host:port or ssmpp://host:port",
        ));
    }
    // SMPP's field limits (C-octet strings with their NUL): system_id 16, password 9,
    // system_type 13, source_addr 21.
    let limits = [
        ("system_id", p.system_id.as_str(), 1, 15),
        ("password", p.password.expose(), 0, 8),
        ("system_type", p.system_type.as_str(), 0, 12),
        ("source_addr", p.source_addr.as_str(), 1, 20),
    ];
    for (k, v, min, max) in limits {
        if v.len() < min || v.len() > max || !v.is_ascii() {
            return Err(invalid(
                key(k),
                format!("must be {min} to {max} ASCII characters"),
            ));
        }
    }
    if p.response_timeout_ms == 0 || p.enquire_link_interval_ms == 0 {
        return Err(invalid(
            key("response_timeout_ms"),
            "timeouts must be above 0",
        ));
    }
    Ok(())
}

fn validate_whatsapp(
    name: &str,
    w: &super::WhatsappSettings,
    channel: Channel,
    default_locale: &str,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    if channel != Channel::Whatsapp {
        return Err(invalid(
            format!("channels.{channel}"),
            format!("names `{name}`, a whatsapp_cloud provider, which carries whatsapp only"),
        ));
    }
    let url =
        reqwest::Url::parse(&w.base_url).map_err(|e| invalid(key("base_url"), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(key("base_url"), "must be an http or https URL"));
    }
    let segment =
        |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if !segment(&w.api_version) {
        return Err(invalid(
            key("api_version"),
            "must be a Graph API version such as v21.0",
        ));
    }
    if w.phone_number_id.is_empty() || !w.phone_number_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            key("phone_number_id"),
            "must be the business number's id (digits)",
        ));
    }
    for (field, secret) in [
        ("access_token", &w.access_token),
        ("app_secret", &w.app_secret),
    ] {
        if secret.is_empty() {
            return Err(invalid(
                key(field),
                "must be set when a channel uses this provider",
            ));
        }
    }
    let default = default_locale.to_ascii_lowercase();
    if !w
        .templates
        .keys()
        .any(|l| l.to_ascii_lowercase() == default)
    {
        return Err(invalid(
            key("templates"),
            format!("must name a template for the default locale `{default}`"),
        ));
    }
    for (locale, t) in &w.templates {
        let ok = |v: &str| {
            !v.is_empty()
                && v.len() <= 512
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if crate::domain::parse_locale(locale).is_err() || !ok(&t.name) || !ok(&t.language) {
            return Err(invalid(
                key(&format!("templates.{locale}")),
                "a locale such as `pt-br` naming a template `name` and a Meta `language` code (letters, digits, _)",
            ));
        }
    }
    Ok(())
}
