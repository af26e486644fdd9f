//! Loading and validating settings.

use super::Settings;
use super::error::{ConfigError, invalid};
use config::{Config, Environment, File, FileFormat};
use std::path::Path;

pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
const SYSTEM_CONFIG: &str = "/etc/otpd/otpd.toml";

/// Layers the defaults, an optional file and the environment, then validates the result.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
    match path {
        Some(p) => {
            builder = builder.add_source(File::from(p).format(FileFormat::Toml).required(true))
        }
        None if Path::new(SYSTEM_CONFIG).exists() => {
            builder = builder.add_source(File::with_name(SYSTEM_CONFIG).format(FileFormat::Toml))
        }
        None => {}
    }
    // No `try_parsing`: every value stays the string it was, and typed fields convert it
    // when they are read. Parsing up front turned an all-digit token into a number (or a
    // float, losing digits) and `+15005550006` into 15005550006.
    let env = || {
        Environment::with_prefix("OTPD")
            .prefix_separator("__")
            .separator("__")
    };
    if let Some(credentials) = systemd_credentials() {
        builder = builder.add_source(env().source(Some(credentials)));
    }
    let settings: Settings = builder.add_source(env()).build()?.try_deserialize()?;
    validate(&settings)?;
    Ok(settings)
}

/// The defaults with `toml` over them, validated; no file or environment is read. For tools
/// and tests that build settings in code.
pub fn load_from_str(toml: &str) -> Result<Settings, ConfigError> {
    let settings: Settings = Config::builder()
        .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
        .add_source(File::from_str(toml, FileFormat::Toml))
        .build()?
        .try_deserialize()?;
    validate(&settings)?;
    Ok(settings)
}

/// systemd credentials (`LoadCredential=OTPD__PROVIDERS__TWILIO__AUTH_TOKEN:/path`): each file
/// in `$CREDENTIALS_DIRECTORY` named like an `OTPD__…` variable is read as that variable, so
/// secrets reach otpd without passing through any process environment. Real environment
/// variables still win.
fn systemd_credentials() -> Option<config::Map<String, String>> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let entries = std::fs::read_dir(dir).ok()?;
    let map = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let value = std::fs::read_to_string(e.path()).ok()?;
            name.starts_with("OTPD__")
                .then(|| (name, value.trim_end_matches(['\n', '\r']).to_string()))
        })
        .collect();
    Some(map)
}

fn validate(s: &Settings) -> Result<(), ConfigError> {
    if s.amqp.prefetch == 0 {
        return Err(invalid("amqp.prefetch", "must be at least 1"));
    }
    if s.amqp.setup_timeout_ms < 100 {
        return Err(invalid("amqp.setup_timeout_ms", "must be at least 100"));
    }
    if s.amqp.delivery_limit == 0 {
        return Err(invalid("amqp.delivery_limit", "must be at least 1"));
    }
    if s.database.max_connections < 2 {
        return Err(invalid("database.max_connections", "must be at least 2"));
    }
    validate_hmac_key(s)?;
    validate_http(s)?;
    super::limits::validate_rules(&s.limits)?;
    super::limits::validate_budget(&s.budget)?;
    super::limits::validate_abuse(&s.geo, &s.signing, &s.conversion)?;
    validate_retry(s)?;
    validate_app(s)?;
    validate_delivery(s)?;
    super::health::validate_health(&s.delivery.health)?;
    super::lanes::validate_lanes(s)?;
    super::validate_providers::validate_providers(s)
}

/// The development key shipped in config/default.toml. It is public, so a number hashed with
/// it can be found again by anyone: it may only be used while every channel delivers to the
/// `log` provider, where no real number is expected.
pub const DEV_HMAC_KEY: &str = "dev-only-destination-hmac-key-change-me";

fn validate_hmac_key(s: &Settings) -> Result<(), ConfigError> {
    let key = s.store.destination_hmac_key.expose();
    if key.len() < 32 {
        return Err(invalid(
            "store.destination_hmac_key",
            "must be at least 32 bytes",
        ));
    }
    let real = s.channels.chains().find(|name| {
        !matches!(
            s.providers.0.get(*name),
            None | Some(super::ProviderConfig::Log(_))
        )
    });
    if key == DEV_HMAC_KEY
        && let Some(provider) = real
    {
        return Err(invalid(
            "store.destination_hmac_key",
            format!(
                "is the public development key, but a channel delivers through `{provider}`; \
                 set a secret key (OTPD__STORE__DESTINATION_HMAC_KEY)"
            ),
        ));
    }
    Ok(())
}

