//! The ManageSieve session state machine (RFC 5804 §2): non-authenticated, a SASL exchange
//! under way, authenticated.
//!
//! Commands are framed by `framing`, split into arguments here, and answered one by one, so a
//! pipelining client stays in step. Every malformed command gets `NO` and the session keeps
//! serving until `max_errors`; nothing the client sends can make it panic or grow a buffer
//! past the configured limits.

use base64::Engine as _;

use crate::framing::{Frame, Framer, Part, literal_size};
use crate::response::{self, Code};
use crate::{Action, AuthOutcome, Backend, BackendError, Config, Output, Quota};

/// RFC 5804 §4: a quoted string holds at most 1024 octets.
const MAX_QUOTED: usize = 1024;

/// The `VERSION` capability: this is RFC 5804.
const VERSION: &str = "1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotAuthenticated,
    /// `AUTHENTICATE "PLAIN"` without an initial response was answered with an empty
    /// challenge; the next command line is the client's response (RFC 5804 §2.1).
    SaslPlain,
    Authenticated,
    /// LOGOUT answered, or BYE sent: nothing more is read.
    Closed,
}

/// One argument of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    /// A bare word: the command name, or a number.
    Atom(String),
    /// A quoted string or a literal.
    Str(Vec<u8>),
}

/// A ManageSieve session over an agent's [`Backend`].
pub struct Session<B> {
    config: Config,
    backend: B,
    framer: Framer,
    state: State,
    tls: bool,
    failed_logins: u32,
    errors: u32,
    verbs: Vec<&'static str>,
}

/// What a command asks of the connection once its reply is written.
enum Effect {
    Continue,
    StartTls,
    Close,
}

impl<B: Backend> Session<B> {
    pub fn new(config: Config, backend: B, tls_active: bool) -> Self {
        // A literal may carry a whole script; the line limit covers the command text.
        let framer = Framer::new(config.max_line, config.max_script_size);
        Self {
            config,
            backend,
            framer,
            state: State::NotAuthenticated,
            tls: tls_active,
            failed_logins: 0,
            errors: 0,
            verbs: Vec::new(),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    #[cfg(test)]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// RFC 5804 §1.7: the server greets with its capabilities.
    pub fn greeting(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.capabilities(&mut out);
        response::ok(&mut out, "Tern ManageSieve ready");
        out
    }

    /// The TLS handshake after STARTTLS succeeded. RFC 5804 §2.2: the server then sends its
    /// capabilities again (now with SASL mechanisms, without STARTTLS), followed by OK.
    pub fn tls_started(&mut self) -> Vec<u8> {
        self.tls = true;
        self.framer.clear();
        self.greeting_after_tls()
    }

    fn greeting_after_tls(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.capabilities(&mut out);
        response::ok(&mut out, "TLS negotiation successful");
        out
    }

    /// Sent when the idle timer fires, before the agent closes.
    pub fn timeout_reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        response::status(&mut out, "BYE", None, "Idle timeout, closing");
        out
    }

    /// Sent between commands when the server shuts down.
    pub fn shutdown_reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        response::status(
            &mut out,
            "BYE",
            Some(Code::TryLater),
            "Server shutting down",
        );
        out
    }

