//! CONDSTORE and QRESYNC (RFC 7162) with Python's imaplib against a real cluster, on both
//! backends: one session caches INBOX and leaves, another changes flags and expunges, and a
//! resynchronising session (SELECT (QRESYNC ...), UID FETCH (CHANGEDSINCE ... VANISHED)) sees
//! exactly those changes: the expunged UID in VANISHED (EARLIER), a FETCH for each changed
//! message and nothing for the unchanged one. A CONDSTORE-only session's FETCH (CHANGEDSINCE)
//! and ESEARCH with MODSEQ agree.

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

/// The untagged FETCH lines of a response, and the tagged line.
fn fetches(lines: &serde_json::Value) -> Vec<String> {
    lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .filter(|l| l.starts_with("* ") && l.contains(" FETCH ("))
        .collect()
}

fn last(lines: &serde_json::Value) -> String {
    lines
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

async fn resync(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    for subject in ["one", "two", "three", "four"] {
        let sent = Client::new("send", s.submission.port(), &ca, ALICE.0, ALICE.1)
            .arg("--mail-from", ALICE.0)
            .arg("--rcpt", BOB.0)
            .arg("--message-b64", b64(&message(subject)))
            .run()
            .await;
        assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    }
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .arg("--count", 4)
        .run()
        .await;
    assert_eq!(got["exists"], 4, "{got}");

    let out = Client::new("resync", s.imap.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    let caps = out["capabilities"].to_string();
    for cap in ["CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES"] {
        assert!(caps.contains(&format!("\"{cap}\"")), "{cap}: {out}");
    }
    assert_eq!(out["enable"][0], "* ENABLED QRESYNC", "{out}");
    let uids: Vec<u32> = serde_json::from_value(out["uids"].clone()).unwrap();
    assert_eq!(uids.len(), 4, "{out}");
    let (validity, modseq) = (&out["uidvalidity"], out["modseq"].as_u64().unwrap());
    assert!(
        fetches(&out["cached"])
            .iter()
            .all(|l| l.contains("MODSEQ (")),
        "{out}"
    );
    assert_eq!(out["store_keyword"], "OK", "{out}");
    assert_eq!(out["expunge"][0], "OK", "{out}");
    assert_eq!(out["store_seen"], "OK", "{out}");

    // SELECT (QRESYNC ...): VANISHED (EARLIER) for the expunged UID, then one FETCH with the
    // new flags and MODSEQ per changed message; the fourth message did not change.
    let select = &out["qresync_select"];
    let text = select.to_string();
    assert!(text.contains(&format!("[UIDVALIDITY {validity}]")), "{out}");
    assert!(
        text.contains(&format!("\"* VANISHED (EARLIER) {}\"", uids[1])),
        "{out}"
    );
    let changed = fetches(select);
    assert_eq!(changed.len(), 2, "{out}");
    assert!(changed[0].contains(&format!("UID {} ", uids[0])), "{out}");
    assert!(changed[0].contains("$Resync"), "{out}");
    assert!(changed[1].contains(&format!("UID {} ", uids[2])), "{out}");
    assert!(changed[1].contains("\\Seen"), "{out}");
    for line in &changed {
        let m: u64 = line
            .split("MODSEQ (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("MODSEQ in {line}"));
        assert!(m > modseq, "{line} after {modseq}");
    }
    assert!(
        last(select).ends_with("OK [READ-WRITE] SELECT completed"),
        "{out}"
    );

    // UID FETCH (CHANGEDSINCE ... VANISHED) tells the same story.
    let fetched = &out["vanished_fetch"];
    assert_eq!(
        fetched[0],
        format!("* VANISHED (EARLIER) {}", uids[1]),
        "{out}"
    );
    assert_eq!(fetches(fetched).len(), 2, "{out}");
    assert!(last(fetched).ends_with("OK FETCH completed"), "{out}");

    // Without QRESYNC: CHANGEDSINCE alone, and the changed messages by MODSEQ in ESEARCH.
    let plain = fetches(&out["changedsince_fetch"]);
    assert_eq!(plain.len(), 2, "{out}");
    assert!(plain.iter().all(|l| l.contains("MODSEQ (")), "{out}");
    let esearch = out["esearch"][0].as_str().unwrap();
    assert!(
        esearch.starts_with(&format!(
            "* ESEARCH (TAG \"s3\") UID ALL {},{} COUNT 2 MODSEQ ",
            uids[0], uids[2]
        )),
        "{out}"
    );
    // SEARCHRES: SAVE answers with the tagged OK alone; `$` then names those two messages.
    let save = &out["save"];
    assert_eq!(save.as_array().map(Vec::len), Some(1), "{out}");
    assert!(save[0].as_str().unwrap().starts_with("s4 OK"), "{out}");
    let saved = fetches(&out["fetch_saved"]);
    assert_eq!(saved.len(), 2, "{out}");
    for uid in [uids[0], uids[2]] {
        assert!(
            saved.iter().any(|l| l.contains(&format!("UID {uid}"))),
            "{out}"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_resync_sqlite() {
    resync("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_resync_postgres() {
    resync("postgres").await;
}
