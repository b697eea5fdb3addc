//! Delivery status notifications (RFC 3464): the bounce, delay warning or delivery report
//! the MTA sends back to a message's return path, built as one complete message.
//!
//! The message is a `multipart/report; report-type=delivery-status` (RFC 6522) with three
//! parts: a human-readable explanation, the machine-readable `message/delivery-status`, and the
//! original message (`message/rfc822`, RET=FULL) or its header section (`text/rfc822-headers`).
//! mail-builder writes the MIME structure (headers, random boundaries, the text part's
//! encoding); the `message/delivery-status` and original parts are handed to it pre-formatted
//! with an explicit Content-Transfer-Encoding, since RFC 2046 §5.2.1 forbids base64 or
//! quoted-printable for `message/rfc822` and the status fields must stay readable as fields.
//!
//! Deliberately absent: deciding whether to send one (NOTIFY, RET defaults, the null sender
//! check lives here only as [`never_bounce_to`]), enqueueing it, and any I/O. A returned full
//! original that holds 8-bit bytes makes the whole DSN 8-bit; whoever relays it must then use
//! BODY=8BITMIME (RFC 6152) or fall back to [`DsnInput::return_full`] = false.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use rand::Rng;
use rand::distr::Alphanumeric;
use tern_runtime::mailfmt::rfc5322_date;

/// A full original larger than this is returned as headers only: a bounce should not cost
/// the sender's mailbox as much as the message did, and a huge DSN may itself bounce.
pub const MAX_RETURNED_ORIGINAL: usize = 10 * 1024 * 1024;

/// The header section returned with headers only is cut at this size (a "header section" of
/// a message with no blank line is the whole message).
const MAX_RETURNED_HEADERS: usize = 256 * 1024;

/// Field values longer than this are cut, so no field line can approach RFC 5322 §2.1.1's
/// 998-character limit even before folding.
const MAX_FIELD_VALUE: usize = 900;

/// What happened to the recipients a DSN reports on (RFC 3464 §2.3.3 Action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    Failed,
    Delayed,
    Delivered,
}

impl DsnKind {
    fn action(self) -> &'static str {
        match self {
            DsnKind::Failed => "failed",
            DsnKind::Delayed => "delayed",
            DsnKind::Delivered => "delivered",
        }
    }

    /// The status used when the caller's is malformed: the class must match the action.
    fn fallback_status(self) -> &'static str {
        match self {
            DsnKind::Failed => "5.0.0",
            DsnKind::Delayed => "4.0.0",
            DsnKind::Delivered => "2.0.0",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            DsnKind::Failed => "Undelivered Mail Returned to Sender",
            DsnKind::Delayed => "Delayed Mail (still being retried)",
            DsnKind::Delivered => "Successful Mail Delivery Report",
        }
    }
}

/// One recipient's entry in a DSN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DsnRecipient {
    /// The address as the MTA tried it, without angle brackets.
    pub final_recipient: String,
    /// The ORCPT parameter as given (xtext-decoded), e.g. `rfc822;bob@example.org`.
    pub original_recipient: Option<String>,
    /// RFC 3463 status code, e.g. `5.1.1`.
    pub status: String,
    /// E.g. `smtp; 550 5.1.1 no such user`.
    pub diagnostic: Option<String>,
    /// E.g. `dns; mx.example.test`.
    pub remote_mta: Option<String>,
    pub last_attempt_unix: Option<i64>,
    /// Until when the MTA keeps trying; written for [`DsnKind::Delayed`] only.
    pub will_retry_until_unix: Option<i64>,
}

/// Everything a DSN says.
#[derive(Debug, Clone, Copy)]
pub struct DsnInput<'a> {
    pub kind: DsnKind,
    /// This MTA's host name.
    pub reporting_mta: &'a str,
    /// The original message's return path, without angle brackets.
    pub to: &'a str,
    /// The ENVID the original's sender gave (RFC 3461 §4.4), xtext-decoded.
    pub envid: Option<&'a str>,
    pub arrival_unix: i64,
    pub recipients: &'a [DsnRecipient],
    /// The original message as queued.
    pub original: &'a [u8],
    /// RET=FULL: attach the whole original; otherwise its header section only.
    pub return_full: bool,
    pub now_unix: i64,
}

