//! Modified UTF-7 mailbox names (RFC 3501 §5.1.3), as IMAP4rev1 clients send and expect them.
//!
//! The store keeps mailbox names as UTF-8; this module converts at the protocol edge. It does not
//! decide *when* to convert (that is the session's job: a client that enabled UTF-8 names skips
//! it), and it does not validate hierarchy or naming policy.

use base64::Engine;
use base64::alphabet::Alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// RFC 3501 §5.1.3: modified BASE64 uses "," in place of "/" and omits "=" padding.
const MODIFIED_BASE64: Alphabet =
    match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,") {
        Ok(alphabet) => alphabet,
        // Evaluated at compile time: the alphabet above is a constant with 64 distinct symbols.
        Err(_) => panic!("invalid modified base64 alphabet"),
    };

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &MODIFIED_BASE64,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes a UTF-8 mailbox name as modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|unit| unit.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&ENGINE.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decodes a modified UTF-7 mailbox name; `None` when the bytes are not valid modified UTF-7.
pub fn decode(raw: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        if byte == b'&' {
            let end = raw[i + 1..].iter().position(|&b| b == b'-')? + i + 1;
            let chunk = &raw[i + 1..end];
            if chunk.is_empty() {
                out.push('&');
            } else {
                let bytes = ENGINE.decode(chunk).ok()?;
                if bytes.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                    .collect();
                out.push_str(&String::from_utf16(&units).ok()?);
            }
            i = end + 1;
        } else if (0x20..=0x7e).contains(&byte) {
            out.push(char::from(byte));
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc_example() {
        // RFC 3501 §5.1.3 example: "~peter/mail/台北/日本語".
        let utf8 = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        let wire = "~peter/mail/&U,BTFw-/&ZeVnLIqe-";
        assert_eq!(encode(utf8), wire);
        assert_eq!(decode(wire.as_bytes()).as_deref(), Some(utf8));
    }

    #[test]
    fn ampersand_and_plain_ascii() {
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode(b"Tom &- Jerry").as_deref(), Some("Tom & Jerry"));
        assert_eq!(decode(b"Entw&APw-rfe").as_deref(), Some("Entw\u{fc}rfe"));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(b"&unterminated"), None);
        assert_eq!(decode("caf\u{e9}".as_bytes()), None);
    }
}
