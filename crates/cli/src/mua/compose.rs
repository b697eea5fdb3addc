//! Turns a [`Compose`] into RFC 5322 / MIME bytes with mail-builder, and parses the address
//! strings a person types (`addr@host` or `Name <addr@host>`).
//!
//! The structure follows RFC 2046: a text body alone is a single part, text plus HTML is
//! multipart/alternative (§5.1.4), and attachments wrap the body in multipart/mixed (§5.1.3).
//! mail-builder picks the transfer encodings, so the output is 7-bit clean and needs no
//! 8BITMIME or SMTPUTF8 from the server. Bcc recipients never appear in the header (RFC 5322
//! §3.6.3 allows either form; hiding them is the point of Bcc).
//!
//! Deliberately not done here: address groups, internationalized (non-ASCII) addresses,
//! reading attachment types from file contents, and anything network related.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{Context, Result, bail};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;

use super::Compose;

/// A mailbox as typed by a person: the optional display name and the bare address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mailbox {
    pub name: Option<String>,
    pub email: String,
}

/// Parses `addr@host`, `<addr@host>`, `Name <addr@host>` or `"Name, Jr." <addr@host>`.
///
/// The check on the address itself is deliberately shallow (one `@`, something on both sides,
/// no white space, no characters that would break the header); the SMTP envelope parser in
/// `smtp.rs` validates it again before anything is sent.
pub(super) fn parse_mailbox(input: &str) -> Result<Mailbox> {
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
    if let Some(name) = &name
        && name.chars().any(char::is_control)
    {
        bail!("invalid address {input:?}: the display name contains control characters");
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"()[]\\".contains(c))
        }
        None => false,
    };
    if !valid {
        bail!("invalid address {input:?}: expected user@domain or \"Name <user@domain>\"");
    }
    Ok(Mailbox {
        name,
        email: email.to_string(),
    })
}

fn header_address(mailbox: &Mailbox) -> Address<'static> {
    Address::new_address(mailbox.name.clone(), mailbox.email.clone())
}

fn header_list(list: &[String], field: &str) -> Result<Option<Address<'static>>> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut items = Vec::with_capacity(list.len());
    for entry in list {
        let mailbox = parse_mailbox(entry).with_context(|| format!("{field} recipient"))?;
        items.push(header_address(&mailbox));
    }
    Ok(Some(Address::new_list(items)))
}

