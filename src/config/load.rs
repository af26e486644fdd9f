//! Loading and validating settings.

use super::{ProviderConfig, Settings, SmtpSettings, TwilioSettings};
use crate::domain::Channel;
use config::{Config, Environment, File, FileFormat};
use std::path::Path;

pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
const SYSTEM_CONFIG: &str = "/etc/otpd/otpd.toml";

/// A start-up error that names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Source(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// Not a `#[source]`: the message already says everything, once.
    #[error("configuration: {0}")]
    Template(crate::templates::TemplateError),
}

impl From<crate::templates::TemplateError> for ConfigError {
    fn from(e: crate::templates::TemplateError) -> ConfigError {
        ConfigError::Template(e)
    }
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

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
    let env = || {
        Environment::with_prefix("OTPD")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
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
    if s.amqp.delivery_limit == 0 {
        return Err(invalid("amqp.delivery_limit", "must be at least 1"));
    }
    if s.database.max_connections < 2 {
        return Err(invalid("database.max_connections", "must be at least 2"));
    }
    if s.store.destination_hmac_key.expose().len() < 16 {
        return Err(invalid(
            "store.destination_hmac_key",
            "must be at least 16 bytes",
        ));
    }
    validate_http(s)?;
    super::limits::validate_rules(&s.limits)?;
    super::limits::validate_budget(&s.budget)?;
    super::limits::validate_abuse(&s.geo, &s.signing, &s.conversion)?;
    validate_retry(s)?;
    validate_app(s)?;
    validate_delivery(s)?;
    validate_providers(s)
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

/// Every chain names declared providers that can carry its channel, each at most once.
fn validate_providers(s: &Settings) -> Result<(), ConfigError> {
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
        }
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

fn validate_app(s: &Settings) -> Result<(), ConfigError> {
    let app = &s.app;
    if crate::domain::parse_locale(&app.default_locale).is_err() {
        return Err(invalid(
            "app.default_locale",
            "must be a BCP 47 tag such as en or pt-BR",
        ));
    }
    let domain = app.webotp_domain.trim();
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.');
    if !domain.is_empty() && (!domain.contains('.') || !domain.chars().all(host_char)) {
        return Err(invalid(
            "app.webotp_domain",
            "must be a host name such as login.example.com (no scheme, port or path)",
        ));
    }
    let hash = app.android_app_hash.trim();
    let hash_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/');
    if !hash.is_empty() && (hash.len() != 11 || !hash.chars().all(hash_char)) {
        return Err(invalid(
            "app.android_app_hash",
            "must be the 11-character hash of the app's signing certificate (base64)",
        ));
    }
    let from = app.email_from.trim();
    if !from.is_empty() && from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(invalid(
            "app.email_from",
            "must be a mailbox such as \"Example <no-reply@example.com>\"",
        ));
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
    // Every template, compiled and rendered with a sample; the error names the file.
    crate::templates::Templates::load(s)?;
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
        Channel::Email => {
            return Err(invalid(
                "channels.email",
                format!("`{name}` is a twilio provider, which cannot deliver email"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Chain;

    fn with(extra: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("otpd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", extra.len()));
        std::fs::write(&path, extra).unwrap();
        let result = load(Some(&path));
        std::fs::remove_file(&path).unwrap();
        result
    }

    #[test]
    fn the_shipped_defaults_load() {
        let s = with("").unwrap();
        assert_eq!(s.amqp.jobs_queue, "otpd.jobs");
        assert_eq!(s.channels.sms, Chain::from("log"));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = with("[amqp]\nprefetch = 0\n").unwrap_err().to_string();
        assert!(err.contains("amqp.prefetch"), "{err}");
        let err = with("[channels]\nsms = \"twilio\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("providers.twilio.account_sid"), "{err}");
        let err = with("[app]\nwebotp_domain = \"https://x.example\"\n").unwrap_err();
        assert!(err.to_string().contains("app.webotp_domain"), "{err}");
    }

    #[test]
    fn a_bad_route_names_its_key() {
        let err = with("[channels.routes.sms]\nIndia = \"log\"\n").unwrap_err();
        assert!(
            err.to_string().contains("channels.routes.sms.India"),
            "{err}"
        );
        let err = with("[channels.routes.voice]\n\"+91\" = \"vonage\"\n").unwrap_err();
        assert!(
            err.to_string().contains("channels.routes.voice.+91")
                && err.to_string().contains("vonage"),
            "{err}"
        );
        let s = with("[channels.routes.sms]\nIN = \"log\"\n\"+4475\" = \"log\"\n").unwrap();
        assert_eq!(s.channels.routes.sms.len(), 2);
        assert_eq!(
            crate::config::RouteKey::parse("in"),
            Some(crate::config::RouteKey::Country("IN".into()))
        );
        assert_eq!(crate::config::RouteKey::parse("+"), None);
        assert_eq!(crate::config::RouteKey::parse("+44a"), None);
    }

    #[test]
    fn a_broken_template_names_its_file() {
        let dir = std::env::temp_dir().join(format!("otpd-templates-{}", std::process::id()));
        let en = dir.join("default/en");
        std::fs::create_dir_all(&en).unwrap();
        std::fs::write(en.join("sms.txt"), "{{ code }} {{ nope }}\n").unwrap();
        let toml = format!("[templates]\ndir = \"{}\"\n", dir.display());
        let err = with(&toml).unwrap_err().to_string();
        let file = en.join("sms.txt").display().to_string();
        assert!(err.contains(&file) && err.contains("undefined"), "{err}");
        std::fs::write(en.join("sms.txt"), "{{ code }} {% if %}\n").unwrap();
        let err = with(&toml).unwrap_err().to_string();
        assert!(err.contains(&file) && err.contains("syntax"), "{err}");
        std::fs::write(en.join("sms.txt"), "{{ code }} is your code\n").unwrap();
        with(&toml).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_account_of_a_kind_is_a_named_provider_in_a_chain() {
        // `sms_from` as a bare number is what the environment's parsing makes of
        // OTPD__PROVIDERS__TWILIO_EU__SMS_FROM=+15005550006; it must still be a string.
        let mut s = with(
            "[channels]\nsms = \"twilio_eu, log\"\n\
             [providers.twilio_eu]\nkind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
             auth_token = \"t\"\nsms_from = 15005550006\n",
        )
        .unwrap();
        assert_eq!(s.channels.sms.0, ["twilio_eu", "log"]);
        assert_eq!(s.providers.twilio_mut("twilio_eu").sms_from, "15005550006");
    }

    #[test]
    fn a_broken_chain_names_the_channel_or_the_provider() {
        for (toml, key, says) in [
            ("[channels]\nsms = \"\"\n", "channels.sms", "at least one"),
            ("[channels]\nsms = \"log, log\"\n", "channels.sms", "twice"),
            (
                "[channels]\nvoice = \"nope\"\n",
                "channels.voice",
                "no [providers.nope]",
            ),
            (
                "[channels]\nemail = \"log, twilio\"\n",
                "providers.twilio",
                "",
            ),
            ("[providers.x]\nkind = \"fax\"\n", "providers.x.kind", "fax"),
            ("[providers.x]\n", "providers.x.kind", "must be"),
            (
                "[delivery]\nbreaker_failures = 0\n",
                "delivery.breaker_failures",
                "",
            ),
        ] {
            let err = with(toml).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{toml}: {err}");
        }
    }

    #[test]
    fn a_bad_limit_or_abuse_setting_names_its_key() {
        for (toml, key) in [
            (
                "[limits.rules.x]\nscope = \"prefix\"\nburst = 1\nperiod_secs = 1\n",
                "limits.rules.x.prefix_digits",
            ),
            (
                "[limits.rules.x]\nscope = \"global\"\n",
                "limits.rules.x.burst",
            ),
            (
                "[limits.rules.x]\nscope = \"ip\"\nper_day = 1\nchannels = \"sms, fax\"\n",
                "limits.rules.x.channels",
            ),
            ("[budget.prices.sms]\nGB = -1.0\n", "budget.prices.sms.GB"),
            ("[geo]\nsms = { deny = [\"France\"] }\n", "geo.sms.deny"),
            (
                "[geo]\ndeny_number_types = [\"premium\"]\n",
                "geo.deny_number_types",
            ),
            ("[signing]\nmode = \"require\"\n", "signing.keys"),
            ("[signing.keys]\nk1 = \"short\"\n", "signing.keys.k1"),
            (
                "[http]\npublic_url = \"otpd.example.com\"\n",
                "http.public_url",
            ),
            ("[http]\nadmin_token = \"short\"\n", "http.admin_token"),
            (
                "[audit]\npurge_interval_secs = 1\n",
                "audit.purge_interval_secs",
            ),
            ("[conversion]\nthreshold = 2.0\n", "conversion.threshold"),
        ] {
            let err = with(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn a_wrong_type_names_its_key() {
        let err = with("[amqp]\nprefetch = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefetch"), "{err}");
    }

    #[test]
    fn systemd_credentials_set_keys_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("otpd-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("OTPD__PROVIDERS__TWILIO__AUTH_TOKEN"),
            "from-credential\n",
        )
        .unwrap();
        std::fs::write(dir.join("unrelated"), "ignored").unwrap();
        // SAFETY: this is the only test in the crate that reads or writes these variables.
        unsafe { std::env::set_var("CREDENTIALS_DIRECTORY", &dir) };
        let mut from_file = load(None).unwrap();
        unsafe { std::env::set_var("OTPD__PROVIDERS__TWILIO__AUTH_TOKEN", "from-env") };
        let mut from_env = load(None).unwrap();
        unsafe {
            std::env::remove_var("OTPD__PROVIDERS__TWILIO__AUTH_TOKEN");
            std::env::remove_var("CREDENTIALS_DIRECTORY");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            from_file.providers.twilio_mut("twilio").auth_token.expose(),
            "from-credential"
        );
        assert_eq!(
            from_env.providers.twilio_mut("twilio").auth_token.expose(),
            "from-env"
        );
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let s = with("[providers.twilio]\nauth_token = \"tok-123\"\n").unwrap();
        let printed = toml::to_string(&s).unwrap();
        assert!(!printed.contains("tok-123"));
        assert!(!printed.contains("guest:guest"));
        assert!(printed.contains("[redacted]"));
    }
}
