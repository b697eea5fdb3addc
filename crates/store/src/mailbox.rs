//! Mailboxes with IMAP semantics: UIDs, UIDVALIDITY, flags and CONDSTORE mod-sequences, and
//! exactly-once local delivery.
//!
//! Invariants kept here (RFC 9051 §2.3.1.1, RFC 7162 §3): a mailbox's UIDVALIDITY never changes
//! and is never reused by a later mailbox of the same account; each new message takes the
//! mailbox's `uid_next`, which only grows; every change to a message (arrival, flag change)
//! and every expunge raises the mailbox's `highest_modseq`, and a changed message carries the
//! new value. Every write that touches a mailbox first locks its row, so these counters are
//! consistent under concurrency on PostgreSQL too.
//!
//! Every path that adds or removes messages also charges or refunds the account's quota usage
//! in the same transaction (`quota.rs`), locking the account row before any mailbox row.
//!
//! Each message's header section is kept beside its content (`headers.rs`). Deliberately
//! absent: message parsing (no envelope or body-structure cache), `\Recent`
//! (per-session state that IMAP4rev2 dropped).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use sqlx::Row;

use crate::changes::mailbox_changed;
use crate::expunged::record_expunged;
use crate::quota::{Budget, charge, lock_budget, lock_mailbox_owner};
use crate::{
    Error, Result, Store, is_foreign_key_violation, now_ms, to_u32, to_u64, validate, value_rows,
    with_pool, write_tx,
};

/// Keys looked up per query by [`Store::deliver_many`] (two bound parameters each, far below
/// either backend's limit).
const SEEN_QUERY_ITEMS: usize = 500;

/// Rows per multi-row INSERT in [`Store::deliver_many`] (at most ten bound parameters each).
const INSERT_ROWS: usize = 200;

/// Content bytes per multi-row INSERT of messages: a batch of large messages is stored in
/// several statements, each far below PostgreSQL's 1 GiB message limit.
const INSERT_BYTES: usize = 16 << 20;

/// Splits rows of the given content sizes into consecutive ranges of at most [`INSERT_ROWS`]
/// rows and, unless a single row is larger, [`INSERT_BYTES`] bytes.
fn insert_chunks(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == INSERT_ROWS || bytes + size > INSERT_BYTES) {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

/// One copy for [`Store::deliver_many`].
#[derive(Debug, Clone, Copy)]
pub struct DeliveryItem<'a> {
    pub account_id: i64,
    /// Wanted mailbox; INBOX when it does not exist.
    pub mailbox: &'a str,
    /// Unique per copy (the queue recipient): the exactly-once key.
    pub delivery_key: &'a str,
    pub content: &'a [u8],
    /// Flags the new message starts with (Sieve imap4flags); usually none.
    pub flags: &'a [String],
}

/// Where a message landed. `duplicate` is true when the delivery key had been seen before and
/// nothing was stored this time; `uid` and `mailbox_id` then name the first copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub uid: u32,
    pub mailbox_id: i64,
    pub duplicate: bool,
}

/// A mailbox and its counters, as SELECT and STATUS report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub special_use: Option<String>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: u32,
    pub unseen: u32,
}

/// A message's metadata, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Vec<String>,
    pub size: u64,
    pub internal_date_ms: i64,
    pub modseq: u64,
}

/// How `store_flags` combines the given flags with a message's flags (RFC 9051 §6.4.6:
/// `+FLAGS`, `-FLAGS`, `FLAGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

impl FromStr for FlagOp {
    type Err = Error;
    fn from_str(s: &str) -> Result<FlagOp> {
        match s {
            "add" => Ok(FlagOp::Add),
            "remove" => Ok(FlagOp::Remove),
            "replace" => Ok(FlagOp::Replace),
            other => Err(Error::Invalid(format!("flag operation {other:?}"))),
        }
    }
}

/// Above this many UIDs, `store_flags` reads the whole mailbox's metadata in one query instead
/// of one query per UID.
const PER_UID_LOOKUP_MAX: usize = 32;

fn content_size(content: &[u8]) -> Result<i64> {
    i64::try_from(content.len()).map_err(|_| Error::Invalid("message too large".into()))
}

/// RFC 9051 §5.1: INBOX is case-insensitive, every other name is taken as given.
pub(crate) fn canonical_mailbox_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

pub(crate) fn check_mailbox_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("mailbox name {name:?}")));
    }
    Ok(())
}

