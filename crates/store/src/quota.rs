//! Quotas per account: limits in bytes and in messages, and the usage they are checked against.
//!
//! Usage (`accounts.used_bytes`, `accounts.used_messages`) is kept exact by changing it in the
//! same transaction as the messages it counts: every path that stores or removes a message in
//! `mailbox.rs` charges or refunds it there. Those paths lock the account row before any
//! mailbox row (the no-op UPDATE of [`lock_budget!`]), and a batch locks its accounts in
//! ascending id order, so concurrent deliveries, appends and expunges on PostgreSQL cannot
//! deadlock. [`Store::recount_usage`] recomputes the sums from the messages and repairs any
//! drift (there should be none; it exists to prove that, and to fix a database edited by hand).
//!
//! What counts is `messages.size`, the stored bytes (delivery headers included), across every
//! mailbox of the account. Deliberately absent: per-mailbox quotas and warnings near the
//! limit.

use sqlx::Row;

use crate::{Error, Result, Store, to_u64, write_tx};

/// An account's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub bytes: Option<u64>,
    pub messages: Option<u64>,
}

/// Bytes and messages stored, over all of an account's mailboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

/// An account's limits and what it uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub limit: Quota,
    pub used: Usage,
}

/// What [`Store::recount_usage`] found: the usage recorded before, and the real one (now
/// recorded). They differ only if something changed messages behind the store's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recount {
    pub recorded: Usage,
    pub actual: Usage,
}

impl Recount {
    pub fn drifted(&self) -> bool {
        self.recorded != self.actual
    }
}

fn limit_to_column(limit: Option<u64>) -> Option<i64> {
    limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// One account's limits and running usage inside a write transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) quota_bytes: Option<i64>,
    pub(crate) quota_messages: Option<i64>,
    pub(crate) used_bytes: i64,
    pub(crate) used_messages: i64,
    /// What this transaction has charged so far (written back by [`charge!`]).
    pub(crate) added_bytes: i64,
    pub(crate) added_messages: i64,
}

impl Budget {
    /// Charges one message of `size` bytes if it fits, else says why not.
    pub(crate) fn admit(&mut self, size: i64) -> std::result::Result<(), String> {
        let bytes = self.used_bytes + self.added_bytes + size;
        let messages = self.used_messages + self.added_messages + 1;
        if let Some(limit) = self.quota_bytes
            && bytes > limit
        {
            return Err(format!("{bytes} bytes would exceed the limit of {limit}"));
        }
        if let Some(limit) = self.quota_messages
            && messages > limit
        {
            return Err(format!(
                "{messages} messages would exceed the limit of {limit}"
            ));
        }
        self.added_bytes += size;
        self.added_messages += 1;
        Ok(())
    }

    /// Takes back a charge for a message that was not stored after all.
    pub(crate) fn refund(&mut self, size: i64) {
        self.added_bytes -= size;
        self.added_messages -= 1;
    }
}

/// Locks account `$account_id`'s row for the rest of transaction `$tx` and evaluates to its
/// [`Budget`], or `None` when there is no such account. Lock account rows before mailbox rows
/// (see the module comment).
macro_rules! lock_budget {
    ($tx:ident, $account_id:expr) => {{
        let account_id: i64 = $account_id;
        let row = sqlx::query(
            "UPDATE accounts SET used_bytes = used_bytes WHERE id = $1 \
             RETURNING quota_bytes, quota_messages, used_bytes, used_messages",
        )
        .bind(account_id)
        .fetch_optional(&mut *$tx)
        .await?;
        match row {
            Some(row) => Some($crate::quota::Budget {
                quota_bytes: row.try_get("quota_bytes")?,
                quota_messages: row.try_get("quota_messages")?,
                used_bytes: row.try_get("used_bytes")?,
                used_messages: row.try_get("used_messages")?,
                added_bytes: 0,
                added_messages: 0,
            }),
            None => None,
        }
    }};
}
pub(crate) use lock_budget;

