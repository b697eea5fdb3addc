//! DKIM signing keys (RFC 6376): per domain, one row per selector, the newest active key signs.
//!
//! The store keeps the key material as text it does not interpret: the private key as PEM and
//! the public key as the base64 `p=` value of the DNS record. Generating keys, parsing them and
//! signing are the submission agent's business (`tern_msa::dkim`); this module deliberately
//! holds no cryptography and publishes nothing in DNS.

use sqlx::Row;

use crate::{Error, Result, Store, now_ms, validate, with_pool, write_tx};

/// The signing algorithms Tern generates keys for, by their `a=` tag names (RFC 6376 §3.5,
/// RFC 8463 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The name stored in the database and written in the signature's `a=` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The key type published in the DNS record's `k=` tag (RFC 6376 §3.6.1, RFC 8463 §4).
    pub fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa",
            DkimAlgorithm::Ed25519Sha256 => "ed25519",
        }
    }

    /// Parses a stored or user-given name: `rsa-sha256` / `rsa`, `ed25519-sha256` / `ed25519`.
    pub fn parse(name: &str) -> Result<DkimAlgorithm> {
        match name.to_ascii_lowercase().as_str() {
            "rsa-sha256" | "rsa" => Ok(DkimAlgorithm::RsaSha256),
            "ed25519-sha256" | "ed25519" => Ok(DkimAlgorithm::Ed25519Sha256),
            _ => Err(Error::Invalid(format!("DKIM algorithm {name:?}"))),
        }
    }
}

/// A stored DKIM key. `Debug` leaves the private key out, so a key can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub id: i64,
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// PEM text: PKCS#1 for RSA, PKCS#8 for Ed25519.
    pub private_key_pem: String,
    /// The base64 public key, as published in `p=`.
    pub public_key: String,
    pub created_at_ms: i64,
    pub active: bool,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("id", &self.id)
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("public_key", &self.public_key)
            .field("created_at_ms", &self.created_at_ms)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// What [`Store::add_dkim_key`] needs; the id and creation time are the store's.
#[derive(Clone, Copy)]
pub struct NewDkimKey<'a> {
    pub domain: &'a str,
    pub selector: &'a str,
    pub algorithm: DkimAlgorithm,
    pub private_key_pem: &'a str,
    pub public_key: &'a str,
    pub active: bool,
}

/// The columns [`key_from_row`] reads, as a macro so that queries stay `&'static str` literals
/// (sqlx refuses run-time SQL strings) through `concat!`.
macro_rules! columns {
    () => {
        "id, domain, selector, algorithm, private_key, public_key, created_at, active"
    };
}

fn key_from_row<R>(row: &R) -> Result<DkimKey>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let algorithm: String = row.try_get("algorithm")?;
    Ok(DkimKey {
        id: row.try_get("id")?,
        domain: row.try_get("domain")?,
        selector: row.try_get("selector")?,
        // The CHECK constraint admits only the two names; anything else is corruption.
        algorithm: DkimAlgorithm::parse(&algorithm)
            .map_err(|_| Error::Internal(format!("stored DKIM algorithm {algorithm:?}")))?,
        private_key_pem: row.try_get("private_key")?,
        public_key: row.try_get("public_key")?,
        created_at_ms: row.try_get("created_at")?,
        active: row.try_get("active")?,
    })
}

