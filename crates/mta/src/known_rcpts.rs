//! Recipients port 25 has recently found local, remembered for a moment so that a burst of
//! mail to the same addresses (a list, a popular account) asks the directory once per
//! [`KNOWN_FOR`] instead of once per RCPT.
//!
//! Only positive answers are kept: an account created a moment ago is never refused because of
//! the cache. An account removed within the window may still be accepted; the MDA resolves
//! every recipient again at delivery and that message bounces, as it would have had the
//! account gone a moment later. The map is bounded ([`MAX_KNOWN`]); when full it is cleared.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// How long a recipient found local is taken as local without asking again.
pub const KNOWN_FOR: Duration = Duration::from_secs(2);

/// Addresses remembered at most.
pub const MAX_KNOWN: usize = 10_000;

#[derive(Default)]
pub struct KnownRecipients {
    until: Mutex<HashMap<String, Instant>>,
}

impl KnownRecipients {
    /// Whether `address` was found local less than [`KNOWN_FOR`] ago.
    pub fn contains(&self, address: &str) -> bool {
        let key = address.to_ascii_lowercase();
        let mut map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers that the directory found `address` local just now.
    pub fn insert(&self, address: &str) {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KNOWN {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_KNOWN {
                map.clear();
            }
        }
        map.insert(address.to_ascii_lowercase(), now + KNOWN_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remembered_for_a_moment_case_insensitively() {
        let known = KnownRecipients::default();
        assert!(!known.contains("bob@example.test"));
        known.insert("Bob@Example.test");
        assert!(known.contains("bob@example.test"));
        assert!(known.contains("BOB@EXAMPLE.TEST"));
        assert!(!known.contains("carol@example.test"));
        tokio::time::advance(KNOWN_FOR - Duration::from_millis(1)).await;
        assert!(known.contains("bob@example.test"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!known.contains("bob@example.test"), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn bounded() {
        let known = KnownRecipients::default();
        for i in 0..MAX_KNOWN {
            known.insert(&format!("u{i}@example.test"));
        }
        // Full of live entries: cleared, then the new one kept.
        known.insert("new@example.test");
        assert!(known.contains("new@example.test"));
        assert!(!known.contains("u0@example.test"));
        assert_eq!(known.until.lock().unwrap().len(), 1);

        // Full of expired entries: they go, the live ones stay.
        for i in 0..MAX_KNOWN - 1 {
            known.insert(&format!("v{i}@example.test"));
        }
        tokio::time::advance(KNOWN_FOR).await;
        known.insert("live@example.test");
        known.insert("late@example.test");
        assert!(known.contains("live@example.test"));
        assert_eq!(known.until.lock().unwrap().len(), 2);
    }
}
