//! Loading and validation, through files as operators write them.
use super::*;
use crate::config::Chain;

/// Loads `extra` from a file of its own, in a directory of its own that is removed after, so
/// that tests running at once in one process neither collide nor leave anything behind.
fn with(extra: &str) -> Result<Settings, ConfigError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("otpd-config-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("otpd.toml");
    // A real provider needs a key of its own (the development key is refused with one).
    let key = "[store]\ndestination_hmac_key = \"test-only-destination-hmac-key-0123456789\"\n";
    let extra = match extra.contains("[store]") {
        true => extra.to_string(),
        false => format!("{extra}\n{key}"),
    };
    std::fs::write(&path, extra).unwrap();
    let result = load(Some(&path));
    std::fs::remove_dir_all(&dir).unwrap();
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
    let err = with("[amqp]\nsetup_timeout_ms = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("amqp.setup_timeout_ms"), "{err}");
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
        err.to_string().contains("channels.routes.voice.+91") && err.to_string().contains("vonage"),
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
fn the_public_development_key_is_refused_with_a_real_provider() {
    let dev = format!("[store]\ndestination_hmac_key = \"{DEV_HMAC_KEY}\"\n");
    with(&dev).expect("the log provider may use it");
    let real = format!("{dev}[channels]\nemail = \"smtp\"\n");
    let err = with(&real).unwrap_err().to_string();
    assert!(err.contains("store.destination_hmac_key"), "{err}");
    assert!(err.contains("`smtp`"), "{err}");
    let short = with("[store]\ndestination_hmac_key = \"sixteen-bytes-ok\"\n").unwrap_err();
    assert!(short.to_string().contains("at least 32 bytes"), "{short}");
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
    // Values from the environment stay strings: an all-digit secret keeps every digit, a
    // phone number its `+`, and typed fields still read theirs.
    let digits = "12345678901234567890123456789012345678";
    let vars = [
        ("OTPD__PROVIDERS__TWILIO__AUTH_TOKEN", "from-env"),
        ("OTPD__HTTP__ADMIN_TOKEN", digits),
        ("OTPD__PROVIDERS__TWILIO__SMS_FROM", "+15005550006"),
        ("OTPD__AMQP__PREFETCH", "7"),
    ];
    for (k, v) in vars {
        unsafe { std::env::set_var(k, v) };
    }
    let mut from_env = load(None).unwrap();
    unsafe {
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        std::env::remove_var("CREDENTIALS_DIRECTORY");
    }
    assert_eq!(from_env.http.admin_token.expose(), digits);
    assert_eq!(from_env.amqp.prefetch, 7);
    assert_eq!(
        from_env.providers.twilio_mut("twilio").sms_from,
        "+15005550006"
    );
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

#[test]
fn lanes_take_their_share_and_never_overlap() {
    let s = with("").unwrap();
    let lanes = s.amqp.lanes(s.delivery.max_in_flight);
    assert_eq!(lanes.len(), 1);
    assert_eq!(
        (lanes[0].queue.as_str(), lanes[0].max_in_flight),
        ("otpd.jobs", 2000)
    );

    let bulk = "[amqp.lanes.bulk]\nrouting_keys = \"bulk.*\"\nprefetch = 20000\nmax_in_flight = 200\naccount_share = 0.5\n";
    let s = with(&format!("[amqp]\nrouting_keys = \"*\"\n{bulk}")).unwrap();
    let lanes = s.amqp.lanes(s.delivery.max_in_flight);
    let got: Vec<_> = lanes
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.queue.as_str(),
                l.max_in_flight,
                l.account_cap,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("interactive", "otpd.jobs", 1800, 1800),
            ("bulk", "otpd.jobs.bulk", 200, 100)
        ]
    );

    // The default `#` would take a copy of every bulk job too.
    let err = with(bulk).unwrap_err().to_string();
    assert!(
        err.contains("amqp.lanes.bulk.routing_keys") && err.contains("`#`"),
        "{err}"
    );
    // The same bulk lane beside a narrowed default lane, with one value changed.
    let narrowed = |from: &str, to: &str| {
        let toml = format!("[amqp]\nrouting_keys = \"*\"\n{}", bulk.replace(from, to));
        with(&toml).unwrap_err().to_string()
    };
    let err = narrowed("max_in_flight = 200", "max_in_flight = 2000");
    assert!(err.contains("`amqp.lanes`"), "{err}");
    let err = narrowed("0.5", "0");
    assert!(err.contains("amqp.lanes.bulk.account_share"), "{err}");
    let err = with("[amqp.lanes.Bulk]\nrouting_keys = \"x.*\"\nprefetch = 10\nmax_in_flight = 1\naccount_share = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("amqp.lanes.Bulk"), "{err}");
}
