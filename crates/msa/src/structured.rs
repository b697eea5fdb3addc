//! Structured submission: a message given in parts (from, to, cc, bcc, subject, text, html,
//! attachments, a few extra header fields) is checked and built into RFC 5322 / MIME bytes with
//! mail-builder, ready for the same submission path as a raw message.
//!
//! The MIME structure follows RFC 2046 as mail-builder lays it out: text alone is one part,
//! text with HTML is multipart/alternative (§5.1.4), and attachments wrap the body in
//! multipart/mixed (§5.1.3); transfer encodings are chosen so the result is 7-bit clean. Bcc
//! recipients go into the envelope only and never into the header (RFC 5322 §3.6.3).
//!
//! Everything a caller gives is refused rather than repaired when it could change the header's
//! structure: a CR or LF (or any other control character) in an address, the subject, a file
//! name or a header field would let a caller inject header lines. This module deliberately
//! decides nothing about who may send what: sender ownership, limits and the queue are the
//! [`crate::Submitter`]'s, exactly as for SMTP.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::text::Text;

/// A message in parts, in this crate's terms (the gRPC layer converts from protobuf).
#[derive(Debug, Clone, Default)]
pub struct Structured {
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<Attachment>,
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Default)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

impl std::fmt::Debug for Attachment {
    // The content is mail: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("len", &self.content.len())
            .finish()
    }
}

/// A message ready to queue: the envelope and the bytes.
#[derive(Debug, Clone)]
pub struct Built {
    /// The envelope sender: the address of `From:`.
    pub mail_from: String,
    /// To, Cc and Bcc addresses, each once (compared case-insensitively), in that order.
    pub rcpt_to: Vec<String>,
    pub content: Vec<u8>,
}

/// Why a structured message was refused: the caller's mistake, always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(text: impl Into<String>) -> Invalid {
    Invalid(text.into())
}

/// Header fields the builder writes itself, or that only the mail system may add; a caller
/// setting them would duplicate or contradict ours (RFC 5322 §3.6 allows most of them once).
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "received",
    "return-path",
    "delivered-to",
    "dkim-signature",
    "authentication-results",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
];

/// A mailbox: the optional display name and the bare address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mailbox {
    name: Option<String>,
    email: String,
}

/// Parses `user@domain`, `<user@domain>`, `Name <user@domain>` or `"Name, Jr." <user@domain>`.
/// The address check is deliberately the common subset (dot-atom-like local part, no quoted
/// strings, no groups); the store validates local recipients again.
fn parse_mailbox(field: &str, input: &str) -> Result<Mailbox, Invalid> {
    if input.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} address {input:?} contains a line break or control character"
        )));
    }
    let text = input.trim();
    let (name, email) = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(without_close)) => {
            let name = text[..open].trim();
            let name = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .unwrap_or(name)
                .trim();
            let email = without_close[open + 1..].trim();
            ((!name.is_empty()).then(|| name.to_string()), email)
        }
        _ => (None, text),
    };
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !email
                .chars()
                .any(|c| c.is_whitespace() || "<>,;:\"()[]\\".contains(c))
    });
    if !valid {
        return Err(invalid(format!(
            "{field} address {input:?} is not user@domain or \"Name <user@domain>\""
        )));
    }
    Ok(Mailbox {
        name,
        email: email.to_string(),
    })
}

fn header_list(field: &str, list: &[String]) -> Result<Vec<Mailbox>, Invalid> {
    list.iter().map(|a| parse_mailbox(field, a)).collect()
}

fn addresses(list: &[Mailbox]) -> Address<'static> {
    Address::new_list(
        list.iter()
            .map(|m| Address::new_address(m.name.clone(), m.email.clone()))
            .collect(),
    )
}

/// RFC 5322 §3.6.8: a field name is printable US-ASCII except the colon.
fn check_header(name: &str, value: &str) -> Result<(), Invalid> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(invalid(format!("header field name {name:?} is not valid")));
    }
    if RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
        || name.to_ascii_lowercase().starts_with("content-")
    {
        return Err(invalid(format!(
            "header field {name} is written by the server and cannot be given"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(format!(
            "header field {name} contains a line break or control character"
        )));
    }
    Ok(())
}

/// RFC 2045 §5.1: `type/subtype`, each a token; parameters are not accepted here.
fn check_content_type(ct: &str) -> Result<(), Invalid> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    match ct.split_once('/') {
        Some((t, s)) if token(t) && token(s) => Ok(()),
        _ => Err(invalid(format!(
            "attachment content type {ct:?} is not type/subtype"
        ))),
    }
}

