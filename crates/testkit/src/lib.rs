//! `tern-testkit`: shared test harness for Tern's crates (a dev-dependency only).
//!
//! [`TestDb`] gives each test a fresh, migrated-on-connect database on PostgreSQL or SQLite and
//! removes it afterwards. Nothing here is meant for production code paths.

pub mod db;
pub mod dns;
pub use db::TestDb;

pub mod cluster;
pub mod peers;
pub mod procs;
pub mod py;
pub use cluster::TestCluster;

/// Logs of the code under test go to the test's captured output, filtered by `RUST_LOG`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
