-- IMAP subscriptions (SUBSCRIBE / UNSUBSCRIBE / LSUB), PostgreSQL flavour.
-- migrations/sqlite/0010_subscriptions.sql is the same change in SQLite's dialect: keep the
-- two in step, column for column.
--
-- A subscription is a name, not a reference to a mailbox: RFC 9051 §6.3.7 lets a client
-- subscribe to a name that does not exist, and a subscription outlives the deletion of its
-- mailbox. RENAME carries subscriptions along (store::mailbox_ops). Existing mailboxes start
-- out subscribed, as the default folders of a new account are.
CREATE TABLE subscriptions (
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
);
INSERT INTO subscriptions (account_id, name) SELECT account_id, name FROM mailboxes;