impl Store {
    /// Stores a key for a local domain. `NotFound` if the domain is not local, `Conflict` if
    /// the domain already has a key under this selector (a selector names one DNS record, so
    /// it is never reused for a different key), `Invalid` for a selector that is not a
    /// sequence of DNS labels (RFC 6376 §3.1) or an empty key.
    pub async fn add_dkim_key(&self, key: NewDkimKey<'_>) -> Result<DkimKey> {
        let domain = validate::domain(key.domain)?;
        let selector = validate::domain(key.selector)
            .map_err(|_| Error::Invalid(format!("DKIM selector {:?}", key.selector)))?;
        if key.private_key_pem.trim().is_empty() || key.public_key.trim().is_empty() {
            return Err(Error::Invalid("DKIM key material is empty".into()));
        }
        let now = now_ms();
        let id: Option<i64> = write_tx!(self, |tx, _backend| {
            let local = sqlx::query("SELECT 1 FROM domains WHERE name = $1")
                .bind(&domain)
                .fetch_optional(&mut *tx)
                .await?;
            if local.is_none() {
                return Err(Error::NotFound(format!("domain {domain}")));
            }
            let row = sqlx::query(
                "INSERT INTO dkim_keys \
                 (domain, selector, algorithm, private_key, public_key, created_at, active) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&domain)
            .bind(&selector)
            .bind(key.algorithm.as_str())
            .bind(key.private_key_pem)
            .bind(key.public_key)
            .bind(now)
            .bind(key.active)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) => Some(row.try_get("id")?),
                None => None,
            }
        });
        let Some(id) = id else {
            return Err(Error::Conflict(format!(
                "DKIM selector {selector} exists for {domain}"
            )));
        };
        Ok(DkimKey {
            id,
            domain,
            selector,
            algorithm: key.algorithm,
            private_key_pem: key.private_key_pem.to_string(),
            public_key: key.public_key.to_string(),
            created_at_ms: now,
            active: key.active,
        })
    }

    /// The key that signs mail from `domain`: the newest active one (ties broken by id, so
    /// the answer is stable), or `None` when the domain has no active key.
    pub async fn active_dkim_key(&self, domain: &str) -> Result<Option<DkimKey>> {
        let domain = domain.to_ascii_lowercase();
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM dkim_keys WHERE domain = $1 AND active = $2 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        with_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(&domain)
                .bind(true)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(key_from_row).transpose()
        })
    }

    /// Every key, or one domain's, ordered by domain and then oldest first.
    pub async fn list_dkim_keys(&self, domain: Option<&str>) -> Result<Vec<DkimKey>> {
        let domain = domain.map(str::to_ascii_lowercase);
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM dkim_keys WHERE ($1 IS NULL OR domain = $1) \
             ORDER BY domain, created_at, id"
        );
        with_pool!(self, |pool| {
            let rows = sqlx::query(sql).bind(&domain).fetch_all(pool).await?;
            rows.iter().map(key_from_row).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [DkimAlgorithm::RsaSha256, DkimAlgorithm::Ed25519Sha256] {
            assert_eq!(DkimAlgorithm::parse(alg.as_str()).unwrap(), alg);
        }
        assert_eq!(
            DkimAlgorithm::parse("RSA").unwrap(),
            DkimAlgorithm::RsaSha256
        );
        assert_eq!(
            DkimAlgorithm::parse("ed25519").unwrap(),
            DkimAlgorithm::Ed25519Sha256
        );
        assert!(DkimAlgorithm::parse("rsa-sha1").is_err());
        assert_eq!(DkimAlgorithm::Ed25519Sha256.key_type(), "ed25519");
    }

    fn assert_send<T: Send>(_: &T) {}

    /// Agents call these from spawned tasks; this only has to compile.
    #[test]
    fn dkim_futures_are_send() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime.block_on(Store::connect("sqlite::memory:")).unwrap();
        let new = NewDkimKey {
            domain: "x",
            selector: "s",
            algorithm: DkimAlgorithm::RsaSha256,
            private_key_pem: "k",
            public_key: "p",
            active: true,
        };
        assert_send(&store.add_dkim_key(new));
        assert_send(&store.active_dkim_key("x"));
        assert_send(&store.list_dkim_keys(None));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = DkimKey {
            id: 1,
            domain: "example.test".into(),
            selector: "s".into(),
            algorithm: DkimAlgorithm::RsaSha256,
            private_key_pem: "-----BEGIN RSA PRIVATE KEY-----SECRET".into(),
            public_key: "PUB".into(),
            created_at_ms: 0,
            active: true,
        };
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("SECRET") && shown.contains("PUB"),
            "{shown}"
        );
    }
}
