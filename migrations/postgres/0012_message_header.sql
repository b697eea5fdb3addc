-- A copy of each message's header section, and an index for changes by mod-sequence,
-- PostgreSQL flavour. migrations/sqlite/0012_message_header.sql is the same change in SQLite's
-- dialect: keep the two in step, column for column.
--
-- `header` holds the message's bytes up to and including the empty line that ends its header
-- section (RFC 5322 §2.1), written in the same statement as `content`. IMAP answers ENVELOPE,
-- BODY[HEADER], BODY[HEADER.FIELDS (...)], SEARCH on header fields, SORT and THREAD from it
-- without reading whole messages. NULL means "not kept" (no empty line, or a header section
-- over the store's limit of 64 KiB): readers then take the header from `content`.
ALTER TABLE messages ADD COLUMN header BYTEA;

-- Messages stored before this migration: their header section, where the first empty line is
-- a CRLF one after CRLF lines (anything else stays NULL and is read from `content`).
UPDATE messages m
   SET header = substring(m.content FROM 1 FOR s.p + 3)
  FROM (SELECT id, position('\x0d0a0d0a'::bytea IN content) AS p FROM messages) s
 WHERE m.id = s.id
   AND s.p BETWEEN 2 AND 65533
   AND get_byte(m.content, 0) NOT IN (10, 13)
   AND position('\x0a0a'::bytea IN substring(m.content FROM 1 FOR s.p + 3)) = 0
   AND position('\x0a0d0a'::bytea IN substring(m.content FROM 1 FOR s.p + 1)) = 0;

-- A session brings its view of a mailbox up to date with the messages whose mod-sequence is
-- above the highest it has seen (every arrival and flag change raises it).
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
