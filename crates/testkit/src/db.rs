//! Fresh databases for tests: one per test, never shared, removed on drop.
//!
//! PostgreSQL: a database named `tern_test_<random>` is created through the admin URL in
//! `TERN_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! `WITH (FORCE)` when the [`TestDb`] is dropped, even if pools still hold connections. When the
//! server cannot be reached the test panics with a clear message: it never skips silently.
//! SQLite: a file in a temporary directory that disappears with the [`TestDb`].
//!
//! Migrations are not applied here; `tern_store::Store::connect` applies them.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The admin URL used when `TERN_TEST_DATABASE_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database; `url` is what `Store::connect` takes.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Postgres { admin_url: String, name: String },
    Sqlite { _dir: tempfile::TempDir },
}

fn admin_url() -> String {
    std::env::var("TERN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// Replaces the database name (the URL path) of a PostgreSQL URL, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    // Lowercase letters and digits only: the name is spliced into SQL as a quoted identifier,
    // so it must never contain a quote.
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

impl TestDb {
    /// `"postgres"` (or `"pg"`) or `"sqlite"`; anything else panics.
    pub async fn new(backend: &str) -> TestDb {
        match backend {
            "postgres" | "pg" => TestDb::postgres().await,
            "sqlite" => TestDb::sqlite().await,
            other => {
                panic!("TestDb::new: unknown backend {other:?} (use \"postgres\" or \"sqlite\")")
            }
        }
    }

    /// Creates a fresh PostgreSQL database; panics when the server is unreachable.
    pub async fn postgres() -> TestDb {
        let admin_url = admin_url();
        let name = format!("tern_test_{}", random_suffix());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "TestDb: cannot connect to PostgreSQL at {admin_url} ({err}); start a server \
                 or point TERN_TEST_DATABASE_URL at one"
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|err| panic!("TestDb: CREATE DATABASE {name} failed: {err}"));
        let _ = admin.close().await;
        TestDb {
            url: with_database(&admin_url, &name),
            kind: Kind::Postgres { admin_url, name },
        }
    }

    /// Creates a fresh SQLite database file (the store creates the file on connect).
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("tern-test-")
            .tempdir()
            .unwrap_or_else(|err| panic!("TestDb: cannot create a temporary directory: {err}"));
        let url = format!("sqlite://{}", dir.path().join("tern.db").display());
        TestDb {
            url,
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        match self.kind {
            Kind::Postgres { .. } => "postgres",
            Kind::Sqlite { .. } => "sqlite",
        }
    }
}

/// Drops the PostgreSQL database. `Drop` is synchronous and may run inside or outside a tokio
/// runtime (where `block_on` would panic), so the work happens on a plain thread with its own
/// small current-thread runtime, joined before returning.
fn drop_postgres_database(admin_url: String, name: String) {
    let worker = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("TestDb: cannot build a runtime to drop {name}: {err}");
                return;
            }
        };
        runtime.block_on(async move {
            let mut admin = match PgConnection::connect(&admin_url).await {
                Ok(admin) => admin,
                Err(err) => {
                    eprintln!("TestDb: cannot connect to drop {name}: {err}");
                    return;
                }
            };
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
            {
                eprintln!("TestDb: DROP DATABASE {name} failed: {err}");
            }
            let _ = admin.close().await;
        });
    });
    let _ = worker.join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Kind::Postgres { admin_url, name } = &self.kind {
            drop_postgres_database(admin_url.clone(), name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@host/db?sslmode=disable", "t2"),
            "postgres://u:p@host/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://host", "t3"), "postgres://host/t3");
    }

    #[test]
    fn suffixes_are_safe_identifiers() {
        let s = random_suffix();
        assert_eq!(s.len(), 16);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }

    #[tokio::test]
    async fn sqlite_database_disappears_with_the_testdb() {
        let db = TestDb::sqlite().await;
        let path = db.url.trim_start_matches("sqlite://").to_string();
        std::fs::write(&path, b"").unwrap();
        assert!(std::path::Path::new(&path).exists());
        drop(db);
        assert!(!std::path::Path::new(&path).exists());
    }

    #[tokio::test]
    async fn postgres_database_is_created_and_dropped() {
        let db = TestDb::postgres().await;
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        let Kind::Postgres { admin_url, name } = &db.kind else {
            unreachable!("postgres() makes a Postgres TestDb")
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        drop(db);
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        let left = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut admin)
            .await
            .unwrap();
        assert!(left.is_none(), "{name} still exists");
    }
}
