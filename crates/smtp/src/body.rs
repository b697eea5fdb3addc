//! Receivers for message content: DATA (dot-stuffed, ended by CRLF.CRLF, RFC 5321 §4.1.1.4 and
//! §4.5.2) and BDAT chunks (length-delimited, RFC 3030).
//!
//! Both feed a [`Body`], which enforces what this server accepts as message content:
//! - Only CRLF ends a line. A bare CR or a bare LF anywhere in the content marks the message as
//!   refused (`550 5.6.0`), and is never treated as a line ending, so `\n.\n`, `\r.\r` or
//!   `\n.\r\n` can never end DATA: that is what makes SMTP smuggling impossible here (RFC 5321
//!   §2.3.8 and §4.1.1.4 allow no other line ending). We refuse rather than repair because a
//!   repaired message could still smuggle at the next hop that reads bare LF as a line end.
//! - A text line is at most 1000 octets including CRLF (RFC 5321 §4.5.3.1.6); a longer one
//!   marks the message as refused (`554 5.6.0`), since relaying it would require rewriting it.
//! - The message is at most `max` octets after dot-unstuffing; past that it is refused
//!   (`552 5.3.4`, RFC 1870 §6).
//!
//! Once a message is refused its buffer is dropped and the rest of the content is only scanned
//! (so DATA still ends at the right place and the session stays in sync), never stored. The
//! buffer is therefore never larger than `max` octets, capacity included.
//!
//! This module does not decide what happens to an accepted message; that is the handler's job.

use crate::reply::Reply;

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF, so 998 before it.
const MAX_TEXT_LINE_CONTENT: usize = 998;

/// The first allocation for a message buffer; growth doubles from there, capped at `max`.
const INITIAL_CAPACITY: usize = 4096;

/// Message content being received, with the checks described in the module documentation.
#[derive(Debug)]
pub(crate) struct Body {
    buf: Vec<u8>,
    max: usize,
    /// Octets of content seen so far (after unstuffing), stored or not.
    size: usize,
    /// Octets of the current line before its CRLF, a stuffed dot included.
    line_len: usize,
    /// The previous octet was a CR whose LF has not arrived yet.
    pending_cr: bool,
    bare_line_ending: bool,
    line_too_long: bool,
    too_big: bool,
}

impl Body {
    pub(crate) fn new(max: usize) -> Body {
        Body {
            buf: Vec::new(),
            max,
            size: 0,
            line_len: 0,
            pending_cr: false,
            bare_line_ending: false,
            line_too_long: false,
            too_big: false,
        }
    }

    /// Octets of content received so far, stored or not.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Bytes currently held, for the bounded-buffer tests.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn refused(&self) -> bool {
        self.bare_line_ending || self.line_too_long || self.too_big
    }

    /// Takes one octet of content. Returns true when it completed a CRLF line ending.
    pub(crate) fn push(&mut self, octet: u8) -> bool {
        if self.pending_cr {
            self.pending_cr = false;
            if octet == b'\n' {
                self.store(b'\r');
                self.store(b'\n');
                self.line_len = 0;
                return true;
            }
            // A CR not followed by LF is a bare CR: it counts as line content, not a line end.
            self.mark_bare_line_ending();
            self.count_line_octet();
        }
        match octet {
            b'\r' => self.pending_cr = true,
            // A bare LF is refused and, crucially, is not a line ending: a following "." is
            // not at the start of a line, so "\n.\n" or "\n.\r\n" cannot end DATA.
            b'\n' => {
                self.mark_bare_line_ending();
                self.count_line_octet();
            }
            _ => {
                self.count_line_octet();
                self.store(octet);
            }
        }
        false
    }

    /// Counts a stuffed dot, which is part of the line on the wire but not of the message.
    fn count_stuffed_dot(&mut self) {
        self.count_line_octet();
    }

    fn count_line_octet(&mut self) {
        self.line_len = self.line_len.saturating_add(1);
        if self.line_len > MAX_TEXT_LINE_CONTENT {
            self.line_too_long = true;
            self.drop_buffer();
        }
    }

    fn mark_bare_line_ending(&mut self) {
        self.bare_line_ending = true;
        self.drop_buffer();
    }

    fn drop_buffer(&mut self) {
        self.buf = Vec::new();
    }

    fn store(&mut self, octet: u8) {
        self.size = self.size.saturating_add(1);
        if self.size > self.max {
            self.too_big = true;
            self.drop_buffer();
        }
        if self.refused() {
            return;
        }
        if self.buf.len() == self.buf.capacity() {
            // Grow by hand so that capacity never exceeds `max`: Vec's own doubling could
            // reach almost twice the limit. `size <= max` here, so `len < max` and `want > len`.
            let want = self
                .buf
                .capacity()
                .saturating_mul(2)
                .max(INITIAL_CAPACITY)
                .min(self.max);
            self.buf.reserve_exact(want.saturating_sub(self.buf.len()));
        }
        self.buf.push(octet);
    }

    /// The reply refusing this message, if it has been refused so far.
    pub(crate) fn refusal(&self) -> Option<Reply> {
        if self.bare_line_ending {
            Some(Reply::new(
                550,
                (5, 6, 0),
                "message refused: bare CR or LF found, lines must end with CRLF",
            ))
        } else if self.too_big {
            Some(Reply::new(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size",
            ))
        } else if self.line_too_long {
            Some(Reply::new(
                554,
                (5, 6, 0),
                "message refused: a line is longer than 1000 octets",
            ))
        } else {
            None
        }
    }

    /// Ends the message: its content, or the reply refusing it. A CR still waiting for its LF
    /// at the very end (possible only with BDAT) is a bare CR.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, Reply> {
        if self.pending_cr {
            self.mark_bare_line_ending();
        }
        match self.refusal() {
            Some(reply) => Err(reply),
            None => Ok(self.buf),
        }
    }
}

