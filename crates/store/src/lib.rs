//! `tern-store`: the only crate in Tern that knows SQL.
//!
//! It keeps the directory (domains, accounts, aliases), the outbound queue (one content row per
//! message, one state row per recipient, leased to queue runners) and the IMAP mailboxes, on
//! PostgreSQL or SQLite with the same behaviour. Every query is written once: the
//! `with_pool!` and `write_tx!` macros expand the same body for each backend, so the body
//! is type-checked against both drivers and dialect differences stand out as explicit `match`es
//! on [`Backend`].
//!
//! It deliberately does not parse messages, speak any protocol, or decide policy (who may relay,
//! when to bounce): callers own that. Queries are built at run time (`sqlx::query`), never with
//! the `query!` macros, so building Tern needs no database.

pub mod changes;
mod directory;
pub mod dkim;
mod expunged;
mod forward;
mod group_commit;
mod headers;
mod mailbox;
mod mailbox_ops;
mod nodelay;
mod queue;
mod quota;
mod scram;
pub mod sieve;
pub mod submission;
mod subscriptions;
pub mod tokens;
mod validate;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use changes::MailboxChanged;
pub use directory::{Account, Alias, Domain, Resolution};
pub use forward::Forwarded;
pub use headers::{MAX_KEPT_HEADER, MailboxChanges, header_section};
pub use mailbox::{Delivered, DeliveryItem, FlagOp, MailboxInfo, MessageMeta};
pub use mailbox_ops::{Copied, MessageHead};
pub use queue::{
    Claim, NewMessage, Notify, OutcomeRecord, QueueFilter, QueueStats, QueuedMessage,
    QueuedRecipient, RecipientDsn, RecipientState, Recorded, Ret,
};
pub use quota::{Quota, QuotaUsage, Recount, Usage};
pub use scram::ScramKeys;

/// Everything that can go wrong in the store.
///
/// The first four are answers about the request (the caller replies to its peer); `Database`,
/// `Migrate` and `Internal` mean the store itself is in trouble.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("lease lost")]
    LeaseLost,
    /// Storing the message would take the account over its quota (bytes or messages). Not
    /// temporary in the store's sense: the caller decides between 452 4.2.2 and 552 5.2.2.
    #[error("over quota: {0}")]
    OverQuota(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True when retrying later may succeed: the store had trouble, the request was fine. An
    /// agent answers these with a 4xx (e.g. `451 4.3.0`) and never loses the message.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Database(_) | Error::Internal(_))
    }
}

/// Every database error that reaches a caller through `?` passes here, which makes this the one
/// place to count them (`tern_store_errors_total`, named in `tern_runtime::ops::names`). A
/// missing row is an answer, not trouble, and is not counted.
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let kind = match &e {
            sqlx::Error::RowNotFound => None,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Some("pool_timeout"),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => Some("io"),
            sqlx::Error::Database(_) => Some("database"),
            _ => Some("other"),
        };
        if let Some(kind) = kind {
            metrics::counter!("tern_store_errors_total", "kind" => kind).increment(1);
        }
        Error::Database(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Milliseconds since the Unix epoch: the one time unit stored anywhere in the database.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock set before 1970 is broken; 0 keeps every comparison well defined.
        Err(_) => 0,
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub(crate) enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

struct Inner {
    pool: Pool,
    /// Serialises this process's SQLite write transactions (see [`Store::connect`]).
    sqlite_writer: tokio::sync::Mutex<()>,
    /// Mailbox change notifications (`changes.rs`).
    changes: changes::Hub,
    /// The PostgreSQL queue writer, started by the first `enqueue` (`group_commit.rs`).
    group_commit: std::sync::OnceLock<group_commit::GroupCommit>,
}

/// A handle on the database; cloning is cheap and every clone shares one connection pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Characters that end the local part proper of a sub-address (`user+tag`), any one of
    /// them (Postfix's `recipient_delimiter`); empty turns sub-addressing off. A per-handle
    /// setting, so that each agent applies its own configuration to a shared pool.
    recipient_delimiter: Arc<str>,
}

