//! Splits the client's byte stream into commands: a command is one line, or a line that ends
//! in a literal announcement (`{n+}` or `{n}`, RFC 5804 §4) followed by n octets and the rest
//! of the line, possibly with more literals.
//!
//! It knows nothing of command names or arguments; it only frames. Limits hold whatever the
//! client sends: a line fragment longer than `max_line` and a literal larger than
//! `max_literal` are read past (the literal's octets are counted off, never buffered) and the
//! whole command is reported once, as an error, when it ends, so the session stays in step.
//! ManageSieve sends no continuation for literals: `{n}` from an old client is taken like
//! `{n+}`.

/// A piece of a command: the text of a line (without CRLF), or the octets of a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Text(Vec<u8>),
    Literal(Vec<u8>),
}

/// One command read from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Command(Vec<Part>),
    /// A line fragment was longer than the limit; the command was discarded.
    TooLong,
    /// A literal was larger than the limit (its size is given); the command was discarded.
    LiteralTooBig(u64),
    /// More literals in one command than any command takes.
    TooManyParts,
}

/// Literals one command may carry (PUTSCRIPT has two strings; AUTHENTICATE two).
const MAX_LITERALS: usize = 4;

/// The tail kept of an overlong line, to see whether it ends in a literal announcement.
const TAIL: usize = 24;

#[derive(Debug)]
enum State {
    /// Reading a line.
    Line,
    /// Reading the octets of an accepted literal.
    Literal(usize),
    /// Counting off the octets of a literal that is not kept.
    Skip(u64),
}

#[derive(Debug)]
pub(crate) struct Framer {
    max_line: usize,
    max_literal: usize,
    buf: Vec<u8>,
    parts: Vec<Part>,
    state: State,
    /// The current line is over the limit: only its tail is kept.
    overlong: bool,
    /// The command under way has already failed; the rest of it is read and dropped.
    failed: Option<Frame>,
}

impl Framer {
    pub(crate) fn new(max_line: usize, max_literal: usize) -> Self {
        Self {
            max_line,
            max_literal,
            buf: Vec::new(),
            parts: Vec::new(),
            state: State::Line,
            overlong: false,
            failed: None,
        }
    }

    pub(crate) fn push(&mut self, input: &[u8]) {
        match &mut self.state {
            State::Skip(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                *left -= n as u64;
                self.buf.extend_from_slice(&input[n..]);
                if *left == 0 {
                    self.state = State::Line;
                }
            }
            _ => self.buf.extend_from_slice(input),
        }
        if matches!(self.state, State::Line) {
            self.trim_overlong();
        }
    }

