//! Failed-login throttling for SMTP AUTH and gRPC Basic auth: repeated failures from one client
//! address, or against one account, are answered more and more slowly and then refused outright
//! for a while without the password being checked at all.
//!
//! Each MSA process counts on its own, in memory: several MSA processes behind one name each
//! allow the configured number of failures, and a restart forgets every count. That is a
//! deliberate trade — the counters sit on the hot path of every failure and need no database —
//! and the stable `auth failed` / `auth blocked` log lines let fail2ban enforce a shared, longer
//! ban at the firewall. This module does not sleep or log by itself; `Submitter::authenticate`
//! does both, so the decisions here are plain functions of the clock and testable as such.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// The `auth_limits` section of the MSA's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthLimits {
    /// Failures answered at once; each one beyond waits 1 s, 2 s, 4 s … before its 535.
    pub free_failures: u32,
    /// The longest wait before a 535.
    pub max_delay_secs: u64,
    /// After this many failures within `window_secs` the client address or account is blocked.
    pub block_after: u32,
    /// Failures older than this are forgotten.
    pub window_secs: u64,
    /// How long a block lasts; every AUTH meanwhile gets `454 4.7.0`.
    pub block_secs: u64,
    /// At most this many client addresses and accounts are tracked at once, so that failures
    /// under ever new names cannot grow the table without limit.
    pub max_tracked: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            free_failures: 3,
            max_delay_secs: 8,
            block_after: 10,
            window_secs: 15 * 60,
            block_secs: 15 * 60,
            max_tracked: 10_000,
        }
    }
}

/// What is counted: failures from one client address, and failures naming one account (the
/// latter also covers attackers who spread one account's guesses over many addresses).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Ip(IpAddr),
    Account(String),
}

impl Key {
    /// The field value for the `auth blocked` log line.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Ip(_) => "client.address",
            Key::Account(_) => "user",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    /// The first failure of the current window.
    since: Instant,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// The answer to one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How long to wait before answering 535.
    pub delay: Duration,
    /// The keys whose block starts with this failure (to be logged once).
    pub blocked: Vec<Key>,
}

