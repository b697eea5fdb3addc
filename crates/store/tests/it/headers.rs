//! Header sections kept beside message contents, and a mailbox's changes since a
//! mod-sequence.

use tern_store::{FlagOp, Store, header_section};

use crate::both;

async fn alice(store: &Store) -> i64 {
    store.add_domain("example.org").await.unwrap();
    store
        .add_account("alice@example.org", "pw")
        .await
        .unwrap()
        .id
}

const CRLF: &[u8] = b"From: a@example.org\r\nSubject: one\r\n folded\r\n\r\nbody\r\n\r\nmore\r\n";
const LF: &[u8] = b"From: b@example.org\nSubject: two\n\nbody\n";
const NO_BODY: &[u8] = b"From: c@example.org\r\nSubject: three";

both!(every_way_in_keeps_the_header_section, |store| async move {
    let a = alice(&store).await;
    let inbox = store.mailbox(a, "INBOX").await.unwrap().unwrap();
    store.deliver(a, "INBOX", "k1", CRLF).await.unwrap();
    store.append(a, "INBOX", LF, &[], None).await.unwrap();
    store.append(a, "INBOX", NO_BODY, &[], None).await.unwrap();
    let mut huge = b"X-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', tern_store::MAX_KEPT_HEADER));
    huge.extend_from_slice(b"\r\n\r\nbody\r\n");
    store.append(a, "INBOX", &huge, &[], None).await.unwrap();
    let contents = [CRLF, LF, NO_BODY, &huge];
    for (uid, content) in (1..).zip(contents) {
        assert_eq!(
            store
                .message_header(inbox.id, uid)
                .await
                .unwrap()
                .as_deref(),
            Some(header_section(content)),
            "uid {uid}"
        );
    }
    assert_eq!(
        header_section(CRLF),
        b"From: a@example.org\r\nSubject: one\r\n folded\r\n\r\n"
    );
    assert_eq!(store.message_header(inbox.id, 99).await.unwrap(), None);

    // Read ahead: a limit, and the header that is not kept read from the content.
    let ahead = store.message_headers_from(inbox.id, 2, 1).await.unwrap();
    assert_eq!(ahead, vec![(2, header_section(LF).to_vec())]);
    let ahead = store.message_headers_from(inbox.id, 1, 10).await.unwrap();
    let want: Vec<(u32, Vec<u8>)> = (1..)
        .zip(contents)
        .map(|(uid, c)| (uid, header_section(c).to_vec()))
        .collect();
    assert_eq!(ahead, want);

    // COPY and MOVE carry it along.
    store.create_mailbox(a, "Keep").await.unwrap();
    store
        .copy_messages(a, inbox.id, &[1], "Keep")
        .await
        .unwrap();
    store
        .move_messages(a, inbox.id, &[2], "Keep")
        .await
        .unwrap();
    let keep = store.mailbox(a, "Keep").await.unwrap().unwrap();
    assert_eq!(
        store.message_header(keep.id, 1).await.unwrap().as_deref(),
        Some(header_section(CRLF))
    );
    assert_eq!(
        store.message_header(keep.id, 2).await.unwrap().as_deref(),
        Some(header_section(LF))
    );
});

both!(
    changes_since_a_modseq_are_exactly_what_changed,
    |store| async move {
        let a = alice(&store).await;
        let inbox = store.mailbox(a, "INBOX").await.unwrap().unwrap();
        for body in [b"1" as &[u8], b"2", b"3"] {
            store.append(a, "INBOX", body, &[], None).await.unwrap();
        }
        let all = store.mailbox_changes(inbox.id, 0).await.unwrap();
        assert_eq!(
            all.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(all.vanished.is_empty());
        let info = store.mailbox(a, "INBOX").await.unwrap().unwrap();
        assert_eq!(
            (all.highest_modseq, all.uid_validity, all.uid_next),
            (info.highest_modseq, info.uid_validity, 4)
        );
        let mark = all.highest_modseq;
        let none = store.mailbox_changes(inbox.id, mark).await.unwrap();
        assert!(none.messages.is_empty() && none.vanished.is_empty());
        assert_eq!(none.highest_modseq, mark);

        // A flag change, an arrival and an expunge after the mark: exactly those.
        store
            .store_flags(inbox.id, &[2], FlagOp::Add, &["\\Seen".to_string()])
            .await
            .unwrap();
        store.append(a, "INBOX", b"4", &[], None).await.unwrap();
        store
            .store_flags(inbox.id, &[1], FlagOp::Add, &["\\Deleted".to_string()])
            .await
            .unwrap();
        store.expunge(inbox.id, None).await.unwrap();
        let delta = store.mailbox_changes(inbox.id, mark).await.unwrap();
        assert_eq!(
            delta.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [2, 4]
        );
        assert_eq!(delta.messages[0].flags, vec!["\\Seen".to_string()]);
        assert_eq!(delta.vanished, vec![1]);
        assert!(delta.highest_modseq > mark);
        assert!(delta.messages.iter().all(|m| m.modseq > mark));

        let gone = store.create_mailbox(a, "Gone").await.unwrap();
        store.delete_mailbox(a, "Gone").await.unwrap();
        assert!(matches!(
            store.mailbox_changes(gone.id, 0).await,
            Err(tern_store::Error::NotFound(_))
        ));
    }
);
