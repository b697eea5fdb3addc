//! Helpers shared by the end-to-end tests.

use base64::Engine;

pub const ALICE: (&str, &str) = ("alice@example.test", "alice-password-1");
pub const BOB: (&str, &str) = ("bob@example.test", "bob-password-22");

/// A message as a real client would write it: CRLF lines, Date and Message-ID present.
pub fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\n.leading dot survives dot-stuffing\r\nJ\u{f6}rg says hi.\r\n"
    )
    .into_bytes()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().expect("base64 string"))
        .expect("valid base64")
}

/// Asserts `stored` is exactly `sent` with only trace headers put in front: Return-Path and
/// Delivered-To (MDA) and Received (MSA/MTA), each possibly folded.
pub fn assert_sent_plus_trace_headers(sent: &[u8], stored: &[u8]) {
    assert!(
        stored.ends_with(sent),
        "stored message does not end with the bytes sent.\n--- sent ---\n{}\n--- stored ---\n{}",
        String::from_utf8_lossy(sent),
        String::from_utf8_lossy(stored)
    );
    let prefix = String::from_utf8(stored[..stored.len() - sent.len()].to_vec())
        .expect("trace headers are UTF-8");
    assert!(
        prefix.ends_with("\r\n"),
        "prefix must be whole header lines: {prefix:?}"
    );
    let mut names = Vec::new();
    for line in prefix.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let name = line.split(':').next().unwrap_or("");
        assert!(
            ["Return-Path", "Delivered-To", "Received"].contains(&name),
            "unexpected header added in front: {line:?}"
        );
        names.push(name.to_string());
    }
    assert_eq!(
        names,
        ["Return-Path", "Delivered-To", "Received"],
        "trace headers in order"
    );
}

/// Polls `check` until it is true, failing the test with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The queue recipient for `address` (the newest message first).
pub async fn recipient(
    store: &tern_store::Store,
    address: &str,
) -> Option<tern_store::QueuedRecipient> {
    let list = store.queue_list(None, 1000).await.unwrap();
    list.into_iter()
        .rev()
        .flat_map(|m| m.recipients)
        .find(|r| r.address == address)
}

/// Raw messages in an account's INBOX, oldest first.
pub async fn inbox(store: &tern_store::Store, address: &str) -> Vec<Vec<u8>> {
    let account = store
        .account(address)
        .await
        .unwrap()
        .expect("account exists");
    let mbox = store.mailbox(account.id, "INBOX").await.unwrap().unwrap();
    let mut out = Vec::new();
    for m in store.messages(mbox.id).await.unwrap() {
        out.push(store.message_body(mbox.id, m.uid).await.unwrap().unwrap());
    }
    out
}

/// A cluster whose outbound mail goes to a closed local port through a smarthost, with a long
/// retry: mail for other domains stays queued (and no test ever reaches for the Internet).
pub async fn cluster_with_closed_smarthost(backend: &str) -> tern_testkit::TestCluster {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    tern_testkit::TestCluster::start_with(backend, |o| {
        o.queue.retry_schedule_secs = vec![3600];
        o.outbound.smarthost = Some(tern_mta::Smarthost {
            host: "127.0.0.1".into(),
            port,
            tls: tern_mta::TlsMode::Disabled,
            username: None,
            password: None,
        });
    })
    .await
}

/// Calls the MDA's `Deliver` `times` times with one request (one recipient, one delivery
/// key), as the MTA does after lost replies; each call must report the recipient delivered.
/// Returns the replies in order.
pub async fn deliver_repeatedly(
    c: &tern_testkit::TestCluster,
    address: &str,
    delivery_key: &str,
    content: Vec<u8>,
    times: usize,
) -> Vec<String> {
    use tern_rpc::v1;
    let mut delivery =
        v1::delivery_client::DeliveryClient::connect(format!("http://{}", c.state().grpc_mda))
            .await
            .unwrap();
    let request = v1::DeliverRequest {
        return_path: "someone@far.test".into(),
        recipients: vec![v1::DeliverRecipient {
            address: address.into(),
            delivery_key: delivery_key.into(),
        }],
        content,
        queue_id: "test".into(),
    };
    let mut replies = Vec::new();
    for _ in 0..times {
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
    replies
}
