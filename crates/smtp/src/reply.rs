//! SMTP replies: a code, an optional RFC 3463 enhanced status code and human text, rendered
//! on the wire as one or more `code[-| ]x.y.z text` lines (RFC 5321 §4.2, RFC 2034 §3).
//!
//! This module only formats replies; it does not decide which reply a command deserves (that is
//! `session.rs`), and parsing a server's replies is the client's job (`client.rs`).

use std::fmt;

/// One SMTP reply, possibly spanning several lines.
///
/// Handlers return these to refuse (or, for `Handler::data`, to accept) something; the session
/// also uses them for its own replies. The text may contain `\n` to produce a multi-line reply;
/// carriage returns and other control characters are never written to the wire, so a handler
/// cannot inject extra reply lines by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2.1). Codes outside 200..=599 are sent as 451,
    /// because anything else would break the client's state machine.
    pub code: u16,
    /// The enhanced status code `class.subject.detail` (RFC 3463), or `None` for the few replies
    /// that must not carry one (greeting, EHLO/HELO, SASL challenges, 354).
    pub status: Option<(u8, u16, u16)>,
    /// Human-readable text; `\n` separates lines of a multi-line reply.
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code, which is what almost every reply should be.
    pub fn new(code: u16, status: (u8, u16, u16), text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (RFC 2034 §3 exempts the greeting and the
    /// replies to HELO and EHLO; SASL challenges must be bare base64, RFC 4954 §4).
    pub fn without_status(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: None,
            text: text.into(),
        }
    }

    /// `250 2.0.0 OK`.
    pub fn ok() -> Reply {
        Reply::new(250, (2, 0, 0), "OK")
    }

    /// `451 4.3.0`: the reply for "we broke" (a storage or internal failure), which tells the
    /// client to try again later rather than to bounce the message.
    pub fn temporary_failure() -> Reply {
        Reply::new(451, (4, 3, 0), "temporary failure, try again later")
    }

    /// `550 5.1.1`: the recipient does not exist here (RFC 3463 X.1.1).
    pub fn no_such_user() -> Reply {
        Reply::new(550, (5, 1, 1), "no such user here")
    }

    /// `550 5.7.1`: relaying denied (RFC 3463 X.7.1), for a port 25 recipient that is not local.
    pub fn relay_denied() -> Reply {
        Reply::new(550, (5, 7, 1), "relaying denied")
    }

    /// `535 5.7.8`: the credentials were wrong (RFC 4954 §6).
    pub fn auth_failed() -> Reply {
        Reply::new(535, (5, 7, 8), "authentication credentials invalid")
    }

    /// The code actually written to the wire (see [`Reply::code`]).
    pub fn wire_code(&self) -> u16 {
        if (200..=599).contains(&self.code) {
            self.code
        } else {
            451
        }
    }

    /// True for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        self.wire_code() < 400
    }

    /// True for 4xx replies: the client may retry later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.wire_code())
    }

    /// True for 5xx replies: the client must not retry as is.
    pub fn is_permanent(&self) -> bool {
        self.wire_code() >= 500
    }

    /// The reply as it goes on the wire, every line ending in CRLF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = self.to_string();
        text.push_str("\r\n");
        text.into_bytes()
    }
}

impl fmt::Display for Reply {
    /// Renders every line as `code-status text`, the last one as `code status text`, joined by
    /// CRLF and without a final CRLF, e.g. `550 5.1.1 no such user here`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.wire_code();
        let lines: Vec<&str> = self.text.split('\n').collect();
        let last = lines.len().saturating_sub(1);
        for (index, line) in lines.iter().enumerate() {
            if index > 0 {
                f.write_str("\r\n")?;
            }
            let separator = if index == last { ' ' } else { '-' };
            write!(f, "{code}{separator}")?;
            if let Some((class, subject, detail)) = self.status {
                write!(f, "{class}.{subject}.{detail} ")?;
            }
            // RFC 5321 §4.2: reply text is printable; dropping control characters (CR in
            // particular) keeps handler-supplied text from forging extra reply lines.
            for ch in line.chars().filter(|ch| !ch.is_control()) {
                write!(f, "{ch}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Reply;

    #[test]
    fn single_line_reply_has_enhanced_status() {
        assert_eq!(
            Reply::new(550, (5, 1, 1), "no such user").to_string(),
            "550 5.1.1 no such user"
        );
        assert_eq!(Reply::ok().to_bytes(), b"250 2.0.0 OK\r\n");
    }

    #[test]
    fn multi_line_reply_uses_dashes_and_strips_control_characters() {
        let reply = Reply::new(250, (2, 0, 0), "first\r\nsecond\x07\nthird");
        assert_eq!(
            reply.to_bytes(),
            b"250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 third\r\n"
        );
    }

    #[test]
    fn out_of_range_code_is_sent_as_451() {
        let reply = Reply::new(1234, (4, 3, 0), "odd");
        assert_eq!(reply.to_string(), "451 4.3.0 odd");
        assert!(reply.is_transient());
        assert!(!Reply::without_status(334, "").is_permanent());
        assert_eq!(Reply::without_status(334, "").to_bytes(), b"334 \r\n");
    }
}