/// The sub-address delimiter a [`Store`] starts with: `user+tag@domain` reaches `user@domain`.
pub const DEFAULT_RECIPIENT_DELIMITER: &str = "+";

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend the store uses.
/// The body is expanded once per backend, so it is compiled against both drivers.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.pool() {
            $crate::Pool::Pg($pool) => $body,
            $crate::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Runs `$body` inside a write transaction `$tx` and commits when the body has produced its
/// value; `?` inside the body leaves early and the dropped transaction rolls back. `$backend`
/// is bound to the [`Backend`] for the few statements whose SQL differs between dialects.
///
/// SQLite transactions begin with `BEGIN IMMEDIATE`: a deferred transaction that reads and then
/// writes can meet another one doing the same, and SQLite then fails one of them with
/// SQLITE_BUSY at once, without consulting the busy timeout (the lock-upgrade deadlock).
/// Taking the write lock up front makes every writer wait its turn in `busy_timeout` instead.
macro_rules! write_tx {
    ($store:expr, |$tx:ident, $backend:ident| $body:expr) => {
        match $store.pool() {
            $crate::Pool::Pg(pool) => {
                #[allow(unused_variables)]
                let $backend = $crate::Backend::Postgres;
                let mut $tx = pool.begin().await?;
                let value = $body;
                $tx.commit().await?;
                value
            }
            $crate::Pool::Sqlite(pool) => {
                #[allow(unused_variables)]
                let $backend = $crate::Backend::Sqlite;
                let _writer = $store.sqlite_writer().lock().await;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let value = $body;
                $tx.commit().await?;
                value
            }
        }
    };
}
pub(crate) use write_tx;

