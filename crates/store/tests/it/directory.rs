//! Domains, accounts, passwords, aliases and recipient resolution.

use tern_store::{Error, Resolution, Store};

use crate::both;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

async fn accounts_of(store: &Store, address: &str) -> (Vec<String>, Vec<String>) {
    match store.resolve(address).await.unwrap() {
        Resolution::Local { accounts, remote } => {
            (accounts.into_iter().map(|a| a.address).collect(), remote)
        }
        other => panic!("{address} resolved to {other:?}"),
    }
}

both!(domains_crud_and_validation, |store| async move {
    let d = store.add_domain("Example.ORG").await.unwrap();
    assert_eq!(d.name, "example.org");
    assert!(matches!(
        store.add_domain("example.org").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.add_domain("EXAMPLE.org").await,
        Err(Error::Conflict(_))
    ));
    for bad in ["", "bad domain", "-x.org", "a..b", "x.org."] {
        assert!(
            matches!(store.add_domain(bad).await, Err(Error::Invalid(_))),
            "{bad:?}"
        );
    }
    store.add_domain("b.example").await.unwrap();
    let names: Vec<String> = store
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["b.example", "example.org"]);
    assert!(store.is_local_domain("EXAMPLE.org").await.unwrap());
    assert!(!store.is_local_domain("other.org").await.unwrap());

    store.remove_domain("B.Example").await.unwrap();
    assert!(!store.is_local_domain("b.example").await.unwrap());
    assert!(matches!(
        store.remove_domain("b.example").await,
        Err(Error::NotFound(_))
    ));
});

both!(domain_in_use_cannot_be_removed, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_account("a@example.org", "pw").await.unwrap();
    assert!(matches!(
        store.remove_domain("example.org").await,
        Err(Error::Conflict(_))
    ));
    store.remove_account("a@example.org").await.unwrap();
    store
        .add_alias("@example.org", &s(&["x@remote.test"]))
        .await
        .unwrap();
    assert!(matches!(
        store.remove_domain("example.org").await,
        Err(Error::Conflict(_))
    ));
    store.remove_alias("@example.org").await.unwrap();
    store.remove_domain("example.org").await.unwrap();
});

both!(accounts_crud_and_mailboxes, |store| async move {
    assert!(matches!(
        store.add_account("a@example.org", "pw").await,
        Err(Error::NotFound(_))
    ));
    store.add_domain("example.org").await.unwrap();
    let a = store.add_account("Alice@Example.org", "pw").await.unwrap();
    assert_eq!(a.address, "alice@example.org");
    assert_eq!(a.domain, "example.org");
    assert!(matches!(
        store.add_account("ALICE@example.org", "other").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.add_account("no-at-sign", "pw").await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store.add_account("b@example.org", "").await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        store.account("ALICE@EXAMPLE.ORG").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.account("bob@example.org").await.unwrap(), None);

    let boxes = store.list_mailboxes(a.id).await.unwrap();
    let names: Vec<(&str, Option<&str>)> = boxes
        .iter()
        .map(|b| (b.name.as_str(), b.special_use.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("INBOX", None),
            ("Archive", Some("\\Archive")),
            ("Drafts", Some("\\Drafts")),
            ("Junk", Some("\\Junk")),
            ("Sent", Some("\\Sent")),
            ("Trash", Some("\\Trash")),
        ]
    );
    // RFC 9051 §2.3.1.1: UIDVALIDITY is non-zero, and this store never repeats one within
    // an account.
    let mut validities: Vec<u32> = boxes.iter().map(|b| b.uid_validity).collect();
    assert!(validities.iter().all(|v| *v > 0));
    validities.sort_unstable();
    validities.dedup();
    assert_eq!(validities.len(), boxes.len());

    store.add_domain("other.test").await.unwrap();
    store.add_account("bob@other.test", "pw").await.unwrap();
    store.add_account("carol@example.org", "pw").await.unwrap();
    let all: Vec<String> = store
        .list_accounts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.address)
        .collect();
    assert_eq!(
        all,
        ["alice@example.org", "bob@other.test", "carol@example.org"]
    );
    let one: Vec<String> = store
        .list_accounts(Some("Example.org"))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.address)
        .collect();
    assert_eq!(one, ["alice@example.org", "carol@example.org"]);

    // Removing an account takes its mailboxes and messages with it.
    store
        .deliver(a.id, "INBOX", "k1", b"Subject: x\r\n\r\nhi\r\n")
        .await
        .unwrap();
    store.remove_account("alice@example.org").await.unwrap();
    assert!(store.list_mailboxes(a.id).await.unwrap().is_empty());
    assert!(matches!(
        store.remove_account("alice@example.org").await,
        Err(Error::NotFound(_))
    ));
});

