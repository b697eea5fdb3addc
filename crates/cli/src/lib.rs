//! The `tern` command as a library: the local all-in-one system (`up`), the admin client, and
//! the mail user agent (`mua`). `main.rs` only parses arguments and prints; the test harness
//! reuses `up` to start whole clusters in-process.

pub mod admin;
pub mod bench;
pub mod bench_imap;
pub mod dkim_cmd;
pub mod mua;
pub mod sieve_cmd;
pub mod token_cmd;
pub mod up;
