//! Sieve scripts per account (RFC 5228) and the record of vacation replies sent (RFC 5230).
//!
//! An account has named scripts, at most one of them active (the model ManageSieve, RFC 5804,
//! exposes). The store keeps sources and answers which script is active; it deliberately does
//! not compile or run Sieve: the delivery agent checks a script before it is stored and runs
//! it at delivery, caching compiled scripts by (id, `updated_at`).
//!
//! Vacation replies are tracked per (account, sender, handle) with the time of the last reply,
//! and [`Store::claim_vacation`] decides "reply now or not" in one statement, so two deliveries
//! racing for the same sender send one reply between them.

use std::collections::HashMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Error, Result, Store, now_ms, validate, with_pool, write_tx};

/// Largest script accepted, in bytes (ManageSieve's HAVESPACE answers from this too).
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// Most scripts one account may keep.
pub const MAX_SCRIPTS_PER_ACCOUNT: usize = 64;

const MAX_NAME_CHARS: usize = 128;

/// Account ids looked up per query by [`Store::active_sieve_scripts`].
const IDS_PER_QUERY: usize = 500;

/// A stored script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SieveScript {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub source: String,
    pub active: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Which script is active for an account, without its source: enough to find a compiled copy
/// in a cache, since the pair changes whenever the source does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActiveScript {
    pub id: i64,
    pub updated_at_ms: i64,
}

/// RFC 5804 §1.6: a script name is a non-empty string without control characters (CR, LF,
/// NUL and the rest of Unicode Cc); we also cap its length and refuse `/`, which some clients
/// turn into file paths.
pub fn check_script_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Invalid("script name is empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::Invalid(format!(
            "script name longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::Invalid(
            "script name contains a control character or '/'".into(),
        ));
    }
    Ok(())
}

/// True when an IMAP flag (or keyword) can be stored on a message, so that a Sieve `addflag`
/// with a name IMAP would refuse is dropped instead of failing the delivery.
pub fn flag_is_storable(flag: &str) -> bool {
    validate::canonical_flags(&[flag]).is_ok_and(|f| !f.is_empty())
}

