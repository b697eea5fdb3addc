//! Transcript tests: client lines in, server lines out, over an in-memory backend. Each
//! transcript is also fed byte by byte, and random garbage in random chunk sizes must never
//! panic or stop the session from answering.

use std::collections::BTreeMap;

use crate::{
    Action, AuthOutcome, Backend, BackendError, Config, Output, Quota, ScriptEntry, Session,
};

#[derive(Default)]
struct Memory {
    user: Option<String>,
    scripts: BTreeMap<String, String>,
    active: Option<String>,
    /// Every store call fails with TRYLATER.
    broken: bool,
}

fn store<T>(m: &Memory, f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    if m.broken {
        return Err(BackendError::TryLater("store down".into()));
    }
    f()
}

impl Backend for Memory {
    async fn authenticate(&mut self, authzid: &str, user: &str, password: &str) -> AuthOutcome {
        if user == "blocked" {
            return AuthOutcome::Blocked;
        }
        if user == "down" {
            return AuthOutcome::TryLater;
        }
        if (authzid.is_empty() || authzid == user) && user == "bob" && password == "pw" {
            self.user = Some(user.to_string());
            AuthOutcome::Success
        } else {
            AuthOutcome::Failed
        }
    }
    fn unauthenticate(&mut self) {
        self.user = None;
    }
    fn owner(&self) -> Option<String> {
        self.user.clone()
    }
    fn check(&mut self, source: &str) -> Result<(), String> {
        match source.lines().position(|l| l.contains("bad")) {
            Some(n) => Err(format!("line {}: syntax error", n + 1)),
            None => Ok(()),
        }
    }
    async fn list(&mut self) -> Result<Vec<ScriptEntry>, BackendError> {
        store(self, || {
            Ok(self
                .scripts
                .keys()
                .map(|n| ScriptEntry {
                    name: n.clone(),
                    active: self.active.as_deref() == Some(n),
                })
                .collect())
        })
    }
    async fn get(&mut self, name: &str) -> Result<String, BackendError> {
        store(self, || {
            self.scripts
                .get(name)
                .cloned()
                .ok_or(BackendError::NonExistent)
        })
    }
    async fn put(&mut self, name: &str, source: &str) -> Result<(), BackendError> {
        if self.broken {
            return Err(BackendError::TryLater("down".into()));
        }
        if !self.scripts.contains_key(name) && self.scripts.len() >= 3 {
            return Err(BackendError::Quota(Quota::MaxScripts, "3 scripts".into()));
        }
        self.scripts.insert(name.to_string(), source.to_string());
        Ok(())
    }
    async fn set_active(&mut self, name: Option<&str>) -> Result<(), BackendError> {
        if let Some(n) = name
            && !self.scripts.contains_key(n)
        {
            return Err(BackendError::NonExistent);
        }
        self.active = name.map(str::to_string);
        Ok(())
    }
    async fn delete(&mut self, name: &str) -> Result<(), BackendError> {
        if self.active.as_deref() == Some(name) {
            return Err(BackendError::Active);
        }
        self.scripts
            .remove(name)
            .map(|_| ())
            .ok_or(BackendError::NonExistent)
    }
    async fn rename(&mut self, old: &str, new: &str) -> Result<(), BackendError> {
        if self.scripts.contains_key(new) {
            return Err(BackendError::AlreadyExists);
        }
        let s = self.scripts.remove(old).ok_or(BackendError::NonExistent)?;
        self.scripts.insert(new.to_string(), s);
        if self.active.as_deref() == Some(old) {
            self.active = Some(new.to_string());
        }
        Ok(())
    }
    async fn have_space(&mut self, name: &str, _size: u64) -> Result<(), BackendError> {
        if !self.scripts.contains_key(name) && self.scripts.len() >= 3 {
            return Err(BackendError::Quota(Quota::MaxScripts, "3 scripts".into()));
        }
        Ok(())
    }
}

