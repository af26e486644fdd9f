//! The start-up check: every template rendered with a sample, so that a typo, an unknown
//! variable or an SMS over the segment budget stops otpd (and `otpd check-config`) naming the
//! file, instead of rejecting end users' jobs one by one.

use super::{Part, RenderError, TemplateError, Templates, Vars, channel_of, fallbacks};
use crate::domain::Channel;
use crate::render::Message;
use std::collections::{BTreeMap, BTreeSet};

/// The longest code a job may carry, so the segment check is the worst case.
pub const SAMPLE_CODE: &str = "1234567890";
/// Minutes as two digits, the usual worst case.
const SAMPLE_MINUTES: i64 = 10;
/// Stands in for every allowed metadata value.
const SAMPLE_METADATA: &str = "Sample";

pub fn all(t: &Templates, sms_max_segments: u32) -> Result<(), TemplateError> {
    // template → locales that have at least one file.
    let mut locales: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for key in &t.keys {
        let mut it = key.split('/');
        if let (Some(name), Some(locale)) = (it.next(), it.next()) {
            locales.entry(name).or_default().insert(locale);
        }
    }
    for name in t.apps.keys() {
        if !locales.contains_key(name.as_str()) {
            return Err(TemplateError {
                file: format!("templates.apps.{name}"),
                detail: "no template of that name".into(),
            });
        }
    }
    for (name, locales) in &locales {
        for channel in [Channel::Sms, Channel::Voice, Channel::Email] {
            let parts: Vec<Part> = Part::ALL
                .into_iter()
                .filter(|p| channel_of(*p) == channel)
                .collect();
            let offered = locales.iter().any(|l| {
                parts
                    .iter()
                    .any(|p| t.keys.contains(&super::key(name, l, *p)))
            });
            if !offered {
                continue;
            }
            // Every locale's chain ends in the default locale, so it must hold every part:
            // otherwise a job in some locale would find half a message, or none.
            for part in &parts {
                let default_key = super::key(name, &t.default_locale, *part);
                if !t.keys.contains(&default_key) {
                    return Err(TemplateError {
                        file: default_key,
                        detail: format!(
                            "missing: template `{name}` has {channel} messages, so the default locale `{}` needs this file",
                            t.default_locale
                        ),
                    });
                }
            }
            for locale in locales {
                sample(t, name, locale, channel, sms_max_segments)?;
            }
        }
    }
    Ok(())
}

fn sample(
    t: &Templates,
    name: &str,
    locale: &str,
    channel: Channel,
    sms_max_segments: u32,
) -> Result<(), TemplateError> {
    let chain = fallbacks(Some(locale), &t.default_locale);
    let vars = Vars {
        code: SAMPLE_CODE,
        app_name: &t.decorations(name).app_name,
        expires_in_minutes: SAMPLE_MINUTES,
        locale,
        metadata: t
            .metadata
            .iter()
            .map(|k| (k.as_str(), SAMPLE_METADATA))
            .collect(),
    };
    let message = t
        .render_with(name, channel, &chain, vars)
        .map_err(|e| match e {
            RenderError::Failed { file, detail } => TemplateError { file, detail },
            RenderError::Unknown { .. } => TemplateError {
                file: format!("{name}/{locale}"),
                detail: e.to_string(),
            },
        })?;
    let Message::Sms { body, .. } = message else {
        return Ok(());
    };
    let file = t
        .resolve(name, Part::Sms, &chain)
        .and_then(|k| t.origins.get(&k).cloned())
        .unwrap_or_default();
    let s = crate::segments::count(&body);
    let units = match s.encoding {
        crate::segments::Encoding::Gsm7 => "GSM-7 septets",
        crate::segments::Encoding::Ucs2 => "UCS-2 units",
    };
    if s.count as u32 > sms_max_segments {
        return Err(TemplateError {
            file,
            detail: format!(
                "renders (for locale {locale}, with a {}-digit sample code and the app's WebOTP and hash lines) to {} segments ({} {units}); templates.sms_max_segments is {sms_max_segments}",
                SAMPLE_CODE.len(),
                s.count,
                s.units
            ),
        });
    }
    if t.decorations(name).android_app_hash.is_some() && s.count > 1 {
        return Err(TemplateError {
            file,
            detail: format!(
                "with app.android_app_hash set, an SMS must fit 140 bytes (one segment); this renders (for locale {locale}) to {} {units}",
                s.units
            ),
        });
    }
    Ok(())
}
