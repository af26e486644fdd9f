//! The generic HTTP SMS provider: a vendor's API described entirely in config (method, URL,
//! headers, form or JSON body, what success looks like, where the message id is, which answers
//! are transient or permanent). The shipped examples speak Vonage's SMS API and Plivo's
//! Message API (docs/examples/providers/).
//!
//! Every URL, header and body field is a minijinja template over the message (`to`,
//! `to_digits`, `text`, `encoding`, `segments`), the code's remaining life in whole seconds
//! (`ttl_secs`, for the vendor's validity parameter), where the vendor should post receipts
//! (`receipt_url`, empty without `http.public_url`) and the instance's `secrets`, in strict mode,
//! compiled and rendered with a sample when the config loads. The rendered request holds the
//! code, so it is never logged; errors name the template (`body.text`), never a value.

use super::{BuildError, ProviderError, Sent};
use crate::config::{BodyFormat, HttpProviderSettings, RuleOutcome};
use crate::domain::{Destination, FailReason};
use crate::render::Message;
use crate::segments::{self, Encoding};
use minijinja::{Environment, UndefinedBehavior};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct HttpProvider {
    http: reqwest::Client,
    request: RequestTemplates,
    /// How answers are read (the `success_*`, `*_pointer` and `rules` settings).
    settings: HttpProviderSettings,
}

/// The compiled request: method, templates and the secrets they may read.
pub struct RequestTemplates {
    method: Method,
    format: BodyFormat,
    env: Environment<'static>,
    headers: Vec<String>,
    fields: Vec<String>,
    /// Fields a JSON body carries as numbers.
    numbers: Vec<String>,
    secrets: BTreeMap<String, String>,
    receipt_url: String,
}

/// What the templates see.
#[derive(Serialize)]
struct Vars<'a> {
    to: &'a str,
    to_digits: &'a str,
    text: &'a str,
    encoding: &'static str,
    segments: u32,
    ttl_secs: u64,
    receipt_url: &'a str,
    secrets: &'a BTreeMap<String, String>,
}

/// A rendered request.
struct Rendered {
    url: String,
    headers: Vec<(String, String)>,
    fields: Vec<(String, String)>,
}

impl RequestTemplates {
    /// Compiles the templates and renders them once with a sample message, so that a typo
    /// fails at config load naming `providers.<name>.<template>`.
    pub fn compile(
        name: &str,
        s: &HttpProviderSettings,
        receipt_url: String,
    ) -> Result<RequestTemplates, BuildError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            BuildError::Http(format!("providers.{name}.{what}: {e}"))
        };
        let method = match s.method.to_ascii_uppercase().as_str() {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "GET" => Method::GET,
            other => return Err(err("method", &format!("`{other}` is not POST, PUT or GET"))),
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Form and JSON encoding escape the values; HTML escaping would corrupt them.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("b64encode", |s: String| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        });
        let mut add = |key: String, source: &str| {
            env.add_template_owned(key.clone(), source.to_string())
                .map_err(|e| err(&key, &e))
        };
        add("url".into(), &s.url)?;
        for (header, source) in &s.headers {
            add(format!("headers.{header}"), source)?;
        }
        for (field, source) in &s.body {
            add(format!("body.{field}"), source)?;
        }
        let request = RequestTemplates {
            method,
            format: s.body_format,
            env,
            headers: s.headers.keys().cloned().collect(),
            fields: s.body.keys().cloned().collect(),
            numbers: s.json_numbers.clone(),
            secrets: s
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
            receipt_url,
        };
        let sample = request.vars("+14155550123", "1234567890 is your code", 1, Encoding::Gsm7);
        let sample = Vars {
            ttl_secs: 300,
            ..sample
        };
        let rendered = request.render(&sample).map_err(|e| err(&e.0, &e.1))?;
        reqwest::Url::parse(&rendered.url).map_err(|e| err("url", &e))?;
        for number in &request.numbers {
            if !s.body.contains_key(number) {
                return Err(err(
                    "json_numbers",
                    &format!("`{number}` is not a body field"),
                ));
            }
        }
        request
            .json_body(rendered.fields)
            .map_err(|(key, e)| err(&key, &e))?;
        Ok(request)
    }

    fn vars<'a>(
        &'a self,
        to: &'a str,
        text: &'a str,
        segments: u32,
        encoding: Encoding,
    ) -> Vars<'a> {
        Vars {
            to,
            to_digits: to.trim_start_matches('+'),
            text,
            encoding: match encoding {
                Encoding::Gsm7 => "gsm7",
                Encoding::Ucs2 => "ucs2",
            },
            segments,
            ttl_secs: 0,
            receipt_url: &self.receipt_url,
            secrets: &self.secrets,
        }
    }

    /// The JSON body of the rendered fields: strings, and numbers for `json_numbers`. A
    /// number field that did not render as a number names itself.
    fn json_body(
        &self,
        fields: Vec<(String, String)>,
    ) -> Result<serde_json::Map<String, Value>, (String, String)> {
        fields
            .into_iter()
            .map(|(k, v)| {
                if !self.numbers.contains(&k) {
                    return Ok((k, Value::String(v)));
                }
                match serde_json::from_str::<serde_json::Number>(v.trim()) {
                    Ok(n) => Ok((k, Value::Number(n))),
                    Err(_) => Err((
                        format!("body.{k}"),
                        "is in json_numbers but did not render as a number".into(),
                    )),
                }
            })
            .collect()
    }

    /// Every template rendered; an error names the template only (values may be secrets).
    fn render(&self, vars: &Vars<'_>) -> Result<Rendered, (String, String)> {
        let one = |key: &str| -> Result<String, (String, String)> {
            let t = self
                .env
                .get_template(key)
                .map_err(|e| (key.to_string(), e.to_string()))?;
            t.render(vars).map_err(|e| (key.to_string(), e.to_string()))
        };
        let mut out = Rendered {
            url: one("url")?,
            headers: Vec::with_capacity(self.headers.len()),
            fields: Vec::with_capacity(self.fields.len()),
        };
        for h in &self.headers {
            out.headers.push((h.clone(), one(&format!("headers.{h}"))?));
        }
        // A field that renders empty is left out, so that an optional parameter (a receipt
        // URL before `http.public_url` is set) is absent rather than blank, which vendors refuse.
        for f in &self.fields {
            let value = one(&format!("body.{f}"))?;
            if !value.is_empty() {
                out.fields.push((f.clone(), value));
            }
        }
        Ok(out)
    }
}

