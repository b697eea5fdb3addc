//! DKIM for submitted mail (RFC 6376, RFC 8463): key generation, the DNS record to publish, and
//! signing with the From: domain's active key, through mail-auth on ring.
//!
//! Keys live in the store as text (`tern_store::dkim`): RSA private keys as PKCS#1 PEM, Ed25519
//! as PKCS#8 PEM; the public key as the base64 `p=` value. RSA public keys are published as
//! SubjectPublicKeyInfo, the form OpenSSL-based verifiers such as OpenDKIM require (RFC 6376
//! errata 3017); mail-auth accepts that and the bare PKCS#1 form alike.
//!
//! [`Dkim`] caches each domain's parsed key (or its absence) for a minute, so signing does not
//! query the store for every message; a newly generated key therefore starts signing within a
//! minute. Signing runs on the blocking pool: the body hash is linear in the message size and an
//! RSA-2048 signature costs around a millisecond, both too long for an async worker.
//!
//! This module deliberately does not verify inbound signatures (the MTA's business), publish
//! anything in DNS, or rotate keys by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::generate::DkimKeyPair;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done, NeedDomain};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tern_store::Store;
use tern_store::dkim::{DkimAlgorithm, DkimKey};

/// The header fields signed when present (RFC 6376 §5.4.1 recommends the ones that carry the
/// message's meaning). mail-auth also lists those absent from the message in `h=`, which makes
/// a verifier fail the signature if one is added later (RFC 6376 §5.4.2 "oversigning").
pub const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// RSA modulus size for generated keys: 2048 bits is what receivers expect today (RFC 8301 §3.2
/// requires at least 1024 and recommends 2048) and still fits a TXT record in two strings.
pub const RSA_BITS: usize = 2048;

/// How long a domain's key, or the knowledge that it has none, is reused before the store is
/// asked again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// A freshly generated key pair in the forms the store keeps.
pub struct GeneratedKey {
    pub algorithm: DkimAlgorithm,
    pub private_key_pem: String,
    /// Base64, for the record's `p=` tag.
    pub public_key: String,
}

/// Generates a key pair: RSA with the `rsa` crate (ring cannot generate RSA keys), Ed25519 with
/// ring. RSA generation takes tens of milliseconds to a second; callers on an async runtime run
/// this on the blocking pool.
pub fn generate_key(algorithm: DkimAlgorithm) -> anyhow::Result<GeneratedKey> {
    match algorithm {
        DkimAlgorithm::RsaSha256 => {
            let pair = DkimKeyPair::generate_rsa(RSA_BITS)
                .map_err(|e| anyhow!("generate RSA key: {e}"))?;
            let (private, public) = pair.into_inner();
            Ok(GeneratedKey {
                algorithm,
                private_key_pem: pem("RSA PRIVATE KEY", &private),
                public_key: STANDARD.encode(rsa_spki(&public)),
            })
        }
        DkimAlgorithm::Ed25519Sha256 => {
            let pkcs8 =
                Ed25519Key::generate_pkcs8().map_err(|e| anyhow!("generate Ed25519 key: {e}"))?;
            let key = Ed25519Key::from_pkcs8_der(&pkcs8)
                .map_err(|e| anyhow!("read generated Ed25519 key: {e}"))?;
            Ok(GeneratedKey {
                algorithm,
                private_key_pem: pem("PRIVATE KEY", &pkcs8),
                // RFC 8463 §4: the bare 32-byte public key, not wrapped in ASN.1.
                public_key: STANDARD.encode(key.public_key()),
            })
        }
    }
}

/// The TXT record that publishes `key`: its owner name `<selector>._domainkey.<domain>` and
/// its value (RFC 6376 §3.6.1 and §3.6.2.1).
pub fn dns_record(key: &DkimKey) -> (String, String) {
    (
        format!("{}._domainkey.{}", key.selector, key.domain),
        format!(
            "v=DKIM1; k={}; p={}",
            key.algorithm.key_type(),
            key.public_key
        ),
    )
}

