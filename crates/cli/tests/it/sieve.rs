//! Sieve end to end, on in-process clusters on both backends: scripts uploaded with the `tern`
//! binary (a broken one refused with its line number), then mail submitted with smtplib and
//! read back with imaplib: `fileinto :create` with a flag lands in the new folder, a vacation
//! reply reaches the sender exactly once for two messages (with the null sender and
//! Auto-Submitted), and `reject` fails the recipient with 550 5.7.1 and bounces to the sender.

use std::time::Duration;

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

const TERN: &str = env!("CARGO_BIN_EXE_tern");

const SCRIPT: &str = r#"require ["fileinto", "mailbox", "imap4flags", "vacation", "reject"];
if header :contains "subject" "reject-me" {
    reject "No thanks, not interested.";
    stop;
}
if header :contains "subject" "report" {
    fileinto :create :flags "\\Flagged" "Reports";
    stop;
}
vacation :days 1 :subject "Away until Monday" "Bob is away.";
"#;

/// Runs the `tern` binary against the cluster; returns (success, stdout, stderr).
fn tern(c: &TestCluster, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(TERN)
        .arg("--data")
        .arg(c.data_dir())
        .args(args)
        .env_remove("TERN_ADMIN_URL")
        .env_remove("TERN_ADMIN_TOKEN")
        .output()
        .expect("run tern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn send(c: &TestCluster, subject: &str) {
    let s = c.state().clone();
    let sent = Client::new("send", s.submission.port(), &c.cert(), ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message(subject)))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
}

/// The raw messages in `address`'s `folder`, read from the store.
async fn folder(c: &TestCluster, address: &str, folder: &str) -> Vec<Vec<u8>> {
    let store = c.store();
    let account = store.account(address).await.unwrap().unwrap();
    let Some(mb) = store.mailbox(account.id, folder).await.unwrap() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in store.messages(mb.id).await.unwrap() {
        out.push(store.message_body(mb.id, m.uid).await.unwrap().unwrap());
    }
    out
}

async fn sieve_end_to_end(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    let dir = c.dir.path();

    // A script with a syntax error on line 3 is refused, naming the line; nothing is stored.
    let broken = dir.join("broken.sieve");
    std::fs::write(
        &broken,
        "require \"fileinto\";\n\nif header :contains \"subject\" \"x\" { fileinto \"A\" }\n",
    )
    .unwrap();
    let (ok, _, err) = tern(
        &c,
        &["sieve", "put", BOB.0, "broken", broken.to_str().unwrap()],
    );
    assert!(!ok, "a broken script must be refused");
    assert!(err.contains("line 3"), "{err}");
    let (ok, out, err) = tern(&c, &["sieve", "list", BOB.0]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "no scripts");

    let good = dir.join("main.sieve");
    std::fs::write(&good, SCRIPT).unwrap();
    let (ok, out, err) = tern(
        &c,
        &[
            "sieve",
            "put",
            BOB.0,
            "main",
            good.to_str().unwrap(),
            "--activate",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("(active)"), "{out}");
    let (ok, out, _) = tern(&c, &["sieve", "list", BOB.0]);
    assert!(ok && out.starts_with("* main\t"), "{out}");
    let (ok, out, _) = tern(&c, &["sieve", "show", BOB.0, "main"]);
    assert!(ok && out == SCRIPT, "{out}");
    // The active script cannot be removed.
    let (ok, _, err) = tern(&c, &["sieve", "remove", BOB.0, "main"]);
    assert!(!ok && err.contains("active"), "{err}");

    // fileinto :create with a flag: the folder is made and the message is found there, flagged.
    send(&c, "quarterly-report").await;
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .arg("--folder", "Reports")
        .arg("--count", 1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");
    assert!(
        got["flags_before"].as_str().unwrap().contains("\\Flagged"),
        "{got}"
    );
    let raw = unb64(&got["messages"][0]["raw_b64"]);
    assert!(String::from_utf8_lossy(&raw).contains("Subject: quarterly-report"));

    // Vacation: two messages, both kept in INBOX, one reply to Alice.
    send(&c, "hello-one").await;
    send(&c, "hello-two").await;
    eventually(
        "both messages in Bob's INBOX",
        Duration::from_secs(20),
        || async { folder(&c, BOB.0, "INBOX").await.len() == 2 },
    )
    .await;
    eventually(
        "a vacation reply for Alice",
        Duration::from_secs(20),
        || async { !folder(&c, ALICE.0, "INBOX").await.is_empty() },
    )
    .await;
    // Give a second reply time to show up if one were (wrongly) queued.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alice = folder(&c, ALICE.0, "INBOX").await;
    assert_eq!(alice.len(), 1, "exactly one vacation reply");
    let reply = String::from_utf8_lossy(&alice[0]).into_owned();
    assert!(reply.starts_with("Return-Path: <>\r\n"), "{reply}");
    assert!(reply.contains("Subject: Away until Monday"), "{reply}");
    assert!(reply.contains("Auto-Submitted: auto-replied"), "{reply}");
    assert!(reply.contains("In-Reply-To: <hello-"), "{reply}");
    assert!(reply.contains("From: bob@example.test"), "{reply}");
    assert!(reply.contains("Bob is away."), "{reply}");

    // Reject: the recipient fails with 550 5.7.1 and Alice gets a bounce with the reason.
    send(&c, "reject-me").await;
    eventually("a bounce for Alice", Duration::from_secs(20), || async {
        folder(&c, ALICE.0, "INBOX").await.len() == 2
    })
    .await;
    let rcpt = recipient(c.store(), BOB.0).await.expect("queue recipient");
    assert!(
        rcpt.last_reply.starts_with("550 5.7.1 No thanks"),
        "{rcpt:?}"
    );
    let bounce = String::from_utf8_lossy(&folder(&c, ALICE.0, "INBOX").await[1]).into_owned();
    assert!(bounce.starts_with("Return-Path: <>\r\n"), "{bounce}");
    assert!(bounce.contains("multipart/report"), "{bounce}");
    assert!(bounce.contains("No thanks, not interested."), "{bounce}");
    assert_eq!(
        folder(&c, BOB.0, "INBOX").await.len(),
        2,
        "rejected mail is not kept"
    );

    // Sieve off: mail goes to INBOX again, with no reply.
    let (ok, _, err) = tern(&c, &["sieve", "deactivate", BOB.0]);
    assert!(ok, "{err}");
    send(&c, "another-report").await;
    eventually("the report in INBOX", Duration::from_secs(20), || async {
        folder(&c, BOB.0, "INBOX").await.len() == 3
    })
    .await;
    assert_eq!(folder(&c, BOB.0, "Reports").await.len(), 1);
    let (ok, out, err) = tern(&c, &["sieve", "remove", BOB.0, "main"]);
    assert!(ok, "{err}");
    assert!(out.contains("removed"), "{out}");

    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sieve_end_to_end_sqlite() {
    sieve_end_to_end("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sieve_end_to_end_postgres() {
    sieve_end_to_end("postgres").await;
}
