//! The outbound queue: enqueue, leases, outcomes, admin operations.

use std::collections::HashSet;

use tern_store::{
    Error, NewMessage, Notify, OutcomeRecord, QueueFilter, RecipientDsn, RecipientState, Recorded,
    Ret, Store, now_ms,
};

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
            ..Default::default()
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
                ..Default::default()
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
                    content: b"x",
                    ..Default::default()
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

fn dsn(notify: Notify, orcpt: Option<&str>) -> RecipientDsn {
    RecipientDsn {
        notify,
        orcpt: orcpt.map(str::to_string),
    }
}

const SUCCESS_ONLY: Notify = Notify {
    never: false,
    success: true,
    failure: false,
    delay: false,
    explicit: true,
};

const NEVER: Notify = Notify {
    never: true,
    success: false,
    failure: false,
    delay: false,
    explicit: true,
};

/// A bounce for `to`, as the MTA would enqueue it: null sender, the DSN as content.
fn bounce<'a>(to: &'a [String]) -> NewMessage<'a> {
    NewMessage {
        sender: "",
        recipients: to,
        content: b"Subject: Undelivered Mail Returned to Sender\r\n\r\nreport\r\n",
        ..Default::default()
    }
}

both!(enqueue_keeps_dsn_parameters, |store| async move {
    let recipients = s(&["a@r.test", "b@r.test", "c@r.test"]);
    let params = [
        dsn(SUCCESS_ONLY, Some("rfc822;alias@r.test")),
        dsn(NEVER, None),
        dsn(Notify::default(), None),
    ];
    let id = store
        .enqueue(NewMessage {
            sender: "s@example.org",
            recipients: &recipients,
            content: b"x",
            envid: Some("env-42"),
            ret: Some(Ret::Headers),
            rcpt_dsn: &params,
            requiretls: true,
            trace_context: None,
        })
        .await
        .unwrap();
    let shown = store.queue_show(&id).await.unwrap().unwrap();
    assert_eq!(shown.envid.as_deref(), Some("env-42"));
    assert_eq!(shown.ret, Some(Ret::Headers));
    assert!(shown.requiretls);
    let got: Vec<(Notify, Option<&str>, bool)> = shown
        .recipients
        .iter()
        .map(|r| (r.notify, r.orcpt.as_deref(), r.delay_warned))
        .collect();
    assert_eq!(
        got,
        [
            (SUCCESS_ONLY, Some("rfc822;alias@r.test"), false),
            (NEVER, None, false),
            (Notify::default(), None, false),
        ]
    );

    let claims = store.claim("r", 10, 60_000).await.unwrap();
    assert_eq!(claims.len(), 3);
    for c in &claims {
        assert_eq!(c.envid.as_deref(), Some("env-42"));
        assert_eq!(c.ret, Some(Ret::Headers));
        assert!(c.requiretls);
        assert!(!c.delay_warned);
    }
    let a = claims.iter().find(|c| c.address == "a@r.test").unwrap();
    assert_eq!(a.notify, SUCCESS_ONLY);
    assert!(a.notify.wants_success() && !a.notify.wants_failure());
    assert_eq!(a.orcpt.as_deref(), Some("rfc822;alias@r.test"));
    let b = claims.iter().find(|c| c.address == "b@r.test").unwrap();
    assert!(!b.notify.wants_failure() && !b.notify.wants_delay() && !b.notify.wants_success());
    // Not given: RFC 3461 §4.1's default of FAILURE,DELAY.
    let c = claims.iter().find(|c| c.address == "c@r.test").unwrap();
    assert!(c.notify.wants_failure() && c.notify.wants_delay() && !c.notify.wants_success());

    // Without DSN parameters everything has its default.
    let plain = enqueue(&store, &["d@r.test"]).await;
    let shown = store.queue_show(&plain).await.unwrap().unwrap();
    assert_eq!(
        (shown.envid, shown.ret, shown.requiretls),
        (None, None, false)
    );
    assert_eq!(shown.recipients[0].notify, Notify::default());
    assert_eq!(shown.recipients[0].orcpt, None);

    // DSN parameters must match the recipients one for one.
    let result = store
        .enqueue(NewMessage {
            sender: "s@example.org",
            recipients: &recipients,
            content: b"x",
            rcpt_dsn: &params[..2],
            ..Default::default()
        })
        .await;
    assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");
});

