//! The directory: local domains, accounts with their passwords, aliases, and the resolution of
//! a recipient address into local accounts and remote forwards.
//!
//! Passwords are hashed with Argon2id (the argon2 crate's default parameters) on the blocking
//! thread pool, never on an async worker, and at most one per CPU at a time. Setting a password also stores its SCRAM-SHA-256
//! keys (`scram.rs`), derived on the same blocking task. This module deliberately holds no policy: whether an
//! unknown user is answered 550, or who may relay, is the agents' business.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sqlx::Row;

use crate::mailbox::create_mailbox_in;
use crate::scram::ScramKeys;
use crate::{Error, Result, Store, now_ms, validate, with_pool, write_tx};

/// Locks the domain row for the rest of the transaction `$tx`, or returns `NotFound` from the
/// enclosing function. A no-op UPDATE is the portable way to do it: PostgreSQL takes the row
/// lock (so adding an account and an alias with the same address, or removing the domain
/// meanwhile, serialise), and on SQLite the transaction already holds the database write lock.
macro_rules! lock_domain {
    ($tx:ident, $domain:expr) => {{
        let domain: &str = $domain;
        let locked = sqlx::query("UPDATE domains SET created_at = created_at WHERE name = $1")
            .bind(domain)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        if locked == 0 {
            return Err(Error::NotFound(format!("domain {domain}")));
        }
    }};
}

/// A domain this system receives mail for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub created_at_ms: i64,
}

/// A mailbox owner. The password hash never leaves this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub address: String,
    pub domain: String,
    pub created_at_ms: i64,
}

/// `source` is `user@domain`, or `@domain` for the domain's catch-all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub source: String,
    pub targets: Vec<String>,
}

/// What a recipient address means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The domain is not one of ours: relay territory.
    NotLocalDomain,
    /// Our domain, but nobody (and no alias or catch-all) answers to the address.
    NoSuchUser,
    /// Deliver to these local accounts and forward to these remote addresses.
    Local {
        accounts: Vec<Account>,
        remote: Vec<String>,
    },
}

/// The mailboxes every new account gets, with their RFC 6154 special-use attributes.
const DEFAULT_MAILBOXES: [(&str, Option<&str>); 6] = [
    ("INBOX", None),
    ("Drafts", Some("\\Drafts")),
    ("Sent", Some("\\Sent")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
    ("Archive", Some("\\Archive")),
];

/// How deep alias chains are followed; deeper targets are ignored (and logged).
const MAX_ALIAS_DEPTH: usize = 10;

fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hash password: {e}")))
}

/// A real Argon2id hash, verified against when the user does not exist so that the answer
/// takes as long as for a real user with a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("tern dummy password").unwrap_or_else(|_| {
            // Hashing with default parameters and a fresh salt does not fail in practice; should
            // it, verifying against an unparsable string still costs a (shorter) parse.
            String::new()
        })
    })
}

fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Argon2 work (verifying or hashing a password) running at once in this process: one per
/// CPU. Each takes 19 MiB (the crate's default memory cost) and a core for its duration, so a
/// burst of logins — thousands of IMAP clients reconnecting after a restart — would otherwise
/// start as many blocking threads as there are logins, each leaving its 19 MiB in the
/// allocator's per-thread arenas: measured at 4–12 MB of resident memory per login that never
/// went back. Queued here, the burst costs time instead, the CPUs being the bound anyway.
fn argon2_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

/// Makes glibc give an Argon2 hash's 19 MiB back to the system when it is freed.
///
/// glibc serves a block this large with `mmap` and unmaps it on `free`, but by default it then
/// raises its mmap threshold to the size just freed (up to 32 MiB), so every later 19 MiB block
/// comes from the arena of the blocking thread that hashes, and stays there: measured at 360 MB
/// of resident memory kept by `tern-maa` after a burst of 64 logins, one arena per thread that
/// happened to hash. Setting the threshold explicitly turns that adjustment off; blocks of
/// 4 MiB and more (password hashes, large message bodies) are then always returned. Once per
/// process, before the first hash.
#[allow(unsafe_code)]
fn keep_large_blocks_out_of_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes a malloc tuning parameter; it is thread-safe.
            let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) };
            if ok != 1 {
                tracing::warn!("mallopt(M_MMAP_THRESHOLD) refused; hashes may stay resident");
            }
        });
    }
}

