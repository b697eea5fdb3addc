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