both!(
    enqueue_dedupe_keeps_dsn_params_of_first_occurrence,
    |store| async move {
        let recipients = s(&["bob@r.test", "x@r.test", "bob@R.TEST"]);
        let params = [
            dsn(SUCCESS_ONLY, Some("rfc822;first@r.test")),
            dsn(Notify::default(), None),
            dsn(NEVER, Some("rfc822;second@r.test")),
        ];
        let id = store
            .enqueue(NewMessage {
                sender: "s@example.org",
                recipients: &recipients,
                content: b"x",
                rcpt_dsn: &params,
                ..Default::default()
            })
            .await
            .unwrap();
        let shown = store.queue_show(&id).await.unwrap().unwrap();
        let got: Vec<(&str, Notify, Option<&str>)> = shown
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.notify, r.orcpt.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("bob@r.test", SUCCESS_ONLY, Some("rfc822;first@r.test")),
                ("x@r.test", Notify::default(), None),
            ]
        );
    }
);

both!(failure_and_bounce_commit_together, |store| async move {
    let id = enqueue(&store, &["gone@r.test", "other@r.test"]).await;
    let claims = store.claim("r1", 10, 60_000).await.unwrap();
    let gone = claims.iter().find(|c| c.address == "gone@r.test").unwrap();
    let to = s(&["sender@example.org"]);
    let bounce_id = store
        .mark_failed_with_bounce(
            gone.recipient_id,
            "r1",
            "550 5.1.1 no such user",
            Some(bounce(&to)),
        )
        .await
        .unwrap()
        .expect("a bounce id");
    assert_ne!(bounce_id, id);

    let shown = store.queue_show(&id).await.unwrap().unwrap();
    let r = shown
        .recipients
        .iter()
        .find(|r| r.address == "gone@r.test")
        .unwrap();
    assert_eq!(r.state, RecipientState::Failed);
    assert_eq!(r.last_reply, "550 5.1.1 no such user");
    assert_eq!(r.lease_owner, None);

    // The bounce is an ordinary queued message, claimable at once.
    let next = store.claim("r1", 10, 60_000).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].queue_id, bounce_id);
    assert_eq!(next[0].sender, "");
    assert_eq!(next[0].address, "sender@example.org");
    assert!(
        store
            .message_content(&bounce_id)
            .await
            .unwrap()
            .starts_with(b"Subject: Undelivered")
    );

    // Without a bounce it is plain mark_failed.
    let other = claims.iter().find(|c| c.address == "other@r.test").unwrap();
    assert_eq!(
        store
            .mark_failed_with_bounce(other.recipient_id, "r1", "550", None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.queue_list(None, 100).await.unwrap().len(), 2);
});

both!(lease_lost_leaves_no_bounce_behind, |store| async move {
    let id = enqueue(&store, &["a@r.test"]).await;
    let claims = store.claim("r1", 10, 60_000).await.unwrap();
    let rid = claims[0].recipient_id;
    let to = s(&["sender@example.org"]);
    let result = store
        .mark_failed_with_bounce(rid, "intruder", "550", Some(bounce(&to)))
        .await;
    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
    let result = store
        .mark_deferred_with_warning(rid, "intruder", "451", 0, Some(bounce(&to)))
        .await;
    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
    let result = store
        .mark_delivered_with_notice(rid, "intruder", "250", Some(bounce(&to)))
        .await;
    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
    // A malformed bounce is refused before anything is recorded.
    let result = store
        .mark_failed_with_bounce(rid, "r1", "550", Some(bounce(&[])))
        .await;
    assert!(matches!(result, Err(Error::Invalid(_))), "{result:?}");

    let all = store.queue_list(None, 100).await.unwrap();
    assert_eq!(all.len(), 1, "no bounce may be left behind: {all:?}");
    let r = &all[0].recipients[0];
    assert_eq!(all[0].id, id);
    assert_eq!(r.state, RecipientState::Queued);
    assert_eq!(r.lease_owner.as_deref(), Some("r1"));
    assert!(!r.delay_warned);
});