/// Runs password hashing off the async workers, at most [`argon2_permits`] at a time.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    keep_large_blocks_out_of_arenas();
    let _permit = argon2_permits()
        .acquire()
        .await
        .map_err(|e| Error::Internal(format!("argon2 permits: {e}")))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))
}

/// The Argon2id hash and the stored SCRAM keys of a new password, computed off the async workers.
async fn password_secrets(password: &str) -> Result<(String, String)> {
    let password = password.to_string();
    blocking(move || {
        let hash = hash_password(&password)?;
        Ok((hash, ScramKeys::for_password(&password).encode()))
    })
    .await?
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::Invalid("empty password".into()));
    }
    Ok(())
}

macro_rules! account_from_row {
    ($row:expr) => {
        Account {
            id: $row.try_get("id")?,
            address: $row.try_get("address")?,
            domain: $row.try_get("domain")?,
            created_at_ms: $row.try_get("created_at")?,
        }
    };
}

/// What one local address matches (see [`Store::resolve`]).
enum LocalMatch {
    Account(Account),
    Alias(Vec<String>),
    Nobody,
}

/// The local part without its detail (RFC 5233): `user` for `user+tag` when `delimiters`
/// holds '+'. The first delimiter found ends it; `None` when there is none, or when nothing
/// would be left before it (`+tag` is nobody's sub-address).
pub(crate) fn base_local_part<'a>(local: &'a str, delimiters: &str) -> Option<&'a str> {
    if delimiters.is_empty() {
        return None;
    }
    let at = local.find(|c: char| delimiters.contains(c))?;
    (at > 0).then(|| &local[..at])
}

