//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as SMTP AUTH carries it (RFC 4954):
//! parsing the client's two messages, writing the server's two, and checking the client's
//! proof against the stored keys in constant time.
//!
//! The server never sees or keeps a password: an account's credentials are the salt, the
//! iteration count, StoredKey and ServerKey (RFC 5802 §3), which the store derives when the
//! password is set. Channel binding is not offered (no SCRAM-SHA-256-PLUS), so the only GS2
//! headers accepted are `n,…` and `y,…`; a client asking for binding with `p=` is refused.
//!
//! Deliberately absent: I/O and storage (the [`Handler`](crate::Handler) supplies the keys and
//! hears the outcome); SASLprep (RFC 4013) of user names and passwords, which the store does
//! not apply either — passwords are their UTF-8 octets, which is what SASLprep leaves of every
//! ASCII password; SCRAM-SHA-1. The one thing this module takes from outside is randomness
//! (the thread RNG), for server nonces and for the key behind the made-up credentials of
//! unknown users.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sasl::BASE64;

/// RFC 7677 §4: at least 4096 iterations; also what the made-up credentials of unknown users
/// claim, so that they look like everyone else's.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of the made-up credentials, the same as the store's.
const FAKE_SALT_OCTETS: usize = 16;

/// Random octets in the server's part of the nonce (base64-encoded on the wire): well above
/// the 18 octets RFC 5802 §5.1 implies for unpredictability.
const SERVER_NONCE_OCTETS: usize = 24;

/// The SCRAM-SHA-256 credentials of one account (RFC 5802 §3). They let the server check a
/// proof, but not log in as the user: that needs ClientKey, which only the password gives.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramCredentials {
    /// The keys stay out of logs; they are as good as a password hash to a guesser.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredentials {
    /// Derives the credentials from a password (RFC 5802 §3): SaltedPassword =
    /// PBKDF2-HMAC-SHA-256(password, salt, i), StoredKey = H(HMAC(SaltedPassword,
    /// "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key"). Expensive by design.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramCredentials {
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramCredentials {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Why a client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramError {
    /// Not a well-formed message (RFC 4954 §4: 501 5.5.2), including a mandatory extension
    /// (`m=`), which RFC 5802 §5.1 says must fail since none is defined.
    Malformed,
    /// The client asked for channel binding (`p=`), which is not offered (RFC 5802 §6:
    /// the server must fail the exchange).
    ChannelBindingRequested,
}

/// The client-first-message (RFC 5802 §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    /// `n,,` or `y,,`, with the authzid between the commas if one was given: the client must
    /// send exactly this back, base64-encoded, in `c=`.
    gs2_header: String,
    /// The authorization identity (`a=`), empty when absent.
    pub(crate) authzid: String,
    /// The authentication identity (`n=`), unescaped.
    pub(crate) username: String,
    client_nonce: String,
    /// The message without its GS2 header, as sent: part of the AuthMessage.
    bare: String,
}

/// Reads a client-first-message: `gs2-header client-first-message-bare`.
pub(crate) fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed)?;
    let mut parts = text.splitn(3, ',');
    let (Some(flag), Some(raw_authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramError::Malformed);
    };
    match flag {
        // "y": the client could bind but believes the server cannot, which is true here.
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingRequested),
        _ => return Err(ScramError::Malformed),
    }
    let authzid = match raw_authzid {
        "" => String::new(),
        _ => saslname(
            raw_authzid
                .strip_prefix("a=")
                .ok_or(ScramError::Malformed)?,
        )?,
    };
    let mut attributes = bare.split(',');
    let username = match attributes.next() {
        Some(first) if first.starts_with("m=") => return Err(ScramError::Malformed),
        Some(first) => saslname(first.strip_prefix("n=").ok_or(ScramError::Malformed)?)?,
        None => return Err(ScramError::Malformed),
    };
    let client_nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|nonce| is_nonce(nonce))
        .ok_or(ScramError::Malformed)?;
    check_extensions(attributes)?;
    Ok(ClientFirst {
        gs2_header: format!("{flag},{raw_authzid},"),
        authzid,
        username,
        client_nonce: client_nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

/// RFC 5802 §7: `saslname` escapes "," as "=2C" and "=" as "=3D"; any other "=" fails the
/// exchange, and so does an empty name.
fn saslname(escaped: &str) -> Result<String, ScramError> {
    let mut name = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        name.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).ok_or(ScramError::Malformed)?;
        match escape {
            "=2C" => name.push(','),
            "=3D" => name.push('='),
            _ => return Err(ScramError::Malformed),
        }
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    if name.is_empty() || name.contains('\0') {
        return Err(ScramError::Malformed);
    }
    Ok(name)
}

/// RFC 5802 §7: a nonce is printable ASCII without ",".
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Optional extensions (`x=value`, one letter) are allowed after the defined attributes and
/// ignored; anything else is malformed.
fn check_extensions<'a>(attributes: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for attribute in attributes {
        let mut chars = attribute.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.next() == Some('=')
            && !attribute.starts_with("m=");
        if !well_formed {
            return Err(ScramError::Malformed);
        }
    }
    Ok(())
}

