//! IMAP IDLE wake-up with a real client (Python's imaplib socket, IDLE written by hand):
//! a message submitted over SMTP while the client idles arrives as `* N EXISTS` within five
//! seconds of the submission being accepted, and DONE ends IDLE. The gRPC Mailbox Watch
//! stream reports the same arrival and a flag change made over IMAP. Both backends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_rpc::v1::WatchRequest;
use tern_rpc::v1::mailbox_client::MailboxClient;
use tern_testkit::TestCluster;
use tern_testkit::py::Client;
use tonic::Request;

use crate::common::*;

async fn idle_wakes_up(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    let ready = c.dir.path().join("idle-ready");
    let idle = tokio::spawn(
        Client::new("idle", s.imap.port(), &ca, BOB.0, BOB.1)
            .arg("--ready-file", ready.display())
            .arg("--wait", 20)
            .run(),
    );
    // Send only once the client is idling.
    let mut waited = Duration::ZERO;
    while !ready.exists() {
        assert!(
            waited < Duration::from_secs(30),
            "client never started IDLE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let sent = Client::new("send", s.submission.port(), &ca, ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message("idle")))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    let accepted = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let out = idle.await.unwrap();
    let caps = out["capabilities"].to_string();
    assert!(caps.contains("\"IDLE\""), "{out}");
    assert!(
        out["continuation"].as_str().unwrap().starts_with('+'),
        "{out}"
    );
    assert_eq!(out["exists_before"], 0, "{out}");
    assert_eq!(out["exists"], 1, "{out}");
    let at = out["exists_at"].as_f64().expect("EXISTS time");
    assert!(
        at - accepted < 5.0,
        "EXISTS came {:.2}s after the submission: {out}",
        at - accepted
    );
    assert_eq!(out["done"], "i1 OK IDLE terminated", "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_idle_sqlite() {
    idle_wakes_up("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_idle_postgres() {
    idle_wakes_up("postgres").await;
}

fn basic<T>(msg: T, user: &str, password: &str) -> Request<T> {
    let mut r = Request::new(msg);
    let v = b64(format!("{user}:{password}").as_bytes());
    r.metadata_mut()
        .insert("authorization", format!("Basic {v}").parse().unwrap());
    r
}

/// The next Watch event, within five seconds.
async fn next(
    stream: &mut tonic::Streaming<tern_rpc::v1::MailboxEvent>,
) -> tern_rpc::v1::MailboxEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .expect("stream open")
}

async fn grpc_watch_reports_changes(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    let mut mailbox = MailboxClient::connect(format!("http://{}", s.grpc_maa))
        .await
        .unwrap();
    let err = mailbox
        .watch(basic(
            WatchRequest {
                mailbox: "INBOX".into(),
            },
            BOB.0,
            "wrong",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = mailbox
        .watch(basic(
            WatchRequest {
                mailbox: "Nope".into(),
            },
            BOB.0,
            BOB.1,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let mut stream = mailbox
        .watch(basic(
            WatchRequest {
                mailbox: "INBOX".into(),
            },
            BOB.0,
            BOB.1,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.mailbox, "INBOX");
    assert_eq!(first.messages, 0);
    let sent = Client::new("send", s.submission.port(), &ca, ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message("watch")))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    let arrived = next(&mut stream).await;
    assert_eq!(arrived.messages, 1, "{arrived:?}");
    assert_eq!(arrived.unseen, 1, "{arrived:?}");
    assert!(arrived.uid_next > first.uid_next, "{arrived:?}");
    assert!(arrived.highest_modseq > first.highest_modseq, "{arrived:?}");
    // imaplib's fetch stores \Flagged on message 1: a flag change raises HIGHESTMODSEQ.
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");
    let flagged = next(&mut stream).await;
    assert!(
        flagged.highest_modseq > arrived.highest_modseq,
        "{flagged:?}"
    );
    assert_eq!(flagged.messages, 1, "{flagged:?}");
    // Stopping the cluster ends the stream instead of waiting for it.
    c.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(!matches!(end, Ok(Ok(Some(_)))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_sqlite() {
    grpc_watch_reports_changes("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_postgres() {
    grpc_watch_reports_changes("postgres").await;
}
