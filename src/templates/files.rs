//! Where template sources come from: the shipped set compiled in, then an operator's directory
//! layered over it, and how a job's locale falls back to the files that exist.

use super::TemplateError;
use std::collections::BTreeMap;
use std::path::Path;

/// One message part of a channel, and the file that holds its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Sms,
    Voice,
    EmailSubject,
    EmailText,
    EmailHtml,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Sms,
        Part::Voice,
        Part::EmailSubject,
        Part::EmailText,
        Part::EmailHtml,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Part::Sms => "sms.txt",
            Part::Voice => "voice.txt",
            Part::EmailSubject => "email.subject.txt",
            Part::EmailText => "email.txt",
            Part::EmailHtml => "email.html",
        }
    }

    fn from_file(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.file() == name)
    }
}

macro_rules! shipped {
    ($path:literal) => {
        (
            $path,
            include_str!(concat!("../../config/templates/", $path)),
        )
    };
}

/// The shipped templates, `config/templates/…`, compiled in so that a bare binary works. A
/// unit test keeps this list equal to the directory.
pub const SHIPPED: [(&str, &str); 22] = [
    shipped!("default/en/sms.txt"),
    shipped!("default/en/voice.txt"),
    shipped!("default/en/email.subject.txt"),
    shipped!("default/en/email.txt"),
    shipped!("default/en/email.html"),
    shipped!("default/pt/sms.txt"),
    shipped!("default/pt/voice.txt"),
    shipped!("default/pt/email.subject.txt"),
    shipped!("default/pt/email.txt"),
    shipped!("default/pt/email.html"),
    shipped!("default/pt-BR/sms.txt"),
    shipped!("default/pt-BR/voice.txt"),
    shipped!("default/de/sms.txt"),
    shipped!("default/de/voice.txt"),
    shipped!("default/de/email.subject.txt"),
    shipped!("default/de/email.txt"),
    shipped!("default/de/email.html"),
    shipped!("default/es/sms.txt"),
    shipped!("default/es/voice.txt"),
    shipped!("default/es/email.subject.txt"),
    shipped!("default/es/email.txt"),
    shipped!("default/es/email.html"),
];

/// A template source and where it came from, for error messages.
pub struct Source {
    pub origin: String,
    pub text: String,
}

/// Every template by its key, `template/locale/file` with the locale lowercased (locale tags
/// are case-insensitive: `pt-BR` and `pt-br` are one locale).
pub type Sources = BTreeMap<String, Source>;

pub fn key(template: &str, locale: &str, part: Part) -> String {
    format!("{template}/{}/{}", locale.to_ascii_lowercase(), part.file())
}

/// The shipped templates, then those under `dir` (replacing shipped files of the same key).
pub fn collect(dir: &str) -> Result<Sources, TemplateError> {
    let mut out = Sources::new();
    for (path, text) in SHIPPED {
        let mut it = path.splitn(3, '/');
        let (t, l, f) = (it.next(), it.next(), it.next());
        let part = f
            .and_then(Part::from_file)
            .expect("shipped names are valid");
        out.insert(
            key(t.unwrap_or_default(), l.unwrap_or_default(), part),
            Source {
                origin: format!("config/templates/{path} (shipped)"),
                text: text.to_string(),
            },
        );
    }
    if !dir.is_empty() {
        read_dir(Path::new(dir), &mut out)?;
    }
    Ok(out)
}

fn read_dir(dir: &Path, out: &mut Sources) -> Result<(), TemplateError> {
    let invalid = |path: &Path, detail: String| TemplateError {
        file: path.display().to_string(),
        detail,
    };
    for template in entries(dir)? {
        let name = file_name(&template);
        if !valid_name(&name) {
            return Err(invalid(
                &template,
                "template names are [A-Za-z0-9_.-]{1,64}".into(),
            ));
        }
        for locale in entries(&template)? {
            let tag = file_name(&locale);
            if crate::domain::parse_locale(&tag).is_err() {
                return Err(invalid(
                    &locale,
                    "not a BCP 47 locale such as en or pt-BR".into(),
                ));
            }
            for file in entries(&locale)? {
                let Some(part) = Part::from_file(&file_name(&file)) else {
                    let known: Vec<_> = Part::ALL.iter().map(|p| p.file()).collect();
                    return Err(invalid(
                        &file,
                        format!("unknown file; expected one of {known:?}"),
                    ));
                };
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| invalid(&file, format!("cannot read: {e}")))?;
                let origin = file.display().to_string();
                out.insert(key(&name, &tag, part), Source { origin, text });
            }
        }
    }
    Ok(())
}

fn entries(dir: &Path) -> Result<Vec<std::path::PathBuf>, TemplateError> {
    let err = |e: std::io::Error| TemplateError {
        file: dir.display().to_string(),
        detail: format!("cannot read templates.dir: {e}"),
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    // Hidden files (editor swap files, .keep) are not templates.
    paths.retain(|p| !file_name(p).starts_with('.'));
    paths.sort();
    Ok(paths)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn valid_name(s: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    !s.is_empty() && s.len() <= 64 && s.chars().all(allowed)
}

/// The locales to look in, best first: the job's tag, then each shorter prefix of it
/// (`pt-BR` → `pt`), then the default locale and its prefixes; lowercased, without repeats.
pub fn fallbacks(locale: Option<&str>, default: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(4);
    for tag in locale.into_iter().chain([default]) {
        let mut tag = tag.to_ascii_lowercase();
        loop {
            if !out.contains(&tag) {
                out.push(tag.clone());
            }
            match tag.rfind('-') {
                Some(i) => tag.truncate(i),
                None => break,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_fall_back_to_their_language_then_the_default() {
        assert_eq!(fallbacks(Some("pt-BR"), "en"), ["pt-br", "pt", "en"]);
        assert_eq!(
            fallbacks(Some("zh-Hant-TW"), "en-GB"),
            ["zh-hant-tw", "zh-hant", "zh", "en-gb", "en"]
        );
        assert_eq!(fallbacks(None, "de"), ["de"]);
        assert_eq!(fallbacks(Some("EN"), "en"), ["en"]);
    }

    #[test]
    fn the_shipped_list_is_the_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
        let mut on_disk = Vec::new();
        for t in entries(&root).unwrap() {
            for l in entries(&t).unwrap() {
                for f in entries(&l).unwrap() {
                    let rel = f
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    on_disk.push(rel);
                }
            }
        }
        let mut shipped: Vec<String> = SHIPPED.iter().map(|(p, _)| p.to_string()).collect();
        on_disk.sort();
        shipped.sort();
        assert_eq!(on_disk, shipped, "update SHIPPED in src/templates/files.rs");
    }
}