/// The complete DSN message: header section and `multipart/report` body, CRLF line endings,
/// From `Mail Delivery System <MAILER-DAEMON@reporting_mta>`, `Auto-Submitted: auto-replied`
/// (RFC 3834 §5), ready to be enqueued with the null reverse-path (RFC 5321 §4.5.5).
pub fn build(input: &DsnInput<'_>) -> Vec<u8> {
    build_with_cap(input, MAX_RETURNED_ORIGINAL)
}

/// Whether no DSN may be sent to this return path: the null reverse-path, which RFC 5321
/// §4.5.5 and §6.1 reserve for notifications precisely so that they never cause another
/// (no bounce loops). Any real address, `MAILER-DAEMON@…` included, may receive one.
pub fn never_bounce_to(return_path: &str) -> bool {
    let path = return_path.trim();
    path.is_empty() || path == "<>"
}

fn build_with_cap(input: &DsnInput<'_>, cap: usize) -> Vec<u8> {
    let mta = header_safe(input.reporting_mta);
    let original = Original::choose(input.original, input.return_full, cap);

    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human_text(input, &mta, &original)),
            MimePart::new("message/delivery-status", delivery_status(input, &mta))
                .transfer_encoding("7bit"),
            original.part(),
        ],
    );
    let message_id = format!("{}@{}", random_token(), mta);
    MessageBuilder::new()
        .from(Address::new_address(
            Some("Mail Delivery System"),
            format!("MAILER-DAEMON@{mta}"),
        ))
        .to(Address::new_address(None::<&str>, header_safe(input.to)))
        .subject(input.kind.subject())
        .header("Date", Raw::new(rfc5322_date(input.now_unix)))
        .message_id(message_id)
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        // Writing into a Vec cannot fail; an empty result would be refused by the queue.
        .unwrap_or_default()
}

/// Which form of the original goes into the third part.
struct Original {
    bytes: Vec<u8>,
    full: bool,
    /// Full was asked for but the message exceeded the cap.
    too_large: Option<usize>,
}

impl Original {
    fn choose(original: &[u8], return_full: bool, cap: usize) -> Original {
        if return_full && original.len() <= cap {
            return Original {
                bytes: crlf(original),
                full: true,
                too_large: None,
            };
        }
        let mut headers = crlf(header_section(original));
        if headers.len() > MAX_RETURNED_HEADERS {
            // Cut after the last complete line that fits, so the part stays line-structured.
            let cut = headers[..MAX_RETURNED_HEADERS]
                .windows(2)
                .rposition(|w| w == b"\r\n")
                .map_or(0, |i| i + 2);
            headers.truncate(cut);
        }
        Original {
            bytes: headers,
            full: false,
            too_large: (return_full && original.len() > cap).then_some(original.len()),
        }
    }

    fn part(self) -> MimePart<'static> {
        // RFC 2046 §5.2.1: message/rfc822 is 7bit or 8bit, never encoded; the headers part
        // is declared the same way so that it reads as the header section it is.
        let encoding = if self.bytes.is_ascii() {
            "7bit"
        } else {
            "8bit"
        };
        let content_type = if self.full {
            "message/rfc822"
        } else {
            "text/rfc822-headers"
        };
        MimePart::new(content_type, self.bytes).transfer_encoding(encoding)
    }
}

