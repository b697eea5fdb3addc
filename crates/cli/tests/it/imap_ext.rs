//! IMAP extensions with Python's imaplib against a real cluster, on both backends:
//! LIST-EXTENDED / LIST-STATUS / SPECIAL-USE on the default folders, QUOTA after a delivery
//! (and APPEND refused over quota), APPEND over APPENDLIMIT refused with TOOBIG, SORT and
//! THREAD, UTF8=ACCEPT names, and COMPRESS=DEFLATE carrying a FETCH, an IDLE wake-up and the
//! CONDSTORE/QRESYNC answers (MODSEQ, VANISHED, ESEARCH, LIST-STATUS HIGHESTMODSEQ, SORT MODSEQ).

use std::time::Duration;

use tern_store::Quota;
use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

async fn deliver(c: &TestCluster, subject: &str, count: usize) {
    let s = c.state();
    let ca = c.cert();
    let sent = Client::new("send", s.submission.port(), &ca, ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message(subject)))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .arg("--count", count)
        .run()
        .await;
    assert_eq!(got["exists"], count, "{got}");
}

fn lines(v: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(v[0].clone()).unwrap()
}

fn tagged(v: &serde_json::Value) -> String {
    v[1].as_str().unwrap().to_string()
}

async fn extensions(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    deliver(&c, "first", 1).await;
    // One message stored: the quota allows no second one.
    c.store()
        .set_quota(
            BOB.0,
            Quota {
                bytes: Some(1 << 20),
                messages: Some(1),
            },
        )
        .await
        .unwrap();
    let used = c.store().quota(BOB.0).await.unwrap().used;
    assert_eq!(used.messages, 1);

    let s = c.state().clone();
    let out = Client::new("imap-ext", s.imap.port(), &c.cert(), BOB.0, BOB.1)
        .run()
        .await;
    let caps: Vec<String> = serde_json::from_value(out["capabilities"].clone()).unwrap();
    for cap in [
        "LIST-EXTENDED",
        "LIST-STATUS",
        "SPECIAL-USE",
        "QUOTA",
        "QUOTA=RES-STORAGE",
        "QUOTA=RES-MESSAGE",
        "UTF8=ACCEPT",
        "COMPRESS=DEFLATE",
        "APPENDLIMIT=26214400",
        "SORT",
        "THREAD=ORDEREDSUBJECT",
        "THREAD=REFERENCES",
    ] {
        assert!(caps.iter().any(|c| c == cap), "{cap} in {caps:?}");
    }

    // The default folders are subscribed at account creation and carry their special use.
    let subscribed = lines(&out["list_subscribed"]);
    assert_eq!(
        subscribed,
        [
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"",
            "* LIST (\\HasNoChildren \\Subscribed \\Archive) \"/\" \"Archive\"",
            "* LIST (\\HasNoChildren \\Subscribed \\Drafts) \"/\" \"Drafts\"",
            "* LIST (\\HasNoChildren \\Subscribed \\Junk) \"/\" \"Junk\"",
            "* LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" \"Sent\"",
            "* LIST (\\HasNoChildren \\Subscribed \\Trash) \"/\" \"Trash\"",
        ],
        "{out}"
    );
    assert!(tagged(&out["list_subscribed"]).contains("OK"), "{out}");
    let special = lines(&out["list_special"]);
    assert_eq!(special.len(), 5, "{out}");
    assert!(special.iter().all(|l| !l.contains("INBOX")), "{out}");
    assert_eq!(
        lines(&out["list_status"]),
        [
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* STATUS \"INBOX\" (MESSAGES 1 UNSEEN 1)",
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"",
            "* STATUS \"Sent\" (MESSAGES 0 UNSEEN 0)",
        ],
        "{out}"
    );
    assert!(tagged(&out["list_bad"]).contains("BAD"), "{out}");

    // QUOTA after the delivery: STORAGE in KiB rounded up, the limit in KiB.
    let quota = format!(
        "\"\" (STORAGE {} 1024 MESSAGE 1 1)",
        used.bytes.div_ceil(1024)
    );
    assert_eq!(out["getquotaroot"][0], "OK", "{out}");
    assert_eq!(out["getquotaroot"][1][0][0], "\"INBOX\" \"\"", "{out}");
    assert_eq!(out["getquotaroot"][1][1][0], quota.as_str(), "{out}");
    assert_eq!(out["getquota"][0], "OK", "{out}");
    assert_eq!(out["getquota"][1][0], quota.as_str(), "{out}");
    assert_eq!(out["setquota"][0], "NO", "{out}");
    assert!(out["setquota"][1].to_string().contains("NOPERM"), "{out}");

    assert_eq!(out["appendlimit"], 25 * 1024 * 1024, "{out}");
    assert_eq!(out["append_toobig"][0], "NO", "{out}");
    assert!(
        out["append_toobig"][1].to_string().contains("[TOOBIG]"),
        "{out}"
    );
    assert_eq!(out["noop_after_toobig"], "OK", "{out}");
    assert_eq!(out["append_over_quota"][0], "NO", "{out}");
    assert!(
        out["append_over_quota"][1]
            .to_string()
            .contains("[OVERQUOTA]"),
        "{out}"
    );

    assert_eq!(lines(&out["sort"]), ["* SORT 1"], "{out}");
    assert_eq!(lines(&out["thread"]), ["* THREAD (1)"], "{out}");
    assert_eq!(lines(&out["thread_refs"]), ["* THREAD (1)"], "{out}");
    assert_eq!(
        lines(&out["enable_utf8"]),
        ["* ENABLED UTF8=ACCEPT"],
        "{out}"
    );
    assert!(tagged(&out["create_utf8"]).contains("OK"), "{out}");
    assert_eq!(
        lines(&out["list_utf8"]),
        ["* LIST (\\HasNoChildren) \"/\" \"Entw\u{fc}rfe alt\""],
        "{out}"
    );
    c.stop().await;
}

