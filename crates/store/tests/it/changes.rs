//! Mailbox change notifications: subscribers hear of deliveries, appends, flag changes,
//! expunges and moves within a second; on PostgreSQL also of changes made through another
//! pool (another process, in effect).

use std::time::Duration;

use tern_store::{FlagOp, MailboxChanged, Store};
use tern_testkit::TestDb;
use tokio::sync::broadcast::Receiver;

use crate::both;

/// The next event about `(account, mailbox)` within a second, skipping others.
async fn expect_change(rx: &mut Receiver<MailboxChanged>, account: i64, mailbox: i64) {
    let wait = async {
        loop {
            let event = rx.recv().await.expect("change channel open");
            if event.account_id == account && event.mailbox_id == mailbox {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), wait)
        .await
        .unwrap_or_else(|_| panic!("no change of mailbox {mailbox} within a second"));
}

both!(changes_reach_subscribers, |store| async move {
    store.add_domain("example.org").await.unwrap();
    let a = store.add_account("alice@example.org", "pw").await.unwrap();
    let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
    let mut rx = store.subscribe_changes().await.unwrap();
    // Nothing happened yet.
    assert!(rx.try_recv().is_err());

    store
        .deliver(a.id, "INBOX", "k1", b"Subject: x\r\n\r\nhi\r\n")
        .await
        .unwrap();
    expect_change(&mut rx, a.id, inbox.id).await;

    store
        .store_flags(inbox.id, &[1], FlagOp::Add, &["\\Seen".to_string()])
        .await
        .unwrap();
    expect_change(&mut rx, a.id, inbox.id).await;

    let archive = store.create_mailbox(a.id, "Projects").await.unwrap();
    store
        .move_messages(a.id, inbox.id, &[1], "Projects")
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(event.mailbox_id);
    }
    seen.sort_unstable();
    let mut want = vec![inbox.id, archive.id];
    want.sort_unstable();
    assert_eq!(seen, want);

    store
        .append(a.id, "INBOX", b"x\r\n", &[], None)
        .await
        .unwrap();
    expect_change(&mut rx, a.id, inbox.id).await;
    store
        .store_flags(inbox.id, &[2], FlagOp::Add, &["\\Deleted".to_string()])
        .await
        .unwrap();
    expect_change(&mut rx, a.id, inbox.id).await;
    store.expunge(inbox.id, None).await.unwrap();
    expect_change(&mut rx, a.id, inbox.id).await;

    store.delete_mailbox(a.id, "Projects").await.unwrap();
    expect_change(&mut rx, a.id, archive.id).await;

    // A failed write (unknown mailbox) notifies nobody on PostgreSQL; on SQLite at most a
    // harmless hint. Either way no change of INBOX is reported.
    assert!(
        store
            .append(a.id, "Nope", b"x\r\n", &[], None)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(event) = rx.try_recv() {
        assert_ne!(event.mailbox_id, inbox.id, "{event:?}");
    }
});

/// Two pools on one PostgreSQL database stand for two processes: a delivery through one is
/// heard by a subscriber of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_cross_store_handles() {
    let db = TestDb::new("postgres").await;
    let watcher = Store::connect(&db.url).await.unwrap();
    let writer = Store::connect(&db.url).await.unwrap();
    writer.add_domain("example.org").await.unwrap();
    let a = writer.add_account("alice@example.org", "pw").await.unwrap();
    let inbox = writer.mailbox(a.id, "INBOX").await.unwrap().unwrap();
    let mut rx = watcher.subscribe_changes().await.unwrap();
    writer
        .deliver(a.id, "INBOX", "k1", b"hi\r\n")
        .await
        .unwrap();
    expect_change(&mut rx, a.id, inbox.id).await;
    writer.close().await;
    watcher.close().await;
    drop(db);
}
