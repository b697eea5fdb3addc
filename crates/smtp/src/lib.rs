//! `tern-smtp`: SMTP server sessions as I/O-free state machines over the `smtp-proto` parser.
//!
//! A [`Session`] takes the bytes a client sent and returns the bytes to send back plus an
//! [`Action`] (continue, start TLS, close). Policy and storage live behind the [`Handler`]
//! trait, which the agents implement: the MSA (submission, RFC 6409) with
//! [`AuthPolicy::Required`], the MTA (port 25, RFC 5321) with [`AuthPolicy::Disabled`].
//!
//! Invariants: this crate does no I/O (no sockets, no timers, no TLS, no async runtime; the
//! only thing it takes from outside is randomness, for SCRAM nonces) and knows no storage; it never panics on any client input, and its buffers are bounded whatever
//! the client sends (see `session.rs`). Only CRLF.CRLF ends DATA, and bare CR or LF in a
//! message gets it refused, so SMTP smuggling through this server is impossible (`body.rs`).
//!
//! The [`client`] module is the I/O-free half of an SMTP client (reply parsing, capabilities,
//! command building, pre-send checks) for the transfer agent's outbound transport.
//!
//! Not here: LMTP, writing DSN messages, and the extensions the EHLO reply does not list.

mod body;
pub mod client;
mod dsn;
mod reply;
mod sasl;
mod scram;
mod session;

#[cfg(test)]
mod tests;

pub use dsn::{Notify, RcptParams, Ret, xtext_encode};
pub use reply::Reply;
pub use scram::{DEFAULT_ITERATIONS as SCRAM_DEFAULT_ITERATIONS, ScramCredentials};
pub use session::{Action, AuthPolicy, Config, Envelope, Handler, Output, Session};
