//! DKIM end to end: a key generated through the Admin service signs what smtplib submits, and
//! the message as stored in Bob's INBOX verifies with mail-auth against the TXT record from the
//! generate reply, published in an in-process DNS server and fetched over the loopback.

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use tern_rpc::v1;
use tern_testkit::TestCluster;
use tern_testkit::dns::TestDns;
use tern_testkit::py::Client;

use crate::common::*;

/// A verifier that asks only `dns`.
fn authenticator(dns: &TestDns) -> MessageAuthenticator {
    let mut ns = NameServerConfig::udp_and_tcp(dns.addr.ip());
    for c in &mut ns.connections {
        c.port = dns.addr.port();
    }
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], vec![ns]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().use_hosts_file = ResolveHosts::Never;
    // No cache: the test asks once before the record is published and once after.
    builder.options_mut().cache_size = 0;
    MessageAuthenticator(builder.build().expect("resolver"))
}

async fn signed_submission_verifies(backend: &str, algorithm: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let mut admin = tern::admin::admin(&c.admin_target()).await.unwrap();
    let key = admin
        .generate_dkim_key(v1::GenerateDkimKeyRequest {
            domain: "example.test".into(),
            selector: String::new(),
            algorithm: algorithm.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(key.selector.starts_with("tern2"), "{key:?}");
    assert_eq!(
        key.dns_name,
        format!("{}._domainkey.example.test", key.selector)
    );
    let k = if algorithm == "ed25519" {
        "ed25519"
    } else {
        "rsa"
    };
    assert!(
        key.dns_value.starts_with(&format!("v=DKIM1; k={k}; p=")),
        "{key:?}"
    );
    // The same selector twice is refused, and an unknown domain costs no key.
    let again = admin
        .generate_dkim_key(v1::GenerateDkimKeyRequest {
            domain: "example.test".into(),
            selector: key.selector.clone(),
            algorithm: algorithm.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let unknown = admin
        .generate_dkim_key(v1::GenerateDkimKeyRequest {
            domain: "other.test".into(),
            selector: String::new(),
            algorithm: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let listed = admin
        .list_dkim_keys(v1::ListDkimKeysRequest {
            domain: "example.test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed, std::slice::from_ref(&key));

    let sent = message("signed");
    let s = c.state().clone();
    let reply = Client::new("send", s.submission.port(), &c.cert(), ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&sent))
        .run()
        .await;
    assert_eq!(reply["refused"], serde_json::json!({}), "{reply}");
    let store = c.store().clone();
    eventually(
        "delivery to bob",
        std::time::Duration::from_secs(20),
        || {
            let store = store.clone();
            async move { !inbox(&store, BOB.0).await.is_empty() }
        },
    )
    .await;
    let stored = inbox(c.store(), BOB.0).await.remove(0);
    let text = String::from_utf8_lossy(&stored);
    assert!(
        text.contains(&format!("DKIM-Signature: v=1; a={}", key.algorithm)),
        "{text}"
    );
    assert!(text.contains("c=relaxed/relaxed"), "{text}");

    let dns = TestDns::start().await;
    let verifier = authenticator(&dns);
    let parsed = AuthenticatedMessage::parse(&stored).expect("parsable message");
    // Before the record is published the signature cannot verify.
    let unpublished = verifier.verify_dkim(&parsed).await;
    assert!(
        !matches!(unpublished[0].result(), DkimResult::Pass),
        "{:?}",
        unpublished[0].result()
    );
    dns.add_txt(&key.dns_name, &key.dns_value);
    let results = verifier.verify_dkim(&parsed).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].result(), &DkimResult::Pass, "{text}");
    let signature = results[0].signature().expect("signature");
    assert_eq!(signature.d, "example.test");
    assert_eq!(signature.s, key.selector);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_rsa_signature_verifies_postgres() {
    signed_submission_verifies("postgres", "rsa").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_ed25519_signature_verifies_sqlite() {
    signed_submission_verifies("sqlite", "ed25519").await;
}
