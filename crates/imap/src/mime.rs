//! MIME structure for FETCH: BODYSTRUCTURE / BODY (RFC 9051 §7.5.2) and numbered body parts
//! (`BODY[1.2]`, `BODY[2.MIME]`, `BODY[3.HEADER]`, RFC 9051 §6.4.5), and the decoded parts of
//! `BINARY[1.2]` (base64 and quoted-printable undone).
//!
//! Parsed by hand over the stored bytes so that every part is a slice of the message: sizes are
//! exact octet counts and part contents go out exactly as stored. mail-parser decodes and
//! normalises, which loses those offsets. Tolerant by design: a missing closing boundary ends
//! the multipart at the end of its body, a missing Content-Type is `text/plain` (or
//! `message/rfc822` inside `multipart/digest`, RFC 2046 §5.1.5). Not done: RFC 2231
//! parameter continuations are passed through undecoded, and Content-MD5 is always NIL.

use crate::message::{self, envelope, split, value};
use crate::response::{nstring, string};

/// Nesting deeper than this is treated as an opaque leaf, so hostile input cannot exhaust the
/// stack.
const MAX_DEPTH: usize = 32;

/// One MIME entity: its header block (with the empty separator line) and its body.
pub struct Node<'a> {
    pub header: &'a [u8],
    pub body: &'a [u8],
    media_type: Vec<u8>,
    subtype: Vec<u8>,
    params: Vec<(Vec<u8>, Vec<u8>)>,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Leaf,
    Multipart(Vec<Node<'a>>),
    /// `message/rfc822` (or `message/global`): the encapsulated message.
    Message(Box<Node<'a>>),
}

/// Parses a whole message.
pub fn parse(message: &[u8]) -> Node<'_> {
    entity(message, false, 0)
}

fn entity(bytes: &[u8], in_digest: bool, depth: usize) -> Node<'_> {
    let (header, body) = split(bytes);
    let (media_type, subtype, params) = match value(header, "Content-Type") {
        Some(ct) => parse_content_type(&ct),
        None if in_digest => (b"message".to_vec(), b"rfc822".to_vec(), Vec::new()),
        None => (
            b"text".to_vec(),
            b"plain".to_vec(),
            vec![(b"charset".to_vec(), b"us-ascii".to_vec())],
        ),
    };
    let boundary = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"boundary"))
        .map(|(_, v)| v.clone());
    let kind = if depth >= MAX_DEPTH {
        Kind::Leaf
    } else if media_type.eq_ignore_ascii_case(b"multipart") {
        match boundary {
            Some(boundary) if !boundary.is_empty() => {
                let digest = subtype.eq_ignore_ascii_case(b"digest");
                Kind::Multipart(
                    split_parts(body, &boundary)
                        .into_iter()
                        .map(|part| entity(part, digest, depth + 1))
                        .collect(),
                )
            }
            _ => Kind::Leaf,
        }
    } else if media_type.eq_ignore_ascii_case(b"message")
        && (subtype.eq_ignore_ascii_case(b"rfc822") || subtype.eq_ignore_ascii_case(b"global"))
    {
        Kind::Message(Box::new(entity(body, false, depth + 1)))
    } else {
        Kind::Leaf
    };
    Node {
        header,
        body,
        media_type,
        subtype,
        params,
        kind,
    }
}

/// The body parts between the delimiter lines of a multipart body (RFC 2046 §5.1.1). The line
/// break before a delimiter belongs to the delimiter, so it is not part of the content.
fn split_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut start = 0;
    while start < body.len() {
        let end = body[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| start + p + 1)
            .unwrap_or(body.len());
        let line = &body[start..end];
        if line.len() >= boundary.len() + 2
            && line.starts_with(b"--")
            && &line[2..2 + boundary.len()] == boundary
        {
            let rest = &line[2 + boundary.len()..];
            let closing = rest.starts_with(b"--");
            let rest = if closing { &rest[2..] } else { rest };
            if rest.iter().all(|b| b.is_ascii_whitespace()) {
                if let Some(part_start) = current.take() {
                    let mut part_end = start;
                    if body[..part_end].ends_with(b"\r\n") {
                        part_end -= 2;
                    } else if body[..part_end].ends_with(b"\n") {
                        part_end -= 1;
                    }
                    parts.push(&body[part_start..part_end.max(part_start)]);
                }
                if closing {
                    return parts;
                }
                current = Some(end);
            }
        }
        start = end;
    }
    if let Some(part_start) = current {
        parts.push(&body[part_start..]);
    }
    parts
}

