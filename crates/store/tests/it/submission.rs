//! What the submission agent asks the store: the addresses an account may send as, and the
//! per-account submission count recorded with each queued message.

use tern_store::{NewMessage, Store, now_ms};

use crate::both;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

async fn submit(store: &Store, account_id: i64) -> String {
    store
        .enqueue_submission(
            account_id,
            NewMessage {
                sender: "bob@example.org",
                recipients: &s(&["carol@remote.test"]),
                content: b"Subject: hi\r\n\r\nbody\r\n",
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

both!(
    sendable_addresses_are_own_and_exact_aliases,
    |store| async move {
        store.add_domain("example.org").await.unwrap();
        store.add_account("bob@example.org", "pw").await.unwrap();
        store.add_account("x-bob@example.org", "pw").await.unwrap();
        store
            .add_alias(
                "sales@example.org",
                &s(&["alice@remote.test", "Bob@Example.org"]),
            )
            .await
            .unwrap();
        store
            .add_alias("info@example.org", &s(&["bob@example.org"]))
            .await
            .unwrap();
        // Names bob only as a substring of another address: not bob's.
        store
            .add_alias("other@example.org", &s(&["x-bob@example.org"]))
            .await
            .unwrap();
        // Reaches bob only through another alias: not counted.
        store
            .add_alias("nested@example.org", &s(&["info@example.org"]))
            .await
            .unwrap();
        // A catch-all never makes its domain's addresses sendable.
        store
            .add_alias("@example.org", &s(&["bob@example.org"]))
            .await
            .unwrap();
        assert_eq!(
            store.sendable_addresses("BOB@example.org").await.unwrap(),
            ["bob@example.org", "info@example.org", "sales@example.org"]
        );
        assert_eq!(
            store.sendable_addresses("x-bob@example.org").await.unwrap(),
            ["x-bob@example.org", "other@example.org"]
        );
    }
);

both!(
    submissions_are_counted_per_account_with_the_queue_entry,
    |store| async move {
        store.add_domain("example.org").await.unwrap();
        let bob = store.add_account("bob@example.org", "pw").await.unwrap();
        let eve = store.add_account("eve@example.org", "pw").await.unwrap();
        let before = now_ms();
        assert_eq!(store.submissions_since(bob.id, 0).await.unwrap(), 0);
        let first = submit(&store, bob.id).await;
        submit(&store, bob.id).await;
        submit(&store, eve.id).await;
        assert_eq!(store.submissions_since(bob.id, before).await.unwrap(), 2);
        assert_eq!(store.submissions_since(eve.id, before).await.unwrap(), 1);
        assert_eq!(
            store
                .submissions_since(bob.id, now_ms() + 60_000)
                .await
                .unwrap(),
            0
        );
        // The message is on the queue like any other.
        assert_eq!(
            store.message_content(&first).await.unwrap(),
            b"Subject: hi\r\n\r\nbody\r\n"
        );
        // Deleting it from the queue does not give the quota back.
        store.queue_delete(&first).await.unwrap();
        assert_eq!(store.submissions_since(bob.id, before).await.unwrap(), 2);
        // An invalid message is neither queued nor counted.
        assert!(
            store
                .enqueue_submission(bob.id, NewMessage::default())
                .await
                .is_err()
        );
        assert_eq!(store.submissions_since(bob.id, before).await.unwrap(), 2);
        // Removing the account removes its count with it.
        store.remove_account("eve@example.org").await.unwrap();
        assert_eq!(store.submissions_since(eve.id, 0).await.unwrap(), 0);
    }
);
