//! RENAME, COPY and MOVE between mailboxes.

use tern_store::{Error, FlagOp, Store};

use crate::both;

async fn alice(store: &Store) -> i64 {
    store.add_domain("example.org").await.unwrap();
    store
        .add_account("alice@example.org", "pw")
        .await
        .unwrap()
        .id
}

both!(
    copy_keeps_flags_and_dates_and_move_removes,
    |store| async move {
        let a = alice(&store).await;
        let inbox = store.mailbox(a, "INBOX").await.unwrap().unwrap();
        for (i, body) in [b"one" as &[u8], b"two", b"three"].iter().enumerate() {
            store
                .append(a, "INBOX", body, &[], Some(1_000_000 + i as i64))
                .await
                .unwrap();
        }
        store
            .store_flags(inbox.id, &[2], FlagOp::Add, &["\\Flagged".to_string()])
            .await
            .unwrap();
        let archive = store.create_mailbox(a, "Keep").await.unwrap();

        let copied = store
            .copy_messages(a, inbox.id, &[3, 2, 99], "Keep")
            .await
            .unwrap();
        assert_eq!(copied.uid_validity, archive.uid_validity);
        assert_eq!(copied.uids, vec![(2, 1), (3, 2)]);
        let in_archive = store.messages(archive.id).await.unwrap();
        assert_eq!(in_archive.len(), 2);
        assert_eq!(in_archive[0].flags, vec!["\\Flagged".to_string()]);
        assert_eq!(in_archive[0].internal_date_ms, 1_000_001);
        assert_eq!(
            store.message_body(archive.id, 2).await.unwrap().as_deref(),
            Some(&b"three"[..])
        );
        assert_eq!(store.messages(inbox.id).await.unwrap().len(), 3);

        let before = store.mailbox(a, "INBOX").await.unwrap().unwrap();
        let moved = store
            .move_messages(a, inbox.id, &[1], "Keep")
            .await
            .unwrap();
        assert_eq!(moved.uids, vec![(1, 3)]);
        let left: Vec<u32> = store
            .messages(inbox.id)
            .await
            .unwrap()
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(left, vec![2, 3]);
        let after = store.mailbox(a, "INBOX").await.unwrap().unwrap();
        assert!(after.highest_modseq > before.highest_modseq);
        assert_eq!(store.mailbox(a, "Keep").await.unwrap().unwrap().messages, 3);

        assert!(matches!(
            store.copy_messages(a, inbox.id, &[2], "Nope").await,
            Err(Error::NotFound(_))
        ));
        // COPY is charged to the quota, all or nothing; MOVE is not.
        let usage = store.quota("alice@example.org").await.unwrap();
        store
            .set_quota(
                "alice@example.org",
                tern_store::Quota {
                    bytes: None,
                    messages: Some(usage.used.messages + 1),
                },
            )
            .await
            .unwrap();
        assert!(matches!(
            store.copy_messages(a, inbox.id, &[2, 3], "Keep").await,
            Err(Error::OverQuota(_))
        ));
        let used = |u: tern_store::QuotaUsage| u.used.messages;
        assert_eq!(
            used(store.quota("alice@example.org").await.unwrap()),
            usage.used.messages
        );
        store
            .copy_messages(a, inbox.id, &[2], "Keep")
            .await
            .unwrap();
        store
            .move_messages(a, inbox.id, &[3], "Keep")
            .await
            .unwrap();
        assert_eq!(
            used(store.quota("alice@example.org").await.unwrap()),
            usage.used.messages + 1
        );
        // Another account's mailbox is not a source.
        let b = store.add_account("bob@example.org", "pw").await.unwrap().id;
        assert!(matches!(
            store.copy_messages(b, inbox.id, &[2], "INBOX").await,
            Err(Error::NotFound(_))
        ));
    }
);

both!(
    rename_moves_children_and_inbox_specially,
    |store| async move {
        let a = alice(&store).await;
        store.create_mailbox(a, "Work").await.unwrap();
        store.create_mailbox(a, "Work/2025").await.unwrap();
        store.create_mailbox(a, "Workshop").await.unwrap();
        let work = store.mailbox(a, "Work").await.unwrap().unwrap();

        store.rename_mailbox(a, "Work", "Jobs").await.unwrap();
        let names: Vec<String> = store
            .list_mailboxes(a)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(names.contains(&"Jobs".to_string()));
        assert!(names.contains(&"Jobs/2025".to_string()));
        assert!(names.contains(&"Workshop".to_string()), "{names:?}");
        assert!(!names.contains(&"Work".to_string()));
        let jobs = store.mailbox(a, "Jobs").await.unwrap().unwrap();
        assert_eq!((jobs.id, jobs.uid_validity), (work.id, work.uid_validity));

        assert!(matches!(
            store.rename_mailbox(a, "Jobs", "Workshop").await,
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            store.rename_mailbox(a, "Missing", "Other").await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            store.rename_mailbox(a, "Jobs", "Jobs/sub").await,
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            store.rename_mailbox(a, "Jobs", "inbox").await,
            Err(Error::Conflict(_))
        ));

        store.append(a, "INBOX", b"m1", &[], None).await.unwrap();
        store.append(a, "INBOX", b"m2", &[], None).await.unwrap();
        store.rename_mailbox(a, "inbox", "Old").await.unwrap();
        assert_eq!(
            store.mailbox(a, "INBOX").await.unwrap().unwrap().messages,
            0
        );
        assert_eq!(store.mailbox(a, "Old").await.unwrap().unwrap().messages, 2);
    }
);

both!(bodies_are_read_ahead_within_limits, |store| async move {
    let a = alice(&store).await;
    let inbox = store.mailbox(a, "INBOX").await.unwrap().unwrap();
    for body in [b"one" as &[u8], b"two", b"three", b"four", b"five"] {
        store.append(a, "INBOX", body, &[], None).await.unwrap();
    }
    store
        .store_flags(inbox.id, &[2], FlagOp::Add, &["\\Deleted".to_string()])
        .await
        .unwrap();
    store.expunge(inbox.id, None).await.unwrap();
    let uids = |rows: Vec<(u32, Vec<u8>)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    let all = store
        .message_bodies_from(inbox.id, 1, 10, 1 << 20)
        .await
        .unwrap();
    assert_eq!(all[1], (3, b"three".to_vec()));
    assert_eq!(uids(all), [1, 3, 4, 5]);
    // From a gone UID: the next ones.
    let from_gone = store
        .message_bodies_from(inbox.id, 2, 2, 1 << 20)
        .await
        .unwrap();
    assert_eq!(uids(from_gone), [3, 4]);
    // Bytes: "three" (5) + "four" (4) fit in 9, "five" does not; the first always comes.
    let bounded = store.message_bodies_from(inbox.id, 3, 10, 9).await.unwrap();
    assert_eq!(uids(bounded), [3, 4]);
    let first_only = store.message_bodies_from(inbox.id, 3, 10, 1).await.unwrap();
    assert_eq!(uids(first_only), [3]);
    assert!(
        store
            .message_bodies_from(inbox.id, 6, 10, 1 << 20)
            .await
            .unwrap()
            .is_empty()
    );
});