type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// `type/subtype; a=b; c="d"` into its pieces; a malformed value gives `text/plain`.
fn parse_content_type(value: &[u8]) -> (Vec<u8>, Vec<u8>, Params) {
    let (main, params) = parse_value_params(value);
    match main.iter().position(|&b| b == b'/') {
        Some(slash) if slash > 0 && slash + 1 < main.len() => {
            (main[..slash].to_vec(), main[slash + 1..].to_vec(), params)
        }
        _ => (
            b"text".to_vec(),
            b"plain".to_vec(),
            vec![(b"charset".to_vec(), b"us-ascii".to_vec())],
        ),
    }
}

/// A structured header value `main; name=value; ...` (RFC 2045 §5.1), comments removed and
/// quoted values unquoted.
fn parse_value_params(value: &[u8]) -> (Vec<u8>, Params) {
    let mut pieces: Vec<Vec<u8>> = vec![Vec::new()];
    let mut quoted = false;
    let mut escaped = false;
    let mut comment = 0u32;
    for &b in value {
        let piece = pieces.last_mut().expect("never empty");
        if escaped {
            piece.push(b);
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' if comment == 0 => quoted = !quoted,
            _ if quoted => piece.push(b),
            b'(' => comment += 1,
            b')' if comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            b';' => pieces.push(Vec::new()),
            b' ' | b'\t' => {}
            _ => piece.push(b),
        }
    }
    let main = pieces.remove(0);
    let params = pieces
        .into_iter()
        .filter_map(|p| {
            let eq = p.iter().position(|&b| b == b'=')?;
            (eq > 0).then(|| (p[..eq].to_vec(), p[eq + 1..].to_vec()))
        })
        .collect();
    (main, params)
}

/// The node that a part number path names (RFC 9051 §6.4.5): numbers index the parts of a
/// multipart; a non-multipart message has a single part 1, and the numbers after a
/// message/rfc822 part index into the encapsulated message.
pub fn find<'n, 'a>(root: &'n Node<'a>, path: &[u32]) -> Option<&'n Node<'a>> {
    let mut node = root;
    let mut message = true;
    for &n in path {
        let container = match (&node.kind, message) {
            (Kind::Message(inner), false) => inner.as_ref(),
            (Kind::Multipart(_), _) | (_, true) => node,
            (Kind::Leaf, false) => return None,
        };
        node = match &container.kind {
            Kind::Multipart(children) => children.get(usize::try_from(n).ok()?.checked_sub(1)?)?,
            _ if n == 1 => container,
            _ => return None,
        };
        message = false;
    }
    Some(node)
}

/// The message a HEADER / TEXT specifier refers to: the whole message, or the message
/// encapsulated in a message/rfc822 part.
pub fn message_at<'n, 'a>(root: &'n Node<'a>, path: &[u32]) -> Option<&'n Node<'a>> {
    if path.is_empty() {
        return Some(root);
    }
    match &find(root, path)?.kind {
        Kind::Message(inner) => Some(inner),
        _ => None,
    }
}

