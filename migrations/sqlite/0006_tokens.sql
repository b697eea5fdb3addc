-- API tokens for programs (the gRPC Submission service), SQLite flavour.
-- migrations/postgres/0006_tokens.sql is the same change in PostgreSQL's dialect: keep the two
-- in step, column for column.
--
-- A token is shown once when it is created; only its SHA-256 (lowercase hex) is kept, so a copy
-- of the database does not give away working tokens. `prefix` is the start of the token as
-- shown to its owner, kept to tell tokens apart in a listing; it is too short to help a guess.
-- Revoking deletes the row. Times are milliseconds since the epoch; `expires_at` NULL means
-- never, `last_used_at` NULL means not yet used.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    expires_at    BIGINT
);
CREATE INDEX api_tokens_account ON api_tokens (account_id);