/// The explanation for people (RFC 3464 §2.1, first part of the report).
fn human_text(input: &DsnInput<'_>, mta: &str, original: &Original) -> String {
    let mut text = format!("This is the mail system at host {mta}.\r\n\r\n");
    match input.kind {
        DsnKind::Failed => text.push_str(
            "Your message could not be delivered to one or more recipients. It is\r\n\
             attached below. The delivery failed permanently; sending it again\r\n\
             unchanged will not help.\r\n",
        ),
        DsnKind::Delayed => {
            text.push_str(
                "Your message has not been delivered yet to the recipients below. This\r\n\
                 is only a warning: the mail system keeps trying, and you do not need to\r\n\
                 send the message again.\r\n",
            );
            let until = input
                .recipients
                .iter()
                .filter_map(|r| r.will_retry_until_unix)
                .max();
            if let Some(until) = until {
                text.push_str(&format!("It gives up after {}.\r\n", rfc5322_date(until)));
            }
        }
        DsnKind::Delivered => text.push_str(
            "Your message was delivered to the recipients below, as you asked to be\r\n\
             told.\r\n",
        ),
    }
    text.push_str("\r\n");
    for r in input.recipients {
        let why = r
            .diagnostic
            .as_deref()
            .map(display_value)
            .unwrap_or_else(|| format!("status {}", status(input.kind, &r.status)));
        text.push_str(&format!(
            "<{}>: {why}\r\n",
            display_value(&r.final_recipient)
        ));
        if let Some(remote) = &r.remote_mta {
            let remote = display_value(remote);
            let host = remote.split_once(';').map_or(remote.as_str(), |(_, h)| h);
            text.push_str(&format!("    (reported by {})\r\n", host.trim()));
        }
    }
    if let Some(size) = original.too_large {
        text.push_str(&format!(
            "\r\nThe original message was too large to return in full ({size} bytes);\r\n\
             only its headers are attached.\r\n"
        ));
    }
    text
}

/// The `message/delivery-status` body (RFC 3464 §2.1-2.3): the per-message fields, then one
/// block of per-recipient fields for each recipient, blocks separated by blank lines.
fn delivery_status(input: &DsnInput<'_>, mta: &str) -> Vec<u8> {
    let mut out = String::new();
    push_field(&mut out, "Reporting-MTA", &format!("dns; {mta}"));
    if let Some(envid) = input.envid {
        push_field(&mut out, "Original-Envelope-Id", &field_value(envid));
    }
    push_field(&mut out, "Arrival-Date", &rfc5322_date(input.arrival_unix));
    for r in input.recipients {
        out.push_str("\r\n");
        push_field(
            &mut out,
            "Final-Recipient",
            &typed_address(&r.final_recipient),
        );
        if let Some(orcpt) = &r.original_recipient {
            push_field(&mut out, "Original-Recipient", &field_value(orcpt));
        }
        push_field(&mut out, "Action", input.kind.action());
        push_field(&mut out, "Status", status(input.kind, &r.status));
        if let Some(remote) = &r.remote_mta {
            push_field(&mut out, "Remote-MTA", &field_value(remote));
        }
        if let Some(diagnostic) = &r.diagnostic {
            push_field(&mut out, "Diagnostic-Code", &field_value(diagnostic));
        }
        if let Some(at) = r.last_attempt_unix {
            push_field(&mut out, "Last-Attempt-Date", &rfc5322_date(at));
        }
        if input.kind == DsnKind::Delayed
            && let Some(until) = r.will_retry_until_unix
        {
            push_field(&mut out, "Will-Retry-Until", &rfc5322_date(until));
        }
    }
    out.into_bytes()
}

/// RFC 3463 status `class.subject.detail`, or the kind's generic code when the caller's is
/// malformed or of the wrong class (a "failed" action with a 4.x.x status would confuse
/// every reader of the report).
fn status(kind: DsnKind, given: &str) -> &str {
    let given = given.trim();
    let mut parts = given.split('.');
    let well_formed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(class), Some(subject), Some(detail), None) => {
            let digits = |s: &str, max: usize| {
                !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
            };
            digits(subject, 3) && digits(detail, 3) && class.len() == 1
        }
        _ => false,
    };
    let expected_class = &kind.fallback_status()[..1];
    if well_formed && given.starts_with(expected_class) {
        given
    } else {
        kind.fallback_status()
    }
}

