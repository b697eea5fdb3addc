//! End-to-end tests of the whole path: a real client submits over SMTP with STARTTLS and AUTH,
//! the queue runner hands the message to the MDA over gRPC, and a real client reads it back
//! over IMAP — in-process clusters on both backends, `tern up` as a process on SQLite, and the
//! four agent binaries as separate processes on Postgres.

mod common;
mod delivery;
mod dkim;
mod errors;
mod grpc;
mod grpc_mailbox;
mod grpc_submit;
mod idle;
mod imap_ext;
mod imap_folders;
mod imap_mime;
mod imap_resync;
mod inbound;
mod managesieve;
mod ops;
mod outbound;
mod path;
mod processes;
mod real_clients;
mod sieve;
mod sieve_redirect;
mod submission;
mod takeover;
mod tern_up;
mod tls_reload;
mod trace;