/// The selector used when none is given: `tern<yyyymm>` for the UTC month of `unix_secs`, so
/// that a yearly or monthly rotation gets a fresh name (RFC 6376 §3.1 suggests dated selectors).
pub fn default_selector(unix_secs: i64) -> String {
    // Days to a civil date, after Howard Hinnant's "days_from_civil" inverse (proleptic
    // Gregorian calendar, March-based years so that leap days fall at the end).
    let z = unix_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("tern{year:04}{month:02}")
}

/// PEM armour (RFC 7468): base64 in lines of 64 characters between the label lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) with the
/// rsaEncryption algorithm identifier (RFC 8017 Appendix C), by hand: three DER headers do not
/// justify another ASN.1 crate.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_len(&mut bit_string, pkcs1.len() + 1);
    bit_string.push(0x00); // no unused bits
    bit_string.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(&mut out, ALGORITHM.len() + bit_string.len());
    out.extend_from_slice(&ALGORITHM);
    out.extend_from_slice(&bit_string);
    out
}

/// Appends a DER definite length (X.690 §8.1.3): short form below 128, else long form.
fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A stored key parsed into a ready signer for its domain and selector.
enum Loaded {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

impl Loaded {
    fn parse(stored: &DkimKey) -> anyhow::Result<Loaded> {
        let der = PrivateKeyDer::from_pem_slice(stored.private_key_pem.as_bytes())
            .map_err(|e| anyhow!("read PEM: {e}"))?;
        Ok(match stored.algorithm {
            DkimAlgorithm::RsaSha256 => Loaded::Rsa(complete(
                DkimSigner::from_key(
                    RsaKey::<Sha256>::from_key_der(der)
                        .map_err(|e| anyhow!("read RSA key: {e}"))?,
                ),
                stored,
            )),
            DkimAlgorithm::Ed25519Sha256 => Loaded::Ed25519(complete(
                DkimSigner::from_key(
                    Ed25519Key::from_pkcs8_der(der.secret_der())
                        .map_err(|e| anyhow!("read Ed25519 key: {e}"))?,
                ),
                stored,
            )),
        })
    }

