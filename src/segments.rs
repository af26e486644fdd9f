//! SMS segment counting: what a message costs, since vendors bill per segment.
//!
//! A message that fits the GSM 03.38 alphabet is sent as 7-bit septets: 160 in one segment, or
//! 153 per segment when concatenated (the user-data header takes the rest). Characters of the
//! extension table (`€`, `[`, `{`, …) take two septets (an escape and the character), and the
//! pair is never split across segments. Anything else forces UCS-2: 70 UTF-16 code units in
//! one segment, 67 per concatenated segment, and a surrogate pair (an emoji) is never split.

/// The GSM 03.38 basic character set, without the escape (0x1B).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: each costs an escape septet too.
const GSM_EXTENSION: &str = "\u{0c}^{}\\[~]|€";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// How a text is sent: its encoding, its length in that encoding's units (septets or UTF-16
/// code units) and the number of segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    pub units: usize,
    pub count: usize,
}

/// Counts the segments `text` is sent in. An empty text still costs one segment.
pub fn count(text: &str) -> Segments {
    // Each character's width in units, in the encoding the whole text needs.
    let gsm: Option<Vec<usize>> = text.chars().map(gsm_septets).collect();
    let (encoding, widths, single, multi) = match gsm {
        Some(widths) => (Encoding::Gsm7, widths, 160, 153),
        None => {
            let widths = text.chars().map(char::len_utf16).collect();
            (Encoding::Ucs2, widths, 70, 67)
        }
    };
    let units = widths.iter().sum();
    let count = if units <= single {
        1
    } else {
        pack(&widths, multi)
    };
    Segments {
        encoding,
        units,
        count,
    }
}

/// The extension table's codes, in `GSM_EXTENSION`'s order (each follows the escape 0x1B).
const GSM_EXTENSION_CODES: [u8; 10] = [0x0A, 0x14, 0x28, 0x29, 0x2F, 0x3C, 0x3D, 0x3E, 0x40, 0x65];

/// `text` in the GSM 03.38 default alphabet, one septet per byte (unpacked, as SMPP's
/// data_coding 0 carries it), or None when a character is outside it.
pub fn gsm7_unpacked(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if let Some(i) = GSM_BASIC.chars().position(|b| b == c) {
            // The table skips the escape at 0x1B.
            out.push(if i < 0x1B { i as u8 } else { i as u8 + 1 });
        } else {
            let i = GSM_EXTENSION.chars().position(|e| e == c)?;
            out.push(0x1B);
            out.push(GSM_EXTENSION_CODES[i]);
        }
    }
    Some(out)
}

fn gsm_septets(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Segments needed when no character may straddle two of them.
fn pack(widths: &[usize], per_segment: usize) -> usize {
    let (mut segments, mut used) = (1, 0);
    for &w in widths {
        if used + w > per_segment {
            segments += 1;
            used = 0;
        }
        used += w;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str) -> (Encoding, usize, usize) {
        let s = count(text);
        (s.encoding, s.units, s.count)
    }

    #[test]
    fn gsm7_fits_160_alone_and_153_concatenated() {
        assert_eq!(seg(""), (Encoding::Gsm7, 0, 1));
        assert_eq!(seg("123456 is your Acme code."), (Encoding::Gsm7, 25, 1));
        assert_eq!(seg(&"a".repeat(160)), (Encoding::Gsm7, 160, 1));
        assert_eq!(seg(&"a".repeat(161)), (Encoding::Gsm7, 161, 2));
        assert_eq!(seg(&"a".repeat(306)), (Encoding::Gsm7, 306, 2));
        assert_eq!(seg(&"a".repeat(307)), (Encoding::Gsm7, 307, 3));
        assert_eq!(seg("Ü, ö, é, à, £ and ¥ are GSM"), (Encoding::Gsm7, 27, 1));
        assert_eq!(seg("naïve").0, Encoding::Ucs2, "ï is not in GSM 03.38");
    }

    #[test]
    fn extension_characters_take_two_septets_and_never_split() {
        assert_eq!(seg("€"), (Encoding::Gsm7, 2, 1));
        assert_eq!(seg("{[~]}|^\\"), (Encoding::Gsm7, 16, 1));
        assert_eq!(seg(&"€".repeat(80)), (Encoding::Gsm7, 160, 1));
        assert_eq!(seg(&"€".repeat(81)), (Encoding::Gsm7, 162, 2));
        // 152 septets then an escape pair: the pair moves whole to the second segment.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(seg(&text), (Encoding::Gsm7, 306, 3));
    }

    #[test]
    fn gsm7_unpacked_uses_the_default_alphabet_codes() {
        assert_eq!(gsm7_unpacked("@£$"), Some(vec![0x00, 0x01, 0x02]));
        assert_eq!(gsm7_unpacked("AZaz09 "), Some(b"AZaz09 ".to_vec()));
        assert_eq!(
            gsm7_unpacked("ÆÉ¡§¿àΔ_"),
            Some(vec![0x1C, 0x1F, 0x40, 0x5F, 0x60, 0x7F, 0x10, 0x11])
        );
        assert_eq!(
            gsm7_unpacked("€{|"),
            Some(vec![0x1B, 0x65, 0x1B, 0x28, 0x1B, 0x40])
        );
        assert_eq!(gsm7_unpacked("ó"), None);
    }

    #[test]
    fn anything_else_is_ucs2_at_70_and_67_and_emoji_count_double() {
        assert_eq!(seg("Ваш код 123456"), (Encoding::Ucs2, 14, 1));
        assert_eq!(seg(&"ж".repeat(70)), (Encoding::Ucs2, 70, 1));
        assert_eq!(seg(&"ж".repeat(71)), (Encoding::Ucs2, 71, 2));
        assert_eq!(seg(&"ж".repeat(134)), (Encoding::Ucs2, 134, 2));
        assert_eq!(seg(&"ж".repeat(135)), (Encoding::Ucs2, 135, 3));
        assert_eq!(seg("123456 😀"), (Encoding::Ucs2, 9, 1));
        assert_eq!(seg(&"😀".repeat(35)), (Encoding::Ucs2, 70, 1));
        // 33 emoji fill 66 units; the 34th cannot split, so it opens segment two.
        assert_eq!(seg(&"😀".repeat(67)), (Encoding::Ucs2, 134, 3));
        // One character outside GSM turns the whole message to UCS-2.
        assert_eq!(
            seg(&format!("{}ç", "a".repeat(69))),
            (Encoding::Ucs2, 70, 1)
        );
        assert_eq!(
            seg(&format!("{}ç", "a".repeat(70))),
            (Encoding::Ucs2, 71, 2)
        );
    }
}
