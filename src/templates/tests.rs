//! Rendered bodies byte for byte, the fallback chain, WebOTP and app-hash placement, escaping
//! and the start-up check's refusals.

use super::*;
use crate::config::load_from_str;

fn settings(extra: &str) -> Settings {
    load_from_str(extra).unwrap()
}

fn job(channel: &str, to: &str, locale: Option<&str>, extra: serde_json::Value) -> Job {
    let mut body = serde_json::json!({
        "version": 1, "challenge_id": "c", "account_id": "a", "channel": channel, "to": to,
        "code": "4071", "expires_at": "2030-01-01T00:05:00Z"
    });
    if let Some(l) = locale {
        body["locale"] = l.into();
    }
    if let serde_json::Value::Object(m) = extra {
        body.as_object_mut().unwrap().extend(m);
    }
    Job::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn now() -> DateTime<Utc> {
    "2030-01-01T00:00:30Z".parse().unwrap()
}

fn sms(t: &Templates, locale: Option<&str>) -> (String, u32) {
    let j = job("sms", "+14155550123", locale, serde_json::json!({}));
    match t.render(&j, now()).unwrap() {
        Message::Sms { body, segments } => (body, segments),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sms_bodies_per_locale_byte_for_byte() {
    let t = Templates::load(&settings("[app]\nname = \"Acme\"\n")).unwrap();
    let cases = [
        (
            None,
            "4071 is your Acme verification code. It expires in 5 minutes.",
        ),
        (
            Some("en-GB"),
            "4071 is your Acme verification code. It expires in 5 minutes.",
        ),
        (Some("pt"), "4071 é o seu codigo Acme. Expira em 5 minutos."),
        (Some("pt-BR"), "Seu codigo Acme: 4071. Vale por 5 minutos."),
        (
            Some("pt-PT"),
            "4071 é o seu codigo Acme. Expira em 5 minutos.",
        ),
        (
            Some("de-AT"),
            "4071 ist Ihr Acme-Bestätigungscode. Er läuft in 5 Minuten ab.",
        ),
        (
            Some("es"),
            "Tu codigo de Acme es 4071. Caduca en 5 minutos.",
        ),
        (
            Some("ja"),
            "4071 is your Acme verification code. It expires in 5 minutes.",
        ),
    ];
    for (locale, expected) in cases {
        assert_eq!(sms(&t, locale).0, expected, "locale {locale:?}");
    }
    // The shipped SMS texts keep to GSM-7 (ä and é are in it; ó is not, so `codigo`): every
    // one stays a single segment with both WebOTP and the app hash (the next test).
    assert_eq!(sms(&t, Some("de")).1, 1);
    assert_eq!(sms(&t, Some("pt")).1, 1);
    let ru = Dir::new(&[(
        "default/ru/sms.txt",
        "Ваш код {{ code }}: {{ app_name }}. 😀\n",
    )]);
    let t = Templates::load(&settings(&ru.toml("[app]\nname = \"Acme\"\n"))).unwrap();
    assert_eq!(sms(&t, Some("ru-RU")).0, "Ваш код 4071: Acme. 😀");
    // "Код 4071 " is 9 UTF-16 units: 61 more make 70, one segment; 62 make 71, two.
    for (n, segments) in [(61, 1), (62, 2)] {
        let text = format!("Код {{{{ code }}}} {}\n", "x".repeat(n));
        let long = Dir::new(&[("default/ru/sms.txt", &text)]);
        let t = Templates::load(&settings(&long.toml(""))).unwrap();
        assert_eq!(sms(&t, Some("ru")).1, segments, "{n} x");
    }
}

#[test]
fn webotp_is_the_last_line_and_the_app_hash_comes_before_it() {
    let t = Templates::load(&settings(
        "[app]\nname = \"Acme\"\nwebotp_domain = \"login.acme.example\"\nandroid_app_hash = \"FA+9qCX9VSu\"\n",
    ))
    .unwrap();
    assert_eq!(
        sms(&t, None).0,
        "4071 is your Acme verification code. It expires in 5 minutes.\nFA+9qCX9VSu\n\n@login.acme.example #4071"
    );
    let only_webotp = settings("[app]\nname = \"Acme\"\nwebotp_domain = \"acme.example\"\n");
    let t = Templates::load(&only_webotp).unwrap();
    assert!(
        sms(&t, Some("es"))
            .0
            .ends_with("minutos.\n\n@acme.example #4071")
    );
}

#[test]
fn voice_spaces_digits_repeats_and_speaks_the_locale() {
    let t = Templates::load(&settings("[app]\nname = \"A&B\"\n")).unwrap();
    let j = job(
        "voice",
        "+14155550123",
        Some("pt-BR"),
        serde_json::json!({}),
    );
    let Message::Voice { twiml } = t.render(&j, now()).unwrap() else {
        panic!("not voice")
    };
    let say =
        "<Say language=\"pt-BR\" voice=\"Polly.Camila\">Seu código A&amp;B é: 4, 0, 7, 1.</Say>";
    assert_eq!(
        twiml,
        format!("<Response>{say}<Pause length=\"1\"/>{say}</Response>")
    );
}

#[test]
fn email_escapes_html_keeps_text_and_uses_the_apps_from() {
    let t = Templates::load(&settings(
        "[app]\nname = \"<Acme & Co>\"\nemail_from = \"Acme <otp@acme.example>\"\n",
    ))
    .unwrap();
    let j = job("email", "j@example.com", Some("de"), serde_json::json!({}));
    let Message::Email {
        subject,
        text,
        html,
        from,
    } = t.render(&j, now()).unwrap()
    else {
        panic!("not email")
    };
    assert_eq!(subject, "Ihr <Acme & Co>-Bestätigungscode");
    assert!(
        text.starts_with("Ihr <Acme & Co>-Bestätigungscode lautet 4071.\n\n"),
        "{text}"
    );
    assert!(
        html.contains("<p>Ihr &lt;Acme &amp; Co&gt;-Bestätigungscode lautet</p>"),
        "{html}"
    );
    assert!(html.contains("<strong>4071</strong>"), "{html}");
    assert_eq!(from.as_deref(), Some("Acme <otp@acme.example>"));
}

/// A directory of templates for one test, removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        let root = std::env::temp_dir().join(format!(
            "otpd-tpl-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Dir(root)
    }

    fn toml(&self, extra: &str) -> String {
        format!("[templates]\ndir = \"{}\"\n{extra}", self.0.display())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn metadata_is_visible_only_when_allowed_and_strict_when_missing() {
    let dir = Dir::new(&[(
        "welcome/en/sms.txt",
        "Hi {{ metadata.first_name }}, {{ code }}\n",
    )]);
    let err = settings_err(&dir.toml(""));
    assert!(
        err.contains("welcome/en/sms.txt") && err.contains("undefined"),
        "{err}"
    );
    let s = settings(&dir.toml("metadata = \"first_name\"\n"));
    let t = Templates::load(&s).unwrap();
    let meta =
        serde_json::json!({"template": "welcome", "metadata": {"first_name": "Ana", "ssn": "x"}});
    let Message::Sms { body, .. } = t
        .render(&job("sms", "+14155550123", None, meta), now())
        .unwrap()
    else {
        panic!("not sms")
    };
    assert_eq!(body, "Hi Ana, 4071");
    let without = serde_json::json!({"template": "welcome"});
    let err = t
        .render(&job("sms", "+14155550123", None, without), now())
        .unwrap_err();
    assert!(matches!(err, RenderError::Failed { .. }), "{err}");
    let email = serde_json::json!({"template": "welcome"});
    let err = t
        .render(&job("email", "a@example.com", None, email), now())
        .unwrap_err();
    assert!(matches!(err, RenderError::Unknown { .. }), "{err}");
}

#[test]
fn the_segment_budget_and_app_hash_limit_refuse_long_templates() {
    let long = format!("{{{{ code }}}} {}\n", "a".repeat(150));
    let dir = Dir::new(&[("long/en/sms.txt", &long)]);
    let err = settings_err(&dir.toml("sms_max_segments = 1\n"));
    assert!(
        err.contains("long/en/sms.txt") && err.contains("2 segments"),
        "{err}"
    );
    Templates::load(&settings(&dir.toml("sms_max_segments = 2\n"))).unwrap();
    let hash = "[app]\nandroid_app_hash = \"FA+9qCX9VSu\"\n";
    let err = settings_err(&format!("{}{hash}", dir.toml("")));
    assert!(
        err.contains("long/en/sms.txt") && err.contains("140 bytes"),
        "{err}"
    );
}

#[test]
fn a_template_without_its_default_locale_is_refused() {
    let dir = Dir::new(&[("promo/fr/sms.txt", "{{ code }}\n")]);
    let err = settings_err(&dir.toml(""));
    assert!(
        err.contains("promo/en/sms.txt") && err.contains("default locale"),
        "{err}"
    );
    let typo = Dir::new(&[("promo/en/sms.text", "{{ code }}\n")]);
    let err = settings_err(&typo.toml(""));
    assert!(
        err.contains("sms.text") && err.contains("unknown file"),
        "{err}"
    );
}

#[test]
fn a_template_can_speak_for_its_own_app() {
    let dir = Dir::new(&[(
        "beta_login/en/sms.txt",
        "{{ code }} is your {{ app_name }} code\n",
    )]);
    let s =
        settings(&dir.toml(
            "[templates.apps.beta_login]\nname = \"Beta\"\nwebotp_domain = \"beta.example\"\n",
        ));
    let t = Templates::load(&s).unwrap();
    let beta = serde_json::json!({"template": "beta_login"});
    let Message::Sms { body, .. } = t
        .render(&job("sms", "+14155550123", None, beta), now())
        .unwrap()
    else {
        panic!("not sms")
    };
    assert_eq!(body, "4071 is your Beta code\n\n@beta.example #4071");
    // The default template keeps [app]'s name and no WebOTP line.
    assert_eq!(
        sms(&t, None).0,
        "4071 is your otpd verification code. It expires in 5 minutes."
    );
    let typo = settings_err(&dir.toml("[templates.apps.beta_logn]\nname = \"Beta\"\n"));
    assert!(typo.contains("templates.apps.beta_logn"), "{typo}");
    let bad =
        settings_err(&dir.toml("[templates.apps.beta_login]\nwebotp_domain = \"https://x\"\n"));
    assert!(
        bad.contains("templates.apps.beta_login.webotp_domain"),
        "{bad}"
    );
}

/// The error of the configuration's field checks or, past them, of compiling its templates:
/// what start-up and `otpd check-config` report.
fn settings_err(extra: &str) -> String {
    match load_from_str(extra) {
        Err(e) => e.to_string(),
        Ok(s) => match Templates::load(&s) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {extra}"),
        },
    }
}

#[test]
fn a_broken_template_names_its_file() {
    let dir = std::env::temp_dir().join(format!("otpd-templates-{}", std::process::id()));
    let en = dir.join("default/en");
    std::fs::create_dir_all(&en).unwrap();
    std::fs::write(en.join("sms.txt"), "{{ code }} {{ nope }}\n").unwrap();
    let toml = format!("[templates]\ndir = \"{}\"\n", dir.display());
    let err = settings_err(&toml);
    let file = en.join("sms.txt").display().to_string();
    assert!(err.contains(&file) && err.contains("undefined"), "{err}");
    std::fs::write(en.join("sms.txt"), "{{ code }} {% if %}\n").unwrap();
    let err = settings_err(&toml);
    assert!(err.contains(&file) && err.contains("syntax"), "{err}");
    std::fs::write(en.join("sms.txt"), "{{ code }} is your code\n").unwrap();
    Templates::load(&settings(&toml)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
