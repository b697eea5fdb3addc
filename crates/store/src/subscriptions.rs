//! IMAP subscriptions: the names an account has subscribed to (RFC 9051 §6.3.7, §6.3.8).
//!
//! Names, not mailboxes: subscribing to a name that does not exist is allowed, and deleting a
//! mailbox leaves its subscription in place (LSUB then shows it `\Noselect`). RENAME moves the
//! subscriptions of the renamed mailboxes (see `mailbox_ops.rs`); new accounts start with
//! their default folders subscribed (see `directory.rs`).

use sqlx::Row;

use crate::mailbox::{canonical_mailbox_name, check_mailbox_name};
use crate::{Result, Store, with_pool};

impl Store {
    /// Subscribes the account to `name` ("INBOX" in any case); subscribing twice is not an
    /// error.
    pub async fn subscribe(&self, account_id: i64, name: &str) -> Result<()> {
        check_mailbox_name(name)?;
        let name = canonical_mailbox_name(name);
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(account_id)
            .bind(name)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Removes a subscription; returns whether there was one.
    pub async fn unsubscribe(&self, account_id: i64, name: &str) -> Result<bool> {
        let name = canonical_mailbox_name(name);
        let removed = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM subscriptions WHERE account_id = $1 AND name = $2")
                .bind(account_id)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed > 0)
    }

    /// The account's subscribed names, INBOX first, then by name.
    pub async fn subscriptions(&self, account_id: i64) -> Result<Vec<String>> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT name FROM subscriptions WHERE account_id = $1 \
                 ORDER BY CASE WHEN name = 'INBOX' THEN 0 ELSE 1 END, name",
            )
            .bind(account_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok(row.try_get::<String, _>("name")?))
                .collect()
        })
    }
}
