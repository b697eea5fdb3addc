//! What every Tern agent shares: configuration loading, TLS, listeners with connection limits,
//! the driver that runs a line protocol over a socket, telemetry, metrics and health endpoints,
//! shutdown, and gRPC auth.
//!
//! It holds no protocol logic (that lives in the I/O-free `smtp`, `imap` and `pop3` crates) and
//! no SQL (that lives in `store`): it is the thin layer of sockets and process plumbing.

pub mod config;
pub mod deflate;
pub mod grpc;
pub mod mailfmt;
pub mod net;
pub mod ops;
pub mod sessions;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use net::{Action, ConnectionLimits, LineProtocol, Stream};
pub use shutdown::Shutdown;
