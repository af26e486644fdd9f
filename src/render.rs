//! Rendering a job into the message its channel carries.
//!
//! v1 has one configurable text per channel with three placeholders; localised templates are
//! issue 7's work. Rendering is pure: the same job, settings and clock give the same bytes.

use crate::config::MessageSettings;
use crate::domain::{Channel, Job};
use chrono::{DateTime, Utc};
use std::fmt;

/// A rendered message. It contains the code, so its Debug output is redacted.
pub enum Message {
    Sms {
        body: String,
    },
    Voice {
        twiml: String,
    },
    Email {
        subject: String,
        text: String,
        html: String,
    },
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Message::Sms { .. } => "Sms",
            Message::Voice { .. } => "Voice",
            Message::Email { .. } => "Email",
        };
        write!(f, "Message::{kind}([redacted])")
    }
}

/// The placeholders a message text may use.
pub struct Placeholders<'a> {
    pub code: &'a str,
    pub app: &'a str,
    pub minutes: i64,
}

impl Placeholders<'_> {
    /// Refuses unknown `{names}` at config load so that a typo cannot reach an end user.
    pub fn check(text: &str) -> Result<(), String> {
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let end = after.find('}').ok_or("an opening { has no closing }")?;
            let name = &after[..end];
            if !matches!(name, "code" | "app" | "minutes") {
                return Err(format!(
                    "unknown placeholder {{{name}}}; use {{code}}, {{app}} or {{minutes}}"
                ));
            }
            rest = &after[end + 1..];
        }
        Ok(())
    }

    pub fn fill(&self, text: &str) -> String {
        text.replace("{code}", self.code)
            .replace("{app}", self.app)
            .replace("{minutes}", &self.minutes.to_string())
    }
}

/// Why a job could not be rendered; it becomes a `rejected` outcome.
#[derive(Debug, thiserror::Error)]
#[error("no template named `{0}`; v1 knows only `default`")]
pub struct UnknownTemplate(pub String);

pub fn render(
    job: &Job,
    app: &str,
    messages: &MessageSettings,
    now: DateTime<Utc>,
) -> Result<Message, UnknownTemplate> {
    if job.template != "default" {
        return Err(UnknownTemplate(job.template.clone()));
    }
    let seconds_left = (job.expires_at - now).num_seconds().max(0);
    let p = Placeholders {
        code: job.code.expose(),
        app,
        minutes: ((seconds_left + 59) / 60).max(1),
    };
    Ok(match job.channel {
        Channel::Sms => Message::Sms {
            body: p.fill(&messages.sms),
        },
        Channel::Voice => Message::Voice {
            twiml: voice_twiml(&p),
        },
        Channel::Email => {
            let text = p.fill(&messages.email_text);
            let html = email_html(&text);
            Message::Email {
                subject: p.fill(&messages.email_subject),
                text,
                html,
            }
        }
    })
}

/// Reads the digits one at a time, with a pause, twice: a code read as a number ("one hundred
/// twenty-three thousand…") is hard to type.
fn voice_twiml(p: &Placeholders<'_>) -> String {
    let digits: Vec<String> = p.code.chars().map(|d| d.to_string()).collect();
    let spoken = digits.join(", ");
    let app = xml_escape(p.app);
    format!(
        "<Response><Say>Your {app} verification code is: {spoken}.</Say><Pause length=\"1\"/>\
         <Say>Again, your code is: {spoken}.</Say></Response>"
    )
}

fn email_html(text: &str) -> String {
    let body = xml_escape(text).replace('\n', "<br>\n");
    format!(
        "<!doctype html>\n<html><body style=\"font-family:sans-serif\">\n<p>{body}</p>\n</body></html>\n"
    )
}

/// Escapes the five XML special characters; enough for text content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> MessageSettings {
        MessageSettings {
            sms: "{code} is your {app} code ({minutes} min)".into(),
            email_subject: "{app} code".into(),
            email_text: "Code: {code}\nBye <3".into(),
        }
    }

    fn job(channel: &str, to: &str) -> Job {
        let body = serde_json::json!({
            "version": 1, "challenge_id": "c", "account_id": "a", "channel": channel, "to": to,
            "code": "4071", "expires_at": "2030-01-01T00:05:00Z"
        });
        Job::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2030-01-01T00:00:30Z".parse().unwrap()
    }

    #[test]
    fn sms_fills_placeholders_and_rounds_minutes_up() {
        let Message::Sms { body } =
            render(&job("sms", "+14155550123"), "Acme", &messages(), now()).unwrap()
        else {
            panic!("not sms")
        };
        assert_eq!(body, "4071 is your Acme code (5 min)");
    }

    #[test]
    fn voice_reads_digits_one_by_one_twice() {
        let Message::Voice { twiml } =
            render(&job("voice", "+14155550123"), "A&B", &messages(), now()).unwrap()
        else {
            panic!("not voice")
        };
        assert_eq!(
            twiml,
            "<Response><Say>Your A&amp;B verification code is: 4, 0, 7, 1.</Say><Pause length=\"1\"/>\
             <Say>Again, your code is: 4, 0, 7, 1.</Say></Response>"
        );
    }

    #[test]
    fn email_html_is_escaped() {
        let Message::Email {
            subject,
            text,
            html,
        } = render(&job("email", "j@example.com"), "Acme", &messages(), now()).unwrap()
        else {
            panic!("not email")
        };
        assert_eq!(subject, "Acme code");
        assert_eq!(text, "Code: 4071\nBye <3");
        assert!(html.contains("Code: 4071<br>\nBye &lt;3"), "{html}");
    }

    #[test]
    fn unknown_templates_and_placeholders_are_refused() {
        let mut j = job("sms", "+14155550123");
        j.template = "welcome".into();
        assert!(render(&j, "A", &messages(), now()).is_err());
        assert!(Placeholders::check("{code} {minutes} {app}").is_ok());
        assert!(Placeholders::check("{cod}").is_err());
        assert!(Placeholders::check("{code").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let m = render(&job("sms", "+14155550123"), "A", &messages(), now()).unwrap();
        assert!(!format!("{m:?}").contains("4071"));
    }
}
