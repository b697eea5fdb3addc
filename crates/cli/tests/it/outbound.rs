//! Delivery to other domains: MX routing through a DNS server inside the test, peer SMTP
//! servers on loopback addresses (accepting, failing temporarily, rejecting, dropping the
//! connection, with and without STARTTLS), bounces to the sender, and connection reuse.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tern_store::RecipientState;
use tern_testkit::TestCluster;
use tern_testkit::dns::TestDns;
use tern_testkit::peers::{Behaviour, Peer, PeerConfig, bind_same_port};
use tern_testkit::py::Client;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn peer_config(behaviour: Behaviour, starttls: bool) -> PeerConfig {
    PeerConfig {
        behaviour,
        starttls,
        pipelining: true,
        eight_bit: true,
        size: None,
        hostname: "peer.remote.test".into(),
    }
}

/// A cluster whose MTA asks `dns` and connects to remote hosts on `port`, retrying after 1 s.
async fn cluster(
    dns: &TestDns,
    port: u16,
    configure: impl FnOnce(&mut tern_mta::OutboundConfig),
) -> TestCluster {
    let nameserver = dns.addr;
    let c = TestCluster::start_with("sqlite", move |o| {
        o.outbound.port = port;
        o.outbound.nameserver = Some(nameserver);
        o.queue.retry_schedule_secs = vec![1];
        o.queue.jitter_percent = 0;
        configure(&mut o.outbound);
    })
    .await;
    c.provision("example.test", &[ALICE, BOB]).await;
    c
}

async fn submit(c: &TestCluster, rcpts: &[&str], subject: &str) -> Vec<u8> {
    let msg = message(subject);
    let mut client = Client::new(
        "send",
        c.state().submission.port(),
        &c.cert(),
        ALICE.0,
        ALICE.1,
    )
    .arg("--mail-from", ALICE.0)
    .arg("--message-b64", b64(&msg));
    for r in rcpts {
        client = client.arg("--rcpt", r);
    }
    let out = client.run().await;
    assert_eq!(out["refused"], serde_json::json!({}), "{out}");
    msg
}

