//! The delivery agent's policies seen from outside: a full mailbox over SMTP (temporary by
//! default, permanent by configuration, delivered once room is made), sub-addresses through
//! the MTA's RCPT check, LMTP with its per-recipient replies driven by Python's smtplib.LMTP,
//! and a forward to another domain queued once however often the delivery is retried.

use std::time::Duration;

use tern::admin;
use tern_rpc::v1;
use tern_store::RecipientState;
use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

const CAROL: (&str, &str) = ("carol@example.test", "carol-password-3");

fn mx(c: &TestCluster, from: &str, rcpt: &str, message: &[u8]) -> Client {
    Client::new("mx", c.state().smtp.port(), &c.cert(), "-", "-")
        .arg("--mail-from", from)
        .arg("--rcpt", rcpt)
        .arg("--message-b64", b64(message))
}

async fn set_quota(c: &TestCluster, address: &str, bytes: Option<u64>, messages: Option<u64>) {
    admin::admin(&c.admin_target())
        .await
        .unwrap()
        .set_quota(v1::SetQuotaRequest {
            address: address.into(),
            bytes,
            messages,
        })
        .await
        .unwrap();
}

async fn state_of(c: &TestCluster, address: &str) -> Option<(RecipientState, String)> {
    recipient(c.store(), address)
        .await
        .map(|r| (r.state, r.last_reply))
}

