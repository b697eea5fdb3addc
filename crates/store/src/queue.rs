//! The outbound queue: message content stored once, one row per recipient carrying its
//! delivery state, and leases that let several queue runners share the work.
//!
//! Invariants: a recipient is leased to at most one runner at a time; `claim` records the
//! attempt (attempts + 1, last_attempt_at) before the runner makes it, so a crash mid-attempt
//! can never cause a hot retry loop; only the lease holder can record the outcome
//! (`Error::LeaseLost` otherwise). Delivered and failed recipients stay as history until the
//! message is deleted with `queue_delete`.
//!
//! The queue also carries each message's delivery status notification parameters (RFC 3461
//! ENVID, RET, NOTIFY, ORCPT) and its REQUIRETLS flag (RFC 8689), and records an outcome and the
//! notification it causes in one transaction (`mark_failed_with_bounce` and friends): a crash
//! can neither lose a bounce for a failed recipient nor bounce a recipient twice.
//!
//! Deliberately absent: retry schedules, composing bounces and routing, which belong to the
//! MTA; the store only keeps the notification the MTA hands it.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use sqlx::Row;

use crate::{Backend, Error, Result, Store, now_ms, to_u32, to_u64, with_pool, write_tx};

/// A message to enqueue. `sender` is the reverse-path; "" is the null sender of bounces
/// (RFC 5321 §4.5.5).
///
/// `rcpt_dsn` is either empty (every recipient gets the defaults: NOTIFY not given, no ORCPT)
/// or parallel to `recipients`. Build one with `..Default::default()` for the fields a caller
/// does not care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewMessage<'a> {
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub content: &'a [u8],
    /// MAIL FROM ENVID= (RFC 3461 §4.4), already xtext-decoded.
    pub envid: Option<&'a str>,
    /// MAIL FROM RET= (RFC 3461 §4.3); `None` when the client did not say.
    pub ret: Option<Ret>,
    pub rcpt_dsn: &'a [RecipientDsn],
    /// MAIL FROM REQUIRETLS (RFC 8689): relay only over verified TLS.
    pub requiretls: bool,
    /// The W3C `traceparent` of the span that queued it, continued by delivery attempts.
    pub trace_context: Option<&'a str>,
}

/// How much of the original message a DSN returns (RFC 3461 §4.3: RET=FULL or RET=HDRS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    Full,
    Headers,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "full",
            Ret::Headers => "headers",
        }
    }
}

impl std::fmt::Display for Ret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ret {
    type Err = Error;
    /// Accepts the stored names and RFC 3461's keywords, in any case.
    fn from_str(s: &str) -> Result<Ret> {
        if s.eq_ignore_ascii_case("full") {
            Ok(Ret::Full)
        } else if s.eq_ignore_ascii_case("headers") || s.eq_ignore_ascii_case("hdrs") {
            Ok(Ret::Headers)
        } else {
            Err(Error::Invalid(format!("RET value {s:?}")))
        }
    }
}

/// RCPT TO NOTIFY= (RFC 3461 §4.1). `explicit` is false when the client gave no NOTIFY, which
/// RFC 3461 §4.1 says means "FAILURE,DELAY"; the `wants_*` methods apply that default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
    pub explicit: bool,
}

impl Notify {
    /// Whether a "failed" DSN goes out when this recipient fails permanently.
    pub fn wants_failure(&self) -> bool {
        !self.explicit || (!self.never && self.failure)
    }

    /// Whether a "delayed" DSN may go out while this recipient is still being retried.
    pub fn wants_delay(&self) -> bool {
        !self.explicit || (!self.never && self.delay)
    }

    /// Whether a "delivered" DSN goes out on success; never by default.
    pub fn wants_success(&self) -> bool {
        self.explicit && !self.never && self.success
    }

    /// The stored form: NULL when not given, else the RFC 3461 keywords.
    fn to_column(self) -> Option<String> {
        if !self.explicit {
            return None;
        }
        if self.never {
            return Some("NEVER".into());
        }
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        Some(words.join(","))
    }

    /// Reads the stored form back; an unknown keyword means the row is corrupt.
    fn from_column(column: Option<&str>) -> Result<Notify> {
        let Some(column) = column else {
            return Ok(Notify::default());
        };
        let mut notify = Notify {
            explicit: true,
            ..Notify::default()
        };
        for word in column.split(',').filter(|w| !w.is_empty()) {
            match word {
                "NEVER" => notify.never = true,
                "SUCCESS" => notify.success = true,
                "FAILURE" => notify.failure = true,
                "DELAY" => notify.delay = true,
                other => return Err(Error::Internal(format!("stored NOTIFY {other:?}"))),
            }
        }
        Ok(notify)
    }
}

