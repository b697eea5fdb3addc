//! The I/O-free half of an SMTP client: parsing the server's replies and EHLO capabilities,
//! building MAIL/RCPT commands with their extension parameters, dot-stuffing DATA, and the
//! checks that must refuse a message before it is sent (RFC 5321, 1870, 3461, 6152, 6531, 8689).
//!
//! It holds no connection state and does no I/O: the transfer agent's transport feeds it the
//! bytes it read and writes the bytes it gets. It does not downgrade anything (no 8-bit to
//! 7-bit conversion, no SMTPUTF8 downgrade): a message the peer cannot take is refused here
//! with a permanent reply, which becomes a bounce.

use crate::dsn::{RcptParams, Ret, xtext_encode};
use crate::reply::Reply;

/// The most octets one reply may span; a server that sends more is broken or hostile.
pub const MAX_REPLY_OCTETS: usize = 64 * 1024;

/// The most lines one reply may have (an EHLO reply rarely has twenty).
pub const MAX_REPLY_LINES: usize = 100;

/// Why a server's reply could not be read. Either way the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line is not `code[ -]text` (RFC 5321 §4.2), or the lines disagree on the code.
    Malformed(String),
    /// The reply exceeds [`MAX_REPLY_OCTETS`] or [`MAX_REPLY_LINES`].
    TooLong,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Malformed(line) => write!(f, "malformed reply line {line:?}"),
            ReplyError::TooLong => f.write_str("reply too long"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Parses one complete reply at the start of `input`.
///
/// Returns `Ok(None)` when more bytes are needed, or the reply and the number of octets it
/// used. Lines may end in CRLF or a bare LF (being liberal in what we accept, RFC 5321 §4.1.1
/// notwithstanding). With `enhanced` (the server advertised ENHANCEDSTATUSCODES, RFC 2034),
/// an `x.y.z` prefix whose class matches the reply code is taken as the enhanced status code
/// and removed from the text of every line.
pub fn parse_reply(input: &[u8], enhanced: bool) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut offset = 0;
    let mut code = None;
    let mut status = None;
    let mut lines: Vec<String> = Vec::new();
    loop {
        let rest = input.get(offset..).unwrap_or_default();
        let Some(newline) = rest.iter().position(|&octet| octet == b'\n') else {
            if rest.len() + offset > MAX_REPLY_OCTETS {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        let end = offset + newline + 1;
        if end > MAX_REPLY_OCTETS || lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooLong);
        }
        let raw = rest.get(..newline).unwrap_or_default();
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = String::from_utf8_lossy(raw);
        offset = end;

        let malformed = || ReplyError::Malformed(line.chars().take(80).collect());
        let digits = line.get(..3).ok_or_else(malformed)?;
        if !digits.bytes().all(|octet| octet.is_ascii_digit()) {
            return Err(malformed());
        }
        let line_code: u16 = digits.parse().map_err(|_| malformed())?;
        if !(200..=599).contains(&line_code) {
            return Err(malformed());
        }
        // RFC 5321 §4.2.1: every line of a multi-line reply carries the same code.
        if code.is_some_and(|code| code != line_code) {
            return Err(malformed());
        }
        code = Some(line_code);
        let (last, text) = match line.get(3..4) {
            None => (true, ""),
            Some(" ") => (true, line.get(4..).unwrap_or_default()),
            Some("-") => (false, line.get(4..).unwrap_or_default()),
            Some(_) => return Err(malformed()),
        };
        let text = if enhanced {
            match split_enhanced(text, line_code) {
                Some((line_status, tail)) => {
                    status.get_or_insert(line_status);
                    tail
                }
                None => text,
            }
        } else {
            text
        };
        lines.push(text.to_owned());
        if last {
            let reply = Reply {
                code: line_code,
                status,
                text: lines.join("\n"),
            };
            return Ok(Some((reply, offset)));
        }
    }
}

/// Splits `x.y.z text` into the enhanced status code and the text, if the text starts with
/// one whose class is the reply code's first digit (RFC 3463 §2: class 2, 4 or 5).
fn split_enhanced(text: &str, code: u16) -> Option<((u8, u16, u16), &str)> {
    let (word, tail) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = word.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next().filter(|p| p.len() <= 3)?.parse().ok()?;
    let detail: u16 = parts.next().filter(|p| p.len() <= 3)?.parse().ok()?;
    if parts.next().is_some() || u16::from(class) != code / 100 {
        return None;
    }
    Some(((class, subject, detail), tail))
}

