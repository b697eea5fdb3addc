//! `tern-imap`: IMAP4rev2/IMAP4rev1 server sessions (RFC 9051, RFC 3501) as I/O-free state
//! machines.
//!
//! The agent owns the socket: it writes [`Session::greeting`], passes every chunk it reads to
//! [`Session::feed`], writes [`Output::bytes`] back and obeys [`Output::action`] (start TLS,
//! close). Mailbox data comes through the [`Backend`] trait, which the agent implements over
//! the store. Commands are parsed with imap-codec; literals are framed before parsing (see
//! `framing.rs`) so that memory stays bounded and literal data is never read as a command.
//!
//! Deliberately absent: sockets, TLS, timers (the agent asks for [`Session::timeout_reply`] when
//! its own timer fires), storage and SQL, logging of passwords or message bodies. FETCH BINARY
//! and APPEND of `~{n}` literals (RFC 3516, part of IMAP4rev2) are answered, and `BINARY` is
//! advertised for IMAP4rev1 clients. Also ENABLE, CONDSTORE/QRESYNC and ESEARCH, LIST-EXTENDED,
//! LIST-STATUS, SPECIAL-USE, QUOTA, APPENDLIMIT, UTF8=ACCEPT, SORT/THREAD and COMPRESS=DEFLATE
//! (the agent does the compression after [`Action::Compress`]).

use std::future::Future;

mod framing;
mod message;
mod mime;
mod mutf7;
mod response;
mod session;
mod subscriptions;

#[cfg(test)]
mod tests;

pub use framing::MAX_LINE;
pub use session::Session;

/// Session settings, built by the agent from its own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Whether STARTTLS can be offered (the agent has a certificate).
    pub tls_available: bool,
    /// Refuse LOGIN/AUTHENTICATE on a plaintext connection (RFC 9051 §6.2.3 LOGINDISABLED).
    pub login_requires_tls: bool,
    /// The largest literal accepted from a client, in bytes. It is also the largest message
    /// APPEND takes, advertised as `APPENDLIMIT` (RFC 7889): a larger one is refused with
    /// `NO [TOOBIG]` before its data is read.
    pub max_literal: u32,
    /// Failed authentication attempts before the session is closed with BYE.
    pub max_failed_logins: u32,
    /// The host name shown in the greeting.
    pub greeting_host: String,
}

/// What [`Session::feed`] produced: bytes to send, then what to do with the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub action: Action,
}

/// What the agent does after writing [`Output::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep reading.
    Continue,
    /// Start the TLS handshake now, then call [`Session::tls_started`]. Any plaintext the
    /// client pipelined after STARTTLS has already been discarded (RFC 9051 §6.2.1).
    StartTls,
    /// From now on both directions are raw DEFLATE (RFC 4978 COMPRESS=DEFLATE): the agent
    /// compresses everything it writes, with a sync flush after each write, and inflates what
    /// it reads. Input the client sent after COMPRESS is already compressed; the agent takes
    /// it back with [`Session::compression_started`] and feeds it inflated.
    Compress,
    /// Close the connection.
    Close,
}

/// An account's quota and usage (RFC 9208), over all its mailboxes: one quota root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaInfo {
    /// Limit on stored bytes; `None` is no limit.
    pub storage_limit: Option<u64>,
    pub storage_used: u64,
    /// Limit on the number of messages; `None` is no limit.
    pub message_limit: Option<u64>,
    pub messages_used: u64,
}

/// A mailbox as the backend describes it. Names are UTF-8 and use "/" as the hierarchy
/// delimiter; INBOX is spelled "INBOX".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    pub name: String,
    /// A RFC 6154 special-use attribute such as `"\\Sent"`.
    pub special_use: Option<String>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages: u32,
    pub unseen: u32,
    pub highest_modseq: u64,
}

/// One message's metadata. `flags` are IMAP spellings (`"\\Seen"`, keywords as atoms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Vec<String>,
    /// Size in bytes of the message as [`Backend::body`] returns it (RFC822.SIZE).
    pub size: u64,
    pub internal_date_ms: i64,
    pub modseq: u64,
}

/// What changed in a mailbox after a mod-sequence, as [`Backend::changes`] reports it, all as of
/// one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxChanges {
    pub uid_validity: u32,
    /// The mailbox's next UID at that instant.
    pub uid_next: u32,
    /// The mailbox's highest mod-sequence at that instant: the `since` of the next call.
    /// Nothing committed later may carry a mod-sequence at or below it.
    pub highest_modseq: u64,
    /// Messages whose mod-sequence is above `since` (arrived or changed), ordered by UID;
    /// every message when `since` is 0.
    pub messages: Vec<MessageMeta>,
    /// UIDs expunged at a mod-sequence above `since`, ascending; empty when `since` is 0.
    /// These must be every message removed since: the session relies on it.
    pub vanished: Vec<u32>,
}

/// How [`Backend::store_flags`] changes flags (RFC 9051 §6.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// A backend failure. `NotFound` is answered `NO [NONEXISTENT]`; `Temporary` is answered
/// `NO [UNAVAILABLE]` without its text, which may hold internal details the agent should log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("not found")]
    NotFound,
    /// A mailbox of that name exists already (`NO [ALREADYEXISTS]`).
    #[error("already exists")]
    Exists,
    /// The account's quota does not allow it (`NO [OVERQUOTA]`, RFC 9208 §5).
    #[error("over quota")]
    OverQuota,
    /// The request cannot be done as asked (`NO` with this text, which must be safe to show).
    #[error("refused: {0}")]
    Refused(String),
    #[error("temporary failure: {0}")]
    Temporary(String),
}

