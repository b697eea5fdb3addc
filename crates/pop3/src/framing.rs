//! Splits the client's byte stream into command lines with a bounded buffer.
//!
//! It knows nothing of commands: it only finds line ends, strips them, and reports lines that
//! exceed the length limit as a single [`Frame::TooLong`] once their end arrives, so the session
//! answers each over-long line exactly once and stays in step with a pipelining client.
//! It does not hold more than `limit` octets of an unfinished line, whatever the client sends.

/// One line read from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete line without its CRLF (or bare LF) terminator.
    Line(Vec<u8>),
    /// A line longer than the limit; its content has been discarded.
    TooLong,
}

/// The unfinished tail of the client's input.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    pending: Vec<u8>,
    /// True while discarding the rest of a line that already exceeded the limit.
    overlong: bool,
}

impl LineReader {
    /// Takes the next line from `pending` and `input`, consuming what it uses from `input`.
    /// `limit` counts every octet of the line including its terminator. Returns `None` once
    /// `input` is exhausted without completing a line; the partial line is kept for later.
    pub(crate) fn next_line(&mut self, input: &mut &[u8], limit: usize) -> Option<Frame> {
        if input.is_empty() {
            return None;
        }
        let data: &[u8] = input;
        match data.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let (chunk, rest) = data.split_at(pos);
                // `rest` starts with the LF itself.
                *input = rest.get(1..).unwrap_or_default();
                if self.overlong || self.pending.len().saturating_add(pos + 1) > limit {
                    self.overlong = false;
                    self.pending.clear();
                    return Some(Frame::TooLong);
                }
                self.pending.extend_from_slice(chunk);
                let mut line = std::mem::take(&mut self.pending);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Frame::Line(line))
            }
            None => {
                if !self.overlong {
                    if self.pending.len().saturating_add(data.len()) >= limit {
                        // Even the shortest terminator would take the line past the limit.
                        self.overlong = true;
                        self.pending.clear();
                    } else {
                        self.pending.extend_from_slice(data);
                    }
                }
                *input = &[];
                None
            }
        }
    }

    /// Forgets any buffered input, as RFC 2595 §4 requires once STLS is accepted.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.overlong = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LineReader, mut input: &[u8], limit: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_line(&mut input, limit) {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn splits_crlf_and_bare_lf_lines() {
        let mut reader = LineReader::default();
        let frames = lines(&mut reader, b"STAT\r\nNOOP\nLI", 255);
        assert_eq!(
            frames,
            vec![Frame::Line(b"STAT".to_vec()), Frame::Line(b"NOOP".to_vec())]
        );
        let frames = lines(&mut reader, b"ST\r\n", 255);
        assert_eq!(frames, vec![Frame::Line(b"LIST".to_vec())]);
    }

    #[test]
    fn limit_counts_the_terminator() {
        let mut reader = LineReader::default();
        let mut exact = vec![b'a'; 8];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(
            lines(&mut reader, &exact, 10),
            vec![Frame::Line(vec![b'a'; 8])]
        );
        let mut over = vec![b'a'; 9];
        over.extend_from_slice(b"\r\n");
        assert_eq!(lines(&mut reader, &over, 10), vec![Frame::TooLong]);
    }

    #[test]
    fn overlong_line_fed_in_pieces_is_reported_once_and_not_buffered() {
        let mut reader = LineReader::default();
        for _ in 0..100 {
            assert!(lines(&mut reader, &[b'x'; 100], 255).is_empty());
            assert!(reader.pending.len() < 255);
        }
        let frames = lines(&mut reader, b"xx\r\nNOOP\r\n", 255);
        assert_eq!(frames, vec![Frame::TooLong, Frame::Line(b"NOOP".to_vec())]);
    }
}