/// The DSN parameters of one recipient (RFC 3461 §4.1, §4.2). `orcpt` is kept as given, with
/// its address type, e.g. `rfc822;bob@example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientDsn {
    pub notify: Notify,
    pub orcpt: Option<String>,
}

/// One recipient leased to a runner by [`Store::claim`]. `attempts` already counts the
/// attempt the runner is about to make. `delay_warned` is true once a "delayed" DSN has been
/// enqueued for this recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub recipient_id: i64,
    pub queue_id: String,
    pub sender: String,
    pub address: String,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub notify: Notify,
    pub orcpt: Option<String>,
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    pub requiretls: bool,
    pub delay_warned: bool,
}

/// Which messages [`Store::queue_filter`] returns. Every given criterion must hold; `state`
/// and `domain` must hold for one and the same recipient ("messages with a queued recipient
/// at example.org"). Matching is ASCII case-insensitive. `limit` 0 means 100.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueFilter {
    pub state: Option<RecipientState>,
    /// A recipient's domain, compared whole.
    pub domain: Option<String>,
    /// A substring of the reverse-path.
    pub sender: Option<String>,
    /// Only messages created more than this many milliseconds ago.
    pub older_than_ms: Option<i64>,
    pub limit: u32,
}

/// Counts for the admin overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Recipients per state; every state is listed, zero counts included.
    pub by_state: Vec<(RecipientState, u64)>,
    /// Queued recipients per lowercased domain, most first (ties by name).
    pub by_domain: Vec<(String, u64)>,
    /// `created_at` of the oldest message that still has a queued recipient.
    pub oldest_queued_ms: Option<i64>,
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
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    pub requiretls: bool,
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
    pub notify: Notify,
    pub orcpt: Option<String>,
    pub delay_warned: bool,
}

/// What an attempt came to, as `finish` records it.
/// One attempt's outcome for [`Store::record_outcomes`].
pub struct OutcomeRecord<'a> {
    pub recipient_id: i64,
    pub state: RecipientState,
    /// The reply recorded as the recipient's last reply.
    pub reply: &'a str,
    /// For a deferral: when to try again.
    pub next_attempt_at_ms: Option<i64>,
    /// A DSN enqueued in the same transaction (for a deferral, the "delayed" warning).
    pub notification: Option<NewMessage<'a>>,
}

/// What [`Store::record_outcomes`] did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Written; the notification's queue id when there was one.
    Done(Option<String>),
    /// Another runner (or an admin) has the recipient now: nothing was written.
    LeaseLost,
}

struct Outcome<'a> {
    state: RecipientState,
    reply: &'a str,
    next_attempt_at_ms: Option<i64>,
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
            notify: Notify::from_column($row.try_get::<Option<String>, _>("notify")?.as_deref())?,
            orcpt: $row.try_get("orcpt")?,
            delay_warned: $row.try_get("delay_warned")?,
        }
    }};
}

/// Columns of a message joined with its recipients, as `recipient_from_row!` and
/// `group_rows!` read them.
const JOINED_COLUMNS: &str = "m.id AS mid, m.sender, m.size, m.created_at, m.envid, m.ret, \
    m.requiretls, r.id AS rid, r.address, r.state, r.attempts, r.next_attempt_at, r.last_reply, \
    r.lease_owner, r.lease_expires, r.notify, r.orcpt, r.delay_warned";

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
                    envid: row.try_get("envid")?,
                    ret: parse_ret(row.try_get("ret")?)?,
                    requiretls: row.try_get("requiretls")?,
                    recipients: vec![recipient],
                }),
            }
        }
        out
    }};
}

/// Reads the stored RET column.
fn parse_ret(column: Option<String>) -> Result<Option<Ret>> {
    column
        .map(|r| {
            r.parse()
                .map_err(|_| Error::Internal(format!("stored RET {r:?}")))
        })
        .transpose()
}

/// The RETURNING clause of every statement that hands out leases, as `claim_from_row!` reads
/// it. SQLite's RETURNING may not name other tables, hence the scalar subqueries for the
/// message's columns.
macro_rules! claim_returning {
    () => {
        " RETURNING id, message_id, address, attempts, notify, orcpt, delay_warned, \
          (SELECT sender FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS sender, \
          (SELECT created_at FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS created_at, \
          (SELECT envid FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS envid, \
          (SELECT ret FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS ret, \
          (SELECT requiretls FROM queue_messages m WHERE m.id = queue_recipients.message_id) AS requiretls"
    };
}

