//! API tokens: how programs authenticate as an account (the gRPC Submission service) without
//! holding its password.
//!
//! A token is `tern_` followed by 64 hex digits (32 random bytes from the thread's CSPRNG). It is
//! returned once, by [`Store::create_token`], and only its SHA-256 is stored. Hashing with one
//! fast round is enough here, unlike for passwords: the secret has 256 bits of entropy, so there
//! is nothing a dictionary could find, and the hash is the lookup key, so checking a token is one
//! indexed read with no comparison of secrets that timing could reveal.
//!
//! The store keeps tokens and answers whether one is valid; it deliberately does not decide what
//! a token may do (every token may submit as its account) nor throttle failed attempts.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Account, Error, Result, Store, now_ms, validate, with_pool, write_tx};

/// Every token starts with this, so that one pasted in the wrong place (a log, a repository)
/// is recognisable and secret scanners can find it.
pub const TOKEN_PREFIX: &str = "tern_";

/// Random bytes in a token.
const SECRET_BYTES: usize = 32;

/// How much of a token a listing shows: the fixed prefix and 8 hex digits (32 bits of the 256),
/// enough to tell tokens apart, far too little to help anyone guess one.
const SHOWN_LEN: usize = TOKEN_PREFIX.len() + 8;

/// `last_used_at` is refreshed at most this often, so a busy program costs one write a minute
/// rather than one per request.
pub const LAST_USED_GRANULARITY_MS: i64 = 60 * 1000;

const MAX_NAME_CHARS: usize = 100;

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    /// The account's address.
    pub account: String,
    pub name: String,
    /// The first characters of the token (`tern_1a2b3c4d`), to recognise it by.
    pub prefix: String,
    pub created_at_ms: i64,
    pub last_used_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
}

/// A token just created: the stored record and the secret, which exists nowhere else. `Debug`
/// leaves the secret out.
#[derive(Clone)]
pub struct NewApiToken {
    pub token: ApiToken,
    pub secret: String,
}

impl std::fmt::Debug for NewApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiToken")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The answer to "whose token is this?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(Account),
    /// The token exists but its expiry time has passed.
    Expired,
    /// Not a token of this system: mistyped, revoked, or its account removed.
    Unknown,
}

/// True when `text` has the shape of a Tern token (prefix and 64 lowercase hex digits).
pub fn looks_like_token(text: &str) -> bool {
    text.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == SECRET_BYTES * 2
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The stored form of a token: SHA-256 of its text, lowercase hex.
pub fn hash_token(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn generate_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// A token's name is for people: one line of at most 100 characters, possibly empty.
fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::Invalid(format!(
            "token name longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "token name contains control characters".into(),
        ));
    }
    Ok(name.to_string())
}

macro_rules! token_from_row {
    ($row:expr) => {
        ApiToken {
            id: $row.try_get("id")?,
            account: $row.try_get("address")?,
            name: $row.try_get("name")?,
            prefix: $row.try_get("prefix")?,
            created_at_ms: $row.try_get("created_at")?,
            last_used_ms: $row.try_get("last_used_at")?,
            expires_at_ms: $row.try_get("expires_at")?,
        }
    };
}