/// `$first, $first+1, …` for `count` bound values, for `IN (…)` lists. Only these numbered
/// placeholders are ever spliced into SQL text; the values themselves are bound.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($first, …), (…), …`: `rows` tuples of `columns` numbered placeholders each, for
/// multi-row `VALUES` lists; like [`placeholders`], only placeholders are spliced into SQL.
pub(crate) fn value_rows(first: usize, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(first + r * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Opens a pool on `url` and applies pending migrations.
    ///
    /// `postgres://…` (or `postgresql://…`): migrations run on a dedicated connection under
    /// the advisory lock sqlx's migrator takes (`pg_advisory_lock`, before it even creates its
    /// bookkeeping table), so several processes starting at once apply each migration exactly
    /// once. That connection is closed afterwards, so a failed run cannot leave the
    /// session-level lock held by a connection of the long-lived pool.
    ///
    /// `sqlite://path` (created if missing) or `sqlite::memory:`: WAL journal so readers never
    /// block the writer, `synchronous=FULL` because a message acknowledged with 250 must survive
    /// power loss, foreign keys on (they are off by default in SQLite), and a 5 s busy timeout.
    /// Within this process, write transactions additionally queue on a mutex: SQLite admits one
    /// writer at a time anyway, and a fair in-process queue is better than many connections
    /// polling in the busy handler. Across processes `BEGIN IMMEDIATE` plus the busy timeout does
    /// the same job. Reads use the other pooled connections and are never serialised.
    /// Opening a SQLite database retries a few times (see `open_sqlite`).
    pub async fn connect(url: &str) -> Result<Store> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            // A one-connection pool rather than a bare connection: `Migrator::run` on
            // `&mut PgConnection` makes the future non-`Send` (sqlx's "Acquire is not general
            // enough"), and agents connect from spawned tasks.
            let migration_pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            let migrated = PG_MIGRATOR.run(&migration_pool).await;
            migration_pool.close().await;
            migrated?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        match nodelay::set_nodelay(conn).await {
                            Ok(true) => {}
                            Ok(false) => tracing::debug!(
                                "PostgreSQL connection: TCP_NODELAY not set (Unix socket, or \
                                 ports hidden by a proxy)"
                            ),
                            Err(e) => tracing::warn!(error = %e, "setting TCP_NODELAY failed"),
                        }
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            Pool::Pg(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let pool = open_sqlite(options, in_memory).await?;
            Pool::Sqlite(pool)
        } else {
            return Err(Error::Invalid(
                "database URL must start with postgres://, postgresql:// or sqlite:".into(),
            ));
        };
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                sqlite_writer: tokio::sync::Mutex::new(()),
                changes: changes::Hub::new(),
                group_commit: std::sync::OnceLock::new(),
            }),
            recipient_delimiter: Arc::from(DEFAULT_RECIPIENT_DELIMITER),
        })
    }

    /// This store (same pool) resolving sub-addresses with `delimiter`: any one of its
    /// characters separates `user` from the detail in `user<delim>detail@domain` (RFC 5233's
    /// "+" is the default); an empty string turns sub-addressing off. See [`Store::resolve`].
    pub fn with_recipient_delimiter(&self, delimiter: &str) -> Store {
        Store {
            inner: Arc::clone(&self.inner),
            recipient_delimiter: Arc::from(delimiter),
        }
    }

    pub fn recipient_delimiter(&self) -> &str {
        &self.recipient_delimiter
    }

    pub fn backend(&self) -> Backend {
        match self.pool() {
            Pool::Pg(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// One round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every pooled connection; later calls fail with a `Database` error.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The queue's group-commit writer (PostgreSQL only), started on first use.
    pub(crate) fn group_commit(&self) -> &group_commit::GroupCommit {
        self.inner
            .group_commit
            .get_or_init(|| match &self.inner.pool {
                Pool::Pg(pool) => group_commit::GroupCommit::start(pool.clone()),
                Pool::Sqlite(_) => unreachable!("group commit is for PostgreSQL"),
            })
    }

    pub(crate) fn sqlite_writer(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.sqlite_writer
    }
}

/// Opens the SQLite pool and applies the migrations, retrying a few times.
///
/// Several processes opening one fresh file at the same moment collide in two places where
/// SQLite answers SQLITE_BUSY without waiting for the busy timeout: switching the new file to
/// WAL (which needs an exclusive lock while the WAL index is set up), and the migrations
/// themselves, because sqlx takes no migration lock on SQLite, so two processes can both try
/// to apply one; the loser's transaction fails ("table already exists") and rolls back.
/// Trying again then finds WAL on and the migration recorded, so a bounded number of retries
/// with a growing pause makes concurrent start-up safe. A persistent error is returned after
/// the last attempt.
async fn open_sqlite(options: SqliteConnectOptions, in_memory: bool) -> Result<SqlitePool> {
    const ATTEMPTS: u64 = 8;
    let mut attempt = 1;
    loop {
        let pool_options = if in_memory {
            // An in-memory database lives as long as its last connection: keep exactly one
            // open forever. One connection also avoids shared-cache table locks, which
            // report SQLITE_LOCKED and ignore the busy timeout.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(8)
        };
        let opened: Result<SqlitePool> = async {
            let pool = pool_options
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await?;
            if let Err(err) = SQLITE_MIGRATOR.run(&pool).await {
                pool.close().await;
                return Err(err.into());
            }
            Ok(pool)
        }
        .await;
        match opened {
            Ok(pool) => return Ok(pool),
            Err(err) if attempt < ATTEMPTS => {
                tracing::debug!(error = %err, attempt, "store.open_sqlite retry");
                tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Converts a stored integer to `u32`, reporting corruption instead of truncating.
pub(crate) fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Internal(format!("{what} out of range: {value}")))
}

/// Converts a stored integer to `u64`, reporting corruption instead of wrapping.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Internal(format!("{what} out of range: {value}")))
}

/// True when `err` is a foreign-key violation (both drivers classify it).
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_from_first() {
        assert_eq!(placeholders(1, 3), "$1, $2, $3");
        assert_eq!(placeholders(2, 1), "$2");
        assert_eq!(placeholders(5, 0), "");
    }

    #[test]
    fn value_rows_number_across_rows() {
        assert_eq!(value_rows(1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(3, 1, 2), "($3, $4)");
        assert_eq!(value_rows(1, 0, 4), "");
    }

    #[test]
    fn temporary_errors_are_the_stores_own_trouble() {
        assert!(Error::Internal("x".into()).is_temporary());
        assert!(Error::Database(sqlx::Error::PoolTimedOut).is_temporary());
        assert!(!Error::NotFound("x".into()).is_temporary());
        assert!(!Error::Conflict("x".into()).is_temporary());
        assert!(!Error::Invalid("x".into()).is_temporary());
        assert!(!Error::LeaseLost.is_temporary());
        assert!(!Error::OverQuota("x".into()).is_temporary());
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn stored_integers_out_of_range_are_errors() {
        assert_eq!(to_u32(7, "uid").ok(), Some(7));
        assert!(to_u32(-1, "uid").is_err());
        assert!(to_u32(1 << 32, "uid").is_err());
        assert!(to_u64(-5, "size").is_err());
    }

    fn assert_send<T: Send>(_: &T) {}

    /// Agents call the store from tasks on `tokio::spawn`, so every future must be `Send`.
    /// This only has to compile; the futures are never polled.
    #[test]
    fn store_futures_are_send() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        assert_send(&Store::connect("sqlite::memory:"));
        let store = runtime.block_on(Store::connect("sqlite::memory:")).unwrap();
        let s = &store;
        let strings = vec![String::from("a@b.c")];
        assert_send(&s.ping());
        assert_send(&s.close());
        assert_send(&s.add_domain("x"));
        assert_send(&s.remove_domain("x"));
        assert_send(&s.list_domains());
        assert_send(&s.is_local_domain("x"));
        assert_send(&s.add_account("a@b.c", "p"));
        assert_send(&s.remove_account("a@b.c"));
        assert_send(&s.set_password("a@b.c", "p"));
        assert_send(&s.list_accounts(None));
        assert_send(&s.account("a@b.c"));
        assert_send(&s.authenticate("a@b.c", "p"));
        assert_send(&s.add_alias("a@b.c", &strings));
        assert_send(&s.remove_alias("a@b.c"));
        assert_send(&s.list_aliases(None));
        assert_send(&s.resolve("a@b.c"));
        assert_send(&s.enqueue(NewMessage {
            sender: "",
            recipients: &strings,
            content: b"",
            ..Default::default()
        }));
        assert_send(&s.claim("o", 1, 1));
        assert_send(&s.message_content("q"));
        assert_send(&s.mark_delivered(1, "o", "r"));
        assert_send(&s.mark_deferred(1, "o", "r", 0));
        assert_send(&s.mark_failed(1, "o", "r"));
        assert_send(&s.mark_failed_with_bounce(1, "o", "r", Some(NewMessage::default())));
        assert_send(&s.mark_deferred_with_warning(1, "o", "r", 0, None));
        assert_send(&s.mark_delivered_with_notice(1, "o", "r", None));
        assert_send(&s.queue_filter(&QueueFilter::default()));
        assert_send(&s.queue_stats());
        assert_send(&s.queue_bounce("q"));
        assert_send(&s.release_leases("o"));
        assert_send(&s.next_due_ms());
        assert_send(&s.queue_list(None, 1));
        assert_send(&s.queue_show("q"));
        assert_send(&s.queue_retry("q"));
        assert_send(&s.queue_delete("q"));
        assert_send(&s.deliver(1, "INBOX", "k", b""));
        assert_send(&s.append(1, "INBOX", b"", &strings, None));
        assert_send(&s.create_mailbox(1, "x"));
        assert_send(&s.delete_mailbox(1, "x"));
        assert_send(&s.list_mailboxes(1));
        assert_send(&s.mailbox(1, "INBOX"));
        assert_send(&s.mailbox_by_id(1));
        assert_send(&s.messages(1));
        assert_send(&s.message_body(1, 1));
        assert_send(&s.store_flags(1, &[1], FlagOp::Add, &strings));
        assert_send(&s.expunge(1, None));
        assert_send(&s.set_quota("a@b.c", Quota::default()));
        assert_send(&s.quota("a@b.c"));
        assert_send(&s.recount_usage("a@b.c"));
        assert_send(&s.enqueue_forward("k", NewMessage::default()));
    }

    #[tokio::test]
    async fn unknown_url_scheme_is_invalid() {
        let err = Store::connect("mysql://localhost/x").await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    }

    #[tokio::test]
    async fn in_memory_sqlite_connects_and_migrates() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        store.ping().await.unwrap();
        store.add_domain("example.org").await.unwrap();
        assert!(store.is_local_domain("EXAMPLE.org").await.unwrap());
        store.close().await;
    }
}
