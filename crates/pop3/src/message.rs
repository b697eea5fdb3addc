//! Turns a stored message into the multi-line form RETR and TOP send (RFC 1939 §3).
//!
//! Messages are stored with CRLF line endings, but a bare LF is accepted and sent as CRLF, so a
//! message that slipped in with Unix line endings still reaches the client intact. This module
//! does not parse MIME or headers beyond finding the blank line that ends the header section.

/// Splits a stored message into lines without their terminators. A final line without a
/// terminator is still a line; an empty message has none.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let trimmed = body.strip_suffix(b"\n").unwrap_or(body);
    let skip = body.is_empty();
    trimmed
        .split(|&b| b == b'\n')
        .filter(move |_| !skip)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// The size of the message as RFC 1939 counts it: every line ending as CRLF, before
/// byte-stuffing and without the terminating ".\r\n".
pub(crate) fn wire_size(body: &[u8]) -> u64 {
    lines(body).fold(0u64, |size, line| {
        size.saturating_add(line.len() as u64).saturating_add(2)
    })
}

/// Appends one line, byte-stuffed: RFC 1939 §3 says a line that starts with the termination
/// octet is sent with another "." in front of it.
fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    if line.first() == Some(&b'.') {
        out.push(b'.');
    }
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// Appends the whole message followed by the terminating ".\r\n" (RETR, RFC 1939 §5).
pub(crate) fn push_message(out: &mut Vec<u8>, body: &[u8]) {
    for line in lines(body) {
        push_line(out, line);
    }
    out.extend_from_slice(b".\r\n");
}

/// Appends the header section, the blank line that separates it from the body, and at most
/// `body_lines` lines of the body, then ".\r\n" (TOP, RFC 1939 §7). A message without a blank
/// line is all header.
pub(crate) fn push_top(out: &mut Vec<u8>, body: &[u8], body_lines: usize) {
    let mut in_header = true;
    let mut sent = 0usize;
    for line in lines(body) {
        if in_header {
            push_line(out, line);
            in_header = !line.is_empty();
        } else if sent < body_lines {
            push_line(out, line);
            sent += 1;
        } else {
            break;
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_message(&mut out, body);
        out
    }

    fn top(body: &[u8], n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        push_top(&mut out, body, n);
        out
    }

    #[test]
    fn stuffs_leading_dots_and_terminates() {
        assert_eq!(
            message(b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend.\r\n"),
            b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend.\r\n.\r\n".to_vec()
        );
        assert_eq!(message(b"."), b"..\r\n.\r\n".to_vec());
    }

    #[test]
    fn bare_lf_and_missing_final_newline_become_crlf() {
        assert_eq!(message(b"a\nb\r\nc"), b"a\r\nb\r\nc\r\n.\r\n".to_vec());
        assert_eq!(wire_size(b"a\nb\r\nc"), 9);
        assert_eq!(message(b""), b".\r\n".to_vec());
        assert_eq!(wire_size(b""), 0);
        assert_eq!(message(b"\n"), b"\r\n.\r\n".to_vec());
    }

    #[test]
    fn wire_size_matches_crlf_storage() {
        let stored = b"Subject: hi\r\n\r\nbody\r\n";
        assert_eq!(wire_size(stored), stored.len() as u64);
    }

    #[test]
    fn top_sends_headers_blank_line_and_n_body_lines() {
        let stored = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        assert_eq!(top(stored, 0), b"A: 1\r\nB: 2\r\n\r\n.\r\n".to_vec());
        assert_eq!(
            top(stored, 2),
            b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n".to_vec()
        );
        assert_eq!(top(stored, 99), message(stored));
        assert_eq!(top(b"A: 1\nB: 2\n", 5), b"A: 1\r\nB: 2\r\n.\r\n".to_vec());
    }
}
