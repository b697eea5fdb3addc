//! Bad input gets the protocol's proper answer and the server keeps serving: wrong passwords
//! (535 5.7.8, IMAP NO), AUTH before STARTTLS (530 5.7.0), an unknown local recipient
//! (550 5.1.1), an overlong command line (500 5.5.2), an oversize message (552 5.3.4).

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

async fn bad_input(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    // The default limit is 25 MiB; 26 MiB of 1000-octet lines exceeds it.
    let out = Client::new("send-errors", s.submission.port(), &ca, ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--unknown-rcpt", "nobody@example.test")
        .arg("--big-kb", 26 * 1024)
        .run()
        .await;
    let reply = |k: &str| {
        (
            out[k][0].as_i64().unwrap(),
            out[k][1].as_str().unwrap().to_string(),
        )
    };
    let (code, text) = reply("wrong_password");
    assert_eq!(code, 535, "{out}");
    assert!(text.starts_with("5.7.8"), "{out}");
    assert_eq!(out["auth_advertised_before_tls"], false, "{out}");
    let (code, text) = reply("auth_before_tls");
    assert_eq!((code, &text[..5]), (530, "5.7.0"), "{out}");
    let (code, text) = reply("unknown_rcpt");
    assert_eq!((code, &text[..5]), (550, "5.1.1"), "{out}");
    let (code, text) = reply("long_line");
    assert_eq!((code, &text[..5]), (500, "5.5.2"), "{out}");
    let (code, text) = reply("oversize_declared");
    assert_eq!((code, &text[..5]), (552, "5.3.4"), "{out}");
    let (code, text) = reply("oversize_data");
    assert_eq!((code, &text[..5]), (552, "5.3.4"), "{out}");
    assert_eq!(
        out["after_errors_refused"], 0,
        "the same session still submits: {out}"
    );

    let imap = Client::new("imap-wrong-password", s.imap.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    assert!(
        imap["result"]
            .as_str()
            .unwrap()
            .contains("AUTHENTICATIONFAILED"),
        "{imap}"
    );

    // Only the good message after the errors was queued, and it arrives.
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_proper_replies_sqlite() {
    bad_input("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_proper_replies_postgres() {
    bad_input("postgres").await;
}
