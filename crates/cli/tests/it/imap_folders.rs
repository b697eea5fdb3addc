//! Mailbox management over IMAP with Python's imaplib against a real cluster, on both
//! backends: CREATE (with superiors), APPEND with APPENDUID, UID COPY with COPYUID, UID MOVE
//! (RFC 6851), TRYCREATE for a missing destination, RENAME of a hierarchy, DELETE.

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

async fn folders(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    for subject in ["one", "two"] {
        let sent = Client::new("send", s.submission.port(), &ca, ALICE.0, ALICE.1)
            .arg("--mail-from", ALICE.0)
            .arg("--rcpt", BOB.0)
            .arg("--message-b64", b64(&message(subject)))
            .run()
            .await;
        assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    }
    // Both delivered before the folder work starts.
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .arg("--count", 2)
        .run()
        .await;
    assert_eq!(got["exists"], 2, "{got}");

    let out = Client::new("folders", s.imap.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    let caps: Vec<String> = serde_json::from_value(out["capabilities"].clone()).unwrap();
    for cap in ["UIDPLUS", "MOVE", "NAMESPACE"] {
        assert!(caps.iter().any(|c| c == cap), "{cap} in {caps:?}");
    }
    let typ = |k: &str| out[k][0].as_str().unwrap().to_string();
    let text = |k: &str| out[k][1].to_string();
    assert_eq!(typ("create"), "OK", "{out}");
    assert_eq!(typ("create_again"), "NO", "{out}");
    assert!(text("create_again").contains("ALREADYEXISTS"), "{out}");
    assert_eq!(typ("append"), "OK", "{out}");
    assert!(text("append").contains("APPENDUID"), "{out}");
    assert_eq!(typ("append_missing"), "NO", "{out}");
    assert!(text("append_missing").contains("TRYCREATE"), "{out}");
    assert_eq!(out["inbox_exists"], 2, "{out}");
    // The appended message took UID 1 in Projects/2026: the copies are 2 and 3.
    assert_eq!(typ("copy"), "OK", "{out}");
    assert!(text("copy").contains("COPYUID"), "{out}");
    assert!(text("copy").contains(" 1:2 2:3]"), "{out}");
    assert_eq!(typ("move"), "OK", "{out}");
    assert!(
        out["move_untagged"].to_string().contains("COPYUID"),
        "{out}"
    );
    assert_eq!(typ("copy_missing"), "NO", "{out}");
    assert!(text("copy_missing").contains("TRYCREATE"), "{out}");
    assert_eq!(out["inbox_after_move"], 1, "{out}");
    assert_eq!(typ("rename"), "OK", "{out}");
    assert!(
        out["status_renamed"]
            .as_str()
            .unwrap()
            .contains("MESSAGES 4"),
        "{out}"
    );
    let subjects = out["renamed_subjects"].to_string();
    for s in ["appended", "one", "two"] {
        assert!(subjects.contains(&format!("Subject: {s}")), "{out}");
    }
    assert_eq!(typ("delete"), "OK", "{out}");
    let boxes = out["mailboxes"].to_string();
    assert!(!boxes.contains("Work/2026"), "{out}");
    assert!(!boxes.contains("Projects"), "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_folders_sqlite() {
    folders("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_folders_postgres() {
    folders("postgres").await;
}
