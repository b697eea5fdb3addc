//! The mail-user-agent half of the `tern` command: compose and submit a message over SMTP
//! submission, list a mailbox and read a message over IMAP, and render both for a terminal.
//!
//! It talks to any standards-following server (RFC 6409 submission with STARTTLS or implicit
//! TLS, RFC 3501 IMAP), not only to Tern, and it knows nothing of Tern's store, gRPC or
//! configuration: the clap handlers in `main.rs` turn flags and the saved login into a
//! [`Server`] and call the functions re-exported here.
//!
//! Deliberately left out: OAuth and SASL mechanisms other than PLAIN/LOGIN (SMTP) and LOGIN
//! (IMAP), S/MIME and PGP, mailbox management (create, rename, delete), flag editing beyond the
//! `\Seen` that reading and `\Deleted` that deleting imply, and a client-side message cache.

mod compose;
mod imap;
mod manage;
mod progress;
mod render;
mod reply;
mod smtp;
mod tls;

pub use compose::build_message;
pub use imap::{inbox, read};
pub use manage::{Deleted, Folder, delete, folders, move_message, verify_login};
pub use progress::{Progress, while_running};
pub use render::{render_message, render_summary_table, save_attachments};
pub use reply::{ReplyOptions, build_reply};
pub use smtp::send;

use std::path::PathBuf;

/// How the connection to a server is protected. Saved in the login file as "starttls", "tls"
/// or "plain".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Connect in clear text and upgrade with STARTTLS before authenticating (RFC 3207 for SMTP,
    /// RFC 3501 §6.2.1 for IMAP); the upgrade is required, never opportunistic.
    Starttls,
    /// TLS from the first byte (RFC 8314 "implicit TLS"), e.g. ports 465 and 993.
    Tls,
    /// No TLS at all. Only sensible against a server on the loopback interface: the password
    /// travels in clear text.
    Plain,
}

/// One server to talk to, with the credentials to log in.
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub user: String,
    pub password: String,
    /// Extra trust anchor (PEM file), e.g. the self-signed certificate of a local `tern up`.
    pub ca_file: Option<PathBuf>,
}

/// A message to compose and send.
#[derive(Debug, Clone, Default)]
pub struct Compose {
    /// `addr@example.test` or `Display Name <addr@example.test>`.
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// Recipients that go into the SMTP envelope only, never into the header.
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub attachments: Vec<PathBuf>,
    /// Message-ID of the message answered (RFC 5322 §3.6.4), with or without angle brackets.
    pub in_reply_to: Option<String>,
    /// The thread so far, oldest first (RFC 5322 §3.6.4).
    pub references: Vec<String>,
}

/// One line of a mailbox listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Message sequence number (RFC 3501 §2.3.1.2): what `tern read N` takes.
    pub seq: u32,
    pub uid: u32,
    /// `YYYY-MM-DD HH:MM` in the sender's time zone, from the Date header, or from the
    /// server's INTERNALDATE when the header is missing or unparsable.
    pub date: String,
    /// The sender's display name, or the address when there is no name.
    pub from: String,
    pub subject: String,
    /// IMAP flags as the server names them, e.g. `\Seen`, `\Answered`, `$Forwarded`.
    pub flags: Vec<String>,
    /// RFC822.SIZE in octets.
    pub size: u32,
}

/// One message read from the server, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMessage {
    pub uid: u32,
    /// Date, From, To, Cc, Subject and Message-ID, in that order, those present, decoded.
    pub headers: Vec<(String, String)>,
    /// The first text part, or the first HTML part converted to text when there is no text part.
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// The message exactly as the server sent it.
    pub raw: Vec<u8>,
}

/// One attachment of a [`ReadMessage`], with its content decoded from its transfer encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The name the sender gave, unsanitized: use [`save_attachments`] to write it to disk.
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}