/// Adds `$bytes` and `$messages` (either may be negative) to account `$account_id`'s usage.
macro_rules! charge {
    ($tx:ident, $account_id:expr, $bytes:expr, $messages:expr) => {{
        let bytes: i64 = $bytes;
        let messages: i64 = $messages;
        if bytes != 0 || messages != 0 {
            sqlx::query(
                "UPDATE accounts SET used_bytes = used_bytes + $2, \
                   used_messages = used_messages + $3 WHERE id = $1",
            )
            .bind($account_id)
            .bind(bytes)
            .bind(messages)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}
pub(crate) use charge;

/// Locks the row of the account owning mailbox `$mailbox_id` (see [`lock_budget!`]) and
/// evaluates to the account's id, or returns `NotFound` for an unknown mailbox.
macro_rules! lock_mailbox_owner {
    ($tx:ident, $mailbox_id:expr) => {{
        let mailbox_id: i64 = $mailbox_id;
        let row = sqlx::query(
            "UPDATE accounts SET used_bytes = used_bytes \
             WHERE id = (SELECT account_id FROM mailboxes WHERE id = $1) RETURNING id",
        )
        .bind(mailbox_id)
        .fetch_optional(&mut *$tx)
        .await?;
        match row {
            Some(row) => row.try_get::<i64, _>("id")?,
            None => return Err(Error::NotFound(format!("mailbox {mailbox_id}"))),
        }
    }};
}
pub(crate) use lock_mailbox_owner;

impl Store {
    /// Sets an account's limits (both at once; `None` removes one). A limit below the current
    /// usage is allowed: nothing is deleted, new mail is refused until usage drops.
    pub async fn set_quota(&self, address: &str, quota: Quota) -> Result<()> {
        let address = address.to_ascii_lowercase();
        let updated = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "UPDATE accounts SET quota_bytes = $1, quota_messages = $2 WHERE address = $3",
            )
            .bind(limit_to_column(quota.bytes))
            .bind(limit_to_column(quota.messages))
            .bind(&address)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(Error::NotFound(format!("account {address}")));
        }
        Ok(())
    }

    /// An account's limits and recorded usage; `NotFound` for an unknown address.
    pub async fn quota(&self, address: &str) -> Result<QuotaUsage> {
        let address = address.to_ascii_lowercase();
        crate::with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT quota_bytes, quota_messages, used_bytes, used_messages FROM accounts \
                 WHERE address = $1",
            )
            .bind(&address)
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else {
                return Err(Error::NotFound(format!("account {address}")));
            };
            let limit = |column: &str| -> Result<Option<u64>> {
                let value: Option<i64> = row.try_get(column)?;
                value.map(|v| to_u64(v, column)).transpose()
            };
            Ok(QuotaUsage {
                limit: Quota {
                    bytes: limit("quota_bytes")?,
                    messages: limit("quota_messages")?,
                },
                used: Usage {
                    bytes: to_u64(row.try_get("used_bytes")?, "used_bytes")?,
                    messages: to_u64(row.try_get("used_messages")?, "used_messages")?,
                },
            })
        })
    }

    /// Recomputes an account's usage from its messages under the account's lock, records it,
    /// and reports what was recorded before alongside it.
    pub async fn recount_usage(&self, address: &str) -> Result<Recount> {
        let address = address.to_ascii_lowercase();
        let (recorded, actual) = write_tx!(self, |tx, _backend| {
            let row = sqlx::query(
                "UPDATE accounts SET used_bytes = used_bytes WHERE address = $1 \
                 RETURNING id, used_bytes, used_messages",
            )
            .bind(&address)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(Error::NotFound(format!("account {address}")));
            };
            let id: i64 = row.try_get("id")?;
            let recorded = Usage {
                bytes: to_u64(row.try_get("used_bytes")?, "used_bytes")?,
                messages: to_u64(row.try_get("used_messages")?, "used_messages")?,
            };
            // CAST: PostgreSQL's SUM over BIGINT is NUMERIC.
            let row = sqlx::query(
                "SELECT CAST(COALESCE(SUM(m.size), 0) AS BIGINT) AS bytes, \
                        COUNT(m.id) AS messages \
                 FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
                 WHERE b.account_id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let bytes: i64 = row.try_get("bytes")?;
            let messages: i64 = row.try_get("messages")?;
            sqlx::query("UPDATE accounts SET used_bytes = $2, used_messages = $3 WHERE id = $1")
                .bind(id)
                .bind(bytes)
                .bind(messages)
                .execute(&mut *tx)
                .await?;
            let actual = Usage {
                bytes: to_u64(bytes, "used_bytes")?,
                messages: to_u64(messages, "used_messages")?,
            };
            (recorded, actual)
        });
        Ok(Recount { recorded, actual })
    }
}