    /// The `DKIM-Signature:` field for `message`, folded and CRLF-terminated.
    fn sign(&self, message: &[u8]) -> anyhow::Result<String> {
        let signature = match self {
            Loaded::Rsa(signer) => signer.sign(message),
            Loaded::Ed25519(signer) => signer.sign(message),
        }
        .map_err(|e| anyhow!("sign: {e}"))?;
        Ok(signature.to_header())
    }
}

/// Completes a signer: domain, selector, headers, relaxed/relaxed canonicalization (RFC 6376
/// §3.4.2 and §3.4.4; "simple" breaks on the slightest re-folding by a relay).
fn complete<T: SigningKey>(
    signer: DkimSigner<T, NeedDomain>,
    stored: &DkimKey,
) -> DkimSigner<T, Done> {
    signer
        .domain(stored.domain.as_str())
        .selector(stored.selector.as_str())
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

type CacheEntry = (Instant, Option<Arc<Loaded>>);

/// Signs submitted mail with each domain's active key, caching parsed keys per domain for
/// [`KEY_CACHE_TTL`]. Cheap to clone; clones share the cache.
#[derive(Clone, Default)]
pub struct Dkim {
    cache: Arc<Mutex<HashMap<String, CacheEntry>>>,
}

impl Dkim {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `DKIM-Signature:` field (CRLF-terminated, folded) for `message` signed with
    /// `from_domain`'s active key, or `None` when the domain has no active key. An error means
    /// the key could not be read or used; the caller sends the message unsigned rather than
    /// losing it.
    pub async fn sign(
        &self,
        store: &Store,
        from_domain: &str,
        message: &[u8],
    ) -> anyhow::Result<Option<String>> {
        let Some(loaded) = self.key(store, from_domain).await? else {
            return Ok(None);
        };
        let message = message.to_vec();
        let header = tokio::task::spawn_blocking(move || loaded.sign(&message))
            .await
            .context("signing task")??;
        Ok(Some(header))
    }

    async fn key(&self, store: &Store, domain: &str) -> anyhow::Result<Option<Arc<Loaded>>> {
        let domain = domain.to_ascii_lowercase();
        let now = Instant::now();
        if let Some((at, key)) = self.lock().get(&domain)
            && now.duration_since(*at) < KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        let stored = store
            .active_dkim_key(&domain)
            .await
            .context("look up DKIM key")?;
        let loaded = match stored {
            Some(stored) => Some(Arc::new(Loaded::parse(&stored).with_context(|| {
                format!("DKIM key {} for {}", stored.selector, stored.domain)
            })?)),
            None => None,
        };
        let mut cache = self.lock();
        // Bound the cache: entries for domains no longer signing age out here rather than
        // accumulate for the life of the process.
        cache.retain(|_, (at, _)| now.duration_since(*at) < KEY_CACHE_TTL);
        cache.insert(domain, (now, loaded.clone()));
        Ok(loaded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CacheEntry>> {
        // A panic while holding this lock cannot leave the map inconsistent (each operation is
        // a single insert, get or retain), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs `content` for `from_domain` and returns it with the signature prepended (RFC 6376
    /// §5.6), or unchanged when there is no key or signing failed: a message is never lost or
    /// refused because of DKIM.
    pub async fn sign_or_pass(
        &self,
        store: &Store,
        from_domain: &str,
        content: Vec<u8>,
    ) -> Vec<u8> {
        match self.sign(store, from_domain, &content).await {
            Ok(Some(header)) => {
                let mut signed = Vec::with_capacity(header.len() + content.len());
                signed.extend_from_slice(header.as_bytes());
                signed.extend_from_slice(&content);
                signed
            }
            Ok(None) => {
                tracing::debug!(domain = %from_domain, "no DKIM key: message sent unsigned");
                content
            }
            Err(e) => {
                tracing::warn!(domain = %from_domain, error = %format!("{e:#}"), "DKIM signing failed: message sent unsigned");
                content
            }
        }
    }
}

/// The domain to sign for: the `From:` header's address's domain (RFC 6376 §6.1.1 ties the
/// signature to it through DMARC alignment), falling back to `fallback` (the account's domain)
/// when the header has no parsable address.
pub fn from_domain(message: &[u8], fallback: &str) -> String {
    mail_parser::MessageParser::new()
        .parse_headers(message)
        .and_then(|m| {
            m.from()
                .and_then(|f| f.first())
                .and_then(|a| a.address())
                .and_then(|a| a.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase())
        })
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| fallback.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::borrow::Borrow;
    use std::hash::Hash;

    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::hickory_resolver::config::{GOOGLE, ResolverConfig, ResolverOpts};
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters};
    use mail_auth::{ResolverCache, Txt};
    use tern_store::dkim::NewDkimKey;

    use super::*;

    /// A DNS answer built in the test: mail-auth consults its TXT cache before the resolver,
    /// so a prefilled cache means no query ever leaves the process.
    struct Answers(Mutex<HashMap<Box<str>, Txt>>);

    impl ResolverCache<Box<str>, Txt> for Answers {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().get(name).cloned()
        }
        fn remove<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().remove(name)
        }
        fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
            self.0.lock().unwrap().insert(key, value);
        }
    }

    /// Verifies every DKIM signature in `message` against the one published record.
    async fn verify(message: &[u8], record: &(String, String)) -> Vec<DkimResult> {
        let answers = Answers(Mutex::new(HashMap::new()));
        answers.0.lock().unwrap().insert(
            format!("{}.", record.0).into_boxed_str(),
            DomainKey::parse(record.1.as_bytes()).unwrap().into(),
        );
        let resolver = MessageAuthenticator::new(
            ResolverConfig::udp_and_tcp(&GOOGLE),
            ResolverOpts::default(),
        )
        .unwrap();
        let parsed = AuthenticatedMessage::parse(message).unwrap();
        resolver
            .verify_dkim(Parameters::new(&parsed).with_txt_cache(&answers))
            .await
            .into_iter()
            .map(|o| o.result().clone())
            .collect()
    }

    const MESSAGE: &[u8] = b"Received: from x by y; Mon, 23 Nov 2026 01:00:00 +0000\r\n\
From: Alice <alice@example.test>\r\nTo: bob@example.org\r\nSubject: hello\r\n\
Date: Mon, 23 Nov 2026 01:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\n\
Hello Bob.\r\n\r\n\r\n";

    async fn store_with(algorithm: DkimAlgorithm) -> (Store, DkimKey) {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.add_domain("example.test").await.unwrap();
        let generated = generate_key(algorithm).unwrap();
        let key = store
            .add_dkim_key(NewDkimKey {
                domain: "example.test",
                selector: "tern202611",
                algorithm,
                private_key_pem: &generated.private_key_pem,
                public_key: &generated.public_key,
                active: true,
            })
            .await
            .unwrap();
        (store, key)
    }

    async fn signs_and_verifies(algorithm: DkimAlgorithm) {
        let (store, key) = store_with(algorithm).await;
        let record = dns_record(&key);
        assert_eq!(record.0, "tern202611._domainkey.example.test");
        let dkim = Dkim::new();
        let header = dkim
            .sign(&store, "Example.TEST", MESSAGE)
            .await
            .unwrap()
            .unwrap();
        assert!(header.starts_with("DKIM-Signature: v=1; a="), "{header}");
        assert!(
            header.contains(&format!("a={}", algorithm.as_str())),
            "{header}"
        );
        assert!(header.contains("c=relaxed/relaxed"), "{header}");
        assert!(header.contains("d=example.test") && header.contains("s=tern202611"));
        assert!(header.ends_with("\r\n") && !header.ends_with("\r\n\r\n"));

        let signed = dkim
            .sign_or_pass(&store, "example.test", MESSAGE.to_vec())
            .await;
        assert_eq!(verify(&signed, &record).await, [DkimResult::Pass]);

        // Relaxed canonicalization survives re-folding and trailing white space ...
        let refolded = String::from_utf8(signed.clone())
            .unwrap()
            .replace("Subject: hello", "Subject:   hello  ");
        assert_eq!(
            verify(refolded.as_bytes(), &record).await,
            [DkimResult::Pass]
        );
        // ... but not a changed subject, a changed body, or an added signed header.
        for (from, to) in [
            ("Subject: hello", "Subject: hellO"),
            ("Hello Bob.", "Hello Eve."),
            ("To: bob", "Cc: eve@example.org\r\nTo: bob"),
        ] {
            let tampered = String::from_utf8(signed.clone()).unwrap().replace(from, to);
            let results = verify(tampered.as_bytes(), &record).await;
            // mail-auth reports a header mismatch as fail and a body hash mismatch as
            // neutral (RFC 6376 §3.9 lets a verifier treat either as a failed signature).
            assert!(
                matches!(
                    results.as_slice(),
                    [DkimResult::Fail(_)
                        | DkimResult::Neutral(mail_auth::Error::Dkim(
                            mail_auth::dkim::DkimError::FailedBodyHashMatch
                        ))]
                ),
                "{to}: {results:?}"
            );
        }
        store.close().await;
    }

    #[tokio::test]
    async fn rsa_signature_verifies_and_tampering_fails() {
        signs_and_verifies(DkimAlgorithm::RsaSha256).await;
    }

    #[tokio::test]
    async fn ed25519_signature_verifies_and_tampering_fails() {
        signs_and_verifies(DkimAlgorithm::Ed25519Sha256).await;
    }

    #[tokio::test]
    async fn no_key_means_no_signature_and_the_answer_is_cached() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.add_domain("example.test").await.unwrap();
        let dkim = Dkim::new();
        assert!(
            dkim.sign(&store, "example.test", MESSAGE)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            dkim.sign_or_pass(&store, "example.test", MESSAGE.to_vec())
                .await,
            MESSAGE
        );
        // A key added now is not seen until the cached "no key" expires; a fresh cache sees it.
        let generated = generate_key(DkimAlgorithm::Ed25519Sha256).unwrap();
        store
            .add_dkim_key(NewDkimKey {
                domain: "example.test",
                selector: "s",
                algorithm: DkimAlgorithm::Ed25519Sha256,
                private_key_pem: &generated.private_key_pem,
                public_key: &generated.public_key,
                active: true,
            })
            .await
            .unwrap();
        assert!(
            dkim.sign(&store, "example.test", MESSAGE)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            Dkim::new()
                .sign(&store, "example.test", MESSAGE)
                .await
                .unwrap()
                .is_some()
        );
        store.close().await;
    }

