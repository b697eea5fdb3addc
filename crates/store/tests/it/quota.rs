//! Quotas (limits, exact usage through delivery, append, expunge and mailbox deletion, recount)
//! and forwards queued once per delivery key.

use tern_store::{
    Account, DeliveryItem, Error, FlagOp, NewMessage, QueueFilter, Quota, Store, Usage,
};

use crate::both;

async fn alice(store: &Store) -> Account {
    store.add_domain("example.org").await.unwrap();
    store.add_account("alice@example.org", "pw").await.unwrap()
}

async fn used(store: &Store, address: &str) -> Usage {
    store.quota(address).await.unwrap().used
}

fn usage(bytes: u64, messages: u64) -> Usage {
    Usage { bytes, messages }
}

both!(quota_usage_follows_every_change, |store| async move {
    let a = alice(&store).await;
    let q = store.quota("alice@example.org").await.unwrap();
    assert_eq!(q.limit, Quota::default());
    assert_eq!(q.used, usage(0, 0));

    store.deliver(a.id, "INBOX", "k1", b"12345").await.unwrap();
    // A retried key stores and charges nothing.
    store.deliver(a.id, "INBOX", "k1", b"12345").await.unwrap();
    store.append(a.id, "Junk", b"123", &[], None).await.unwrap();
    assert_eq!(used(&store, "alice@example.org").await, usage(8, 2));

    // Expunge refunds only what is removed.
    let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
    store
        .deliver(a.id, "INBOX", "k2", b"1234567")
        .await
        .unwrap();
    store
        .store_flags(inbox.id, &[1], FlagOp::Add, &["\\Deleted".to_string()])
        .await
        .unwrap();
    assert_eq!(store.expunge(inbox.id, None).await.unwrap(), vec![1]);
    assert_eq!(used(&store, "alice@example.org").await, usage(10, 2));

    // Deleting a mailbox refunds its messages.
    store.create_mailbox(a.id, "Lists").await.unwrap();
    store
        .append(a.id, "Lists", b"1234", &[], None)
        .await
        .unwrap();
    store.append(a.id, "Lists", b"12", &[], None).await.unwrap();
    assert_eq!(used(&store, "alice@example.org").await, usage(16, 4));
    store.delete_mailbox(a.id, "Lists").await.unwrap();
    assert_eq!(used(&store, "alice@example.org").await, usage(10, 2));

    let recount = store.recount_usage("alice@example.org").await.unwrap();
    assert!(!recount.drifted(), "{recount:?}");
    assert_eq!(recount.actual, usage(10, 2));
});

