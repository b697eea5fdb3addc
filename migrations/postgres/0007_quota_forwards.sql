-- Quotas per account and idempotent forwarding, PostgreSQL flavour.
-- migrations/sqlite/0007_quota_forwards.sql is the same change in SQLite's dialect: keep the
-- two in step, column for column.
--
-- quota_bytes / quota_messages: the limits, NULL for none. used_bytes / used_messages: the sum
-- of messages.size and the number of messages over all the account's mailboxes, changed in
-- the same transaction as the messages themselves (store::mailbox), so they are exact;
-- `tern account recount` recomputes them and reports any drift.
ALTER TABLE accounts ADD COLUMN quota_bytes BIGINT;
ALTER TABLE accounts ADD COLUMN quota_messages BIGINT;
ALTER TABLE accounts ADD COLUMN used_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN used_messages BIGINT NOT NULL DEFAULT 0;
UPDATE accounts SET
    used_bytes = COALESCE((SELECT SUM(m.size) FROM messages m
                           JOIN mailboxes b ON b.id = m.mailbox_id
                           WHERE b.account_id = accounts.id), 0),
    used_messages = (SELECT COUNT(*) FROM messages m
                     JOIN mailboxes b ON b.id = m.mailbox_id
                     WHERE b.account_id = accounts.id);

-- One row per delivery key whose recipient was an alias with targets in other domains,
-- written in the same transaction as the forward's queue message: a delivery retried after a
-- lost reply finds the row and queues nothing again. Like `deliveries`, it outlives the queue
-- message it names.
CREATE TABLE forwards (
    delivery_key  TEXT PRIMARY KEY,
    queue_id      TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
