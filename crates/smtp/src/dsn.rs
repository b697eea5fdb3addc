//! Delivery Status Notification parameters (RFC 3461) as the envelope carries them, and the
//! xtext encoding (RFC 3461 §4) their values travel in.
//!
//! The server side parses these parameters with `smtp-proto` (which also decodes xtext); this
//! module only holds the types the envelope records and the encoder the client needs to pass
//! them on. It does not write DSN messages (RFC 3464): that is the transfer agent's job.

use std::fmt;

/// `RET=` on MAIL (RFC 3461 §4.3): how much of the message a failure notice should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: only the header section.
    Headers,
}

impl Ret {
    /// The keyword as it appears on the wire.
    pub fn keyword(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Headers => "HDRS",
        }
    }
}

/// `NOTIFY=` on RCPT (RFC 3461 §4.1): which delivery events earn a notification.
///
/// A set of SUCCESS, FAILURE and DELAY; the empty set is `NEVER`. The default is what RFC 3461
/// §4.1 lets an MTA assume when the parameter is absent, FAILURE and DELAY, so a relay passes
/// NOTIFY on only when it differs from the default (the two are equivalent downstream).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Notify {
    bits: u8,
}

impl Notify {
    /// `NOTIFY=NEVER`: no notification at all.
    pub const NEVER: Notify = Notify { bits: 0 };
    /// Notify on successful delivery.
    pub const SUCCESS: Notify = Notify { bits: 1 };
    /// Notify on failure.
    pub const FAILURE: Notify = Notify { bits: 2 };
    /// Notify on delay.
    pub const DELAY: Notify = Notify { bits: 4 };

    /// The union of two sets.
    #[must_use]
    pub const fn with(self, other: Notify) -> Notify {
        Notify {
            bits: self.bits | other.bits,
        }
    }

    /// Whether every event in `other` is in this set.
    pub const fn contains(self, other: Notify) -> bool {
        self.bits & other.bits == other.bits
    }

    /// Whether this is `NEVER`.
    pub const fn is_never(self) -> bool {
        self.bits == 0
    }

    /// A compact form for storage: bit 0 success, bit 1 failure, bit 2 delay.
    pub const fn bits(self) -> u8 {
        self.bits
    }

    /// The inverse of [`Notify::bits`]; unknown bits are dropped.
    pub const fn from_bits(bits: u8) -> Notify {
        Notify { bits: bits & 7 }
    }

    /// The parameter value as it appears on the wire, e.g. `NEVER` or `SUCCESS,FAILURE`.
    pub fn keyword(self) -> String {
        if self.is_never() {
            return "NEVER".to_owned();
        }
        let names = [
            (Notify::SUCCESS, "SUCCESS"),
            (Notify::FAILURE, "FAILURE"),
            (Notify::DELAY, "DELAY"),
        ];
        names
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for Notify {
    /// FAILURE and DELAY, what RFC 3461 §4.1 assumes when NOTIFY is not given.
    fn default() -> Notify {
        Notify::FAILURE.with(Notify::DELAY)
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Notify({})", self.keyword())
    }
}

/// The DSN parameters of one recipient, parallel to `Envelope::rcpt_to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RcptParams {
    /// `NOTIFY=`, or the default when absent.
    pub notify: Notify,
    /// `ORCPT=` decoded, as `addr-type;address` (e.g. `rfc822;bob@example.org`), exactly the
    /// form of the `Original-Recipient` field of RFC 3464 §2.3.1.
    pub orcpt: Option<String>,
}

/// Encodes a value as xtext (RFC 3461 §4): printable ASCII except `+` and `=` stays as is,
/// every other octet becomes `+XX` with uppercase hex digits.
pub fn xtext_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &octet in value.as_bytes() {
        if (b'!'..=b'~').contains(&octet) && octet != b'+' && octet != b'=' {
            out.push(char::from(octet));
        } else {
            out.push_str(&format!("+{octet:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Notify, Ret, xtext_encode};

    #[test]
    fn xtext_encodes_plus_equals_space_and_non_ascii() {
        assert_eq!(xtext_encode("bob@example.org"), "bob@example.org");
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext_encode("é"), "+C3+A9");
        assert_eq!(xtext_encode("\r\n"), "+0D+0A");
    }

    #[test]
    fn notify_keywords_and_default() {
        assert_eq!(Notify::default().keyword(), "FAILURE,DELAY");
        assert_eq!(Notify::NEVER.keyword(), "NEVER");
        let all = Notify::SUCCESS.with(Notify::FAILURE).with(Notify::DELAY);
        assert_eq!(all.keyword(), "SUCCESS,FAILURE,DELAY");
        assert_eq!(Notify::from_bits(all.bits()), all);
        assert!(all.contains(Notify::default()));
        assert!(!Notify::default().contains(Notify::SUCCESS));
        assert_eq!(Ret::Headers.keyword(), "HDRS");
    }
}