both!(authenticate_right_wrong_unknown, |store| async move {
    store.add_domain("example.org").await.unwrap();
    let a = store
        .add_account("alice@example.org", "correct horse")
        .await
        .unwrap();
    let ok = store
        .authenticate("Alice@Example.org", "correct horse")
        .await
        .unwrap();
    assert_eq!(ok, Some(a.clone()));
    assert_eq!(
        store
            .authenticate("alice@example.org", "Correct horse")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .authenticate("nobody@example.org", "correct horse")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.authenticate("garbage", "x").await.unwrap(), None);

    store
        .set_password("alice@example.org", "battery staple")
        .await
        .unwrap();
    assert_eq!(
        store
            .authenticate("alice@example.org", "correct horse")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .authenticate("alice@example.org", "battery staple")
            .await
            .unwrap(),
        Some(a)
    );
    assert!(matches!(
        store.set_password("nobody@example.org", "x").await,
        Err(Error::NotFound(_))
    ));
});

both!(alias_crud_and_conflicts, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_account("alice@example.org", "pw").await.unwrap();
    assert!(matches!(
        store
            .add_alias("alice@example.org", &s(&["x@remote.test"]))
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store
            .add_alias("info@nowhere.test", &s(&["alice@example.org"]))
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.add_alias("info@example.org", &[]).await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .add_alias("info@example.org", &s(&["not an address"]))
            .await,
        Err(Error::Invalid(_))
    ));
    let alias = store
        .add_alias(
            "Info@Example.org",
            &s(&["Alice@example.org", "alice@example.org", "x@Remote.test"]),
        )
        .await
        .unwrap();
    assert_eq!(alias.source, "info@example.org");
    assert_eq!(alias.targets, ["alice@example.org", "x@remote.test"]);
    assert!(matches!(
        store.add_alias("info@example.org", &s(&["a@b.c"])).await,
        Err(Error::Conflict(_))
    ));
    // An address held by an alias cannot become an account.
    assert!(matches!(
        store.add_account("info@example.org", "pw").await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.list_aliases(None).await.unwrap(), vec![alias.clone()]);
    assert_eq!(
        store.list_aliases(Some("EXAMPLE.org")).await.unwrap(),
        vec![alias]
    );
    assert!(
        store
            .list_aliases(Some("other.test"))
            .await
            .unwrap()
            .is_empty()
    );
    store.remove_alias("INFO@example.org").await.unwrap();
    assert!(matches!(
        store.remove_alias("info@example.org").await,
        Err(Error::NotFound(_))
    ));
});