fn config() -> Config {
    Config {
        implementation: "Tern".into(),
        sieve_extensions: "fileinto vacation".into(),
        max_redirects: Some(4),
        tls_available: true,
        login_requires_tls: true,
        max_failed_logins: 3,
        max_errors: 10,
        max_line: 200,
        max_script_size: 100,
    }
}

const CAPS_PLAIN: &str = "\"IMPLEMENTATION\" \"Tern\"\r\n\"SASL\" \"\"\r\n\"SIEVE\" \"fileinto vacation\"\r\n\"STARTTLS\"\r\n\"MAXREDIRECTS\" \"4\"\r\n\"UNAUTHENTICATE\"\r\n\"VERSION\" \"1.0\"\r\n";
const CAPS_TLS: &str = "\"IMPLEMENTATION\" \"Tern\"\r\n\"SASL\" \"PLAIN\"\r\n\"SIEVE\" \"fileinto vacation\"\r\n\"MAXREDIRECTS\" \"4\"\r\n\"UNAUTHENTICATE\"\r\n\"VERSION\" \"1.0\"\r\n";

/// base64("\0bob\0pw")
const BOB: &str = "AGJvYgBwdw==";

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Feeds `input` whole, then (on a fresh session) byte by byte, and checks both give `want`.
fn transcript(tls: bool, input: &str, want: &str) -> Session<Memory> {
    let (whole, session) = run(async {
        let mut s = Session::new(config(), Memory::default(), tls);
        let out = s.feed(input.as_bytes()).await;
        (out, s)
    });
    assert_eq!(
        String::from_utf8_lossy(&whole.bytes),
        want,
        "fed whole:\n{input}"
    );
    let bytewise = run(async {
        let mut s = Session::new(config(), Memory::default(), tls);
        let mut out = Vec::new();
        for b in input.as_bytes() {
            let o = s.feed(std::slice::from_ref(b)).await;
            out.extend(o.bytes);
            if o.action != Action::Continue {
                break;
            }
        }
        out
    });
    assert_eq!(
        String::from_utf8_lossy(&bytewise),
        want,
        "fed byte by byte:\n{input}"
    );
    session
}

fn feed(s: &mut Session<Memory>, input: &str) -> Output {
    run(s.feed(input.as_bytes()))
}

#[test]
fn greeting_lists_capabilities_without_sasl_before_tls() {
    let s = Session::new(config(), Memory::default(), false);
    let g = String::from_utf8(s.greeting()).unwrap();
    assert_eq!(g, format!("{CAPS_PLAIN}OK \"Tern ManageSieve ready\"\r\n"));
}

#[test]
fn starttls_then_capabilities_again_and_pipelined_input_dropped() {
    let mut s = Session::new(config(), Memory::default(), false);
    let out = feed(
        &mut s,
        "STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"AGJvYgBwdw==\"\r\n",
    );
    assert_eq!(out.bytes, b"OK \"Begin TLS negotiation now\"\r\n");
    assert_eq!(out.action, Action::StartTls);
    let after = String::from_utf8(s.tls_started()).unwrap();
    assert_eq!(
        after,
        format!("{CAPS_TLS}OK \"TLS negotiation successful\"\r\n")
    );
    // The pipelined AUTHENTICATE was dropped: nothing more is answered.
    let out = feed(&mut s, "");
    assert!(out.bytes.is_empty());
    let out = feed(&mut s, "STARTTLS\r\n");
    assert_eq!(out.bytes, b"NO \"TLS is not available\"\r\n");
}

#[test]
fn authenticate_needs_tls_by_default() {
    transcript(
        false,
        &format!("AUTHENTICATE \"PLAIN\" \"{BOB}\"\r\nLISTSCRIPTS\r\n"),
        "NO (ENCRYPT-NEEDED) \"Use STARTTLS before authenticating\"\r\nNO \"Authenticate first\"\r\n",
    );
}