macro_rules! claim_from_row {
    ($row:expr) => {{
        let notify: Option<String> = $row.try_get("notify")?;
        Claim {
            recipient_id: $row.try_get("id")?,
            queue_id: $row.try_get("message_id")?,
            sender: $row.try_get("sender")?,
            address: $row.try_get("address")?,
            attempts: to_u32($row.try_get("attempts")?, "attempts")?,
            created_at_ms: $row.try_get("created_at")?,
            notify: Notify::from_column(notify.as_deref())?,
            orcpt: $row.try_get("orcpt")?,
            envid: $row.try_get("envid")?,
            ret: parse_ret($row.try_get("ret")?)?,
            requiretls: $row.try_get("requiretls")?,
            delay_warned: $row.try_get("delay_warned")?,
        }
    }};
}

/// The claiming UPDATE. On PostgreSQL the inner SELECT locks the rows it picks with
/// `FOR UPDATE SKIP LOCKED`, so concurrent runners neither wait for each other nor pick the
/// same row; in READ COMMITTED a row updated meanwhile is re-checked against the WHERE clause
/// once locked. SQLite has no row locks: the whole statement runs inside one IMMEDIATE
/// transaction, which already excludes every other writer.
/// Outcomes per UPDATE in [`Store::record_outcomes`] (five bound parameters each).
const OUTCOME_ROWS: usize = 500;

const CLAIM_PG: &str = concat!(
    "UPDATE queue_recipients \
     SET lease_owner = $1, lease_expires = $2 + $3, attempts = attempts + 1, last_attempt_at = $2 \
     WHERE id IN (SELECT id FROM queue_recipients \
                  WHERE state = 'queued' AND next_attempt_at <= $2 \
                    AND (lease_owner IS NULL OR lease_expires <= $2) \
                  ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)",
    claim_returning!()
);

const CLAIM_SQLITE: &str = concat!(
    "UPDATE queue_recipients \
     SET lease_owner = $1, lease_expires = $2 + $3, attempts = attempts + 1, last_attempt_at = $2 \
     WHERE id IN (SELECT id FROM queue_recipients \
                  WHERE state = 'queued' AND next_attempt_at <= $2 \
                    AND (lease_owner IS NULL OR lease_expires <= $2) \
                  ORDER BY next_attempt_at, id LIMIT $4)",
    claim_returning!()
);

/// The admin "bounce now" lease: every queued recipient of one message that no runner is
/// working on. A recipient under a live runner lease is left alone, since that runner may be
/// delivering it right now and a bounce for a delivered message would be a lie. The attempt
/// count is not touched: nothing is attempted. The same statement serves both backends (no
/// `SKIP LOCKED` needed: on PostgreSQL a concurrent claim holding a row makes this wait, then
/// re-check the lease condition).
const BOUNCE_LEASE: &str = concat!(
    "UPDATE queue_recipients SET lease_owner = $1, lease_expires = $2 + $3 \
     WHERE message_id = $4 AND state = 'queued' \
       AND (lease_owner IS NULL OR lease_expires <= $2)",
    claim_returning!()
);

/// How long the admin "bounce now" lease lasts: ample time for the caller to compose and
/// record the bounces, short enough that a crashed admin call does not stall the recipients.
const BOUNCE_LEASE_MS: i64 = 5 * 60 * 1000;

/// A validated [`NewMessage`], ready to be inserted inside a transaction by
/// `insert_prepared!`.
pub(crate) struct Prepared<'a> {
    pub(crate) id: String,
    pub(crate) now: i64,
    pub(crate) size: i64,
    pub(crate) msg: NewMessage<'a>,
    /// (address, stored NOTIFY, ORCPT), deduplicated.
    pub(crate) recipients: Vec<(&'a str, Option<String>, Option<&'a str>)>,
}

impl<'a> Prepared<'a> {
    /// The owned form the PostgreSQL group commit writes.
    pub(crate) fn group_row(&self) -> crate::group_commit::Row {
        crate::group_commit::Row {
            id: self.id.clone(),
            sender: self.msg.sender.to_string(),
            content: self.msg.content.to_vec(),
            size: self.size,
            now: self.now,
            envid: self.msg.envid.map(str::to_string),
            ret: self.msg.ret.map(Ret::as_str),
            requiretls: self.msg.requiretls,
            addresses: self.recipients.iter().map(|r| r.0.to_string()).collect(),
            notify: self.recipients.iter().map(|r| r.1.clone()).collect(),
            orcpt: self
                .recipients
                .iter()
                .map(|r| r.2.map(str::to_string))
                .collect(),
            trace_context: self.msg.trace_context.map(str::to_string),
        }
    }

