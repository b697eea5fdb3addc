//! The foundation path on in-process clusters, on both backends: smtplib (STARTTLS + AUTH
//! PLAIN/LOGIN, and implicit TLS) → MSA → queue → MTA runner → gRPC → MDA → IMAP (imaplib
//! with STARTTLS, LOGIN and AUTHENTICATE PLAIN; implicit TLS) and POP3.

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

async fn whole_path(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();

    // Submission on the STARTTLS port with AUTH PLAIN, and on the TLS port with AUTH LOGIN.
    let first = message("first");
    let sent = Client::new("send", s.submission.port(), &ca, ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&first))
        .arg("--mech", "PLAIN")
        .run()
        .await;
    assert_eq!(sent["auth"][0], 235, "{sent}");
    assert_eq!(sent["refused"], serde_json::json!({}));
    let second = message("second");
    let sent = Client::new("send", s.submissions.port(), &ca, ALICE.0, ALICE.1)
        .flag("--implicit-tls")
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&second))
        .arg("--mech", "LOGIN")
        .run()
        .await;
    assert_eq!(sent["auth"][0], 235, "{sent}");

    // IMAP with STARTTLS and LOGIN.
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .arg("--count", 2)
        .run()
        .await;
    assert_eq!(got["exists"], 2, "{got}");
    let before: Vec<String> =
        serde_json::from_value(got["capabilities_before_tls"].clone()).unwrap();
    assert!(
        before.iter().any(|c| c == "STARTTLS") && before.iter().any(|c| c == "LOGINDISABLED"),
        "{before:?}"
    );
    let after: Vec<String> = serde_json::from_value(got["capabilities"].clone()).unwrap();
    assert!(
        after.iter().any(|c| c == "AUTH=PLAIN") && !after.iter().any(|c| c == "LOGINDISABLED"),
        "{after:?}"
    );
    let msgs = got["messages"].as_array().unwrap();
    assert_sent_plus_trace_headers(&first, &unb64(&msgs[0]["raw_b64"]));
    assert_sent_plus_trace_headers(&second, &unb64(&msgs[1]["raw_b64"]));
    let meta = msgs[0]["meta"].as_str().unwrap();
    assert!(
        meta.contains("UID 1") && meta.contains("RFC822.SIZE"),
        "{meta}"
    );
    assert!(
        got["header_fields"]
            .as_str()
            .unwrap()
            .contains("Subject: first"),
        "{got}"
    );
    assert!(
        !got["flags_before"].as_str().unwrap().contains("\\Seen"),
        "BODY.PEEK must not set \\Seen: {got}"
    );
    assert!(
        got["flags_after"].as_str().unwrap().contains("\\Flagged"),
        "{got}"
    );
    let boxes = got["mailboxes"].to_string();
    for name in ["INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"] {
        assert!(boxes.contains(name), "{name} missing from LIST: {boxes}");
    }

    // IMAP with implicit TLS and AUTHENTICATE PLAIN sees the same two messages.
    let got = Client::new("fetch", s.imaps.port(), &ca, BOB.0, BOB.1)
        .flag("--implicit-tls")
        .flag("--authenticate")
        .run()
        .await;
    assert_eq!(got["exists"], 2, "{got}");

    // POP3 with STLS reads the same first message.
    let pop = Client::new("pop3", s.pop3.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(pop["count"], 2, "{pop}");
    assert_sent_plus_trace_headers(&first, &unb64(&pop["raw_b64"]));

    // The queue shows both recipients delivered.
    let delivered = c
        .store()
        .queue_list(Some(tern_store::RecipientState::Delivered), 10)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_path_sqlite() {
    whole_path("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_path_postgres() {
    whole_path("postgres").await;
}
