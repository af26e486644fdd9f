//! Text from outside (a publisher's job, a vendor's answer, a receipt) on its way to the
//! database, a log line or a status event: cleaned of control characters, cut to a bounded
//! length, and with any phone number or email address in it masked.
//!
//! PostgreSQL refuses a NUL in a `text` column, a terminal obeys escape sequences in a log
//! line, and bidirectional overrides make an audit row read differently from what it holds;
//! a vendor's error text routinely quotes the destination back ("The 'To' number +1415… is
//! not a valid phone number", `550 <jane@example.com>: no such user`). Every free text is
//! therefore passed through [`clean`] or [`scrub`] where it enters otpd.

use super::mask::{mask_email, mask_phone};

/// The longest free text kept: enough for any vendor's error message, small enough that a
/// hostile 10 KiB answer costs nothing downstream.
pub const MAX_DETAIL_CHARS: usize = 512;
/// The longest vendor message id kept; real ones are 16–64 characters.
pub const MAX_ID_CHARS: usize = 128;

/// What ends a text that was cut.
const ELLIPSIS: char = '…';

/// Removes control characters (whitespace ones become a space) and bidirectional formatting
/// characters, and cuts the result to `max` characters, marking a cut with `…`.
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut kept = 0;
    for c in s.chars() {
        let c = match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() || is_bidi_control(c) => continue,
            c => c,
        };
        if kept == max {
            out.pop();
            out.push(ELLIPSIS);
            return out;
        }
        out.push(c);
        kept += 1;
    }
    out
}

/// Whether `s` would come through [`clean`] unchanged at length `max`.
pub fn is_clean(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// A vendor's or publisher's free text made safe to keep: phone numbers and email addresses
/// masked, then [`clean`]ed to [`MAX_DETAIL_CHARS`].
pub fn scrub(s: &str) -> String {
    // Cleaned first too, so that a NUL or newline cannot split a number and hide it from the
    // masking, and so that the masking's work is bounded by a short input.
    let bounded = clean(s, MAX_DETAIL_CHARS * 2);
    clean(&mask_contacts(&bounded), MAX_DETAIL_CHARS)
}

/// The embedding, isolate and override characters of Unicode's bidirectional algorithm.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Masks every phone number and email address in free text. A phone number is a `+` and 6–15
/// digits (spaces, dots, hyphens and parentheses between them allowed), or a bare run of 9–15
/// digits standing alone; an email address is `local@domain.tld`.
pub fn mask_contacts(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some((end, masked)) = phone_at(&chars, i).or_else(|| email_at(&chars, i)) {
            out.push_str(&masked);
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A phone number starting at `i`: where it ends, and its masked form.
fn phone_at(chars: &[char], i: usize) -> Option<(usize, String)> {
    let plus = chars[i] == '+';
    let start = if plus { i + 1 } else { i };
    if !chars.get(start)?.is_ascii_digit() {
        return None;
    }
    // A bare run must stand alone: not the tail of a word or an id such as `SM0123…`.
    if !plus && i > 0 && chars[i - 1].is_alphanumeric() {
        return None;
    }
    let mut digits = String::new();
    let (mut end, mut j) = (start, start);
    while j < chars.len() {
        let c = chars[j];
        if c.is_ascii_digit() {
            digits.push(c);
            j += 1;
            end = j;
        } else if plus && matches!(c, ' ' | '.' | '-' | '(' | ')') && j - end < 2 {
            // Up to two separators between digits, as in `+1 (415) 555-0123`.
            j += 1;
        } else {
            break;
        }
    }
    // A bare run must end as a word too (`123456789ms` is a duration); a `+` says enough.
    let followed_by_word = !plus && chars.get(end).is_some_and(|c| c.is_alphanumeric());
    let (min, max) = if plus { (6, 15) } else { (9, 15) };
    if digits.len() < min || digits.len() > max || followed_by_word {
        return None;
    }
    Some((end, mask_phone(&format!("+{digits}"))))
}

/// An email address whose `@` is at or after `i`, starting at `i`: where it ends, and its
/// masked form.
fn email_at(chars: &[char], i: usize) -> Option<(usize, String)> {
    let local_char = |c: char| c.is_alphanumeric() || "._%+-!#$&'*/=?^`{|}~".contains(c);
    let domain_char = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    if !local_char(chars[i]) || (i > 0 && local_char(chars[i - 1])) {
        return None;
    }
    let mut at = i;
    while at < chars.len() && local_char(chars[at]) {
        at += 1;
    }
    if chars.get(at) != Some(&'@') || at == i {
        return None;
    }
    let mut end = at + 1;
    while end < chars.len() && domain_char(chars[end]) {
        end += 1;
    }
    // A trailing dot ends the sentence, not the domain.
    while end > at + 1 && chars[end - 1] == '.' {
        end -= 1;
    }
    let domain: String = chars[at + 1..end].iter().collect();
    if !domain.contains('.') || domain.starts_with('.') {
        return None;
    }
    let local: String = chars[i..at].iter().collect();
    Some((end, mask_email(&format!("{local}@{domain}"))))
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