/// BODYSTRUCTURE (`extended`) or BODY of an entity.
pub fn structure(node: &Node<'_>, extended: bool) -> Vec<u8> {
    let mut out = b"(".to_vec();
    match &node.kind {
        Kind::Multipart(children) if !children.is_empty() => {
            for child in children {
                out.extend(structure(child, extended));
            }
            out.push(b' ');
            out.extend(string(&node.subtype));
            if extended {
                out.push(b' ');
                out.extend(params(&node.params));
                extension_tail(node.header, &mut out);
            }
        }
        kind => {
            // A multipart without parts cannot be written as body-type-mpart (it needs at
            // least one body); it is described as a single part, as Dovecot does.
            out.extend(string(&node.media_type));
            out.push(b' ');
            out.extend(string(&node.subtype));
            out.push(b' ');
            out.extend(params(&node.params));
            for field in ["Content-ID", "Content-Description"] {
                out.push(b' ');
                out.extend(nstring(value(node.header, field).as_deref()));
            }
            out.push(b' ');
            let encoding = value(node.header, "Content-Transfer-Encoding")
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| b"7BIT".to_vec());
            out.extend(string(&encoding));
            out.extend(format!(" {}", node.body.len()).into_bytes());
            if let Kind::Message(inner) = kind {
                out.push(b' ');
                out.extend(envelope(inner.header));
                out.push(b' ');
                out.extend(structure(inner, extended));
                out.extend(format!(" {}", lines(node.body)).into_bytes());
            } else if node.media_type.eq_ignore_ascii_case(b"text") {
                out.extend(format!(" {}", lines(node.body)).into_bytes());
            }
            if extended {
                // body-fld-md5: never computed.
                out.extend_from_slice(b" NIL");
                extension_tail(node.header, &mut out);
            }
        }
    }
    out.push(b')');
    out
}

