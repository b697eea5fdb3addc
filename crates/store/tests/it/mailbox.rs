//! Mailboxes: delivery idempotency, UID/MODSEQ progression, flags, expunge.

use tern_store::{Account, DeliveryItem, Error, FlagOp, Store};

use crate::both;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

async fn alice(store: &Store) -> Account {
    store.add_domain("example.org").await.unwrap();
    store.add_account("alice@example.org", "pw").await.unwrap()
}

both!(old_delivery_keys_are_purged, |store| async move {
    let a = alice(&store).await;
    let first = store.deliver(a.id, "INBOX", "q/1", b"one").await.unwrap();
    store.deliver(a.id, "INBOX", "q/2", b"two").await.unwrap();
    // Nothing is old enough yet: a retry is still recognised.
    assert_eq!(
        store
            .purge_delivery_keys(tern_store::now_ms() - 60_000, 10)
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .deliver(a.id, "INBOX", "q/1", b"one")
            .await
            .unwrap()
            .duplicate
    );
    // Later, in bounded batches, oldest first; the messages themselves stay.
    let later = tern_store::now_ms() + 1;
    assert_eq!(store.purge_delivery_keys(later, 1).await.unwrap(), 1);
    assert_eq!(store.purge_delivery_keys(later, 10).await.unwrap(), 1);
    assert_eq!(store.purge_delivery_keys(later, 10).await.unwrap(), 0);
    assert_eq!(store.purge_delivery_keys(later, 0).await.unwrap(), 0);
    let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
    assert_eq!(store.messages(inbox.id).await.unwrap().len(), 2);
    // Past the retention a key is new again.
    let again = store.deliver(a.id, "INBOX", "q/1", b"one").await.unwrap();
    assert!(!again.duplicate);
    assert_ne!(again.uid, first.uid);
});

both!(deliver_is_idempotent_per_key, |store| async move {
    let a = alice(&store).await;
    let first = store
        .deliver(a.id, "INBOX", "queue1/rcpt1", b"one")
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.uid, 1);
    let again = store
        .deliver(a.id, "INBOX", "queue1/rcpt1", b"one")
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!((again.uid, again.mailbox_id), (first.uid, first.mailbox_id));
    let inbox = store.mailbox(a.id, "inbox").await.unwrap().unwrap();
    assert_eq!(inbox.messages, 1);
    assert_eq!(inbox.uid_next, 2);

    // Another key is another message; an unknown mailbox falls back to INBOX.
    let other = store
        .deliver(a.id, "No Such Folder", "queue1/rcpt2", b"two")
        .await
        .unwrap();
    assert_eq!(
        (other.uid, other.mailbox_id, other.duplicate),
        (2, inbox.id, false)
    );
    let junk = store
        .deliver(a.id, "Junk", "queue2/rcpt1", b"spam")
        .await
        .unwrap();
    assert_eq!(junk.uid, 1);
    assert_ne!(junk.mailbox_id, inbox.id);

    // The key outlives the message: after expunge a retried delivery still stores nothing.
    store
        .store_flags(inbox.id, &[1], FlagOp::Add, &s(&["\\Deleted"]))
        .await
        .unwrap();
    assert_eq!(store.expunge(inbox.id, None).await.unwrap(), [1]);
    let retried = store
        .deliver(a.id, "INBOX", "queue1/rcpt1", b"one")
        .await
        .unwrap();
    assert!(retried.duplicate);
    assert_eq!(store.messages(inbox.id).await.unwrap().len(), 1);

    assert!(matches!(
        store.deliver(999_999, "INBOX", "k", b"x").await,
        Err(Error::NotFound(_))
    ));
});

both!(
    concurrent_duplicate_deliveries_store_one_copy,
    |store| async move {
        let a = alice(&store).await;
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.deliver(a.id, "INBOX", "same-key", b"body").await
            }));
        }
        let mut fresh = 0;
        let mut uids = Vec::new();
        for task in tasks {
            let delivered = task.await.unwrap().unwrap();
            if !delivered.duplicate {
                fresh += 1;
            }
            uids.push(delivered.uid);
        }
        assert_eq!(fresh, 1);
        assert!(uids.iter().all(|u| *u == uids[0]));
        let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
        assert_eq!(inbox.messages, 1);
    }
);