    /// Forgets everything buffered (after STARTTLS, RFC 5804 §2.2: nothing sent before the
    /// handshake may be read as if it came through TLS).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.parts.clear();
        self.state = State::Line;
        self.overlong = false;
        self.failed = None;
    }

    /// Octets held: unread input and the parts of the command under way.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
            + self
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) | Part::Literal(t) => t.len(),
                })
                .sum::<usize>()
    }

    /// True while the octets of a refused literal are being counted off.
    #[cfg(test)]
    pub(crate) fn skipping(&self) -> bool {
        matches!(self.state, State::Skip(_))
    }

    /// While a line has no end yet, keeps no more of it than the limit allows.
    fn trim_overlong(&mut self) {
        if self.buf.contains(&b'\n') {
            return;
        }
        if self.buf.len() > self.max_line {
            self.overlong = true;
        }
        if self.overlong && self.buf.len() > TAIL {
            let cut = self.buf.len() - TAIL;
            self.buf.drain(..cut);
        }
    }

    /// The next complete command, if the buffered input holds one.
    pub(crate) fn next(&mut self) -> Option<Frame> {
        loop {
            match self.state {
                State::Skip(_) => return None,
                State::Literal(n) => {
                    if self.buf.len() < n {
                        return None;
                    }
                    let data: Vec<u8> = self.buf.drain(..n).collect();
                    if self.failed.is_none() {
                        self.parts.push(Part::Literal(data));
                    }
                    self.state = State::Line;
                }
                State::Line => {
                    let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
                        self.trim_overlong();
                        return None;
                    };
                    let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if std::mem::take(&mut self.overlong) || line.len() + 2 > self.max_line {
                        self.failed.get_or_insert(Frame::TooLong);
                    }
                    let literal = literal_size(&line);
                    if self.failed.is_none() {
                        self.parts.push(Part::Text(line));
                    }
                    match literal {
                        None => {
                            let parts = std::mem::take(&mut self.parts);
                            return Some(match self.failed.take() {
                                Some(f) => f,
                                None => Frame::Command(parts),
                            });
                        }
                        Some(size) => {
                            let literals = self
                                .parts
                                .iter()
                                .filter(|p| matches!(p, Part::Text(_)))
                                .count();
                            if self.failed.is_none() && literals > MAX_LITERALS {
                                self.failed = Some(Frame::TooManyParts);
                            }
                            if self.failed.is_none() && size > self.max_literal as u64 {
                                self.failed = Some(Frame::LiteralTooBig(size));
                            }
                            if self.failed.is_some() {
                                self.parts.clear();
                                let n = size.min(self.buf.len() as u64) as usize;
                                self.buf.drain(..n);
                                let left = size - n as u64;
                                if left > 0 {
                                    self.state = State::Skip(left);
                                    return None;
                                }
                            } else {
                                self.state = State::Literal(size as usize);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The size announced by `{n+}` or `{n}` at the end of a line. A size too large for u64 is
/// reported as u64::MAX, which no limit allows.
pub(crate) fn literal_size(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"}")?;
    let body = body.strip_suffix(b"+").unwrap_or(body);
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    if digits.is_empty() || digits.len() > 40 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(u64::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer, input: &[u8]) -> Vec<Frame> {
        f.push(input);
        std::iter::from_fn(|| f.next()).collect()
    }

    fn text(s: &str) -> Part {
        Part::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_and_literals() {
        let mut f = Framer::new(100, 100);
        let got = frames(
            &mut f,
            b"NOOP\r\nPUTSCRIPT \"a\" {5+}\r\nkeep;\r\nCHECKSCRIPT {2}\nab\n",
        );
        assert_eq!(
            got,
            [
                Frame::Command(vec![text("NOOP")]),
                Frame::Command(vec![
                    text("PUTSCRIPT \"a\" {5+}"),
                    Part::Literal(b"keep;".to_vec()),
                    text(""),
                ]),
                Frame::Command(vec![
                    text("CHECKSCRIPT {2}"),
                    Part::Literal(b"ab".to_vec()),
                    text(""),
                ]),
            ]
        );
    }

    #[test]
    fn byte_by_byte_gives_the_same_frames() {
        let input = b"PUTSCRIPT {3+}\r\nabc {4+}\r\nx\r\ny\r\nLOGOUT\r\n";
        let mut whole = Framer::new(100, 100);
        let want = frames(&mut whole, input);
        let mut f = Framer::new(100, 100);
        let mut got = Vec::new();
        for b in input {
            got.extend(frames(&mut f, std::slice::from_ref(b)));
        }
        assert_eq!(got, want);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn oversized_literal_is_skipped_not_buffered() {
        let mut f = Framer::new(100, 10);
        assert!(frames(&mut f, b"PUTSCRIPT \"a\" {1000+}\r\n").is_empty());
        for _ in 0..10 {
            assert!(frames(&mut f, &[b'x'; 99]).is_empty());
            assert!(f.buf.len() < 100);
        }
        let got = frames(&mut f, b"xxxxxxxxxx\r\nNOOP\r\n");
        assert_eq!(
            got,
            [
                Frame::LiteralTooBig(1000),
                Frame::Command(vec![text("NOOP")])
            ]
        );
    }

    #[test]
    fn overlong_line_is_reported_once_and_bounded() {
        let mut f = Framer::new(20, 100);
        for _ in 0..50 {
            assert!(frames(&mut f, &[b'a'; 30]).is_empty());
            assert!(f.buf.len() <= 30 + TAIL);
        }
        let got = frames(&mut f, b"\r\nNOOP\r\n");
        assert_eq!(got, [Frame::TooLong, Frame::Command(vec![text("NOOP")])]);
        // An overlong line ending in a literal announcement: the literal is read past too.
        let mut long = vec![b'a'; 40];
        long.extend_from_slice(b" {3+}\r\nabc\r\nNOOP\r\n");
        assert_eq!(
            frames(&mut f, &long),
            [Frame::TooLong, Frame::Command(vec![text("NOOP")])]
        );
    }

    #[test]
    fn literal_sizes() {
        assert_eq!(literal_size(b"X {12+}"), Some(12));
        assert_eq!(literal_size(b"X {12}"), Some(12));
        assert_eq!(literal_size(b"X {}"), None);
        assert_eq!(literal_size(b"X {1a}"), None);
        assert_eq!(literal_size(b"X \"{1}\""), None);
        assert_eq!(
            literal_size(b"{99999999999999999999999999}"),
            Some(u64::MAX)
        );
    }
}