/// What a server offered in its EHLO reply (RFC 5321 §4.1.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(0)` when offered without a fixed maximum, `None` when not offered.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// REQUIRETLS (RFC 8689).
    pub requiretls: bool,
    /// The SASL mechanisms of AUTH (RFC 4954), uppercase.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the extensions from an EHLO reply; the first line (the server's name) is skipped
    /// and unknown keywords are ignored. A HELO reply yields no extensions.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut capabilities = Capabilities::default();
        for line in reply.text.split('\n').skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => capabilities.pipelining = true,
                "SIZE" => {
                    // RFC 1870 §4: no parameter or 0 means no fixed maximum.
                    let limit = words.next().and_then(|value| value.parse().ok());
                    capabilities.size = Some(limit.unwrap_or(0));
                }
                "8BITMIME" => capabilities.eight_bit_mime = true,
                "SMTPUTF8" => capabilities.smtputf8 = true,
                "STARTTLS" => capabilities.starttls = true,
                "CHUNKING" => capabilities.chunking = true,
                "DSN" => capabilities.dsn = true,
                "ENHANCEDSTATUSCODES" => capabilities.enhanced_status_codes = true,
                "REQUIRETLS" => capabilities.requiretls = true,
                "AUTH" => {
                    for mechanism in words {
                        let mechanism = mechanism.to_ascii_uppercase();
                        if !capabilities.auth.contains(&mechanism) {
                            capabilities.auth.push(mechanism);
                        }
                    }
                }
                _ => {}
            }
        }
        capabilities
    }
}

/// The MAIL command of one message and what the message needs from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailParams<'a> {
    /// The reverse-path, `""` for the null sender.
    pub from: &'a str,
    /// The size declared with `SIZE=` (RFC 1870 §3): the content plus a final CRLF if missing.
    pub size: usize,
    /// Some octet of the content is above 127, so it needs 8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// Some address is not ASCII, so the transaction needs SMTPUTF8 (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// `RET=` to pass on (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// `ENVID=` to pass on (RFC 3461 §4.4).
    pub envid: Option<&'a str>,
    /// `REQUIRETLS` (RFC 8689 §4.1).
    pub requiretls: bool,
}

impl<'a> MailParams<'a> {
    /// Works out what a message needs from its sender, recipients and content.
    pub fn new(
        from: &'a str,
        recipients: &[&str],
        content: &[u8],
        ret: Option<Ret>,
        envid: Option<&'a str>,
        requiretls: bool,
    ) -> MailParams<'a> {
        let missing_crlf = if content.ends_with(b"\r\n") { 0 } else { 2 };
        MailParams {
            from,
            size: content.len() + missing_crlf,
            eight_bit: content.iter().any(|&octet| octet > 127),
            smtputf8: !from.is_ascii() || recipients.iter().any(|to| !to.is_ascii()),
            ret,
            envid,
            requiretls,
        }
    }

    /// Refuses, with the permanent reply to report, a message this server cannot take as is.
    /// Nothing is downgraded, so these failures become bounces.
    pub fn check(&self, capabilities: &Capabilities, tls_active: bool) -> Result<(), Reply> {
        if let Some(limit) = capabilities.size.filter(|&limit| limit > 0)
            && u64::try_from(self.size).unwrap_or(u64::MAX) > limit
        {
            // RFC 1870 §6: a message over the advertised limit would be refused anyway.
            return Err(Reply::new(
                552,
                (5, 3, 4),
                format!(
                    "message size {} exceeds the remote server's limit of {limit}",
                    self.size
                ),
            ));
        }
        if self.smtputf8 && !capabilities.smtputf8 {
            // RFC 6531 §3.2: without SMTPUTF8 a non-ASCII address cannot be transmitted.
            return Err(Reply::new(
                553,
                (5, 6, 7),
                "non-ASCII address and the remote server does not offer SMTPUTF8",
            ));
        }
        if self.eight_bit && !capabilities.eight_bit_mime {
            // RFC 6152 §3: 8-bit content needs 8BITMIME; we do not convert to 7 bit.
            return Err(Reply::new(
                554,
                (5, 6, 3),
                "8-bit message and the remote server does not offer 8BITMIME",
            ));
        }
        if self.requiretls && !tls_active {
            return Err(Reply::new(
                550,
                (5, 7, 10),
                "REQUIRETLS message and the connection is not in TLS",
            ));
        }
        if self.requiretls && !capabilities.requiretls {
            // RFC 8689 §5: 5.7.30 "REQUIRETLS support required".
            return Err(Reply::new(
                550,
                (5, 7, 30),
                "REQUIRETLS message and the remote server does not offer REQUIRETLS",
            ));
        }
        Ok(())
    }

    /// The MAIL command line with CRLF, with only the parameters the server advertised.
    pub fn command(&self, capabilities: &Capabilities) -> Vec<u8> {
        let mut line = format!("MAIL FROM:<{}>", self.from);
        if capabilities.size.is_some() {
            line.push_str(&format!(" SIZE={}", self.size));
        }
        if self.eight_bit && capabilities.eight_bit_mime {
            line.push_str(" BODY=8BITMIME");
        }
        if self.smtputf8 && capabilities.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        // RFC 3461 §4: DSN parameters only go to a server that advertised DSN; otherwise the
        // relaying MTA itself is responsible for the notifications (§5.2.2, "relayed").
        if capabilities.dsn {
            if let Some(ret) = self.ret {
                line.push_str(" RET=");
                line.push_str(ret.keyword());
            }
            if let Some(envid) = self.envid {
                line.push_str(" ENVID=");
                line.push_str(&xtext_encode(envid));
            }
        }
        if self.requiretls && capabilities.requiretls {
            line.push_str(" REQUIRETLS");
        }
        line.push_str("\r\n");
        line.into_bytes()
    }
}

