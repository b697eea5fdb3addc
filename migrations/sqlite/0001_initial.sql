-- Tern schema, SQLite flavour. migrations/postgres/0001_initial.sql is the same schema in
-- PostgreSQL's dialect: keep the two in step, column for column.
--
-- Conventions: every time is BIGINT milliseconds since the Unix epoch (portable across both
-- backends, no time-zone surprises); domains, addresses and alias sources are stored lowercase
-- so that plain equality compares them case-insensitively; unsigned IMAP numbers (UIDs,
-- UIDVALIDITY, MODSEQ) live in BIGINT because PostgreSQL has no unsigned types.
--
-- SQLite specifics: ids are AUTOINCREMENT so that an id is never reused after a delete (a queue
-- runner or an IMAP session still holding an old id must not land on a new row); foreign keys
-- are enforced because the store turns on PRAGMA foreign_keys for every connection.

CREATE TABLE domains (
    name        TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE accounts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    address             TEXT NOT NULL UNIQUE,
    domain              TEXT NOT NULL REFERENCES domains (name) ON DELETE RESTRICT,
    password_hash       TEXT NOT NULL,
    -- The last UIDVALIDITY handed to one of this account's mailboxes, so that a mailbox
    -- re-created under an old name never reuses a value (RFC 9051 §2.3.1.1).
    last_uid_validity   BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL
);
CREATE INDEX accounts_domain ON accounts (domain);

CREATE TABLE aliases (
    source      TEXT PRIMARY KEY,           -- "user@domain", or "@domain" for a catch-all
    domain      TEXT NOT NULL REFERENCES domains (name) ON DELETE RESTRICT,
    targets     TEXT NOT NULL,              -- addresses separated by '\n' (addresses never hold one)
    created_at  BIGINT NOT NULL
);
CREATE INDEX aliases_domain ON aliases (domain);

-- The queue: the content is stored once per message, the delivery state once per recipient.
CREATE TABLE queue_messages (
    id          TEXT PRIMARY KEY,
    sender      TEXT NOT NULL,              -- '' is the null reverse-path (RFC 5321 §4.5.5)
    content     BLOB NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX queue_messages_created ON queue_messages (created_at, id);

CREATE TABLE queue_recipients (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    address          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_attempt_at  BIGINT,
    last_reply       TEXT NOT NULL DEFAULT '',
    lease_owner      TEXT,
    lease_expires    BIGINT
);
CREATE INDEX queue_recipients_message ON queue_recipients (message_id);
CREATE INDEX queue_recipients_due ON queue_recipients (next_attempt_at, id) WHERE state = 'queued';
CREATE INDEX queue_recipients_lease ON queue_recipients (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE mailboxes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    special_use     TEXT,
    uid_validity    BIGINT NOT NULL,
    uid_next        BIGINT NOT NULL DEFAULT 1,
    highest_modseq  BIGINT NOT NULL DEFAULT 1,
    created_at      BIGINT NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox_id      BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid             BIGINT NOT NULL,
    modseq          BIGINT NOT NULL,
    -- Canonical, space-separated flag list; `seen` and `deleted` mirror two of its flags so
    -- that UNSEEN counts and EXPUNGE are plain indexed comparisons on both backends.
    flags           TEXT NOT NULL DEFAULT '',
    seen            INTEGER NOT NULL DEFAULT 0,
    deleted         INTEGER NOT NULL DEFAULT 0,
    size            BIGINT NOT NULL,
    internal_date   BIGINT NOT NULL,
    content         BLOB NOT NULL,
    UNIQUE (mailbox_id, uid)
);

-- One row per message handed to `deliver`, written in the same transaction as the message:
-- the primary key makes local delivery exactly-once across crashes and retries. It outlives
-- the message (an expunged message must not come back when the MDA retries).
CREATE TABLE deliveries (
    account_id      BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    delivery_key    TEXT NOT NULL,
    mailbox_id      BIGINT NOT NULL,
    uid             BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (account_id, delivery_key)
);