impl Store {
    /// Creates a token for the account at `address`. `NotFound` for an unknown account,
    /// `Invalid` for a bad name or an expiry time that has already passed.
    pub async fn create_token(
        &self,
        address: &str,
        name: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<NewApiToken> {
        let address = validate::normalize_address(address)?;
        let name = check_name(name)?;
        let now = now_ms();
        if expires_at_ms.is_some_and(|e| e <= now) {
            return Err(Error::Invalid("token expiry is in the past".into()));
        }
        let secret = generate_secret();
        let prefix = secret[..SHOWN_LEN].to_string();
        let hash = hash_token(&secret);
        let id: Option<i64> = write_tx!(self, |tx, _backend| {
            let account = sqlx::query("SELECT id FROM accounts WHERE address = $1")
                .bind(&address)
                .fetch_optional(&mut *tx)
                .await?;
            match account {
                None => None,
                Some(account) => {
                    let account_id: i64 = account.try_get("id")?;
                    let row = sqlx::query(
                        "INSERT INTO api_tokens \
                         (account_id, name, prefix, token_hash, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    )
                    .bind(account_id)
                    .bind(&name)
                    .bind(&prefix)
                    .bind(&hash)
                    .bind(now)
                    .bind(expires_at_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                    Some(row.try_get("id")?)
                }
            }
        });
        let Some(id) = id else {
            return Err(Error::NotFound(format!("account {address}")));
        };
        Ok(NewApiToken {
            token: ApiToken {
                id,
                account: address,
                name,
                prefix,
                created_at_ms: now,
                last_used_ms: None,
                expires_at_ms,
            },
            secret,
        })
    }

    /// The account's tokens, oldest first (expired ones included). `NotFound` for an unknown
    /// account, so that a typo is not mistaken for "no tokens".
    pub async fn list_tokens(&self, address: &str) -> Result<Vec<ApiToken>> {
        let address = validate::normalize_address(address)?;
        with_pool!(self, |pool| {
            let account = sqlx::query("SELECT id FROM accounts WHERE address = $1")
                .bind(&address)
                .fetch_optional(pool)
                .await?;
            if account.is_none() {
                return Err(Error::NotFound(format!("account {address}")));
            }
            let rows = sqlx::query(
                "SELECT t.id, a.address, t.name, t.prefix, t.created_at, t.last_used_at, \
                        t.expires_at \
                 FROM api_tokens t JOIN accounts a ON a.id = t.account_id \
                 WHERE a.address = $1 ORDER BY t.created_at, t.id",
            )
            .bind(&address)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|row| Ok(token_from_row!(row))).collect()
        })
    }

    /// Revokes (deletes) a token; it stops working at once. Returns what was revoked;
    /// `NotFound` when there is no such token.
    pub async fn revoke_token(&self, id: i64) -> Result<ApiToken> {
        let revoked: Option<ApiToken> = write_tx!(self, |tx, _backend| {
            let row = sqlx::query(
                "SELECT t.id, a.address, t.name, t.prefix, t.created_at, t.last_used_at, \
                        t.expires_at \
                 FROM api_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => None,
                Some(row) => {
                    sqlx::query("DELETE FROM api_tokens WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Some(token_from_row!(row))
                }
            }
        });
        revoked.ok_or_else(|| Error::NotFound(format!("token {id}")))
    }

    /// Whose token `secret` is. A valid token's `last_used_at` is brought up to date (at most
    /// once per [`LAST_USED_GRANULARITY_MS`]). Anything that is not shaped like a token is
    /// `Unknown` without a query.
    pub async fn authenticate_token(&self, secret: &str) -> Result<TokenCheck> {
        if !looks_like_token(secret) {
            return Ok(TokenCheck::Unknown);
        }
        let hash = hash_token(secret);
        let found = with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT t.id AS token_id, t.last_used_at, t.expires_at, \
                        a.id, a.address, a.domain, a.created_at \
                 FROM api_tokens t JOIN accounts a ON a.id = t.account_id \
                 WHERE t.token_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(pool)
            .await?;
            match row {
                None => None,
                Some(row) => {
                    let token_id: i64 = row.try_get("token_id")?;
                    let last_used: Option<i64> = row.try_get("last_used_at")?;
                    let expires: Option<i64> = row.try_get("expires_at")?;
                    let account = Account {
                        id: row.try_get("id")?,
                        address: row.try_get("address")?,
                        domain: row.try_get("domain")?,
                        created_at_ms: row.try_get("created_at")?,
                    };
                    Some((token_id, last_used, expires, account))
                }
            }
        });
        let Some((token_id, last_used, expires, account)) = found else {
            return Ok(TokenCheck::Unknown);
        };
        let now = now_ms();
        if expires.is_some_and(|e| e <= now) {
            return Ok(TokenCheck::Expired);
        }
        if last_used.is_none_or(|t| now - t >= LAST_USED_GRANULARITY_MS) {
            write_tx!(self, |tx, _backend| {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(token_id)
                    .execute(&mut *tx)
                    .await?;
            });
        }
        Ok(TokenCheck::Valid(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_prefix_and_256_random_bits() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(!looks_like_token(&a[..a.len() - 1]));
        assert!(!looks_like_token(&a.to_uppercase()));
        assert!(!looks_like_token(&a.replacen("tern_", "tarn_", 1)));
        assert!(!looks_like_token(""));
    }

    #[test]
    fn hash_is_sha256_hex() {
        // FIPS 180-2 test vector.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_one_short_line() {
        assert_eq!(check_name("  ci deploy ").unwrap(), "ci deploy");
        assert_eq!(check_name("").unwrap(), "");
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(101)).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let new = NewApiToken {
            token: ApiToken {
                id: 1,
                account: "a@example.org".into(),
                name: "n".into(),
                prefix: "tern_12345678".into(),
                created_at_ms: 0,
                last_used_ms: None,
                expires_at_ms: None,
            },
            secret: "tern_SECRET".into(),
        };
        let shown = format!("{new:?}");
        assert!(!shown.contains("SECRET") && shown.contains("tern_12345678"));
    }

    fn assert_send<T: Send>(_: &T) {}

    /// Agents call these from spawned tasks; this only has to compile.
    #[test]
    fn token_futures_are_send() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime.block_on(Store::connect("sqlite::memory:")).unwrap();
        assert_send(&store.create_token("a@b.c", "n", None));
        assert_send(&store.list_tokens("a@b.c"));
        assert_send(&store.revoke_token(1));
        assert_send(&store.authenticate_token("tern_x"));
    }
}