/// The RCPT command line with CRLF; NOTIFY and ORCPT only when the server offers DSN, and
/// NOTIFY only when it differs from the default (the two mean the same, RFC 3461 §4.1).
pub fn rcpt_command(to: &str, params: &RcptParams, capabilities: &Capabilities) -> Vec<u8> {
    let mut line = format!("RCPT TO:<{to}>");
    if capabilities.dsn {
        if params.notify != crate::dsn::Notify::default() {
            line.push_str(" NOTIFY=");
            line.push_str(&params.notify.keyword());
        }
        if let Some(orcpt) = &params.orcpt {
            // The recorded form is `addr-type;address`; a bare address is taken as rfc822.
            let (kind, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            line.push_str(&format!(" ORCPT={kind};{}", xtext_encode(address)));
        }
    }
    line.push_str("\r\n");
    line.into_bytes()
}

/// The content as sent after DATA's 354: dot-stuffed (RFC 5321 §4.5.2), ending in CRLF, then
/// the terminating `.` line. The content must already use CRLF line endings.
pub fn data_payload(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 7);
    let mut line_start = true;
    for &octet in content {
        if line_start && octet == b'.' {
            out.push(b'.');
        }
        out.push(octet);
        line_start = octet == b'\n';
    }
    if !content.is_empty() && !content.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::{
        Capabilities, MAX_REPLY_LINES, MailParams, ReplyError, data_payload, parse_reply,
        rcpt_command,
    };
    use crate::dsn::{Notify, RcptParams, Ret};
    use crate::reply::Reply;

    #[test]
    fn single_and_multi_line_replies_with_and_without_enhanced_codes() {
        let (reply, used) = parse_reply(b"250 2.1.0 ok\r\nrest", true)
            .expect("valid")
            .expect("complete");
        assert_eq!(used, 14);
        assert_eq!(reply, Reply::new(250, (2, 1, 0), "ok"));
        let (reply, _) = parse_reply(b"250 2.1.0 ok\r\n", false)
            .expect("valid")
            .expect("complete");
        assert_eq!(reply, Reply::without_status(250, "2.1.0 ok"));
        let input = b"550-5.1.1 no such\r\n550-5.1.1 user\n550 5.1.1 here\r\n";
        let (reply, used) = parse_reply(input, true).expect("valid").expect("complete");
        assert_eq!(used, input.len());
        assert_eq!(reply, Reply::new(550, (5, 1, 1), "no such\nuser\nhere"));
        // A status whose class does not match the code is left in the text.
        let (reply, _) = parse_reply(b"451 5.1.1 odd\r\n", true)
            .expect("valid")
            .expect("complete");
        assert_eq!(reply, Reply::without_status(451, "5.1.1 odd"));
        let (reply, _) = parse_reply(b"354\r\n", true)
            .expect("valid")
            .expect("complete");
        assert_eq!(reply, Reply::without_status(354, ""));
    }

    #[test]
    fn partial_replies_need_more_bytes_at_every_split() {
        let input = b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
        for split in 0..input.len() {
            assert_eq!(parse_reply(&input[..split], false), Ok(None), "{split}");
        }
        assert!(parse_reply(input, false).expect("valid").is_some());
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        for bad in [
            &b"25 x\r\n"[..],
            b"abc ok\r\n",
            b"250x ok\r\n",
            b"250-a\r\n251 b\r\n",
            b"999 no\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(parse_reply(bad, true), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(
            parse_reply(many.as_bytes(), false),
            Err(ReplyError::TooLong)
        );
        let long = vec![b'2'; 70_000];
        assert_eq!(parse_reply(&long, false), Err(ReplyError::TooLong));
    }

    #[test]
    fn ehlo_capabilities() {
        let input = b"250-mx.example greets you\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n\
            250-8BITMIME\r\n250-smtputf8\r\n250-STARTTLS\r\n250-CHUNKING\r\n250-DSN\r\n\
            250-ENHANCEDSTATUSCODES\r\n250-REQUIRETLS\r\n250-AUTH PLAIN login\r\n250 X-UNKNOWN\r\n";
        let (reply, _) = parse_reply(input, false).expect("valid").expect("complete");
        let capabilities = Capabilities::from_ehlo(&reply);
        assert_eq!(
            capabilities,
            Capabilities {
                pipelining: true,
                size: Some(35_882_577),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                chunking: true,
                dsn: true,
                enhanced_status_codes: true,
                requiretls: true,
                auth: vec!["PLAIN".to_owned(), "LOGIN".to_owned()],
            }
        );
        let bare = Capabilities::from_ehlo(&Reply::without_status(250, "mx\nSIZE"));
        assert_eq!(bare.size, Some(0));
        let helo = Capabilities::from_ehlo(&Reply::without_status(250, "mx.example"));
        assert_eq!(helo, Capabilities::default());
    }

    fn everything() -> Capabilities {
        Capabilities {
            pipelining: true,
            size: Some(1000),
            eight_bit_mime: true,
            smtputf8: true,
            starttls: false,
            chunking: false,
            dsn: true,
            enhanced_status_codes: true,
            requiretls: true,
            auth: Vec::new(),
        }
    }

    #[test]
    fn mail_command_carries_only_advertised_parameters() {
        let params = MailParams::new(
            "jörg@example.org",
            &["bob@example.net"],
            "Subject: é\r\n\r\nhi".as_bytes(),
            Some(Ret::Headers),
            Some("id+1 x"),
            true,
        );
        assert_eq!(params.size, 19);
        assert!(params.eight_bit && params.smtputf8);
        assert_eq!(
            String::from_utf8_lossy(&params.command(&everything())),
            "MAIL FROM:<jörg@example.org> SIZE=19 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+20x REQUIRETLS\r\n"
        );
        let plain = MailParams::new("a@b.example", &[], b"x\r\n", Some(Ret::Full), None, false);
        assert_eq!(
            plain.command(&Capabilities::default()),
            b"MAIL FROM:<a@b.example>\r\n"
        );
        assert_eq!(plain.check(&Capabilities::default(), false), Ok(()));
    }

    #[test]
    fn rcpt_command_passes_dsn_parameters_to_dsn_peers_only() {
        let params = RcptParams {
            notify: Notify::SUCCESS.with(Notify::FAILURE),
            orcpt: Some("rfc822;bob+tag@example.net".to_owned()),
        };
        assert_eq!(
            rcpt_command("bob@example.net", &params, &everything()),
            b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Btag@example.net\r\n"
        );
        assert_eq!(
            rcpt_command("bob@example.net", &params, &Capabilities::default()),
            b"RCPT TO:<bob@example.net>\r\n"
        );
        assert_eq!(
            rcpt_command("bob@example.net", &RcptParams::default(), &everything()),
            b"RCPT TO:<bob@example.net>\r\n"
        );
    }

    #[test]
    fn checks_refuse_what_the_peer_cannot_take() {
        let code = |params: &MailParams, capabilities: &Capabilities, tls: bool| {
            params
                .check(capabilities, tls)
                .err()
                .map(|reply| (reply.code, reply.status))
        };
        let big = vec![b'a'; 1001];
        let params = MailParams::new("a@b.example", &[], &big, None, None, false);
        assert_eq!(
            code(&params, &everything(), true),
            Some((552, Some((5, 3, 4))))
        );
        let eight = MailParams::new("a@b.example", &[], "é\r\n".as_bytes(), None, None, false);
        let no_8bit = Capabilities {
            eight_bit_mime: false,
            ..everything()
        };
        assert_eq!(code(&eight, &no_8bit, true), Some((554, Some((5, 6, 3)))));
        assert_eq!(code(&eight, &everything(), true), None);
        let utf8 = MailParams::new("a@b.example", &["jörg@x.example"], b"", None, None, false);
        let no_utf8 = Capabilities {
            smtputf8: false,
            ..everything()
        };
        assert_eq!(code(&utf8, &no_utf8, true), Some((553, Some((5, 6, 7)))));
        let secure = MailParams::new("a@b.example", &[], b"x\r\n", None, None, true);
        assert_eq!(
            code(&secure, &everything(), false),
            Some((550, Some((5, 7, 10))))
        );
        let no_requiretls = Capabilities {
            requiretls: false,
            ..everything()
        };
        assert_eq!(
            code(&secure, &no_requiretls, true),
            Some((550, Some((5, 7, 30))))
        );
        assert_eq!(code(&secure, &everything(), true), None);
    }

    #[test]
    fn data_payload_is_dot_stuffed_and_terminated() {
        assert_eq!(
            data_payload(b".hidden\r\nline\r\n..two\r\nend"),
            b"..hidden\r\nline\r\n...two\r\nend\r\n.\r\n"
        );
        assert_eq!(data_payload(b"a\r\n.\r\n"), b"a\r\n..\r\n.\r\n");
        assert_eq!(data_payload(b""), b".\r\n");
    }
}
