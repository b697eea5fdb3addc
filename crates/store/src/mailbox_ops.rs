//! Mailbox operations that move mail between mailboxes: IMAP RENAME (RFC 9051 §6.3.6), COPY
//! (§6.4.7) and MOVE (RFC 6851), each in one transaction.
//!
//! Copies keep flags and internal date and take new UIDs in the destination in source UID
//! order, so the caller can answer UIDPLUS's COPYUID (RFC 4315). The account row is locked
//! first, then mailbox rows in id order, so a COPY from A to B and one from B to A cannot
//! deadlock. A COPY is charged to the account's quota (all or nothing: `OverQuota`); a MOVE
//! stays inside the account and changes nothing.

use sqlx::Row;

use crate::changes::mailbox_changed;
use crate::expunged::record_expunged;
use crate::mailbox::{canonical_mailbox_name, check_mailbox_name};
use crate::quota::{charge, lock_budget};
use crate::{Error, Result, Store, to_u32, write_tx};

/// What a COPY or MOVE did: the destination's UIDVALIDITY and (source UID, new UID) pairs in
/// source UID order. Source UIDs that no longer exist are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub uid_validity: u32,
    pub uids: Vec<(u32, u32)>,
}

/// At most this many UIDs per `IN (...)` list.
const UID_CHUNK: usize = 500;

