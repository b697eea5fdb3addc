//! Change notifications: "mailbox M of account A changed" (a message arrived, flags changed,
//! messages were expunged or moved away, the mailbox was deleted), so that IMAP IDLE sessions
//! and gRPC watchers wake up at once instead of polling.
//!
//! Every store method that changes a mailbox's messages calls [`mailbox_changed!`] inside its
//! write transaction. On PostgreSQL that issues `pg_notify('tern_mailbox', '<account>:<mailbox>')`
//! in the same transaction: NOTIFY is transactional, delivered to every listening session (of
//! any process) only when the transaction commits, and not at all when it rolls back. Each
//! [`Store`] has one `PgListener` connection, opened by the first [`Store::subscribe_changes`]
//! and kept by a background task that fans notifications out to a broadcast channel; a lost
//! connection is re-established with backoff and reported as [`MailboxChanged::ANY`] (whatever
//! was notified meanwhile is gone). On SQLite the event is sent on the same in-process channel
//! once the transaction has committed (a task that waits for this process's writer lock, which
//! the transaction holds until after its commit); other processes on the same file are not told.
//!
//! A receiver that falls behind gets `RecvError::Lagged`: treat it like [`MailboxChanged::ANY`].
//! Notifications are hints: a rolled-back SQLite transaction may still send one, and a
//! subscriber must look at the mailbox itself to learn what changed.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Mutex, broadcast, watch};

use crate::{Pool, Result, Store};

/// The NOTIFY channel (a Postgres identifier).
pub(crate) const CHANNEL: &str = "tern_mailbox";

/// Events kept for slow receivers before they see `Lagged`.
const CAPACITY: usize = 1024;

/// One mailbox changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxChanged {
    pub account_id: i64,
    pub mailbox_id: i64,
}

impl MailboxChanged {
    /// "Anything may have changed": sent after the listener lost its connection.
    pub const ANY: MailboxChanged = MailboxChanged {
        account_id: 0,
        mailbox_id: 0,
    };

    /// True when a subscriber watching `mailbox_id` of `account_id` should look again.
    pub fn concerns(&self, account_id: i64, mailbox_id: i64) -> bool {
        *self == Self::ANY || (self.account_id == account_id && self.mailbox_id == mailbox_id)
    }

    /// Parses a NOTIFY payload `<account>:<mailbox>`.
    fn parse(payload: &str) -> Option<MailboxChanged> {
        let (account, mailbox) = payload.split_once(':')?;
        Some(MailboxChanged {
            account_id: account.trim().parse().ok()?,
            mailbox_id: mailbox.trim().parse().ok()?,
        })
    }
}

/// The per-[`Store`] fan-out point.
pub(crate) struct Hub {
    sender: broadcast::Sender<MailboxChanged>,
    /// Set once the Postgres listener task runs; dropping the hub (the last `Store` clone) drops
    /// the sender, which ends the task.
    listener: Mutex<Option<watch::Sender<()>>>,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            sender: broadcast::channel(CAPACITY).0,
            listener: Mutex::new(None),
        }
    }
}

impl Store {
    /// A receiver of every mailbox change committed from now on (see the module docs). On
    /// PostgreSQL the first call opens the listening connection and returns once it listens, so
    /// a change committed after this returns is never missed; it fails only if that first
    /// connection cannot be made.
    pub async fn subscribe_changes(&self) -> Result<broadcast::Receiver<MailboxChanged>> {
        let hub = &self.inner.changes;
        let receiver = hub.sender.subscribe();
        if let Pool::Pg(pool) = self.pool() {
            let mut running = hub.listener.lock().await;
            if running.is_none() {
                // Boxed: connecting is a large future, and every IMAP IDLE wait embeds this
                // one; inline it would grow each idle session by its size.
                let listener = Box::pin(listen(pool)).await?;
                let (stop, stopped) = watch::channel(());
                tokio::spawn(run_listener(
                    pool.clone(),
                    listener,
                    hub.sender.clone(),
                    stopped,
                ));
                *running = Some(stop);
            }
        }
        Ok(receiver)
    }

