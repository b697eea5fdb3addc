//! Sieve `redirect` exactly once: the MTA calls Delivery again with the same delivery key when
//! a reply is lost, and the retry must queue no second copy of the redirect (nor store a
//! second copy of the kept message). On both backends.

use tern_rpc::v1;
use tern_testkit::TestCluster;

use crate::common::*;

async fn redirect_is_queued_once_per_delivery_key(backend: &str) {
    // Outbound mail goes to a closed local port, so the redirect stays queued (and no test
    // ever reaches for the Internet).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let c = TestCluster::start_with(backend, |o| {
        o.queue.retry_schedule_secs = vec![3600];
        o.outbound.smarthost = Some(tern_mta::Smarthost {
            host: "127.0.0.1".into(),
            port,
            tls: tern_mta::TlsMode::Disabled,
            username: None,
            password: None,
        });
    })
    .await;
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
    let mut delivery =
        v1::delivery_client::DeliveryClient::connect(format!("http://{}", c.state().grpc_mda))
            .await
            .unwrap();
    let request = v1::DeliverRequest {
        return_path: "someone@far.test".into(),
        recipients: vec![v1::DeliverRecipient {
            address: BOB.0.into(),
            delivery_key: "q:redirect-1".into(),
        }],
        content: message("redirect me"),
        queue_id: "test".into(),
    };
    // The same call three times, as the MTA makes it after lost replies.
    let mut replies = Vec::new();
    for _ in 0..3 {
        let out = delivery
            .deliver(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            out.outcomes[0].status,
            v1::recipient_outcome::Status::Delivered as i32,
            "{out:?}"
        );
        replies.push(out.outcomes[0].reply.clone());
    }
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
    let mut second = request.clone();
    second.recipients[0].delivery_key = "q:redirect-2".into();
    delivery.deliver(second).await.unwrap();
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