fn validate_http(s: &Settings) -> Result<(), ConfigError> {
    let public = s.http.public_url.trim();
    if !public.is_empty() {
        let ok = reqwest::Url::parse(public).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.has_host()
        });
        if !ok {
            return Err(invalid(
                "http.public_url",
                "must be an http(s) URL without a query, e.g. https://otpd.example.com",
            ));
        }
    }
    let token = s.http.admin_token.expose();
    if !token.is_empty() && token.len() < 32 {
        return Err(invalid("http.admin_token", "must be at least 32 bytes"));
    }
    let h = &s.http;
    if h.header_timeout_ms < 100 {
        return Err(invalid("http.header_timeout_ms", "must be at least 100"));
    }
    if h.request_timeout_ms < 100 {
        return Err(invalid("http.request_timeout_ms", "must be at least 100"));
    }
    if h.max_connections < 4 {
        return Err(invalid("http.max_connections", "must be at least 4"));
    }
    if h.max_body_bytes < 1024 {
        return Err(invalid("http.max_body_bytes", "must be at least 1024"));
    }
    if h.ready_stall_secs == 0 {
        return Err(invalid("http.ready_stall_secs", "must be at least 1"));
    }
    if s.audit.seal_interval_ms < 10 {
        return Err(invalid("audit.seal_interval_ms", "must be at least 10"));
    }
    if s.audit.purge_interval_secs < 60 {
        return Err(invalid("audit.purge_interval_secs", "must be at least 60"));
    }
    Ok(())
}

fn validate_delivery(s: &Settings) -> Result<(), ConfigError> {
    let d = &s.delivery;
    if d.max_in_flight == 0 {
        return Err(invalid("delivery.max_in_flight", "must be at least 1"));
    }
    if d.breaker_failures == 0 {
        return Err(invalid("delivery.breaker_failures", "must be at least 1"));
    }
    if d.breaker_open_ms == 0 {
        return Err(invalid("delivery.breaker_open_ms", "must be at least 1"));
    }
    Ok(())
}

fn validate_retry(s: &Settings) -> Result<(), ConfigError> {
    let r = &s.retry;
    if r.max_attempts == 0 {
        return Err(invalid("retry.max_attempts", "must be at least 1"));
    }
    if r.initial_delay_ms == 0 || r.initial_delay_ms > r.max_delay_ms {
        return Err(invalid(
            "retry.initial_delay_ms",
            "must be at least 1 and at most retry.max_delay_ms",
        ));
    }
    if r.attempt_timeout_ms == 0 {
        return Err(invalid("retry.attempt_timeout_ms", "must be at least 1"));
    }
    Ok(())
}

/// An app's WebOTP origin, Android hash and From, under `prefix` (`app`, `templates.apps.x`).
fn check_app_fields(prefix: &str, domain: &str, hash: &str, from: &str) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let domain = domain.trim();
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.');
    if !domain.is_empty() && (!domain.contains('.') || !domain.chars().all(host_char)) {
        return Err(invalid(
            key("webotp_domain"),
            "must be a host name such as login.example.com (no scheme, port or path)",
        ));
    }
    let hash = hash.trim();
    let hash_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/');
    if !hash.is_empty() && (hash.len() != 11 || !hash.chars().all(hash_char)) {
        return Err(invalid(
            key("android_app_hash"),
            "must be the 11-character hash of the app's signing certificate (base64)",
        ));
    }
    let from = from.trim();
    if !from.is_empty() && from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(invalid(
            key("email_from"),
            "must be a mailbox such as \"Example <no-reply@example.com>\"",
        ));
    }
    Ok(())
}

fn validate_app(s: &Settings) -> Result<(), ConfigError> {
    let app = &s.app;
    if crate::domain::parse_locale(&app.default_locale).is_err() {
        return Err(invalid(
            "app.default_locale",
            "must be a BCP 47 tag such as en or pt-BR",
        ));
    }
    check_app_fields(
        "app",
        &app.webotp_domain,
        &app.android_app_hash,
        &app.email_from,
    )?;
    for (template, a) in &s.templates.apps {
        let prefix = format!("templates.apps.{template}");
        check_app_fields(
            &prefix,
            &a.webotp_domain,
            &a.android_app_hash,
            &a.email_from,
        )?;
    }
    if s.templates.sms_max_segments == 0 {
        return Err(invalid("templates.sms_max_segments", "must be at least 1"));
    }
    for key in &s.templates.metadata.0 {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if !key.chars().all(ident) || key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(invalid(
                "templates.metadata",
                format!("`{key}` is not a plain name ([A-Za-z_][A-Za-z0-9_]*)"),
            ));
        }
    }
    // Templates are compiled, and rendered with a sample, by `app::compile`.
    Ok(())
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
