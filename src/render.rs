//! The rendered message of each channel, and the XML escaping TwiML and HTML need. Templates
//! (`crate::templates`) produce it; providers carry it.

use std::fmt;

/// A rendered message. It contains the code, so its Debug output is redacted.
pub enum Message {
    Sms {
        body: String,
        /// What the body costs: vendors bill per segment (`crate::segments`).
        segments: u32,
    },
    Voice {
        twiml: String,
    },
    /// WhatsApp sends an approved authentication template whose text is Meta's: otpd supplies
    /// only the code, and the provider picks the template along the locale chain.
    Whatsapp {
        code: String,
        /// The job's locale fallback chain, most specific first, ending at the default locale.
        locales: Vec<String>,
    },
    Email {
        subject: String,
        text: String,
        html: String,
        /// The app's From, when it has its own; otherwise the provider's.
        from: Option<String>,
    },
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Message::Sms { .. } => "Sms",
            Message::Voice { .. } => "Voice",
            Message::Whatsapp { .. } => "Whatsapp",
            Message::Email { .. } => "Email",
        };
        write!(f, "Message::{kind}([redacted])")
    }
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

    #[test]
    fn xml_escape_covers_the_five_specials() {
        assert_eq!(
            xml_escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let m = Message::Sms {
            body: "4071 is your code".into(),
            segments: 1,
        };
        assert_eq!(format!("{m:?}"), "Message::Sms([redacted])");
    }
}