both!(
    resolution_precedence_catch_all_and_loops,
    |store| async move {
        store.add_domain("example.org").await.unwrap();
        store.add_domain("example.net").await.unwrap();
        store.add_account("alice@example.org", "pw").await.unwrap();
        store.add_account("bob@example.org", "pw").await.unwrap();
        store.add_account("carol@example.net", "pw").await.unwrap();

        assert_eq!(
            store.resolve("x@elsewhere.test").await.unwrap(),
            Resolution::NotLocalDomain
        );
        assert_eq!(
            store.resolve("nobody@example.org").await.unwrap(),
            Resolution::NoSuchUser
        );
        assert_eq!(
            accounts_of(&store, "ALICE@example.ORG").await,
            (s(&["alice@example.org"]), vec![])
        );

        // An alias fans out, nests, forwards remotely and lists everybody once.
        store
            .add_alias(
                "team@example.org",
                &s(&["alice@example.org", "staff@example.org", "ext@remote.test"]),
            )
            .await
            .unwrap();
        store
            .add_alias(
                "staff@example.org",
                &s(&["bob@example.org", "alice@example.org"]),
            )
            .await
            .unwrap();
        assert_eq!(
            accounts_of(&store, "team@example.org").await,
            (
                s(&["alice@example.org", "bob@example.org"]),
                s(&["ext@remote.test"])
            )
        );

        // The catch-all answers only when nothing exact does.
        store
            .add_alias("@example.org", &s(&["carol@example.net"]))
            .await
            .unwrap();
        assert_eq!(
            accounts_of(&store, "whoever@example.org").await,
            (s(&["carol@example.net"]), vec![])
        );
        assert_eq!(
            accounts_of(&store, "bob@example.org").await,
            (s(&["bob@example.org"]), vec![])
        );

        // Loops are ignored: a <-> b with one real target still reaches it, a pure loop is nobody.
        store
            .add_alias(
                "loop-a@example.net",
                &s(&["loop-b@example.net", "carol@example.net"]),
            )
            .await
            .unwrap();
        store
            .add_alias("loop-b@example.net", &s(&["loop-a@example.net"]))
            .await
            .unwrap();
        assert_eq!(
            accounts_of(&store, "loop-b@example.net").await,
            (s(&["carol@example.net"]), vec![])
        );
        store
            .add_alias("self@example.net", &s(&["self@example.net"]))
            .await
            .unwrap();
        assert_eq!(
            store.resolve("self@example.net").await.unwrap(),
            Resolution::NoSuchUser
        );
    }
);

both!(resolution_depth_is_limited, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_account("end@example.org", "pw").await.unwrap();
    // hop0 -> hop1 -> ... -> hop11 -> end: twelve alias levels, deeper than the limit of 10.
    for i in 0..12 {
        let next = if i == 11 {
            "end@example.org".to_string()
        } else {
            format!("hop{}@example.org", i + 1)
        };
        store
            .add_alias(&format!("hop{i}@example.org"), &[next])
            .await
            .unwrap();
    }
    assert_eq!(
        store.resolve("hop0@example.org").await.unwrap(),
        Resolution::NoSuchUser
    );
    // Starting closer to the end stays within the limit.
    assert_eq!(
        accounts_of(&store, "hop5@example.org").await,
        (s(&["end@example.org"]), vec![])
    );
});

both!(scram_keys_follow_the_password, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_account("a@example.org", "pencil").await.unwrap();
    let keys = store.scram_keys("A@Example.org").await.unwrap().unwrap();
    assert!(keys.iterations >= 4096, "{keys:?}");
    assert_eq!(keys.salt.len(), 16);
    assert_eq!(
        tern_store::ScramKeys::derive("pencil", &keys.salt, keys.iterations),
        keys
    );
    store.add_account("b@example.org", "pencil").await.unwrap();
    let other = store.scram_keys("b@example.org").await.unwrap().unwrap();
    assert_ne!(other.salt, keys.salt, "every password gets its own salt");

    store.set_password("a@example.org", "crayon").await.unwrap();
    let changed = store.scram_keys("a@example.org").await.unwrap().unwrap();
    assert_ne!(changed, keys);
    assert_eq!(
        tern_store::ScramKeys::derive("crayon", &changed.salt, changed.iterations),
        changed
    );
    assert!(
        store
            .scram_keys("nobody@example.org")
            .await
            .unwrap()
            .is_none()
    );
    store.remove_account("a@example.org").await.unwrap();
    assert!(store.scram_keys("a@example.org").await.unwrap().is_none());
});

/// An account whose password was set before migration 0005 has no SCRAM keys: it still logs in
/// with its password, and gets keys when the password is set again.
mod scram_keys_missing_for_accounts_older_than_the_migration {
    use tern_store::Store;
    use tern_testkit::TestDb;

