//! Localised message templates (docs/templates.md).
//!
//! Each channel's message is rendered from minijinja templates named
//! `<template>/<locale>/<file>`: the shipped ones compiled in (`config/templates/`), with an
//! operator's `templates.dir` layered over them. A job's locale falls back file by file
//! (`pt-BR` → `pt` → `app.default_locale`), undefined variables are errors rather than empty
//! strings, and every template is rendered with a sample at start-up ([`check`]), so a typo or
//! an over-long SMS stops otpd before it reaches an end user.
//!
//! Rendering is pure: the same job, settings and clock give the same bytes. The code enters a
//! template only here and leaves only inside the returned [`Message`].

mod check;
mod files;

pub use files::Part;

use crate::config::{AppSettings, Settings, TemplateApp, VoiceSettings};
use crate::domain::{Channel, Job};
use crate::render::{Message, xml_escape};
use chrono::{DateTime, Utc};
use files::{Sources, fallbacks, key};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A template that cannot be loaded or rendered with the sample, naming its file.
#[derive(Debug, thiserror::Error)]
#[error("template {file}: {detail}")]
pub struct TemplateError {
    pub file: String,
    pub detail: String,
}

/// Why a job's message could not be rendered; each becomes a `rejected` outcome.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No file for this template, channel and locale chain: `unknown_template`.
    #[error("no {channel} template named `{template}`")]
    Unknown {
        template: String,
        channel: &'static str,
    },
    /// The template failed on this job (a metadata key it needs is missing): `template_error`.
    #[error("template {file}: {detail}")]
    Failed { file: String, detail: String },
}

/// The decorations of a message: its app's name, WebOTP origin, app hash and From.
struct Decorations {
    app_name: String,
    webotp_domain: Option<String>,
    android_app_hash: Option<String>,
    email_from: Option<String>,
}

impl Decorations {
    /// `[app]`, with a template's own app fields over it.
    fn new(app: &AppSettings, over: Option<&TemplateApp>) -> Decorations {
        let pick = |own: Option<&String>, base: &str| {
            let v = own
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .unwrap_or(base.trim());
            (!v.is_empty()).then(|| v.to_string())
        };
        Decorations {
            app_name: pick(over.map(|o| &o.name), &app.name).unwrap_or_default(),
            webotp_domain: pick(over.map(|o| &o.webotp_domain), &app.webotp_domain),
            android_app_hash: pick(over.map(|o| &o.android_app_hash), &app.android_app_hash),
            email_from: pick(over.map(|o| &o.email_from), &app.email_from),
        }
    }

    /// The Android app hash on its own line, then the WebOTP line, which the WebOTP
    /// specification requires to be the message's last.
    fn sms(&self, mut body: String, code: &str) -> String {
        if let Some(hash) = &self.android_app_hash {
            body.push('\n');
            body.push_str(hash);
        }
        if let Some(domain) = &self.webotp_domain {
            body.push_str("\n\n@");
            body.push_str(domain);
            body.push_str(" #");
            body.push_str(code);
        }
        body
    }
}

/// The variables a template sees.
#[derive(Serialize)]
struct Vars<'a> {
    code: &'a str,
    app_name: &'a str,
    expires_in_minutes: i64,
    locale: &'a str,
    metadata: BTreeMap<&'a str, &'a str>,
}

/// Every template, compiled, and what rendering needs besides the job.
pub struct Templates {
    env: Environment<'static>,
    /// The keys of `env`'s templates, for the fallback lookup.
    keys: BTreeSet<String>,
    /// Where each key came from, for error messages.
    origins: BTreeMap<String, String>,
    default_locale: String,
    voices: BTreeMap<String, VoiceSettings>,
    metadata: BTreeSet<String>,
    decorations: Decorations,
    /// Templates with an app of their own (`templates.apps`).
    apps: BTreeMap<String, Decorations>,
}

impl Templates {
    /// Loads and compiles every template and renders each with a sample ([`check`]).
    pub fn load(settings: &Settings) -> Result<Templates, TemplateError> {
        let t = &settings.templates;
        let sources = files::collect(&t.dir)?;
        let templates = Templates::compile(sources, settings)?;
        check::all(&templates, t.sms_max_segments)?;
        Ok(templates)
    }