    #[tokio::test]
    async fn an_unreadable_key_sends_the_message_unsigned() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.add_domain("example.test").await.unwrap();
        store
            .add_dkim_key(NewDkimKey {
                domain: "example.test",
                selector: "broken",
                algorithm: DkimAlgorithm::RsaSha256,
                private_key_pem: "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                public_key: "AAAA",
                active: true,
            })
            .await
            .unwrap();
        let dkim = Dkim::new();
        assert!(dkim.sign(&store, "example.test", MESSAGE).await.is_err());
        assert_eq!(
            dkim.sign_or_pass(&store, "example.test", MESSAGE.to_vec())
                .await,
            MESSAGE
        );
        store.close().await;
    }

    #[test]
    fn generated_keys_have_the_published_forms() {
        let rsa = generate_key(DkimAlgorithm::RsaSha256).unwrap();
        assert!(
            rsa.private_key_pem
                .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
        );
        let spki = STANDARD.decode(&rsa.public_key).unwrap();
        // SEQUENCE (long form, two length octets) then the rsaEncryption identifier.
        assert_eq!(&spki[..2], &[0x30, 0x82]);
        assert_eq!(
            &spki[4..19],
            &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
                0x00
            ]
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([spki[2], spki[3]])),
            spki.len() - 4
        );
        let ed = generate_key(DkimAlgorithm::Ed25519Sha256).unwrap();
        assert!(
            ed.private_key_pem
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert_eq!(STANDARD.decode(&ed.public_key).unwrap().len(), 32);
        assert!(ed.private_key_pem.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn default_selectors_name_the_utc_month() {
        assert_eq!(default_selector(0), "tern197001");
        // 2026-11-23T01:14:33Z, 2024-02-29T23:59:59Z, 2000-03-01T00:00:00Z, 2026-12-31T23:59:59Z
        assert_eq!(default_selector(1_795_396_473), "tern202611");
        assert_eq!(default_selector(1_709_251_199), "tern202402");
        assert_eq!(default_selector(951_868_800), "tern200003");
        assert_eq!(default_selector(1_798_761_599), "tern202612");
    }

    #[test]
    fn der_lengths() {
        for (len, want) in [
            (0usize, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x81, 0x80]),
            (255, &[0x81, 0xff]),
            (256, &[0x82, 0x01, 0x00]),
            (270, &[0x82, 0x01, 0x0e]),
        ] {
            let mut out = Vec::new();
            der_len(&mut out, len);
            assert_eq!(out, want, "{len}");
        }
    }

    #[test]
    fn the_signing_domain_is_the_from_domain() {
        assert_eq!(from_domain(MESSAGE, "fallback.test"), "example.test");
        assert_eq!(
            from_domain(b"From: \"A\" <a@Sub.Example.ORG>\r\n\r\nx", "f.test"),
            "sub.example.org"
        );
        assert_eq!(
            from_domain(b"Subject: no from\r\n\r\nx", "F.test"),
            "f.test"
        );
        assert_eq!(
            from_domain(b"From: undisclosed\r\n\r\nx", "f.test"),
            "f.test"
        );
        assert_eq!(from_domain(b"", "f.test"), "f.test");
    }

    #[test]
    fn dns_record_names_the_key_type() {
        let key = DkimKey {
            id: 1,
            domain: "example.test".into(),
            selector: "s1".into(),
            algorithm: DkimAlgorithm::Ed25519Sha256,
            private_key_pem: String::new(),
            public_key: "QUJD".into(),
            created_at_ms: 0,
            active: true,
        };
        assert_eq!(
            dns_record(&key),
            (
                "s1._domainkey.example.test".to_string(),
                "v=DKIM1; k=ed25519; p=QUJD".to_string()
            )
        );
    }
}
