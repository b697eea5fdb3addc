//! DKIM keys: adding, choosing the active key per domain, listing, and the refusals.

use tern_store::Error;
use tern_store::dkim::{DkimAlgorithm, NewDkimKey};

use crate::both;

fn key<'a>(domain: &'a str, selector: &'a str, algorithm: DkimAlgorithm) -> NewDkimKey<'a> {
    NewDkimKey {
        domain,
        selector,
        algorithm,
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        public_key: "MCowBQYDK2VwAyEA",
        active: true,
    }
}

both!(dkim_keys_add_active_and_list, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_domain("b.example").await.unwrap();
    assert!(
        store
            .active_dkim_key("example.org")
            .await
            .unwrap()
            .is_none()
    );

    let first = store
        .add_dkim_key(key("Example.ORG", "Tern202601", DkimAlgorithm::RsaSha256))
        .await
        .unwrap();
    assert_eq!(first.domain, "example.org");
    assert_eq!(first.selector, "tern202601");
    let active = store.active_dkim_key("EXAMPLE.org").await.unwrap().unwrap();
    assert_eq!(active, first);

    // The newest active key signs; an inactive one never does, however new.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = store
        .add_dkim_key(key("example.org", "ed", DkimAlgorithm::Ed25519Sha256))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .add_dkim_key(NewDkimKey {
            active: false,
            ..key("example.org", "spare", DkimAlgorithm::RsaSha256)
        })
        .await
        .unwrap();
    let active = store.active_dkim_key("example.org").await.unwrap().unwrap();
    assert_eq!(active.id, second.id);
    assert_eq!(active.algorithm, DkimAlgorithm::Ed25519Sha256);
    assert_eq!(
        active.private_key_pem,
        key("", "", DkimAlgorithm::RsaSha256).private_key_pem
    );

    store
        .add_dkim_key(key("b.example", "s1", DkimAlgorithm::RsaSha256))
        .await
        .unwrap();
    let all: Vec<(String, String, bool)> = store
        .list_dkim_keys(None)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.domain, k.selector, k.active))
        .collect();
    assert_eq!(
        all,
        [
            ("b.example".into(), "s1".into(), true),
            ("example.org".into(), "tern202601".into(), true),
            ("example.org".into(), "ed".into(), true),
            ("example.org".into(), "spare".into(), false),
        ]
    );
    let one = store.list_dkim_keys(Some("B.EXAMPLE")).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!(
        store
            .list_dkim_keys(Some("none.test"))
            .await
            .unwrap()
            .is_empty()
    );
});

both!(dkim_key_refusals, |store| async move {
    store.add_domain("example.org").await.unwrap();
    assert!(matches!(
        store
            .add_dkim_key(key("other.org", "s", DkimAlgorithm::RsaSha256))
            .await,
        Err(Error::NotFound(_))
    ));
    store
        .add_dkim_key(key("example.org", "s", DkimAlgorithm::RsaSha256))
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_dkim_key(key("example.org", "S", DkimAlgorithm::Ed25519Sha256))
            .await,
        Err(Error::Conflict(_))
    ));
    for bad in ["", "a b", "x..y", "-s", "s;p=1"] {
        assert!(
            matches!(
                store
                    .add_dkim_key(key("example.org", bad, DkimAlgorithm::RsaSha256))
                    .await,
                Err(Error::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store
            .add_dkim_key(NewDkimKey {
                public_key: " ",
                ..key("example.org", "t", DkimAlgorithm::RsaSha256)
            })
            .await,
        Err(Error::Invalid(_))
    ));
});

both!(dkim_keys_go_with_their_domain, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store
        .add_dkim_key(key("example.org", "s", DkimAlgorithm::RsaSha256))
        .await
        .unwrap();
    store.remove_domain("example.org").await.unwrap();
    assert!(store.list_dkim_keys(None).await.unwrap().is_empty());
    // A domain added again under the same name starts without the old keys.
    store.add_domain("example.org").await.unwrap();
    assert!(
        store
            .active_dkim_key("example.org")
            .await
            .unwrap()
            .is_none()
    );
});
