//! What the submission agent needs from the store to apply its policy: which addresses an
//! account may send as (RFC 6409 §6.1), and how many messages it has submitted lately, counted
//! in the database so that every MSA process sees the same number.
//!
//! It deliberately does not decide anything: the limits, and what to answer when one is
//! reached, belong to the MSA. Failed-login counts are not kept here either; they are per
//! process and live in the MSA's memory.

use sqlx::Row;

use crate::queue::{Prepared, insert_prepared};
use crate::{Backend, NewMessage, Result, Ret, Store, to_u64, validate, with_pool, write_tx};

/// How long a submission is remembered for rate limiting. Rows older than this are removed
/// when the same account submits again, so the table stays proportional to recent traffic;
/// [`Store::submissions_since`] therefore sees at most this far back.
pub const SUBMISSION_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

impl Store {
    /// The addresses `account` may use as envelope sender or in `From:`: its own address first,
    /// then every exact alias (not a catch-all `@domain`) whose target list names the account
    /// directly, sorted. Aliases that reach the account only through another alias do not
    /// count: owning an address should be visible in one alias entry, not inferred.
    pub async fn sendable_addresses(&self, account: &str) -> Result<Vec<String>> {
        let account = validate::normalize_address(account)?;
        // The substring test only narrows the rows; the exact test on the split targets below
        // decides, so an address that merely contains the account's (x-bob@… for bob@…)
        // never matches.
        let sql = match self.backend() {
            Backend::Postgres => {
                "SELECT source, targets FROM aliases \
                 WHERE source NOT LIKE '@%' AND strpos(targets, $1) > 0 ORDER BY source"
            }
            Backend::Sqlite => {
                "SELECT source, targets FROM aliases \
                 WHERE source NOT LIKE '@%' AND instr(targets, $1) > 0 ORDER BY source"
            }
        };
        with_pool!(self, |pool| {
            let rows = sqlx::query(sql).bind(&account).fetch_all(pool).await?;
            let mut out = vec![account.clone()];
            for row in &rows {
                let targets: String = row.try_get("targets")?;
                if targets.split('\n').any(|t| t == account) {
                    out.push(row.try_get("source")?);
                }
            }
            Ok(out)
        })
    }

    /// Queues a message exactly as [`Store::enqueue`] does and, in the same transaction,
    /// records that `account_id` submitted it, so a crash can neither count a message that was
    /// not queued nor queue one that was not counted. The record lives in its own table rather
    /// than on the queue row, so deleting a message from the queue does not reset the count.
    pub async fn enqueue_submission(&self, account_id: i64, msg: NewMessage<'_>) -> Result<String> {
        let prepared = Prepared::new(msg)?;
        let horizon = prepared.now.saturating_sub(SUBMISSION_RETENTION_MS);
        write_tx!(self, |tx, _backend| {
            insert_prepared!(tx, &prepared);
            sqlx::query(
                "INSERT INTO submissions (account_id, queue_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(account_id)
            .bind(&prepared.id)
            .bind(prepared.now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM submissions WHERE account_id = $1 AND created_at < $2")
                .bind(account_id)
                .bind(horizon)
                .execute(&mut *tx)
                .await?;
        });
        Ok(prepared.id)
    }

    /// How many messages `account_id` has submitted at or after `since_ms` (at most
    /// [`SUBMISSION_RETENTION_MS`] back).
    pub async fn submissions_since(&self, account_id: i64, since_ms: i64) -> Result<u64> {
        let count: i64 = with_pool!(self, |pool| {
            sqlx::query(
                "SELECT COUNT(*) AS n FROM submissions WHERE account_id = $1 AND created_at >= $2",
            )
            .bind(account_id)
            .bind(since_ms)
            .fetch_one(pool)
            .await?
            .try_get("n")?
        });
        to_u64(count, "submission count")
    }
}
