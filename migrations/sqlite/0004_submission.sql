-- Submissions per account, for the MSA's hourly rate limit, SQLite flavour.
-- migrations/postgres/0004_submission.sql is the same change in PostgreSQL's dialect: keep the
-- two in step, column for column.
--
-- One row per message an account submitted, written in the transaction that queues the
-- message. It is kept apart from queue_messages so that deleting a queued message (an admin
-- action) does not give the account its quota back. Rows older than a week are pruned by the
-- store whenever the same account submits again.
CREATE TABLE submissions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    queue_id    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX submissions_account_time ON submissions (account_id, created_at);