/// How the client-final-message ended the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The proof is right: send this server-final-message (`v=…`).
    Verified { server_final: String },
    /// Wrong proof, nonce or channel binding, or an unknown user: authentication fails.
    Failed,
}

/// An exchange between the server-first-message and the client-final-message.
pub(crate) struct Exchange {
    first: ClientFirst,
    /// The whole nonce: the client's part followed by the server's.
    nonce: String,
    server_first: String,
    credentials: ScramCredentials,
    /// False when the credentials were made up for an unknown user: the proof then fails
    /// whatever it is.
    known: bool,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("username", &self.first.username)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts the exchange for `first` with the account's credentials, or with made-up ones
    /// when the user is unknown (`None`), using a fresh random server nonce.
    pub(crate) fn start(first: ClientFirst, credentials: Option<ScramCredentials>) -> Exchange {
        let server_nonce = STANDARD.encode(rand::random::<[u8; SERVER_NONCE_OCTETS]>());
        Exchange::with_nonce(first, credentials, &server_nonce)
    }

    /// [`Exchange::start`] with a given server nonce (printable, without ","), for tests.
    pub(crate) fn with_nonce(
        first: ClientFirst,
        credentials: Option<ScramCredentials>,
        server_nonce: &str,
    ) -> Exchange {
        let known = credentials.is_some();
        let credentials = credentials.unwrap_or_else(|| fake_credentials(&first.username));
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credentials.salt),
            credentials.iterations
        );
        Exchange {
            first,
            nonce,
            server_first,
            credentials,
            known,
        }
    }

    /// The server-first-message: `r=nonce,s=salt,i=iterations`.
    pub(crate) fn server_first(&self) -> &str {
        &self.server_first
    }

    pub(crate) fn authzid(&self) -> &str {
        &self.first.authzid
    }

    pub(crate) fn username(&self) -> &str {
        &self.first.username
    }

    /// Checks the client-final-message: `c=` must repeat the GS2 header, `r=` the whole
    /// nonce, and `p=` must prove knowledge of ClientKey (RFC 5802 §3):
    /// H(p XOR HMAC(StoredKey, AuthMessage)) == StoredKey, compared in constant time.
    pub(crate) fn finish(&self, message: &[u8]) -> Result<Outcome, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed)?;
        // RFC 5802 §7: the proof is the last attribute, and the AuthMessage covers
        // everything before it.
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed)?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed)?;
        check_extensions(attributes)?;
        let binding = BASE64.decode(binding).map_err(|_| ScramError::Malformed)?;
        let proof: [u8; 32] = BASE64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed)?;
        if binding != self.first.gs2_header.as_bytes() || nonce != self.nonce {
            return Ok(Outcome::Failed);
        }
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let client_signature = hmac(&self.credentials.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (octet, signature) in client_key.iter_mut().zip(client_signature) {
            *octet ^= signature;
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let matches: bool = stored_key.ct_eq(&self.credentials.stored_key).into();
        if !(matches && self.known) {
            return Ok(Outcome::Failed);
        }
        let signature = hmac(&self.credentials.server_key, auth_message.as_bytes());
        Ok(Outcome::Verified {
            server_final: format!("v={}", STANDARD.encode(signature)),
        })
    }
}

