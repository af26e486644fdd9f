use super::*;
use proptest::prelude::*;

#[test]
fn control_and_bidi_characters_are_removed() {
    assert_eq!(clean("a\u{0}b\u{1b}[31mc", 64), "ab[31mc");
    assert_eq!(clean("line\none\ttab\r", 64), "line one tab ");
    assert_eq!(clean("abc\u{202E}fed\u{2066}", 64), "abcfed");
    assert_eq!(clean("\u{7f}\u{85}", 64), "");
}

#[test]
fn long_text_is_cut_with_a_mark() {
    assert_eq!(clean("abcdef", 4), "abc…");
    assert_eq!(clean("abcd", 4), "abcd");
    assert_eq!(clean("ééééé", 3).chars().count(), 3);
}

#[test]
fn vendor_texts_lose_their_numbers_and_addresses() {
    assert_eq!(
        scrub("The 'To' number +14155550123 is not a valid phone number."),
        "The 'To' number +1415•••0123 is not a valid phone number."
    );
    assert_eq!(
        scrub("550 5.1.1 <jane.doe@example.com>: Recipient address rejected"),
        "550 5.1.1 <j•••@example.com>: Recipient address rejected"
    );
    assert_eq!(
        scrub("destination 4915112345678 unreachable"),
        "destination +4915•••5678 unreachable"
    );
    assert_eq!(
        scrub("To +1 (415) 555-0123 failed"),
        "To +1415•••0123 failed"
    );
    assert_eq!(scrub("mail to x@y.io."), "mail to x•••@y.io.");
}

#[test]
fn codes_ids_and_dates_are_left_alone() {
    for kept in [
        "error 21211: invalid",
        "SM0123456789abcdef0123456789abcdef",
        "retry at 2026-12-05T10:00:00Z",
        "HTTP 503",
        "user@localhost",
        "SMTP 5.7.1",
    ] {
        assert_eq!(scrub(kept), kept);
    }
}

proptest! {
    #[test]
    fn cleaned_text_is_clean_and_bounded(s in any::<String>(), max in 1usize..600) {
        let c = clean(&s, max);
        prop_assert!(is_clean(&c, max));
        prop_assert!(!c.contains('\0'));
    }

    #[test]
    fn scrubbed_text_holds_no_number_it_was_given(
        prefix in "[a-zA-Z '<:]{0,20}",
        digits in "[1-9][0-9]{9,13}",
        suffix in "[a-zA-Z '>.:]{0,20}",
    ) {
        let text = format!("{prefix}+{digits}{suffix}");
        let s = scrub(&text);
        prop_assert!(!s.contains(&digits), "{s}");
        prop_assert!(is_clean(&s, MAX_DETAIL_CHARS));
    }

    #[test]
    fn scrubbed_text_holds_no_address_it_was_given(
        local in "[a-z][a-z0-9.]{2,12}",
        domain in "[a-z]{2,10}\\.(com|org|io)",
        around in "[a-zA-Z ]{0,10}",
    ) {
        let text = format!("{around}<{local}@{domain}>{around}");
        let s = scrub(&text);
        prop_assert!(!s.contains(&format!("{local}@")), "{s}");
    }
}
