//! What IMAP reads without reading whole messages: each message's header section, kept beside
//! its content (`messages.header`, migration 0012), and a mailbox's changes since a
//! mod-sequence, so that a session with a big mailbox selected brings its view up to date by
//! reading only what changed.
//!
//! Invariant: `header`, when not NULL, is exactly [`header_section`] of `content`. Every path
//! that writes `content` writes `header` in the same statement (delivery, APPEND, COPY/MOVE
//! copy both columns). Readers treat NULL as "take it from `content`".

use sqlx::Row;

use crate::mailbox::MessageMeta;
use crate::{Error, Result, Store, to_u32, to_u64, validate, with_pool};

/// The largest header section kept in `messages.header`; a larger one (a message that is all
/// header, or a pathological one) is read from the content when asked for. Real header
/// sections are a few kB; the bound keeps a read-ahead of many of them small.
pub const MAX_KEPT_HEADER: usize = 64 * 1024;

/// The header section of `content`: every line up to and including the first empty one (`\r\n`
/// or a bare `\n`), as IMAP's BODY[HEADER] has it (RFC 9051 §6.4.5). A message without an
/// empty line is all header.
pub fn header_section(content: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < content.len() {
        let end = memchr(b'\n', &content[start..]).map_or(content.len(), |p| start + p + 1);
        let line = &content[start..end];
        if line == b"\r\n" || line == b"\n" {
            return &content[..end];
        }
        start = end;
    }
    content
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// What `messages.header` keeps for `content`: its header section when that ends in an empty
/// line and is at most [`MAX_KEPT_HEADER`] bytes.
pub(crate) fn kept_header(content: &[u8]) -> Option<&[u8]> {
    let header = header_section(content);
    let ends_in_empty_line = header.ends_with(b"\n\n") || header.ends_with(b"\n\r\n");
    let empty_header = header == b"\r\n" || header == b"\n";
    ((ends_in_empty_line || empty_header) && header.len() <= MAX_KEPT_HEADER).then_some(header)
}

/// A mailbox's changes after a mod-sequence, all read at one instant (one statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxChanges {
    pub uid_validity: u32,
    /// The mailbox's next UID at that instant.
    pub uid_next: u32,
    /// The mailbox's highest mod-sequence at that instant: the `since` of the next call.
    pub highest_modseq: u64,
    /// The messages whose mod-sequence is above `since` (arrived or changed since), by UID;
    /// every message when `since` is 0.
    pub messages: Vec<MessageMeta>,
    /// The UIDs expunged at a mod-sequence above `since`, ascending; empty when `since` is 0.
    /// Every path that removes a message from a mailbox that stays records its UID (EXPUNGE,
    /// MOVE, gRPC removal: `expunged.rs`), so these are all the removals.
    pub vanished: Vec<u32>,
}

/// The header of a row with columns `header`, and `content` where `header` is NULL.
macro_rules! header_of {
    ($row:expr) => {{
        let header: Option<Vec<u8>> = $row.try_get("header")?;
        match header {
            Some(header) => header,
            None => {
                let content: Option<Vec<u8>> = $row.try_get("content")?;
                header_section(&content.unwrap_or_default()).to_vec()
            }
        }
    }};
}