/// The stored form of a vacation handle: SHA-256, lowercase hex (a handle may be a whole
/// reason text; the digest keeps the key short).
fn handle_digest(handle: &str) -> String {
    Sha256::digest(handle.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

macro_rules! script_from_row {
    ($row:expr) => {{
        let active: i16 = $row.try_get("active")?;
        SieveScript {
            id: $row.try_get("id")?,
            account_id: $row.try_get("account_id")?,
            name: $row.try_get("name")?,
            source: $row.try_get("source")?,
            active: active != 0,
            created_at_ms: $row.try_get("created_at")?,
            updated_at_ms: $row.try_get("updated_at")?,
        }
    }};
}

const SCRIPT_COLUMNS: &str = "id, account_id, name, source, active, created_at, updated_at";

/// Evaluates to the id of the account at `$address` inside `$exec`, or returns `NotFound`.
macro_rules! account_id {
    ($exec:expr, $address:expr) => {{
        let row = sqlx::query("SELECT id FROM accounts WHERE address = $1")
            .bind($address)
            .fetch_optional($exec)
            .await?;
        match row {
            Some(row) => row.try_get::<i64, _>("id")?,
            None => return Err(Error::NotFound(format!("account {}", $address))),
        }
    }};
}

impl Store {
    /// Stores `source` as script `name` of the account at `address`, replacing a script of that
    /// name (which keeps its active flag) or adding one. With `activate`, the script becomes the
    /// account's active one in the same transaction. `NotFound` for an unknown account,
    /// `Invalid` for a bad name or an oversized script, `Conflict` when the account already has
    /// [`MAX_SCRIPTS_PER_ACCOUNT`] scripts.
    pub async fn put_sieve_script(
        &self,
        address: &str,
        name: &str,
        source: &str,
        activate: bool,
    ) -> Result<SieveScript> {
        let address = validate::normalize_address(address)?;
        check_script_name(name)?;
        if source.len() > MAX_SCRIPT_BYTES {
            return Err(Error::Invalid(format!(
                "script larger than {MAX_SCRIPT_BYTES} bytes"
            )));
        }
        let now = now_ms();
        let id: i64 = write_tx!(self, |tx, _backend| {
            let account_id = account_id!(&mut *tx, &address);
            let existing =
                sqlx::query("SELECT id FROM sieve_scripts WHERE account_id = $1 AND name = $2")
                    .bind(account_id)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let id: i64 = match existing {
                Some(row) => {
                    let id: i64 = row.try_get("id")?;
                    // `updated_at` must change with the source even within one millisecond,
                    // or a cache keyed by it would keep the old compiled script.
                    sqlx::query(
                        "UPDATE sieve_scripts SET source = $1, \
                           updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END \
                         WHERE id = $3",
                    )
                    .bind(source)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
                None => {
                    let row = sqlx::query(
                        "SELECT COUNT(*) AS n FROM sieve_scripts WHERE account_id = $1",
                    )
                    .bind(account_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let n: i64 = row.try_get("n")?;
                    if n >= MAX_SCRIPTS_PER_ACCOUNT as i64 {
                        return Err(Error::Conflict(format!(
                            "{address} already has {MAX_SCRIPTS_PER_ACCOUNT} scripts"
                        )));
                    }
                    let row = sqlx::query(
                        "INSERT INTO sieve_scripts \
                           (account_id, name, source, active, created_at, updated_at) \
                         VALUES ($1, $2, $3, 0, $4, $4) RETURNING id",
                    )
                    .bind(account_id)
                    .bind(name)
                    .bind(source)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    row.try_get("id")?
                }
            };
            if activate {
                sqlx::query(
                    "UPDATE sieve_scripts SET active = 0 WHERE account_id = $1 AND id <> $2 AND active = 1",
                )
                .bind(account_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE sieve_scripts SET active = 1 WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            id
        });
        self.sieve_script_by_id(id)
            .await?
            .ok_or_else(|| Error::Internal(format!("sieve script {id} vanished")))
    }

    /// The account's scripts by name. `NotFound` for an unknown account.
    pub async fn list_sieve_scripts(&self, address: &str) -> Result<Vec<SieveScript>> {
        let address = validate::normalize_address(address)?;
        let sql = format!(
            "SELECT {SCRIPT_COLUMNS} FROM sieve_scripts WHERE account_id = $1 ORDER BY name"
        );
        with_pool!(self, |pool| {
            let account_id = account_id!(pool, &address);
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(account_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|row| Ok(script_from_row!(row))).collect()
        })
    }

    /// One script of the account. `NotFound` for an unknown account or script.
    pub async fn sieve_script(&self, address: &str, name: &str) -> Result<SieveScript> {
        let address = validate::normalize_address(address)?;
        let sql = format!(
            "SELECT {SCRIPT_COLUMNS} FROM sieve_scripts WHERE account_id = $1 AND name = $2"
        );
        with_pool!(self, |pool| {
            let account_id = account_id!(pool, &address);
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(account_id)
                .bind(name)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Ok(script_from_row!(row)),
                None => Err(Error::NotFound(format!("script {name:?} of {address}"))),
            }
        })
    }

    /// A script by id, or `None` when it has been deleted.
    pub async fn sieve_script_by_id(&self, id: i64) -> Result<Option<SieveScript>> {
        let sql = format!("SELECT {SCRIPT_COLUMNS} FROM sieve_scripts WHERE id = $1");
        with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Ok(Some(script_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    /// Makes script `name` the account's active one, or, with `None`, leaves the account with
    /// no active script (Sieve off: delivery to INBOX). `NotFound` for an unknown account or
    /// script.
    pub async fn activate_sieve_script(&self, address: &str, name: Option<&str>) -> Result<()> {
        let address = validate::normalize_address(address)?;
        write_tx!(self, |tx, _backend| {
            let account_id = account_id!(&mut *tx, &address);
            let target: Option<i64> = match name {
                None => None,
                Some(name) => {
                    let row = sqlx::query(
                        "SELECT id FROM sieve_scripts WHERE account_id = $1 AND name = $2",
                    )
                    .bind(account_id)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match row {
                        Some(row) => Some(row.try_get("id")?),
                        None => {
                            return Err(Error::NotFound(format!("script {name:?} of {address}")));
                        }
                    }
                }
            };
            sqlx::query("UPDATE sieve_scripts SET active = 0 WHERE account_id = $1 AND active = 1")
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            if let Some(id) = target {
                sqlx::query("UPDATE sieve_scripts SET active = 1 WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    /// Deletes script `name`. RFC 5804 §2.10: the active script cannot be deleted (`Conflict`);
    /// deactivate it first. `NotFound` for an unknown account or script.
    pub async fn delete_sieve_script(&self, address: &str, name: &str) -> Result<()> {
        let address = validate::normalize_address(address)?;
        write_tx!(self, |tx, _backend| {
            let account_id = account_id!(&mut *tx, &address);
            let row = sqlx::query(
                "SELECT id, active FROM sieve_scripts WHERE account_id = $1 AND name = $2",
            )
            .bind(account_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(Error::NotFound(format!("script {name:?} of {address}")));
            };
            let active: i16 = row.try_get("active")?;
            if active != 0 {
                return Err(Error::Conflict(format!(
                    "script {name:?} is active; deactivate it first"
                )));
            }
            let id: i64 = row.try_get("id")?;
            sqlx::query("DELETE FROM sieve_scripts WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Renames script `old` to `new` (RFC 5804 §2.11.1), keeping its source and whether it
    /// is active, in one statement. `NotFound` for an unknown account or script, `Conflict`
    /// when the account already has a script called `new`, `Invalid` for a bad new name.
    pub async fn rename_sieve_script(&self, address: &str, old: &str, new: &str) -> Result<()> {
        let address = validate::normalize_address(address)?;
        check_script_name(new)?;
        let now = now_ms();
        write_tx!(self, |tx, _backend| {
            let account_id = account_id!(&mut *tx, &address);
            let taken =
                sqlx::query("SELECT id FROM sieve_scripts WHERE account_id = $1 AND name = $2")
                    .bind(account_id)
                    .bind(new)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_some() && old != new {
                return Err(Error::Conflict(format!(
                    "{address} already has a script {new:?}"
                )));
            }
            let renamed = sqlx::query(
                "UPDATE sieve_scripts SET name = $1, \
                   updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END \
                 WHERE account_id = $3 AND name = $4",
            )
            .bind(new)
            .bind(now)
            .bind(account_id)
            .bind(old)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if renamed == 0 {
                return Err(Error::NotFound(format!("script {old:?} of {address}")));
            }
        });
        Ok(())
    }

    /// The active script of each of `account_ids` that has one (one query per 500 ids), for
    /// the delivery path: accounts without Sieve cost nothing more than this lookup.
    pub async fn active_sieve_scripts(
        &self,
        account_ids: &[i64],
    ) -> Result<HashMap<i64, ActiveScript>> {
        let mut out = HashMap::new();
        for chunk in account_ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT account_id, id, updated_at FROM sieve_scripts \
                 WHERE active = 1 AND account_id IN ({})",
                crate::placeholders(1, chunk.len())
            );
            with_pool!(self, |pool| {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for id in chunk {
                    query = query.bind(*id);
                }
                for row in query.fetch_all(pool).await? {
                    out.insert(
                        row.try_get("account_id")?,
                        ActiveScript {
                            id: row.try_get("id")?,
                            updated_at_ms: row.try_get("updated_at")?,
                        },
                    );
                }
            });
        }
        Ok(out)
    }

    /// True when a vacation reply with `handle` went to `sender` at or after `since_ms`.
    pub async fn vacation_sent_since(
        &self,
        account_id: i64,
        sender: &str,
        handle: &str,
        since_ms: i64,
    ) -> Result<bool> {
        let sender = sender.to_ascii_lowercase();
        let digest = handle_digest(handle);
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT sent_at FROM vacation_replies \
                 WHERE account_id = $1 AND sender = $2 AND handle = $3",
            )
            .bind(account_id)
            .bind(&sender)
            .bind(&digest)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(row) => row.try_get::<i64, _>("sent_at")? >= since_ms,
                None => false,
            })
        })
    }

    /// Records a vacation reply to `sender` now, unless one with the same handle went out
    /// within `period_ms`: true means "send it", false means another delivery already did.
    /// One upsert decides, so concurrent deliveries cannot both win.
    pub async fn claim_vacation(
        &self,
        account_id: i64,
        sender: &str,
        handle: &str,
        period_ms: i64,
    ) -> Result<bool> {
        let sender = sender.to_ascii_lowercase();
        let digest = handle_digest(handle);
        let now = now_ms();
        let claimed = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "INSERT INTO vacation_replies (account_id, sender, handle, sent_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account_id, sender, handle) DO UPDATE SET sent_at = excluded.sent_at \
                 WHERE vacation_replies.sent_at <= $5",
            )
            .bind(account_id)
            .bind(&sender)
            .bind(&digest)
            .bind(now)
            .bind(now.saturating_sub(period_ms))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(claimed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names() {
        assert!(check_script_name("vacation").is_ok());
        assert!(check_script_name("Ferien – 2024").is_ok());
        assert!(check_script_name("").is_err());
        assert!(check_script_name("a\r\nb").is_err());
        assert!(check_script_name("../x").is_err());
        assert!(check_script_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn storable_flags() {
        assert!(flag_is_storable("\\Seen"));
        assert!(flag_is_storable("$Important"));
        assert!(!flag_is_storable("\\Bogus"));
        assert!(!flag_is_storable("two words"));
        assert!(!flag_is_storable(""));
    }

    fn assert_send<T: Send>(_: &T) {}

    /// Agents call these from spawned tasks; this only has to compile.
    #[test]
    fn sieve_futures_are_send() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime.block_on(Store::connect("sqlite::memory:")).unwrap();
        assert_send(&store.put_sieve_script("a@b.c", "n", "keep;", false));
        assert_send(&store.list_sieve_scripts("a@b.c"));
        assert_send(&store.sieve_script("a@b.c", "n"));
        assert_send(&store.sieve_script_by_id(1));
        assert_send(&store.activate_sieve_script("a@b.c", None));
        assert_send(&store.delete_sieve_script("a@b.c", "n"));
        assert_send(&store.active_sieve_scripts(&[1]));
        assert_send(&store.vacation_sent_since(1, "x@y.z", "h", 0));
        assert_send(&store.claim_vacation(1, "x@y.z", "h", 0));
    }
}