/// Mailbox access for one logged-in account. Mailboxes are named in UTF-8 with "/" as the
/// hierarchy delimiter. Every returned future must be `Send`: agents run sessions on
/// `tokio::spawn`.
pub trait Backend: Send {
    /// Checks credentials and, on success, binds the backend to that account. `Ok(false)` means
    /// wrong credentials (`NO [AUTHENTICATIONFAILED]`).
    fn login(
        &mut self,
        user: &str,
        password: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
    fn list_mailboxes(
        &mut self,
    ) -> impl Future<Output = Result<Vec<MailboxEntry>, BackendError>> + Send;
    fn mailbox(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Option<MailboxEntry>, BackendError>> + Send;
    /// All messages of a mailbox, ordered by UID.
    fn messages(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<MessageMeta>, BackendError>> + Send;
    /// What changed in mailbox `name` after mod-sequence `since` (everything when 0). A
    /// selected session calls it before commands instead of re-reading every message's
    /// metadata; it falls back to `since` 0 when the answer names a message it never saw.
    /// SELECT takes everything from it (`since` 0), with no separate mailbox lookup.
    /// `NotFound` when the mailbox does not exist (a selected one deleted meanwhile reads as
    /// empty).
    fn changes(
        &mut self,
        name: &str,
        since: u64,
    ) -> impl Future<Output = Result<MailboxChanges, BackendError>> + Send;
    /// The message's header section: every line up to and including the first empty one, or
    /// the whole message when it has none (RFC 9051 §6.4.5 `BODY[HEADER]`); `None` when it no
    /// longer exists. ENVELOPE, header fetches, and SEARCH, SORT and THREAD on header fields
    /// read only this.
    fn header(
        &mut self,
        name: &str,
        uid: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BackendError>> + Send;
    /// The full RFC 5322 message; `None` when it no longer exists.
    fn body(
        &mut self,
        name: &str,
        uid: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BackendError>> + Send;
    /// Changes the flags of the given messages; returns the new metadata of those that exist.
    fn store_flags(
        &mut self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
    ) -> impl Future<Output = Result<Vec<MessageMeta>, BackendError>> + Send;
    /// Removes messages flagged `\Deleted` (only those among `uids` when given); returns the
    /// UIDs removed.
    fn expunge(
        &mut self,
        name: &str,
        uids: Option<&[u32]>,
    ) -> impl Future<Output = Result<Vec<u32>, BackendError>> + Send;
    /// CONDSTORE's conditional STORE (RFC 7162 §3.1.3): like [`Backend::store_flags`], but a
    /// message whose mod-sequence is above `unchanged_since` is not changed and its UID is
    /// returned in the second list instead. Test and change are one atomic step.
    fn store_flags_unchanged_since(
        &mut self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: u64,
    ) -> impl Future<Output = Result<(Vec<MessageMeta>, Vec<u32>), BackendError>> + Send;
    /// The UIDs expunged from the mailbox at a mod-sequence above `since`, ascending
    /// (QRESYNC's `VANISHED (EARLIER)`, RFC 7162 §3.2.5).
    fn vanished(
        &mut self,
        name: &str,
        since: u64,
    ) -> impl Future<Output = Result<Vec<u32>, BackendError>> + Send;
    /// Creates a mailbox (`Exists` when the name is taken).
    fn create_mailbox(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Deletes a mailbox and its messages (`NotFound`; `Refused` for INBOX).
    fn delete_mailbox(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Renames a mailbox and those below it; renaming INBOX moves its messages (RFC 9051
    /// §6.3.6).
    fn rename_mailbox(
        &mut self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Stores a message (APPEND); returns the mailbox's UIDVALIDITY and the new UID.
    /// `NotFound` when the mailbox does not exist (answered `[TRYCREATE]`).
    fn append(
        &mut self,
        name: &str,
        content: &[u8],
        flags: &[String],
        internal_date_ms: Option<i64>,
    ) -> impl Future<Output = Result<(u32, u32), BackendError>> + Send;
    /// Copies (or, with `remove`, moves) messages `uids` of mailbox `from` into `to`; returns
    /// `to`'s UIDVALIDITY and (source UID, new UID) pairs. `NotFound` when `to` does not exist.
    fn copy(
        &mut self,
        from: &str,
        uids: &[u32],
        to: &str,
        remove: bool,
    ) -> impl Future<Output = Result<(u32, Vec<(u32, u32)>), BackendError>> + Send;
    /// Adds `name` to the account's subscriptions (SUBSCRIBE); the mailbox need not exist,
    /// and subscribing twice is not an error.
    fn subscribe(&mut self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Removes `name` from the subscriptions (UNSUBSCRIBE); not subscribed is not an error.
    fn unsubscribe(&mut self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// The subscribed names (LSUB), including those whose mailbox no longer exists.
    fn subscriptions(&mut self) -> impl Future<Output = Result<Vec<String>, BackendError>> + Send;
    /// The logged-in account's quota and usage (GETQUOTA, GETQUOTAROOT).
    fn quota(&mut self) -> impl Future<Output = Result<QuotaInfo, BackendError>> + Send;
}