impl Store {
    /// The header section of message `uid` of mailbox `mailbox_id` ([`header_section`] of its
    /// content); `None` when there is no such message.
    pub async fn message_header(&self, mailbox_id: i64, uid: u32) -> Result<Option<Vec<u8>>> {
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT header, CASE WHEN header IS NULL THEN content END AS content \
                 FROM messages WHERE mailbox_id = $1 AND uid = $2",
            )
            .bind(mailbox_id)
            .bind(i64::from(uid))
            .fetch_optional(pool)
            .await?;
            match row {
                Some(row) => Ok(Some(header_of!(row))),
                None => Ok(None),
            }
        })
    }

    /// The header sections of messages with UID `from_uid` and above, ascending, at most
    /// `limit` of them, for reading ahead through a mailbox in one query instead of one per
    /// message. Kept header sections are at most [`MAX_KEPT_HEADER`] bytes each, which bounds
    /// the answer; a message whose header section is not kept is read on its own.
    pub async fn message_headers_from(
        &self,
        mailbox_id: i64,
        from_uid: u32,
        limit: u32,
    ) -> Result<Vec<(u32, Vec<u8>)>> {
        let rows: Vec<(u32, Option<Vec<u8>>)> = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT uid, header FROM messages WHERE mailbox_id = $1 AND uid >= $2 \
                 ORDER BY uid LIMIT $3",
            )
            .bind(mailbox_id)
            .bind(i64::from(from_uid))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok((to_u32(row.try_get("uid")?, "uid")?, row.try_get("header")?)))
                .collect::<Result<_>>()?
        });
        let mut out = Vec::with_capacity(rows.len());
        for (uid, header) in rows {
            let header = match header {
                Some(header) => header,
                None => match self.message_header(mailbox_id, uid).await? {
                    Some(header) => header,
                    // Expunged between the two reads.
                    None => continue,
                },
            };
            out.push((uid, header));
        }
        Ok(out)
    }

    /// What changed in mailbox `mailbox_id` after mod-sequence `since` (everything when 0),
    /// read in one statement so that the parts agree. Mod-sequences are handed out under the
    /// mailbox row's lock and so become visible in order: nothing committed later can carry a
    /// mod-sequence at or below the returned `highest_modseq`. `NotFound` when the mailbox is
    /// gone.
    pub async fn mailbox_changes(&self, mailbox_id: i64, since: u64) -> Result<MailboxChanges> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT CAST(0 AS BIGINT) AS kind, uid, flags, size, internal_date, modseq \
                   FROM messages WHERE mailbox_id = $1 AND modseq > $2 \
                 UNION ALL \
                 SELECT CAST(1 AS BIGINT), uid, '', 0, 0, modseq \
                   FROM expunged WHERE mailbox_id = $1 AND modseq > $2 AND $2 > 0 \
                 UNION ALL \
                 SELECT CAST(2 AS BIGINT), uid_next, '', uid_validity, 0, highest_modseq \
                   FROM mailboxes WHERE id = $1",
            )
            .bind(mailbox_id)
            .bind(since)
            .fetch_all(pool)
            .await?;
            let mut changes = MailboxChanges {
                uid_validity: 0,
                uid_next: 0,
                highest_modseq: 0,
                messages: Vec::new(),
                vanished: Vec::new(),
            };
            let mut found = false;
            for row in &rows {
                let kind: i64 = row.try_get("kind")?;
                match kind {
                    0 => {
                        let flags: String = row.try_get("flags")?;
                        changes.messages.push(MessageMeta {
                            uid: to_u32(row.try_get("uid")?, "uid")?,
                            flags: validate::split_flags(&flags),
                            size: to_u64(row.try_get("size")?, "size")?,
                            internal_date_ms: row.try_get("internal_date")?,
                            modseq: to_u64(row.try_get("modseq")?, "modseq")?,
                        });
                    }
                    1 => changes.vanished.push(to_u32(row.try_get("uid")?, "uid")?),
                    _ => {
                        found = true;
                        // This row carries the mailbox's counters in the union's columns.
                        changes.uid_next = to_u32(row.try_get("uid")?, "uid_next")?;
                        changes.uid_validity = to_u32(row.try_get("size")?, "uid_validity")?;
                        changes.highest_modseq = to_u64(row.try_get("modseq")?, "modseq")?;
                    }
                }
            }
            if !found {
                return Err(Error::NotFound(format!("mailbox {mailbox_id}")));
            }
            changes.messages.sort_unstable_by_key(|m| m.uid);
            changes.vanished.sort_unstable();
            Ok(changes)
        })
    }

    /// The UIDVALIDITY of mailbox `mailbox_id` (it never changes for a given id); `None` when
    /// the mailbox is gone.
    pub async fn uid_validity(&self, mailbox_id: i64) -> Result<Option<u32>> {
        with_pool!(self, |pool| {
            let row = sqlx::query("SELECT uid_validity FROM mailboxes WHERE id = $1")
                .bind(mailbox_id)
                .fetch_optional(pool)
                .await?;
            row.map(|row| to_u32(row.try_get("uid_validity")?, "uid_validity"))
                .transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_section_ends_at_the_first_empty_line() {
        let cases: [(&[u8], &[u8]); 8] = [
            (b"A: b\r\n\r\nbody\r\n\r\nmore", b"A: b\r\n\r\n"),
            (b"A: b\n\nbody", b"A: b\n\n"),
            (b"A: b\n\r\nbody", b"A: b\n\r\n"),
            (b"A: b\r\n\nbody", b"A: b\r\n\n"),
            (b"\r\nbody", b"\r\n"),
            (b"A: b\r\n c\r\n\r\n", b"A: b\r\n c\r\n\r\n"),
            (b"A: b\r\nno end", b"A: b\r\nno end"),
            (b"", b""),
        ];
        for (content, header) in cases {
            assert_eq!(header_section(content), header, "{content:?}");
        }
    }

    #[test]
    fn only_a_header_that_ends_in_an_empty_line_is_kept() {
        assert_eq!(kept_header(b"A: b\r\n\r\nx"), Some(&b"A: b\r\n\r\n"[..]));
        assert_eq!(kept_header(b"\r\nx"), Some(&b"\r\n"[..]));
        assert_eq!(kept_header(b"A: b\r\nno empty line"), None);
        assert_eq!(kept_header(b""), None);
        let mut big = b"X: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_KEPT_HEADER));
        big.extend_from_slice(b"\r\n\r\nbody");
        assert_eq!(kept_header(&big), None);
    }
}