async fn full_mailbox_over_smtp(backend: &str) {
    let c = TestCluster::start_with(backend, |o| {
        // A long retry so the deferred recipient waits for `queue_retry` below.
        o.queue.retry_schedule_secs = vec![3600];
    })
    .await;
    c.provision("example.test", &[ALICE, BOB]).await;
    set_quota(&c, BOB.0, None, Some(1)).await;

    // A sub-address, in other case, passes the MTA's RCPT check and reaches bob.
    let first = mx(
        &c,
        "someone@far.test",
        "Bob+News@Example.test",
        &message("one"),
    )
    .run()
    .await;
    assert_eq!(first["rcpt"][0][0], 250, "{first}");
    assert_eq!(first["data"][0], 250, "{first}");
    eventually(
        "first message delivered",
        Duration::from_secs(20),
        || async { inbox(c.store(), BOB.0).await.len() == 1 },
    )
    .await;

    // The mailbox is full: the SMTP client still gets 250 (the message is queued), and the
    // queue keeps the recipient with the MDA's 452 4.2.2.
    let second = mx(&c, "someone@far.test", BOB.0, &message("two"))
        .run()
        .await;
    assert_eq!(second["data"][0], 250, "{second}");
    eventually("452 recorded", Duration::from_secs(20), || async {
        matches!(state_of(&c, BOB.0).await,
            Some((RecipientState::Queued, reply)) if reply.starts_with("452 4.2.2"))
    })
    .await;
    assert_eq!(inbox(c.store(), BOB.0).await.len(), 1);

    // Room is made (a higher limit), the retry delivers it once.
    set_quota(&c, BOB.0, None, Some(0)).await;
    let queued = c.store().queue_list(None, 100).await.unwrap();
    let id = &queued.last().unwrap().id;
    c.store().queue_retry(id).await.unwrap();
    eventually(
        "second message delivered",
        Duration::from_secs(20),
        || async { inbox(c.store(), BOB.0).await.len() == 2 },
    )
    .await;
    let recount = c.store().recount_usage(BOB.0).await.unwrap();
    assert!(!recount.drifted(), "{recount:?}");
    assert_eq!(recount.actual.messages, 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_defers_with_452_sqlite() {
    full_mailbox_over_smtp("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_defers_with_452_postgres() {
    full_mailbox_over_smtp("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_bounces_with_552_when_permanent() {
    let c = TestCluster::start_with("sqlite", |o| o.delivery.quota_permanent = true).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    set_quota(&c, BOB.0, Some(10), None).await;
    let out = mx(&c, ALICE.0, BOB.0, &message("too-big")).run().await;
    assert_eq!(out["data"][0], 250, "{out}");
    eventually("552 recorded", Duration::from_secs(20), || async {
        matches!(state_of(&c, BOB.0).await,
            Some((RecipientState::Failed, reply)) if reply.starts_with("552 5.2.2"))
    })
    .await;
    // The sender (local here, so the test needs no outside world) gets the bounce.
    eventually("bounce delivered", Duration::from_secs(20), || async {
        inbox(c.store(), ALICE.0).await.len() == 1
    })
    .await;
    let bounce = String::from_utf8_lossy(&inbox(c.store(), ALICE.0).await[0]).into_owned();
    assert!(bounce.contains("5.2.2"), "{bounce}");
    assert!(inbox(c.store(), BOB.0).await.is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_replies_per_recipient() {
    let c = TestCluster::start("sqlite").await;
    c.provision("example.test", &[ALICE, BOB, CAROL]).await;
    // Bob's mailbox is full for any message.
    set_quota(&c, BOB.0, Some(1), None).await;
    let sent = message("lmtp");
    let out = Client::new("lmtp", c.state().lmtp.port(), &c.cert(), "-", "-")
        .arg("--mail-from", "someone@far.test")
        .arg("--rcpt", "alice+lists@example.test")
        .arg("--rcpt", "nobody@example.test")
        .arg("--rcpt", BOB.0)
        .arg("--rcpt", CAROL.0)
        .arg("--message-b64", b64(&sent))
        .run()
        .await;
    assert_eq!(out["lhlo"], 250, "{out}");
    assert_eq!(out["rcpt"][0][0], 250, "{out}");
    assert_eq!(out["rcpt"][1][0], 550, "{out}");
    assert!(
        out["rcpt"][1][1].as_str().unwrap().starts_with("5.1.1"),
        "{out}"
    );
    assert_eq!(out["rcpt"][2][0], 250, "{out}");
    assert_eq!(out["rcpt"][3][0], 250, "{out}");
    // One reply per accepted recipient, in order: alice 250, bob 452 4.2.2, carol 250.
    let data = out["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{out}");
    assert_eq!(data[0][0], "alice+lists@example.test");
    assert_eq!(data[0][1], 250, "{out}");
    assert_eq!(data[1][0], BOB.0);
    assert_eq!(data[1][1], 452, "{out}");
    assert!(data[1][2].as_str().unwrap().starts_with("4.2.2"), "{out}");
    assert_eq!(data[2][1], 250, "{out}");

    let alice = inbox(c.store(), ALICE.0).await;
    assert_eq!(alice.len(), 1);
    assert_sent_plus_trace_headers(&sent, &alice[0]);
    let text = String::from_utf8_lossy(&alice[0]).into_owned();
    assert!(
        text.starts_with("Return-Path: <someone@far.test>\r\nDelivered-To: alice@example.test\r\n"),
        "{text}"
    );
    assert!(text.contains("with LMTP"), "{text}");
    assert_eq!(inbox(c.store(), CAROL.0).await.len(), 1);
    assert!(inbox(c.store(), BOB.0).await.is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_another_domain_is_queued_once_per_key() {
    // Outbound mail stays queued behind a closed smarthost.
    let c = cluster_with_closed_smarthost("postgres").await;
    c.provision("example.test", &[BOB]).await;
    c.store()
        .add_alias(
            "team@example.test",
            &[BOB.0.to_string(), "ext@far.test".to_string()],
        )
        .await
        .unwrap();
    // The same call twice, as the MTA makes it after lost replies.
    let replies =
        deliver_repeatedly(&c, "team@example.test", "q:test-1", message("forward"), 2).await;
    assert!(replies[1].contains("(already queued)"), "{replies:?}");
    assert!(replies[1].contains("(already stored)"), "{replies:?}");
    assert_eq!(inbox(c.store(), BOB.0).await.len(), 1);
    let forwards: Vec<_> = c
        .store()
        .queue_list(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.recipients.iter().any(|r| r.address == "ext@far.test"))
        .collect();
    assert_eq!(forwards.len(), 1, "{forwards:?}");
    assert_eq!(forwards[0].sender, "someone@far.test");
    c.stop().await;
}

/// A message delivered to every recipient leaves the queue once `keep_finished_secs` is over:
/// the queue does not keep every message's content for ever, and the mailbox copy stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_messages_leave_the_queue() {
    let c = TestCluster::start_with("postgres", |o| {
        o.queue.keep_finished_secs = 0;
    })
    .await;
    c.provision("example.test", &[BOB]).await;
    let sent = mx(&c, "someone@far.test", BOB.0, &message("purged"))
        .run()
        .await;
    assert_eq!(sent["data"][0], 250, "{sent}");
    eventually("delivered", Duration::from_secs(20), || async {
        inbox(c.store(), BOB.0).await.len() == 1
    })
    .await;
    eventually(
        "the finished message purged from the queue",
        Duration::from_secs(20),
        || async { c.store().queue_list(None, 10).await.unwrap().is_empty() },
    )
    .await;
    assert_eq!(inbox(c.store(), BOB.0).await.len(), 1);
    c.stop().await;
}