#[test]
fn authenticate_with_initial_response_and_with_continuation() {
    transcript(
        true,
        &format!("AUTHENTICATE \"PLAIN\" \"{BOB}\"\r\nCAPABILITY\r\n"),
        &format!(
            "OK \"Logged in\"\r\n{}\"OWNER\" \"bob\"\r\n\"UNAUTHENTICATE\"\r\n\"VERSION\" \"1.0\"\r\nOK \"Capability completed\"\r\n",
            CAPS_TLS.replace("\"UNAUTHENTICATE\"\r\n\"VERSION\" \"1.0\"\r\n", "")
        ),
    );
    // Continuation, the response as a literal; then a cancelled exchange.
    transcript(
        true,
        &format!(
            "AUTHENTICATE \"PLAIN\"\r\n{{{}+}}\r\n{BOB}\r\nUNAUTHENTICATE\r\nAUTHENTICATE \"plain\"\r\n\"*\"\r\n",
            BOB.len()
        ),
        "\"\"\r\nOK \"Logged in\"\r\nOK\r\n\"\"\r\nNO \"Authentication cancelled\"\r\n",
    );
    // Initial response as a literal.
    transcript(
        true,
        &format!("AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{BOB}\r\n", BOB.len()),
        "OK \"Logged in\"\r\n",
    );
}

#[test]
fn failed_logins_close_the_session() {
    // base64("\0bob\0nope")
    let bad = "AGJvYgBub3Bl";
    transcript(
        true,
        &format!(
            "AUTHENTICATE \"PLAIN\" \"{bad}\"\r\nAUTHENTICATE \"PLAIN\" \"!!\"\r\nAUTHENTICATE \"PLAIN\" \"{bad}\"\r\nAUTHENTICATE \"PLAIN\" \"{bad}\"\r\nNOOP\r\n"
        ),
        "NO \"Authentication failed\"\r\nNO \"Malformed SASL PLAIN response\"\r\nNO \"Authentication failed\"\r\nBYE \"Too many failed logins\"\r\n",
    );
    // base64("\0blocked\0x") and base64("\0down\0x")
    transcript(
        true,
        "AUTHENTICATE \"PLAIN\" \"AGJsb2NrZWQAeA==\"\r\nAUTHENTICATE \"PLAIN\" \"AGRvd24AeA==\"\r\nAUTHENTICATE \"DIGEST-MD5\"\r\n",
        "NO (TRYLATER) \"Too many failed logins, try later\"\r\nNO (TRYLATER) \"Cannot check credentials now\"\r\nNO \"Unsupported SASL mechanism\"\r\n",
    );
}

fn login() -> String {
    format!("AUTHENTICATE \"PLAIN\" \"{BOB}\"\r\n")
}

#[test]
fn script_lifecycle() {
    let input = format!(
        "{}\
         PUTSCRIPT \"main\" {{21+}}\r\nkeep;\r\nthis is bad;\r\n\r\n\
         PUTSCRIPT \"main\" {{7+}}\r\nkeep;\r\n\r\n\
         PUTSCRIPT \"other\" \"discard;\"\r\n\
         SETACTIVE \"main\"\r\n\
         LISTSCRIPTS\r\n\
         GETSCRIPT \"main\"\r\n\
         DELETESCRIPT \"main\"\r\n\
         RENAMESCRIPT \"main\" \"other\"\r\n\
         RENAMESCRIPT \"main\" \"work\"\r\n\
         RENAMESCRIPT \"gone\" \"x\"\r\n\
         LISTSCRIPTS\r\n\
         SETACTIVE \"\"\r\n\
         SETACTIVE \"nope\"\r\n\
         DELETESCRIPT \"work\"\r\n\
         GETSCRIPT \"work\"\r\n\
         CHECKSCRIPT \"keep;\"\r\n\
         CHECKSCRIPT {{4}}\r\nbad\n\r\n\
         NOOP \"sync-1\"\r\n\
         LOGOUT\r\n",
        login()
    );
    let want = "OK \"Logged in\"\r\n\
         NO \"line 2: syntax error\"\r\n\
         OK \"Putscript completed\"\r\n\
         OK \"Putscript completed\"\r\n\
         OK \"Setactive completed\"\r\n\
         \"main\" ACTIVE\r\n\"other\"\r\nOK \"Listscripts completed\"\r\n\
         {7}\r\nkeep;\r\n\r\nOK \"Getscript completed\"\r\n\
         NO (ACTIVE) \"The active script cannot be deleted; deactivate it first\"\r\n\
         NO (ALREADYEXISTS) \"A script with that name already exists\"\r\n\
         OK \"Renamescript completed\"\r\n\
         NO (NONEXISTENT) \"There is no script by that name\"\r\n\
         \"other\"\r\n\"work\" ACTIVE\r\nOK \"Listscripts completed\"\r\n\
         OK \"Setactive completed\"\r\n\
         NO (NONEXISTENT) \"There is no script by that name\"\r\n\
         OK \"Deletescript completed\"\r\n\
         NO (NONEXISTENT) \"There is no script by that name\"\r\n\
         OK \"Script is valid\"\r\n\
         NO \"line 1: syntax error\"\r\n\
         OK (TAG \"sync-1\") \"Done\"\r\n\
         OK \"Logout completed\"\r\n";
    transcript(true, &input, want);
}