/// Creates mailbox `$name` for account `$account_id` inside transaction `$tx` and evaluates
/// to its id. Returns `NotFound` (no such account) or `Conflict` (name taken) from the
/// enclosing function. UIDVALIDITY is the current time in seconds, or one more than the
/// account's last one if that is not larger, so a re-created mailbox never repeats a value.
macro_rules! create_mailbox_in {
    ($tx:ident, $account_id:expr, $name:expr, $special_use:expr, $now:expr) => {{
        let account_id: i64 = $account_id;
        let name: &str = $name;
        let special_use: Option<&str> = $special_use;
        let now: i64 = $now;
        let now_secs: i64 = (now / 1000).max(1);
        let row = sqlx::query(
            "UPDATE accounts SET last_uid_validity = \
               CASE WHEN last_uid_validity >= $2 THEN last_uid_validity + 1 ELSE $2 END \
             WHERE id = $1 RETURNING last_uid_validity",
        )
        .bind(account_id)
        .bind(now_secs)
        .fetch_optional(&mut *$tx)
        .await?;
        let Some(row) = row else {
            return Err($crate::Error::NotFound(format!("account {account_id}")));
        };
        let uid_validity: i64 = sqlx::Row::try_get(&row, "last_uid_validity")?;
        $crate::to_u32(uid_validity, "uid_validity")?;
        let row = sqlx::query(
            "INSERT INTO mailboxes (account_id, name, special_use, uid_validity, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(account_id)
        .bind(name)
        .bind(special_use)
        .bind(uid_validity)
        .bind(now)
        .fetch_optional(&mut *$tx)
        .await?;
        let Some(row) = row else {
            return Err($crate::Error::Conflict(format!("mailbox {name} exists")));
        };
        let id: i64 = sqlx::Row::try_get(&row, "id")?;
        id
    }};
}
pub(crate) use create_mailbox_in;

/// Locks mailbox `$id` for the rest of transaction `$tx` (a no-op UPDATE takes PostgreSQL's
/// row lock; SQLite's write transaction is already exclusive) or returns `NotFound`.
macro_rules! lock_mailbox {
    ($tx:ident, $id:expr) => {{
        let id: i64 = $id;
        let locked =
            sqlx::query("UPDATE mailboxes SET highest_modseq = highest_modseq WHERE id = $1")
                .bind(id)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
        if locked == 0 {
            return Err(Error::NotFound(format!("mailbox {id}")));
        }
    }};
}

/// Raises mailbox `$id`'s highest_modseq and evaluates to the new value.
macro_rules! bump_modseq {
    ($tx:ident, $id:expr) => {{
        let row = sqlx::query(
            "UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE id = $1 \
             RETURNING highest_modseq",
        )
        .bind($id)
        .fetch_one(&mut *$tx)
        .await?;
        let modseq: i64 = row.try_get("highest_modseq")?;
        modseq
    }};
}

/// Evaluates to the id of account `$account`'s mailbox `$name`, if it exists.
macro_rules! find_mailbox {
    ($exec:expr, $account:expr, $name:expr) => {{
        let row = sqlx::query("SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2")
            .bind($account)
            .bind($name)
            .fetch_optional($exec)
            .await?;
        match row {
            Some(row) => Some(row.try_get::<i64, _>("id")?),
            None => None,
        }
    }};
}

/// Takes `$count` consecutive UIDs and mod-sequences of mailbox `$mailbox_id` (already known
/// to exist) and evaluates to the first `(uid, modseq)`. It is one UPDATE of the mailbox row,
/// which also locks it until the transaction ends, so UIDs are handed out in commit order.
macro_rules! take_uids {
    ($tx:ident, $mailbox_id:expr, $count:expr) => {{
        let mailbox_id: i64 = $mailbox_id;
        let count = i64::try_from($count).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "UPDATE mailboxes SET uid_next = uid_next + $2, highest_modseq = highest_modseq + $2 \
             WHERE id = $1 RETURNING uid_next - $2 AS uid, highest_modseq - $2 + 1 AS modseq",
        )
        .bind(mailbox_id)
        .bind(count)
        .fetch_one(&mut *$tx)
        .await?;
        let uid: i64 = row.try_get("uid")?;
        let modseq: i64 = row.try_get("modseq")?;
        // RFC 9051 §2.3.1.1: UIDs are 32-bit; a mailbox that used them all up must be
        // re-created (new UIDVALIDITY) before it can take more mail.
        let (Ok(uid32), Ok(_)) = (u32::try_from(uid), u32::try_from(uid + count - 1)) else {
            return Err(Error::Internal(format!(
                "mailbox {mailbox_id} has no UIDs left"
            )));
        };
        (uid32, modseq)
    }};
}