/// Credentials for a user the handler does not know, so that the server-first-message does
/// not give that away (RFC 5802 §9 suggests this): the salt is the same on every attempt for
/// one name, like a real account's, and the keys match no password. They come from a key drawn
/// once per process, so one server answers the same name with the same salt until it restarts.
fn fake_credentials(username: &str) -> ScramCredentials {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let derive = |label: &str| hmac(key, format!("{label}\0{username}").as_bytes());
    ScramCredentials {
        iterations: DEFAULT_ITERATIONS,
        salt: derive("salt")[..FAKE_SALT_OCTETS].to_vec(),
        stored_key: derive("stored"),
        server_key: derive("server"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The client side of the exchange, for the tests here and the session transcripts.
    pub(crate) fn client_final(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        gs2_header: &str,
    ) -> (String, String) {
        let mut salt = None;
        let mut iterations = None;
        let mut nonce = None;
        for attribute in server_first.split(',') {
            if let Some(s) = attribute.strip_prefix("s=") {
                salt = Some(STANDARD.decode(s).unwrap());
            } else if let Some(i) = attribute.strip_prefix("i=") {
                iterations = Some(i.parse::<u32>().unwrap());
            } else if let Some(r) = attribute.strip_prefix("r=") {
                nonce = Some(r.to_owned());
            }
        }
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(
            password.as_bytes(),
            &salt.unwrap(),
            iterations.unwrap(),
        );
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={},r={}", STANDARD.encode(gs2_header), nonce.unwrap());
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            format!("v={}", STANDARD.encode(server_signature)),
        )
    }

    /// RFC 7677 §3: the example exchange for user "user", password "pencil".
    #[test]
    fn rfc7677_test_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credentials = ScramCredentials::derive("pencil", &salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.username, "user");
        assert_eq!(first.authzid, "");
        let exchange =
            Exchange::with_nonce(first, Some(credentials), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(
            exchange.server_first(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let rfc_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.finish(rfc_final),
            Ok(Outcome::Verified {
                server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_owned()
            })
        );
        // One bit off in the proof fails.
        let mut wrong = rfc_final.to_vec();
        let at = wrong.len() - 3;
        wrong[at] = b'W';
        assert_eq!(exchange.finish(&wrong), Ok(Outcome::Failed));
        // The test client computes the same messages.
        let (ours, v) = client_final(
            "pencil",
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            exchange.server_first(),
            "n,,",
        );
        assert_eq!(ours.as_bytes(), rfc_final);
        assert_eq!(v, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn client_first_messages() {
        let first = parse_client_first(b"y,a=al=3Dice=2C,n=b=2Cob,r=abc,x=ext").unwrap();
        assert_eq!(first.authzid, "al=ice,");
        assert_eq!(first.username, "b,ob");
        assert_eq!(first.gs2_header, "y,a=al=3Dice=2C,");
        assert_eq!(first.bare, "n=b=2Cob,r=abc,x=ext");
        for malformed in [
            &b""[..],
            b"n,,",
            b"n,,n=user",
            b"n,,r=abc,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=3er,r=abc",
            b"n,,n=user,r=a,b",
            b"n,,n=user,r=",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user,r=abc,m=ext",
            b"n,,n=user,r=abc,bogus",
            b"n,b=x,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"n,,n=\xff,r=abc",
        ] {
            assert_eq!(
                parse_client_first(malformed),
                Err(ScramError::Malformed),
                "{}",
                String::from_utf8_lossy(malformed)
            );
        }
        assert_eq!(
            parse_client_first(b"p=tls-server-end-point,,n=user,r=abc"),
            Err(ScramError::ChannelBindingRequested)
        );
    }

    #[test]
    fn client_final_checks_binding_nonce_and_form() {
        let credentials = ScramCredentials::derive("pw", b"salt", 16);
        let first = parse_client_first(b"n,a=user,n=user,r=cnonce").unwrap();
        let exchange = Exchange::with_nonce(first, Some(credentials), "snonce");
        let (good, v) = client_final(
            "pw",
            "n=user,r=cnonce",
            exchange.server_first(),
            "n,a=user,",
        );
        assert_eq!(
            exchange.finish(good.as_bytes()),
            Ok(Outcome::Verified { server_final: v })
        );
        let (wrong_password, _) = client_final(
            "wrong",
            "n=user,r=cnonce",
            exchange.server_first(),
            "n,a=user,",
        );
        assert_eq!(
            exchange.finish(wrong_password.as_bytes()),
            Ok(Outcome::Failed)
        );
        // The header without the authzid is not what the client first sent.
        let (wrong_binding, _) =
            client_final("pw", "n=user,r=cnonce", exchange.server_first(), "n,,");
        assert_eq!(
            exchange.finish(wrong_binding.as_bytes()),
            Ok(Outcome::Failed)
        );
        let replayed = good.replace("r=cnoncesnonce", "r=cnonceother");
        assert_eq!(exchange.finish(replayed.as_bytes()), Ok(Outcome::Failed));
        for malformed in [
            "",
            "c=biws,r=cnoncesnonce",
            "r=cnoncesnonce,c=biws,p=AAAA",
            "c=biws,r=cnoncesnonce,p=AAAA",
            "c=!!,r=cnoncesnonce,p=AAAA",
        ] {
            assert_eq!(
                exchange.finish(malformed.as_bytes()),
                Err(ScramError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn unknown_users_get_a_stable_salt_and_always_fail() {
        let first = || parse_client_first(b"n,,n=ghost,r=cnonce").unwrap();
        let one = Exchange::start(first(), None);
        let two = Exchange::start(first(), None);
        let salt = |e: &Exchange| e.server_first().split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&one), salt(&two));
        assert!(one.server_first().ends_with(",i=4096"));
        let other = Exchange::start(parse_client_first(b"n,,n=other,r=cnonce").unwrap(), None);
        assert_ne!(salt(&one), salt(&other));
        // Fresh nonces, of at least 18 random octets.
        assert_ne!(one.nonce, two.nonce);
        assert!(one.nonce.len() >= "cnonce".len() + 24);
        let (proof, _) = client_final("anything", "n=ghost,r=cnonce", one.server_first(), "n,,");
        assert_eq!(one.finish(proof.as_bytes()), Ok(Outcome::Failed));
    }

    #[test]
    fn debug_output_hides_keys() {
        let credentials = ScramCredentials::derive("pw", b"salt", 1);
        let debug = format!("{credentials:?}");
        assert!(
            !debug.contains("stored_key") && !debug.contains("server_key"),
            "{debug}"
        );
    }
}
