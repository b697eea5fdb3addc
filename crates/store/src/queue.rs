//! The outbound queue: message content stored once, one row per recipient carrying its
//! delivery state, and leases that let several queue runners share the work.
//!
//! Invariants: a recipient is leased to at most one runner at a time; `claim` records the
//! attempt (attempts + 1, last_attempt_at) before the runner makes it, so a crash mid-attempt
//! can never cause a hot retry loop; only the lease holder can record the outcome
//! (`Error::LeaseLost` otherwise). Delivered and failed recipients stay as history until the
//! message is deleted with `queue_delete`.
//!
//! Deliberately absent: retry schedules, bounce generation and routing, which belong to the MTA.

use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use sqlx::Row;

use crate::{Backend, Error, Result, Store, now_ms, to_u32, to_u64, with_pool, write_tx};

/// A message to enqueue. `sender` is the reverse-path; "" is the null sender of bounces
/// (RFC 5321 §4.5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewMessage<'a> {
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub content: &'a [u8],
}

/// One recipient leased to a runner by [`Store::claim`]. `attempts` already counts the
/// attempt the runner is about to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub recipient_id: i64,
    pub queue_id: String,
    pub sender: String,
    pub address: String,
    pub attempts: u32,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientState {
    Queued,
    Delivered,
    Failed,
}

impl RecipientState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Queued => "queued",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RecipientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecipientState {
    type Err = Error;
    fn from_str(s: &str) -> Result<RecipientState> {
        match s {
            "queued" => Ok(RecipientState::Queued),
            "delivered" => Ok(RecipientState::Delivered),
            "failed" => Ok(RecipientState::Failed),
            other => Err(Error::Invalid(format!("recipient state {other:?}"))),
        }
    }
}

/// A queued message with all its recipients, for the admin views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: String,
    pub sender: String,
    pub size: u64,
    pub created_at_ms: i64,
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    pub id: i64,
    pub address: String,
    pub state: RecipientState,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub last_reply: String,
    pub lease_owner: Option<String>,
    pub lease_expires_ms: Option<i64>,
}

/// Queue ids: 16 characters of [A-Za-z0-9] (about 95 random bits), safe in URLs, file names
/// and Received headers.
fn new_queue_id() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

macro_rules! recipient_from_row {
    ($row:expr) => {{
        let state: String = $row.try_get("state")?;
        QueuedRecipient {
            id: $row.try_get("rid")?,
            address: $row.try_get("address")?,
            state: state.parse()?,
            attempts: to_u32($row.try_get("attempts")?, "attempts")?,
            next_attempt_at_ms: $row.try_get("next_attempt_at")?,
            last_reply: $row.try_get("last_reply")?,
            lease_owner: $row.try_get("lease_owner")?,
            lease_expires_ms: $row.try_get("lease_expires")?,
        }
    }};
}

/// Columns of a message joined with its recipients, as `recipient_from_row!` and
/// `group_rows!` read them.
const JOINED_COLUMNS: &str = "m.id AS mid, m.sender, m.size, m.created_at, r.id AS rid, \
    r.address, r.state, r.attempts, r.next_attempt_at, r.last_reply, r.lease_owner, \
    r.lease_expires";

/// Folds rows ordered by message then recipient into `QueuedMessage`s.
macro_rules! group_rows {
    ($rows:expr) => {{
        let mut out: Vec<QueuedMessage> = Vec::new();
        for row in $rows.iter() {
            let mid: String = row.try_get("mid")?;
            let recipient = recipient_from_row!(row);
            match out.last_mut() {
                Some(last) if last.id == mid => last.recipients.push(recipient),
                _ => out.push(QueuedMessage {
                    id: mid,
                    sender: row.try_get("sender")?,
                    size: to_u64(row.try_get("size")?, "size")?,
                    created_at_ms: row.try_get("created_at")?,
                    recipients: vec![recipient],
                }),
            }
        }
        out
    }};
}