impl Store {
    /// Renames mailbox `from` to `to`, with everything below it (`from/…` becomes `to/…`).
    /// Renaming INBOX moves its messages into a new mailbox `to` and leaves INBOX empty
    /// (RFC 9051 §6.3.6). `NotFound` when `from` does not exist, `Conflict` when `to` (or a
    /// renamed child) already exists, `Invalid` for a bad name or a rename into itself.
    pub async fn rename_mailbox(&self, account_id: i64, from: &str, to: &str) -> Result<()> {
        check_mailbox_name(to)?;
        let from = canonical_mailbox_name(from).to_string();
        let to = canonical_mailbox_name(to).to_string();
        if to == "INBOX" {
            return Err(Error::Conflict("INBOX already exists".into()));
        }
        if to == from || to.starts_with(&format!("{from}/")) {
            return Err(Error::Invalid(format!("cannot rename {from} into itself")));
        }
        if from == "INBOX" {
            let inbox = self
                .mailbox(account_id, "INBOX")
                .await?
                .ok_or_else(|| Error::NotFound("INBOX".into()))?;
            self.create_mailbox(account_id, &to).await?;
            let uids: Vec<u32> = self
                .messages(inbox.id)
                .await?
                .iter()
                .map(|m| m.uid)
                .collect();
            if !uids.is_empty() {
                self.move_messages(account_id, inbox.id, &uids, &to).await?;
            }
            return Ok(());
        }
        let prefix = format!("{from}/");
        write_tx!(self, |tx, _backend| {
            let rows = sqlx::query("SELECT id, name FROM mailboxes WHERE account_id = $1")
                .bind(account_id)
                .fetch_all(&mut *tx)
                .await?;
            let mut names = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                let name: String = row.try_get("name")?;
                names.push((id, name));
            }
            let renamed: Vec<(i64, String)> = names
                .iter()
                .filter(|(_, n)| *n == from || n.starts_with(&prefix))
                .map(|(id, n)| (*id, format!("{to}{}", &n[from.len()..])))
                .collect();
            if !renamed.iter().any(|(_, n)| *n == to) {
                return Err(Error::NotFound(format!("mailbox {from}")));
            }
            for (_, new_name) in &renamed {
                if names.iter().any(|(_, n)| n == new_name) {
                    return Err(Error::Conflict(format!("mailbox {new_name} exists")));
                }
            }
            for (id, new_name) in &renamed {
                sqlx::query("UPDATE mailboxes SET name = $1 WHERE id = $2")
                    .bind(new_name)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            // Subscriptions follow their mailboxes (the old name's subscription moves to the
            // new name; an existing subscription of the new name is kept).
            for (id, new_name) in &renamed {
                let Some((_, old_name)) = names.iter().find(|(i, _)| i == id) else {
                    continue;
                };
                let moved =
                    sqlx::query("DELETE FROM subscriptions WHERE account_id = $1 AND name = $2")
                        .bind(account_id)
                        .bind(old_name)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                if moved > 0 {
                    sqlx::query(
                        "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(account_id)
                    .bind(new_name)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        });
        Ok(())
    }

    /// Copies messages `uids` of mailbox `source_id` into the account's mailbox `dest`
    /// (`NotFound` when it does not exist: the IMAP answer is `[TRYCREATE]`).
    pub async fn copy_messages(
        &self,
        account_id: i64,
        source_id: i64,
        uids: &[u32],
        dest: &str,
    ) -> Result<Copied> {
        self.transfer(account_id, source_id, uids, dest, false)
            .await
    }

    /// Moves messages: copies them as [`Store::copy_messages`] does and removes them from the
    /// source in the same transaction, so no other session ever sees both or neither.
    pub async fn move_messages(
        &self,
        account_id: i64,
        source_id: i64,
        uids: &[u32],
        dest: &str,
    ) -> Result<Copied> {
        self.transfer(account_id, source_id, uids, dest, true).await
    }

    async fn transfer(
        &self,
        account_id: i64,
        source_id: i64,
        uids: &[u32],
        dest: &str,
        remove: bool,
    ) -> Result<Copied> {
        let dest = canonical_mailbox_name(dest).to_string();
        let mut wanted = uids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let out = write_tx!(self, |tx, _backend| {
            let Some(mut budget) = lock_budget!(tx, account_id) else {
                return Err(Error::NotFound(format!("account {account_id}")));
            };
            let row = sqlx::query(
                "SELECT id, uid_validity FROM mailboxes WHERE account_id = $1 AND name = $2",
            )
            .bind(account_id)
            .bind(&dest)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(Error::NotFound(format!("mailbox {dest}")));
            };
            let dest_id: i64 = row.try_get("id")?;
            let uid_validity = to_u32(row.try_get("uid_validity")?, "uid_validity")?;
            let owned = sqlx::query("SELECT 1 FROM mailboxes WHERE id = $1 AND account_id = $2")
                .bind(source_id)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
            if owned.is_none() {
                return Err(Error::NotFound(format!("mailbox {source_id}")));
            }
            // Lock both rows in id order (a no-op update), then read the source.
            let mut ids = [source_id, dest_id];
            ids.sort_unstable();
            for id in ids {
                sqlx::query("UPDATE mailboxes SET highest_modseq = highest_modseq WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut found = Vec::new();
            for chunk in wanted.chunks(UID_CHUNK) {
                let sql = format!(
                    "SELECT uid, flags, seen, deleted, size, internal_date, content, header \
                     FROM messages WHERE mailbox_id = $1 AND uid IN ({}) ORDER BY uid",
                    crate::placeholders(2, chunk.len())
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(source_id);
                for uid in chunk {
                    q = q.bind(i64::from(*uid));
                }
                for row in q.fetch_all(&mut *tx).await? {
                    found.push(row);
                }
            }
            if !remove {
                for src in &found {
                    if let Err(why) = budget.admit(src.try_get::<i64, _>("size")?) {
                        return Err(Error::OverQuota(format!("account {account_id}: {why}")));
                    }
                }
                charge!(tx, account_id, budget.added_bytes, budget.added_messages);
            }
            let mut pairs = Vec::with_capacity(found.len());
            if !found.is_empty() {
                mailbox_changed!(
                    self,
                    tx,
                    "id = $1 OR (id = $2 AND $3)",
                    dest_id,
                    source_id,
                    remove
                );
                let count = found.len() as i64;
                let row = sqlx::query(
                    "UPDATE mailboxes SET uid_next = uid_next + $2, \
                       highest_modseq = highest_modseq + $2 \
                     WHERE id = $1 RETURNING uid_next - $2 AS uid, highest_modseq - $2 + 1 AS modseq",
                )
                .bind(dest_id)
                .bind(count)
                .fetch_one(&mut *tx)
                .await?;
                let first_uid: i64 = row.try_get("uid")?;
                let first_modseq: i64 = row.try_get("modseq")?;
                if u32::try_from(first_uid + count - 1).is_err() {
                    return Err(Error::Internal(format!("mailbox {dest} has no UIDs left")));
                }
                for (n, src) in found.iter().enumerate() {
                    let new_uid = first_uid + n as i64;
                    let old_uid: i64 = src.try_get("uid")?;
                    sqlx::query(
                        "INSERT INTO messages \
                           (mailbox_id, uid, modseq, flags, seen, deleted, size, internal_date, \
                            content, header) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(dest_id)
                    .bind(new_uid)
                    .bind(first_modseq + n as i64)
                    .bind(src.try_get::<String, _>("flags")?)
                    .bind(src.try_get::<i16, _>("seen")?)
                    .bind(src.try_get::<i16, _>("deleted")?)
                    .bind(src.try_get::<i64, _>("size")?)
                    .bind(src.try_get::<i64, _>("internal_date")?)
                    .bind(src.try_get::<Vec<u8>, _>("content")?)
                    .bind(src.try_get::<Option<Vec<u8>>, _>("header")?)
                    .execute(&mut *tx)
                    .await?;
                    pairs.push((to_u32(old_uid, "uid")?, to_u32(new_uid, "uid")?));
                }
                if remove {
                    for chunk in pairs.chunks(UID_CHUNK) {
                        let sql = format!(
                            "DELETE FROM messages WHERE mailbox_id = $1 AND uid IN ({})",
                            crate::placeholders(2, chunk.len())
                        );
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(source_id);
                        for (old, _) in chunk {
                            q = q.bind(i64::from(*old));
                        }
                        q.execute(&mut *tx).await?;
                    }
                    let row = sqlx::query(
                        "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = $1 \
                         RETURNING highest_modseq",
                    )
                    .bind(source_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                    record_expunged!(
                        tx,
                        source_id,
                        &moved,
                        row.try_get::<i64, _>("highest_modseq")?
                    );
                }
            }
            Copied {
                uid_validity,
                uids: pairs,
            }
        });
        Ok(out)
    }
}

/// A page of [`Store::messages_page`]: a message's metadata and the start of its header
/// section (of its content, for a message whose header section is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHead {
    pub meta: crate::MessageMeta,
    /// At most the first `head_bytes` octets of the message's header section.
    pub head: Vec<u8>,
}

impl Store {
    /// Up to `limit` messages of a mailbox with UID above `after_uid`, ascending, each with its
    /// first `head_bytes` octets: one query, for listings that show envelopes without reading
    /// whole messages.
    pub async fn messages_page(
        &self,
        mailbox_id: i64,
        after_uid: u32,
        limit: u32,
        head_bytes: u32,
    ) -> Result<Vec<MessageHead>> {
        crate::with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT uid, flags, size, internal_date, modseq, \
                   SUBSTR(COALESCE(header, content), 1, CAST($4 AS INTEGER)) AS head \
                 FROM messages \
                 WHERE mailbox_id = $1 AND uid > $2 ORDER BY uid LIMIT $3",
            )
            .bind(mailbox_id)
            .bind(i64::from(after_uid))
            .bind(i64::from(limit))
            .bind(i64::from(head_bytes))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let flags: String = row.try_get("flags")?;
                    Ok(MessageHead {
                        meta: crate::MessageMeta {
                            uid: to_u32(row.try_get("uid")?, "uid")?,
                            flags: crate::validate::split_flags(&flags),
                            size: crate::to_u64(row.try_get("size")?, "size")?,
                            internal_date_ms: row.try_get("internal_date")?,
                            modseq: crate::to_u64(row.try_get("modseq")?, "modseq")?,
                        },
                        head: row.try_get("head")?,
                    })
                })
                .collect()
        })
    }

    /// Removes messages `uids` of a mailbox for good, whatever their flags (the gRPC
    /// `DeleteMessages` with expunge; IMAP's EXPUNGE only removes `\Deleted` messages), in one
    /// transaction that refunds the quota, raises the mailbox's highest_modseq and notifies
    /// watchers like an IMAP EXPUNGE. Returns the UIDs removed, ascending (absent ones are
    /// skipped).
    pub async fn remove_messages(&self, mailbox_id: i64, uids: &[u32]) -> Result<Vec<u32>> {
        let mut wanted = uids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let out = write_tx!(self, |tx, _backend| {
            let account_id = crate::quota::lock_mailbox_owner!(tx, mailbox_id);
            sqlx::query("UPDATE mailboxes SET highest_modseq = highest_modseq WHERE id = $1")
                .bind(mailbox_id)
                .execute(&mut *tx)
                .await?;
            let mut removed = Vec::new();
            let mut freed: i64 = 0;
            for chunk in wanted.chunks(UID_CHUNK) {
                let sql = format!(
                    "DELETE FROM messages WHERE mailbox_id = $1 AND uid IN ({}) \
                     RETURNING uid, size",
                    crate::placeholders(2, chunk.len())
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(mailbox_id);
                for uid in chunk {
                    q = q.bind(i64::from(*uid));
                }
                for row in q.fetch_all(&mut *tx).await? {
                    removed.push(to_u32(row.try_get("uid")?, "uid")?);
                    freed += row.try_get::<i64, _>("size")?;
                }
            }
            removed.sort_unstable();
            if !removed.is_empty() {
                // Remembered as expunged with the new mod-sequence, so QRESYNC clients hear
                // of these removals as VANISHED like of an IMAP EXPUNGE.
                let row = sqlx::query(
                    "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = $1 \
                     RETURNING highest_modseq",
                )
                .bind(mailbox_id)
                .fetch_one(&mut *tx)
                .await?;
                record_expunged!(
                    tx,
                    mailbox_id,
                    &removed,
                    row.try_get::<i64, _>("highest_modseq")?
                );
                mailbox_changed!(self, tx, "id = $1", mailbox_id);
                let count = i64::try_from(removed.len()).unwrap_or(i64::MAX);
                charge!(tx, account_id, -freed, -count);
            }
            removed
        });
        Ok(out)
    }
}

impl Store {
    /// The contents of messages with UID `from_uid` and above, ascending, for reading ahead
    /// through a mailbox in one query instead of one per message: at most `limit` messages,
    /// and after the first only as many as fit in `max_bytes` together. The first row is
    /// `from_uid` itself unless that message does not exist.
    pub async fn message_bodies_from(
        &self,
        mailbox_id: i64,
        from_uid: u32,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<(u32, Vec<u8>)>> {
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        crate::with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT uid, content FROM ( \
                   SELECT uid, content, SUM(size) OVER (ORDER BY uid) AS running, \
                     ROW_NUMBER() OVER (ORDER BY uid) AS n \
                   FROM messages WHERE mailbox_id = $1 AND uid >= $2 ORDER BY uid LIMIT $3 \
                 ) AS w WHERE n = 1 OR running <= $4 ORDER BY uid",
            )
            .bind(mailbox_id)
            .bind(i64::from(from_uid))
            .bind(i64::from(limit))
            .bind(max_bytes)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok((to_u32(row.try_get("uid")?, "uid")?, row.try_get("content")?)))
                .collect()
        })
    }
}
