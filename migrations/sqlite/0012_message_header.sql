-- A copy of each message's header section, and an index for changes by mod-sequence, SQLite
-- flavour. migrations/postgres/0012_message_header.sql is the same change in PostgreSQL's
-- dialect: keep the two in step, column for column.
--
-- `header` holds the message's bytes up to and including the empty line that ends its header
-- section (RFC 5322 §2.1), written in the same statement as `content`. IMAP answers ENVELOPE,
-- BODY[HEADER], BODY[HEADER.FIELDS (...)], SEARCH on header fields, SORT and THREAD from it
-- without reading whole messages. NULL means "not kept" (no empty line, or a header section
-- over the store's limit of 64 KiB): readers then take the header from `content`.
ALTER TABLE messages ADD COLUMN header BLOB;

-- Messages stored before this migration: their header section, where the first empty line is
-- a CRLF one after CRLF lines (anything else stays NULL and is read from `content`).
UPDATE messages
   SET header = substr(content, 1, instr(content, X'0D0A0D0A') + 3)
 WHERE instr(content, X'0D0A0D0A') BETWEEN 2 AND 65533
   AND substr(content, 1, 1) NOT IN (X'0A', X'0D')
   AND instr(substr(content, 1, instr(content, X'0D0A0D0A') + 3), X'0A0A') = 0
   AND instr(substr(content, 1, instr(content, X'0D0A0D0A') + 1), X'0A0D0A') = 0;

-- A session brings its view of a mailbox up to date with the messages whose mod-sequence is
-- above the highest it has seen (every arrival and flag change raises it).
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
