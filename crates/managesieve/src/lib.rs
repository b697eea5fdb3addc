//! ManageSieve server sessions (RFC 5804): the protocol mail clients (Thunderbird's sieve
//! add-on, Roundcube's managesieve plugin, sieve-connect) use to edit a user's Sieve scripts.
//!
//! A [`Session`] is a pure state machine: the agent feeds it the bytes it read and writes back
//! the bytes it returns, then acts on the returned [`Action`] (keep reading, start TLS, close).
//! Everything about scripts and accounts goes through the async [`Backend`] trait, which the
//! delivery agent implements over the store and its Sieve compiler.
//!
//! Deliberately absent: sockets, TLS, timers, SQL and the Sieve language itself (the backend
//! checks scripts; this crate only carries their text). SASL offers PLAIN only and never a
//! security layer; REFERRAL, XPROXY and the LANGUAGE capability are not implemented.

mod framing;
mod response;
mod session;
#[cfg(test)]
mod tests;

use std::future::Future;

pub use session::Session;

/// What one ManageSieve listener needs to know to run a session.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `IMPLEMENTATION` capability (RFC 5804 §1.7): the server's name and version.
    pub implementation: String,
    /// The `SIEVE` capability: the Sieve extensions scripts may require, space-separated.
    pub sieve_extensions: String,
    /// The `MAXREDIRECTS` capability, when the interpreter limits redirects per script run.
    pub max_redirects: Option<u32>,
    /// Whether the agent can start TLS on this connection (STARTTLS is offered only then).
    pub tls_available: bool,
    /// Refuse AUTHENTICATE until TLS is active and advertise no SASL mechanism before it, so
    /// passwords never cross the network in clear text (as IMAP's LOGINDISABLED).
    pub login_requires_tls: bool,
    /// After this many rejected credentials the session says BYE and closes.
    pub max_failed_logins: u32,
    /// After this many commands answered NO for bad syntax the session says BYE and closes.
    pub max_errors: u32,
    /// Longest command line (without its literals), CRLF included.
    pub max_line: usize,
    /// Largest script accepted (PUTSCRIPT, CHECKSCRIPT, HAVESPACE) and so the largest literal.
    pub max_script_size: usize,
}

/// The bytes to send to the client, and what the agent must do once they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub action: Action,
}

/// What the agent does with the connection after writing an [`Output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Start the TLS handshake, then call [`Session::tls_started`] and write what it returns.
    StartTls,
    Close,
}

/// One script in a LISTSCRIPTS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    pub name: String,
    pub active: bool,
}

/// The answer to one authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Logged in as this account.
    Success,
    /// Wrong credentials (the backend has already waited any throttling delay).
    Failed,
    /// The client address or account is blocked for too many failures; the password was not
    /// checked.
    Blocked,
    /// The backend could not check (store trouble): answered `NO (TRYLATER)`.
    TryLater,
}

/// Which limit a `QUOTA` response code names (RFC 5804 §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Too many scripts (`QUOTA/MAXSCRIPTS`).
    MaxScripts,
    /// The script is too large (`QUOTA/MAXSIZE`).
    MaxSize,
}

/// Why the backend did not do what the session asked. Each maps to a response code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// No script by that name (`NONEXISTENT`).
    NonExistent,
    /// RENAMESCRIPT to a name already taken (`ALREADYEXISTS`).
    AlreadyExists,
    /// DELETESCRIPT of the active script (`ACTIVE`).
    Active,
    Quota(Quota, String),
    /// The request was refused for a reason the client should read (a bad script name).
    Refused(String),
    /// Store trouble: `TRYLATER`. The text is for the log, never sent.
    TryLater(String),
}

/// Scripts of the logged-in account, implemented by the agent over the store. The session
/// calls the script methods only after a successful [`Backend::authenticate`].
///
/// Every returned future must be `Send`: agents run sessions on a multi-threaded runtime.
pub trait Backend: Send {
    /// Checks credentials (RFC 4616 PLAIN: `authzid` is empty or names the same user). The
    /// backend throttles failures itself, waiting before it answers [`AuthOutcome::Failed`].
    fn authenticate(
        &mut self,
        authzid: &str,
        user: &str,
        password: &str,
    ) -> impl Future<Output = AuthOutcome> + Send;

    /// UNAUTHENTICATE: forget the logged-in account.
    fn unauthenticate(&mut self);

    /// The account's name, for the `OWNER` capability.
    fn owner(&self) -> Option<String>;

    /// Checks a script (RFC 5804 §2.12): `Err` holds the errors for the user, with line
    /// numbers. Pure: nothing is stored.
    fn check(&mut self, source: &str) -> Result<(), String>;

    fn list(&mut self) -> impl Future<Output = Result<Vec<ScriptEntry>, BackendError>> + Send;

    fn get(&mut self, name: &str) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// Stores a checked script, replacing one of that name (which stays active if it was).
    fn put(
        &mut self,
        name: &str,
        source: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Makes `name` the active script, or with `None` deactivates every script.
    fn set_active(
        &mut self,
        name: Option<&str>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    fn delete(&mut self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    fn rename(
        &mut self,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// HAVESPACE: would a script of `size` octets stored as `name` fit?
    fn have_space(
        &mut self,
        name: &str,
        size: u64,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