both!(quota_refuses_what_does_not_fit, |store| async move {
    let a = alice(&store).await;
    let b = store.add_account("bob@example.org", "pw").await.unwrap();
    store
        .set_quota(
            "alice@example.org",
            Quota {
                bytes: Some(10),
                messages: Some(2),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_quota("nobody@example.org", Quota::default())
            .await,
        Err(Error::NotFound(_))
    ));
    store.deliver(a.id, "INBOX", "k1", b"123456").await.unwrap();
    // 6 + 5 > 10 bytes: refused, and the key is not spent (a later retry may fit).
    assert!(matches!(
        store.deliver(a.id, "INBOX", "k2", b"12345").await,
        Err(Error::OverQuota(_))
    ));
    assert!(matches!(
        store.append(a.id, "INBOX", b"12345", &[], None).await,
        Err(Error::OverQuota(_))
    ));
    assert_eq!(used(&store, "alice@example.org").await, usage(6, 1));

    // In a batch, the copy that does not fit fails alone; earlier copies count against later
    // ones, and other accounts are not affected.
    let item = |account_id: i64, key: &'static str, content: &'static [u8]| DeliveryItem {
        account_id,
        mailbox: "INBOX",
        delivery_key: key,
        content,
        flags: &[],
    };
    let batch = [
        item(a.id, "b1", b"12"),
        item(b.id, "b2", b"1234567890123"),
        item(a.id, "b3", b"123"),
        item(a.id, "b4", b"1"),
        item(a.id, "k1", b"123456"),
    ];
    let out = store.deliver_many(&batch).await.unwrap();
    assert!(out[0].is_ok());
    assert!(out[1].is_ok(), "bob has no quota");
    assert!(matches!(out[2], Err(Error::OverQuota(_))), "6+2+3 > 10");
    // 6 + 2 + 1 = 9 bytes fit, but a third message does not.
    assert!(matches!(out[3], Err(Error::OverQuota(_))));
    assert!(out[4].as_ref().unwrap().duplicate);
    assert_eq!(used(&store, "alice@example.org").await, usage(8, 2));
    assert_eq!(used(&store, "bob@example.org").await, usage(13, 1));

    // Raising the limit lets the refused key through.
    store
        .set_quota(
            "alice@example.org",
            Quota {
                bytes: Some(100),
                messages: None,
            },
        )
        .await
        .unwrap();
    let q = store.quota("alice@example.org").await.unwrap();
    assert_eq!(q.limit.bytes, Some(100));
    assert_eq!(q.limit.messages, None);
    assert!(
        !store
            .deliver(a.id, "INBOX", "k2", b"12345")
            .await
            .unwrap()
            .duplicate
    );
    assert_eq!(used(&store, "alice@example.org").await, usage(13, 3));
});

/// Recount on a database whose recorded usage was damaged behind the store's back (by SQL,
/// as an operator might): it reports the drift, repairs it, and a second run finds none.
async fn recount_repairs_drift(backend: &str) {
    let db = tern_testkit::TestDb::new(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    let a = alice(&store).await;
    store.deliver(a.id, "INBOX", "k1", b"12345").await.unwrap();
    store.deliver(a.id, "INBOX", "k2", b"123").await.unwrap();
    let damage = "UPDATE accounts SET used_bytes = 1, used_messages = 7";
    if backend == "postgres" {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(damage).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::query(damage).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let first = store.recount_usage("alice@example.org").await.unwrap();
    assert!(first.drifted());
    assert_eq!(first.recorded, usage(1, 7));
    assert_eq!(first.actual, usage(8, 2));
    assert_eq!(used(&store, "alice@example.org").await, usage(8, 2));
    let second = store.recount_usage("alice@example.org").await.unwrap();
    assert!(!second.drifted());
    assert!(matches!(
        store.recount_usage("nobody@example.org").await,
        Err(Error::NotFound(_))
    ));
    store.close().await;
}

mod quota_recount_repairs_drift {
    #[tokio::test]
    async fn postgres() {
        super::recount_repairs_drift("postgres").await;
    }

    #[tokio::test]
    async fn sqlite() {
        super::recount_repairs_drift("sqlite").await;
    }
}

both!(forward_is_queued_once_per_key, |store| async move {
    let rcpt = vec!["ext@remote.test".to_string()];
    let msg = NewMessage {
        sender: "SRS0=abcd=XY=sender.test=a@example.org",
        recipients: &rcpt,
        content: b"Subject: fwd\r\n\r\nbody\r\n",
        ..Default::default()
    };
    let first = store.enqueue_forward("q:1", msg).await.unwrap();
    assert!(!first.duplicate);
    let again = store.enqueue_forward("q:1", msg).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.queue_id, first.queue_id);
    let other = store.enqueue_forward("q:2", msg).await.unwrap();
    assert_ne!(other.queue_id, first.queue_id);
    let queued = store.queue_filter(&QueueFilter::default()).await.unwrap();
    assert_eq!(queued.len(), 2);
    let shown = store.queue_show(&first.queue_id).await.unwrap().unwrap();
    assert_eq!(shown.sender, msg.sender);
    assert_eq!(shown.recipients.len(), 1);
    assert!(matches!(
        store.enqueue_forward("", msg).await,
        Err(Error::Invalid(_))
    ));
});