/// Per-process failed-login counters (see the module comment).
#[derive(Debug)]
pub struct Throttle {
    limits: AuthLimits,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Throttle {
    pub fn new(limits: AuthLimits) -> Self {
        Self {
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: Option<IpAddr>, user: &str) -> Vec<Key> {
        let mut keys = Vec::with_capacity(2);
        if let Some(ip) = ip {
            keys.push(Key::Ip(ip));
        }
        // Addresses are case-insensitive in the directory, so guesses at "Bob@" and "bob@"
        // count against the same account.
        keys.push(Key::Account(user.to_ascii_lowercase()));
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that
        // matters (each update is a few field writes), so a poisoned lock is simply reused.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Before checking a password: `Some(key)` when the client address or the account is
    /// blocked now, in which case the attempt must be refused without looking at the password.
    pub fn blocked(&self, ip: Option<IpAddr>, user: &str) -> Option<Key> {
        let now = Instant::now();
        let entries = self.lock();
        Self::keys(ip, user).into_iter().find(|key| {
            entries
                .get(key)
                .and_then(|e| e.blocked_until)
                .is_some_and(|until| now < until)
        })
    }

    /// Records a failed attempt and says how long to wait and whether a block starts.
    pub fn failure(&self, ip: Option<IpAddr>, user: &str) -> Failure {
        let now = Instant::now();
        let window = Duration::from_secs(self.limits.window_secs);
        let mut entries = self.lock();
        let mut worst = 0u32;
        let mut blocked = Vec::new();
        for key in Self::keys(ip, user) {
            if !entries.contains_key(&key) {
                self.make_room(&mut entries, now);
            }
            let entry = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                since: now,
                last: now,
                blocked_until: None,
            });
            let block_over = entry.blocked_until.is_some_and(|until| now >= until);
            if block_over || now.duration_since(entry.since) > window {
                *entry = Entry {
                    failures: 0,
                    since: now,
                    last: now,
                    blocked_until: None,
                };
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last = now;
            if entry.blocked_until.is_none() && entry.failures >= self.limits.block_after {
                entry.blocked_until = Some(now + Duration::from_secs(self.limits.block_secs));
                blocked.push(key);
            }
            worst = worst.max(entry.failures);
        }
        Failure {
            delay: self.delay_for(worst),
            blocked,
        }
    }

    /// A successful login forgets the failures of that client address and that account.
    pub fn success(&self, ip: Option<IpAddr>, user: &str) {
        let mut entries = self.lock();
        for key in Self::keys(ip, user) {
            entries.remove(&key);
        }
    }

    /// The wait before answering the `failures`-th failure in a row: none for the first
    /// `free_failures`, then doubling from one second up to `max_delay_secs`.
    pub fn delay_for(&self, failures: u32) -> Duration {
        let Some(beyond) = failures.checked_sub(self.limits.free_failures + 1) else {
            return Duration::ZERO;
        };
        let secs = 1u64
            .checked_shl(beyond)
            .unwrap_or(u64::MAX)
            .min(self.limits.max_delay_secs);
        Duration::from_secs(secs)
    }

    /// Keeps the table below `max_tracked` before a new key goes in: expired entries go first;
    /// if the table is still full, the entry whose last failure is oldest makes way. An
    /// attacker would need more than `max_tracked` fresh names within one window to push a
    /// victim's counter out, and every one of those failures is itself counted per address.
    fn make_room(&self, entries: &mut HashMap<Key, Entry>, now: Instant) {
        if entries.len() < self.limits.max_tracked.max(1) {
            return;
        }
        let window = Duration::from_secs(self.limits.window_secs);
        entries.retain(|_, e| match e.blocked_until {
            Some(until) => now < until,
            None => now.duration_since(e.since) <= window,
        });
        while entries.len() >= self.limits.max_tracked.max(1) {
            let oldest = entries
                .iter()
                .filter(|(_, e)| e.blocked_until.is_none())
                .min_by_key(|(_, e)| e.last)
                .or_else(|| entries.iter().min_by_key(|(_, e)| e.last))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    entries.remove(&key);
                }
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AuthLimits {
        AuthLimits {
            free_failures: 3,
            max_delay_secs: 8,
            block_after: 10,
            window_secs: 900,
            block_secs: 900,
            max_tracked: 100,
        }
    }

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

    #[tokio::test(start_paused = true)]
    async fn delays_grow_then_the_address_and_account_are_blocked() {
        let t = Throttle::new(limits());
        let delays: Vec<u64> = (0..9)
            .map(|_| t.failure(IP, "bob@example.org").delay.as_secs())
            .collect();
        assert_eq!(delays, [0, 0, 0, 1, 2, 4, 8, 8, 8]);
        assert_eq!(t.blocked(IP, "bob@example.org"), None);
        let tenth = t.failure(IP, "bob@example.org");
        assert_eq!(
            tenth.blocked,
            [Key::Ip(IP.unwrap()), Key::Account("bob@example.org".into())]
        );
        // Blocked for the address even when it tries another account, and for the account
        // from any other address.
        assert_eq!(t.blocked(IP, "eve@example.org"), Some(Key::Ip(IP.unwrap())));
        assert_eq!(
            t.blocked(None, "BOB@example.org"),
            Some(Key::Account("bob@example.org".into()))
        );
        // A further failure during the block does not announce it again.
        assert!(t.failure(IP, "bob@example.org").blocked.is_empty());
        tokio::time::advance(Duration::from_secs(899)).await;
        assert!(t.blocked(IP, "bob@example.org").is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.blocked(IP, "bob@example.org"), None);
        // After the block the count starts again from nothing.
        assert_eq!(t.failure(IP, "bob@example.org").delay, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_are_forgotten() {
        let t = Throttle::new(limits());
        for _ in 0..9 {
            t.failure(IP, "bob@example.org");
        }
        tokio::time::advance(Duration::from_secs(901)).await;
        let f = t.failure(IP, "bob@example.org");
        assert_eq!(f.delay, Duration::ZERO);
        assert!(f.blocked.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_both_counters() {
        let t = Throttle::new(limits());
        for _ in 0..6 {
            t.failure(IP, "bob@example.org");
        }
        t.success(IP, "bob@example.org");
        assert_eq!(t.failure(IP, "bob@example.org").delay, Duration::ZERO);
        assert_eq!(t.tracked(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_guessing_many_accounts_is_blocked_by_address() {
        let t = Throttle::new(limits());
        let mut last = None;
        for i in 0..10 {
            last = Some(t.failure(IP, &format!("user{i}@example.org")));
        }
        assert_eq!(last.unwrap().blocked, [Key::Ip(IP.unwrap())]);
        assert!(t.blocked(IP, "anyone@example.org").is_some());
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(t.blocked(other, "user1@example.org"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_never_grows_beyond_its_bound_and_keeps_blocks() {
        let t = Throttle::new(AuthLimits {
            max_tracked: 10,
            block_after: 2,
            ..limits()
        });
        // Blocks the account "victim@" (and the address, which is dropped from the test by
        // using no address below).
        t.failure(None, "victim@example.org");
        t.failure(None, "victim@example.org");
        for i in 0..1000 {
            tokio::time::advance(Duration::from_millis(1)).await;
            t.failure(None, &format!("junk{i}@example.org"));
            assert!(t.tracked() <= 10);
        }
        assert!(t.blocked(None, "victim@example.org").is_some());
    }

    #[test]
    fn delay_is_capped_for_huge_counts() {
        let t = Throttle::new(limits());
        assert_eq!(t.delay_for(u32::MAX), Duration::from_secs(8));
        assert_eq!(t.delay_for(0), Duration::ZERO);
    }
}
