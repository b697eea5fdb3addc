//! A queue runner killed with SIGKILL while it holds work: another runner takes the work over
//! when the leases expire, every message is delivered, and none twice (the MDA's delivery keys).

use std::time::{Duration, Instant};

use tern_store::{NewMessage, RecipientState, Store};
use tern_testkit::TestDb;
use tern_testkit::procs::Agent;

use crate::common::*;

const MESSAGES: usize = 300;

async fn delivered(store: &Store) -> usize {
    store
        .queue_list(Some(RecipientState::Delivered), 10_000)
        .await
        .unwrap()
        .iter()
        .map(|m| {
            m.recipients
                .iter()
                .filter(|r| r.state == RecipientState::Delivered)
                .count()
        })
        .sum()
}

/// A fresh database with Bob's account and [`MESSAGES`] messages queued for him, each with its
/// own subject and Message-ID (`{prefix}-{n}`).
async fn queued_for_bob(prefix: &str) -> (TestDb, Store, tern_store::Account) {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url).await.unwrap();
    store.add_domain("example.test").await.unwrap();
    let bob = store.add_account(BOB.0, BOB.1).await.unwrap();
    let rcpt = vec![BOB.0.to_string()];
    for i in 0..MESSAGES {
        let content = message(&format!("{prefix}-{i}"));
        store
            .enqueue(NewMessage {
                sender: ALICE.0,
                recipients: &rcpt,
                content: &content,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    (db, store, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runner_work_is_taken_over_and_delivered_exactly_once() {
    let (db, store, bob) = queued_for_bob("takeover").await;
    let dir = tempfile::tempdir().unwrap();

    let common = vec![
        ("TERN_DATABASE_URL", db.url.clone()),
        ("TERN_HOSTNAME", "mx.example.test".to_string()),
        ("TERN_ADMIN_TOKEN", "t".to_string()),
        ("TERN_GRPC_LISTEN", "127.0.0.1:0".to_string()),
    ];
    let mda = Agent::spawn("tern-mda", &common, dir.path());
    let mut mta_env = common.clone();
    mta_env.extend([
        ("TERN_SMTP_LISTEN", "127.0.0.1:0".to_string()),
        (
            "TERN_MDA_URL",
            format!("http://{}", mda.address("grpc.address")),
        ),
        ("TERN_QUEUE__LEASE_SECS", "2".to_string()),
        ("TERN_QUEUE__BATCH", "50".to_string()),
        ("TERN_QUEUE__CONCURRENCY", "4".to_string()),
        ("TERN_QUEUE__POLL_INTERVAL_MS", "50".to_string()),
    ]);
    let first = Agent::spawn("tern-mta", &mta_env, dir.path());

    // Let the first runner get going, then kill it while it holds leases.
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered(&store).await < 20 {
        assert!(
            Instant::now() < deadline,
            "the first runner delivered nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill();
    let at_kill = delivered(&store).await;
    let held: usize = store
        .queue_list(Some(RecipientState::Queued), 10_000)
        .await
        .unwrap()
        .iter()
        .flat_map(|m| m.recipients.iter())
        .filter(|r| r.state == RecipientState::Queued && r.lease_owner.is_some())
        .count();
    assert!(
        at_kill < MESSAGES,
        "the first runner finished before it could be killed"
    );
    assert!(
        held > 0,
        "the killed runner held no leases: the test proves nothing"
    );

    let _second = Agent::spawn("tern-mta", &mta_env, dir.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered(&store).await < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} delivered after takeover",
            delivered(&store).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Exactly once in the mailbox: one copy per message, by Message-ID.
    let inbox = store.mailbox(bob.id, "INBOX").await.unwrap().unwrap();
    let metas = store.messages(inbox.id).await.unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for m in &metas {
        let body = store.message_body(inbox.id, m.uid).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&body);
        let id = text
            .lines()
            .find(|l| l.starts_with("Message-ID:"))
            .unwrap()
            .to_string();
        assert!(ids.insert(id.clone()), "delivered twice: {id}");
    }
    assert_eq!(
        metas.len(),
        MESSAGES,
        "{held} leases were held at the kill, {at_kill} delivered before it"
    );
    drop(mda);
    store.close().await;
}

/// Issue 5's crash between commit and reply: the MDA is killed (SIGKILL) while batches are in
/// flight, so some copies are committed but their replies never reach the runner. The runner
/// defers those recipients; once the MDA is back (same address) the retries find the delivery
/// keys already stored and answer "delivered" without a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mda_retries_store_nothing_twice() {
    let (db, store, bob) = queued_for_bob("mda-crash").await;
    let dir = tempfile::tempdir().unwrap();
    // A fixed port for the MDA, so that the restarted one is where the MTA looks.
    let mda_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let common = vec![
        ("TERN_DATABASE_URL", db.url.clone()),
        ("TERN_HOSTNAME", "mx.example.test".to_string()),
        ("TERN_ADMIN_TOKEN", "t".to_string()),
    ];
    let mut mda_env = common.clone();
    mda_env.push(("TERN_GRPC_LISTEN", mda_addr.to_string()));
    let mda = Agent::spawn("tern-mda", &mda_env, dir.path());
    let mut mta_env = common.clone();
    mta_env.extend([
        ("TERN_GRPC_LISTEN", "127.0.0.1:0".to_string()),
        ("TERN_SMTP_LISTEN", "127.0.0.1:0".to_string()),
        ("TERN_MDA_URL", format!("http://{mda_addr}")),
        ("TERN_QUEUE__BATCH", "20".to_string()),
        ("TERN_QUEUE__POLL_INTERVAL_MS", "50".to_string()),
        // Deferred recipients come back after a second, not after minutes.
        ("TERN_QUEUE__RETRY_SCHEDULE_SECS", "[1]".to_string()),
        ("TERN_QUEUE__JITTER_PERCENT", "0".to_string()),
    ]);
    let _mta = Agent::spawn("tern-mta", &mta_env, dir.path());

    let inbox = store.mailbox(bob.id, "INBOX").await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.messages(inbox.id).await.unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "the MDA stored nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    mda.kill();
    let at_kill = store.messages(inbox.id).await.unwrap().len();
    assert!(
        at_kill < MESSAGES,
        "everything was delivered before the kill: the test proves nothing"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _mda = Agent::spawn("tern-mda", &mda_env, dir.path());

    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered(&store).await < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} recorded delivered after the MDA came back",
            delivered(&store).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metas = store.messages(inbox.id).await.unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for m in &metas {
        let body = store.message_body(inbox.id, m.uid).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&body);
        let id = text
            .lines()
            .find(|l| l.starts_with("Message-ID:"))
            .unwrap()
            .to_string();
        assert!(ids.insert(id.clone()), "stored twice: {id}");
    }
    assert_eq!(metas.len(), MESSAGES, "{at_kill} stored before the kill");
    store.close().await;
}
