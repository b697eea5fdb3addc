//! Sieve scripts: put (insert and replace), one active script per account, delete rules, the
//! delivery path's lookup of active scripts, vacation reply tracking, and flags on delivery.

use tern_store::{DeliveryItem, Error};

use crate::both;

both!(sieve_scripts_put_list_activate_delete, |store| async move {
    store.add_domain("example.org").await.unwrap();
    let bob = store.add_account("bob@example.org", "pw").await.unwrap();
    let carol = store.add_account("carol@example.org", "pw").await.unwrap();

    let a = store
        .put_sieve_script("Bob@Example.org", "main", "keep;", false)
        .await
        .unwrap();
    assert_eq!(a.account_id, bob.id);
    assert!(!a.active);
    let b = store
        .put_sieve_script("bob@example.org", "away", "discard;", true)
        .await
        .unwrap();
    assert!(b.active);
    assert_eq!(
        store
            .active_sieve_scripts(&[bob.id, carol.id])
            .await
            .unwrap()[&bob.id]
            .id,
        b.id
    );

    // Replacing keeps the id and the active flag, and always moves updated_at on.
    let b2 = store
        .put_sieve_script("bob@example.org", "away", "keep;", false)
        .await
        .unwrap();
    assert_eq!(b2.id, b.id);
    assert!(b2.active);
    assert_eq!(b2.source, "keep;");
    assert!(b2.updated_at_ms > b.updated_at_ms);
    let active = store.active_sieve_scripts(&[bob.id]).await.unwrap();
    assert_eq!(active[&bob.id].updated_at_ms, b2.updated_at_ms);

    // Activating another script deactivates the first: at most one active.
    store
        .activate_sieve_script("bob@example.org", Some("main"))
        .await
        .unwrap();
    let listed = store.list_sieve_scripts("bob@example.org").await.unwrap();
    let names: Vec<(&str, bool)> = listed.iter().map(|s| (s.name.as_str(), s.active)).collect();
    assert_eq!(names, [("away", false), ("main", true)]);

    // The active script cannot be deleted; an inactive one can.
    assert!(matches!(
        store.delete_sieve_script("bob@example.org", "main").await,
        Err(Error::Conflict(_))
    ));
    store
        .delete_sieve_script("bob@example.org", "away")
        .await
        .unwrap();
    assert!(matches!(
        store.sieve_script("bob@example.org", "away").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        store
            .sieve_script("bob@example.org", "main")
            .await
            .unwrap()
            .source,
        "keep;"
    );

    // Deactivating: Sieve off.
    store
        .activate_sieve_script("bob@example.org", None)
        .await
        .unwrap();
    assert!(
        store
            .active_sieve_scripts(&[bob.id])
            .await
            .unwrap()
            .is_empty()
    );
    store
        .delete_sieve_script("bob@example.org", "main")
        .await
        .unwrap();
    assert!(
        store
            .list_sieve_scripts("bob@example.org")
            .await
            .unwrap()
            .is_empty()
    );

    // Errors name what is wrong.
    assert!(matches!(
        store
            .put_sieve_script("nobody@example.org", "x", "keep;", false)
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store
            .put_sieve_script("bob@example.org", "a\nb", "keep;", false)
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .put_sieve_script("bob@example.org", "big", &"#".repeat(300 * 1024), false)
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .activate_sieve_script("bob@example.org", Some("missing"))
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.list_sieve_scripts("nobody@example.org").await,
        Err(Error::NotFound(_))
    ));

    // Scripts go with their account.
    store
        .put_sieve_script("carol@example.org", "c", "keep;", true)
        .await
        .unwrap();
    store.remove_account("carol@example.org").await.unwrap();
    assert!(
        store
            .active_sieve_scripts(&[carol.id])
            .await
            .unwrap()
            .is_empty()
    );
});

both!(sieve_vacation_one_reply_per_period, |store| async move {
    store.add_domain("example.org").await.unwrap();
    let bob = store.add_account("bob@example.org", "pw").await.unwrap();
    let day = 86_400_000;

    assert!(
        !store
            .vacation_sent_since(bob.id, "ann@x.test", "h1", 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_vacation(bob.id, "Ann@X.test", "h1", day)
            .await
            .unwrap()
    );
    // Within the period: no second reply, whatever the spelling of the sender.
    assert!(
        !store
            .claim_vacation(bob.id, "ann@x.test", "h1", day)
            .await
            .unwrap()
    );
    assert!(
        store
            .vacation_sent_since(bob.id, "ANN@x.test", "h1", tern_store::now_ms() - day)
            .await
            .unwrap()
    );
    // Another handle (a changed vacation message) or another sender is a new reply.
    assert!(
        store
            .claim_vacation(bob.id, "ann@x.test", "h2", day)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_vacation(bob.id, "zed@x.test", "h1", day)
            .await
            .unwrap()
    );
    // A period that has passed (0 here) allows the next reply.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(
        store
            .claim_vacation(bob.id, "ann@x.test", "h1", 1)
            .await
            .unwrap()
    );

    // Concurrent claims: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_vacation(bob.id, "race@x.test", "h", day)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
});

both!(deliver_many_sets_initial_flags, |store| async move {
    store.add_domain("example.org").await.unwrap();
    let bob = store.add_account("bob@example.org", "pw").await.unwrap();
    let flags = vec!["\\Flagged".to_string(), "$Work".to_string()];
    let done = store
        .deliver_many(&[DeliveryItem {
            account_id: bob.id,
            mailbox: "INBOX",
            delivery_key: "k1",
            content: b"Subject: x\r\n\r\nbody\r\n",
            flags: &flags,
        }])
        .await
        .unwrap();
    let metas = store
        .messages(done[0].as_ref().unwrap().mailbox_id)
        .await
        .unwrap();
    assert_eq!(metas.len(), 1);
    assert!(metas[0].flags.iter().any(|f| f == "\\Flagged"));
    assert!(metas[0].flags.iter().any(|f| f == "$Work"));
    // A flag IMAP cannot store fails the batch: the caller filters with flag_is_storable.
    let bad = vec!["\\Bogus".to_string()];
    assert!(matches!(
        store
            .deliver_many(&[DeliveryItem {
                account_id: bob.id,
                mailbox: "INBOX",
                delivery_key: "k2",
                content: b"x",
                flags: &bad,
            }])
            .await,
        Err(Error::Invalid(_))
    ));
});

both!(
    sieve_script_rename_keeps_source_and_active_flag,
    |store| async move {
        store.add_domain("example.org").await.unwrap();
        let bob = store.add_account("bob@example.org", "pw").await.unwrap();
        let main = store
            .put_sieve_script("bob@example.org", "main", "keep;", true)
            .await
            .unwrap();
        store
            .put_sieve_script("bob@example.org", "other", "discard;", false)
            .await
            .unwrap();
        store
            .rename_sieve_script("bob@example.org", "main", "work")
            .await
            .unwrap();
        let work = store.sieve_script("bob@example.org", "work").await.unwrap();
        assert_eq!(
            (work.id, work.source.as_str(), work.active),
            (main.id, "keep;", true)
        );
        assert_eq!(
            store.active_sieve_scripts(&[bob.id]).await.unwrap()[&bob.id].id,
            main.id
        );
        assert!(matches!(
            store.sieve_script("bob@example.org", "main").await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            store
                .rename_sieve_script("bob@example.org", "work", "other")
                .await,
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            store
                .rename_sieve_script("bob@example.org", "gone", "x")
                .await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            store
                .rename_sieve_script("bob@example.org", "work", "a/b")
                .await,
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            store
                .rename_sieve_script("nobody@example.org", "work", "x")
                .await,
            Err(Error::NotFound(_))
        ));
    }
);
