//! IMAP IDLE wake-up with a real client (Python's imaplib socket, IDLE written by hand):
//! a message submitted over SMTP while the client idles arrives as `* N EXISTS` within five
//! seconds of the submission being accepted, and DONE ends IDLE. Both backends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

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
