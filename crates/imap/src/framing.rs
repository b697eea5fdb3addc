//! Splits the client's byte stream into complete IMAP commands (lines plus literals).
//!
//! IMAP commands may carry literals (`{n}` / `{n+}`, RFC 9051 §4.3, RFC 7888), so a command is
//! not a line. The framer finds command boundaries *before* any parsing, which keeps malformed
//! input from desynchronising the stream (literal bytes are never read as commands) and bounds
//! memory: a line longer than [`MAX_LINE`] or a literal larger than the configured limit is
//! discarded while it streams past instead of being buffered. It does not parse commands; the
//! session hands complete messages to imap-codec.

/// The longest command line we buffer, CRLF included. RFC 9051 §4 leaves this to the server
/// (RFC 7162 §4 recommends at least 8192 octets); 64 KiB fits any sequence set a client builds.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a command was thrown away instead of parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A command line exceeded [`MAX_LINE`].
    LineTooLong,
    /// A literal exceeded the configured maximum.
    LiteralTooBig,
}

/// What the framer found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete command: every line and literal, ready to parse.
    Command(Vec<u8>),
    /// The client announced a synchronizing literal and waits for "+" before sending it
    /// (RFC 9051 §7.5). The bytes so far are returned so the session can read the tag.
    NeedContinuation(Vec<u8>),
    /// A command that was dropped; `head` holds its first bytes, for the tag.
    Rejected { head: Vec<u8>, reason: Rejection },
}

#[derive(Debug)]
enum State {
    /// Reading a line; `skipping` is set while we discard the rest of an over-long line.
    Line { skipping: bool },
    /// Reading (or discarding) literal data.
    Literal { remaining: u64, discard: bool },
}

/// The buffer capacity kept between commands; more is given back (see [`Framer::next`]).
const KEPT_CAPACITY: usize = 1024;

/// Incremental command framer. Feed bytes with [`Framer::push`], then call [`Framer::next`]
/// until it returns `None`.
#[derive(Debug)]
pub struct Framer {
    pending: Vec<u8>,
    message: Vec<u8>,
    state: State,
    rejection: Option<Rejection>,
    max_literal: u32,
}