/// The claiming UPDATE. On PostgreSQL the inner SELECT locks the rows it picks with
/// `FOR UPDATE SKIP LOCKED`, so concurrent runners neither wait for each other nor pick the
/// same row; in READ COMMITTED a row updated meanwhile is re-checked against the WHERE clause
/// once locked. SQLite has no row locks: the whole statement runs inside one IMMEDIATE
/// transaction, which already excludes every other writer. SQLite's RETURNING may not name
/// other tables, hence the scalar subqueries for the message's columns.
const CLAIM_PG: &str = "UPDATE queue_recipients \
    SET lease_owner = $1, lease_expires = $2 + $3, attempts = attempts + 1, last_attempt_at = $2 \
    WHERE id IN (SELECT id FROM queue_recipients \
                 WHERE state = 'queued' AND next_attempt_at <= $2 \
                   AND (lease_owner IS NULL OR lease_expires <= $2) \
                 ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
    RETURNING id, message_id, address, attempts, \
      (SELECT sender FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS sender, \
      (SELECT created_at FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS created_at";

const CLAIM_SQLITE: &str = "UPDATE queue_recipients \
    SET lease_owner = $1, lease_expires = $2 + $3, attempts = attempts + 1, last_attempt_at = $2 \
    WHERE id IN (SELECT id FROM queue_recipients \
                 WHERE state = 'queued' AND next_attempt_at <= $2 \
                   AND (lease_owner IS NULL OR lease_expires <= $2) \
                 ORDER BY next_attempt_at, id LIMIT $4) \
    RETURNING id, message_id, address, attempts, \
      (SELECT sender FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS sender, \
      (SELECT created_at FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS created_at";

impl Store {
    /// Stores a message and its recipients in one transaction and returns its queue id. The
    /// recipients are due at once. Addresses are stored as given: remote local parts may be
    /// case-sensitive (RFC 5321 §2.4).
    pub async fn enqueue(&self, msg: NewMessage<'_>) -> Result<String> {
        if msg.recipients.is_empty() {
            return Err(Error::Invalid("message has no recipients".into()));
        }
        if msg.recipients.iter().any(|r| r.is_empty()) {
            return Err(Error::Invalid("empty recipient address".into()));
        }
        let size = i64::try_from(msg.content.len())
            .map_err(|_| Error::Invalid("message too large".into()))?;
        let recipients = distinct_recipients(msg.recipients);
        let id = new_queue_id();
        let now = now_ms();
        write_tx!(self, |tx, _backend| {
            sqlx::query(
                "INSERT INTO queue_messages (id, sender, content, size, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(msg.sender)
            .bind(msg.content)
            .bind(size)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for address in &recipients {
                sqlx::query(
                    "INSERT INTO queue_recipients (message_id, address, next_attempt_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(&id)
                .bind(address)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(id)
    }

    /// Leases up to `limit` due recipients (queued, next attempt reached, lease free or
    /// expired) to `owner` for `lease_ms`, recording the attempt now. Oldest due first.
    pub async fn claim(&self, owner: &str, limit: u32, lease_ms: i64) -> Result<Vec<Claim>> {
        if owner.is_empty() {
            return Err(Error::Invalid("empty lease owner".into()));
        }
        if lease_ms <= 0 {
            return Err(Error::Invalid("lease must be positive".into()));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut claims = write_tx!(self, |tx, backend| {
            let sql = match backend {
                Backend::Postgres => CLAIM_PG,
                Backend::Sqlite => CLAIM_SQLITE,
            };
            let rows = sqlx::query(sql)
                .bind(owner)
                .bind(now)
                .bind(lease_ms)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            let mut claims = Vec::with_capacity(rows.len());
            for row in &rows {
                claims.push(Claim {
                    recipient_id: row.try_get("id")?,
                    queue_id: row.try_get("message_id")?,
                    sender: row.try_get("sender")?,
                    address: row.try_get("address")?,
                    attempts: to_u32(row.try_get("attempts")?, "attempts")?,
                    created_at_ms: row.try_get("created_at")?,
                });
            }
            claims
        });
        // RETURNING promises no order; runners batch by message, so give them one.
        claims.sort_by(|a, b| {
            (a.created_at_ms, &a.queue_id, a.recipient_id).cmp(&(
                b.created_at_ms,
                &b.queue_id,
                b.recipient_id,
            ))
        });
        Ok(claims)
    }

    /// The content of a queued message.
    pub async fn message_content(&self, queue_id: &str) -> Result<Vec<u8>> {
        with_pool!(self, |pool| {
            let row = sqlx::query("SELECT content FROM queue_messages WHERE id = $1")
                .bind(queue_id)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Ok(row.try_get::<Vec<u8>, _>("content")?),
                None => Err(Error::NotFound(format!("queue message {queue_id}"))),
            }
        })
    }

    /// Records a successful delivery and ends the lease.
    pub async fn mark_delivered(&self, recipient_id: i64, owner: &str, reply: &str) -> Result<()> {
        self.finish(recipient_id, owner, RecipientState::Delivered, reply, None)
            .await
    }

    /// Records a temporary failure: the recipient stays queued until `next_attempt_at_ms`.
    pub async fn mark_deferred(
        &self,
        recipient_id: i64,
        owner: &str,
        reply: &str,
        next_attempt_at_ms: i64,
    ) -> Result<()> {
        self.finish(
            recipient_id,
            owner,
            RecipientState::Queued,
            reply,
            Some(next_attempt_at_ms),
        )
        .await
    }

    /// Records a permanent failure and ends the lease.
    pub async fn mark_failed(&self, recipient_id: i64, owner: &str, reply: &str) -> Result<()> {
        self.finish(recipient_id, owner, RecipientState::Failed, reply, None)
            .await
    }

    /// Sets the outcome of an attempt, but only while `owner` still holds the lease: after a
    /// takeover (or a `queue_delete`) the row is someone else's business and `LeaseLost` tells
    /// the runner to drop its result. An expired lease nobody has taken over is still honoured,
    /// since nobody else can have acted on the recipient.
    async fn finish(
        &self,
        recipient_id: i64,
        owner: &str,
        state: RecipientState,
        reply: &str,
        next_attempt_at_ms: Option<i64>,
    ) -> Result<()> {
        let updated = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "UPDATE queue_recipients SET state = $1, last_reply = $2, \
                   next_attempt_at = COALESCE($3, next_attempt_at), \
                   lease_owner = NULL, lease_expires = NULL \
                 WHERE id = $4 AND lease_owner = $5 AND state = 'queued'",
            )
            .bind(state.as_str())
            .bind(reply)
            .bind(next_attempt_at_ms)
            .bind(recipient_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(Error::LeaseLost);
        }
        Ok(())
    }

    /// Gives up every lease `owner` holds (a runner shutting down), making those recipients
    /// claimable at once. The attempts already recorded stay counted. Returns how many.
    pub async fn release_leases(&self, owner: &str) -> Result<u64> {
        let released = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "UPDATE queue_recipients SET lease_owner = NULL, lease_expires = NULL \
                 WHERE lease_owner = $1",
            )
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(released)
    }

    /// When the next queued recipient becomes claimable: its next_attempt_at, or its lease
    /// expiry when a lease runs past that (a runner sleeping until then would otherwise wake
    /// only to find the row leased). `None` when nothing is queued.
    pub async fn next_due_ms(&self) -> Result<Option<i64>> {
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT MIN(CASE WHEN lease_expires IS NOT NULL AND lease_expires > next_attempt_at \
                                 THEN lease_expires ELSE next_attempt_at END) AS due \
                 FROM queue_recipients WHERE state = 'queued'",
            )
            .fetch_one(pool)
            .await?;
            Ok(row.try_get::<Option<i64>, _>("due")?)
        })
    }

    /// Up to `limit` messages, oldest first, with all their recipients; with `state`, only
    /// messages that have at least one recipient in that state.
    pub async fn queue_list(
        &self,
        state: Option<RecipientState>,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>> {
        let filter = match state {
            Some(_) => {
                "WHERE EXISTS (SELECT 1 FROM queue_recipients s \
                               WHERE s.message_id = queue_messages.id AND s.state = $2)"
            }
            None => "",
        };
        let sql = format!(
            "SELECT {JOINED_COLUMNS} FROM \
               (SELECT id, sender, size, created_at FROM queue_messages {filter} \
                ORDER BY created_at, id LIMIT $1) m \
             JOIN queue_recipients r ON r.message_id = m.id \
             ORDER BY m.created_at, m.id, r.id"
        );
        with_pool!(self, |pool| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(i64::from(limit));
            if let Some(state) = state {
                query = query.bind(state.as_str());
            }
            let rows = query.fetch_all(pool).await?;
            Ok(group_rows!(rows))
        })
    }

    /// One message with all its recipients.
    pub async fn queue_show(&self, queue_id: &str) -> Result<Option<QueuedMessage>> {
        let sql = format!(
            "SELECT {JOINED_COLUMNS} FROM queue_messages m \
             JOIN queue_recipients r ON r.message_id = m.id \
             WHERE m.id = $1 ORDER BY r.id"
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(queue_id)
                .fetch_all(pool)
                .await?;
            Ok(group_rows!(rows).into_iter().next())
        })
    }

    /// Makes the message's queued recipients due now; delivered and failed ones are left
    /// alone (a failed one has had its bounce). Returns how many were rescheduled;
    /// `NotFound` for an unknown message.
    pub async fn queue_retry(&self, queue_id: &str) -> Result<u64> {
        let now = now_ms();
        let updated = write_tx!(self, |tx, _backend| {
            let exists = sqlx::query("SELECT 1 FROM queue_messages WHERE id = $1")
                .bind(queue_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(Error::NotFound(format!("queue message {queue_id}")));
            }
            sqlx::query(
                "UPDATE queue_recipients SET next_attempt_at = $1 \
                 WHERE message_id = $2 AND state = 'queued'",
            )
            .bind(now)
            .bind(queue_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(updated)
    }

    /// Deletes a message, its content and all its recipients (history included). A runner
    /// still holding a lease on one of them gets `LeaseLost` when it reports. Returns the number
    /// of recipients removed; `NotFound` for an unknown message.
    pub async fn queue_delete(&self, queue_id: &str) -> Result<u64> {
        let removed = write_tx!(self, |tx, _backend| {
            let recipients = sqlx::query("DELETE FROM queue_recipients WHERE message_id = $1")
                .bind(queue_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let messages = sqlx::query("DELETE FROM queue_messages WHERE id = $1")
                .bind(queue_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if messages == 0 {
                return Err(Error::NotFound(format!("queue message {queue_id}")));
            }
            recipients
        });
        Ok(removed)
    }
}

/// The recipients once each, in first-seen order. A client that names the same recipient twice
/// must not get two copies: RFC 5321 §2.4 makes the domain case-insensitive while the local part
/// is the receiving host's business, so only the domain is folded here (the directory folds
/// local parts of our own domains when it resolves them).
fn distinct_recipients(recipients: &[String]) -> Vec<&String> {
    let mut seen = std::collections::HashSet::new();
    recipients
        .iter()
        .filter(|r| {
            let key = match r.rsplit_once('@') {
                Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
                None => (*r).clone(),
            };
            seen.insert(key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_url_safe_and_distinct() {
        let a = new_queue_id();
        let b = new_queue_id();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn recipient_states_round_trip() {
        for state in [
            RecipientState::Queued,
            RecipientState::Delivered,
            RecipientState::Failed,
        ] {
            assert_eq!(state.as_str().parse::<RecipientState>().unwrap(), state);
        }
        assert!("bounced".parse::<RecipientState>().is_err());
    }
}