fn split_targets(stored: &str) -> Vec<String> {
    stored
        .split('\n')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

impl Store {
    /// Adds a local domain. `Conflict` if it exists, `Invalid` if it is not a domain name.
    pub async fn add_domain(&self, name: &str) -> Result<Domain> {
        let name = validate::domain(name)?;
        let now = now_ms();
        let inserted = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "INSERT INTO domains (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&name)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(Error::Conflict(format!("domain {name} exists")));
        }
        Ok(Domain {
            name,
            created_at_ms: now,
        })
    }

    /// Removes a domain. `NotFound` if absent; `Conflict` while accounts or aliases use it.
    pub async fn remove_domain(&self, name: &str) -> Result<()> {
        let name = name.to_ascii_lowercase();
        write_tx!(self, |tx, _backend| {
            lock_domain!(tx, &name);
            let users: i64 = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM accounts WHERE domain = $1) \
                      + (SELECT COUNT(*) FROM aliases WHERE domain = $1) AS n",
            )
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if users > 0 {
                return Err(Error::Conflict(format!(
                    "domain {name} still has accounts or aliases"
                )));
            }
            sqlx::query("DELETE FROM domains WHERE name = $1")
                .bind(&name)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    pub async fn list_domains(&self) -> Result<Vec<Domain>> {
        with_pool!(self, |pool| {
            let rows = sqlx::query("SELECT name, created_at FROM domains ORDER BY name")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(Domain {
                        name: row.try_get("name")?,
                        created_at_ms: row.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    pub async fn is_local_domain(&self, name: &str) -> Result<bool> {
        let name = name.to_ascii_lowercase();
        with_pool!(self, |pool| {
            let row = sqlx::query("SELECT 1 FROM domains WHERE name = $1")
                .bind(&name)
                .fetch_optional(pool)
                .await?;
            Ok(row.is_some())
        })
    }

    /// Creates an account and its default mailboxes. `NotFound` if the domain is not local,
    /// `Conflict` if the address is taken by an account or an alias.
    pub async fn add_account(&self, address: &str, password: &str) -> Result<Account> {
        let (local, domain) = validate::address(address)?;
        check_password(password)?;
        let address = format!("{local}@{domain}");
        let (hash, scram) = password_secrets(password).await?;
        let now = now_ms();
        let id = write_tx!(self, |tx, _backend| {
            lock_domain!(tx, &domain);
            let alias = sqlx::query("SELECT 1 FROM aliases WHERE source = $1")
                .bind(&address)
                .fetch_optional(&mut *tx)
                .await?;
            if alias.is_some() {
                return Err(Error::Conflict(format!("{address} is an alias")));
            }
            let row = sqlx::query(
                "INSERT INTO accounts (address, domain, password_hash, scram_sha256, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&address)
            .bind(&domain)
            .bind(&hash)
            .bind(&scram)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(Error::Conflict(format!("account {address} exists")));
            };
            let id: i64 = row.try_get("id")?;
            for (name, special_use) in DEFAULT_MAILBOXES {
                create_mailbox_in!(tx, id, name, special_use, now);
                // The default folders start out subscribed (IMAP clients show only those).
                sqlx::query("INSERT INTO subscriptions (account_id, name) VALUES ($1, $2)")
                    .bind(id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            id
        });
        Ok(Account {
            id,
            address,
            domain,
            created_at_ms: now,
        })
    }

    /// Removes an account with its mailboxes, messages and delivery records.
    pub async fn remove_account(&self, address: &str) -> Result<()> {
        let address = address.to_ascii_lowercase();
        let removed = write_tx!(self, |tx, _backend| {
            // The foreign keys cascade to mailboxes, messages and deliveries.
            sqlx::query("DELETE FROM accounts WHERE address = $1")
                .bind(&address)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if removed == 0 {
            return Err(Error::NotFound(format!("account {address}")));
        }
        Ok(())
    }

    pub async fn set_password(&self, address: &str, password: &str) -> Result<()> {
        let address = address.to_ascii_lowercase();
        check_password(password)?;
        let (hash, scram) = password_secrets(password).await?;
        let updated = write_tx!(self, |tx, _backend| {
            sqlx::query(
                "UPDATE accounts SET password_hash = $1, scram_sha256 = $2 WHERE address = $3",
            )
            .bind(&hash)
            .bind(&scram)
            .bind(&address)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(Error::NotFound(format!("account {address}")));
        }
        Ok(())
    }

    /// Accounts ordered by address, optionally only those of one domain.
    pub async fn list_accounts(&self, domain: Option<&str>) -> Result<Vec<Account>> {
        let domain = domain.map(str::to_ascii_lowercase);
        with_pool!(self, |pool| {
            let rows = match &domain {
                Some(domain) => {
                    sqlx::query(
                        "SELECT id, address, domain, created_at FROM accounts \
                         WHERE domain = $1 ORDER BY address",
                    )
                    .bind(domain)
                    .fetch_all(pool)
                    .await?
                }
                None => {
                    sqlx::query(
                        "SELECT id, address, domain, created_at FROM accounts ORDER BY address",
                    )
                    .fetch_all(pool)
                    .await?
                }
            };
            rows.iter().map(|row| Ok(account_from_row!(row))).collect()
        })
    }

    pub async fn account(&self, address: &str) -> Result<Option<Account>> {
        let address = address.to_ascii_lowercase();
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT id, address, domain, created_at FROM accounts WHERE address = $1",
            )
            .bind(&address)
            .fetch_optional(pool)
            .await?;
            match row {
                Some(row) => Ok(Some(account_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    /// The account if `password` is right; `None` for a wrong password and for an unknown
    /// user alike, and both take one Argon2 verification so timing does not tell them apart.
    pub async fn authenticate(&self, address: &str, password: &str) -> Result<Option<Account>> {
        let address = address.to_ascii_lowercase();
        let found = with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT id, address, domain, created_at, password_hash FROM accounts \
                 WHERE address = $1",
            )
            .bind(&address)
            .fetch_optional(pool)
            .await?;
            match row {
                Some(row) => {
                    let hash: String = row.try_get("password_hash")?;
                    Some((account_from_row!(row), hash))
                }
                None => None,
            }
        });
        let password = password.to_string();
        match found {
            Some((account, hash)) => {
                let ok = blocking(move || verify_password(&password, &hash)).await?;
                Ok(ok.then_some(account))
            }
            None => {
                blocking(move || verify_password(&password, dummy_hash())).await?;
                Ok(None)
            }
        }
    }

    /// The SCRAM-SHA-256 keys of an account, for SMTP AUTH SCRAM-SHA-256. `None` for an
    /// unknown address and for an account whose password was last set before the keys were
    /// stored (migration 0005): such an account can use SCRAM once its password is set again.
    pub async fn scram_keys(&self, address: &str) -> Result<Option<ScramKeys>> {
        let address = address.to_ascii_lowercase();
        let stored: Option<String> = with_pool!(self, |pool| {
            let row = sqlx::query("SELECT scram_sha256 FROM accounts WHERE address = $1")
                .bind(&address)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => row.try_get("scram_sha256")?,
                None => None,
            }
        });
        stored.as_deref().map(ScramKeys::decode).transpose()
    }

    /// Adds an alias (or, with source `@domain`, a catch-all). The source's domain must be
    /// local (`NotFound`); `Conflict` if an account or alias already has that source.
    pub async fn add_alias(&self, source: &str, targets: &[String]) -> Result<Alias> {
        let (source, domain) = validate::alias_source(source)?;
        let mut canonical: Vec<String> = Vec::with_capacity(targets.len());
        for target in targets {
            let target = validate::normalize_address(target)?;
            if !canonical.contains(&target) {
                canonical.push(target);
            }
        }
        if canonical.is_empty() {
            return Err(Error::Invalid(format!("alias {source} has no targets")));
        }
        let stored = canonical.join("\n");
        let now = now_ms();
        write_tx!(self, |tx, _backend| {
            lock_domain!(tx, &domain);
            let account = sqlx::query("SELECT 1 FROM accounts WHERE address = $1")
                .bind(&source)
                .fetch_optional(&mut *tx)
                .await?;
            if account.is_some() {
                return Err(Error::Conflict(format!("{source} is an account")));
            }
            let inserted = sqlx::query(
                "INSERT INTO aliases (source, domain, targets, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&source)
            .bind(&domain)
            .bind(&stored)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(Error::Conflict(format!("alias {source} exists")));
            }
        });
        Ok(Alias {
            source,
            targets: canonical,
        })
    }

    pub async fn remove_alias(&self, source: &str) -> Result<()> {
        let source = source.to_ascii_lowercase();
        let removed = write_tx!(self, |tx, _backend| {
            sqlx::query("DELETE FROM aliases WHERE source = $1")
                .bind(&source)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if removed == 0 {
            return Err(Error::NotFound(format!("alias {source}")));
        }
        Ok(())
    }

    /// Aliases ordered by source, optionally only those of one domain.
    pub async fn list_aliases(&self, domain: Option<&str>) -> Result<Vec<Alias>> {
        let domain = domain.map(str::to_ascii_lowercase);
        with_pool!(self, |pool| {
            let rows = match &domain {
                Some(domain) => {
                    sqlx::query(
                        "SELECT source, targets FROM aliases WHERE domain = $1 ORDER BY source",
                    )
                    .bind(domain)
                    .fetch_all(pool)
                    .await?
                }
                None => {
                    sqlx::query("SELECT source, targets FROM aliases ORDER BY source")
                        .fetch_all(pool)
                        .await?
                }
            };
            rows.iter()
                .map(|row| {
                    let targets: String = row.try_get("targets")?;
                    Ok(Alias {
                        source: row.try_get("source")?,
                        targets: split_targets(&targets),
                    })
                })
                .collect()
        })
    }

    /// Resolves a recipient. Precedence, for each address: an account with exactly that
    /// address, then an alias with exactly that source; then, for a sub-address
    /// (`user+tag@domain`, see [`Store::with_recipient_delimiter`]), the account and then the
    /// alias `user@domain`; then the domain's catch-all (`@domain`). Local parts compare
    /// case-insensitively (everything is stored lowercase; RFC 5321 §2.4 leaves that to us).
    /// Alias targets are resolved the same way, recursively (at most [`MAX_ALIAS_DEPTH`]
    /// levels; an address already seen is skipped, which breaks loops), and accounts and
    /// remote targets are each listed once. A local target that resolves to nobody is dropped;
    /// if nothing at all is left the answer is `NoSuchUser`.
    pub async fn resolve(&self, address: &str) -> Result<Resolution> {
        let (local, domain) = validate::address(address)?;
        // The common case in one query: is the domain ours, and is there an account?
        let (is_local, direct) = self
            .domain_and_account(&domain, &format!("{local}@{domain}"))
            .await?;
        if !is_local {
            return Ok(Resolution::NotLocalDomain);
        }
        if let Some(account) = direct {
            return Ok(Resolution::Local {
                accounts: vec![account],
                remote: Vec::new(),
            });
        }
        let mut accounts: Vec<Account> = Vec::new();
        let mut remote: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        // Depth-first over (address, depth); a stack keeps it iterative (no boxed recursion).
        let mut stack: Vec<(String, String, usize)> = vec![(local, domain, 0)];
        while let Some((local, domain, depth)) = stack.pop() {
            let address = format!("{local}@{domain}");
            if !seen.insert(address.clone()) {
                continue;
            }
            if depth > 0 && !self.is_local_domain(&domain).await? {
                if !remote.contains(&address) {
                    remote.push(address);
                }
                continue;
            }
            let targets = match self.local_match(&local, &domain).await? {
                LocalMatch::Account(account) => {
                    if !accounts.iter().any(|a| a.id == account.id) {
                        accounts.push(account);
                    }
                    continue;
                }
                LocalMatch::Alias(targets) => targets,
                LocalMatch::Nobody => {
                    if depth > 0 {
                        tracing::warn!(
                            target_address = %address,
                            "store.resolve alias target has no account"
                        );
                    }
                    continue;
                }
            };
            if depth >= MAX_ALIAS_DEPTH {
                tracing::warn!(%address, "store.resolve alias chain too deep");
                continue;
            }
            // Pushed in reverse so that targets are visited, and listed, in stored order.
            for target in targets.iter().rev() {
                if let Ok((l, d)) = validate::address(target) {
                    stack.push((l, d, depth + 1));
                }
            }
        }
        if accounts.is_empty() && remote.is_empty() {
            return Ok(Resolution::NoSuchUser);
        }
        Ok(Resolution::Local { accounts, remote })
    }

    /// What one address of a local domain matches, in [`Store::resolve`]'s precedence order.
    async fn local_match(&self, local: &str, domain: &str) -> Result<LocalMatch> {
        let address = format!("{local}@{domain}");
        if let Some(account) = self.account(&address).await? {
            return Ok(LocalMatch::Account(account));
        }
        if let Some(targets) = self.alias_targets(&address).await? {
            return Ok(LocalMatch::Alias(targets));
        }
        if let Some(base) = base_local_part(local, &self.recipient_delimiter) {
            let base = format!("{base}@{domain}");
            if let Some(account) = self.account(&base).await? {
                return Ok(LocalMatch::Account(account));
            }
            if let Some(targets) = self.alias_targets(&base).await? {
                return Ok(LocalMatch::Alias(targets));
            }
        }
        if let Some(targets) = self.alias_targets(&format!("@{domain}")).await? {
            return Ok(LocalMatch::Alias(targets));
        }
        Ok(LocalMatch::Nobody)
    }

    /// Whether `domain` is local and the account with exactly `address`, in one round trip.
    async fn domain_and_account(
        &self,
        domain: &str,
        address: &str,
    ) -> Result<(bool, Option<Account>)> {
        with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT (SELECT 1 FROM domains WHERE name = $1) AS local, \
                        a.id, a.address, a.domain, a.created_at \
                 FROM (SELECT 1 AS one) AS q LEFT JOIN accounts a ON a.address = $2",
            )
            .bind(domain.to_ascii_lowercase())
            .bind(address.to_ascii_lowercase())
            .fetch_one(pool)
            .await?;
            let local: Option<i32> = row.try_get("local")?;
            let id: Option<i64> = row.try_get("id")?;
            let account = match id {
                Some(_) => Some(account_from_row!(row)),
                None => None,
            };
            Ok((local.is_some(), account))
        })
    }

    async fn alias_targets(&self, source: &str) -> Result<Option<Vec<String>>> {
        with_pool!(self, |pool| {
            let row = sqlx::query("SELECT targets FROM aliases WHERE source = $1")
                .bind(source)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => {
                    let targets: String = row.try_get("targets")?;
                    Ok(Some(split_targets(&targets)))
                }
                None => Ok(None),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::base_local_part;

    #[test]
    fn sub_address_base() {
        assert_eq!(base_local_part("user+tag", "+"), Some("user"));
        assert_eq!(base_local_part("user+a+b", "+"), Some("user"));
        assert_eq!(base_local_part("user-tag", "+-"), Some("user"));
        assert_eq!(base_local_part("user", "+"), None);
        assert_eq!(base_local_part("+tag", "+"), None);
        assert_eq!(base_local_part("user+tag", ""), None);
    }
}