async fn state_of(c: &TestCluster, address: &str) -> Option<RecipientState> {
    recipient(c.store(), address).await.map(|r| r.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_delivery_uses_starttls_and_one_transaction_per_domain() {
    let dns = TestDns::start().await;
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(2))]).await;
    let peer = Peer::start(listeners.remove(0), peer_config(Behaviour::Accept, true)).await;
    dns.add_mx("remote.test", 10, "mx1.remote.test");
    dns.add_a("mx1.remote.test", ip(2));
    let c = cluster(&dns, port, |_| {}).await;

    let sent = submit(&c, &["carol@remote.test", "dave@REMOTE.test"], "to-remote").await;
    let got = peer.wait_for(1, WAIT).await;
    assert_eq!(
        got.len(),
        1,
        "one transaction for both recipients of the domain"
    );
    assert_eq!(got[0].rcpt_to, ["carol@remote.test", "dave@REMOTE.test"]);
    assert_eq!(got[0].mail_from, ALICE.0);
    assert!(got[0].tls, "opportunistic STARTTLS was used");
    assert!(got[0].data.ends_with(&sent), "the message arrives intact");
    let received = String::from_utf8_lossy(&got[0].data);
    assert!(received.starts_with("Received: "), "{received}");
    eventually("both recipients delivered", WAIT, || async {
        state_of(&c, "carol@remote.test").await == Some(RecipientState::Delivered)
            && state_of(&c, "dave@REMOTE.test").await == Some(RecipientState::Delivered)
    })
    .await;
    let r = recipient(c.store(), "carol@remote.test").await.unwrap();
    assert!(r.last_reply.starts_with("250"), "{}", r.last_reply);

    // A second message to the same host reuses the connection.
    submit(&c, &["carol@remote.test"], "second").await;
    peer.wait_for(2, WAIT).await;
    assert_eq!(
        peer.connections(),
        1,
        "connection reused for the next message"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_preference_mx_is_used_when_the_first_is_down() {
    let dns = TestDns::start().await;
    // 127.0.0.3 has no listener on the port: connection refused.
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(4))]).await;
    let peer = Peer::start(listeners.remove(0), peer_config(Behaviour::Accept, false)).await;
    dns.add_mx("remote.test", 10, "down.remote.test");
    dns.add_mx("remote.test", 20, "up.remote.test");
    dns.add_a("down.remote.test", ip(3));
    dns.add_a("up.remote.test", ip(4));
    let c = cluster(&dns, port, |_| {}).await;
    submit(&c, &["carol@remote.test"], "fallback").await;
    let got = peer.wait_for(1, WAIT).await;
    assert!(
        !got[0].tls,
        "the peer offers no STARTTLS: plaintext is fine when TLS is not required"
    );
    eventually("delivered", WAIT, || async {
        state_of(&c, "carol@remote.test").await == Some(RecipientState::Delivered)
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_are_retried_until_accepted() {
    let dns = TestDns::start().await;
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(5)), IpAddr::V4(ip(6))]).await;
    let flaky = Peer::start(
        listeners.remove(0),
        peer_config(Behaviour::TempFailThenAccept { failures: 1 }, false),
    )
    .await;
    let dropper = Peer::start(
        listeners.remove(0),
        peer_config(Behaviour::DropDuringData, false),
    )
    .await;
    dns.add_mx("flaky.test", 10, "mx.flaky.test");
    dns.add_a("mx.flaky.test", ip(5));
    dns.add_mx("dropper.test", 10, "mx.dropper.test");
    dns.add_a("mx.dropper.test", ip(6));
    let c = cluster(&dns, port, |_| {}).await;

    submit(&c, &["carol@flaky.test", "erin@dropper.test"], "retry").await;
    eventually(
        "flaky peer accepted on the second attempt",
        WAIT,
        || async { state_of(&c, "carol@flaky.test").await == Some(RecipientState::Delivered) },
    )
    .await;
    let r = recipient(c.store(), "carol@flaky.test").await.unwrap();
    assert_eq!(r.attempts, 2, "one temporary failure, then success");
    assert_eq!(flaky.received().len(), 1);
    // The peer that drops the connection mid-DATA never gets the message; it stays queued.
    eventually("a second attempt at the dropping peer", WAIT, || async {
        recipient(c.store(), "erin@dropper.test")
            .await
            .is_some_and(|r| r.attempts >= 2)
    })
    .await;
    let r = recipient(c.store(), "erin@dropper.test").await.unwrap();
    assert_eq!(r.state, RecipientState::Queued, "{r:?}");
    assert!(
        r.last_reply.starts_with('4') || r.last_reply.contains("connection"),
        "{}",
        r.last_reply
    );
    assert!(dropper.received().is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_bounce_to_the_sender_once() {
    let dns = TestDns::start().await;
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(7))]).await;
    let peer = Peer::start(listeners.remove(0), peer_config(Behaviour::Reject, true)).await;
    dns.add_mx("strict.test", 10, "mx.strict.test");
    dns.add_a("mx.strict.test", ip(7));
    dns.add_mx("nomail.test", 0, ".");
    let c = cluster(&dns, port, |_| {}).await;

    submit(&c, &["nobody@strict.test"], "will-bounce").await;
    eventually("failed", WAIT, || async {
        state_of(&c, "nobody@strict.test").await == Some(RecipientState::Failed)
    })
    .await;
    let r = recipient(c.store(), "nobody@strict.test").await.unwrap();
    assert!(r.last_reply.starts_with("550 5.1.1"), "{}", r.last_reply);
    assert_eq!(r.attempts, 1, "5xx fails at once");
    eventually("the bounce reaches alice", WAIT, || async {
        inbox(c.store(), ALICE.0).await.len() == 1
    })
    .await;
    let bounce = String::from_utf8_lossy(&inbox(c.store(), ALICE.0).await[0]).to_string();
    for needle in [
        "multipart/report",
        "report-type=\"delivery-status\"",
        "Action: failed",
        "Status: 5.1.1",
        "nobody@strict.test",
        "Subject: will-bounce",
        "Return-Path: <>",
    ] {
        assert!(
            bounce.contains(needle),
            "bounce lacks {needle:?}:\n{bounce}"
        );
    }
    assert_eq!(peer.received().len(), 0);

    // A null MX fails at once, with its own code.
    submit(&c, &["someone@nomail.test"], "null-mx").await;
    eventually("null MX failed", WAIT, || async {
        state_of(&c, "someone@nomail.test").await == Some(RecipientState::Failed)
    })
    .await;
    let r = recipient(c.store(), "someone@nomail.test").await.unwrap();
    assert!(r.last_reply.starts_with("556 5.1.10"), "{}", r.last_reply);
    eventually("second bounce", WAIT, || async {
        inbox(c.store(), ALICE.0).await.len() == 2
    })
    .await;

    // Bounces go out with the null sender...
    let queued = c.store().queue_list(None, 100).await.unwrap();
    assert_eq!(
        queued.iter().filter(|m| m.sender.is_empty()).count(),
        2,
        "bounces are sent with the null sender"
    );

    // ...and a message from the null sender that fails is never bounced (no loops).
    let rcpt = vec!["nobody@strict.test".to_string()];
    let content = message("from-null-sender");
    let id = c
        .store()
        .enqueue(tern_store::NewMessage {
            sender: "",
            recipients: &rcpt,
            content: &content,
            ..Default::default()
        })
        .await
        .unwrap();
    eventually("null-sender message failed", WAIT, || async {
        c.store()
            .queue_show(&id)
            .await
            .unwrap()
            .is_some_and(|m| m.recipients[0].state == RecipientState::Failed)
    })
    .await;
    let after = c.store().queue_list(None, 100).await.unwrap();
    assert_eq!(after.len(), queued.len() + 1, "no bounce for a bounce");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_is_never_downgraded() {
    let dns = TestDns::start().await;
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(8))]).await;
    let peer = Peer::start(listeners.remove(0), peer_config(Behaviour::Accept, false)).await;
    dns.add_mx("secure.test", 10, "mx.secure.test");
    dns.add_a("mx.secure.test", ip(8));
    let c = cluster(&dns, port, |o| {
        o.require_tls_domains = vec!["secure.test".into()]
    })
    .await;
    submit(&c, &["carol@secure.test"], "needs-tls").await;
    eventually("an attempt was made", WAIT, || async {
        recipient(c.store(), "carol@secure.test")
            .await
            .is_some_and(|r| r.attempts >= 1 && !r.last_reply.is_empty())
    })
    .await;
    let r = recipient(c.store(), "carol@secure.test").await.unwrap();
    assert_eq!(
        r.state,
        RecipientState::Queued,
        "deferred, not sent in plaintext: {r:?}"
    );
    assert!(
        r.last_reply.to_ascii_lowercase().contains("tls"),
        "{}",
        r.last_reply
    );
    assert!(peer.received().is_empty(), "nothing was sent without TLS");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parameters_are_relayed_and_honoured() {
    let dns = TestDns::start().await;
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(10)), IpAddr::V4(ip(11))]).await;
    let accept = Peer::start(listeners.remove(0), peer_config(Behaviour::Accept, false)).await;
    let _reject = Peer::start(listeners.remove(0), peer_config(Behaviour::Reject, false)).await;
    dns.add_mx("ok.test", 10, "mx.ok.test");
    dns.add_a("mx.ok.test", ip(10));
    dns.add_mx("strict.test", 10, "mx.strict.test");
    dns.add_a("mx.strict.test", ip(11));
    let c = cluster(&dns, port, |_| {}).await;
    let send = |rcpt: &str, notify: &str, subject: &str| {
        Client::new(
            "send",
            c.state().submission.port(),
            &c.cert(),
            ALICE.0,
            ALICE.1,
        )
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", rcpt)
        .arg("--message-b64", b64(&message(subject)))
        .arg("--mail-option", "RET=HDRS")
        .arg("--mail-option", "ENVID=env-42")
        .arg("--rcpt-option", format!("NOTIFY={notify}"))
        .arg("--rcpt-option", format!("ORCPT=rfc822;{rcpt}"))
        .run()
    };

    // NOTIFY=SUCCESS: the parameters travel on, and Alice is told of the delivery.
    let out = send("carol@ok.test", "SUCCESS", "notify-success").await;
    assert_eq!(out["refused"], serde_json::json!({}), "{out}");
    let got = accept.wait_for(1, WAIT).await;
    assert!(
        got[0].mail_params.iter().any(|p| p == "RET=HDRS"),
        "{:?}",
        got[0].mail_params
    );
    assert!(
        got[0].mail_params.iter().any(|p| p == "ENVID=env-42"),
        "{:?}",
        got[0].mail_params
    );
    assert!(
        got[0].rcpt_params[0].iter().any(|p| p == "NOTIFY=SUCCESS"),
        "{:?}",
        got[0].rcpt_params
    );
    assert!(
        got[0].rcpt_params[0]
            .iter()
            .any(|p| p.eq_ignore_ascii_case("ORCPT=rfc822;carol@ok.test")),
        "{:?}",
        got[0].rcpt_params
    );
    eventually("success notice", WAIT, || async {
        inbox(c.store(), ALICE.0).await.len() == 1
    })
    .await;
    let notice = String::from_utf8_lossy(&inbox(c.store(), ALICE.0).await[0]).to_string();
    for needle in [
        "Action: delivered",
        "Original-Envelope-Id: env-42",
        "Original-Recipient: rfc822;carol@ok.test",
        "Status: 2.",
    ] {
        assert!(
            notice.contains(needle),
            "notice lacks {needle:?}:\n{notice}"
        );
    }
    // RET=HDRS: only the header section comes back.
    assert!(
        notice.contains("text/rfc822-headers") && !notice.contains("Hello Bob"),
        "{notice}"
    );

    // NOTIFY=NEVER: a failure is recorded but no bounce is sent.
    send("nobody@strict.test", "NEVER", "notify-never").await;
    eventually("failed", WAIT, || async {
        state_of(&c, "nobody@strict.test").await == Some(RecipientState::Failed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        inbox(c.store(), ALICE.0).await.len(),
        1,
        "NOTIFY=NEVER: no bounce"
    );
    c.stop().await;
}

const TERN: &str = env!("CARGO_BIN_EXE_tern");

fn tern_cli(c: &TestCluster, args: &[&str]) -> String {
    let out = std::process::Command::new(TERN)
        .arg("--data")
        .arg(c.data_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_administration_lists_counts_and_bounces() {
    let dns = TestDns::start().await;
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(12))]).await;
    let _dropper = Peer::start(
        listeners.remove(0),
        peer_config(Behaviour::DropDuringData, false),
    )
    .await;
    dns.add_mx("slow.test", 10, "mx.slow.test");
    dns.add_a("mx.slow.test", ip(12));
    let c = cluster(&dns, port, |_| {}).await;
    // Keep it waiting: retries far in the future after the first failure.
    submit(&c, &["carol@slow.test"], "stuck").await;
    eventually("first attempt failed", WAIT, || async {
        recipient(c.store(), "carol@slow.test")
            .await
            .is_some_and(|r| r.attempts >= 1 && !r.last_reply.is_empty())
    })
    .await;
    let id = c
        .store()
        .queue_list(Some(RecipientState::Queued), 10)
        .await
        .unwrap()[0]
        .id
        .clone();

    let stats = tern_cli(&c, &["queue", "stats"]);
    assert!(
        stats.contains("slow.test") && stats.contains("oldest waiting message"),
        "{stats}"
    );
    let listed = tern_cli(
        &c,
        &[
            "queue",
            "list",
            "--domain",
            "slow.test",
            "--state",
            "queued",
        ],
    );
    assert!(listed.contains(&id), "{listed}");
    let none = tern_cli(&c, &["queue", "list", "--domain", "other.test"]);
    assert!(none.contains("queue is empty"), "{none}");
    let none = tern_cli(&c, &["queue", "list", "--older-than", "1h"]);
    assert!(none.contains("queue is empty"), "{none}");

    let bounced = tern_cli(&c, &["queue", "bounce", &id]);
    assert!(bounced.contains("1 recipient(s) bounced"), "{bounced}");
    assert_eq!(
        state_of(&c, "carol@slow.test").await,
        Some(RecipientState::Failed)
    );
    eventually("the bounce reaches alice", WAIT, || async {
        !inbox(c.store(), ALICE.0).await.is_empty()
    })
    .await;
    let bounce = String::from_utf8_lossy(&inbox(c.store(), ALICE.0).await[0]).to_string();
    assert!(
        bounce.contains("returned to sender by the postmaster"),
        "{bounce}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_domains_go_through_their_smarthost_and_nothing_else_is_relayed() {
    let dns = TestDns::start().await;
    let (port, mut listeners) = bind_same_port(&[IpAddr::V4(ip(13))]).await;
    let gateway = Peer::start(listeners.remove(0), peer_config(Behaviour::Accept, false)).await;
    let nameserver = dns.addr;
    let c = TestCluster::start_with("sqlite", move |o| {
        o.outbound.nameserver = Some(nameserver);
        o.relay_domains = vec!["inside.test".into()];
        o.outbound.domain_smarthosts.insert(
            "inside.test".into(),
            tern_mta::Smarthost {
                host: "127.0.0.13".into(),
                port,
                tls: tern_mta::TlsMode::Disabled,
                username: None,
                password: None,
            },
        );
    })
    .await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let mx = |rcpts: &[&str]| {
        let mut client = Client::new("mx", c.state().smtp.port(), &c.cert(), "-", "-")
            .arg("--mail-from", "someone@far.test")
            .arg("--message-b64", b64(&message("via-gateway")));
        for r in rcpts {
            client = client.arg("--rcpt", r);
        }
        client.run()
    };
    let out = mx(&[
        "anyone@inside.test",
        "victim@outside.test",
        "bob@example.test",
    ])
    .await;
    assert_eq!(out["rcpt"][0][0], 250, "relay domain accepted: {out}");
    assert_eq!(out["rcpt"][1][0], 550, "anything else is relaying: {out}");
    assert!(
        out["rcpt"][1][1].as_str().unwrap().starts_with("5.7.1"),
        "{out}"
    );
    assert_eq!(out["rcpt"][2][0], 250, "local user accepted: {out}");
    assert_eq!(out["data"][0], 250, "{out}");
    let got = gateway.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].rcpt_to,
        ["anyone@inside.test"],
        "only the relay recipient goes to the gateway"
    );
    eventually("bob got his copy", WAIT, || async {
        inbox(c.store(), BOB.0).await.len() == 1
    })
    .await;
    c.stop().await;
}