both!(uids_and_modseqs_progress, |store| async move {
    let a = alice(&store).await;
    let before = store.mailbox(a.id, "Drafts").await.unwrap().unwrap();
    assert_eq!(before.uid_next, 1);
    assert_eq!(before.messages, 0);
    assert!(before.highest_modseq >= 1);

    let x = store
        .append(
            a.id,
            "Drafts",
            b"draft one",
            &s(&["\\Draft", "\\Seen"]),
            Some(1_000),
        )
        .await
        .unwrap();
    let y = store
        .append(a.id, "Drafts", b"draft two!", &[], None)
        .await
        .unwrap();
    assert_eq!((x.uid, y.uid), (1, 2));
    assert!(!x.duplicate);
    let after = store.mailbox(a.id, "Drafts").await.unwrap().unwrap();
    assert_eq!(after.uid_next, 3);
    assert_eq!(after.messages, 2);
    assert_eq!(after.unseen, 1);
    assert_eq!(after.uid_validity, before.uid_validity);
    assert_eq!(after.highest_modseq, before.highest_modseq + 2);

    let metas = store.messages(after.id).await.unwrap();
    assert_eq!(metas.len(), 2);
    assert_eq!(metas[0].uid, 1);
    assert_eq!(metas[0].flags, ["\\Seen", "\\Draft"]);
    assert_eq!(metas[0].size, 9);
    assert_eq!(metas[0].internal_date_ms, 1_000);
    assert_eq!(metas[1].uid, 2);
    assert!(metas[1].flags.is_empty());
    assert_eq!(metas[1].size, 10);
    assert!(metas[0].modseq < metas[1].modseq);
    assert_eq!(metas[1].modseq, after.highest_modseq);
    assert_eq!(
        store.message_body(after.id, 2).await.unwrap().as_deref(),
        Some(&b"draft two!"[..])
    );
    assert_eq!(store.message_body(after.id, 3).await.unwrap(), None);

    // UIDs are never reused, even after the newest message is expunged.
    store
        .store_flags(after.id, &[2], FlagOp::Add, &s(&["\\Deleted"]))
        .await
        .unwrap();
    store.expunge(after.id, None).await.unwrap();
    let z = store
        .append(a.id, "Drafts", b"three", &[], None)
        .await
        .unwrap();
    assert_eq!(z.uid, 3);

    assert!(matches!(
        store.append(a.id, "Nope", b"x", &[], None).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store
            .append(a.id, "Drafts", b"x", &s(&["\\Bogus"]), None)
            .await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        store
            .mailbox_by_id(after.id)
            .await
            .unwrap()
            .unwrap()
            .uid_next,
        4
    );
});

both!(store_flags_operations, |store| async move {
    let a = alice(&store).await;
    let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
    for key in ["k1", "k2", "k3"] {
        store.deliver(a.id, "INBOX", key, b"m").await.unwrap();
    }
    let start = store.mailbox_by_id(inbox.id).await.unwrap().unwrap();
    assert_eq!(start.unseen, 3);

    let out = store
        .store_flags(inbox.id, &[2, 1, 99], FlagOp::Add, &s(&["\\seen", "$Work"]))
        .await
        .unwrap();
    assert_eq!(out.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    for m in &out {
        assert_eq!(m.flags, ["\\Seen", "$Work"]);
        assert_eq!(m.modseq, start.highest_modseq + 1);
    }
    let mid = store.mailbox_by_id(inbox.id).await.unwrap().unwrap();
    assert_eq!(mid.highest_modseq, start.highest_modseq + 1);
    assert_eq!(mid.unseen, 1);

    // A no-op changes nothing, modseqs included.
    let same = store
        .store_flags(inbox.id, &[1], FlagOp::Add, &s(&["\\Seen"]))
        .await
        .unwrap();
    assert_eq!(same, out[..1]);
    assert_eq!(
        store
            .mailbox_by_id(inbox.id)
            .await
            .unwrap()
            .unwrap()
            .highest_modseq,
        mid.highest_modseq
    );

    let removed = store
        .store_flags(inbox.id, &[1, 2, 3], FlagOp::Remove, &s(&["$work"]))
        .await
        .unwrap();
    assert_eq!(removed[0].flags, ["\\Seen"]);
    assert_eq!(removed[1].flags, ["\\Seen"]);
    assert!(removed[2].flags.is_empty());
    // Only the changed messages got the new modseq.
    assert_eq!(removed[0].modseq, mid.highest_modseq + 1);
    assert_ne!(removed[2].modseq, mid.highest_modseq + 1);

    let replaced = store
        .store_flags(
            inbox.id,
            &[1],
            FlagOp::Replace,
            &s(&["\\Flagged", "\\Answered"]),
        )
        .await
        .unwrap();
    assert_eq!(replaced[0].flags, ["\\Answered", "\\Flagged"]);
    let listed = store.messages(inbox.id).await.unwrap();
    assert_eq!(listed[0], replaced[0]);
    assert_eq!(
        store.mailbox_by_id(inbox.id).await.unwrap().unwrap().unseen,
        2
    );

    // Many UIDs at once take the whole-mailbox path; the result is the same.
    let many: Vec<u32> = (1..=100).collect();
    let all = store
        .store_flags(inbox.id, &many, FlagOp::Add, &s(&["bulk"]))
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|m| m.flags.contains(&"bulk".to_string())));

    assert!(matches!(
        store
            .store_flags(999_999, &[1], FlagOp::Add, &s(&["x"]))
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store
            .store_flags(inbox.id, &[1], FlagOp::Add, &s(&["a b"]))
            .await,
        Err(Error::Invalid(_))
    ));
});