#[test]
fn limits_and_quota_codes() {
    let big = "x".repeat(150);
    let input = format!(
        "{}\
         PUTSCRIPT \"big\" {{150+}}\r\n{big}\r\n\
         HAVESPACE \"big\" 150\r\n\
         HAVESPACE \"a\" 10\r\n\
         HAVESPACE \"a\" ten\r\n\
         PUTSCRIPT \"a\" \"keep;\"\r\nPUTSCRIPT \"b\" \"keep;\"\r\nPUTSCRIPT \"c\" \"keep;\"\r\n\
         PUTSCRIPT \"d\" \"keep;\"\r\n\
         HAVESPACE \"d\" 10\r\n\
         {}\r\n\
         NOOP\r\n",
        login(),
        "N".repeat(300)
    );
    let want = "OK \"Logged in\"\r\n\
         NO (QUOTA/MAXSIZE) \"150 octets is more than the 100 allowed\"\r\n\
         NO (QUOTA/MAXSIZE) \"Scripts may have at most 100 octets\"\r\n\
         OK \"Putscript would succeed\"\r\n\
         NO \"HAVESPACE size must be a number\"\r\n\
         OK \"Putscript completed\"\r\nOK \"Putscript completed\"\r\nOK \"Putscript completed\"\r\n\
         NO (QUOTA/MAXSCRIPTS) \"3 scripts\"\r\n\
         NO (QUOTA/MAXSCRIPTS) \"3 scripts\"\r\n\
         NO \"Line too long\"\r\n\
         OK \"Done\"\r\n";
    transcript(true, &input, want);
}

#[test]
fn store_trouble_is_trylater() {
    run(async {
        let mut s = Session::new(config(), Memory::default(), true);
        s.feed(login().as_bytes()).await;
        s.backend_mut().broken = true;
        let out = s
            .feed(b"LISTSCRIPTS\r\nPUTSCRIPT \"a\" \"keep;\"\r\n")
            .await;
        assert_eq!(
            String::from_utf8_lossy(&out.bytes),
            "NO (TRYLATER) \"The script store is unavailable, try again later\"\r\n\
             NO (TRYLATER) \"The script store is unavailable, try again later\"\r\n"
        );
    });
}