async fn compress(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    deliver(&c, "first", 1).await;
    let s = c.state().clone();
    let ready = c.dir.path().join("compress-idle-ready");
    let client = tokio::spawn(
        Client::new("compress", s.imap.port(), &c.cert(), BOB.0, BOB.1)
            .arg("--ready-file", ready.display())
            .arg("--wait", 20)
            .run(),
    );
    let mut waited = Duration::ZERO;
    while !ready.exists() {
        assert!(waited < Duration::from_secs(30), "client never idled");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let sent = Client::new("send", s.submission.port(), &c.cert(), ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message("second")))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    let out = client.await.unwrap();

    assert!(tagged(&out["compress"]).contains("OK"), "{out}");
    assert!(tagged(&out["select"]).contains("OK [READ-WRITE]"), "{out}");
    assert!(
        out["fetch"][0].to_string().contains("Subject: first"),
        "{out}"
    );
    assert!(tagged(&out["fetch"]).contains("OK"), "{out}");
    assert!(
        out["continuation"].as_str().unwrap().starts_with('+'),
        "{out}"
    );
    assert!(
        out["idle_untagged"].to_string().contains("* 2 EXISTS"),
        "{out}"
    );
    let done: Vec<String> = serde_json::from_value(out["done"].clone()).unwrap();
    assert_eq!(done.last().unwrap(), "c3 OK IDLE terminated", "{out}");
    // CONDSTORE/QRESYNC answers through the compressed stream.
    assert_eq!(lines(&out["enable"]), ["* ENABLED QRESYNC"], "{out}");
    assert!(
        lines(&out["select"])
            .iter()
            .any(|l| l.starts_with("* OK [HIGHESTMODSEQ ")),
        "{out}"
    );
    // The number right after `marker` in `line`.
    let number_after = |line: &str, marker: &str| -> u64 {
        let at = line
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {line}: {out}"));
        let digits: String = line[at + marker.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap_or_else(|_| panic!("{line}: {out}"))
    };
    // Under QRESYNC the FETCH carries the UID (RFC 7162 §3.2.4) and the new MODSEQ.
    let store = &lines(&out["store"])[0];
    assert!(store.starts_with("* 1 FETCH (UID 1 FLAGS ("), "{out}");
    let stored = number_after(store, "\\Deleted) MODSEQ (");
    assert!(tagged(&out["store"]).contains("OK"), "{out}");
    assert_eq!(lines(&out["expunge"]), ["* VANISHED 1"], "{out}");
    assert!(
        lines(&out["esearch"])[0].starts_with("* ESEARCH (TAG \"c8\") UID COUNT 1 MODSEQ "),
        "{out}"
    );
    let status = lines(&out["list_status"]);
    assert!(status[1].ends_with(" MESSAGES 1)"), "{out}");
    assert!(
        number_after(&status[1], "* STATUS \"INBOX\" (HIGHESTMODSEQ ") >= stored,
        "{out}"
    );
    assert!(
        lines(&out["sort_modseq"])[0].starts_with("* SORT 1 (MODSEQ "),
        "{out}"
    );
    assert!(
        tagged(&out["compress_again"]).contains("NO [COMPRESSIONACTIVE]"),
        "{out}"
    );
    assert!(lines(&out["logout"])[0].starts_with("* BYE"), "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_extensions_sqlite() {
    extensions("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_extensions_postgres() {
    extensions("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_compress_sqlite() {
    compress("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_compress_postgres() {
    compress("postgres").await;
}