impl Framer {
    pub fn new(max_literal: u32) -> Self {
        Self {
            pending: Vec::new(),
            message: Vec::new(),
            state: State::Line { skipping: false },
            rejection: None,
            max_literal,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Drops everything buffered, e.g. plaintext pipelined after STARTTLS (RFC 9051 §6.2.1).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.message.clear();
        self.state = State::Line { skipping: false };
        self.rejection = None;
    }

    /// Hands back the input not yet framed (the compressed bytes a client pipelined after
    /// COMPRESS, RFC 4978) and forgets it.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Takes the next raw line (up to and including LF) from the pending input, without any
    /// framing logic: used for AUTHENTICATE responses (RFC 9051 §6.2.2). Over-long lines are
    /// returned truncated so the caller can refuse them.
    pub fn next_raw_line(&mut self) -> Option<Vec<u8>> {
        match self.pending.iter().position(|&b| b == b'\n') {
            Some(pos) => Some(self.pending.drain(..=pos).collect()),
            None if self.pending.len() > MAX_LINE => {
                // Keep the bound: hand back what we have, the session rejects it.
                Some(std::mem::take(&mut self.pending))
            }
            None => None,
        }
    }

    fn finish(&mut self) -> Frame {
        let message = std::mem::take(&mut self.message);
        self.state = State::Line { skipping: false };
        match self.rejection.take() {
            Some(reason) => Frame::Rejected {
                head: message,
                reason,
            },
            None => Frame::Command(message),
        }
    }

    /// The first bytes of the current message, enough to carry its tag.
    fn head(&self) -> Vec<u8> {
        self.message.iter().take(128).copied().collect()
    }

    pub fn next(&mut self) -> Option<Frame> {
        let frame = self.next_frame();
        if frame.is_none() {
            self.give_back();
        }
        frame
    }

    /// Returns the memory of drained input once nothing is pending: after an APPEND the
    /// buffer would otherwise keep the message's size for as long as the session lives, and
    /// an idle session should hold next to nothing.
    fn give_back(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > KEPT_CAPACITY {
            self.pending = Vec::new();
        }
        if self.message.is_empty() && self.message.capacity() > KEPT_CAPACITY {
            self.message = Vec::new();
        }
    }

    fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.state {
                State::Literal { remaining, discard } => {
                    let available = self.pending.len() as u64;
                    let take = remaining.min(available) as usize;
                    if !discard {
                        self.message.extend_from_slice(&self.pending[..take]);
                    }
                    self.pending.drain(..take);
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::Line { skipping: false }
                    } else {
                        State::Literal { remaining, discard }
                    };
                    if remaining > 0 {
                        return None;
                    }
                }
                State::Line { skipping } => {
                    let Some(pos) = self.pending.iter().position(|&b| b == b'\n') else {
                        if skipping {
                            self.pending.clear();
                        } else if self.pending.len() > MAX_LINE {
                            // Keep the start for the tag, drop the rest as it streams in.
                            if self.rejection.is_none() && self.message.is_empty() {
                                self.message.extend(self.pending.iter().take(128).copied());
                            }
                            self.rejection = Some(Rejection::LineTooLong);
                            self.pending.clear();
                            self.state = State::Line { skipping: true };
                        }
                        return None;
                    };
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    if skipping {
                        // The tail of an over-long line: its literal announcement (if any) is
                        // still honoured below so literal bytes are never read as commands.
                    } else if line.len() > MAX_LINE {
                        if self.message.is_empty() {
                            self.message.extend(line.iter().take(128).copied());
                        }
                        self.rejection = Some(Rejection::LineTooLong);
                    } else if self.rejection.is_none() {
                        self.message.extend_from_slice(&line);
                    }
                    match literal_announcement(&line) {
                        None => return Some(self.finish()),
                        Some((length, sync)) => {
                            let too_big = length > u64::from(self.max_literal);
                            if too_big {
                                self.rejection = Some(Rejection::LiteralTooBig);
                            }
                            if sync && self.rejection.is_some() {
                                // RFC 9051 §7.5: the server may refuse a synchronizing
                                // literal with a tagged NO/BAD instead of "+"; the client then
                                // does not send it, so the command ends here.
                                let head = self.head();
                                let reason =
                                    self.rejection.take().unwrap_or(Rejection::LiteralTooBig);
                                self.message.clear();
                                self.state = State::Line { skipping: false };
                                return Some(Frame::Rejected { head, reason });
                            }
                            self.state = State::Literal {
                                remaining: length,
                                discard: self.rejection.is_some(),
                            };
                            if sync {
                                return Some(Frame::NeedContinuation(self.head()));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Recognises a literal announcement `{n}` or `{n+}` at the end of a line (RFC 9051 §4.3,
/// RFC 7888 §3). Returns the length and whether it is synchronizing.
fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let (line, sync) = match line.strip_suffix(b"+") {
        Some(rest) => (rest, false),
        None => (line, true),
    };
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    Some((length, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut Framer) -> Vec<Frame> {
        std::iter::from_fn(|| framer.next()).collect()
    }

    #[test]
    fn input_memory_is_given_back_between_commands() {
        let mut f = Framer::new(1 << 20);
        let body = vec![b'x'; 100_000];
        f.push(b"a APPEND INBOX {100000+}\r\n");
        f.push(&body[..50_000]);
        assert_eq!(frames(&mut f), vec![]);
        assert!(
            f.message.capacity() >= 50_000,
            "a literal under way is kept"
        );
        f.push(&body[50_000..]);
        f.push(b"\r\nb NO");
        let got = frames(&mut f);
        assert!(matches!(&got[..], [Frame::Command(c)] if c.len() > 100_000));
        assert!(
            f.pending.capacity() > KEPT_CAPACITY,
            "a partial command is kept"
        );
        f.push(b"OP\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Command(b"b NOOP\r\n".to_vec())]);
        assert!(f.pending.capacity() <= KEPT_CAPACITY);
        assert!(f.message.capacity() <= KEPT_CAPACITY);
    }

    #[test]
    fn splits_pipelined_lines() {
        let mut f = Framer::new(100);
        f.push(b"a NOOP\r\nb NOOP\r\nc NO");
        assert_eq!(
            frames(&mut f),
            vec![
                Frame::Command(b"a NOOP\r\n".to_vec()),
                Frame::Command(b"b NOOP\r\n".to_vec())
            ]
        );
        f.push(b"OP\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Command(b"c NOOP\r\n".to_vec())]);
    }

    #[test]
    fn synchronizing_literal_waits_for_continuation() {
        let mut f = Framer::new(100);
        f.push(b"a LOGIN {3}\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::NeedContinuation(b"a LOGIN {3}\r\n".to_vec())]
        );
        f.push(b"bob pw\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Command(b"a LOGIN {3}\r\nbob pw\r\n".to_vec())]
        );
    }

    #[test]
    fn non_synchronizing_literal_flows_through() {
        let mut f = Framer::new(100);
        f.push(b"a LOGIN {3+}\r\nbob {2+}\r\npw\r\n");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Command(
                b"a LOGIN {3+}\r\nbob {2+}\r\npw\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn oversized_literals_are_refused_or_discarded() {
        let mut f = Framer::new(4);
        f.push(b"a APPEND x {5}\r\nb NOOP\r\n");
        let got = frames(&mut f);
        assert!(matches!(
            got[0],
            Frame::Rejected {
                reason: Rejection::LiteralTooBig,
                ..
            }
        ));
        assert_eq!(got[1], Frame::Command(b"b NOOP\r\n".to_vec()));

        // A non-synchronizing literal is already on the wire: it is skipped, not parsed.
        f.push(b"c APPEND x {5+}\r\nd NOO\r\ne NOOP\r\n");
        let got = frames(&mut f);
        assert!(matches!(
            &got[0],
            Frame::Rejected { head, reason: Rejection::LiteralTooBig } if head.starts_with(b"c APPEND")
        ));
        assert_eq!(got[1], Frame::Command(b"e NOOP\r\n".to_vec()));
    }

    #[test]
    fn over_long_line_is_rejected_without_buffering() {
        let mut f = Framer::new(4);
        f.push(b"a ");
        for _ in 0..100 {
            f.push(&[b'x'; 1024]);
            assert!(f.next().is_none());
            assert!(f.pending.len() <= MAX_LINE + 1024);
        }
        f.push(b"\r\nb NOOP\r\n");
        let got = frames(&mut f);
        assert!(matches!(
            &got[0],
            Frame::Rejected { head, reason: Rejection::LineTooLong } if head.starts_with(b"a x")
        ));
        assert_eq!(got[1], Frame::Command(b"b NOOP\r\n".to_vec()));
    }

    #[test]
    fn announcement_parsing() {
        assert_eq!(literal_announcement(b"a {12}\r\n"), Some((12, true)));
        assert_eq!(literal_announcement(b"a {0+}\n"), Some((0, false)));
        assert_eq!(literal_announcement(b"a {x}\r\n"), None);
        assert_eq!(literal_announcement(b"a {}\r\n"), None);
        assert_eq!(literal_announcement(b"a \"{3}\"\r\n"), None);
    }
}