#[test]
fn bad_syntax_gets_no_and_too_much_gets_bye() {
    transcript(
        true,
        "FROB\r\nGETSCRIPT\r\n\"unterminated\r\nNOOP \"a\\q\"\r\n{3+}\r\nabc\r\nAUTHENTICATE\r\nNOOP\r\n",
        "NO \"Unknown command\"\r\nNO \"Authenticate first\"\r\nNO \"Unterminated quoted string\"\r\nNO \"Bad escape in quoted string\"\r\nNO \"Expected a command name\"\r\nNO \"AUTHENTICATE takes a mechanism and a response\"\r\nOK \"Done\"\r\n",
    );
    let mut input = String::new();
    for _ in 0..12 {
        input.push_str("FROB\r\n");
    }
    let want = format!(
        "{}BYE \"Too many errors, closing\"\r\n",
        "NO \"Unknown command\"\r\n".repeat(9)
    );
    transcript(true, &input, &want);
}

#[test]
fn unauthenticate_returns_to_the_start() {
    transcript(
        true,
        &format!(
            "{}UNAUTHENTICATE\r\nLISTSCRIPTS\r\nUNAUTHENTICATE\r\n",
            login()
        ),
        "OK \"Logged in\"\r\nOK\r\nNO \"Authenticate first\"\r\nNO \"Authenticate first\"\r\n",
    );
}

#[test]
fn quoted_strings_unescape_and_names_come_back_quoted() {
    transcript(
        true,
        &format!(
            "{}PUTSCRIPT \"a \\\"q\\\" \\\\\" \"keep;\"\r\nLISTSCRIPTS\r\n",
            login()
        ),
        "OK \"Logged in\"\r\nOK \"Putscript completed\"\r\n\"a \\\"q\\\" \\\\\"\r\nOK \"Listscripts completed\"\r\n",
    );
}

#[test]
fn garbage_in_random_chunks_never_panics_and_the_session_still_answers() {
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet: &[u8] = b"\"\\{}+ \r\n0123456789AUTHENTICATEPUTSCRIPT*\x00\xff";
    run(async {
        for _ in 0..200 {
            let mut s = Session::new(config(), Memory::default(), true);
            let len = (next() % 600) as usize;
            let garbage: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut rest = garbage.as_slice();
            let mut closed = false;
            while !rest.is_empty() {
                let n = 1 + (next() % 40) as usize;
                let (chunk, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                if s.feed(chunk).await.action == Action::Close {
                    closed = true;
                    break;
                }
                // At most four text parts and four literals, and one chunk not yet framed.
                assert!(
                    s.framer_buffered() <= 4 * (200 + 100) + 200 + 64,
                    "buffer bounded"
                );
            }
            if !closed && !s.framer_skipping() {
                // Whatever state the garbage left, a literal that may still be open is
                // closed off and the session answers a NOOP again (or says BYE).
                let out = s.feed(&[b'\n'; 1]).await;
                let _ = out;
                let mut tail = vec![b'x'; 120];
                tail.extend_from_slice(b"\r\n\r\nNOOP\r\n");
                let out = s.feed(&tail).await;
                let text = String::from_utf8_lossy(&out.bytes);
                assert!(
                    text.contains("OK \"Done\"")
                        || text.contains("BYE")
                        || out.action == Action::Close,
                    "{text}"
                );
            }
        }
    });
}

#[test]
fn plaintext_login_when_allowed_and_no_starttls_once_authenticated() {
    run(async {
        let mut cfg = config();
        cfg.login_requires_tls = false;
        let mut s = Session::new(cfg, Memory::default(), false);
        let greeting = String::from_utf8(s.greeting()).unwrap();
        assert!(
            greeting.contains("\"SASL\" \"PLAIN\"\r\n\"SIEVE\""),
            "{greeting}"
        );
        assert!(greeting.contains("\"STARTTLS\"\r\n"), "{greeting}");
        let out = s
            .feed(format!("{}CAPABILITY\r\nSTARTTLS\r\n", login()).as_bytes())
            .await;
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(text.starts_with("OK \"Logged in\"\r\n"), "{text}");
        assert!(!text.contains("\"STARTTLS\""), "{text}");
        assert!(
            text.ends_with("NO \"STARTTLS only before authentication\"\r\n"),
            "{text}"
        );
        assert_eq!(out.action, Action::Continue);
    });
}
