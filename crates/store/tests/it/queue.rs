//! The outbound queue: enqueue, leases, outcomes, admin operations.

use std::collections::HashSet;

use tern_store::{Error, NewMessage, RecipientState, Store, now_ms};

use crate::both;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

async fn enqueue(store: &Store, recipients: &[&str]) -> String {
    store
        .enqueue(NewMessage {
            sender: "sender@example.org",
            recipients: &s(recipients),
            content: b"Subject: test\r\n\r\nbody\r\n",
        })
        .await
        .unwrap()
}

both!(
    enqueue_stores_content_once_and_recipients,
    |store| async move {
        let before = now_ms();
        let id = store
            .enqueue(NewMessage {
                sender: "",
                recipients: &s(&["a@remote.test", "B@Remote.test"]),
                content: b"hello",
            })
            .await
            .unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(store.message_content(&id).await.unwrap(), b"hello");
        let shown = store.queue_show(&id).await.unwrap().unwrap();
        assert_eq!(shown.id, id);
        assert_eq!(shown.sender, "");
        assert_eq!(shown.size, 5);
        assert!(shown.created_at_ms >= before);
        let addresses: Vec<&str> = shown
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        // Remote local parts may be case-sensitive (RFC 5321 §2.4): stored as given.
        assert_eq!(addresses, ["a@remote.test", "B@Remote.test"]);
        for r in &shown.recipients {
            assert_eq!(r.state, RecipientState::Queued);
            assert_eq!(r.attempts, 0);
            assert_eq!(r.lease_owner, None);
            assert!(r.next_attempt_at_ms >= before);
        }
        assert!(store.next_due_ms().await.unwrap().unwrap() <= now_ms());

        assert!(matches!(
            store
                .enqueue(NewMessage {
                    sender: "x@y.z",
                    recipients: &[],
                    content: b"x"
                })
                .await,
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            store.message_content("nope").await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(store.queue_show("nope").await.unwrap(), None);
    }
);

both!(
    enqueue_stores_a_repeated_recipient_once,
    |store| async move {
        let id = enqueue(
            &store,
            &[
                "bob@remote.test",
                "bob@REMOTE.test",
                "Bob@remote.test",
                "bob@remote.test",
            ],
        )
        .await;
        let shown = store.queue_show(&id).await.unwrap().unwrap();
        let addresses: Vec<_> = shown
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        // The domain is folded; the local part is the receiving host's business.
        assert_eq!(addresses, ["bob@remote.test", "Bob@remote.test"]);
    }
);

both!(claim_records_attempt_and_leases, |store| async move {
    let id = enqueue(&store, &["a@remote.test", "b@remote.test"]).await;
    let before = now_ms();
    let claims = store.claim("runner-1", 10, 60_000).await.unwrap();
    assert_eq!(claims.len(), 2);
    for c in &claims {
        assert_eq!(c.queue_id, id);
        assert_eq!(c.sender, "sender@example.org");
        // The attempt is counted before it is made.
        assert_eq!(c.attempts, 1);
    }
    let shown = store.queue_show(&id).await.unwrap().unwrap();
    for r in &shown.recipients {
        assert_eq!(r.attempts, 1);
        assert_eq!(r.lease_owner.as_deref(), Some("runner-1"));
        assert!(r.lease_expires_ms.unwrap() >= before + 60_000);
    }
    // Leased rows are not claimable by anybody, the holder included.
    assert!(
        store
            .claim("runner-2", 10, 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim("runner-1", 10, 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    // While leased, the queue is next due when the lease runs out.
    let due = store.next_due_ms().await.unwrap().unwrap();
    assert!(due >= before + 60_000, "{due} vs {before}");

    assert!(matches!(
        store.claim("", 1, 1000).await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store.claim("x", 1, 0).await,
        Err(Error::Invalid(_))
    ));
    assert!(store.claim("x", 0, 1000).await.unwrap().is_empty());
});

both!(claim_respects_limit_and_order, |store| async move {
    let first = enqueue(&store, &["1@r.test", "2@r.test", "3@r.test"]).await;
    let second = enqueue(&store, &["4@r.test"]).await;
    let a = store.claim("r", 2, 60_000).await.unwrap();
    assert_eq!(a.len(), 2);
    let b = store.claim("r", 10, 60_000).await.unwrap();
    assert_eq!(b.len(), 2);
    let mut ids: Vec<i64> = a.iter().chain(&b).map(|c| c.recipient_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let queues: HashSet<&str> = a.iter().chain(&b).map(|c| c.queue_id.as_str()).collect();
    assert_eq!(queues, HashSet::from([first.as_str(), second.as_str()]));
});

both!(concurrent_claims_are_disjoint, |store| async move {
    let mut all = HashSet::new();
    for i in 0..12 {
        let id = enqueue(&store, &[&format!("{i}a@r.test"), &format!("{i}b@r.test")]).await;
        for r in store.queue_show(&id).await.unwrap().unwrap().recipients {
            all.insert(r.id);
        }
    }
    let mut tasks = Vec::new();
    for owner in ["runner-a", "runner-b", "runner-c"] {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claims = store.claim(owner, 3, 60_000).await.unwrap();
                if claims.is_empty() {
                    break;
                }
                mine.extend(claims.into_iter().map(|c| (c.recipient_id, owner)));
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for (id, owner) in task.await.unwrap() {
            assert!(
                seen.insert(id),
                "recipient {id} claimed twice (again by {owner})"
            );
        }
    }
    assert_eq!(seen, all);
});

both!(expired_lease_is_taken_over, |store| async move {
    let id = enqueue(&store, &["a@remote.test"]).await;
    let first = store.claim("dead-runner", 10, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = store.claim("live-runner", 10, 60_000).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].recipient_id, first[0].recipient_id);
    assert_eq!(second[0].attempts, 2);
    // The dead runner's late report is refused; the live one's is accepted.
    assert!(matches!(
        store
            .mark_delivered(first[0].recipient_id, "dead-runner", "250 ok")
            .await,
        Err(Error::LeaseLost)
    ));
    store
        .mark_delivered(second[0].recipient_id, "live-runner", "250 2.0.0 ok")
        .await
        .unwrap();
    let r = &store.queue_show(&id).await.unwrap().unwrap().recipients[0];
    assert_eq!(r.state, RecipientState::Delivered);
    assert_eq!(r.last_reply, "250 2.0.0 ok");
    assert_eq!(r.lease_owner, None);
    assert_eq!(r.lease_expires_ms, None);
});

both!(outcomes_need_the_lease, |store| async move {
    let id = enqueue(&store, &["d@r.test", "f@r.test", "q@r.test"]).await;
    let claims = store.claim("r1", 10, 60_000).await.unwrap();
    let by_addr = |a: &str| claims.iter().find(|c| c.address == a).unwrap().recipient_id;
    let (d, f, q) = (
        by_addr("d@r.test"),
        by_addr("f@r.test"),
        by_addr("q@r.test"),
    );

    for (result, what) in [
        (store.mark_delivered(d, "r2", "250").await, "delivered"),
        (store.mark_failed(f, "r2", "550").await, "failed"),
        (store.mark_deferred(q, "r2", "451", 0).await, "deferred"),
        (
            store.mark_delivered(999_999, "r1", "250").await,
            "unknown id",
        ),
    ] {
        assert!(
            matches!(result, Err(Error::LeaseLost)),
            "{what}: {result:?}"
        );
    }

    store.mark_delivered(d, "r1", "250 ok").await.unwrap();
    store
        .mark_failed(f, "r1", "550 no such user")
        .await
        .unwrap();
    let later = now_ms() + 3_600_000;
    store
        .mark_deferred(q, "r1", "451 try later", later)
        .await
        .unwrap();
    // The lease is gone once the outcome is recorded: no second report.
    assert!(matches!(
        store.mark_failed(d, "r1", "550").await,
        Err(Error::LeaseLost)
    ));

    let shown = store.queue_show(&id).await.unwrap().unwrap();
    let state = |a: &str| {
        shown
            .recipients
            .iter()
            .find(|r| r.address == a)
            .unwrap()
            .clone()
    };
    assert_eq!(state("d@r.test").state, RecipientState::Delivered);
    assert_eq!(state("f@r.test").state, RecipientState::Failed);
    assert_eq!(state("f@r.test").last_reply, "550 no such user");
    let deferred = state("q@r.test");
    assert_eq!(deferred.state, RecipientState::Queued);
    assert_eq!(deferred.next_attempt_at_ms, later);
    assert_eq!(deferred.lease_owner, None);
    assert_eq!(deferred.attempts, 1);
    // Deferred into the future: not claimable now, and that is when the queue is next due.
    assert!(store.claim("r1", 10, 60_000).await.unwrap().is_empty());
    assert_eq!(store.next_due_ms().await.unwrap(), Some(later));

    // queue_retry makes it due now; delivered and failed recipients stay as they are.
    assert_eq!(store.queue_retry(&id).await.unwrap(), 1);
    let again = store.claim("r1", 10, 60_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].recipient_id, q);
    assert_eq!(again[0].attempts, 2);
    assert!(matches!(
        store.queue_retry("missing").await,
        Err(Error::NotFound(_))
    ));
});

both!(release_leases_frees_only_that_owner, |store| async move {
    enqueue(&store, &["a@r.test", "b@r.test"]).await;
    let mine = store.claim("stopping", 1, 60_000).await.unwrap();
    let theirs = store.claim("staying", 1, 60_000).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (1, 1));
    assert_eq!(store.release_leases("stopping").await.unwrap(), 1);
    assert_eq!(store.release_leases("stopping").await.unwrap(), 0);
    let retaken = store.claim("other", 10, 60_000).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].recipient_id, mine[0].recipient_id);
    assert_eq!(retaken[0].attempts, 2);
    store
        .mark_delivered(theirs[0].recipient_id, "staying", "250")
        .await
        .unwrap();
});

both!(queue_list_filters_and_delete_removes, |store| async move {
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    let one = enqueue(&store, &["a@r.test"]).await;
    let two = enqueue(&store, &["b@r.test", "c@r.test"]).await;
    let claims = store.claim("r", 10, 60_000).await.unwrap();
    let a = claims.iter().find(|c| c.queue_id == one).unwrap();
    store
        .mark_delivered(a.recipient_id, "r", "250")
        .await
        .unwrap();

    let all = store.queue_list(None, 100).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&one.as_str()) && ids.contains(&two.as_str()));
    assert_eq!(
        all.iter().find(|m| m.id == two).unwrap().recipients.len(),
        2
    );
    let delivered = store
        .queue_list(Some(RecipientState::Delivered), 100)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].id, one);
    let queued = store
        .queue_list(Some(RecipientState::Queued), 100)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, two);
    assert!(
        store
            .queue_list(Some(RecipientState::Failed), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.queue_list(None, 1).await.unwrap().len(), 1);

    // Deleting removes the content and every recipient; a runner's late report is refused.
    assert_eq!(store.queue_delete(&two).await.unwrap(), 2);
    assert_eq!(store.queue_show(&two).await.unwrap(), None);
    assert!(matches!(
        store.message_content(&two).await,
        Err(Error::NotFound(_))
    ));
    let b = claims.iter().find(|c| c.queue_id == two).unwrap();
    assert!(matches!(
        store.mark_delivered(b.recipient_id, "r", "250").await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        store.queue_delete(&two).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.queue_list(None, 100).await.unwrap().len(), 1);
});