/// Content types by file extension. A short table on purpose: anything missing is sent as
/// application/octet-stream, which every client can still save.
const CONTENT_TYPES: &[(&str, &str)] = &[
    ("txt", "text/plain"),
    ("text", "text/plain"),
    ("log", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("htm", "text/html"),
    ("html", "text/html"),
    ("ics", "text/calendar"),
    ("vcf", "text/vcard"),
    ("json", "application/json"),
    ("xml", "application/xml"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("7z", "application/x-7z-compressed"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("ppt", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("odt", "application/vnd.oasis.opendocument.text"),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("svg", "image/svg+xml"),
    ("bmp", "image/bmp"),
    ("mp3", "audio/mpeg"),
    ("wav", "audio/wav"),
    ("ogg", "audio/ogg"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
];

/// Guesses a Content-Type from the file name's extension, case-insensitively.
pub(super) fn guess_content_type(filename: &str) -> &'static str {
    let extension = match filename.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    CONTENT_TYPES
        .iter()
        .find(|(ext, _)| *ext == extension)
        .map_or("application/octet-stream", |(_, ct)| ct)
}

/// Replaces control characters (CR and LF above all) with spaces so that a subject can never
/// inject a header line.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Builds the MIME message for `mail`; reads every attachment from disk.
pub fn build_message(mail: &Compose) -> Result<Vec<u8>> {
    if mail.to.is_empty() && mail.cc.is_empty() && mail.bcc.is_empty() {
        bail!("no recipients: give at least one To, Cc or Bcc address");
    }
    let from = parse_mailbox(&mail.from).context("sender (From)")?;
    // Bcc addresses are only checked here: they go into the envelope, not the header.
    for bcc in &mail.bcc {
        parse_mailbox(bcc).context("Bcc recipient")?;
    }

    let mut builder = MessageBuilder::new()
        .from(header_address(&from))
        .subject(one_line(&mail.subject).into_owned());
    if let Some(to) = header_list(&mail.to, "To")? {
        builder = builder.to(to);
    }
    if let Some(cc) = header_list(&mail.cc, "Cc")? {
        builder = builder.cc(cc);
    }
    // RFC 5322 §3.6.4: ids go out without angle brackets; mail-builder adds them.
    let bare = |id: &str| {
        id.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    };
    if let Some(id) = &mail.in_reply_to {
        builder = builder.in_reply_to(bare(id));
    }
    if !mail.references.is_empty() {
        builder = builder.references(
            mail.references
                .iter()
                .map(|id| bare(id))
                .collect::<Vec<_>>(),
        );
    }
    builder = builder.text_body(mail.text.clone());
    if let Some(html) = &mail.html {
        builder = builder.html_body(html.clone());
    }
    for path in &mail.attachments {
        let data = std::fs::read(path)
            .with_context(|| format!("read attachment {}: check the path", path.display()))?;
        let filename = attachment_name(path)?;
        let content_type = guess_content_type(&filename);
        builder = builder.attachment(content_type, filename, data);
    }
    builder.write_to_vec().context("serialize the message")
}

fn attachment_name(path: &Path) -> Result<String> {
    match path.file_name() {
        Some(name) => Ok(name.to_string_lossy().into_owned()),
        None => bail!(
            "attachment {} has no file name: give the path of a file",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};
    use std::path::PathBuf;

    fn compose() -> Compose {
        Compose {
            from: "Alice Example <alice@example.test>".into(),
            to: vec!["bob@example.test".into()],
            cc: vec!["\"Carol, C.\" <carol@example.test>".into()],
            bcc: vec!["dave@example.test".into()],
            subject: "Lunch".into(),
            text: "See you at noon.\n".into(),
            html: None,
            attachments: vec![],
            in_reply_to: None,
            references: vec![],
        }
    }

    /// The header block: everything before the first empty line.
    fn header_block(raw: &[u8]) -> String {
        let text = String::from_utf8_lossy(raw);
        text.split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tern-mua-compose-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    #[test]
    fn parses_typed_addresses() {
        let plain = parse_mailbox(" bob@example.test ").unwrap();
        assert_eq!(plain.name, None);
        assert_eq!(plain.email, "bob@example.test");
        let named = parse_mailbox("Bob B <bob@example.test>").unwrap();
        assert_eq!(named.name.as_deref(), Some("Bob B"));
        assert_eq!(named.email, "bob@example.test");
        let quoted = parse_mailbox("\"B, Bob\" <bob@example.test>").unwrap();
        assert_eq!(quoted.name.as_deref(), Some("B, Bob"));
        let bracketed = parse_mailbox("<bob@example.test>").unwrap();
        assert_eq!(bracketed.name, None);
        for bad in [
            "",
            "bob",
            "@example.test",
            "bob@",
            "bob @example.test",
            "a@b@c",
            "Bob <bob@example.test",
            "Evil\r\nBcc: x <bob@example.test>",
        ] {
            assert!(parse_mailbox(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn headers_are_present_and_bcc_is_not() {
        let raw = build_message(&compose()).unwrap();
        let header = header_block(&raw);
        assert!(
            header.contains("From: \"Alice Example\" <alice@example.test>")
                || header.contains("From: Alice Example <alice@example.test>"),
            "{header}"
        );
        assert!(
            header.contains("To: <bob@example.test>") || header.contains("To: bob@example.test")
        );
        assert!(header.contains("carol@example.test"), "{header}");
        assert!(header.contains("Subject: Lunch"), "{header}");
        assert!(header.contains("Message-ID: <"), "{header}");
        assert!(header.contains("Date: "), "{header}");
        assert!(header.contains("MIME-Version: 1.0"), "{header}");
        let whole = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        assert!(
            !whole.contains("bcc"),
            "Bcc leaked into the message: {whole}"
        );
        assert!(!whole.contains("dave@example.test"));

        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.subject(), Some("Lunch"));
        let cc = parsed.cc().unwrap().first().unwrap();
        assert_eq!(cc.name(), Some("Carol, C."));
        // A 7-bit body is sent in canonical form: RFC 5322 §2.3 wants CRLF line ends.
        assert_eq!(parsed.body_text(0).as_deref(), Some("See you at noon.\r\n"));
        assert!(parsed.content_type().is_none_or(|ct| ct.ctype() == "text"));
    }

    #[test]
    fn non_ascii_subject_is_encoded() {
        let mut mail = compose();
        mail.subject = "Grüße aus Köln ☕".into();
        mail.text = "Schöne Grüße\n".into();
        let raw = build_message(&mail).unwrap();
        assert!(raw.is_ascii(), "the message must be 7-bit clean");
        let header = header_block(&raw);
        assert!(
            header.to_ascii_lowercase().contains("subject: =?utf-8?"),
            "{header}"
        );
        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.subject(), Some("Grüße aus Köln ☕"));
        assert_eq!(parsed.body_text(0).as_deref(), Some("Schöne Grüße\n"));
    }

    #[test]
    fn subject_cannot_inject_a_header() {
        let mut mail = compose();
        mail.subject = "hi\r\nBcc: eve@example.test".into();
        let raw = build_message(&mail).unwrap();
        let header = header_block(&raw);
        assert!(!header.contains("\r\nBcc:"), "{header}");
    }

    #[test]
    fn text_and_html_make_multipart_alternative() {
        let mut mail = compose();
        mail.html = Some("<p>See you at <b>noon</b>.</p>".into());
        let raw = build_message(&mail).unwrap();
        let parsed = MessageParser::default().parse(&raw).unwrap();
        let ct = parsed.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative"))
        );
        // A 7-bit body is sent in canonical form: RFC 5322 §2.3 wants CRLF line ends.
        assert_eq!(parsed.body_text(0).as_deref(), Some("See you at noon.\r\n"));
        assert_eq!(
            parsed.body_html(0).as_deref(),
            Some("<p>See you at <b>noon</b>.</p>")
        );
        assert_eq!(parsed.attachment_count(), 0);
    }

    #[test]
    fn attachments_round_trip_through_mail_parser() {
        let dir = scratch_dir("roundtrip");
        let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let text = b"line one\nline two\r\nline three without newline".to_vec();
        std::fs::write(dir.join("photo.PNG"), &binary).unwrap();
        std::fs::write(dir.join("notes.txt"), &text).unwrap();
        std::fs::write(dir.join("blob.unknownext"), b"\x00\x01\x02").unwrap();
        let mut mail = compose();
        mail.html = Some("<p>hello</p>".into());
        mail.attachments = vec![
            dir.join("photo.PNG"),
            dir.join("notes.txt"),
            dir.join("blob.unknownext"),
        ];
        let raw = build_message(&mail).unwrap();
        let parsed = MessageParser::default().parse(&raw).unwrap();
        let ct = parsed.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("mixed")));
        // A 7-bit body is sent in canonical form: RFC 5322 §2.3 wants CRLF line ends.
        assert_eq!(parsed.body_text(0).as_deref(), Some("See you at noon.\r\n"));

        let found: Vec<(String, String, Vec<u8>)> = parsed
            .attachments()
            .map(|part| {
                let ct = part.content_type().unwrap();
                (
                    part.attachment_name().unwrap_or_default().to_string(),
                    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()),
                    part.contents().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("photo.PNG".into(), "image/png".into(), binary),
                ("notes.txt".into(), "text/plain".into(), text),
                (
                    "blob.unknownext".into(),
                    "application/octet-stream".into(),
                    vec![0, 1, 2]
                ),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_ascii_attachment_name_round_trips() {
        let dir = scratch_dir("name");
        std::fs::write(dir.join("Übersicht März.pdf"), b"%PDF-1.4").unwrap();
        let mut mail = compose();
        mail.attachments = vec![dir.join("Übersicht März.pdf")];
        let raw = build_message(&mail).unwrap();
        assert!(raw.is_ascii());
        let parsed = MessageParser::default().parse(&raw).unwrap();
        let part = parsed.attachment(0).unwrap();
        assert_eq!(part.attachment_name(), Some("Übersicht März.pdf"));
        assert_eq!(part.contents(), b"%PDF-1.4");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_attachment_names_the_path() {
        let mut mail = compose();
        mail.attachments = vec![PathBuf::from("/nonexistent/tern-mua/report.pdf")];
        let err = format!("{:#}", build_message(&mail).unwrap_err());
        assert!(err.contains("/nonexistent/tern-mua/report.pdf"), "{err}");
    }

    #[test]
    fn refuses_messages_without_recipients_or_with_bad_addresses() {
        let mut mail = compose();
        mail.to.clear();
        mail.cc.clear();
        mail.bcc.clear();
        assert!(build_message(&mail).is_err());

        let mut mail = compose();
        mail.bcc = vec!["not an address".into()];
        let err = format!("{:#}", build_message(&mail).unwrap_err());
        assert!(err.contains("Bcc"), "{err}");

        let mut mail = compose();
        mail.from = "nobody".into();
        let err = format!("{:#}", build_message(&mail).unwrap_err());
        assert!(err.contains("From"), "{err}");
    }

    #[test]
    fn guesses_content_types() {
        assert_eq!(guess_content_type("a.pdf"), "application/pdf");
        assert_eq!(guess_content_type("A.JPG"), "image/jpeg");
        assert_eq!(guess_content_type("archive.tar.gz"), "application/gzip");
        assert_eq!(guess_content_type("README"), "application/octet-stream");
        assert_eq!(guess_content_type(".bashrc"), "application/octet-stream");
        assert_eq!(guess_content_type("x.weird"), "application/octet-stream");
        assert_eq!(guess_content_type("notes.txt"), "text/plain");
    }
}
