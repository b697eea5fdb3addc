//! Integration tests for `tern-store`: every test body runs against both PostgreSQL and SQLite,
//! each time on a fresh database from `tern_testkit::TestDb`.
//!
//! The PostgreSQL variants need a reachable server (see `TestDb`); they fail loudly rather than
//! skip when there is none.

mod changes;
mod directory;
mod dkim;
mod expunged;
mod headers;
mod mailbox;
mod mailbox_ops;
mod queue;
mod quota;
mod sieve;
mod submission;
mod subscriptions;
mod tokens;

use std::future::Future;

use tern_store::Store;
use tern_testkit::TestDb;

/// Runs `body` against a store on a fresh database of `backend`, closing both afterwards.
pub async fn with_store<F, Fut>(backend: &str, body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url)
        .await
        .unwrap_or_else(|err| panic!("connect to {backend} test database: {err}"));
    body(store.clone()).await;
    store.close().await;
    drop(db);
}

/// `both!(name, |store| async move { .. })` defines `name::postgres` and `name::sqlite`.
/// Tests run on a multi-threaded runtime so that spawned tasks really run concurrently.
#[macro_export]
macro_rules! both {
    ($name:ident, |$store:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::with_store("postgres", |$store| $body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::with_store("sqlite", |$store| $body).await;
            }
        }
    };
}

mod concurrent_migration {
    use super::*;

    /// Several processes starting at once must apply the migrations exactly once; connecting
    /// many stores concurrently to one fresh database exercises the same path.
    async fn run(backend: &str) {
        let db = TestDb::new(backend).await;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = db.url.clone();
            tasks.push(tokio::spawn(async move { Store::connect(&url).await }));
        }
        let mut stores = Vec::new();
        for task in tasks {
            stores.push(task.await.unwrap().unwrap());
        }
        stores[0].add_domain("example.org").await.unwrap();
        for store in &stores {
            assert!(store.is_local_domain("example.org").await.unwrap());
            store.close().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run("postgres").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run("sqlite").await;
    }
}
