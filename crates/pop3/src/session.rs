//! The POP3 session state machine: AUTHORIZATION, TRANSACTION and UPDATE (RFC 1939 §3).
//!
//! It turns command lines into replies, asking the [`Backend`] for credentials, the maildrop
//! snapshot, message bodies and, at QUIT, the deletions. It holds the per-session deletion
//! marks itself, so nothing is removed from the store before the client says QUIT (RFC 1939 §6).
//! It does no I/O of its own and never panics on client input: every malformed line is answered
//! with "-ERR", one reply per line, so a pipelining client stays in step (RFC 2449 §6.6).

use base64::Engine as _;

use crate::framing::{Frame, LineReader};
use crate::{Action, Backend, BackendError, Config, MaildropEntry, Output, message};

/// RFC 2449 §4: a command line is at most 255 octets, CRLF included.
const MAX_COMMAND_LINE: usize = 255;

/// RFC 5034 §4 exempts the client's responses in a SASL exchange from the 255-octet limit.
/// A PLAIN response holds two names and a password; this bound is far above any real one and
/// keeps the buffer small.
const MAX_SASL_LINE: usize = 4096;

/// RFC 1939 §7: a unique-id is at most 70 characters.
const MAX_UNIQUE_ID: usize = 70;

/// Where the session is in RFC 1939's life cycle.
#[derive(Debug)]
enum State {
    /// Before login; `user` holds the name from an accepted USER command.
    Authorization { user: Option<String> },
    /// "AUTH PLAIN" without an initial response was answered with "+ "; the next line is the
    /// client's base64 response (RFC 5034 §4).
    AuthPlain,
    /// Logged in, working on the maildrop snapshot.
    Transaction(Maildrop),
    /// QUIT answered, or too many failed logins: nothing more is read.
    Closed,
}

/// What a command asks of the connection once its reply is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Continue,
    StartTls,
    Close,
}

/// One message of the snapshot, with this session's deletion mark.
#[derive(Debug)]
struct Message {
    uid: u32,
    size: u64,
    unique_id: String,
    deleted: bool,
}

/// The INBOX as it was at login. Message numbers are positions in it, counted from 1, and they
/// never change during the session (RFC 1939 §5).
#[derive(Debug)]
struct Maildrop {
    messages: Vec<Message>,
}

impl Maildrop {
    fn new(mut entries: Vec<MaildropEntry>) -> Self {
        // The backend promises uid order; sorting again keeps message numbers stable even if a
        // backend gets that wrong, and dropping duplicate uids keeps DELE from counting twice.
        entries.sort_by_key(|entry| entry.uid);
        entries.dedup_by_key(|entry| entry.uid);
        let messages = entries
            .into_iter()
            .map(|entry| Message {
                unique_id: unique_id_text(&entry.unique_id, entry.uid),
                uid: entry.uid,
                size: entry.size,
                deleted: false,
            })
            .collect();
        Maildrop { messages }
    }

    /// The number and total size of the messages not marked deleted (RFC 1939 §5, STAT).
    fn totals(&self) -> (usize, u64) {
        self.live().fold((0, 0u64), |(count, size), (_, m)| {
            (count + 1, size.saturating_add(m.size))
        })
    }

    /// Messages not marked deleted, with their message numbers.
    fn live(&self) -> impl Iterator<Item = (usize, &Message)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.deleted)
            .map(|(index, m)| (index + 1, m))
    }

    /// Resolves a message-number argument to an index, or the "-ERR" line to send. RFC 1939 §5
    /// forbids referring to a message marked deleted.
    fn lookup(&self, arg: &str) -> Result<usize, String> {
        let Some(number) = parse_number(arg) else {
            return Err(format!("-ERR invalid message number {arg:.20}"));
        };
        let index = number.checked_sub(1).ok_or_else(no_such_message)?;
        match self.messages.get(index) {
            None => Err(no_such_message()),
            Some(m) if m.deleted => Err(format!("-ERR message {number} already deleted")),
            Some(_) => Ok(index),
        }
    }
}

fn no_such_message() -> String {
    "-ERR no such message".to_owned()
}

/// Parses a decimal argument, saturating on overflow; RFC 1939 arguments have no sign.
fn parse_number(arg: &str) -> Option<usize> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.bytes().fold(0usize, |n, b| {
        n.saturating_mul(10).saturating_add(usize::from(b - b'0'))
    }))
}

