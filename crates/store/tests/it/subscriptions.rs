//! IMAP subscriptions: defaults of a new account, SUBSCRIBE/UNSUBSCRIBE, RENAME carrying
//! them along, and names that outlive their mailbox.

use tern_store::{Error, Store};

use crate::both;

async fn alice(store: &Store) -> i64 {
    store.add_domain("example.org").await.unwrap();
    store
        .add_account("alice@example.org", "pw")
        .await
        .unwrap()
        .id
}

both!(subscriptions_defaults_and_round_trip, |store| async move {
    let a = alice(&store).await;
    assert_eq!(
        store.subscriptions(a).await.unwrap(),
        ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    );

    store.create_mailbox(a, "Work").await.unwrap();
    store.subscribe(a, "Work").await.unwrap();
    store.subscribe(a, "Work").await.unwrap();
    // A name without a mailbox may be subscribed (RFC 9051 §6.3.7).
    store.subscribe(a, "Elsewhere").await.unwrap();
    assert!(store.unsubscribe(a, "Junk").await.unwrap());
    assert!(!store.unsubscribe(a, "Junk").await.unwrap());
    assert!(store.unsubscribe(a, "inbox").await.unwrap());
    store.subscribe(a, "iNbOx").await.unwrap();
    assert_eq!(
        store.subscriptions(a).await.unwrap(),
        [
            "INBOX",
            "Archive",
            "Drafts",
            "Elsewhere",
            "Sent",
            "Trash",
            "Work"
        ]
    );
    assert!(matches!(
        store.subscribe(a, "").await,
        Err(Error::Invalid(_))
    ));

    // Deleting a mailbox keeps its subscription.
    store.delete_mailbox(a, "Work").await.unwrap();
    assert!(
        store
            .subscriptions(a)
            .await
            .unwrap()
            .contains(&"Work".to_string())
    );

    // Another account's subscriptions are separate, and removing the account removes them.
    let b = store.add_account("bob@example.org", "pw").await.unwrap().id;
    store.subscribe(b, "Bobs").await.unwrap();
    assert!(
        !store
            .subscriptions(a)
            .await
            .unwrap()
            .contains(&"Bobs".to_string())
    );
    store.remove_account("bob@example.org").await.unwrap();
    assert!(store.subscriptions(b).await.unwrap().is_empty());
});

both!(subscriptions_follow_rename, |store| async move {
    let a = alice(&store).await;
    store.create_mailbox(a, "Work").await.unwrap();
    store.create_mailbox(a, "Work/2025").await.unwrap();
    store.create_mailbox(a, "Work/Old").await.unwrap();
    store.subscribe(a, "Work").await.unwrap();
    store.subscribe(a, "Work/2025").await.unwrap();
    store.subscribe(a, "Jobs/2025").await.unwrap();
    store.rename_mailbox(a, "Work", "Jobs").await.unwrap();
    let subs = store.subscriptions(a).await.unwrap();
    assert!(subs.contains(&"Jobs".to_string()), "{subs:?}");
    assert!(subs.contains(&"Jobs/2025".to_string()), "{subs:?}");
    assert!(!subs.iter().any(|s| s.starts_with("Work")), "{subs:?}");
    // Work/Old was not subscribed, so Jobs/Old is not either.
    assert!(!subs.contains(&"Jobs/Old".to_string()), "{subs:?}");
});

/// Migration 0010 subscribes the mailboxes of accounts that existed before it. The database
/// is migrated to 0009 with sqlx's migrator, an account is staged in SQL (the store's own
/// test reaching past it), then `Store::connect` applies 0010.
mod migration_subscribes_existing_mailboxes {
    use sqlx::migrate::Migrator;
    use tern_store::Store;
    use tern_testkit::TestDb;

    const STAGE: [&str; 4] = [
        "INSERT INTO domains (name, created_at) VALUES ('example.org', 0)",
        "INSERT INTO accounts (address, domain, password_hash, created_at) \
         VALUES ('old@example.org', 'example.org', 'x', 0)",
        "INSERT INTO mailboxes (account_id, name, uid_validity, created_at) \
         SELECT id, 'INBOX', 1, 0 FROM accounts",
        "INSERT INTO mailboxes (account_id, name, uid_validity, created_at) \
         SELECT id, 'Projects', 2, 0 FROM accounts",
    ];

    async fn run(backend: &str) {
        let db = TestDb::new(backend).await;
        let dir = format!("{}/../../migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        let migrator = Migrator::new(std::path::Path::new(&dir)).await.unwrap();
        if backend == "postgres" {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            migrator.run_to(9, &pool).await.unwrap();
            for sql in STAGE {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", db.url))
                .await
                .unwrap();
            migrator.run_to(9, &pool).await.unwrap();
            for sql in STAGE {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let store = Store::connect(&db.url).await.unwrap();
        let id = store
            .account("old@example.org")
            .await
            .unwrap()
            .expect("staged account")
            .id;
        assert_eq!(
            store.subscriptions(id).await.unwrap(),
            ["INBOX", "Projects"]
        );
        store.close().await;
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