both!(deferral_with_warning_warns_once, |store| async move {
    let id = enqueue(&store, &["slow@r.test"]).await;
    let to = s(&["sender@example.org"]);
    let first = store.claim("r", 10, 60_000).await.unwrap();
    assert!(!first[0].delay_warned);
    // A plain deferral does not count as a warning.
    store
        .mark_deferred_with_warning(first[0].recipient_id, "r", "451 busy", 0, None)
        .await
        .unwrap();
    let second = store.claim("r", 10, 60_000).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(!second[0].delay_warned);
    let later = now_ms() + 60_000;
    let warning_id = store
        .mark_deferred_with_warning(
            second[0].recipient_id,
            "r",
            "451 busy",
            later,
            Some(bounce(&to)),
        )
        .await
        .unwrap()
        .expect("a warning id");
    let shown = store.queue_show(&id).await.unwrap().unwrap();
    let r = &shown.recipients[0];
    assert_eq!(r.state, RecipientState::Queued);
    assert_eq!(r.next_attempt_at_ms, later);
    assert!(r.delay_warned);
    // The warning is due now; the deferred recipient is not.
    let due = store.claim("r", 10, 60_000).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].queue_id, warning_id);
    // Later deferrals keep the mark.
    store.queue_retry(&id).await.unwrap();
    let third = store.claim("r", 10, 60_000).await.unwrap();
    let mine = third.iter().find(|c| c.queue_id == id).unwrap();
    assert!(mine.delay_warned);
    store
        .mark_deferred(mine.recipient_id, "r", "451", 0)
        .await
        .unwrap();
    assert!(store.queue_show(&id).await.unwrap().unwrap().recipients[0].delay_warned);
});

both!(delivery_with_notice_enqueues_it, |store| async move {
    let id = enqueue(&store, &["a@r.test"]).await;
    let to = s(&["sender@example.org"]);
    let claims = store.claim("r", 10, 60_000).await.unwrap();
    let notice = store
        .mark_delivered_with_notice(claims[0].recipient_id, "r", "250 ok", Some(bounce(&to)))
        .await
        .unwrap()
        .expect("a notice id");
    let shown = store.queue_show(&id).await.unwrap().unwrap();
    assert_eq!(shown.recipients[0].state, RecipientState::Delivered);
    let notice = store.queue_show(&notice).await.unwrap().unwrap();
    assert_eq!(notice.sender, "");
    assert_eq!(notice.recipients[0].state, RecipientState::Queued);
});