both!(expunge_removes_deleted_messages, |store| async move {
    let a = alice(&store).await;
    let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
    for key in ["k1", "k2", "k3", "k4", "k5"] {
        store.deliver(a.id, "INBOX", key, b"m").await.unwrap();
    }
    assert!(store.expunge(inbox.id, None).await.unwrap().is_empty());
    let unchanged = store.mailbox_by_id(inbox.id).await.unwrap().unwrap();

    store
        .store_flags(inbox.id, &[4, 2, 5], FlagOp::Add, &s(&["\\Deleted"]))
        .await
        .unwrap();
    // UID EXPUNGE: only the named ones among those flagged.
    assert_eq!(
        store.expunge(inbox.id, Some(&[5, 1, 2])).await.unwrap(),
        [2, 5]
    );
    let mid = store.mailbox_by_id(inbox.id).await.unwrap().unwrap();
    assert_eq!(mid.messages, 3);
    assert!(mid.highest_modseq > unchanged.highest_modseq + 1);
    assert_eq!(store.expunge(inbox.id, None).await.unwrap(), [4]);
    let uids: Vec<u32> = store
        .messages(inbox.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(uids, [1, 3]);
    assert!(matches!(
        store.expunge(999_999, None).await,
        Err(Error::NotFound(_))
    ));
});

both!(create_and_delete_mailboxes, |store| async move {
    let a = alice(&store).await;
    let old = store.mailbox(a.id, "Lists").await.unwrap();
    assert_eq!(old, None);
    let made = store.create_mailbox(a.id, "Lists").await.unwrap();
    assert_eq!((made.uid_next, made.messages), (1, 0));
    assert!(matches!(
        store.create_mailbox(a.id, "Lists").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.create_mailbox(a.id, "inbox").await,
        Err(Error::Conflict(_))
    ));
    store.append(a.id, "Lists", b"x", &[], None).await.unwrap();
    store.delete_mailbox(a.id, "Lists").await.unwrap();
    assert!(matches!(
        store.delete_mailbox(a.id, "Lists").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.delete_mailbox(a.id, "INBOX").await,
        Err(Error::Invalid(_))
    ));
    // RFC 9051 §2.3.1.1: a re-created mailbox gets a new UIDVALIDITY.
    let again = store.create_mailbox(a.id, "Lists").await.unwrap();
    assert!(again.uid_validity > made.uid_validity);
    assert_ne!(again.id, made.id);
});

both!(deliver_many_repeated_key_is_one_copy, |store| async move {
    let a = alice(&store).await;
    let item = |key: &'static str, content: &'static [u8]| DeliveryItem {
        account_id: a.id,
        mailbox: "INBOX",
        delivery_key: key,
        content,
        flags: &[],
    };
    let items = [item("k1", b"one"), item("k2", b"two"), item("k1", b"one")];
    let done: Vec<_> = store
        .deliver_many(&items)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        done.iter()
            .map(|d| (d.uid, d.duplicate))
            .collect::<Vec<_>>(),
        [(1, false), (2, false), (1, true)]
    );
    let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
    // One copy per key, and no UID spent on the repeat.
    assert_eq!((inbox.messages, inbox.uid_next), (2, 3));
    let usage = store.quota(&a.address).await.unwrap().used;
    assert_eq!(usage.messages, 2);
    assert_eq!(usage.bytes, 6);
});

