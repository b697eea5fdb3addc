//! Reads RFC 5322 messages for FETCH: header/body split, HEADER.FIELDS selection, ENVELOPE,
//! and the INTERNALDATE format.
//!
//! Parsing is done by hand on the header block and always returns the original bytes of the
//! selected fields (RFC 9051 §6.4.5 wants the fields as stored, not re-encoded). It deliberately
//! does not decode RFC 2047 encoded-words (clients do that); MIME structure (BODYSTRUCTURE,
//! numbered body parts) is in `mime.rs`, built on these helpers.

use crate::response::{push_nstring, push_string};

/// Splits a message into its header block (including the empty separator line) and body.
/// A message without an empty line is all header (RFC 5322 §3.5: the body is optional).
pub fn split(message: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while start < message.len() {
        let end = memchr::memchr(b'\n', &message[start..]).map_or(message.len(), |p| start + p + 1);
        let line = &message[start..end];
        if line == b"\r\n" || line == b"\n" {
            return (&message[..end], &message[end..]);
        }
        start = end;
    }
    (message, &[])
}

/// One header field: its name and its raw bytes (all folded lines, line endings included).
pub struct Field<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
}

/// The header fields of a header block, in order, with continuation lines attached.
pub fn fields(header: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut start = 0;
    let mut current: Option<(usize, usize)> = None; // (field start, name end)
    while start < header.len() {
        let end = memchr::memchr(b'\n', &header[start..]).map_or(header.len(), |p| start + p + 1);
        let line = &header[start..end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some((field_start, name_end)) = current.take() {
                out.push(Field {
                    name: &header[field_start..name_end],
                    raw: &header[field_start..start],
                });
            }
            if line != b"\r\n"
                && line != b"\n"
                && let Some(colon) = line.iter().position(|&b| b == b':')
            {
                let name_len = line[..colon]
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(0, |p| p + 1);
                current = Some((start, start + name_len));
            }
        }
        start = end;
    }
    if let Some((field_start, name_end)) = current {
        out.push(Field {
            name: &header[field_start..name_end],
            raw: &header[field_start..],
        });
    }
    out
}