    /// What such an account looks like in the database (only the store knows SQL, but this
    /// is the store's own test reaching past it to stage an old row).
    async fn forget_scram_keys(backend: &str, url: &str) {
        let sql = "UPDATE accounts SET scram_sha256 = NULL";
        if backend == "postgres" {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    async fn run(backend: &str) {
        let db = TestDb::new(backend).await;
        let store = Store::connect(&db.url).await.unwrap();
        store.add_domain("example.org").await.unwrap();
        store
            .add_account("old@example.org", "pencil")
            .await
            .unwrap();
        forget_scram_keys(backend, &db.url).await;
        assert!(store.scram_keys("old@example.org").await.unwrap().is_none());
        assert!(
            store
                .authenticate("old@example.org", "pencil")
                .await
                .unwrap()
                .is_some()
        );
        store
            .set_password("old@example.org", "pencil")
            .await
            .unwrap();
        let keys = store.scram_keys("old@example.org").await.unwrap().unwrap();
        assert_eq!(
            tern_store::ScramKeys::derive("pencil", &keys.salt, keys.iterations),
            keys
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

both!(sub_addresses_reach_the_base, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_account("alice@example.org", "pw").await.unwrap();
    store
        .add_account("alice+exact@example.org", "pw")
        .await
        .unwrap();
    store
        .add_alias("list@example.org", &s(&["alice@example.org"]))
        .await
        .unwrap();

    // The detail is dropped when nothing answers to the full address; case does not matter.
    assert_eq!(
        accounts_of(&store, "Alice+Shopping@Example.org").await,
        (s(&["alice@example.org"]), vec![])
    );
    assert_eq!(
        accounts_of(&store, "list+x@example.org").await,
        (s(&["alice@example.org"]), vec![])
    );
    // An exact account wins over the base.
    assert_eq!(
        accounts_of(&store, "alice+exact@example.org").await,
        (s(&["alice+exact@example.org"]), vec![])
    );
    assert_eq!(
        store.resolve("nobody+x@example.org").await.unwrap(),
        Resolution::NoSuchUser
    );
    assert_eq!(
        store.resolve("+x@example.org").await.unwrap(),
        Resolution::NoSuchUser
    );

    // Another delimiter set, and none at all.
    let dash = store.with_recipient_delimiter("-+");
    assert_eq!(
        accounts_of(&dash, "alice-news@example.org").await,
        (s(&["alice@example.org"]), vec![])
    );
    let off = store.with_recipient_delimiter("");
    assert_eq!(
        off.resolve("alice+shopping@example.org").await.unwrap(),
        Resolution::NoSuchUser
    );

    // The base comes before the catch-all, which still takes what nobody else does.
    store.add_account("bob@example.org", "pw").await.unwrap();
    store
        .add_alias("@example.org", &s(&["bob@example.org"]))
        .await
        .unwrap();
    assert_eq!(
        accounts_of(&store, "alice+x@example.org").await,
        (s(&["alice@example.org"]), vec![])
    );
    assert_eq!(
        accounts_of(&off, "alice+x@example.org").await,
        (s(&["bob@example.org"]), vec![])
    );
    assert_eq!(
        accounts_of(&store, "carol+x@example.org").await,
        (s(&["bob@example.org"]), vec![])
    );
});

both!(alias_sources_and_targets_ignore_case, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_account("alice@example.org", "pw").await.unwrap();
    store
        .add_alias("Sales@Example.ORG", &s(&["ALICE@example.org"]))
        .await
        .unwrap();
    assert_eq!(
        accounts_of(&store, "sALES@example.org").await,
        (s(&["alice@example.org"]), vec![])
    );
    // A loop through a sub-address is broken like any other.
    store
        .add_alias("ring@example.org", &s(&["ring+again@example.org"]))
        .await
        .unwrap();
    assert_eq!(
        store.resolve("ring@example.org").await.unwrap(),
        Resolution::NoSuchUser
    );
});