both!(queue_filter_combines_criteria, |store| async move {
    let old = store
        .enqueue(NewMessage {
            sender: "Alice@Example.org",
            recipients: &s(&["x@Gmail.test", "y@r_test.test"]),
            content: b"x",
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let new = store
        .enqueue(NewMessage {
            sender: "bob@other.test",
            recipients: &s(&["z@gmail.test", "w@rxtest.test"]),
            content: b"x",
            ..Default::default()
        })
        .await
        .unwrap();
    // Fail the new message's gmail recipient.
    let claims = store.claim("r", 10, 60_000).await.unwrap();
    let z = claims.iter().find(|c| c.address == "z@gmail.test").unwrap();
    store.mark_failed(z.recipient_id, "r", "550").await.unwrap();
    store.release_leases("r").await.unwrap();

    let ids = |found: Vec<tern_store::QueuedMessage>| -> Vec<String> {
        found.into_iter().map(|m| m.id).collect()
    };
    let filter = |f: QueueFilter| {
        let store = store.clone();
        async move { ids(store.queue_filter(&f).await.unwrap()) }
    };
    assert_eq!(
        filter(QueueFilter::default()).await,
        [old.as_str(), new.as_str()]
    );
    assert_eq!(
        filter(QueueFilter {
            limit: 1,
            ..Default::default()
        })
        .await,
        [old.as_str()]
    );
    // Domain: whole, case-insensitive; LIKE wildcards in it are literal.
    assert_eq!(
        filter(QueueFilter {
            domain: Some("GMAIL.test".into()),
            ..Default::default()
        })
        .await,
        [old.as_str(), new.as_str()]
    );
    assert_eq!(
        filter(QueueFilter {
            domain: Some("r_test.test".into()),
            ..Default::default()
        })
        .await,
        [old.as_str()]
    );
    assert!(
        filter(QueueFilter {
            domain: Some("mail.test".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // State and domain hold for the same recipient: the new message's gmail one is failed.
    assert_eq!(
        filter(QueueFilter {
            state: Some(RecipientState::Queued),
            domain: Some("gmail.test".into()),
            ..Default::default()
        })
        .await,
        [old.as_str()]
    );
    assert_eq!(
        filter(QueueFilter {
            state: Some(RecipientState::Failed),
            ..Default::default()
        })
        .await,
        [new.as_str()]
    );
    // Sender: case-insensitive substring.
    assert_eq!(
        filter(QueueFilter {
            sender: Some("ALICE@".into()),
            ..Default::default()
        })
        .await,
        [old.as_str()]
    );
    assert!(
        filter(QueueFilter {
            sender: Some("%".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // Age: only the first message is more than 20 ms old right after the second was made,
    // and nothing is an hour old.
    let aged = filter(QueueFilter {
        older_than_ms: Some(20),
        ..Default::default()
    })
    .await;
    assert!(aged.contains(&old), "{aged:?}");
    assert!(
        filter(QueueFilter {
            older_than_ms: Some(3_600_000),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // The matching messages come with all their recipients.
    let found = store
        .queue_filter(&QueueFilter {
            sender: Some("bob".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found[0].recipients.len(), 2);
});

both!(queue_stats_counts, |store| async move {
    let empty = store.queue_stats().await.unwrap();
    assert_eq!(
        empty.by_state,
        [
            (RecipientState::Queued, 0),
            (RecipientState::Delivered, 0),
            (RecipientState::Failed, 0)
        ]
    );
    assert!(empty.by_domain.is_empty());
    assert_eq!(empty.oldest_queued_ms, None);

    let first = enqueue(&store, &["a@B.test", "\"odd@x\"@b.test", "c@c.test"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    enqueue(&store, &["d@b.test", "postmaster"]).await;
    let claims = store.claim("r", 10, 60_000).await.unwrap();
    let c = claims.iter().find(|c| c.address == "c@c.test").unwrap();
    store
        .mark_delivered(c.recipient_id, "r", "250")
        .await
        .unwrap();

    let stats = store.queue_stats().await.unwrap();
    assert_eq!(
        stats.by_state,
        [
            (RecipientState::Queued, 4),
            (RecipientState::Delivered, 1),
            (RecipientState::Failed, 0)
        ]
    );
    assert_eq!(
        stats.by_domain,
        [("b.test".to_string(), 3), (String::new(), 1)]
    );
    let created = store
        .queue_show(&first)
        .await
        .unwrap()
        .unwrap()
        .created_at_ms;
    assert_eq!(stats.oldest_queued_ms, Some(created));
});

both!(
    queue_bounce_leases_idle_queued_recipients,
    |store| async move {
        let id = enqueue(&store, &["a@r.test", "b@r.test", "c@r.test", "d@r.test"]).await;
        // A runner is working on one recipient; another is already delivered.
        let busy = store.claim("runner", 2, 60_000).await.unwrap();
        assert_eq!(busy.len(), 2);
        store
            .mark_delivered(busy[0].recipient_id, "runner", "250")
            .await
            .unwrap();
        let in_flight = busy[1].recipient_id;

        let (owner, claims) = store.queue_bounce(&id).await.unwrap();
        assert!(owner.starts_with("admin-bounce:"), "{owner}");
        assert_eq!(claims.len(), 2);
        assert!(
            claims
                .iter()
                .all(|c| c.recipient_id != in_flight && c.queue_id == id)
        );
        // Nothing was attempted.
        assert!(claims.iter().all(|c| c.attempts == 0));
        let shown = store.queue_show(&id).await.unwrap().unwrap();
        for c in &claims {
            let r = shown
                .recipients
                .iter()
                .find(|r| r.id == c.recipient_id)
                .unwrap();
            assert_eq!(r.lease_owner.as_deref(), Some(owner.as_str()));
            assert!(r.lease_expires_ms.unwrap() >= now_ms() + 4 * 60_000);
        }
        // Runners cannot take them meanwhile, and a second bounce finds nothing left.
        assert!(store.claim("runner", 10, 60_000).await.unwrap().is_empty());
        assert!(store.queue_bounce(&id).await.unwrap().1.is_empty());

        let to = s(&["sender@example.org"]);
        for c in &claims {
            store
                .mark_failed_with_bounce(
                    c.recipient_id,
                    &owner,
                    "550 5.0.0 bounced by admin",
                    Some(bounce(&to)),
                )
                .await
                .unwrap();
        }
        let shown = store.queue_show(&id).await.unwrap().unwrap();
        let failed = shown
            .recipients
            .iter()
            .filter(|r| r.state == RecipientState::Failed)
            .count();
        assert_eq!(failed, 2);
        assert!(matches!(
            store.queue_bounce("missing").await,
            Err(Error::NotFound(_))
        ));
    }
);

both!(
    outcomes_are_recorded_together_and_a_lost_lease_spoils_only_its_own,
    |store| async move {
        let one = enqueue(&store, &["a@r.test", "b@r.test"]).await;
        let two = enqueue(&store, &["c@r.test"]).await;
        let claims = store.claim("r1", 10, 60_000).await.unwrap();
        let id = |a: &str| claims.iter().find(|c| c.address == a).unwrap().recipient_id;
        // b@ is taken over by another runner before r1 reports.
        store.release_leases("r1").await.unwrap();
        let retaken = store.claim("r2", 10, 60_000).await.unwrap();
        assert_eq!(retaken.len(), 3);
        store.release_leases("r2").await.unwrap();
        let mine = store.claim("r1", 10, 60_000).await.unwrap();
        assert_eq!(mine.len(), 3);
        store
            .mark_delivered(id("b@r.test"), "r1", "250 early")
            .await
            .unwrap();

        let to = s(&["sender@example.org"]);
        let later = now_ms() + 3_600_000;
        let records = vec![
            OutcomeRecord {
                recipient_id: id("a@r.test"),
                state: RecipientState::Failed,
                reply: "550 5.1.1 gone",
                next_attempt_at_ms: None,
                notification: Some(bounce(&to)),
            },
            OutcomeRecord {
                recipient_id: id("b@r.test"),
                state: RecipientState::Delivered,
                reply: "250 late",
                next_attempt_at_ms: None,
                notification: None,
            },
            OutcomeRecord {
                recipient_id: id("c@r.test"),
                state: RecipientState::Queued,
                reply: "451 4.2.0 later",
                next_attempt_at_ms: Some(later),
                notification: Some(bounce(&to)),
            },
        ];
        let done = store.record_outcomes("r1", records).await.unwrap();
        assert_eq!(done.len(), 3);
        let Recorded::Done(Some(bounce_id)) = &done[0] else {
            panic!("{done:?}")
        };
        assert_eq!(done[1], Recorded::LeaseLost);
        let Recorded::Done(Some(warning_id)) = &done[2] else {
            panic!("{done:?}")
        };
        assert_ne!(bounce_id, warning_id);

        let shown = store.queue_show(&one).await.unwrap().unwrap();
        let a = shown
            .recipients
            .iter()
            .find(|r| r.address == "a@r.test")
            .unwrap();
        let b = shown
            .recipients
            .iter()
            .find(|r| r.address == "b@r.test")
            .unwrap();
        assert_eq!(
            (a.state, a.last_reply.as_str()),
            (RecipientState::Failed, "550 5.1.1 gone")
        );
        // The lost lease kept the first report.
        assert_eq!(
            (b.state, b.last_reply.as_str()),
            (RecipientState::Delivered, "250 early")
        );
        let shown = store.queue_show(&two).await.unwrap().unwrap();
        let c = &shown.recipients[0];
        assert_eq!(
            (c.state, c.next_attempt_at_ms),
            (RecipientState::Queued, later)
        );
        assert!(c.lease_owner.is_none());
        // The deferral's notification marked it warned: the next claim says so.
        assert!(store.queue_show(bounce_id).await.unwrap().is_some());
        assert!(store.queue_show(warning_id).await.unwrap().is_some());
        assert_eq!(store.queue_retry(&two).await.unwrap(), 1);
        let again = store.claim("r1", 10, 60_000).await.unwrap();
        let c = again.iter().find(|x| x.address == "c@r.test").unwrap();
        assert!(c.delay_warned);

        // A record with a malformed notification writes nothing at all.
        let bad = vec![OutcomeRecord {
            recipient_id: c.recipient_id,
            state: RecipientState::Failed,
            reply: "550",
            next_attempt_at_ms: None,
            notification: Some(NewMessage {
                sender: "",
                recipients: &[],
                content: b"x",
                ..Default::default()
            }),
        }];
        assert!(matches!(
            store.record_outcomes("r1", bad).await,
            Err(Error::Invalid(_))
        ));
        let shown = store.queue_show(&two).await.unwrap().unwrap();
        assert_eq!(shown.recipients[0].state, RecipientState::Queued);
    }
);

both!(message_contents_reads_many_at_once, |store| async move {
    let one = enqueue(&store, &["a@r.test"]).await;
    let two = enqueue(&store, &["b@r.test"]).await;
    let mut got = store
        .message_contents(&[&one, "missing", &two])
        .await
        .unwrap();
    got.sort();
    let mut want = vec![
        (one.clone(), b"Subject: test\r\n\r\nbody\r\n".to_vec()),
        (two.clone(), b"Subject: test\r\n\r\nbody\r\n".to_vec()),
    ];
    want.sort();
    assert_eq!(got, want);
    assert!(store.message_contents(&[]).await.unwrap().is_empty());
});

// Migration 0009: the trace context travels with the message, on both enqueue paths
// (PostgreSQL's one-statement insert and the transaction SQLite uses), and a message queued
// without one has none.
both!(enqueue_keeps_the_trace_context, |store| async move {
    let rcpts = s(&["a@r.test", "b@r.test"]);
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let with = store
        .enqueue(NewMessage {
            sender: "s@example.org",
            recipients: &rcpts,
            content: b"x",
            trace_context: Some(traced),
            ..Default::default()
        })
        .await
        .unwrap();
    let without = store
        .enqueue(NewMessage {
            sender: "s@example.org",
            recipients: &rcpts,
            content: b"y",
            ..Default::default()
        })
        .await
        .unwrap();
    let got = store.trace_contexts(&[&with, &without]).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got.get(&with).map(String::as_str), Some(traced));
    assert!(store.trace_contexts(&[]).await.unwrap().is_empty());
});

both!(concurrent_enqueues_are_all_committed, |store| async move {
    // On PostgreSQL these share transactions (group commit); each call returns only once its
    // message is committed, so every id it returned is there.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let rcpt = vec![format!("r{i}@r.test")];
            store
                .enqueue(NewMessage {
                    sender: "sender@example.org",
                    recipients: &rcpt,
                    content: format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 60);
    for id in &ids {
        let shown = store.queue_show(id).await.unwrap().unwrap();
        assert_eq!(shown.recipients.len(), 1);
    }
    let claimed = store.claim("r1", 100, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 60);
});

both!(
    purge_finished_removes_only_old_finished_messages,
    |store| async move {
        // The finished message is the newest, so its recipients hold the highest ids.
        let half = enqueue(&store, &["c@remote.test", "d@remote.test"]).await;
        let done = enqueue(&store, &["a@remote.test", "b@remote.test"]).await;
        let claims = store.claim("r", 10, 60_000).await.unwrap();
        for c in &claims {
            if c.queue_id == done {
                if c.address == "a@remote.test" {
                    store
                        .mark_delivered(c.recipient_id, "r", "250 ok")
                        .await
                        .unwrap();
                } else {
                    store
                        .mark_failed(c.recipient_id, "r", "550 no")
                        .await
                        .unwrap();
                }
            } else if c.address == "c@remote.test" {
                store
                    .mark_delivered(c.recipient_id, "r", "250 ok")
                    .await
                    .unwrap();
            }
        }
        // Nothing is old enough yet.
        assert_eq!(
            store.purge_finished(now_ms() - 60_000, 10).await.unwrap(),
            0
        );
        // Later: the finished message goes with its recipients; the one with a recipient still
        // queued (and leased) stays whole.
        let later = now_ms() + 1;
        assert_eq!(store.purge_finished(later, 10).await.unwrap(), 1);
        assert!(store.queue_show(&done).await.unwrap().is_none());
        let kept = store.queue_show(&half).await.unwrap().unwrap();
        assert_eq!(kept.recipients.len(), 2);
        assert_eq!(store.purge_finished(later, 10).await.unwrap(), 0);
        assert_eq!(store.purge_finished(later, 0).await.unwrap(), 0);

        // A new message after the purge gets new recipient ids: delivery keys stay unique.
        let before: HashSet<i64> = claims.iter().map(|c| c.recipient_id).collect();
        enqueue(&store, &["e@remote.test"]).await;
        let fresh = store.claim("r2", 10, 60_000).await.unwrap();
        assert_eq!(fresh.len(), 1);
        assert!(fresh[0].recipient_id > *before.iter().max().unwrap());
    }
);
