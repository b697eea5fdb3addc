//! Memory of expunged UIDs, for IMAP QRESYNC (RFC 7162 §3.2.5, §3.2.6).
//!
//! Every path that removes messages from a mailbox (EXPUNGE, UID EXPUNGE, MOVE out of it, and
//! so RENAME of INBOX) raises the mailbox's highest_modseq and records each removed UID with
//! that new value, in the same transaction ([`record_expunged!`]). A client that last saw
//! mod-sequence `n` then learns exactly which UIDs went away with
//! [`Store::vanished_since`]. The rows are kept as long as the mailbox (a UID is never reused
//! within a UIDVALIDITY, so they never go stale); deleting the mailbox deletes them.
//!
//! Deliberately absent: trimming old rows. A server that forgot expunges would have to answer
//! from seq-match data instead; keeping them costs one small row per expunged message.

use sqlx::Row;

use crate::{Result, Store, to_u32, with_pool};

/// At most this many UIDs per INSERT (three-value rows share two parameters).
pub(crate) const EXPUNGED_CHUNK: usize = 500;

/// Records `$uids` (a `&[u32]`) as expunged from mailbox `$mailbox_id` at mod-sequence
/// `$modseq` (an i64), inside write transaction `$tx`.
macro_rules! record_expunged {
    ($tx:ident, $mailbox_id:expr, $uids:expr, $modseq:expr) => {{
        let mailbox_id: i64 = $mailbox_id;
        let modseq: i64 = $modseq;
        let uids: &[u32] = $uids;
        for chunk in uids.chunks($crate::expunged::EXPUNGED_CHUNK) {
            // Only numbered placeholders are spliced in; the values are bound.
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, ${}, $2)", i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO expunged (mailbox_id, uid, modseq) VALUES {} \
                 ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
                rows.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(mailbox_id)
                .bind(modseq);
            for uid in chunk {
                q = q.bind(i64::from(*uid));
            }
            q.execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use record_expunged;

impl Store {
    /// The UIDs expunged from mailbox `mailbox_id` at a mod-sequence above `modseq`,
    /// ascending (RFC 7162 §3.2.5.2, `VANISHED (EARLIER)`).
    pub async fn vanished_since(&self, mailbox_id: i64, modseq: u64) -> Result<Vec<u32>> {
        let since = i64::try_from(modseq).unwrap_or(i64::MAX);
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid",
            )
            .bind(mailbox_id)
            .bind(since)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| to_u32(row.try_get("uid")?, "uid"))
                .collect()
        })
    }
}