impl HttpProvider {
    pub fn new(
        name: &str,
        s: &HttpProviderSettings,
        receipt_url: String,
    ) -> Result<HttpProvider, BuildError> {
        let request = RequestTemplates::compile(name, s, receipt_url)?;
        let http = super::http_client(s.timeout_ms)
            .map_err(|e| BuildError::Http(format!("providers.{name}: {e}")))?;
        Ok(HttpProvider {
            http,
            request,
            settings: s.clone(),
        })
    }

    pub async fn send(
        &self,
        to: &Destination,
        message: &Message,
        valid_for: Duration,
    ) -> Result<Sent, ProviderError> {
        let misconfigured = |detail: String| ProviderError::Permanent {
            status: None,
            reason: FailReason::ProviderMisconfigured,
            detail,
        };
        let (Destination::Phone(phone), Message::Sms { body, segments }) = (to, message) else {
            return Err(misconfigured(
                "the http provider carries SMS only; check [channels]".into(),
            ));
        };
        let t = &self.request;
        let vars = Vars {
            ttl_secs: valid_for.as_secs(),
            ..t.vars(
                phone.as_e164(),
                body,
                *segments,
                segments::count(body).encoding,
            )
        };
        let r = t
            .render(&vars)
            .map_err(|(key, e)| misconfigured(format!("{key}: {e}")))?;
        let mut request = self.http.request(t.method.clone(), &r.url);
        for (name, value) in &r.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request = match (t.format, &t.method) {
            (_, &Method::GET) => request.query(&r.fields),
            (BodyFormat::Form, _) => request.form(&r.fields),
            (BodyFormat::Json, _) => {
                let object = t
                    .json_body(r.fields)
                    .map_err(|(key, e)| misconfigured(format!("{key} {e}")))?;
                request.json(&object)
            }
        };
        let response = request.send().await.map_err(super::unanswered)?;
        let status = response.status().as_u16();
        let retry_after = super::twilio::retry_after(response.headers());
        let body = super::answer_body(response).await;
        classify(&self.settings, status, retry_after, &body)
    }
}

/// A JSON pointer's value as a string (vendors send codes as strings or numbers).
fn pointer(json: &Value, pointer: &str) -> Option<String> {
    if pointer.is_empty() {
        return None;
    }
    match json.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What an answer means: the success condition, then the rules in order, then defaults by
/// status.
pub fn classify(
    spec: &HttpProviderSettings,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Sent, ProviderError> {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let status_ok = spec.success_status.contains(&status);
    let body_ok = spec.success_pointer.is_empty()
        || pointer(&json, &spec.success_pointer).as_deref() == Some(spec.success_value.as_str());
    if status_ok && body_ok {
        return Ok(Sent {
            provider_message_id: pointer(&json, &spec.message_id_pointer),
            status: Some(status),
        });
    }
    let code = pointer(&json, &spec.error_code_pointer);
    let detail = match &code {
        Some(c) => format!("HTTP {status}, vendor code {}", truncate(c)),
        None => format!("HTTP {status}"),
    };
    let matched = spec.rules.iter().find(|r| {
        (r.status.is_empty() || r.status.contains(&status))
            && (r.codes.is_empty() || code.as_ref().is_some_and(|c| r.codes.contains(c)))
    });
    let outcome = match matched {
        Some(rule) => rule.outcome,
        None => match status {
            429 => RuleOutcome::RateLimited,
            408 | 500..=599 => RuleOutcome::Transient,
            401 | 403 => RuleOutcome::ProviderAuth,
            _ => RuleOutcome::Permanent,
        },
    };
    let status = Some(status);
    Err(match outcome {
        RuleOutcome::Transient => ProviderError::Transient {
            status,
            detail,
            in_doubt: false,
        },
        RuleOutcome::RateLimited => ProviderError::RateLimited {
            status,
            retry_after,
            detail,
        },
        other => ProviderError::Permanent {
            status,
            reason: other.reason(),
            detail,
        },
    })
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
