//! Decoding of the two SASL mechanisms the server offers: PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login), carried in base64 by SMTP AUTH (RFC 4954 §4).
//!
//! This module only turns client responses into credentials. It does not check them (the
//! handler does), keep them, or log them. SCRAM-SHA-256, which keeps state across round trips
//! and checks a proof itself, is `scram.rs`; CRAM-MD5 is not offered.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard base64 that accepts responses with or without padding: RFC 4954 requires padding,
/// but refusing a client for leaving it out gains nothing.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The base64 of "Username:", LOGIN's first challenge.
pub(crate) const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The base64 of "Password:", LOGIN's second challenge.
pub(crate) const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Why a client response could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaslError {
    /// Not valid base64 (RFC 4954 §4: 501).
    Base64,
    /// Valid base64, but not a well-formed response for the mechanism.
    Malformed,
}

/// Credentials from PLAIN: `[authzid] NUL authcid NUL passwd` (RFC 4616 §2).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PlainCredentials {
    pub(crate) authzid: String,
    pub(crate) authcid: String,
    pub(crate) password: String,
}

/// Decodes a base64 client response. RFC 4954 §4: in an initial response, "=" stands for an
/// empty response; the caller passes it here unchanged.
pub(crate) fn decode(response: &str) -> Result<Vec<u8>, SaslError> {
    let response = response.trim_matches(|ch| ch == ' ' || ch == '\t');
    if response == "=" {
        return Ok(Vec::new());
    }
    BASE64.decode(response).map_err(|_| SaslError::Base64)
}

/// Decodes one base64 response into UTF-8 text (a LOGIN username or password).
pub(crate) fn decode_text(response: &str) -> Result<String, SaslError> {
    String::from_utf8(decode(response)?).map_err(|_| SaslError::Malformed)
}

/// Splits a decoded PLAIN message. RFC 4616 §2: exactly two NULs, a non-empty authcid and
/// password, and UTF-8 throughout.
pub(crate) fn parse_plain(message: &[u8]) -> Result<PlainCredentials, SaslError> {
    let mut parts = message.split(|&octet| octet == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed);
    }
    let text = |part: &[u8]| String::from_utf8(part.to_vec()).map_err(|_| SaslError::Malformed);
    Ok(PlainCredentials {
        authzid: text(authzid)?,
        authcid: text(authcid)?,
        password: text(password)?,
    })
}

#[cfg(test)]
mod tests {
    use super::{SaslError, decode, decode_text, parse_plain};

    #[test]
    fn plain_message_splits_into_three_parts() {
        let message = decode("AGFsaWNlAHNlY3JldA==").unwrap();
        let credentials = parse_plain(&message).unwrap();
        assert_eq!(credentials.authzid, "");
        assert_eq!(credentials.authcid, "alice");
        assert_eq!(credentials.password, "secret");
    }

    #[test]
    fn malformed_responses_are_refused() {
        assert_eq!(decode("not base64!"), Err(SaslError::Base64));
        assert_eq!(parse_plain(b"alice\0secret"), Err(SaslError::Malformed));
        assert_eq!(parse_plain(b"\0\0secret"), Err(SaslError::Malformed));
        assert_eq!(parse_plain(b"a\0b\0c\0d"), Err(SaslError::Malformed));
        assert_eq!(parse_plain(b"\0a\xff\0c"), Err(SaslError::Malformed));
        assert_eq!(decode("="), Ok(Vec::new()));
        assert_eq!(decode_text("YWxpY2U").as_deref(), Ok("alice"));
    }
}