/// RFC 1939 §7: a unique-id is 1 to 70 characters from 0x21 to 0x7E. The store should only
/// hand out such ids; filtering here keeps a bad one from breaking the UIDL line, and it is
/// deterministic, so the id stays the same across sessions.
fn unique_id_text(id: &str, uid: u32) -> String {
    let text: String = id
        .chars()
        .filter(|c| ('\x21'..='\x7e').contains(c))
        .take(MAX_UNIQUE_ID)
        .collect();
    if text.is_empty() {
        uid.to_string()
    } else {
        text
    }
}

fn reply(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A POP3 server session over one client connection.
pub struct Session<B: Backend> {
    config: Config,
    backend: B,
    tls_active: bool,
    /// STLS was accepted and the agent has not yet reported the handshake done.
    awaiting_tls: bool,
    state: State,
    reader: LineReader,
    failed_logins: u32,
}

impl<B: Backend> Session<B> {
    /// Starts a session; `tls_active` is true on a connection that began with TLS (port 995).
    pub fn new(config: Config, backend: B, tls_active: bool) -> Self {
        Session {
            config,
            backend,
            tls_active,
            awaiting_tls: false,
            state: State::Authorization { user: None },
            reader: LineReader::default(),
            failed_logins: 0,
        }
    }

    /// The greeting the server sends as soon as the connection opens (RFC 1939 §4). No APOP
    /// timestamp is included, since APOP is not offered.
    pub fn greeting(&self) -> Vec<u8> {
        b"+OK Tern POP3 ready\r\n".to_vec()
    }

    /// The line to send before closing an idle connection. RFC 1939 §3: an autologout does not
    /// enter the UPDATE state, so no deletion is applied.
    pub fn timeout_reply(&self) -> Vec<u8> {
        b"-ERR [SYS/TEMP] autologout: idle for too long\r\n".to_vec()
    }

    /// Tells the session the TLS handshake that followed STLS has finished. RFC 2595 §4: the
    /// server forgets what the client said before TLS, so a pending USER name is dropped.
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.awaiting_tls = false;
        self.reader.clear();
        if let State::Authorization { user } = &mut self.state {
            *user = None;
        }
    }

    /// Feeds bytes read from the client and answers every complete line in them, in order
    /// (RFC 2449 §6.6, PIPELINING). A partial line is kept until the rest arrives.
    ///
    /// After `Action::StartTls` the rest of `input` is discarded: RFC 2595 §4 forbids acting on
    /// anything the client sent in clear text after STLS. Input fed before
    /// [`Session::tls_started`] is discarded too, and after `Action::Close` nothing is read.
    pub async fn feed(&mut self, input: &[u8]) -> Output {
        let mut out = Vec::new();
        let mut input = input;
        loop {
            if matches!(self.state, State::Closed) {
                return Output {
                    bytes: out,
                    action: Action::Close,
                };
            }
            if self.awaiting_tls {
                return Output {
                    bytes: out,
                    action: Action::Continue,
                };
            }
            let limit = match self.state {
                State::AuthPlain => MAX_SASL_LINE,
                _ => MAX_COMMAND_LINE,
            };
            let Some(frame) = self.reader.next_line(&mut input, limit) else {
                return Output {
                    bytes: out,
                    action: Action::Continue,
                };
            };
            let effect = match frame {
                Frame::TooLong => self.too_long(&mut out),
                Frame::Line(line) => self.line(&line, &mut out).await,
            };
            match effect {
                Effect::Continue => {}
                Effect::StartTls => {
                    self.reader.clear();
                    self.awaiting_tls = true;
                    return Output {
                        bytes: out,
                        action: Action::StartTls,
                    };
                }
                Effect::Close => {
                    self.reader.clear();
                    self.state = State::Closed;
                    return Output {
                        bytes: out,
                        action: Action::Close,
                    };
                }
            }
        }
    }

    fn too_long(&mut self, out: &mut Vec<u8>) -> Effect {
        if matches!(self.state, State::AuthPlain) {
            // The SASL exchange cannot go on without the response we just dropped.
            self.state = State::Authorization { user: None };
            reply(out, "-ERR line too long, authentication aborted");
        } else {
            reply(out, "-ERR line too long");
        }
        Effect::Continue
    }

    async fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Effect {
        if matches!(self.state, State::AuthPlain) {
            self.state = State::Authorization { user: None };
            return self.sasl_plain(line, out).await;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            reply(out, "-ERR command is not valid UTF-8");
            return Effect::Continue;
        };
        let (keyword, rest) = text.split_once(' ').unwrap_or((text, ""));
        let keyword = keyword.to_ascii_uppercase();
        if matches!(self.state, State::Transaction(_)) {
            self.transaction(&keyword, rest, out).await
        } else {
            self.authorization(&keyword, rest, out).await
        }
    }

    async fn authorization(&mut self, keyword: &str, rest: &str, out: &mut Vec<u8>) -> Effect {
        match keyword {
            "CAPA" => self.capa(out),
            "USER" => self.user(rest, out),
            "PASS" => return self.pass(rest, out).await,
            "AUTH" => return self.auth(rest, out).await,
            "STLS" => return self.stls(out),
            "QUIT" => {
                reply(out, &format!("+OK {}signing off", self.host_prefix()));
                return Effect::Close;
            }
            "STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET" | "NOOP" => {
                reply(out, "-ERR not logged in");
            }
            _ => reply(out, "-ERR unknown command"),
        }
        Effect::Continue
    }

    async fn transaction(&mut self, keyword: &str, rest: &str, out: &mut Vec<u8>) -> Effect {
        if keyword == "QUIT" {
            return self.quit(out).await;
        }
        if keyword == "CAPA" {
            self.capa(out);
            return Effect::Continue;
        }
        let State::Transaction(maildrop) = &mut self.state else {
            return Effect::Continue;
        };
        let args: Vec<&str> = rest.split(' ').filter(|arg| !arg.is_empty()).collect();
        match (keyword, args.as_slice()) {
            ("STAT", _) => {
                let (count, size) = maildrop.totals();
                reply(out, &format!("+OK {count} {size}"));
            }
            ("LIST", []) => {
                let (count, size) = maildrop.totals();
                reply(out, &format!("+OK {count} messages ({size} octets)"));
                for (number, m) in maildrop.live() {
                    reply(out, &format!("{number} {}", m.size));
                }
                reply(out, ".");
            }
            ("UIDL", []) => {
                reply(out, "+OK unique-id listing follows");
                for (number, m) in maildrop.live() {
                    reply(out, &format!("{number} {}", m.unique_id));
                }
                reply(out, ".");
            }
            ("LIST" | "UIDL", [arg]) => match maildrop.lookup(arg) {
                Ok(index) => {
                    if let Some(m) = maildrop.messages.get(index) {
                        let number = index + 1;
                        if keyword == "LIST" {
                            reply(out, &format!("+OK {number} {}", m.size));
                        } else {
                            reply(out, &format!("+OK {number} {}", m.unique_id));
                        }
                    }
                }
                Err(line) => reply(out, &line),
            },
            ("RETR", [arg]) => match maildrop.lookup(arg) {
                Ok(index) => {
                    let uid = maildrop.messages.get(index).map(|m| m.uid);
                    if let Some(uid) = uid {
                        self.send_message(uid, index + 1, None, out).await;
                    }
                }
                Err(line) => reply(out, &line),
            },
            ("TOP", [arg, lines]) => match (maildrop.lookup(arg), parse_number(lines)) {
                (Ok(index), Some(lines)) => {
                    let uid = maildrop.messages.get(index).map(|m| m.uid);
                    if let Some(uid) = uid {
                        self.send_message(uid, index + 1, Some(lines), out).await;
                    }
                }
                (Err(line), _) => reply(out, &line),
                (Ok(_), None) => reply(out, "-ERR invalid line count"),
            },
            ("DELE", [arg]) => match maildrop.lookup(arg) {
                Ok(index) => {
                    if let Some(m) = maildrop.messages.get_mut(index) {
                        m.deleted = true;
                        reply(out, &format!("+OK message {} deleted", index + 1));
                    }
                }
                Err(line) => reply(out, &line),
            },
            ("RSET", _) => {
                for m in &mut maildrop.messages {
                    m.deleted = false;
                }
                let (count, size) = maildrop.totals();
                reply(
                    out,
                    &format!("+OK maildrop has {count} messages ({size} octets)"),
                );
            }
            ("NOOP", _) => reply(out, "+OK"),
            ("LIST" | "UIDL" | "RETR" | "TOP" | "DELE", _) => reply(out, "-ERR syntax error"),
            ("USER" | "PASS" | "AUTH" | "STLS", _) => reply(out, "-ERR already logged in"),
            _ => reply(out, "-ERR unknown command"),
        }
        Effect::Continue
    }

    /// RFC 2449 §5. Capabilities of the AUTHORIZATION state must be announced in both states,
    /// so the list does not depend on the state; STLS is listed only while it can be used.
    fn capa(&self, out: &mut Vec<u8>) {
        reply(out, "+OK capability list follows");
        for capability in [
            "TOP",
            "USER",
            "UIDL",
            "PIPELINING",
            "RESP-CODES",
            "AUTH-RESP-CODE",
        ] {
            reply(out, capability);
        }
        reply(out, "SASL PLAIN");
        if self.config.tls_available && !self.tls_active {
            reply(out, "STLS");
        }
        reply(out, "IMPLEMENTATION Tern");
        reply(out, ".");
    }

    /// Whether USER, PASS and AUTH may be used on this connection now.
    fn login_allowed(&self) -> bool {
        self.tls_active || !self.config.login_requires_tls
    }

    fn refuse_clear_text_login(&mut self, out: &mut Vec<u8>) {
        self.state = State::Authorization { user: None };
        reply(out, "-ERR [AUTH] TLS is required for login, use STLS");
    }

    /// RFC 1939 §7, USER. The reply does not reveal whether the mailbox exists.
    fn user(&mut self, rest: &str, out: &mut Vec<u8>) {
        if !self.login_allowed() {
            self.refuse_clear_text_login(out);
            return;
        }
        let name = rest.trim();
        if name.is_empty() {
            self.state = State::Authorization { user: None };
            reply(out, "-ERR USER needs a name");
            return;
        }
        self.state = State::Authorization {
            user: Some(name.to_owned()),
        };
        reply(out, "+OK send PASS");
    }

    /// RFC 1939 §7, PASS. Everything after "PASS " is the password, spaces included, as the
    /// RFC allows; the name from USER is used once, whatever the outcome.
    async fn pass(&mut self, password: &str, out: &mut Vec<u8>) -> Effect {
        if !self.login_allowed() {
            self.refuse_clear_text_login(out);
            return Effect::Continue;
        }
        let user = match &mut self.state {
            State::Authorization { user } => user.take(),
            _ => None,
        };
        let Some(user) = user else {
            reply(out, "-ERR send USER first");
            return Effect::Continue;
        };
        self.login(&user, password, out).await
    }

    /// RFC 5034 §4, AUTH. Only PLAIN is offered; "AUTH" alone lists it, as clients written
    /// before CAPA expect.
    async fn auth(&mut self, rest: &str, out: &mut Vec<u8>) -> Effect {
        if !self.login_allowed() {
            self.refuse_clear_text_login(out);
            return Effect::Continue;
        }
        self.state = State::Authorization { user: None };
        let mut args = rest.split(' ').filter(|arg| !arg.is_empty());
        let (mechanism, initial, extra) = (args.next(), args.next(), args.next());
        match (mechanism, initial, extra) {
            (None, _, _) => {
                reply(out, "+OK supported mechanisms follow");
                reply(out, "PLAIN");
                reply(out, ".");
            }
            (Some(mechanism), _, _) if !mechanism.eq_ignore_ascii_case("PLAIN") => {
                reply(out, "-ERR unsupported authentication mechanism");
            }
            (Some(_), None, _) => {
                // RFC 5034 §4: the server's challenge is "+ " and base64 data, empty for PLAIN.
                self.state = State::AuthPlain;
                reply(out, "+ ");
            }
            (Some(_), Some(initial), None) => {
                return self.sasl_plain(initial.as_bytes(), out).await;
            }
            (Some(_), Some(_), Some(_)) => reply(out, "-ERR syntax error"),
        }
        Effect::Continue
    }

    /// Checks one PLAIN response: base64 of "authzid NUL authcid NUL password" (RFC 4616 §2).
    async fn sasl_plain(&mut self, response: &[u8], out: &mut Vec<u8>) -> Effect {
        // RFC 5034 §4: "*" cancels the exchange; "=" is an empty response.
        if response == b"*" {
            reply(out, "-ERR authentication cancelled");
            return Effect::Continue;
        }
        let decoded = if response == b"=" {
            Vec::new()
        } else {
            match base64::engine::general_purpose::STANDARD.decode(response) {
                Ok(decoded) => decoded,
                Err(_) => {
                    reply(out, "-ERR invalid base64 in authentication response");
                    return Effect::Continue;
                }
            }
        };
        let mut fields = decoded.split(|&b| b == 0).map(std::str::from_utf8);
        let (Some(Ok(authzid)), Some(Ok(authcid)), Some(Ok(password)), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            reply(out, "-ERR malformed PLAIN response");
            return Effect::Continue;
        };
        if authcid.is_empty() {
            reply(out, "-ERR malformed PLAIN response");
            return Effect::Continue;
        }
        // Acting as another user would need proxy rights the backend cannot express, so an
        // authorization identity is accepted only when it names the same user.
        if !authzid.is_empty() && authzid != authcid {
            return self.reject_credentials(out);
        }
        self.login(authcid, password, out).await
    }

    /// Checks credentials and, if they hold, takes the maildrop snapshot and enters the
    /// TRANSACTION state (RFC 1939 §4).
    async fn login(&mut self, user: &str, password: &str, out: &mut Vec<u8>) -> Effect {
        match self.backend.login(user, password).await {
            Ok(true) => {}
            Ok(false) => return self.reject_credentials(out),
            Err(error) => {
                backend_failure_at_login(&error, out);
                return Effect::Continue;
            }
        }
        match self.backend.maildrop().await {
            Ok(entries) => {
                let maildrop = Maildrop::new(entries);
                let (count, size) = maildrop.totals();
                reply(
                    out,
                    &format!("+OK maildrop has {count} messages ({size} octets)"),
                );
                self.state = State::Transaction(maildrop);
            }
            Err(error) => backend_failure_at_login(&error, out),
        }
        Effect::Continue
    }

    /// RFC 3206 §4: [AUTH] tells the client its credentials were wrong, not the server.
    fn reject_credentials(&mut self, out: &mut Vec<u8>) -> Effect {
        self.failed_logins = self.failed_logins.saturating_add(1);
        reply(out, "-ERR [AUTH] invalid user name or password");
        if self.failed_logins >= self.config.max_failed_logins {
            Effect::Close
        } else {
            Effect::Continue
        }
    }

    /// RFC 2595 §4, STLS: accepted only in the AUTHORIZATION state, when TLS can be started
    /// and is not already running.
    fn stls(&mut self, out: &mut Vec<u8>) -> Effect {
        if self.tls_active {
            reply(out, "-ERR TLS is already active");
            return Effect::Continue;
        }
        if !self.config.tls_available {
            reply(out, "-ERR STLS is not available");
            return Effect::Continue;
        }
        self.state = State::Authorization { user: None };
        reply(out, "+OK begin TLS negotiation");
        Effect::StartTls
    }

    /// Sends a whole message (RETR) or its header and first `top` body lines (TOP).
    async fn send_message(
        &mut self,
        uid: u32,
        number: usize,
        top: Option<usize>,
        out: &mut Vec<u8>,
    ) {
        match self.backend.body(uid).await {
            Ok(Some(body)) => match top {
                None => {
                    reply(out, &format!("+OK {} octets", message::wire_size(&body)));
                    message::push_message(out, &body);
                }
                Some(lines) => {
                    reply(out, "+OK top of message follows");
                    message::push_top(out, &body, lines);
                }
            },
            Ok(None) => reply(out, &format!("-ERR message {number} no longer exists")),
            Err(error) => {
                tracing::warn!(%error, "pop3 message body unavailable");
                reply(
                    out,
                    &format!("-ERR [SYS/TEMP] cannot read message {number} now"),
                );
            }
        }
    }

    /// RFC 1939 §6: QUIT in the TRANSACTION state enters UPDATE and removes the messages
    /// marked deleted; "-ERR" tells the client some of them may still be there.
    async fn quit(&mut self, out: &mut Vec<u8>) -> Effect {
        let State::Transaction(maildrop) = &self.state else {
            return Effect::Close;
        };
        let deleted: Vec<u32> = maildrop
            .messages
            .iter()
            .filter(|m| m.deleted)
            .map(|m| m.uid)
            .collect();
        let (left, _) = maildrop.totals();
        match self.backend.delete(&deleted).await {
            Ok(()) => {
                let host = self.host_prefix();
                if left == 0 {
                    reply(out, &format!("+OK {host}signing off (maildrop empty)"));
                } else {
                    reply(
                        out,
                        &format!("+OK {host}signing off ({left} messages left)"),
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pop3 deletion at quit failed");
                reply(out, "-ERR [SYS/TEMP] some deleted messages not removed");
            }
        }
        Effect::Close
    }

    /// "host " for the sign-off line, keeping only printable ASCII so a misconfigured name
    /// cannot break the reply line.
    fn host_prefix(&self) -> String {
        let host: String = self
            .config
            .greeting_host
            .chars()
            .filter(|c| ('\x21'..='\x7e').contains(c))
            .take(MAX_UNIQUE_ID)
            .collect();
        if host.is_empty() {
            host
        } else {
            format!("{host} ")
        }
    }
}

fn backend_failure_at_login(error: &BackendError, out: &mut Vec<u8>) {
    match error {
        // RFC 2449 §8.1.2: [IN-USE] means another session holds the maildrop.
        BackendError::Locked => reply(out, "-ERR [IN-USE] maildrop is in use by another session"),
        BackendError::Temporary(_) => {
            tracing::warn!(%error, "pop3 login failed in the backend");
            reply(out, "-ERR [SYS/TEMP] temporary failure, try again later");
        }
    }
}

#[cfg(test)]
mod tests;