/// `rfc822; addr` for an ASCII address; an internationalised one uses RFC 6533 §3's `utf-8`
/// address type, whose `\x{HEX}` escapes keep the delivery-status part 7-bit.
fn typed_address(address: &str) -> String {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    if address.is_ascii() {
        return format!("rfc822; {}", field_value(address));
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        // utf-8-addr-xtext: printable ASCII except '+', '=' and '\' stands for itself.
        if matches!(c, '!'..='~') && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    out
}

/// Makes caller-supplied text safe inside a field: line breaks and other controls become
/// spaces (a remote reply may span lines; RFC 3464 fields are single logical lines), runs of
/// space collapse, anything outside ASCII becomes '?' (the part is declared 7bit), and the
/// value is cut to [`MAX_FIELD_VALUE`] bytes.
fn field_value(text: &str) -> String {
    clean(text, true)
}

/// [`field_value`] for the human-readable part, which is UTF-8 and may keep non-ASCII text.
fn display_value(text: &str) -> String {
    clean(text, false)
}

fn clean(text: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_FIELD_VALUE));
    for c in text.chars() {
        let c = match c {
            c if c.is_control() || c.is_whitespace() => ' ',
            c if ascii_only && !c.is_ascii() => '?',
            c => c,
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_FIELD_VALUE {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// Like [`field_value`], for text mail-builder puts in a header: no control characters at
/// all (CR or LF there would end the header and let the text forge the next one).
fn header_safe(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// Appends `Name: value` folded at spaces to keep lines within 78 characters where the value
/// allows (RFC 5322 §2.1.1); values are already cut well below the 998 hard limit.
fn push_field(out: &mut String, name: &str, value: &str) {
    let mut line_len = name.len() + 1;
    out.push_str(name);
    out.push(':');
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if line_len + 1 + word.len() > 78 && line_len > name.len() + 1 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
}

/// The header section of a message: everything up to and including the line ending before
/// the first empty line (RFC 5322 §2.1); the whole message when there is none.
fn header_section(message: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < message.len() {
        let end = message[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| start + i + 1);
        let line = &message[start..end];
        if line == b"\r\n" || line == b"\n" {
            return &message[..start];
        }
        start = end;
    }
    message
}

/// The bytes with every line ending as CRLF (a lone LF or CR becomes CRLF), ending in one.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use mail_parser::{MessageParser, MimeHeaders, PartType};

    use super::*;

    const ORIGINAL: &[u8] = b"From: alice@example.org\r\nTo: bob@remote.test\r\n\
        Subject: lunch\r\nMessage-ID: <orig-1@example.org>\r\n\r\nShall we?\r\n";

    fn recipient() -> DsnRecipient {
        DsnRecipient {
            final_recipient: "bob@remote.test".into(),
            original_recipient: Some("rfc822;Bob@Remote.test".into()),
            status: "5.1.1".into(),
            diagnostic: Some("smtp; 550 5.1.1 no such user".into()),
            remote_mta: Some("dns; mx.remote.test".into()),
            last_attempt_unix: Some(1_700_000_100),
            will_retry_until_unix: None,
        }
    }

    fn input<'a>(kind: DsnKind, recipients: &'a [DsnRecipient]) -> DsnInput<'a> {
        DsnInput {
            kind,
            reporting_mta: "mx.example.org",
            to: "alice@example.org",
            envid: Some("env-7"),
            arrival_unix: 1_700_000_000,
            recipients,
            original: ORIGINAL,
            return_full: true,
            now_unix: 1_700_000_200,
        }
    }

    /// The delivery-status part as blocks of (name, value) fields, continuation lines unfolded.
    fn status_blocks(text: &str) -> Vec<Vec<(String, String)>> {
        text.split("\r\n\r\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let mut fields: Vec<(String, String)> = Vec::new();
                for line in block.split("\r\n").filter(|l| !l.is_empty()) {
                    if line.starts_with(' ') {
                        let last = fields.last_mut().expect("continuation first");
                        last.1.push_str(line);
                    } else {
                        let (name, value) = line.split_once(':').expect("a field");
                        fields.push((name.to_string(), value.trim().to_string()));
                    }
                }
                fields
            })
            .collect()
    }

    fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
        block
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The DSN's own header section: CRLF only, every line within RFC 5322's 998 limit.
    fn assert_header_block_valid(dsn: &[u8]) {
        let end = dsn
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header section");
        let headers = &dsn[..end + 2];
        for (i, &b) in headers.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && headers[i - 1] == b'\r', "bare LF at {i}");
            }
        }
        for line in headers.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line too long: {}", line.len());
        }
        assert!(headers.is_ascii());
    }

    #[test]
    fn failed_dsn_has_the_rfc3464_structure_and_every_field() {
        let recipients = [recipient()];
        let dsn = build(&input(DsnKind::Failed, &recipients));
        assert_header_block_valid(&dsn);
        let message = MessageParser::default().parse(&dsn).expect("parses");

        let from = message.from().and_then(|a| a.first()).expect("From");
        assert_eq!(from.name(), Some("Mail Delivery System"));
        assert_eq!(from.address(), Some("MAILER-DAEMON@mx.example.org"));
        let to = message.to().and_then(|a| a.first()).expect("To");
        assert_eq!(to.address(), Some("alice@example.org"));
        assert_eq!(
            message.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(
            message.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(
            message.header_raw("Date").map(str::trim),
            Some(rfc5322_date(1_700_000_200).as_str())
        );
        assert!(message.message_id().unwrap().ends_with("@mx.example.org"));

        let root = message.root_part();
        let ct = root.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let PartType::Multipart(children) = &root.body else {
            panic!("not multipart");
        };
        assert_eq!(children.len(), 3);
        let part = |i: usize| message.part(children[i]).unwrap();

        // 1: for people.
        let human = part(0).text_contents().unwrap();
        assert_eq!(part(0).content_type().unwrap().ctype(), "text");
        assert!(human.contains("could not be delivered"), "{human}");
        assert!(
            human.contains("<bob@remote.test>: smtp; 550 5.1.1 no such user"),
            "{human}"
        );
        assert!(human.contains("mx.remote.test"), "{human}");

        // 2: for programs.
        let ct = part(1).content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("message", Some("delivery-status"))
        );
        let blocks = status_blocks(part(1).text_contents().unwrap());
        assert_eq!(blocks.len(), 2);
        let per_message = &blocks[0];
        assert_eq!(
            field(per_message, "Reporting-MTA"),
            Some("dns; mx.example.org")
        );
        assert_eq!(field(per_message, "Original-Envelope-Id"), Some("env-7"));
        assert_eq!(
            field(per_message, "Arrival-Date"),
            Some(rfc5322_date(1_700_000_000).as_str())
        );
        let per_rcpt = &blocks[1];
        assert_eq!(
            field(per_rcpt, "Final-Recipient"),
            Some("rfc822; bob@remote.test")
        );
        assert_eq!(
            field(per_rcpt, "Original-Recipient"),
            Some("rfc822;Bob@Remote.test")
        );
        assert_eq!(field(per_rcpt, "Action"), Some("failed"));
        assert_eq!(field(per_rcpt, "Status"), Some("5.1.1"));
        assert_eq!(field(per_rcpt, "Remote-MTA"), Some("dns; mx.remote.test"));
        assert_eq!(
            field(per_rcpt, "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 no such user")
        );
        assert_eq!(
            field(per_rcpt, "Last-Attempt-Date"),
            Some(rfc5322_date(1_700_000_100).as_str())
        );
        // Will-Retry-Until belongs to delayed DSNs only.
        assert_eq!(field(per_rcpt, "Will-Retry-Until"), None);

        // 3: the whole original, as a message.
        let ct = part(2).content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("message", Some("rfc822")));
        let PartType::Message(original) = &part(2).body else {
            panic!("original is not a message");
        };
        assert_eq!(original.subject(), Some("lunch"));
        assert_eq!(
            original.body_text(0).as_deref().map(str::trim),
            Some("Shall we?")
        );
    }

    #[test]
    fn headers_only_when_ret_is_hdrs() {
        let recipients = [recipient()];
        let dsn = build(&DsnInput {
            return_full: false,
            ..input(DsnKind::Failed, &recipients)
        });
        let message = MessageParser::default().parse(&dsn).unwrap();
        let PartType::Multipart(children) = &message.root_part().body else {
            panic!("not multipart");
        };
        let third = message.part(children[2]).unwrap();
        let ct = third.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("rfc822-headers")));
        let headers = third.text_contents().unwrap();
        assert!(headers.contains("Subject: lunch\r\n"), "{headers}");
        assert!(headers.contains("Message-ID: <orig-1@example.org>"));
        assert!(!headers.contains("Shall we?"), "{headers}");
        let human = message.body_text(0).unwrap();
        assert!(!human.contains("too large"));
    }

    #[test]
    fn a_full_original_over_the_cap_is_returned_as_headers_saying_so() {
        let recipients = [recipient()];
        let mut big = ORIGINAL.to_vec();
        big.extend(std::iter::repeat_n(b'x', 100));
        big.extend_from_slice(b"\r\n");
        let dsn = build_with_cap(
            &DsnInput {
                original: &big,
                ..input(DsnKind::Failed, &recipients)
            },
            64,
        );
        let message = MessageParser::default().parse(&dsn).unwrap();
        let PartType::Multipart(children) = &message.root_part().body else {
            panic!("not multipart");
        };
        let third = message.part(children[2]).unwrap();
        assert_eq!(
            third.content_type().unwrap().subtype(),
            Some("rfc822-headers")
        );
        assert!(!third.text_contents().unwrap().contains("xxx"));
        let human = message.body_text(0).unwrap();
        assert!(human.contains("too large to return in full"), "{human}");
        assert!(human.contains(&format!("({} bytes)", big.len())), "{human}");
    }

    #[test]
    fn the_real_cap_is_ten_mebibytes() {
        let recipients = [recipient()];
        let mut big = ORIGINAL.to_vec();
        big.resize(MAX_RETURNED_ORIGINAL + 1, b'y');
        let dsn = build(&DsnInput {
            original: &big,
            ..input(DsnKind::Failed, &recipients)
        });
        assert!(dsn.len() < 64 * 1024, "{} bytes", dsn.len());
        assert!(
            String::from_utf8_lossy(&dsn).contains("text/rfc822-headers"),
            "headers only"
        );
    }

    #[test]
    fn delayed_dsn_says_until_when_it_retries() {
        let recipients = [DsnRecipient {
            status: "4.4.1".into(),
            diagnostic: Some("smtp; 451 4.4.1 try later".into()),
            will_retry_until_unix: Some(1_700_400_000),
            ..recipient()
        }];
        let dsn = build(&DsnInput {
            return_full: false,
            ..input(DsnKind::Delayed, &recipients)
        });
        assert_header_block_valid(&dsn);
        let message = MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(
            message.subject(),
            Some("Delayed Mail (still being retried)")
        );
        let human = message.body_text(0).unwrap();
        assert!(human.contains("do not need to"), "{human}");
        assert!(human.contains(&rfc5322_date(1_700_400_000)), "{human}");
        let PartType::Multipart(children) = &message.root_part().body else {
            panic!("not multipart");
        };
        let blocks = status_blocks(message.part(children[1]).unwrap().text_contents().unwrap());
        assert_eq!(field(&blocks[1], "Action"), Some("delayed"));
        assert_eq!(field(&blocks[1], "Status"), Some("4.4.1"));
        assert_eq!(
            field(&blocks[1], "Will-Retry-Until"),
            Some(rfc5322_date(1_700_400_000).as_str())
        );
    }

    #[test]
    fn delivered_dsn_and_several_recipients() {
        let recipients = [
            DsnRecipient {
                final_recipient: "a@remote.test".into(),
                status: "2.0.0".into(),
                diagnostic: Some("smtp; 250 2.0.0 ok".into()),
                original_recipient: None,
                remote_mta: None,
                last_attempt_unix: None,
                will_retry_until_unix: None,
            },
            DsnRecipient {
                final_recipient: "b@remote.test".into(),
                // A malformed or wrong-class status never reaches the report.
                status: "5.1.1".into(),
                ..DsnRecipient::default()
            },
        ];
        let dsn = build(&DsnInput {
            envid: None,
            ..input(DsnKind::Delivered, &recipients)
        });
        let message = MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(message.subject(), Some("Successful Mail Delivery Report"));
        let PartType::Multipart(children) = &message.root_part().body else {
            panic!("not multipart");
        };
        let blocks = status_blocks(message.part(children[1]).unwrap().text_contents().unwrap());
        assert_eq!(blocks.len(), 3);
        assert_eq!(field(&blocks[0], "Original-Envelope-Id"), None);
        assert_eq!(
            field(&blocks[1], "Final-Recipient"),
            Some("rfc822; a@remote.test")
        );
        assert_eq!(field(&blocks[1], "Action"), Some("delivered"));
        assert_eq!(field(&blocks[1], "Original-Recipient"), None);
        assert_eq!(field(&blocks[1], "Remote-MTA"), None);
        assert_eq!(
            field(&blocks[2], "Final-Recipient"),
            Some("rfc822; b@remote.test")
        );
        assert_eq!(field(&blocks[2], "Status"), Some("2.0.0"));
    }

    #[test]
    fn hostile_text_cannot_break_the_structure() {
        let long_reply = format!("smtp; 550 5.7.1 {}", "blocked ".repeat(300));
        let recipients = [DsnRecipient {
            final_recipient: "bob@remote.test".into(),
            diagnostic: Some(format!("{long_reply}\r\nInjected: yes\n\r\n--evil")),
            status: "5.7.1".into(),
            ..DsnRecipient::default()
        }];
        let dsn = build(&DsnInput {
            to: "alice@example.org\r\nBcc: victim@example.org",
            envid: Some("e\r\nX-Evil: 1"),
            ..input(DsnKind::Failed, &recipients)
        });
        assert_header_block_valid(&dsn);
        let message = MessageParser::default().parse(&dsn).unwrap();
        assert!(message.header_raw("Bcc").is_none());
        let PartType::Multipart(children) = &message.root_part().body else {
            panic!("not multipart");
        };
        assert_eq!(children.len(), 3);
        let status_part = message.part(children[1]).unwrap().text_contents().unwrap();
        for line in status_part.split("\r\n") {
            assert!(line.len() <= 78 || !line.contains(' '), "{line}");
            assert!(!line.starts_with("Injected") && !line.starts_with("X-Evil"));
        }
        let blocks = status_blocks(status_part);
        assert_eq!(blocks.len(), 2);
        let diagnostic = field(&blocks[1], "Diagnostic-Code").unwrap();
        assert!(diagnostic.starts_with("smtp; 550 5.7.1 blocked"));
        assert!(diagnostic.len() <= MAX_FIELD_VALUE + 20);
    }

    #[test]
    fn internationalised_recipients_use_the_utf8_address_type() {
        assert_eq!(typed_address("bob@remote.test"), "rfc822; bob@remote.test");
        assert_eq!(
            typed_address("jörg+x@bücher.test"),
            "utf-8; j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.test"
        );
    }

    #[test]
    fn bare_line_feeds_in_the_original_become_crlf() {
        assert_eq!(crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(header_section(b"A: 1\nB: 2\n\nbody"), b"A: 1\nB: 2\n");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        let recipients = [recipient()];
        let dsn = build(&DsnInput {
            original: b"Subject: lf\nX: y\n\nbody\n",
            ..input(DsnKind::Failed, &recipients)
        });
        for (i, &b) in dsn.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(dsn[i - 1], b'\r', "bare LF at {i}");
            }
        }
    }

    #[test]
    fn only_the_null_sender_is_never_bounced_to() {
        assert!(never_bounce_to(""));
        assert!(never_bounce_to("<>"));
        assert!(never_bounce_to("  "));
        assert!(!never_bounce_to("MAILER-DAEMON@example.org"));
        assert!(!never_bounce_to("alice@example.org"));
    }
}
