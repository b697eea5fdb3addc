//! Builds server responses: status lines and simple data through imap-codec's `ResponseCodec`,
//! plus the small string helpers used where the session writes bytes itself.
//!
//! Responses that carry mailbox names or message data (LIST, STATUS, SEARCH, FETCH) are written
//! by hand in `session.rs` / `message.rs`: names need RFC 3501 §5.1.3 encoding and message data
//! may hold bytes imap-types refuses in a literal (NUL), so going through its validating
//! constructors would turn valid mail into errors. Nothing here touches the network.

use std::borrow::Cow;

use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::{Atom, Tag, Vec1};
use imap_codec::imap_types::response::{
    Capability, Code, CodeOther, Data, Greeting, Response, Status, StatusKind,
};
use imap_codec::{GreetingCodec, ResponseCodec};

/// Encodes one response with imap-codec.
pub fn encode(response: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(response).dump()
}

/// Encodes an untagged data response.
pub fn data(data: Data<'_>) -> Vec<u8> {
    encode(&Response::Data(data))
}

/// A response code that imap-types has no variant for (RFC 5530 codes such as
/// `AUTHENTICATIONFAILED`). Only ever called with our own constant atoms.
pub fn code_other(code: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(Cow::Borrowed(code.as_bytes())))
}

/// A status response (`tag OK/NO/BAD [code] text`). `text` is ours, but should it ever fail
/// validation (empty, CR/LF) a generic text keeps the reply well-formed instead of panicking.
pub fn status(
    tag: Option<&Tag<'_>>,
    kind: StatusKind,
    code: Option<Code<'_>>,
    text: &str,
) -> Vec<u8> {
    let tag = tag.cloned();
    let built = Status::new(tag.clone(), kind, code.clone(), text)
        .or_else(|_| Status::new(tag, kind, code, "completed"));
    match built {
        Ok(status) => encode(&Response::Status(status)),
        Err(_) => b"* BAD internal error\r\n".to_vec(),
    }
}

pub fn ok(tag: &Tag<'_>, code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    status(Some(tag), StatusKind::Ok, code, text)
}

pub fn no(tag: &Tag<'_>, code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    status(Some(tag), StatusKind::No, code, text)
}

pub fn bad(tag: Option<&Tag<'_>>, text: &str) -> Vec<u8> {
    status(tag, StatusKind::Bad, None, text)
}

pub fn untagged_ok(code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    status(None, StatusKind::Ok, code, text)
}

pub fn bye(text: &str) -> Vec<u8> {
    match Status::bye(None, text) {
        Ok(status) => encode(&Response::Status(status)),
        Err(_) => b"* BYE\r\n".to_vec(),
    }
}

pub fn greeting(code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    match Greeting::ok(code, text) {
        Ok(greeting) => GreetingCodec::default().encode(&greeting).dump(),
        Err(_) => b"* OK Tern IMAP ready\r\n".to_vec(),
    }
}

/// Turns capability atoms into imap-types capabilities. Atoms are our constants.
pub fn capabilities(atoms: &[Cow<'static, str>]) -> Option<Vec1<Capability<'static>>> {
    let caps: Vec<Capability<'static>> = atoms
        .iter()
        .filter_map(|atom| Atom::try_from(atom.clone()).ok().map(Capability::from))
        .collect();
    Vec1::try_from(caps).ok()
}

/// Writes an IMAP string for arbitrary bytes: a quoted string when RFC 9051 §4.3 allows it,
/// otherwise a literal (8-bit data, CR, LF, NUL).
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    push_string(&mut out, bytes);
    out
}

/// [`string`], appended to `out`.
pub fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let quotable = bytes.len() <= 1024
        && bytes
            .iter()
            .all(|&b| (0x01..=0x7f).contains(&b) && b != b'\r' && b != b'\n');
    if quotable {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        push_literal(out, bytes);
    }
}

/// `NIL` or a string.
pub fn nstring(bytes: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    push_nstring(&mut out, bytes);
    out
}

/// [`nstring`], appended to `out`.
pub fn push_nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => push_string(out, bytes),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A literal: `{n}` CRLF and exactly n bytes (RFC 9051 §4.3).
pub fn literal(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    push_literal(&mut out, bytes);
    out
}

/// [`literal`], appended to `out`.
pub fn push_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    use std::io::Write;
    out.reserve(bytes.len() + 16);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{{{}}}\r\n", bytes.len());
    out.extend_from_slice(bytes);
}

/// An astring as the client wrote it (for echoing section specs): an atom stays an atom.
pub fn astring(bytes: &[u8]) -> Vec<u8> {
    let atom = !bytes.is_empty()
        && bytes.iter().all(|&b| {
            b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
        });
    if atom { bytes.to_vec() } else { string(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_encode() {
        let tag = Tag::try_from("a1").unwrap();
        assert_eq!(ok(&tag, None, "done"), b"a1 OK done\r\n");
        assert_eq!(
            no(
                &tag,
                Some(code_other("AUTHENTICATIONFAILED")),
                "bad password"
            ),
            b"a1 NO [AUTHENTICATIONFAILED] bad password\r\n"
        );
        assert_eq!(bad(None, "what?"), b"* BAD what?\r\n");
        assert_eq!(bye("bye"), b"* BYE bye\r\n");
    }

    #[test]
    fn strings_choose_quoted_or_literal() {
        assert_eq!(string(b"a \"b\""), b"\"a \\\"b\\\"\"");
        assert_eq!(string("é".as_bytes()), b"{2}\r\n\xc3\xa9");
        assert_eq!(string(b"x\r\ny"), b"{4}\r\nx\r\ny");
        assert_eq!(nstring(None), b"NIL");
        assert_eq!(astring(b"FROM"), b"FROM");
        assert_eq!(astring(b"X Y"), b"\"X Y\"");
    }
}