/// Checks `msg` and builds it. `message_id` is the Message-ID to write, without brackets (the
/// caller makes it unique); the Date is now.
pub fn build(msg: &Structured, message_id: &str) -> Result<Built, Invalid> {
    let from = parse_mailbox("From", &msg.from)?;
    let to = header_list("To", &msg.to)?;
    let cc = header_list("Cc", &msg.cc)?;
    let bcc = header_list("Bcc", &msg.bcc)?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(invalid("at least one To, Cc or Bcc recipient is required"));
    }
    if msg.subject.chars().any(char::is_control) {
        return Err(invalid(
            "the subject contains a line break or control character",
        ));
    }
    for (name, value) in &msg.headers {
        check_header(name, value)?;
    }
    for a in &msg.attachments {
        if a.filename.trim().is_empty() {
            return Err(invalid("an attachment needs a file name"));
        }
        if a.filename.chars().any(char::is_control) {
            return Err(invalid(format!(
                "attachment file name {:?} contains a control character",
                a.filename
            )));
        }
        if !a.content_type.is_empty() {
            check_content_type(&a.content_type)?;
        }
    }

    let mut builder = MessageBuilder::new()
        .from(Address::new_address(from.name.clone(), from.email.clone()))
        .message_id(MessageId::new(message_id.to_string()))
        .subject(msg.subject.clone());
    if !to.is_empty() {
        builder = builder.to(addresses(&to));
    }
    if !cc.is_empty() {
        builder = builder.cc(addresses(&cc));
    }
    for (name, value) in &msg.headers {
        builder = builder.header(name.clone(), Text::new(value.clone()));
    }
    // A message always has a body: the text, or an empty text part when there is neither
    // text nor HTML.
    if !msg.text.is_empty() || msg.html.is_empty() {
        builder = builder.text_body(msg.text.clone());
    }
    if !msg.html.is_empty() {
        builder = builder.html_body(msg.html.clone());
    }
    for a in &msg.attachments {
        let content_type = if a.content_type.is_empty() {
            "application/octet-stream".to_string()
        } else {
            a.content_type.to_ascii_lowercase()
        };
        builder = builder.attachment(
            content_type,
            a.filename.trim().to_string(),
            a.content.clone(),
        );
    }
    let content = builder
        .write_to_vec()
        .map_err(|e| invalid(format!("the message could not be built: {e}")))?;

    let mut rcpt_to: Vec<String> = Vec::new();
    for m in to.iter().chain(&cc).chain(&bcc) {
        if !rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(&m.email)) {
            rcpt_to.push(m.email.clone());
        }
    }
    Ok(Built {
        mail_from: from.email,
        rcpt_to,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn sample() -> Structured {
        Structured {
            from: "Alice Example <alice@example.test>".into(),
            to: vec!["bob@example.test".into()],
            cc: vec!["\"Carol, C.\" <carol@example.test>".into()],
            bcc: vec!["dave@example.test".into(), "BOB@example.test".into()],
            subject: "Quarterly report — Q3".into(),
            text: "See attached.\n".into(),
            html: "<p>See attached.</p>".into(),
            attachments: vec![Attachment {
                filename: "report.bin".into(),
                content_type: "application/octet-stream".into(),
                content: (0..=255u8).cycle().take(5000).collect(),
            }],
            headers: vec![("Reply-To".into(), "sales@example.test".into())],
        }
    }

    fn header_block(raw: &[u8]) -> String {
        let text = String::from_utf8_lossy(raw);
        text.split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn builds_mime_with_attachment_and_without_bcc() {
        let built = build(&sample(), "abc@mail.example.test").unwrap();
        assert_eq!(built.mail_from, "alice@example.test");
        assert_eq!(
            built.rcpt_to,
            [
                "bob@example.test",
                "carol@example.test",
                "dave@example.test"
            ],
            "every recipient once, Bcc in the envelope"
        );
        let header = header_block(&built.content);
        // A header line, not a substring: the random MIME boundary may spell "bcc".
        assert!(
            !header
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{header}"
        );
        assert!(!header.contains("dave@"), "{header}");
        assert!(
            header.contains("Message-ID: <abc@mail.example.test>"),
            "{header}"
        );
        assert!(header.contains("Reply-To: sales@example.test"), "{header}");
        assert!(built.content.is_ascii(), "7-bit clean");

        let parsed = MessageParser::new().parse(&built.content).unwrap();
        assert_eq!(parsed.subject(), Some("Quarterly report — Q3"));
        assert_eq!(
            parsed
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("alice@example.test")
        );
        assert_eq!(parsed.cc().map(|c| c.iter().count()), Some(1));
        assert_eq!(parsed.body_text(0).as_deref(), Some("See attached.\r\n"));
        assert!(
            parsed
                .body_html(0)
                .is_some_and(|h| h.contains("<p>See attached.</p>"))
        );
        let att = parsed.attachment(0).expect("an attachment");
        assert_eq!(att.attachment_name(), Some("report.bin"));
        assert_eq!(
            att.contents(),
            (0..=255u8).cycle().take(5000).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_message_without_body_gets_an_empty_text_part() {
        let msg = Structured {
            from: "alice@example.test".into(),
            to: vec!["bob@example.test".into()],
            ..Default::default()
        };
        let built = build(&msg, "x@y").unwrap();
        let parsed = MessageParser::new().parse(&built.content).unwrap();
        assert_eq!(parsed.body_text(0).as_deref().map(str::trim), Some(""));
    }

    #[test]
    fn header_injection_and_bad_input_are_refused() {
        type Change = Box<dyn Fn(&mut Structured)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "no recipients",
                Box::new(|m| {
                    m.to.clear();
                    m.cc.clear();
                    m.bcc.clear();
                }),
            ),
            (
                "subject CRLF",
                Box::new(|m| m.subject = "hi\r\nBcc: x@evil.test".into()),
            ),
            ("subject LF", Box::new(|m| m.subject = "hi\nX: y".into())),
            (
                "from CRLF",
                Box::new(|m| m.from = "alice@example.test\r\nTo: x@evil.test".into()),
            ),
            (
                "to CRLF",
                Box::new(|m| m.to = vec!["Bob\r\n <bob@example.test>".into()]),
            ),
            (
                "bcc not an address",
                Box::new(|m| m.bcc = vec!["dave".into()]),
            ),
            (
                "to with comma",
                Box::new(|m| m.to = vec!["a@x.test, b@y.test".into()]),
            ),
            (
                "header value LF",
                Box::new(|m| m.headers = vec![("X-A".into(), "1\nBcc: x".into())]),
            ),
            (
                "header name colon",
                Box::new(|m| m.headers = vec![("X-A: b".into(), "1".into())]),
            ),
            (
                "reserved header",
                Box::new(|m| m.headers = vec![("bcc".into(), "x@y.test".into())]),
            ),
            (
                "content header",
                Box::new(|m| m.headers = vec![("Content-Foo".into(), "1".into())]),
            ),
            (
                "filename CRLF",
                Box::new(|m| m.attachments[0].filename = "a\r\nb".into()),
            ),
            (
                "empty filename",
                Box::new(|m| m.attachments[0].filename = " ".into()),
            ),
            (
                "content type params",
                Box::new(|m| m.attachments[0].content_type = "text/plain; x=\"\r\n\"".into()),
            ),
            (
                "content type shape",
                Box::new(|m| m.attachments[0].content_type = "text".into()),
            ),
        ];
        for (what, change) in cases {
            let mut m = sample();
            change(&mut m);
            assert!(build(&m, "x@y").is_err(), "{what} should be refused");
        }
    }

    #[test]
    fn addresses_parse_in_the_usual_forms() {
        let named = parse_mailbox("To", "\"B, Bob\" <bob@example.test>").unwrap();
        assert_eq!(named.name.as_deref(), Some("B, Bob"));
        assert_eq!(named.email, "bob@example.test");
        assert_eq!(parse_mailbox("To", "<b@x.test>").unwrap().name, None);
        assert_eq!(parse_mailbox("To", " b@x.test ").unwrap().email, "b@x.test");
        for bad in ["", "b", "@x", "b@", "a@b@c", "b @x.test", "Bob <b@x.test"] {
            assert!(parse_mailbox("To", bad).is_err(), "{bad:?}");
        }
    }
}
