-- Expunged UIDs per mailbox, for IMAP QRESYNC (RFC 7162 §3.2.5, §3.2.6), PostgreSQL flavour.
-- migrations/sqlite/0011_expunged.sql is the same change in SQLite's dialect: keep the two
-- in step, column for column.
--
-- Every EXPUNGE and every MOVE out of a mailbox records the removed UIDs with the
-- mailbox's new highest_modseq, in the same transaction as the removal, so that
-- SELECT (QRESYNC ...) and UID FETCH (CHANGEDSINCE n VANISHED) can answer
-- VANISHED (EARLIER) with exactly the UIDs removed after mod-sequence n. UIDs are never
-- reused within a UIDVALIDITY, so (mailbox_id, uid) is a key. The rows go with the mailbox.
CREATE TABLE expunged (
    mailbox_id  BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid         BIGINT NOT NULL,
    modseq      BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);
