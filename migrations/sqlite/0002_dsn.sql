-- Delivery status notification (RFC 3461) and REQUIRETLS (RFC 8689) parameters on the queue,
-- SQLite flavour. migrations/postgres/0002_dsn.sql is the same change in PostgreSQL's dialect:
-- keep the two in step, column for column.
--
-- Booleans are INTEGER 0/1 here and BOOLEAN in PostgreSQL; the store binds and reads them as
-- Rust `bool`, which both drivers map onto those column types.

-- Per message: the envelope id given with MAIL FROM ENVID= (RFC 3461 §4.4) as received
-- (xtext-decoded), RET= as 'full' or 'headers' (NULL when the client did not say), and whether
-- the message must only travel over TLS (RFC 8689).
ALTER TABLE queue_messages ADD COLUMN envid TEXT;
ALTER TABLE queue_messages ADD COLUMN ret TEXT CHECK (ret IN ('full', 'headers'));
ALTER TABLE queue_messages ADD COLUMN requiretls INTEGER NOT NULL DEFAULT 0;

-- Per recipient: RCPT TO NOTIFY= (RFC 3461 §4.1) as 'NEVER' or a comma-separated subset of
-- SUCCESS, FAILURE, DELAY (NULL when not given, which means FAILURE,DELAY by default), ORCPT=
-- as given, e.g. 'rfc822;bob@example.org' (RFC 3461 §4.2), and whether a "delayed" DSN has
-- already gone out for this recipient, so that a message stuck for days warns its sender once.
ALTER TABLE queue_recipients ADD COLUMN notify TEXT;
ALTER TABLE queue_recipients ADD COLUMN orcpt TEXT;
ALTER TABLE queue_recipients ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
