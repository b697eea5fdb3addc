//! Port 25 under trouble: a store that is down gets 451 4.3.0 (never 250), and a message that
//! has looped too often is refused.

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

fn mx(c: &TestCluster, message: &[u8], rcpt: &str) -> Client {
    Client::new("mx", c.state().smtp.port(), &c.cert(), "-", "-")
        .arg("--mail-from", "someone@far.test")
        .arg("--rcpt", rcpt)
        .arg("--message-b64", b64(message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_mail_is_refused() {
    let c = TestCluster::start("sqlite").await;
    c.provision("example.test", &[BOB]).await;
    let mut looped = Vec::new();
    for i in 0..60 {
        looped.extend_from_slice(
            format!(
                "Received: from hop{i}.test by hop{}.test; Mon, 23 Nov 2026 00:00:00 +0000\r\n",
                i + 1
            )
            .as_bytes(),
        );
    }
    looped.extend_from_slice(&message("looped"));
    let out = mx(&c, &looped, BOB.0).run().await;
    assert_eq!(out["data"][0], 554, "{out}");
    assert!(
        out["data"][1].as_str().unwrap().starts_with("5.4.6"),
        "{out}"
    );
    let fine = mx(&c, &message("fine"), BOB.0).run().await;
    assert_eq!(fine["data"][0], 250, "{fine}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_gets_451_never_250() {
    let c = TestCluster::start("postgres").await;
    c.provision("example.test", &[BOB]).await;
    // Every agent shares this pool: closing it is the store going away.
    c.store().close().await;
    let out = mx(&c, &message("store-down"), BOB.0).run().await;
    assert_eq!(out["rcpt"][0][0], 451, "{out}");
    assert!(
        out["rcpt"][0][1].as_str().unwrap().starts_with("4.3.0"),
        "{out}"
    );
    assert!(
        out.get("data").is_none(),
        "no DATA when no recipient was accepted: {out}"
    );
}