/// Disposition, language and location, common to both body forms.
fn extension_tail(header: &[u8], out: &mut Vec<u8>) {
    out.push(b' ');
    match value(header, "Content-Disposition") {
        Some(raw) => {
            let (main, ps) = parse_value_params(&raw);
            if main.is_empty() {
                out.extend_from_slice(b"NIL");
            } else {
                out.push(b'(');
                out.extend(string(&main));
                out.push(b' ');
                out.extend(params(&ps));
                out.push(b')');
            }
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let languages: Vec<Vec<u8>> = value(header, "Content-Language")
        .map(|raw| {
            raw.split(|&b| b == b',')
                .map(|l| l.trim_ascii().to_vec())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    match languages.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        [one] => out.extend(string(one)),
        many => {
            out.push(b'(');
            for (i, l) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend(string(l));
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    out.extend(nstring(value(header, "Content-Location").as_deref()));
}

fn params(params: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    if params.is_empty() {
        return b"NIL".to_vec();
    }
    let mut out = b"(".to_vec();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend(string(k));
        out.push(b' ');
        out.extend(string(v));
    }
    out.push(b')');
    out
}

/// Lines of a body: line breaks, plus an unterminated last line.
fn lines(body: &[u8]) -> usize {
    let breaks = body.iter().filter(|&&b| b == b'\n').count();
    breaks + usize::from(!body.is_empty() && !body.ends_with(b"\n"))
}

/// What follows the part number in a section spec.
pub enum Spec<'s> {
    /// `BODY[1.2]`: the part's content.
    Content,
    /// `BODY[1.MIME]`: the part's MIME header.
    Mime,
    Header,
    Text,
    Fields {
        names: &'s [Vec<u8>],
        not: bool,
    },
}

/// The bytes of a section of `message`; `None` when the part does not exist.
pub fn section(message: &[u8], path: &[u32], spec: Spec<'_>) -> Option<Vec<u8>> {
    let root = parse(message);
    Some(match spec {
        Spec::Content if path.is_empty() => message.to_vec(),
        Spec::Content => find(&root, path)?.body.to_vec(),
        Spec::Mime => find(&root, path)?.header.to_vec(),
        Spec::Header => message_at(&root, path)?.header.to_vec(),
        Spec::Text => message_at(&root, path)?.body.to_vec(),
        Spec::Fields { names, not } => {
            message::select_fields(message_at(&root, path)?.header, names, not)
        }
    })
}

/// Why [`binary`] could not decode a part.
#[derive(Debug, PartialEq, Eq)]
pub enum BinaryError {
    /// No such part.
    Missing,
    /// A Content-Transfer-Encoding we do not know (`NO [UNKNOWN-CTE]`, RFC 3516 §4.3).
    UnknownCte,
}

/// BINARY[section] (RFC 9051 §6.4.5): the part's content with its Content-Transfer-Encoding
/// undone. An empty section is the whole message; multipart and message parts are not
/// encoded, so they come back as stored.
pub fn binary(message: &[u8], path: &[u32]) -> Result<Vec<u8>, BinaryError> {
    if path.is_empty() {
        return Ok(message.to_vec());
    }
    let root = parse(message);
    let node = find(&root, path).ok_or(BinaryError::Missing)?;
    if !matches!(node.kind, Kind::Leaf) {
        return Ok(node.body.to_vec());
    }
    let cte = value(node.header, "Content-Transfer-Encoding").unwrap_or_default();
    let cte = cte.to_ascii_lowercase();
    match cte.as_slice() {
        b"" | b"7bit" | b"8bit" | b"binary" => Ok(node.body.to_vec()),
        b"base64" => {
            use base64::Engine;
            let clean: Vec<u8> = node
                .body
                .iter()
                .copied()
                .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
                .collect();
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(&clean)
                .map_err(|_| BinaryError::UnknownCte)
        }
        b"quoted-printable" => Ok(quoted_printable(node.body)),
        _ => Err(BinaryError::UnknownCte),
    }
}

/// RFC 2045 §6.7 decoding, tolerant: a malformed `=` escape is kept as written.
fn quoted_printable(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            let rest = &body[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(&h), Some(&l)) = (rest.first(), rest.get(1))
                && let (Some(h), Some(l)) = (hex(h), hex(l))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\n\r\ntwo\r\n--b1--\r\nepilogue\r\n";

    #[test]
    fn multipart_parts_are_exact_slices() {
        let root = parse(MIXED);
        assert_eq!(find(&root, &[1]).unwrap().body, b"one");
        assert_eq!(find(&root, &[2]).unwrap().body, b"two");
        assert_eq!(find(&root, &[2]).unwrap().header, b"\r\n");
        assert!(find(&root, &[3]).is_none());
        assert!(find(&root, &[1, 1]).is_none());
        assert!(find(&root, &[0]).is_none());
    }

    #[test]
    fn single_part_has_part_one() {
        let msg = b"Subject: x\r\n\r\nhello\r\n";
        let root = parse(msg);
        assert_eq!(find(&root, &[1]).unwrap().body, b"hello\r\n");
        assert!(find(&root, &[2]).is_none());
        assert_eq!(
            String::from_utf8(structure(&root, true)).unwrap(),
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 7 1 NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn unterminated_multipart_runs_to_the_end() {
        let msg = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nabc";
        let root = parse(msg);
        assert_eq!(find(&root, &[1]).unwrap().body, b"abc");
    }

    #[test]
    fn parameters_with_comments_and_quotes() {
        let (t, s, p) =
            parse_content_type(b"Text/HTML (c) ; charset=\"utf-8\"; name=\"a \\\"b\\\".txt\"");
        assert_eq!((t.as_slice(), s.as_slice()), (&b"Text"[..], &b"HTML"[..]));
        assert_eq!(
            p,
            vec![
                (b"charset".to_vec(), b"utf-8".to_vec()),
                (b"name".to_vec(), b"a \"b\".txt".to_vec())
            ]
        );
    }

    #[test]
    fn binary_decodes_transfer_encodings() {
        let msg = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n/w==\r\n--x\r\n\
Content-Transfer-Encoding: Quoted-Printable\r\n\r\nCaf=E9 =\r\nau lait=3D\r\n--x\r\n\
Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--x--\r\n";
        assert_eq!(binary(msg, &[1]).unwrap(), [0, 1, 2, 255]);
        assert_eq!(binary(msg, &[2]).unwrap(), b"Caf\xe9 au lait=");
        assert_eq!(binary(msg, &[3]), Err(BinaryError::UnknownCte));
        assert_eq!(binary(msg, &[4]), Err(BinaryError::Missing));
        assert_eq!(binary(msg, &[]).unwrap(), msg);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut msg = Vec::new();
        for i in 0..200 {
            msg.extend(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .into_bytes(),
            );
        }
        msg.extend_from_slice(b"\r\nx\r\n");
        let root = parse(&msg);
        let _ = structure(&root, true);
    }
}