    pub(crate) fn has_change_subscribers(&self) -> bool {
        self.inner.changes.sender.receiver_count() > 0
    }

    /// SQLite: sends `events` once the current write transaction of this process has ended
    /// (its writer lock is released only after the commit).
    pub(crate) fn send_after_commit(&self, events: Vec<MailboxChanged>) {
        if events.is_empty() {
            return;
        }
        let inner = std::sync::Arc::clone(&self.inner);
        tokio::spawn(async move {
            drop(inner.sqlite_writer.lock().await);
            for event in events {
                // No receiver left is fine: nobody is waiting.
                let _ = inner.changes.sender.send(event);
            }
        });
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Forwards notifications until the hub is dropped or the pool closed; reconnects with
/// backoff (up to 10 s) when the connection fails.
async fn run_listener(
    pool: PgPool,
    listener: PgListener,
    sender: broadcast::Sender<MailboxChanged>,
    mut stopped: watch::Receiver<()>,
) {
    let mut listener = Some(listener);
    let mut backoff = Duration::from_millis(100);
    loop {
        let current = match listener.as_mut() {
            Some(l) => l,
            None => {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match listen(&pool).await {
                    Ok(l) => {
                        let _ = sender.send(MailboxChanged::ANY);
                        listener.insert(l)
                    }
                    Err(err) => {
                        if pool.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %err, "store.changes listen failed; retrying");
                        continue;
                    }
                }
            }
        };
        let received = tokio::select! {
            _ = stopped.changed() => return,
            received = current.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => {
                backoff = Duration::from_millis(100);
                match MailboxChanged::parse(notification.payload()) {
                    Some(event) => {
                        let _ = sender.send(event);
                    }
                    None => tracing::warn!(
                        payload = notification.payload(),
                        "store.changes unexpected payload"
                    ),
                }
            }
            // Lost and re-established (eager reconnect): notifications may have been missed.
            Ok(None) => {
                let _ = sender.send(MailboxChanged::ANY);
            }
            Err(err) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %err, "store.changes listener failed; reconnecting");
                listener = None;
            }
        }
    }
}

/// Marks the mailboxes selected by `$where` (a condition on the `mailboxes` table, with bound
/// `$1`.. parameters) as changed by the enclosing write transaction `$tx` of `$store`. One line
/// in each writing method; see the module docs for what it does per backend.
macro_rules! mailbox_changed {
    ($store:expr, $tx:ident, $where:literal $(, $bind:expr)* $(,)?) => {{
        match $store.backend() {
            $crate::Backend::Postgres => {
                sqlx::query(concat!(
                    "SELECT pg_notify('tern_mailbox', \
                       CAST(account_id AS TEXT) || ':' || CAST(id AS TEXT)) \
                     FROM mailboxes WHERE ",
                    $where
                ))
                $(.bind($bind))*
                .execute(&mut *$tx)
                .await?;
            }
            $crate::Backend::Sqlite if $store.has_change_subscribers() => {
                let rows = sqlx::query(concat!(
                    "SELECT account_id, id FROM mailboxes WHERE ",
                    $where
                ))
                $(.bind($bind))*
                .fetch_all(&mut *$tx)
                .await?;
                let mut events = Vec::with_capacity(rows.len());
                for row in &rows {
                    events.push($crate::changes::MailboxChanged {
                        account_id: sqlx::Row::try_get(row, "account_id")?,
                        mailbox_id: sqlx::Row::try_get(row, "id")?,
                    });
                }
                $store.send_after_commit(events);
            }
            $crate::Backend::Sqlite => {}
        }
    }};
}
pub(crate) use mailbox_changed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(
            MailboxChanged::parse("3:17"),
            Some(MailboxChanged {
                account_id: 3,
                mailbox_id: 17
            })
        );
        assert_eq!(MailboxChanged::parse("3"), None);
        assert_eq!(MailboxChanged::parse("x:1"), None);
        assert!(MailboxChanged::ANY.concerns(5, 6));
        assert!(!MailboxChanged::parse("3:17").unwrap().concerns(3, 18));
    }
}
