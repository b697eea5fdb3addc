//! API tokens: creation (shown once, stored as a hash), authentication, expiry, listing,
//! revocation, and what happens when the account goes away.

use tern_store::tokens::{TokenCheck, hash_token, looks_like_token};
use tern_store::{Error, now_ms};

use crate::both;

both!(tokens_create_authenticate_list_revoke, |store| async move {
    store.add_domain("example.org").await.unwrap();
    let bob = store.add_account("bob@example.org", "pw").await.unwrap();
    store.add_account("carol@example.org", "pw").await.unwrap();

    let created = store
        .create_token("Bob@Example.ORG", " ci deploy ", None)
        .await
        .unwrap();
    assert!(looks_like_token(&created.secret), "{}", created.secret);
    assert_eq!(created.token.account, "bob@example.org");
    assert_eq!(created.token.name, "ci deploy");
    assert!(created.secret.starts_with(&created.token.prefix));
    assert_eq!(created.token.prefix.len(), "tern_".len() + 8);
    assert_eq!(created.token.last_used_ms, None);

    match store.authenticate_token(&created.secret).await.unwrap() {
        TokenCheck::Valid(account) => assert_eq!(account, bob),
        other => panic!("expected a valid token, got {other:?}"),
    }
    // Only the hash is stored: the secret itself is a wrong token, and so is a near miss.
    assert_eq!(
        store
            .authenticate_token(&hash_token(&created.secret))
            .await
            .unwrap(),
        TokenCheck::Unknown
    );
    let mut near = created.secret.clone();
    let last = if near.ends_with('0') { "1" } else { "0" };
    near.replace_range(near.len() - 1.., last);
    assert_eq!(
        store.authenticate_token(&near).await.unwrap(),
        TokenCheck::Unknown
    );
    assert_eq!(
        store.authenticate_token("").await.unwrap(),
        TokenCheck::Unknown
    );

    let second = store
        .create_token("bob@example.org", "", Some(now_ms() + 3_600_000))
        .await
        .unwrap();
    assert_ne!(second.secret, created.secret);
    let listed = store.list_tokens("bob@example.org").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, created.token.id);
    assert!(
        listed[0].last_used_ms.is_some(),
        "authentication records the use"
    );
    assert_eq!(listed[1], second.token);
    assert!(
        store
            .list_tokens("carol@example.org")
            .await
            .unwrap()
            .is_empty()
    );

    let revoked = store.revoke_token(created.token.id).await.unwrap();
    assert_eq!(revoked.id, created.token.id);
    assert_eq!(revoked.account, "bob@example.org");
    assert_eq!(
        store.authenticate_token(&created.secret).await.unwrap(),
        TokenCheck::Unknown
    );
    assert!(matches!(
        store.revoke_token(created.token.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.authenticate_token(&second.secret).await.unwrap(),
        TokenCheck::Valid(_)
    ));
    assert_eq!(store.list_tokens("bob@example.org").await.unwrap().len(), 1);
});

both!(tokens_refusals_and_expiry, |store| async move {
    store.add_domain("example.org").await.unwrap();
    store.add_account("bob@example.org", "pw").await.unwrap();
    assert!(matches!(
        store.create_token("nobody@example.org", "", None).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.list_tokens("nobody@example.org").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.create_token("bob@example.org", "a\r\nb", None).await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .create_token("bob@example.org", "", Some(now_ms() - 1))
            .await,
        Err(Error::Invalid(_))
    ));

    let soon = store
        .create_token("bob@example.org", "short", Some(now_ms() + 300))
        .await
        .unwrap();
    assert!(matches!(
        store.authenticate_token(&soon.secret).await.unwrap(),
        TokenCheck::Valid(_)
    ));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        store.authenticate_token(&soon.secret).await.unwrap(),
        TokenCheck::Expired
    );
    // Listed still, so its owner can see why it stopped working.
    let listed = store.list_tokens("bob@example.org").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].expires_at_ms.is_some());

    // Removing the account removes its tokens with it.
    let kept = store
        .create_token("bob@example.org", "kept", None)
        .await
        .unwrap();
    store.remove_account("bob@example.org").await.unwrap();
    assert_eq!(
        store.authenticate_token(&kept.secret).await.unwrap(),
        TokenCheck::Unknown
    );
    assert!(matches!(
        store.revoke_token(kept.token.id).await,
        Err(Error::NotFound(_))
    ));
});