    pub(crate) fn new(msg: NewMessage<'a>) -> Result<Prepared<'a>> {
        if msg.recipients.is_empty() {
            return Err(Error::Invalid("message has no recipients".into()));
        }
        if msg.recipients.iter().any(|r| r.is_empty()) {
            return Err(Error::Invalid("empty recipient address".into()));
        }
        if !msg.rcpt_dsn.is_empty() && msg.rcpt_dsn.len() != msg.recipients.len() {
            return Err(Error::Invalid(format!(
                "{} recipients but {} DSN parameter sets",
                msg.recipients.len(),
                msg.rcpt_dsn.len()
            )));
        }
        let size = i64::try_from(msg.content.len())
            .map_err(|_| Error::Invalid("message too large".into()))?;
        let recipients = distinct_recipients(msg.recipients)
            .into_iter()
            .map(|i| {
                let address = msg.recipients[i].as_str();
                match msg.rcpt_dsn.get(i) {
                    Some(dsn) => (address, dsn.notify.to_column(), dsn.orcpt.as_deref()),
                    None => (address, None, None),
                }
            })
            .collect();
        Ok(Prepared {
            id: new_queue_id(),
            now: now_ms(),
            size,
            msg,
            recipients,
        })
    }
}

/// Inserts a [`Prepared`] message and its recipients through the transaction `$tx`; the
/// recipients are due at once.
macro_rules! insert_prepared {
    ($tx:ident, $prepared:expr) => {{
        let p: &Prepared<'_> = $prepared;
        sqlx::query(
            "INSERT INTO queue_messages \
               (id, sender, content, size, created_at, envid, ret, requiretls, trace_context) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&p.id)
        .bind(p.msg.sender)
        .bind(p.msg.content)
        .bind(p.size)
        .bind(p.now)
        .bind(p.msg.envid)
        .bind(p.msg.ret.map(Ret::as_str))
        .bind(p.msg.requiretls)
        .bind(p.msg.trace_context)
        .execute(&mut *$tx)
        .await?;
        for (address, notify, orcpt) in &p.recipients {
            sqlx::query(
                "INSERT INTO queue_recipients (message_id, address, next_attempt_at, notify, orcpt) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&p.id)
            .bind(*address)
            .bind(p.now)
            .bind(notify.as_deref())
            .bind(*orcpt)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}
pub(crate) use insert_prepared;

/// Claims sorted for runners: RETURNING promises no order, and runners batch by message.
fn sort_claims(claims: &mut [Claim]) {
    claims.sort_by(|a, b| {
        (a.created_at_ms, &a.queue_id, a.recipient_id).cmp(&(
            b.created_at_ms,
            &b.queue_id,
            b.recipient_id,
        ))
    });
}

impl Store {
    /// Stores a message and its recipients in one transaction and returns its queue id. The
    /// recipients are due at once. Addresses are stored as given: remote local parts may be
    /// case-sensitive (RFC 5321 §2.4). A recipient named twice is stored once, with the DSN
    /// parameters of its first occurrence.
    ///
    /// On PostgreSQL this is one statement (a data-modifying CTE), and concurrent calls share
    /// one transaction (`group_commit.rs`): the path every accepted message takes, where the
    /// commit is the expensive part. It returns only once the message is committed.
    pub async fn enqueue(&self, msg: NewMessage<'_>) -> Result<String> {
        let prepared = Prepared::new(msg)?;
        if let crate::Pool::Pg(_) = self.pool() {
            let row = prepared.group_row();
            self.group_commit().write(row).await?;
            return Ok(prepared.id);
        }
        write_tx!(self, |tx, _backend| {
            insert_prepared!(tx, &prepared);
        });
        Ok(prepared.id)
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
                claims.push(claim_from_row!(row));
            }
            claims
        });
        sort_claims(&mut claims);
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

    /// The contents of several queued messages in one query, as `(queue id, content)`; ids
    /// that are gone are left out.
    pub async fn message_contents(&self, queue_ids: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
        if queue_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, content FROM queue_messages WHERE id IN ({})",
            crate::placeholders(1, queue_ids.len())
        );
        with_pool!(self, |pool| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for id in queue_ids {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push((row.try_get("id")?, row.try_get("content")?));
            }
            Ok(out)
        })
    }

    /// The stored trace context (`traceparent`) of each of `queue_ids` that has one.
    pub async fn trace_contexts(&self, queue_ids: &[&str]) -> Result<HashMap<String, String>> {
        if queue_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT id, trace_context FROM queue_messages \
             WHERE trace_context IS NOT NULL AND id IN ({})",
            crate::placeholders(1, queue_ids.len())
        );
        with_pool!(self, |pool| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for id in queue_ids {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(pool).await?;
            let mut out = HashMap::with_capacity(rows.len());
            for row in &rows {
                out.insert(row.try_get("id")?, row.try_get("trace_context")?);
            }
            Ok(out)
        })
    }

    /// Records a successful delivery and ends the lease.
    pub async fn mark_delivered(&self, recipient_id: i64, owner: &str, reply: &str) -> Result<()> {
        self.mark_delivered_with_notice(recipient_id, owner, reply, None)
            .await
            .map(drop)
    }

    /// Records a temporary failure: the recipient stays queued until `next_attempt_at_ms`.
    pub async fn mark_deferred(
        &self,
        recipient_id: i64,
        owner: &str,
        reply: &str,
        next_attempt_at_ms: i64,
    ) -> Result<()> {
        self.mark_deferred_with_warning(recipient_id, owner, reply, next_attempt_at_ms, None)
            .await
            .map(drop)
    }

    /// Records a permanent failure and ends the lease.
    pub async fn mark_failed(&self, recipient_id: i64, owner: &str, reply: &str) -> Result<()> {
        self.mark_failed_with_bounce(recipient_id, owner, reply, None)
            .await
            .map(drop)
    }

    /// Records a successful delivery and, in the same transaction, enqueues `notice` (the
    /// "delivered" DSN a NOTIFY=SUCCESS recipient asked for, RFC 3461 §4.1). Returns the
    /// notice's queue id.
    pub async fn mark_delivered_with_notice(
        &self,
        recipient_id: i64,
        owner: &str,
        reply: &str,
        notice: Option<NewMessage<'_>>,
    ) -> Result<Option<String>> {
        let outcome = Outcome {
            state: RecipientState::Delivered,
            reply,
            next_attempt_at_ms: None,
        };
        self.finish(recipient_id, owner, outcome, notice).await
    }

    /// Records a temporary failure (queued again from `next_attempt_at_ms`) and, in the same
    /// transaction, enqueues `warning`, a "delayed" DSN; when one is given the recipient's
    /// `delay_warned` is set, so the MTA warns only once. Returns the warning's queue id.
    pub async fn mark_deferred_with_warning(
        &self,
        recipient_id: i64,
        owner: &str,
        reply: &str,
        next_attempt_at_ms: i64,
        warning: Option<NewMessage<'_>>,
    ) -> Result<Option<String>> {
        let outcome = Outcome {
            state: RecipientState::Queued,
            reply,
            next_attempt_at_ms: Some(next_attempt_at_ms),
        };
        self.finish(recipient_id, owner, outcome, warning).await
    }

    /// Records a permanent failure and, in the same transaction, enqueues `bounce`, the
    /// "failed" DSN. Either both happen or neither: with `LeaseLost` no bounce is left behind,
    /// and a crash cannot record the failure without its bounce. Returns the bounce's queue id.
    pub async fn mark_failed_with_bounce(
        &self,
        recipient_id: i64,
        owner: &str,
        reply: &str,
        bounce: Option<NewMessage<'_>>,
    ) -> Result<Option<String>> {
        let outcome = Outcome {
            state: RecipientState::Failed,
            reply,
            next_attempt_at_ms: None,
        };
        self.finish(recipient_id, owner, outcome, bounce).await
    }

    /// Sets the outcome of an attempt, but only while `owner` still holds the lease: after a
    /// takeover (or a `queue_delete`) the row is someone else's business and `LeaseLost` tells
    /// the runner to drop its result. An expired lease nobody has taken over is still honoured,
    /// since nobody else can have acted on the recipient. A `notification` is enqueued in the
    /// same transaction; for a deferral it also marks the recipient as warned.
    async fn finish(
        &self,
        recipient_id: i64,
        owner: &str,
        outcome: Outcome<'_>,
        notification: Option<NewMessage<'_>>,
    ) -> Result<Option<String>> {
        let record = OutcomeRecord {
            recipient_id,
            state: outcome.state,
            reply: outcome.reply,
            next_attempt_at_ms: outcome.next_attempt_at_ms,
            notification,
        };
        match self.record_outcomes(owner, vec![record]).await?.pop() {
            Some(Recorded::Done(id)) => Ok(id),
            Some(Recorded::LeaseLost) => Err(Error::LeaseLost),
            None => Err(Error::Internal("record_outcomes returned nothing".into())),
        }
    }

    /// The outcomes of many attempts in one transaction (one commit for all), each with the
    /// rules of [`Store::mark_delivered_with_notice`] and its siblings: written only while
    /// `owner` holds the lease, with its notification or not at all. A recipient whose lease
    /// was lost is reported as [`Recorded::LeaseLost`] and leaves the others untouched. Results
    /// are in the order of `records`. On an error nothing is written.
    pub async fn record_outcomes(
        &self,
        owner: &str,
        records: Vec<OutcomeRecord<'_>>,
    ) -> Result<Vec<Recorded>> {
        // Validate before touching anything, so that a malformed notification cannot leave
        // an outcome recorded without it.
        let mut prepared = Vec::with_capacity(records.len());
        for r in records {
            let warned = r.notification.is_some() && r.state == RecipientState::Queued;
            let note = r.notification.map(Prepared::new).transpose()?;
            prepared.push((
                r.recipient_id,
                r.state,
                r.reply,
                r.next_attempt_at_ms,
                warned,
                note,
            ));
        }
        let mut out = Vec::with_capacity(prepared.len());
        write_tx!(self, |tx, _backend| {
            // One UPDATE per chunk for every outcome, joined to a VALUES list of them; it
            // returns the ids it updated, so a lost lease is told apart per recipient.
            let mut updated: HashSet<i64> = HashSet::with_capacity(prepared.len());
            for chunk in prepared.chunks(OUTCOME_ROWS) {
                let rows = (0..chunk.len())
                    .map(|r| {
                        let p = 2 + r * 5;
                        format!(
                            "(CAST(${} AS BIGINT), CAST(${} AS TEXT), CAST(${} AS TEXT), \
                              CAST(${} AS BIGINT), CAST(${} AS BOOLEAN))",
                            p,
                            p + 1,
                            p + 2,
                            p + 3,
                            p + 4
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "WITH v (id, state, reply, next_at, warned) AS (VALUES {rows}) \
                     UPDATE queue_recipients SET state = v.state, last_reply = v.reply, \
                       next_attempt_at = COALESCE(v.next_at, queue_recipients.next_attempt_at), \
                       delay_warned = (queue_recipients.delay_warned OR v.warned), \
                       lease_owner = NULL, lease_expires = NULL \
                     FROM v \
                     WHERE queue_recipients.id = v.id AND queue_recipients.lease_owner = $1 \
                       AND queue_recipients.state = 'queued' \
                     RETURNING queue_recipients.id"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(owner);
                for (recipient_id, state, reply, next_at, warned, _) in chunk {
                    query = query
                        .bind(*recipient_id)
                        .bind(state.as_str())
                        .bind(*reply)
                        .bind(*next_at)
                        .bind(*warned);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    updated.insert(row.try_get("id")?);
                }
            }
            for (recipient_id, _, _, _, _, note) in &prepared {
                // `remove`: a recipient named twice is updated once, by its first record.
                if !updated.remove(recipient_id) {
                    out.push(Recorded::LeaseLost);
                    continue;
                }
                if let Some(note) = note {
                    insert_prepared!(tx, note);
                }
                out.push(Recorded::Done(note.as_ref().map(|p| p.id.clone())));
            }
        });
        Ok(out)
    }

    /// Deletes up to `limit` finished messages (no recipient still queued) whose last attempt,
    /// like their arrival, is older than `before_ms`, with their recipients. The delivery keys
    /// the mailboxes keep are not touched, and recipient ids are never reused (an identity on
    /// PostgreSQL, AUTOINCREMENT on SQLite), so no later message can be mistaken for one
    /// delivered before. Returns how many messages went.
    pub async fn purge_finished(&self, before_ms: i64, limit: u32) -> Result<u64> {
        if limit == 0 {
            return Ok(0);
        }
        let purged = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "DELETE FROM queue_messages WHERE id IN ( \
                   SELECT m.id FROM queue_messages m WHERE m.created_at < $1 \
                   AND NOT EXISTS (SELECT 1 FROM queue_recipients r \
                     WHERE r.message_id = m.id \
                     AND (r.state = 'queued' OR COALESCE(r.last_attempt_at, 0) >= $1)) \
                   ORDER BY m.created_at LIMIT $2)",
            )
            .bind(before_ms)
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(purged)
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
               (SELECT id, sender, size, created_at, envid, ret, requiretls \
                FROM queue_messages {filter} \
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

    /// Messages matching `filter`, oldest first, each with all its recipients (see
    /// [`QueueFilter`] for how the criteria combine).
    pub async fn queue_filter(&self, filter: &QueueFilter) -> Result<Vec<QueuedMessage>> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        let mut binds: Vec<FilterBind> = vec![FilterBind::Int(i64::from(limit))];
        let mut message_conditions: Vec<String> = Vec::new();
        let mut recipient_conditions: Vec<String> = Vec::new();
        if let Some(state) = filter.state {
            binds.push(FilterBind::Text(state.as_str().to_string()));
            recipient_conditions.push(format!("s.state = ${}", binds.len()));
        }
        if let Some(domain) = &filter.domain {
            // The domain is what follows the last '@' (RFC 5321 §4.1.2), so a suffix match on
            // "@domain" with LIKE's wildcards escaped is exactly "the domain is `domain`".
            let domain = domain.trim_start_matches('@').to_ascii_lowercase();
            binds.push(FilterBind::Text(format!("%@{}", like_escape(&domain))));
            recipient_conditions.push(format!(
                "LOWER(s.address) LIKE ${} ESCAPE '\\'",
                binds.len()
            ));
        }
        if !recipient_conditions.is_empty() {
            message_conditions.push(format!(
                "EXISTS (SELECT 1 FROM queue_recipients s \
                         WHERE s.message_id = queue_messages.id AND {})",
                recipient_conditions.join(" AND ")
            ));
        }
        if let Some(sender) = &filter.sender {
            binds.push(FilterBind::Text(format!(
                "%{}%",
                like_escape(&sender.to_ascii_lowercase())
            )));
            message_conditions.push(format!("LOWER(sender) LIKE ${} ESCAPE '\\'", binds.len()));
        }
        if let Some(older) = filter.older_than_ms {
            binds.push(FilterBind::Int(now_ms().saturating_sub(older)));
            message_conditions.push(format!("created_at < ${}", binds.len()));
        }
        let filter_sql = if message_conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", message_conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {JOINED_COLUMNS} FROM \
               (SELECT id, sender, size, created_at, envid, ret, requiretls FROM queue_messages \
                {filter_sql} ORDER BY created_at, id LIMIT $1) m \
             JOIN queue_recipients r ON r.message_id = m.id \
             ORDER BY m.created_at, m.id, r.id"
        );
        with_pool!(self, |pool| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for bind in &binds {
                query = match bind {
                    FilterBind::Int(v) => query.bind(*v),
                    FilterBind::Text(v) => query.bind(v.as_str()),
                };
            }
            let rows = query.fetch_all(pool).await?;
            Ok(group_rows!(rows))
        })
    }

    /// Counts per state and per domain, and the age of the oldest queued message.
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        let domain_sql = match self.backend() {
            // Everything after the last '@' ('' when there is none, e.g. <postmaster>); the
            // regular expression is greedy, so "^.*@" eats up to the last '@'.
            Backend::Postgres => {
                "SELECT LOWER(CASE WHEN strpos(address, '@') = 0 THEN '' \
                                   ELSE regexp_replace(address, '^.*@', '') END) AS domain, \
                        COUNT(*) AS n \
                 FROM queue_recipients WHERE state = 'queued' GROUP BY 1"
            }
            // SQLite has neither regexp nor a reverse search. rtrim(address, chars) with every
            // character of the address except '@' strips the domain and stops at the last
            // '@', so its length is where the domain starts.
            Backend::Sqlite => {
                "SELECT LOWER(CASE WHEN instr(address, '@') = 0 THEN '' \
                                   ELSE substr(address, \
                                     length(rtrim(address, replace(address, '@', ''))) + 1) \
                              END) AS domain, \
                        COUNT(*) AS n \
                 FROM queue_recipients WHERE state = 'queued' GROUP BY 1"
            }
        };
        with_pool!(self, |pool| {
            let mut by_state = vec![
                (RecipientState::Queued, 0),
                (RecipientState::Delivered, 0),
                (RecipientState::Failed, 0),
            ];
            let rows =
                sqlx::query("SELECT state, COUNT(*) AS n FROM queue_recipients GROUP BY state")
                    .fetch_all(pool)
                    .await?;
            for row in &rows {
                let state: RecipientState = row.try_get::<String, _>("state")?.parse()?;
                let n = to_u64(row.try_get("n")?, "count")?;
                if let Some(entry) = by_state.iter_mut().find(|(s, _)| *s == state) {
                    entry.1 = n;
                }
            }
            let rows = sqlx::query(domain_sql).fetch_all(pool).await?;
            let mut by_domain = Vec::with_capacity(rows.len());
            for row in &rows {
                by_domain.push((
                    row.try_get::<String, _>("domain")?,
                    to_u64(row.try_get("n")?, "count")?,
                ));
            }
            by_domain.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let row = sqlx::query(
                "SELECT MIN(created_at) AS oldest FROM queue_messages m \
                 WHERE EXISTS (SELECT 1 FROM queue_recipients r \
                               WHERE r.message_id = m.id AND r.state = 'queued')",
            )
            .fetch_one(pool)
            .await?;
            Ok(QueueStats {
                by_state,
                by_domain,
                oldest_queued_ms: row.try_get("oldest")?,
            })
        })
    }

    /// The admin "bounce now": leases every queued recipient of `queue_id` that no runner is
    /// working on to a fresh owner `admin-bounce:<random>` for five minutes, and returns that
    /// owner with the claims. The caller then records each with `mark_failed_with_bounce`
    /// under that owner. Recipients under a live runner lease are skipped (that runner may be
    /// delivering them); `NotFound` for an unknown message. The attempt count is unchanged.
    pub async fn queue_bounce(&self, queue_id: &str) -> Result<(String, Vec<Claim>)> {
        let owner = format!("admin-bounce:{}", new_queue_id());
        let now = now_ms();
        let mut claims = write_tx!(self, |tx, _backend| {
            let exists = sqlx::query("SELECT 1 FROM queue_messages WHERE id = $1")
                .bind(queue_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(Error::NotFound(format!("queue message {queue_id}")));
            }
            let rows = sqlx::query(BOUNCE_LEASE)
                .bind(&owner)
                .bind(now)
                .bind(BOUNCE_LEASE_MS)
                .bind(queue_id)
                .fetch_all(&mut *tx)
                .await?;
            let mut claims = Vec::with_capacity(rows.len());
            for row in &rows {
                claims.push(claim_from_row!(row));
            }
            claims
        });
        sort_claims(&mut claims);
        Ok((owner, claims))
    }
}

/// A value bound to the dynamically built `queue_filter` query.
enum FilterBind {
    Int(i64),
    Text(String),
}

/// Escapes LIKE's wildcards (and the escape character itself) with '\'.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The indices of the recipients once each, in first-seen order. A client that names the same recipient twice
/// must not get two copies: RFC 5321 §2.4 makes the domain case-insensitive while the local part
/// is the receiving host's business, so only the domain is folded here (the directory folds
/// local parts of our own domains when it resolves them).
fn distinct_recipients(recipients: &[String]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            let key = match r.rsplit_once('@') {
                Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
                None => (*r).clone(),
            };
            seen.insert(key)
        })
        .map(|(i, _)| i)
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

    #[test]
    fn notify_round_trips_through_its_column() {
        let cases = [
            Notify::default(),
            Notify {
                never: true,
                explicit: true,
                ..Notify::default()
            },
            Notify {
                success: true,
                delay: true,
                explicit: true,
                ..Notify::default()
            },
            Notify {
                success: true,
                failure: true,
                delay: true,
                explicit: true,
                never: false,
            },
        ];
        for notify in cases {
            let column = notify.to_column();
            assert_eq!(
                Notify::from_column(column.as_deref()).unwrap(),
                notify,
                "{column:?}"
            );
        }
        assert_eq!(Notify::default().to_column(), None);
        assert_eq!(cases[2].to_column().as_deref(), Some("SUCCESS,DELAY"));
        assert!(Notify::from_column(Some("SOMETIMES")).is_err());
    }

    #[test]
    fn notify_defaults_follow_rfc3461() {
        let unspecified = Notify::default();
        assert!(unspecified.wants_failure() && unspecified.wants_delay());
        assert!(!unspecified.wants_success());
        let never = Notify {
            never: true,
            explicit: true,
            ..Notify::default()
        };
        assert!(!never.wants_failure() && !never.wants_delay() && !never.wants_success());
    }

    #[test]
    fn ret_parses_stored_and_rfc_names() {
        for ret in [Ret::Full, Ret::Headers] {
            assert_eq!(ret.as_str().parse::<Ret>().unwrap(), ret);
        }
        assert_eq!("HDRS".parse::<Ret>().unwrap(), Ret::Headers);
        assert_eq!("Full".parse::<Ret>().unwrap(), Ret::Full);
        assert!("body".parse::<Ret>().is_err());
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_escape("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(like_escape("plain.test"), "plain.test");
    }

    #[test]
    fn distinct_recipients_keeps_first_indices() {
        let r: Vec<String> = ["a@x.test", "b@x.test", "a@X.TEST", "A@x.test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(distinct_recipients(&r), [0, 1, 3]);
    }
}
