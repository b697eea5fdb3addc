//! SCRAM-SHA-256 keys (RFC 5802 §3, RFC 7677), derived when a password is set and kept in
//! `accounts.scram_sha256` as `iterations:salt:StoredKey:ServerKey` (the last three base64).
//!
//! Only the keys are kept: they let a server check a SCRAM proof, but logging in with them
//! needs ClientKey, which only the password gives. The exchange itself is `tern_smtp`'s
//! business; the ten lines of key derivation are repeated here rather than making the store
//! depend on a protocol crate, and `rfc7677_test_vector` below holds both to the RFC's example.
//! No SASLprep: the password's UTF-8 octets are used as they are, as the SMTP side assumes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// RFC 7677 §4 asks for at least 4096; it is also PostgreSQL's choice. A client computes
/// PBKDF2 with this count at every login, so it is not the place for Argon2-like cost.
pub(crate) const ITERATIONS: u32 = 4096;

const SALT_OCTETS: usize = 16;

/// The SCRAM-SHA-256 credentials of one account. `Debug` leaves the keys out.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

impl ScramKeys {
    /// SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i); StoredKey =
    /// H(HMAC(SaltedPassword, "Client Key")); ServerKey = HMAC(SaltedPassword, "Server Key").
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramKeys {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Keys for a new password with a fresh random salt. Expensive: call it off the async
    /// workers, as the Argon2 hashing is.
    pub(crate) fn for_password(password: &str) -> ScramKeys {
        ScramKeys::derive(password, &rand::random::<[u8; SALT_OCTETS]>(), ITERATIONS)
    }

    /// The stored form: `iterations:salt:StoredKey:ServerKey`.
    pub(crate) fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// Reads the stored form back; anything else is a damaged row.
    pub(crate) fn decode(stored: &str) -> Result<ScramKeys> {
        let damaged = || Error::Internal("unreadable scram_sha256 value".into());
        let mut parts = stored.split(':');
        let (Some(iterations), Some(salt), Some(stored_key), Some(server_key), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(damaged());
        };
        let key = |b64: &str| -> Result<[u8; 32]> {
            STANDARD
                .decode(b64)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(damaged)
        };
        Ok(ScramKeys {
            iterations: iterations
                .parse()
                .ok()
                .filter(|&i| i > 0)
                .ok_or_else(damaged)?,
            salt: STANDARD
                .decode(salt)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(damaged)?,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil". The keys must produce the RFC's client
    /// proof and server signature for its AuthMessage.
    #[test]
    fn rfc7677_test_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ScramKeys::derive("pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&client_key)),
            keys.stored_key
        );
        assert_eq!(
            STANDARD.encode(hmac(&keys.server_key, auth_message.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn stored_form_round_trips_and_damage_is_an_error() {
        let keys = ScramKeys::derive("pw", b"0123456789abcdef", 4096);
        let stored = keys.encode();
        assert!(
            stored.starts_with("4096:MDEyMzQ1Njc4OWFiY2RlZg==:"),
            "{stored}"
        );
        assert_eq!(ScramKeys::decode(&stored).unwrap(), keys);
        for damaged in [
            "",
            "4096:c2FsdA==:AAAA:AAAA",
            "0:c2FsdA==:AAAA:AAAA",
            "x:y:z",
            &format!("{stored}:extra"),
        ] {
            assert!(ScramKeys::decode(damaged).is_err(), "{damaged}");
        }
        let fresh = ScramKeys::for_password("pw");
        assert_eq!(fresh.iterations, ITERATIONS);
        assert_eq!(fresh.salt.len(), SALT_OCTETS);
        assert_ne!(fresh.salt, ScramKeys::for_password("pw").salt);
        assert!(!format!("{keys:?}").contains("key:"));
    }
}
