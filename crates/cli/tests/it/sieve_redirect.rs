//! Sieve `redirect` exactly once: the MTA calls Delivery again with the same delivery key when
//! a reply is lost, and the retry must queue no second copy of the redirect (nor store a
//! second copy of the kept message). On both backends.

use crate::common::*;

async fn redirect_is_queued_once_per_delivery_key(backend: &str) {
    // Outbound mail stays queued behind a closed smarthost.
    let c = cluster_with_closed_smarthost(backend).await;
    c.provision("example.test", &[BOB]).await;
    c.store()
        .put_sieve_script(
            BOB.0,
            "fwd",
            "redirect \"carol@far.test\";\nredirect \"dave@far.test\";\nkeep;\n",
            true,
        )
        .await
        .unwrap();
    // The same call three times, as the MTA makes it after lost replies.
    let replies = deliver_repeatedly(&c, BOB.0, "q:redirect-1", message("redirect me"), 3).await;
    assert!(replies[2].contains("(already queued)"), "{replies:?}");
    assert_eq!(
        inbox(c.store(), BOB.0).await.len(),
        1,
        "keep stores one copy"
    );
    let queued = c.store().queue_list(None, 100).await.unwrap();
    for target in ["carol@far.test", "dave@far.test"] {
        let copies: Vec<_> = queued
            .iter()
            .filter(|m| m.recipients.iter().any(|r| r.address == target))
            .collect();
        assert_eq!(copies.len(), 1, "{target}: {copies:?}");
        assert_eq!(copies[0].sender, "someone@far.test");
        assert_eq!(copies[0].recipients.len(), 1);
    }
    // A new message (a new key) is redirected again.
    deliver_repeatedly(&c, BOB.0, "q:redirect-2", message("redirect me"), 1).await;
    let queued = c.store().queue_list(None, 100).await.unwrap();
    let to_dave = queued
        .iter()
        .filter(|m| m.recipients.iter().any(|r| r.address == "dave@far.test"))
        .count();
    assert_eq!(to_dave, 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_is_queued_once_per_delivery_key_sqlite() {
    redirect_is_queued_once_per_delivery_key("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_is_queued_once_per_delivery_key_postgres() {
    redirect_is_queued_once_per_delivery_key("postgres").await;
}