    fn compile(sources: Sources, settings: &Settings) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Files end with a newline that no SMS should carry.
        env.set_keep_trailing_newline(false);
        let mut origins = BTreeMap::new();
        for (key, source) in sources {
            env.add_template_owned(key.clone(), source.text)
                .map_err(|e| TemplateError {
                    file: source.origin.clone(),
                    detail: e.to_string(),
                })?;
            origins.insert(key, source.origin);
        }
        let voices = settings
            .templates
            .voices
            .iter()
            .map(|(locale, v)| (locale.to_ascii_lowercase(), v.clone()))
            .collect();
        Ok(Templates {
            env,
            keys: origins.keys().cloned().collect(),
            origins,
            default_locale: settings.app.default_locale.to_ascii_lowercase(),
            voices,
            metadata: settings.templates.metadata.0.iter().cloned().collect(),
            decorations: Decorations::new(&settings.app, None),
            apps: settings
                .templates
                .apps
                .iter()
                .map(|(t, a)| (t.clone(), Decorations::new(&settings.app, Some(a))))
                .collect(),
        })
    }

    /// Renders `job`'s message for its channel, template and locale at `now`.
    pub fn render(&self, job: &Job, now: DateTime<Utc>) -> Result<Message, RenderError> {
        let seconds_left = (job.expires_at - now).num_seconds().max(0);
        let vars = Vars {
            code: job.code.expose(),
            app_name: &self.decorations(&job.template).app_name,
            expires_in_minutes: ((seconds_left + 59) / 60).max(1),
            locale: job.locale.as_deref().unwrap_or(&self.default_locale),
            metadata: job
                .metadata
                .iter()
                .filter(|(k, _)| self.metadata.contains(k.as_str()))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        let chain = fallbacks(job.locale.as_deref(), &self.default_locale);
        self.render_with(&job.template, job.channel, &chain, vars)
    }

    fn render_with(
        &self,
        template: &str,
        channel: Channel,
        chain: &[String],
        vars: Vars<'_>,
    ) -> Result<Message, RenderError> {
        Ok(match channel {
            Channel::Sms => {
                let body = self.part(template, Part::Sms, chain, &vars)?;
                let body = self.decorations(template).sms(body, vars.code);
                let segments = crate::segments::count(&body).count as u32;
                Message::Sms { body, segments }
            }
            Channel::Voice => {
                // Digits one at a time with a pause between them: a code read as a number
                // ("four hundred seven thousand…") is hard to type.
                let spaced = spaced_digits(vars.code);
                let vars = Vars {
                    code: &spaced,
                    ..vars
                };
                let text = self.part(template, Part::Voice, chain, &vars)?;
                Message::Voice {
                    twiml: self.twiml(text.trim(), chain),
                }
            }
            Channel::Whatsapp => Message::Whatsapp {
                code: vars.code.to_string(),
                locales: chain.to_vec(),
            },
            Channel::Email => Message::Email {
                // A header holds one line, whatever the template or metadata says.
                subject: self
                    .part(template, Part::EmailSubject, chain, &vars)?
                    .replace(['\r', '\n'], " ")
                    .trim()
                    .to_string(),
                text: self.part(template, Part::EmailText, chain, &vars)?,
                html: self.part(template, Part::EmailHtml, chain, &vars)?,
                from: self.decorations(template).email_from.clone(),
            },
        })
    }

    /// The app `template` speaks for.
    fn decorations(&self, template: &str) -> &Decorations {
        self.apps.get(template).unwrap_or(&self.decorations)
    }

    /// The first file of `part` along the locale chain, rendered.
    fn part(
        &self,
        template: &str,
        part: Part,
        chain: &[String],
        vars: &Vars<'_>,
    ) -> Result<String, RenderError> {
        let key = self
            .resolve(template, part, chain)
            .ok_or_else(|| RenderError::Unknown {
                template: template.to_string(),
                channel: channel_of(part).as_str(),
            })?;
        let failed = |e: minijinja::Error| RenderError::Failed {
            file: self.origins.get(&key).cloned().unwrap_or_default(),
            detail: describe(&e),
        };
        let tmpl = self.env.get_template(&key).map_err(failed)?;
        tmpl.render(vars).map_err(failed)
    }

    fn resolve(&self, template: &str, part: Part, chain: &[String]) -> Option<String> {
        chain
            .iter()
            .map(|locale| key(template, locale, part))
            .find(|k| self.keys.contains(k))
    }

    /// The text said twice, with a pause, in the locale's language and voice.
    fn twiml(&self, text: &str, chain: &[String]) -> String {
        let voice = chain.iter().find_map(|l| self.voices.get(l));
        let mut attrs = String::new();
        if let Some(v) = voice {
            for (name, value) in [("language", &v.language), ("voice", &v.voice)] {
                if !value.is_empty() {
                    attrs.push_str(&format!(" {name}=\"{}\"", xml_escape(value)));
                }
            }
        }
        let say = format!("<Say{attrs}>{}</Say>", xml_escape(text));
        format!("<Response>{say}<Pause length=\"1\"/>{say}</Response>")
    }
}

fn channel_of(part: Part) -> Channel {
    match part {
        Part::Sms => Channel::Sms,
        Part::Voice => Channel::Voice,
        Part::EmailSubject | Part::EmailText | Part::EmailHtml => Channel::Email,
    }
}

fn spaced_digits(code: &str) -> String {
    let mut out = String::with_capacity(code.len() * 3);
    for (i, c) in code.chars().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push(c);
    }
    out
}

/// minijinja's error: its kind, detail, file and line. Never the source excerpt or a value.
fn describe(e: &minijinja::Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests;
