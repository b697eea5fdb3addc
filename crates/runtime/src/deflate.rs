//! Raw DEFLATE for both directions of a connection (IMAP COMPRESS=DEFLATE, RFC 4978), used by
//! `net::drive` once a session asks for it.
//!
//! Every write is compressed and ended with a sync flush (RFC 4978 §4: the peer must be able
//! to read each response without waiting for more), so IDLE updates and continuation requests
//! reach the client at once. Inflating is bounded: [`Deflate::inflate`] produces at most
//! `limit` bytes per call and reports how much input it used, so a small compressed input
//! cannot expand into an unbounded buffer before the session's own limits see it.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The compression state of one connection.
pub struct Deflate {
    compress: Compress,
    decompress: Decompress,
}

impl Default for Deflate {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflate {
    pub fn new() -> Self {
        Self {
            // `false`: raw DEFLATE, no zlib header (RFC 4978 §3, RFC 1951).
            compress: Compress::new(Compression::default(), false),
            decompress: Decompress::new(false),
        }
    }

    /// Compresses `data` and sync-flushes, so the output is a complete unit the peer can
    /// inflate on its own.
    pub fn deflate(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(io::Error::other)?;
            let used = usize::try_from(self.compress.total_in() - before).unwrap_or(input.len());
            input = &input[used..];
            // Done when all input is taken and the flush fit (space was left over).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Inflates from `input`, producing at most `limit` bytes. Returns them and the number
    /// of input bytes used; call again with the rest of the input, and with empty input while
    /// the output comes back full (the inflater may hold more).
    pub fn inflate(&mut self, input: &[u8], limit: usize) -> io::Result<(Vec<u8>, usize)> {
        let mut out = Vec::with_capacity(limit);
        let before = self.decompress.total_in();
        let status = self
            .decompress
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if status == Status::StreamEnd {
            // A final block: the client may not end the stream while the connection lives.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "DEFLATE stream ended",
            ));
        }
        let used = usize::try_from(self.decompress.total_in() - before).unwrap_or(input.len());
        Ok((out, used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut server = Deflate::new();
        let mut client = Deflate::new();
        let text = b"* 1 FETCH (FLAGS (\\Seen))\r\n".repeat(200);
        let wire = server.deflate(&text).unwrap();
        assert!(wire.len() < text.len() / 4);
        // Each write is flushed: the client inflates it fully without more input.
        let mut plain = Vec::new();
        let mut input = &wire[..];
        loop {
            let (chunk, used) = client.inflate(input, 100).unwrap();
            input = &input[used..];
            let full = chunk.len() == 100;
            plain.extend(chunk);
            if input.is_empty() && !full {
                break;
            }
        }
        assert_eq!(plain, text);
        // A second write continues the same stream.
        let wire = server.deflate(b"a OK done\r\n").unwrap();
        let (chunk, used) = client.inflate(&wire, 1000).unwrap();
        assert_eq!(
            (chunk.as_slice(), used),
            (&b"a OK done\r\n"[..], wire.len())
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Deflate::new();
        assert!(d.inflate(&[0xff; 64], 1024).is_err());
    }
}
