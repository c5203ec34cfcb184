//! GPT-2's byte-level alphabet: the 256 characters byte-level BPE vocabularies spell bytes
//! with.

/// GPT-2's byte→unicode alphabet: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100.. in byte order (`bytes_to_unicode` in GPT-2's `encoder.py`).
const BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        // All codes are below 0x200, hence valid scalar values.
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// The bytes of a byte-level (GPT-2 alphabet) string; `None` if a character is outside the
/// alphabet.
pub fn bytes_of_byte_level(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| BYTE_TO_CHAR.iter().position(|&x| x == c).map(|b| b as u8)).collect()
}

/// The byte-level (GPT-2 alphabet) string of raw token bytes.
pub fn byte_level_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[0], 'Ā');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = BYTE_TO_CHAR.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
