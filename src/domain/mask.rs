//! Masking of destinations for storage, logs and the admin API.

const DOTS: &str = "•••";

/// `+14155550123` → `+1415•••0123`. Short numbers keep less so that at least three digits are
/// always hidden.
pub fn mask_phone(e164: &str) -> String {
    let chars: Vec<char> = e164.chars().collect();
    let n = chars.len();
    let (head, tail) = if n >= 12 {
        (5, 4)
    } else if n >= 9 {
        (3, 3)
    } else {
        (2.min(n), 0)
    };
    let head: String = chars[..head].iter().collect();
    let tail: String = chars[n - tail..].iter().collect();
    format!("{head}{DOTS}{tail}")
}

/// `jane.doe@example.com` → `j•••@example.com`. The domain stays visible: it tells support which
/// mail system refused a message, and it is rarely personal.
pub fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}{DOTS}@{domain}")
        }
        None => DOTS.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_keep_country_and_last_digits() {
        assert_eq!(mask_phone("+14155550123"), "+1415•••0123");
        assert_eq!(mask_phone("+4930123456"), "+49•••456");
        assert_eq!(mask_phone("+1234"), "+1•••");
    }

    #[test]
    fn emails_keep_first_letter_and_domain() {
        assert_eq!(mask_email("jane@example.com"), "j•••@example.com");
        assert_eq!(mask_email("x@y.z"), "x•••@y.z");
        assert_eq!(mask_email("broken"), "•••");
    }
}
