-- Sieve scripts (RFC 5228) and vacation reply tracking (RFC 5230), SQLite flavour.
-- migrations/postgres/0008_sieve.sql is the same change in PostgreSQL's dialect: keep the two in
-- step, column for column.
--
-- An account has any number of named scripts and at most one active one (the partial unique
-- index; ManageSieve, RFC 5804, has the same model). `active` is 0 or 1. The source is kept
-- as uploaded; it was compiled (and refused with line numbers if broken) before it got here.
-- `updated_at` changes whenever the source does, so a delivery agent's cache of compiled
-- scripts is keyed by (id, updated_at). Times are milliseconds since the epoch.
CREATE TABLE sieve_scripts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    active      SMALLINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE UNIQUE INDEX sieve_scripts_one_active ON sieve_scripts (account_id) WHERE active = 1;

-- RFC 5230 §4.2: one vacation reply per sender per period. `handle` is the SHA-256 (hex) of
-- the script's :handle (or, without one, of its reason), so a changed message is a new handle.
-- `sent_at` is when the last reply to this sender with this handle was queued.
CREATE TABLE vacation_replies (
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sender      TEXT NOT NULL,
    handle      TEXT NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (account_id, sender, handle)
);
