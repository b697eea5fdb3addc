-- SCRAM-SHA-256 keys for SMTP AUTH (RFC 5802, RFC 7677), SQLite flavour.
-- migrations/postgres/0005_scram.sql is the same change in PostgreSQL's dialect: keep the two in step.
--
-- An Argon2id hash cannot answer a SCRAM exchange, so setting a password also stores
-- "iterations:salt:StoredKey:ServerKey" (the last three base64), never the password itself.
-- Accounts whose password was set before this migration have NULL here and cannot use SCRAM
-- (535) until their password is set again; PLAIN and LOGIN keep working for them.
ALTER TABLE accounts ADD COLUMN scram_sha256 TEXT;
