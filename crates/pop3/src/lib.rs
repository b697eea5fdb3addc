//! POP3 server sessions (RFC 1939) with the CAPA and response-code extensions (RFC 2449,
//! RFC 3206), STLS (RFC 2595) and SASL PLAIN authentication (RFC 5034, RFC 4616).
//!
//! A [`Session`] is a pure state machine: the agent feeds it the bytes it read from the client
//! and writes back the bytes it returns, then acts on the returned [`Action`] (keep reading,
//! start a TLS handshake, or close the connection). Everything the session needs from storage
//! goes through the async [`Backend`] trait, which the agent implements over the store.
//!
//! Deliberately absent: sockets, TLS, timers, tokio and SQL. The agent owns the connection, the
//! idle timer (it sends [`Session::timeout_reply`] when the timer fires) and the TLS handshake.
//! APOP is not offered: it needs the clear-text password on the server side. Only the SASL
//! PLAIN mechanism is implemented, and the session never negotiates a SASL security layer.

mod framing;
mod message;
mod session;

use std::future::Future;

pub use session::Session;

/// What one POP3 listener needs to know to run a session.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether the agent can start TLS on this connection; STLS is advertised and accepted
    /// only when it can (RFC 2595 §4).
    pub tls_available: bool,
    /// Refuse USER, PASS and AUTH until TLS is active, so passwords never cross the network in
    /// clear text (RFC 2595 §2.2 lets a server do so).
    pub login_requires_tls: bool,
    /// After this many rejected credentials the session closes, so one connection cannot be
    /// used to guess passwords indefinitely.
    pub max_failed_logins: u32,
    /// The host name the server names itself by in its sign-off line.
    pub greeting_host: String,
}

/// The bytes to send to the client, and what the agent must do once they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Replies to every complete command line fed so far, in order.
    pub bytes: Vec<u8>,
    /// What to do after writing `bytes`.
    pub action: Action,
}

/// What the agent does with the connection after writing an [`Output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep reading from the client.
    Continue,
    /// Start the TLS handshake on the connection, then call [`Session::tls_started`].
    StartTls,
    /// Close the connection.
    Close,
}

/// One message of the maildrop, as the backend reports it when the client logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildropEntry {
    /// The store's identifier of the message, passed back to [`Backend::body`] and
    /// [`Backend::delete`].
    pub uid: u32,
    /// The size of the message in octets, with CRLF line endings (RFC 1939 §5, LIST).
    pub size: u64,
    /// The persistent unique-id reported by UIDL (RFC 1939 §7): 1 to 70 characters in the
    /// range 0x21 to 0x7E. Characters outside that range are dropped on output.
    pub unique_id: String,
}

/// Why the backend could not do what the session asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// A failure that may go away if the client tries again later (a database outage, say).
    /// The text is logged, never sent to the client.
    #[error("temporary backend failure: {0}")]
    Temporary(String),
    /// Another session holds the maildrop (RFC 1939 §8 and the IN-USE code of RFC 2449 §8.1.2).
    #[error("maildrop locked by another session")]
    Locked,
}

/// Access to accounts and their INBOX, implemented by the agent over the store.
///
/// Every returned future must be `Send`, because agents run sessions on a multi-threaded
/// runtime.
pub trait Backend: Send {
    /// Checks a user name and password; `Ok(false)` means the credentials are wrong.
    fn login(
        &mut self,
        user: &str,
        password: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Returns the INBOX of the user who just logged in, ordered by uid. The session keeps this
    /// snapshot for its whole life: messages that arrive later are not shown (RFC 1939 §8).
    fn maildrop(&mut self)
    -> impl Future<Output = Result<Vec<MaildropEntry>, BackendError>> + Send;

    /// Returns the stored message, or `None` if it has disappeared since the snapshot.
    fn body(
        &mut self,
        uid: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BackendError>> + Send;

    /// Called once, at QUIT in the TRANSACTION state (the UPDATE state of RFC 1939 §6), with
    /// every uid marked deleted. The slice may be empty, so a backend that locks the maildrop
    /// at login can release the lock here.
    fn delete(&mut self, uids: &[u32]) -> impl Future<Output = Result<(), BackendError>> + Send;
}