    /// The command names handled since the last call, for metrics and spans.
    pub fn take_verbs(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.verbs)
    }

    #[cfg(test)]
    pub(crate) fn framer_buffered(&self) -> usize {
        self.framer.buffered()
    }

    #[cfg(test)]
    pub(crate) fn framer_skipping(&self) -> bool {
        self.framer.skipping()
    }

    /// True once the client logged in.
    pub fn is_authenticated(&self) -> bool {
        self.state == State::Authenticated
    }

    /// Feeds bytes read from the client; returns the replies to every complete command.
    pub async fn feed(&mut self, input: &[u8]) -> Output {
        let mut out = Vec::new();
        if self.state == State::Closed {
            return Output {
                bytes: out,
                action: Action::Close,
            };
        }
        self.framer.push(input);
        while let Some(frame) = self.framer.next() {
            let effect = self.frame(frame, &mut out).await;
            match effect {
                Effect::Continue => {}
                Effect::StartTls => {
                    // Anything pipelined after STARTTLS came before the handshake and is
                    // dropped, so an attacker cannot inject commands (as RFC 3207 §4.2).
                    self.framer.clear();
                    return Output {
                        bytes: out,
                        action: Action::StartTls,
                    };
                }
                Effect::Close => {
                    self.state = State::Closed;
                    self.framer.clear();
                    return Output {
                        bytes: out,
                        action: Action::Close,
                    };
                }
            }
        }
        Output {
            bytes: out,
            action: Action::Continue,
        }
    }

    async fn frame(&mut self, frame: Frame, out: &mut Vec<u8>) -> Effect {
        let parts = match frame {
            Frame::Command(parts) => parts,
            Frame::TooLong => return self.syntax_error(out, "Line too long"),
            Frame::TooManyParts => return self.syntax_error(out, "Too many literals"),
            Frame::LiteralTooBig(size) => {
                if self.state == State::SaslPlain {
                    self.state = State::NotAuthenticated;
                }
                response::no(
                    out,
                    Some(Code::QuotaMaxSize),
                    &format!(
                        "{size} octets is more than the {} allowed",
                        self.config.max_script_size
                    ),
                );
                return Effect::Continue;
            }
        };
        let args = match split(parts) {
            Ok(args) => args,
            Err(why) => {
                if self.state == State::SaslPlain {
                    self.state = State::NotAuthenticated;
                }
                return self.syntax_error(out, why);
            }
        };
        if self.state == State::SaslPlain {
            self.state = State::NotAuthenticated;
            return match args.as_slice() {
                [Arg::Str(s)] if s == b"*" => {
                    // RFC 5804 §2.1: "*" cancels the exchange.
                    response::no(out, None, "Authentication cancelled");
                    Effect::Continue
                }
                [Arg::Str(s)] => {
                    let s = s.clone();
                    self.plain(&s, out).await
                }
                _ => self.syntax_error(out, "Expected a SASL response string"),
            };
        }
        let Some(Arg::Atom(name)) = args.first() else {
            return self.syntax_error(out, "Expected a command name");
        };
        let name = name.to_ascii_uppercase();
        let args = &args[1..];
        let Some(verb) = VERBS.iter().copied().find(|v| *v == name) else {
            self.verbs.push("unknown");
            return self.syntax_error(out, "Unknown command");
        };
        self.verbs.push(verb);
        self.command(verb, args, out).await
    }

    fn syntax_error(&mut self, out: &mut Vec<u8>, why: &str) -> Effect {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            response::status(out, "BYE", None, "Too many errors, closing");
            return Effect::Close;
        }
        response::no(out, None, why);
        Effect::Continue
    }

    async fn command(&mut self, verb: &'static str, args: &[Arg], out: &mut Vec<u8>) -> Effect {
        let authenticated = self.state == State::Authenticated;
        match verb {
            "CAPABILITY" => {
                if !args.is_empty() {
                    return self.syntax_error(out, "CAPABILITY takes no arguments");
                }
                self.capabilities(out);
                response::ok(out, "Capability completed");
            }
            "LOGOUT" => {
                response::ok(out, "Logout completed");
                return Effect::Close;
            }
            "NOOP" => match args {
                [] => response::ok(out, "Done"),
                [Arg::Str(tag)] => {
                    response::status(out, "OK", Some(Code::Tag(tag.clone())), "Done")
                }
                _ => return self.syntax_error(out, "NOOP takes an optional tag string"),
            },
            "STARTTLS" => {
                if !args.is_empty() {
                    return self.syntax_error(out, "STARTTLS takes no arguments");
                }
                if self.tls || !self.config.tls_available {
                    response::no(out, None, "TLS is not available");
                } else if authenticated {
                    response::no(out, None, "STARTTLS only before authentication");
                } else {
                    response::ok(out, "Begin TLS negotiation now");
                    return Effect::StartTls;
                }
            }
            "AUTHENTICATE" => return self.authenticate(args, out).await,
            _ if !authenticated => {
                response::no(out, None, "Authenticate first");
            }
            "UNAUTHENTICATE" => {
                if !args.is_empty() {
                    return self.syntax_error(out, "UNAUTHENTICATE takes no arguments");
                }
                self.backend.unauthenticate();
                self.state = State::NotAuthenticated;
                response::ok(out, "");
            }
            "LISTSCRIPTS" => {
                if !args.is_empty() {
                    return self.syntax_error(out, "LISTSCRIPTS takes no arguments");
                }
                match self.backend.list().await {
                    Ok(scripts) => {
                        for s in scripts {
                            response::string(out, s.name.as_bytes());
                            if s.active {
                                out.extend_from_slice(b" ACTIVE");
                            }
                            out.extend_from_slice(b"\r\n");
                        }
                        response::ok(out, "Listscripts completed");
                    }
                    Err(e) => backend_error(out, e),
                }
            }
            "GETSCRIPT" => {
                let Some(name) = Self::names::<1>(args) else {
                    return self.syntax_error(out, "GETSCRIPT takes a script name");
                };
                match self.backend.get(&name[0]).await {
                    Ok(source) => {
                        // RFC 5804 §2.9: the script always as a literal, then CRLF and OK.
                        out.extend_from_slice(format!("{{{}}}\r\n", source.len()).as_bytes());
                        out.extend_from_slice(source.as_bytes());
                        out.extend_from_slice(b"\r\n");
                        response::ok(out, "Getscript completed");
                    }
                    Err(e) => backend_error(out, e),
                }
            }
            "SETACTIVE" => {
                let Some(name) = Self::names::<1>(args) else {
                    return self.syntax_error(out, "SETACTIVE takes a script name");
                };
                // RFC 5804 §2.8: the empty name deactivates every script.
                let name = (!name[0].is_empty()).then_some(name[0].as_str());
                match self.backend.set_active(name).await {
                    Ok(()) => response::ok(out, "Setactive completed"),
                    Err(e) => backend_error(out, e),
                }
            }
            "DELETESCRIPT" => {
                let Some(name) = Self::names::<1>(args) else {
                    return self.syntax_error(out, "DELETESCRIPT takes a script name");
                };
                match self.backend.delete(&name[0]).await {
                    Ok(()) => response::ok(out, "Deletescript completed"),
                    Err(e) => backend_error(out, e),
                }
            }
            "RENAMESCRIPT" => {
                let Some([old, new]) = Self::names::<2>(args) else {
                    return self.syntax_error(out, "RENAMESCRIPT takes two script names");
                };
                match self.backend.rename(&old, &new).await {
                    Ok(()) => response::ok(out, "Renamescript completed"),
                    Err(e) => backend_error(out, e),
                }
            }
            "HAVESPACE" => {
                let [Arg::Str(name), Arg::Atom(size)] = args else {
                    return self.syntax_error(out, "HAVESPACE takes a script name and a size");
                };
                let Ok(size) = size.parse::<u64>() else {
                    return self.syntax_error(out, "HAVESPACE size must be a number");
                };
                let Ok(name) = std::str::from_utf8(name) else {
                    response::no(out, None, "Script names are UTF-8");
                    return Effect::Continue;
                };
                if size > self.config.max_script_size as u64 {
                    response::no(
                        out,
                        Some(Code::QuotaMaxSize),
                        &format!(
                            "Scripts may have at most {} octets",
                            self.config.max_script_size
                        ),
                    );
                    return Effect::Continue;
                }
                match self.backend.have_space(name, size).await {
                    Ok(()) => response::ok(out, "Putscript would succeed"),
                    Err(e) => backend_error(out, e),
                }
            }
            "PUTSCRIPT" => {
                let [Arg::Str(name), Arg::Str(script)] = args else {
                    return self.syntax_error(out, "PUTSCRIPT takes a script name and a script");
                };
                let (Ok(name), Ok(source)) =
                    (std::str::from_utf8(name), std::str::from_utf8(script))
                else {
                    response::no(out, None, "Script names and scripts are UTF-8");
                    return Effect::Continue;
                };
                if let Err(errors) = self.backend.check(source) {
                    response::no(out, None, &errors);
                    return Effect::Continue;
                }
                match self.backend.put(name, source).await {
                    Ok(()) => response::ok(out, "Putscript completed"),
                    Err(e) => backend_error(out, e),
                }
            }
            "CHECKSCRIPT" => {
                let [Arg::Str(script)] = args else {
                    return self.syntax_error(out, "CHECKSCRIPT takes a script");
                };
                let Ok(source) = std::str::from_utf8(script) else {
                    response::no(out, None, "Scripts are UTF-8");
                    return Effect::Continue;
                };
                match self.backend.check(source) {
                    Ok(()) => response::ok(out, "Script is valid"),
                    Err(errors) => response::no(out, None, &errors),
                }
            }
            _ => return self.syntax_error(out, "Unknown command"),
        }
        Effect::Continue
    }

    /// `N` string arguments as UTF-8 script names; `None` (for a syntax error) when the
    /// arguments are not `N` strings. A name that is not UTF-8 is a syntax error too.
    fn names<const N: usize>(args: &[Arg]) -> Option<[String; N]> {
        if args.len() != N {
            return None;
        }
        let mut names: [String; N] = std::array::from_fn(|_| String::new());
        for (slot, arg) in names.iter_mut().zip(args) {
            let Arg::Str(s) = arg else { return None };
            *slot = String::from_utf8(s.clone()).ok()?;
        }
        Some(names)
    }

    async fn authenticate(&mut self, args: &[Arg], out: &mut Vec<u8>) -> Effect {
        if self.state == State::Authenticated {
            response::no(out, None, "Already authenticated");
            return Effect::Continue;
        }
        let (mechanism, initial) = match args {
            [Arg::Str(m)] => (m, None),
            [Arg::Str(m), Arg::Str(r)] => (m, Some(r.clone())),
            _ => return self.syntax_error(out, "AUTHENTICATE takes a mechanism and a response"),
        };
        if !mechanism.eq_ignore_ascii_case(b"PLAIN") {
            response::no(out, None, "Unsupported SASL mechanism");
            return Effect::Continue;
        }
        if self.config.login_requires_tls && !self.tls {
            response::no(
                out,
                Some(Code::EncryptNeeded),
                "Use STARTTLS before authenticating",
            );
            return Effect::Continue;
        }
        match initial {
            Some(response) => self.plain(&response, out).await,
            None => {
                // RFC 5804 §2.1: the challenge is a string; PLAIN's is empty.
                out.extend_from_slice(b"\"\"\r\n");
                self.state = State::SaslPlain;
                Effect::Continue
            }
        }
    }

    /// Checks a base64 PLAIN response (RFC 4616: authzid NUL authcid NUL password).
    async fn plain(&mut self, response: &[u8], out: &mut Vec<u8>) -> Effect {
        let Some((authzid, user, password)) = decode_plain(response) else {
            response::no(out, None, "Malformed SASL PLAIN response");
            return Effect::Continue;
        };
        match self.backend.authenticate(&authzid, &user, &password).await {
            AuthOutcome::Success => {
                self.state = State::Authenticated;
                self.failed_logins = 0;
                response::ok(out, "Logged in");
                Effect::Continue
            }
            AuthOutcome::TryLater => {
                response::no(out, Some(Code::TryLater), "Cannot check credentials now");
                Effect::Continue
            }
            outcome => {
                self.failed_logins += 1;
                if self.failed_logins >= self.config.max_failed_logins {
                    response::status(out, "BYE", None, "Too many failed logins");
                    return Effect::Close;
                }
                if outcome == AuthOutcome::Blocked {
                    response::no(
                        out,
                        Some(Code::TryLater),
                        "Too many failed logins, try later",
                    );
                } else {
                    response::no(out, None, "Authentication failed");
                }
                Effect::Continue
            }
        }
    }

    /// RFC 5804 §1.7: one line per capability, in any order.
    fn capabilities(&self, out: &mut Vec<u8>) {
        let mut cap = |name: &str, value: Option<&str>| {
            response::string(out, name.as_bytes());
            if let Some(v) = value {
                out.push(b' ');
                response::string(out, v.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        };
        cap("IMPLEMENTATION", Some(&self.config.implementation));
        // The SASL list may be empty only while STARTTLS is offered.
        let sasl_allowed = self.tls || !self.config.login_requires_tls;
        cap("SASL", Some(if sasl_allowed { "PLAIN" } else { "" }));
        cap("SIEVE", Some(&self.config.sieve_extensions));
        // STARTTLS is only for the non-authenticated state (RFC 5804 §2.2).
        if self.config.tls_available && !self.tls && self.state != State::Authenticated {
            cap("STARTTLS", None);
        }
        if let Some(n) = self.config.max_redirects {
            cap("MAXREDIRECTS", Some(&n.to_string()));
        }
        if self.state == State::Authenticated
            && let Some(owner) = self.backend.owner()
        {
            cap("OWNER", Some(&owner));
        }
        cap("UNAUTHENTICATE", None);
        cap("VERSION", Some(VERSION));
    }
}

/// Every command this server knows (RFC 5804 §2), as the metrics' verb label.
const VERBS: &[&str] = &[
    "AUTHENTICATE",
    "STARTTLS",
    "LOGOUT",
    "CAPABILITY",
    "HAVESPACE",
    "PUTSCRIPT",
    "LISTSCRIPTS",
    "SETACTIVE",
    "GETSCRIPT",
    "DELETESCRIPT",
    "RENAMESCRIPT",
    "CHECKSCRIPT",
    "NOOP",
    "UNAUTHENTICATE",
];

fn backend_error(out: &mut Vec<u8>, e: BackendError) {
    match e {
        BackendError::NonExistent => response::no(
            out,
            Some(Code::NonExistent),
            "There is no script by that name",
        ),
        BackendError::AlreadyExists => response::no(
            out,
            Some(Code::AlreadyExists),
            "A script with that name already exists",
        ),
        BackendError::Active => response::no(
            out,
            Some(Code::Active),
            "The active script cannot be deleted; deactivate it first",
        ),
        BackendError::Quota(Quota::MaxScripts, text) => {
            response::no(out, Some(Code::QuotaMaxScripts), &text)
        }
        BackendError::Quota(Quota::MaxSize, text) => {
            response::no(out, Some(Code::QuotaMaxSize), &text)
        }
        BackendError::Refused(text) => response::no(out, None, &text),
        BackendError::TryLater(_) => response::no(
            out,
            Some(Code::TryLater),
            "The script store is unavailable, try again later",
        ),
    }
}

/// Splits a framed command into arguments: bare words, quoted strings (with `\"` and `\\`
/// escapes, RFC 5804 §4) and literals.
fn split(parts: Vec<Part>) -> Result<Vec<Arg>, &'static str> {
    let mut args = Vec::new();
    let mut parts = parts.into_iter();
    while let Some(part) = parts.next() {
        let Part::Text(line) = part else {
            return Err("Unexpected literal");
        };
        let mut i = 0;
        loop {
            while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
                i += 1;
            }
            if i >= line.len() {
                break;
            }
            match line[i] {
                b'"' => {
                    let mut s = Vec::new();
                    i += 1;
                    loop {
                        match line.get(i) {
                            None => return Err("Unterminated quoted string"),
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(b'\\') => match line.get(i + 1) {
                                Some(&c @ (b'"' | b'\\')) => {
                                    s.push(c);
                                    i += 2;
                                }
                                _ => return Err("Bad escape in quoted string"),
                            },
                            Some(0) => return Err("NUL in quoted string"),
                            Some(&c) => {
                                s.push(c);
                                i += 1;
                            }
                        }
                    }
                    if s.len() > MAX_QUOTED {
                        return Err("Quoted string longer than 1024 octets");
                    }
                    if i < line.len() && line[i] != b' ' {
                        return Err("Expected a space after a string");
                    }
                    args.push(Arg::Str(s));
                }
                b'{' => {
                    if literal_size(&line[i..]).is_none() {
                        return Err("Bad literal");
                    }
                    let Some(Part::Literal(data)) = parts.next() else {
                        return Err("Bad literal");
                    };
                    args.push(Arg::Str(data));
                    break;
                }
                _ => {
                    let start = i;
                    while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
                        if matches!(line[i], b'"' | b'{' | b'}' | b'(' | b')' | b'\\')
                            || line[i] < 0x20
                        {
                            return Err("Bad character in command");
                        }
                        i += 1;
                    }
                    let word = std::str::from_utf8(&line[start..i]).map_err(|_| "Bad command")?;
                    args.push(Arg::Atom(word.to_string()));
                }
            }
        }
    }
    Ok(args)
}

/// RFC 4616 §2: base64 of `authzid NUL authcid NUL passwd`, each UTF-8.
fn decode_plain(response: &[u8]) -> Option<(String, String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(response)
        .ok()?;
    let mut fields = raw.split(|&b| b == 0);
    let authzid = std::str::from_utf8(fields.next()?).ok()?.to_string();
    let user = std::str::from_utf8(fields.next()?).ok()?.to_string();
    let password = std::str::from_utf8(fields.next()?).ok()?.to_string();
    if fields.next().is_some() || user.is_empty() {
        return None;
    }
    Some((authzid, user, password))
}