both!(
    deliver_many_stores_in_order_once_per_key,
    |store| async move {
        let a = alice(&store).await;
        let b = store.add_account("bob@example.org", "pw").await.unwrap();
        let item =
            |account_id: i64, mailbox: &'static str, key: &'static str, content: &'static [u8]| {
                DeliveryItem {
                    account_id,
                    mailbox,
                    delivery_key: key,
                    content,
                    flags: &[],
                }
            };
        // Retried key from an earlier single delivery: reported, not stored again.
        let earlier = store.deliver(a.id, "INBOX", "k0", b"zero").await.unwrap();
        let items = [
            item(b.id, "INBOX", "k1", b"one"),
            item(a.id, "INBOX", "k2", b"two"),
            item(a.id, "INBOX", "k0", b"zero"),
            item(a.id, "Junk", "k3", b"three"),
            item(a.id, "INBOX", "k4", b"four"),
        ];
        let done: Vec<_> = store
            .deliver_many(&items)
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(done.len(), 5);
        let inbox_a = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
        let junk_a = store.mailbox(a.id, "Junk").await.unwrap().unwrap();
        let inbox_b = store.mailbox(b.id, "INBOX").await.unwrap().unwrap();
        assert_eq!(
            (done[0].mailbox_id, done[0].uid, done[0].duplicate),
            (inbox_b.id, 1, false)
        );
        assert_eq!((done[1].mailbox_id, done[1].uid), (inbox_a.id, 2));
        assert_eq!(
            done[2],
            tern_store::Delivered {
                duplicate: true,
                ..earlier
            }
        );
        assert_eq!((done[3].mailbox_id, done[3].uid), (junk_a.id, 1));
        assert_eq!((done[4].mailbox_id, done[4].uid), (inbox_a.id, 3));
        // No UID was spent on the duplicate.
        assert_eq!((inbox_a.messages, inbox_a.uid_next), (3, 4));
        assert_eq!(
            store.message_body(inbox_a.id, 3).await.unwrap().as_deref(),
            Some(&b"four"[..])
        );

        // The whole batch again: every copy a duplicate, nothing new stored.
        let again: Vec<_> = store
            .deliver_many(&items)
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(again.iter().all(|d| d.duplicate));
        assert_eq!(
            again
                .iter()
                .map(|d| (d.mailbox_id, d.uid))
                .collect::<Vec<_>>(),
            done.iter()
                .map(|d| (d.mailbox_id, d.uid))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            store
                .mailbox(a.id, "INBOX")
                .await
                .unwrap()
                .unwrap()
                .messages,
            3
        );

        // One unknown account spoils the batch: nothing of it is stored.
        let bad = [
            item(a.id, "INBOX", "k5", b"five"),
            item(999_999, "INBOX", "k6", b"six"),
        ];
        assert!(matches!(
            store.deliver_many(&bad).await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(
            store
                .mailbox(a.id, "INBOX")
                .await
                .unwrap()
                .unwrap()
                .messages,
            3
        );
        assert!(matches!(
            store.deliver_many(&[item(a.id, "INBOX", "", b"x")]).await,
            Err(Error::Invalid(_))
        ));
        assert!(store.deliver_many(&[]).await.unwrap().is_empty());
    }
);