/// Writes the message row for a UID taken with `take_uids!`.
macro_rules! store_message {
    ($tx:ident, $mailbox_id:expr, $uid:expr, $modseq:expr, $content:expr, $flags:expr, $internal_date:expr) => {{
        let content: &[u8] = $content;
        let flags: &[String] = $flags;
        let size =
            i64::try_from(content.len()).map_err(|_| Error::Invalid("message too large".into()))?;
        sqlx::query(
            "INSERT INTO messages \
               (mailbox_id, uid, modseq, flags, seen, deleted, size, internal_date, content, \
                header) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind($mailbox_id)
        .bind(i64::from($uid))
        .bind($modseq)
        .bind(flags.join(" "))
        .bind(i16::from(validate::has_flag(flags, validate::SEEN)))
        .bind(i16::from(validate::has_flag(flags, validate::DELETED)))
        .bind(size)
        .bind($internal_date)
        .bind(content)
        .bind($crate::headers::kept_header(content))
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Stores a message in mailbox `$mailbox_id` (already known to exist) and evaluates to its UID.
macro_rules! insert_message {
    ($tx:ident, $mailbox_id:expr, $content:expr, $flags:expr, $internal_date:expr) => {{
        let mailbox_id: i64 = $mailbox_id;
        let (uid, modseq) = take_uids!($tx, mailbox_id, 1);
        store_message!(
            $tx,
            mailbox_id,
            uid,
            modseq,
            $content,
            $flags,
            $internal_date
        );
        uid
    }};
}

macro_rules! meta_from_row {
    ($row:expr) => {{
        let flags: String = $row.try_get("flags")?;
        MessageMeta {
            uid: to_u32($row.try_get("uid")?, "uid")?,
            flags: validate::split_flags(&flags),
            size: to_u64($row.try_get("size")?, "size")?,
            internal_date_ms: $row.try_get("internal_date")?,
            modseq: to_u64($row.try_get("modseq")?, "modseq")?,
        }
    }};
}

macro_rules! mailbox_from_row {
    ($row:expr) => {
        MailboxInfo {
            id: $row.try_get("id")?,
            account_id: $row.try_get("account_id")?,
            name: $row.try_get("name")?,
            special_use: $row.try_get("special_use")?,
            uid_validity: to_u32($row.try_get("uid_validity")?, "uid_validity")?,
            uid_next: to_u32($row.try_get("uid_next")?, "uid_next")?,
            highest_modseq: to_u64($row.try_get("highest_modseq")?, "highest_modseq")?,
            messages: to_u32($row.try_get("messages")?, "messages")?,
            unseen: to_u32($row.try_get("unseen")?, "unseen")?,
        }
    };
}

const MAILBOX_COLUMNS: &str = "b.id, b.account_id, b.name, b.special_use, b.uid_validity, \
    b.uid_next, b.highest_modseq, \
    (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id) AS messages, \
    (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id AND m.seen = 0) AS unseen";

/// The flags a message has after `op`; all inputs and the output are canonical.
fn apply_flags(op: FlagOp, current: &[String], given: &[String]) -> Result<Vec<String>> {
    match op {
        FlagOp::Add => {
            let mut all = current.to_vec();
            all.extend_from_slice(given);
            validate::canonical_flags(&all)
        }
        FlagOp::Remove => Ok(current
            .iter()
            .filter(|f| !validate::has_flag(given, f))
            .cloned()
            .collect()),
        FlagOp::Replace => Ok(given.to_vec()),
    }
}

impl Store {
    /// Delivers `content` to `mailbox` of account `account_id` (falling back to INBOX when
    /// that mailbox does not exist), exactly once per `(account_id, delivery_key)`: the key is
    /// recorded in the same transaction as the message, so a retry after a crash, or a
    /// concurrent duplicate, stores nothing and gets the first copy's UID with
    /// `duplicate = true`. On PostgreSQL the second of two concurrent inserts of one key waits
    /// for the first transaction and then does nothing (`ON CONFLICT DO NOTHING`), so no unique
    /// violation ever reaches the caller.
    pub async fn deliver(
        &self,
        account_id: i64,
        mailbox: &str,
        delivery_key: &str,
        content: &[u8],
    ) -> Result<Delivered> {
        let item = DeliveryItem {
            account_id,
            mailbox,
            delivery_key,
            content,
            flags: &[],
        };
        let mut out = self.deliver_many(std::slice::from_ref(&item)).await?;
        out.pop()
            .ok_or_else(|| Error::Internal("deliver_many returned nothing".into()))?
    }

    /// [`Store::deliver`] for many copies in one transaction (one commit for all of them), the
    /// results in the order of `items`. A copy that would take its account over quota gets
    /// `Err(Error::OverQuota)` in its place and the others are stored (each copy is checked,
    /// and charged, before it is inserted, so earlier copies in the batch count against later
    /// ones). Any other error fails the whole batch: nothing is stored, and a caller that wants
    /// the other copies stored anyway delivers them one by one.
    ///
    /// One query finds the keys already delivered; one UPDATE per mailbox takes the UIDs and
    /// mod-sequences of all its new copies (and locks its row); then each copy is two
    /// statements, the delivery key (`ON CONFLICT DO NOTHING`) and the message. Only when a
    /// concurrent transaction stores the same key first does a copy leave its UID unused, a gap
    /// IMAP allows (UIDs only have to ascend). Mailbox rows are locked in id order, so two
    /// batches sharing mailboxes cannot deadlock.
    pub async fn deliver_many(&self, items: &[DeliveryItem<'_>]) -> Result<Vec<Result<Delivered>>> {
        if items.iter().any(|i| i.delivery_key.is_empty()) {
            return Err(Error::Invalid("empty delivery key".into()));
        }
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| {
            (
                items[i].account_id,
                canonical_mailbox_name(items[i].mailbox),
            )
        });
        let flags = items
            .iter()
            .map(|i| validate::canonical_flags(i.flags))
            .collect::<Result<Vec<_>>>()?;
        let now = now_ms();
        let mut out: Vec<Option<Result<Delivered>>> = (0..items.len()).map(|_| None).collect();
        write_tx!(self, |tx, _backend| {
            // Keys delivered before (a retry after a lost reply) in one query, so that they
            // touch no mailbox and leave no gap in its UIDs.
            let mut seen: HashMap<(i64, String), Delivered> = HashMap::new();
            for chunk in items.chunks(SEEN_QUERY_ITEMS) {
                let sql = format!(
                    "SELECT account_id, delivery_key, mailbox_id, uid FROM deliveries \
                     WHERE (account_id, delivery_key) IN (VALUES {})",
                    value_rows(1, chunk.len(), 2)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for item in chunk {
                    query = query.bind(item.account_id).bind(item.delivery_key);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    seen.insert(
                        (row.try_get("account_id")?, row.try_get("delivery_key")?),
                        Delivered {
                            uid: to_u32(row.try_get("uid")?, "uid")?,
                            mailbox_id: row.try_get("mailbox_id")?,
                            duplicate: true,
                        },
                    );
                }
            }
            // Which mailbox each new copy goes to, then the copies grouped per mailbox. Each
            // account's row is locked (ascending ids: `order` is sorted) the first time one of
            // its copies comes up, and the copy is charged to its quota or refused.
            let mut mailboxes: HashMap<(i64, String), i64> = HashMap::new();
            let mut groups: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
            let mut budgets: BTreeMap<i64, Budget> = BTreeMap::new();
            // A key named twice in one batch: the later copies are the first one's duplicates.
            let mut first_of: HashMap<(i64, &str), usize> = HashMap::new();
            let mut repeats: Vec<(usize, usize)> = Vec::new();
            for &i in &order {
                let item = &items[i];
                if let Some(d) = seen.get(&(item.account_id, item.delivery_key.to_string())) {
                    out[i] = Some(Ok(*d));
                    continue;
                }
                match first_of.entry((item.account_id, item.delivery_key)) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        repeats.push((i, *e.get()));
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(i);
                    }
                }
                let budget = match budgets.entry(item.account_id) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let Some(budget) = lock_budget!(tx, item.account_id) else {
                            return Err(Error::NotFound(format!("account {}", item.account_id)));
                        };
                        e.insert(budget)
                    }
                };
                if let Err(why) = budget.admit(content_size(item.content)?) {
                    out[i] = Some(Err(Error::OverQuota(format!(
                        "account {}: {why}",
                        item.account_id
                    ))));
                    continue;
                }
                let wanted = canonical_mailbox_name(item.mailbox);
                let cache_key = (item.account_id, wanted.to_string());
                let mailbox_id = match mailboxes.get(&cache_key) {
                    Some(id) => *id,
                    None => {
                        let id = match find_mailbox!(&mut *tx, item.account_id, wanted) {
                            Some(id) => id,
                            None => match find_mailbox!(&mut *tx, item.account_id, "INBOX") {
                                Some(id) => id,
                                None => {
                                    return Err(Error::NotFound(format!(
                                        "INBOX of account {}",
                                        item.account_id
                                    )));
                                }
                            },
                        };
                        mailboxes.insert(cache_key, id);
                        id
                    }
                };
                groups.entry(mailbox_id).or_default().push(i);
            }
            // Mailbox rows are locked in id order, one UPDATE per mailbox for all its copies;
            // then one multi-row INSERT records the group's delivery keys and one stores its
            // messages, instead of two statements per copy.
            for (mailbox_id, group) in groups {
                let (first_uid, first_modseq) = take_uids!(tx, mailbox_id, group.len());
                mailbox_changed!(self, tx, "id = $1", mailbox_id);
                let rows: Vec<(usize, u32, i64)> = group
                    .iter()
                    .enumerate()
                    .map(|(n, &i)| (i, first_uid + n as u32, first_modseq + n as i64))
                    .collect();
                // A key that a concurrent transaction recorded first is not returned: on
                // PostgreSQL this insert waits for that transaction, then skips the row.
                let mut recorded: HashSet<String> = HashSet::with_capacity(rows.len());
                for chunk in rows.chunks(INSERT_ROWS) {
                    let sql = format!(
                        "INSERT INTO deliveries \
                           (account_id, delivery_key, mailbox_id, uid, created_at) \
                         VALUES {} ON CONFLICT DO NOTHING RETURNING delivery_key",
                        value_rows(1, chunk.len(), 5)
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                    for &(i, uid, _) in chunk {
                        query = query
                            .bind(items[i].account_id)
                            .bind(items[i].delivery_key)
                            .bind(mailbox_id)
                            .bind(i64::from(uid))
                            .bind(now);
                    }
                    let returned = match query.fetch_all(&mut *tx).await {
                        Ok(returned) => returned,
                        Err(err) if is_foreign_key_violation(&err) => {
                            return Err(Error::NotFound(format!(
                                "account of mailbox {mailbox_id}"
                            )));
                        }
                        Err(err) => return Err(err.into()),
                    };
                    for row in &returned {
                        recorded.insert(row.try_get("delivery_key")?);
                    }
                }
                let fresh: Vec<(usize, u32, i64)> = rows
                    .iter()
                    .copied()
                    .filter(|&(i, _, _)| recorded.contains(items[i].delivery_key))
                    .collect();
                let sizes: Vec<usize> = fresh
                    .iter()
                    .map(|&(i, _, _)| items[i].content.len())
                    .collect();
                for range in insert_chunks(&sizes) {
                    let chunk = &fresh[range];
                    let sql = format!(
                        "INSERT INTO messages \
                           (mailbox_id, uid, modseq, flags, seen, deleted, size, internal_date, \
                            content, header) \
                         VALUES {}",
                        value_rows(1, chunk.len(), 10)
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                    for &(i, uid, modseq) in chunk {
                        let flags = &flags[i];
                        query = query
                            .bind(mailbox_id)
                            .bind(i64::from(uid))
                            .bind(modseq)
                            .bind(flags.join(" "))
                            .bind(i16::from(validate::has_flag(flags, validate::SEEN)))
                            .bind(i16::from(validate::has_flag(flags, validate::DELETED)))
                            .bind(content_size(items[i].content)?)
                            .bind(now)
                            .bind(items[i].content)
                            .bind(crate::headers::kept_header(items[i].content));
                    }
                    query.execute(&mut *tx).await?;
                }
                for &(i, uid, _) in &rows {
                    let item = &items[i];
                    if recorded.contains(item.delivery_key) {
                        out[i] = Some(Ok(Delivered {
                            uid,
                            mailbox_id,
                            duplicate: false,
                        }));
                        continue;
                    }
                    // Its UID stays unused: a gap, which IMAP allows.
                    if let Some(budget) = budgets.get_mut(&item.account_id) {
                        budget.refund(content_size(item.content)?);
                    }
                    let row = sqlx::query(
                        "SELECT mailbox_id, uid FROM deliveries \
                         WHERE account_id = $1 AND delivery_key = $2",
                    )
                    .bind(item.account_id)
                    .bind(item.delivery_key)
                    .fetch_one(&mut *tx)
                    .await?;
                    out[i] = Some(Ok(Delivered {
                        uid: to_u32(row.try_get("uid")?, "uid")?,
                        mailbox_id: row.try_get("mailbox_id")?,
                        duplicate: true,
                    }));
                }
            }
            for (i, first) in repeats {
                out[i] = Some(match &out[first] {
                    Some(Ok(d)) => Ok(Delivered {
                        duplicate: true,
                        ..*d
                    }),
                    Some(Err(Error::OverQuota(why))) => Err(Error::OverQuota(why.clone())),
                    _ => Err(Error::Internal(
                        "repeated delivery key without result".into(),
                    )),
                });
            }
            for (account_id, budget) in &budgets {
                charge!(tx, *account_id, budget.added_bytes, budget.added_messages);
            }
        });
        out.into_iter()
            .map(|d| d.ok_or_else(|| Error::Internal("delivery without result".into())))
            .collect()
    }

    /// Forgets up to `limit` delivery keys recorded before `before_ms`, oldest first; returns
    /// how many went. A key only has to outlive every retry of its delivery: the MTA's queue
    /// runner calls this with its give-up age (`max_age_secs`) and a margin, after which a
    /// delivery under the same key would store the message again.
    pub async fn purge_delivery_keys(&self, before_ms: i64, limit: u32) -> Result<u64> {
        if limit == 0 {
            return Ok(0);
        }
        let purged = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "DELETE FROM deliveries WHERE (account_id, delivery_key) IN ( \
                   SELECT account_id, delivery_key FROM deliveries WHERE created_at < $1 \
                   ORDER BY created_at LIMIT $2)",
            )
            .bind(before_ms)
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }

    /// IMAP APPEND (RFC 9051 §6.3.12): stores a message with the given flags and internal date
    /// (now when absent). `NotFound` when the mailbox does not exist (the caller answers
    /// `[TRYCREATE]`), `OverQuota` when it does not fit (RFC 9208 `[OVERQUOTA]`).
    pub async fn append(
        &self,
        account_id: i64,
        mailbox: &str,
        content: &[u8],
        flags: &[String],
        internal_date_ms: Option<i64>,
    ) -> Result<Delivered> {
        let flags = validate::canonical_flags(flags)?;
        let name = canonical_mailbox_name(mailbox);
        let internal_date = internal_date_ms.unwrap_or_else(now_ms);
        let size = content_size(content)?;
        let out = write_tx!(self, |tx, _backend| {
            let Some(mut budget) = lock_budget!(tx, account_id) else {
                return Err(Error::NotFound(format!("account {account_id}")));
            };
            let Some(mailbox_id) = find_mailbox!(&mut *tx, account_id, name) else {
                return Err(Error::NotFound(format!("mailbox {name}")));
            };
            if let Err(why) = budget.admit(size) {
                return Err(Error::OverQuota(format!("account {account_id}: {why}")));
            }
            let uid = insert_message!(tx, mailbox_id, content, &flags, internal_date);
            mailbox_changed!(self, tx, "id = $1", mailbox_id);
            charge!(tx, account_id, budget.added_bytes, budget.added_messages);
            Delivered {
                uid,
                mailbox_id,
                duplicate: false,
            }
        });
        Ok(out)
    }

    /// Creates a mailbox (no special use). `Conflict` if the name is taken.
    pub async fn create_mailbox(&self, account_id: i64, name: &str) -> Result<MailboxInfo> {
        check_mailbox_name(name)?;
        let name = canonical_mailbox_name(name);
        let now = now_ms();
        write_tx!(self, |tx, _backend| {
            create_mailbox_in!(tx, account_id, name, None, now);
        });
        self.mailbox(account_id, name)
            .await?
            .ok_or_else(|| Error::Internal(format!("mailbox {name} vanished")))
    }

    /// Deletes a mailbox and its messages. INBOX cannot be deleted (RFC 9051 §6.3.4).
    pub async fn delete_mailbox(&self, account_id: i64, name: &str) -> Result<()> {
        let name = canonical_mailbox_name(name);
        if name == "INBOX" {
            return Err(Error::Invalid("INBOX cannot be deleted".into()));
        }
        let removed = write_tx!(self, |tx, _backend| {
            if lock_budget!(tx, account_id).is_none() {
                return Err(Error::NotFound(format!("mailbox {name}")));
            }
            // The messages go with the mailbox (ON DELETE CASCADE): refund them first.
            let row = sqlx::query(
                "SELECT CAST(COALESCE(SUM(m.size), 0) AS BIGINT) AS bytes, COUNT(m.id) AS n                  FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id                  WHERE b.account_id = $1 AND b.name = $2",
            )
            .bind(account_id)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            let bytes: i64 = row.try_get("bytes")?;
            let n: i64 = row.try_get("n")?;
            mailbox_changed!(self, tx, "account_id = $1 AND name = $2", account_id, name);
            let removed = sqlx::query("DELETE FROM mailboxes WHERE account_id = $1 AND name = $2")
                .bind(account_id)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if removed > 0 {
                charge!(tx, account_id, -bytes, -n);
            }
            removed
        });
        if removed == 0 {
            return Err(Error::NotFound(format!("mailbox {name}")));
        }
        Ok(())
    }

    /// The account's mailboxes, INBOX first, then by name.
    pub async fn list_mailboxes(&self, account_id: i64) -> Result<Vec<MailboxInfo>> {
        let sql = format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes b WHERE b.account_id = $1 \
             ORDER BY CASE WHEN b.name = 'INBOX' THEN 0 ELSE 1 END, b.name"
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(account_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|row| Ok(mailbox_from_row!(row))).collect()
        })
    }

    /// One mailbox by name ("INBOX" in any case).
    pub async fn mailbox(&self, account_id: i64, name: &str) -> Result<Option<MailboxInfo>> {
        let name = canonical_mailbox_name(name);
        let sql = format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes b WHERE b.account_id = $1 AND b.name = $2"
        );
        with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(account_id)
                .bind(name)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Ok(Some(mailbox_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    /// One mailbox by id, to refresh counters after changes.
    pub async fn mailbox_by_id(&self, mailbox_id: i64) -> Result<Option<MailboxInfo>> {
        let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes b WHERE b.id = $1");
        with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(mailbox_id)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Ok(Some(mailbox_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    /// Metadata of every message in the mailbox, by ascending UID (empty for an unknown id).
    pub async fn messages(&self, mailbox_id: i64) -> Result<Vec<MessageMeta>> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT uid, flags, size, internal_date, modseq FROM messages \
                 WHERE mailbox_id = $1 ORDER BY uid",
            )
            .bind(mailbox_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|row| Ok(meta_from_row!(row))).collect()
        })
    }

    pub async fn message_body(&self, mailbox_id: i64, uid: u32) -> Result<Option<Vec<u8>>> {
        with_pool!(self, |pool| {
            let row =
                sqlx::query("SELECT content FROM messages WHERE mailbox_id = $1 AND uid = $2")
                    .bind(mailbox_id)
                    .bind(i64::from(uid))
                    .fetch_optional(pool)
                    .await?;
            match row {
                Some(row) => Ok(Some(row.try_get::<Vec<u8>, _>("content")?)),
                None => Ok(None),
            }
        })
    }

    /// IMAP STORE (RFC 9051 §6.4.6) on the messages with the given UIDs (absent ones are
    /// skipped). Messages whose flags actually change share one new mod-sequence, which also
    /// becomes the mailbox's highest_modseq (RFC 7162 §3.1.3); unchanged messages keep theirs.
    /// Returns the resulting state of every named message that exists, by ascending UID.
    pub async fn store_flags(
        &self,
        mailbox_id: i64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
    ) -> Result<Vec<MessageMeta>> {
        Ok(self
            .store_flags_unchanged_since(mailbox_id, uids, op, flags, None)
            .await?
            .0)
    }

    /// [`Store::store_flags`] with CONDSTORE's UNCHANGEDSINCE (RFC 7162 §3.1.3): a message
    /// whose mod-sequence is above `unchanged_since` is left alone and its UID is returned in
    /// the second list (the `MODIFIED` response code). The test and the change happen in one
    /// transaction under the mailbox's row lock, so no concurrent change can slip in between.
    /// The first list holds the resulting state of every other named message that exists.
    pub async fn store_flags_unchanged_since(
        &self,
        mailbox_id: i64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>)> {
        let given = validate::canonical_flags(flags)?;
        let mut wanted = uids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let out = write_tx!(self, |tx, _backend| {
            lock_mailbox!(tx, mailbox_id);
            let mut current: Vec<MessageMeta> = Vec::with_capacity(wanted.len());
            if wanted.len() <= PER_UID_LOOKUP_MAX {
                for uid in &wanted {
                    let row = sqlx::query(
                        "SELECT uid, flags, size, internal_date, modseq FROM messages \
                         WHERE mailbox_id = $1 AND uid = $2",
                    )
                    .bind(mailbox_id)
                    .bind(i64::from(*uid))
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = row {
                        current.push(meta_from_row!(row));
                    }
                }
            } else {
                let rows = sqlx::query(
                    "SELECT uid, flags, size, internal_date, modseq FROM messages \
                     WHERE mailbox_id = $1 ORDER BY uid",
                )
                .bind(mailbox_id)
                .fetch_all(&mut *tx)
                .await?;
                for row in rows {
                    let meta = meta_from_row!(row);
                    if wanted.binary_search(&meta.uid).is_ok() {
                        current.push(meta);
                    }
                }
            }
            let mut modified: Vec<u32> = Vec::new();
            if let Some(limit) = unchanged_since {
                current.retain(|meta| {
                    let passes = meta.modseq <= limit;
                    if !passes {
                        modified.push(meta.uid);
                    }
                    passes
                });
            }
            let mut changed: Vec<usize> = Vec::new();
            for (i, meta) in current.iter_mut().enumerate() {
                let new = apply_flags(op, &meta.flags, &given)?;
                if new != meta.flags {
                    meta.flags = new;
                    changed.push(i);
                }
            }
            if !changed.is_empty() {
                let modseq = bump_modseq!(tx, mailbox_id);
                mailbox_changed!(self, tx, "id = $1", mailbox_id);
                let modseq_u64 = to_u64(modseq, "modseq")?;
                for i in changed {
                    let meta = &mut current[i];
                    meta.modseq = modseq_u64;
                    sqlx::query(
                        "UPDATE messages SET flags = $1, seen = $2, deleted = $3, modseq = $4 \
                         WHERE mailbox_id = $5 AND uid = $6",
                    )
                    .bind(meta.flags.join(" "))
                    .bind(i16::from(validate::has_flag(&meta.flags, validate::SEEN)))
                    .bind(i16::from(validate::has_flag(
                        &meta.flags,
                        validate::DELETED,
                    )))
                    .bind(modseq)
                    .bind(mailbox_id)
                    .bind(i64::from(meta.uid))
                    .execute(&mut *tx)
                    .await?;
                }
            }
            (current, modified)
        });
        Ok(out)
    }

    /// IMAP EXPUNGE / UID EXPUNGE (RFC 9051 §6.4.3, §6.4.9): removes the messages flagged
    /// `\Deleted`, only among `uids` when given, and returns the removed UIDs ascending.
    /// Removing anything raises highest_modseq, and the removed UIDs are remembered with the
    /// new value (`expunged.rs`) for QRESYNC's VANISHED (RFC 7162 §3.2.5).
    pub async fn expunge(&self, mailbox_id: i64, uids: Option<&[u32]>) -> Result<Vec<u32>> {
        let only: Option<Vec<u32>> = uids.map(|u| {
            let mut u = u.to_vec();
            u.sort_unstable();
            u.dedup();
            u
        });
        let out = write_tx!(self, |tx, _backend| {
            let account_id = lock_mailbox_owner!(tx, mailbox_id);
            lock_mailbox!(tx, mailbox_id);
            let rows = sqlx::query(
                "SELECT uid, size FROM messages WHERE mailbox_id = $1 AND deleted = 1 \
                 ORDER BY uid",
            )
            .bind(mailbox_id)
            .fetch_all(&mut *tx)
            .await?;
            let mut removed: Vec<u32> = Vec::with_capacity(rows.len());
            let mut freed: i64 = 0;
            for row in &rows {
                let uid = to_u32(row.try_get("uid")?, "uid")?;
                if only.as_ref().is_none_or(|o| o.binary_search(&uid).is_ok()) {
                    removed.push(uid);
                    freed += row.try_get::<i64, _>("size")?;
                }
            }
            if !removed.is_empty() {
                let modseq = bump_modseq!(tx, mailbox_id);
                record_expunged!(tx, mailbox_id, &removed, modseq);
            }
            if only.is_none() {
                sqlx::query("DELETE FROM messages WHERE mailbox_id = $1 AND deleted = 1")
                    .bind(mailbox_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                for uid in &removed {
                    sqlx::query("DELETE FROM messages WHERE mailbox_id = $1 AND uid = $2")
                        .bind(mailbox_id)
                        .bind(i64::from(*uid))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if !removed.is_empty() {
                mailbox_changed!(self, tx, "id = $1", mailbox_id);
                let count = i64::try_from(removed.len()).unwrap_or(i64::MAX);
                charge!(tx, account_id, -freed, -count);
            }
            removed
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|f| (*f).to_string()).collect()
    }

    #[test]
    fn insert_chunks_bound_rows_and_bytes() {
        assert!(insert_chunks(&[]).is_empty());
        assert_eq!(
            insert_chunks(&[10; 3]),
            vec![std::ops::Range { start: 0, end: 3 }]
        );
        assert_eq!(
            insert_chunks(&[1; INSERT_ROWS + 1]),
            [0..INSERT_ROWS, INSERT_ROWS..INSERT_ROWS + 1]
        );
        let big = INSERT_BYTES / 2 + 1;
        assert_eq!(insert_chunks(&[big, big, 5]), [0..1, 1..3]);
        // A row larger than the budget goes alone, never into an empty chunk.
        assert_eq!(insert_chunks(&[1, INSERT_BYTES * 2, 1]), [0..1, 1..2, 2..3]);
    }

    #[test]
    fn flag_operations() {
        let current = v(&["\\Seen", "work"]);
        assert_eq!(
            apply_flags(FlagOp::Add, &current, &v(&["\\Flagged", "WORK"])).unwrap(),
            v(&["\\Seen", "\\Flagged", "work"])
        );
        assert_eq!(
            apply_flags(FlagOp::Remove, &current, &v(&["\\Seen", "Work"])).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            apply_flags(FlagOp::Replace, &current, &v(&["\\Deleted"])).unwrap(),
            v(&["\\Deleted"])
        );
    }

    #[test]
    fn inbox_is_case_insensitive_and_nothing_else_is() {
        assert_eq!(canonical_mailbox_name("inBox"), "INBOX");
        assert_eq!(canonical_mailbox_name("Sent"), "Sent");
        assert_eq!(canonical_mailbox_name("sent"), "sent");
        assert!(check_mailbox_name("").is_err());
        assert!(check_mailbox_name("a\nb").is_err());
        assert!(check_mailbox_name("Lists/rust").is_ok());
    }

    #[test]
    fn flag_op_parses() {
        assert_eq!("add".parse::<FlagOp>().unwrap(), FlagOp::Add);
        assert!("toggle".parse::<FlagOp>().is_err());
    }
}