/// `HEADER.FIELDS` / `HEADER.FIELDS.NOT` (RFC 9051 §6.4.5): the selected fields followed by the
/// empty line that ends a header.
pub fn select_fields(header: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields(header) {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(field.name));
        if listed != not {
            out.extend_from_slice(field.raw);
            if !field.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The unfolded value of the first field called `name`, trimmed; `None` when absent.
pub fn value(header: &[u8], name: &str) -> Option<Vec<u8>> {
    field_value(&fields(header), name)
}

/// [`value`] over fields already split with [`fields`].
fn field_value(fields: &[Field<'_>], name: &str) -> Option<Vec<u8>> {
    let field = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))?;
    let colon = field.raw.iter().position(|&b| b == b':')?;
    let unfolded: Vec<u8> = field.raw[colon + 1..]
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    Some(trim(&unfolded).to_vec())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &bytes[start..end.max(start)]
}

/// INTERNALDATE as `"dd-Mon-yyyy hh:mm:ss +0000"` (RFC 9051 §9 `date-time`), always in UTC.
pub fn internal_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_name = MONTHS
        .get(usize::try_from(month - 1).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    // date-year is exactly four digits; clamp dates the grammar cannot express.
    let year = year.clamp(0, 9999);
    format!(
        "\"{day:02}-{month_name}-{year:04} {:02}:{:02}:{:02} +0000\"",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The UTC calendar date (year, month, day) of an internal date, as SEARCH BEFORE/ON/SINCE
/// compare it (the date INTERNALDATE shows).
pub fn civil_date(ms: i64) -> (i64, i64, i64) {
    civil_from_days(ms.div_euclid(1000).div_euclid(86_400))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); the well-known
/// era-based algorithm, exact for the whole i64 day range we can be handed.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The ENVELOPE structure (RFC 9051 §7.5.2) of a header block.
pub fn envelope(header: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_envelope(&mut out, header);
    out
}

/// [`envelope`], appended to `out`.
pub fn push_envelope(out: &mut Vec<u8>, header: &[u8]) {
    let fields = fields(header);
    let value = |name: &str| field_value(&fields, name);
    let from = value("From");
    let sender = value("Sender").or_else(|| from.clone());
    let reply_to = value("Reply-To").or_else(|| from.clone());
    out.push(b'(');
    push_nstring(out, value("Date").as_deref());
    out.push(b' ');
    push_nstring(out, value("Subject").as_deref());
    for list in [
        from,
        sender,
        reply_to,
        value("To"),
        value("Cc"),
        value("Bcc"),
    ] {
        out.push(b' ');
        push_address_list(out, list.as_deref());
    }
    out.push(b' ');
    push_nstring(out, value("In-Reply-To").as_deref());
    out.push(b' ');
    push_nstring(out, value("Message-ID").as_deref());
    out.push(b')');
}

/// One element of an address list as ENVELOPE writes it.
#[derive(Debug, PartialEq, Eq)]
enum Address {
    Mailbox {
        name: Option<Vec<u8>>,
        local: Vec<u8>,
        domain: Vec<u8>,
    },
    GroupStart(Vec<u8>),
    GroupEnd,
}

fn push_address_list(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let addresses = value.map(parse_addresses).unwrap_or_default();
    if addresses.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for address in addresses {
        out.push(b'(');
        match address {
            Address::Mailbox {
                name,
                local,
                domain,
            } => {
                push_nstring(out, name.as_deref());
                out.extend_from_slice(b" NIL ");
                push_string(out, &local);
                out.push(b' ');
                push_string(out, &domain);
            }
            // RFC 9051 §7.5.2: group syntax is a NIL host with the group name as mailbox,
            // closed by an all-NIL address.
            Address::GroupStart(name) => {
                out.extend_from_slice(b"NIL NIL ");
                push_string(out, &name);
                out.extend_from_slice(b" NIL");
            }
            Address::GroupEnd => out.extend_from_slice(b"NIL NIL NIL NIL"),
        }
        out.push(b')');
    }
    out.push(b')');
}

/// Splits an RFC 5322 §3.4 address list. Tolerant: malformed entries become best-effort
/// mailboxes rather than errors, since ENVELOPE must describe whatever was received.
fn parse_addresses(value: &[u8]) -> Vec<Address> {
    let mut out = Vec::new();
    let mut item = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut comment_depth = 0u32;
    let mut angle = false;
    let mut in_group = false;
    for &b in value {
        if escaped {
            escaped = false;
            item.push(b);
            continue;
        }
        match b {
            b'\\' if quoted || comment_depth > 0 => {
                escaped = true;
                item.push(b);
            }
            b'"' if comment_depth == 0 => {
                quoted = !quoted;
                item.push(b);
            }
            b'(' if !quoted => {
                comment_depth += 1;
                item.push(b);
            }
            b')' if !quoted && comment_depth > 0 => {
                comment_depth -= 1;
                item.push(b);
            }
            _ if quoted || comment_depth > 0 => item.push(b),
            b'<' => {
                angle = true;
                item.push(b);
            }
            b'>' => {
                angle = false;
                item.push(b);
            }
            b':' if !angle && !in_group => {
                out.push(Address::GroupStart(display_name(&item)));
                item.clear();
                in_group = true;
            }
            b',' if !angle => {
                out.extend(parse_mailbox(&item));
                item.clear();
            }
            b';' if !angle && in_group => {
                out.extend(parse_mailbox(&item));
                item.clear();
                out.push(Address::GroupEnd);
                in_group = false;
            }
            _ => item.push(b),
        }
    }
    out.extend(parse_mailbox(&item));
    if in_group {
        out.push(Address::GroupEnd);
    }
    out
}

fn parse_mailbox(item: &[u8]) -> Option<Address> {
    let item = trim(item);
    if item.is_empty() {
        return None;
    }
    let (name, spec) = match (
        item.iter().rposition(|&b| b == b'<'),
        item.iter().rposition(|&b| b == b'>'),
    ) {
        (Some(open), Some(close)) if open < close => {
            let name = display_name(&item[..open]);
            (
                (!name.is_empty()).then_some(name),
                item[open + 1..close].to_vec(),
            )
        }
        _ => (None, strip_comments(item)),
    };
    let spec = trim(&spec);
    // An obsolete source route ("@a,@b:user@host", RFC 5322 §4.4) is dropped.
    let spec = match spec.iter().position(|&b| b == b':') {
        Some(colon) if spec.first() == Some(&b'@') => &spec[colon + 1..],
        _ => spec,
    };
    let (local, domain) = match spec.iter().rposition(|&b| b == b'@') {
        Some(at) => (spec[..at].to_vec(), spec[at + 1..].to_vec()),
        None => (spec.to_vec(), Vec::new()),
    };
    Some(Address::Mailbox {
        name,
        local: unquote(trim(&local)),
        domain: trim(&domain).to_vec(),
    })
}

fn strip_comments(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut depth = 0u32;
    let mut quoted = false;
    for &b in bytes {
        match b {
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(b);
            }
            b'(' if !quoted => depth += 1,
            b')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(b),
        }
    }
    out
}

fn display_name(bytes: &[u8]) -> Vec<u8> {
    unquote(trim(&strip_comments(bytes)))
}

/// Removes the quotes and backslash escapes of a quoted-string (RFC 5322 §3.2.4).
fn unquote(bytes: &[u8]) -> Vec<u8> {
    if !bytes.contains(&b'"') {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut escaped = false;
    for &b in bytes {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b != b'"' {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: \"Doe, John\" <john@example.com>\r\nTo: a@x.org, B <b@y.org>\r\nSubject: hello\r\n  world\r\nX-Empty:\r\n\r\nbody line\r\n";

    #[test]
    fn splits_header_and_body() {
        let (header, body) = split(MSG);
        assert!(header.ends_with(b"X-Empty:\r\n\r\n"));
        assert_eq!(body, b"body line\r\n");
        assert_eq!(split(b"Subject: x\r\n"), (&b"Subject: x\r\n"[..], &b""[..]));
    }

    #[test]
    fn selects_fields_with_original_folding() {
        let (header, _) = split(MSG);
        assert_eq!(
            select_fields(header, &[b"subject".to_vec(), b"DATE".to_vec()], false),
            b"Subject: hello\r\n  world\r\n\r\n"
        );
        let not = select_fields(header, &[b"from".to_vec(), b"to".to_vec()], true);
        assert_eq!(not, b"Subject: hello\r\n  world\r\nX-Empty:\r\n\r\n");
        assert_eq!(value(header, "SUBJECT").unwrap(), b"hello  world");
    }

    #[test]
    fn envelope_of_simple_message() {
        let (header, _) = split(MSG);
        let env = String::from_utf8(envelope(header)).unwrap();
        assert_eq!(
            env,
            "(NIL \"hello  world\" ((\"Doe, John\" NIL \"john\" \"example.com\")) \
             ((\"Doe, John\" NIL \"john\" \"example.com\")) \
             ((\"Doe, John\" NIL \"john\" \"example.com\")) \
             ((NIL NIL \"a\" \"x.org\")(\"B\" NIL \"b\" \"y.org\")) NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn groups_and_comments() {
        let parsed = parse_addresses(b"Friends: a@x (Al), \"B\" <b@y>;, c@z");
        assert_eq!(
            parsed,
            vec![
                Address::GroupStart(b"Friends".to_vec()),
                Address::Mailbox {
                    name: None,
                    local: b"a".to_vec(),
                    domain: b"x".to_vec()
                },
                Address::Mailbox {
                    name: Some(b"B".to_vec()),
                    local: b"b".to_vec(),
                    domain: b"y".to_vec()
                },
                Address::GroupEnd,
                Address::Mailbox {
                    name: None,
                    local: b"c".to_vec(),
                    domain: b"z".to_vec()
                },
            ]
        );
    }

    #[test]
    fn internal_dates() {
        assert_eq!(internal_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
        // 2024-02-29T13:05:09Z, a leap day.
        assert_eq!(
            internal_date(1_709_211_909_000),
            "\"29-Feb-2024 13:05:09 +0000\""
        );
        assert_eq!(internal_date(-1000), "\"31-Dec-1969 23:59:59 +0000\"");
        let _ = internal_date(i64::MIN);
        let _ = internal_date(i64::MAX);
    }
}