/// Receives the content after `354`, undoing dot-stuffing until the line that is exactly ".".
#[derive(Debug)]
pub(crate) struct DataReceiver {
    body: Body,
    /// The next octet starts a line: the previous ones were CRLF (or nothing yet).
    at_line_start: bool,
    /// The current line began with a dot, which was removed (RFC 5321 §4.5.2).
    dot_line: bool,
}

impl DataReceiver {
    pub(crate) fn new(max: usize) -> DataReceiver {
        DataReceiver {
            body: Body::new(max),
            at_line_start: true,
            dot_line: false,
        }
    }

    /// Consumes input up to and including the end-of-data line. Returns how many octets were
    /// used and whether the end was reached; unused octets belong to the next command.
    pub(crate) fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        for (index, &octet) in input.iter().enumerate() {
            if self.at_line_start {
                self.at_line_start = false;
                self.dot_line = octet == b'.';
                if self.dot_line {
                    // RFC 5321 §4.5.2: a leading dot is removed; a line that was only that dot
                    // (followed by CRLF) ends the data.
                    self.body.count_stuffed_dot();
                    continue;
                }
            }
            if octet == b'\n' && self.body.pending_cr && self.dot_line && self.body.line_len == 1 {
                // The CR of the end-of-data line belongs to the terminator, not the message.
                self.body.pending_cr = false;
                return (index + 1, true);
            }
            if self.body.push(octet) {
                self.at_line_start = true;
            }
        }
        (input.len(), false)
    }

    pub(crate) fn into_body(self) -> Body {
        self.body
    }

    #[cfg(test)]
    pub(crate) fn body(&self) -> &Body {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::{Body, DataReceiver};

    /// Runs DATA content through a receiver in one piece and in single octets; both must agree.
    fn receive(input: &[u8], max: usize) -> Option<(usize, Result<Vec<u8>, u16>)> {
        let whole = {
            let mut rx = DataReceiver::new(max);
            let (used, done) = rx.ingest(input);
            done.then(|| {
                let result = rx.into_body().finish().map_err(|reply| reply.code);
                (used, result)
            })
        };
        let mut rx = DataReceiver::new(max);
        let mut bytewise = None;
        for (index, octet) in input.iter().enumerate() {
            let (used, done) = rx.ingest(std::slice::from_ref(octet));
            assert_eq!(used, 1);
            if done {
                let body = std::mem::replace(&mut rx, DataReceiver::new(max)).into_body();
                bytewise = Some((index + 1, body.finish().map_err(|reply| reply.code)));
                break;
            }
        }
        assert_eq!(whole, bytewise, "split input changed the result");
        whole
    }

    #[test]
    fn dot_unstuffing_and_end_of_data() {
        let (used, message) = receive(b"a\r\n..b\r\n.c\r\n..\r\n.\r\nNEXT", 100).unwrap();
        assert_eq!(used, 19);
        assert_eq!(message.unwrap(), b"a\r\n.b\r\nc\r\n.\r\n");
    }

    #[test]
    fn empty_message_ends_at_once() {
        assert_eq!(receive(b".\r\n", 10), Some((3, Ok(Vec::new()))));
    }

    #[test]
    fn smuggling_sequences_never_end_data() {
        for attack in [
            &b"x\n.\nMAIL FROM:<a@b>\r\n"[..],
            b"x\r.\rMAIL FROM:<a@b>\r\n",
            b"x\n.\r\nMAIL FROM:<a@b>\r\n",
            b"x\r\n.\nMAIL FROM:<a@b>\r\n",
            b"x\r\n.\r\rMAIL FROM:<a@b>\r\n",
            b"x\r.\r\nMAIL FROM:<a@b>\r\n",
        ] {
            assert_eq!(receive(attack, 1000), None, "{attack:?} ended DATA");
            let mut full = attack.to_vec();
            full.extend_from_slice(b".\r\n");
            let (used, result) = receive(&full, 1000).unwrap();
            assert_eq!(used, full.len());
            assert_eq!(result, Err(550), "{attack:?} was not refused");
        }
    }

    #[test]
    fn oversize_message_is_scanned_to_the_end_but_not_stored() {
        let mut rx = DataReceiver::new(10);
        let (_, done) = rx.ingest(&[b'x'; 500]);
        assert!(!done);
        assert_eq!(rx.body().capacity(), 0);
        let (used, done) = rx.ingest(b"\r\n.\r\nQUIT\r\n");
        assert_eq!((used, done), (5, true));
        assert_eq!(rx.into_body().finish().unwrap_err().code, 552);
    }

    #[test]
    fn capacity_never_exceeds_the_limit() {
        let mut rx = DataReceiver::new(5000);
        let line = [b'y'; 98];
        for _ in 0..50 {
            rx.ingest(&line);
            rx.ingest(b"\r\n");
        }
        assert_eq!(rx.body().size(), 5000);
        assert!(rx.body().capacity() <= 5000);
        rx.ingest(b"z");
        assert_eq!(rx.body().capacity(), 0);
    }

    #[test]
    fn line_of_1000_octets_is_accepted_and_1001_refused() {
        let mut ok = vec![b'a'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(receive(&ok, 10_000).unwrap().1.is_ok());
        let mut stuffed = vec![b'.'; 998];
        stuffed.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(receive(&stuffed, 10_000).unwrap().1.unwrap().len(), 999);
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(receive(&long, 10_000).unwrap().1, Err(554));
    }

    #[test]
    fn bdat_body_refuses_a_trailing_cr() {
        let mut body = Body::new(100);
        for &octet in b"hello\r" {
            body.push(octet);
        }
        assert_eq!(body.finish().unwrap_err().code, 550);
    }
}
