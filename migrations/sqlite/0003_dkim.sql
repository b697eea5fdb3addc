-- DKIM signing keys per domain (RFC 6376), SQLite flavour. migrations/postgres/0003_dkim.sql is
-- the same change in PostgreSQL's dialect: keep the two in step, column for column.
--
-- A domain may hold several keys (one per selector) so that keys can be rotated: the new key is
-- published in DNS under its own selector while the old one still verifies mail in transit. The
-- submission agent signs with the newest active key of the From: domain.
--
-- private_key is the PEM text of the key (PKCS#1 "RSA PRIVATE KEY" for rsa-sha256, PKCS#8
-- "PRIVATE KEY" for ed25519-sha256); public_key is the base64 value published as p= in the
-- selector's TXT record (RFC 6376 §3.6.1). Keys go with their domain when it is removed.
-- Booleans are INTEGER 0/1 here, read and bound as Rust `bool`.
CREATE TABLE dkim_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    domain       TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    selector     TEXT NOT NULL,
    algorithm    TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key  TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    active       INTEGER NOT NULL DEFAULT 1,
    UNIQUE (domain, selector)
);
