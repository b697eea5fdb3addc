//! QRESYNC's memory of expunged UIDs and CONDSTORE's conditional STORE: what an IMAP client
//! that last saw a mod-sequence is told went away, and UNCHANGEDSINCE.

use tern_store::{FlagOp, Store};

use crate::both;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

async fn highest(store: &Store, account: i64, name: &str) -> u64 {
    store
        .mailbox(account, name)
        .await
        .unwrap()
        .unwrap()
        .highest_modseq
}

both!(
    expunges_and_moves_are_remembered_with_their_modseq,
    |store| async move {
        store.add_domain("example.org").await.unwrap();
        let a = store.add_account("alice@example.org", "pw").await.unwrap();
        for n in 1..=5 {
            store
                .deliver(
                    a.id,
                    "INBOX",
                    &format!("k{n}"),
                    format!("Subject: {n}\r\n\r\nx\r\n").as_bytes(),
                )
                .await
                .unwrap();
        }
        let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
        assert!(store.vanished_since(inbox.id, 0).await.unwrap().is_empty());

        // EXPUNGE: the removed UIDs carry the mailbox's new highest mod-sequence.
        store
            .store_flags(inbox.id, &[1, 3], FlagOp::Add, &s(&["\\Deleted"]))
            .await
            .unwrap();
        let before = highest(&store, a.id, "INBOX").await;
        assert_eq!(store.expunge(inbox.id, None).await.unwrap(), [1, 3]);
        let after = highest(&store, a.id, "INBOX").await;
        assert_eq!(after, before + 1);
        assert_eq!(store.vanished_since(inbox.id, 0).await.unwrap(), [1, 3]);
        assert_eq!(
            store.vanished_since(inbox.id, before).await.unwrap(),
            [1, 3]
        );
        assert!(
            store
                .vanished_since(inbox.id, after)
                .await
                .unwrap()
                .is_empty()
        );

        // UID EXPUNGE of a subset records only what it removed.
        store
            .store_flags(inbox.id, &[2, 4], FlagOp::Add, &s(&["\\Deleted"]))
            .await
            .unwrap();
        assert_eq!(store.expunge(inbox.id, Some(&[4])).await.unwrap(), [4]);
        assert_eq!(store.vanished_since(inbox.id, after).await.unwrap(), [4]);

        // MOVE out of a mailbox is an expunge there, and nothing vanishes from the destination.
        store.create_mailbox(a.id, "Keep").await.unwrap();
        let mark = highest(&store, a.id, "INBOX").await;
        let moved = store
            .move_messages(a.id, inbox.id, &[5], "Keep")
            .await
            .unwrap();
        assert_eq!(moved.uids, [(5, 1)]);
        assert_eq!(store.vanished_since(inbox.id, mark).await.unwrap(), [5]);
        assert_eq!(highest(&store, a.id, "INBOX").await, mark + 1);
        let keep = store.mailbox(a.id, "Keep").await.unwrap().unwrap();
        assert!(store.vanished_since(keep.id, 0).await.unwrap().is_empty());
        assert_eq!(
            store.vanished_since(inbox.id, 0).await.unwrap(),
            [1, 3, 4, 5]
        );

        // A COPY removes nothing.
        let mark = highest(&store, a.id, "INBOX").await;
        store
            .copy_messages(a.id, inbox.id, &[2], "Keep")
            .await
            .unwrap();
        assert!(
            store
                .vanished_since(inbox.id, mark)
                .await
                .unwrap()
                .is_empty()
        );

        // Removal for good through gRPC (whatever the flags) is remembered like an EXPUNGE.
        let mark = highest(&store, a.id, "INBOX").await;
        assert_eq!(store.remove_messages(inbox.id, &[2, 9]).await.unwrap(), [2]);
        assert_eq!(highest(&store, a.id, "INBOX").await, mark + 1);
        assert_eq!(store.vanished_since(inbox.id, mark).await.unwrap(), [2]);

        // The memory goes with the mailbox.
        store.delete_mailbox(a.id, "Keep").await.unwrap();
        store.create_mailbox(a.id, "Keep").await.unwrap();
        let keep = store.mailbox(a.id, "Keep").await.unwrap().unwrap();
        assert!(store.vanished_since(keep.id, 0).await.unwrap().is_empty());
    }
);

both!(
    store_unchanged_since_is_conditional_per_message,
    |store| async move {
        store.add_domain("example.org").await.unwrap();
        let a = store.add_account("alice@example.org", "pw").await.unwrap();
        for n in 1..=3 {
            store
                .deliver(a.id, "INBOX", &format!("k{n}"), b"Subject: x\r\n\r\nx\r\n")
                .await
                .unwrap();
        }
        let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
        let seen = store
            .store_flags(inbox.id, &[2], FlagOp::Add, &s(&["\\Seen"]))
            .await
            .unwrap();
        let changed_at = seen[0].modseq;
        // UID 2 changed after `changed_at - 1`: it fails; 1 and 3 pass and share a new modseq.
        let (done, modified) = store
            .store_flags_unchanged_since(
                inbox.id,
                &[1, 2, 3],
                FlagOp::Add,
                &s(&["$Label"]),
                Some(changed_at - 1),
            )
            .await
            .unwrap();
        assert_eq!(modified, [2]);
        assert_eq!(done.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 3]);
        assert!(done.iter().all(|m| m.modseq == changed_at + 1));
        let now = store.messages(inbox.id).await.unwrap();
        assert_eq!(now[1].flags, s(&["\\Seen"]));
        assert_eq!(now[0].flags, s(&["$Label"]));
        assert_eq!(highest(&store, a.id, "INBOX").await, changed_at + 1);
        // UNCHANGEDSINCE 0 fails for every message; nothing changes, the modseq stays.
        let (done, modified) = store
            .store_flags_unchanged_since(inbox.id, &[1, 2, 3], FlagOp::Replace, &[], Some(0))
            .await
            .unwrap();
        assert!(done.is_empty());
        assert_eq!(modified, [1, 2, 3]);
        assert_eq!(highest(&store, a.id, "INBOX").await, changed_at + 1);
    }
);
