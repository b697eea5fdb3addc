//! The SMTP server session: an I/O-free state machine that takes client bytes and returns the
//! replies to send and what the caller must do next (continue, start TLS, close).
//!
//! One session type serves both the MSA (submission, RFC 6409: `AuthPolicy::Required`, AUTH
//! offered only inside TLS) and the MTA (port 25, RFC 5321: `AuthPolicy::Disabled`); which
//! senders and recipients are acceptable is the [`Handler`]'s decision, not this module's.
//! AUTH offers PLAIN, LOGIN and SCRAM-SHA-256; for SCRAM the session checks the proof itself
//! (`scram.rs`) against keys the handler looks up, so the handler never sees a password.
//!
//! Deliberately absent: sockets, timers and TLS (the caller owns them and reports back through
//! [`Session::tls_started`], [`Session::timeout_reply`] and [`Session::shutdown_reply`]);
//! storage; BINARYMIME and the other extensions not advertised in EHLO (their parameters are
//! refused with 555); an SMTP client (that is `client.rs`).
//!
//! LMTP (RFC 2033) is a mode of the same session ([`Session::lmtp`]): LHLO instead of EHLO and
//! HELO (which are refused), and after the message one reply per accepted recipient, in RCPT
//! order ([`Handler::data_per_recipient`]). Everything else, limits included, is unchanged.
//!
//! DSN (RFC 3461) and REQUIRETLS (RFC 8689) parameters are only parsed and recorded in the
//! [`Envelope`]; honouring them (notifications, TLS on the way out) is the transfer agent's job.
//!
//! Bounds on memory, whatever the client sends:
//! - the pending command line is at most 512 octets (RFC 5321 §4.5.3.1.4), or 12288 for an
//!   `AUTH` command or a SASL response (RFC 4954 §4); longer lines are discarded up to the next
//!   LF and answered with `500 5.5.2`;
//! - a message being received is at most `max_message_size` octets, capacity included; beyond
//!   that it is scanned to its end without being stored (see `body.rs`);
//! - the envelope holds at most `max_recipients` recipients of at most 256 octets each;
//! - the replies returned by one [`Session::feed`] grow with the number of commands in that
//!   input, which the caller bounds by its read size.

use std::future::{Future, ready};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, AUTH_SCRAM_SHA_256, Error as ParseError, MAIL_BODY_7BIT,
    MAIL_BODY_8BITMIME, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom,
    RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RcptTo,
    Request,
};

use crate::body::{Body, DataReceiver};
use crate::dsn::{Notify, RcptParams, Ret};
use crate::reply::Reply;
use crate::sasl::{self, LOGIN_PASSWORD_CHALLENGE, LOGIN_USERNAME_CHALLENGE, SaslError};
use crate::scram::{self, Exchange, Outcome, ScramCredentials, ScramError};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
const MAX_COMMAND_LINE: usize = 512;

/// RFC 4954 §4: an AUTH command with its initial response, and each SASL response line, may
/// be up to 12288 octets.
const MAX_AUTH_LINE: usize = 12288;

/// Whether the session requires SMTP AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Port 25 (RFC 5321): AUTH is neither offered nor accepted.
    Disabled,
    /// Submission (RFC 6409 §4.3): AUTH is offered, and MAIL is refused until it succeeded.
    Required,
}

/// What a session needs to know about the server it speaks for.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Advertised as `SIZE` (RFC 1870) and enforced with `552 5.3.4`.
    pub max_message_size: usize,
    /// Recipients beyond this many are answered `452 4.5.3` (RFC 5321 §4.5.3.1.10).
    pub max_recipients: usize,
    /// After this many negative replies the session says `421 4.7.0` and closes.
    pub max_errors: u32,
    /// Whether STARTTLS is offered (while the connection is not yet in TLS).
    pub tls_available: bool,
    /// Whether AUTH is required (submission) or disabled (port 25).
    pub auth: AuthPolicy,
    /// AUTH is only offered and accepted inside TLS (`530 5.7.0` otherwise).
    pub auth_requires_tls: bool,
}

/// The mail transaction as the handler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The name the client gave in EHLO or HELO.
    pub helo: String,
    /// The reverse-path; empty for the null sender `<>`. Empty while `Handler::mail_from`
    /// is deciding, because the sender is not accepted yet.
    pub mail_from: String,
    /// The recipients accepted so far.
    pub rcpt_to: Vec<String>,
    /// `BODY=8BITMIME` was given (RFC 6152).
    pub body_8bit: bool,
    /// `SMTPUTF8` was given (RFC 6531).
    pub smtputf8: bool,
    /// The `SIZE=` the client declared (RFC 1870), if any.
    pub size_hint: Option<usize>,
    /// The identity the client authenticated as, if it did.
    pub authenticated: Option<String>,
    /// `RET=` (RFC 3461 §4.3), if given.
    pub ret: Option<Ret>,
    /// `ENVID=` decoded from xtext (RFC 3461 §4.4), if given.
    pub envid: Option<String>,
    /// The DSN parameters of each accepted recipient, parallel to `rcpt_to`.
    pub rcpt_params: Vec<RcptParams>,
    /// `REQUIRETLS` was given (RFC 8689 §4.1); only accepted inside TLS.
    pub requiretls: bool,
}

/// The policy and storage behind a session. Every method may be slow (a database, a
/// directory); the session waits for each before it reads the next command.
pub trait Handler: Send {
    /// Checks credentials from AUTH PLAIN or LOGIN. `authzid` is empty unless the client asked
    /// to act as someone else (RFC 4616); on success the session records `authzid` if it is
    /// non-empty, `authcid` otherwise. Refuse with e.g. [`Reply::auth_failed`].
    fn authenticate(
        &mut self,
        authzid: &str,
        authcid: &str,
        password: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// SCRAM-SHA-256 (RFC 5802, RFC 7677), first step: the stored credentials of `authcid`,
    /// or `Ok(None)` when there are none (an unknown user, or an account without SCRAM keys).
    /// The session then goes on with made-up credentials and fails at the proof, so that the
    /// server-first-message does not tell which users exist. `Err` ends the exchange with that
    /// reply (e.g. `454 4.7.0` while the client is throttled). The default knows nobody.
    fn scram_credentials(
        &mut self,
        authcid: &str,
    ) -> impl Future<Output = Result<Option<ScramCredentials>, Reply>> + Send {
        let _ = authcid;
        ready(Ok(None))
    }

    /// SCRAM-SHA-256, last step: the session has checked the client's proof (`verified`) and
    /// asks for the verdict. On `Ok` (which must only follow a verified proof) the session sends
    /// the server signature and, once the client acknowledges it, 235 and records `authzid` if
    /// it is non-empty, `authcid` otherwise. A failed proof should be answered like a wrong
    /// password (e.g. [`Reply::auth_failed`]), counted wherever wrong passwords are counted.
    fn scram_finished(
        &mut self,
        authzid: &str,
        authcid: &str,
        verified: bool,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = (authzid, authcid);
        ready(if verified {
            Ok(())
        } else {
            Err(Reply::auth_failed())
        })
    }

    /// Decides on the reverse-path (`""` for `<>`). `envelope` already carries the MAIL
    /// parameters; `envelope.mail_from` is set only once this returns `Ok`.
    fn mail_from(
        &mut self,
        envelope: &Envelope,
        from: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// Decides on one recipient; `envelope.rcpt_to` holds those accepted before it. A port 25
    /// handler refuses non-local recipients here (e.g. [`Reply::relay_denied`]).
    fn rcpt_to(
        &mut self,
        envelope: &Envelope,
        to: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// The whole message after dot-unstuffing, CRLF line endings. `Ok(reply)` is sent as the
    /// final 250, so the handler must have committed the message before returning it ("250
    /// only after commit"); an internal failure should be `Err(Reply::temporary_failure())`.
    fn data(
        &mut self,
        envelope: &Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, Reply>> + Send;

    /// LMTP only (RFC 2033 §4.2): the message, answered with one reply per recipient in
    /// `envelope.rcpt_to`, in that order; each positive reply again only after that
    /// recipient's copy is committed. The default gives every recipient the reply of
    /// [`Handler::data`]. A list of the wrong length is padded with `451 4.3.0` (or cut).
    fn data_per_recipient(
        &mut self,
        envelope: &Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = Vec<Reply>> + Send {
        async move {
            let reply = match self.data(envelope, message).await {
                Ok(reply) | Err(reply) => reply,
            };
            vec![reply; envelope.rcpt_to.len()]
        }
    }
}

/// What the caller must do after sending [`Output::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep reading.
    Continue,
    /// Perform the TLS handshake now, then call [`Session::tls_started`].
    StartTls,
    /// Close the connection.
    Close,
}

/// The result of feeding input to a session.
#[must_use = "the reply must be sent and the action carried out"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Bytes to send to the client, possibly several replies (PIPELINING, RFC 2920).
    pub reply: Vec<u8>,
    /// What to do once they are sent.
    pub action: Action,
}

/// Where the session is in the protocol.
#[derive(Debug)]
enum State {
    /// Reading command lines.
    Command,
    /// Reading DATA content.
    Data(DataReceiver),
    /// Reading the octets of one BDAT chunk.
    Bdat(BdatChunk),
    /// AUTH PLAIN sent an empty challenge and waits for the response.
    SaslPlain,
    /// AUTH LOGIN asked for the username.
    SaslLoginUsername,
    /// AUTH LOGIN asked for the password.
    SaslLoginPassword { username: String },
    /// AUTH SCRAM-SHA-256 sent an empty challenge and waits for the client-first-message.
    SaslScramFirst,
    /// The server-first-message was sent; waiting for the client-final-message.
    SaslScramFinal(Box<Exchange>),
    /// The server-final-message (the server's signature) was sent; the client's empty
    /// response completes the authentication.
    SaslScramDone { identity: String },
    /// STARTTLS was accepted; nothing more is read until the handshake is done.
    TlsPending,
}

/// One BDAT chunk in flight (RFC 3030 §2).
#[derive(Debug)]
struct BdatChunk {
    remaining: usize,
    last: bool,
    /// The message so far, or `None` when the chunk is only being skipped because the command
    /// was refused; the octets must still be read to stay in sync.
    body: Option<Body>,
    /// The reply refusing the command, sent once its octets have been skipped.
    refusal: Option<Reply>,
}

/// One SMTP server session.
pub struct Session {
    config: Config,
    /// LMTP (RFC 2033) rather than SMTP.
    lmtp: bool,
    tls_active: bool,
    /// The EHLO or HELO name, once one was given.
    helo: Option<String>,
    authenticated: Option<String>,
    /// The open mail transaction, from an accepted MAIL to the end of its message.
    transaction: Option<Envelope>,
    /// The message of a BDAT transaction between chunks.
    bdat_body: Option<Body>,
    state: State,
    /// The command line received so far (bounded, see the module documentation).
    line: Vec<u8>,
    /// The current line was too long and is skipped up to its LF.
    discarding: bool,
    errors: u32,
    closed: bool,
    /// Verbs of the commands handled since the last [`Session::take_verbs`] (for metrics).
    verbs: Vec<&'static str>,
}

impl std::fmt::Debug for Session {
    /// Shows where the session stands but never the buffered input or message: a partial line
    /// may hold a base64 password, and message bodies are never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Command => "command",
            State::Data(_) => "data",
            State::Bdat(_) => "bdat",
            State::SaslPlain
            | State::SaslLoginUsername
            | State::SaslLoginPassword { .. }
            | State::SaslScramFirst
            | State::SaslScramFinal(_)
            | State::SaslScramDone { .. } => "sasl",
            State::TlsPending => "tls-pending",
        };
        f.debug_struct("Session")
            .field("state", &state)
            .field("tls_active", &self.tls_active)
            .field("helo", &self.helo)
            .field("authenticated", &self.authenticated)
            .field("in_transaction", &self.transaction.is_some())
            .field("errors", &self.errors)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session; `tls_active` is true for implicit TLS (RFC 8314 port 465).
    pub fn new(config: Config, tls_active: bool) -> Session {
        Session {
            config,
            lmtp: false,
            tls_active,
            helo: None,
            authenticated: None,
            transaction: None,
            bdat_body: None,
            state: State::Command,
            line: Vec::new(),
            discarding: false,
            errors: 0,
            closed: false,
            verbs: Vec::new(),
        }
    }

    /// A new LMTP session (RFC 2033); see the module documentation.
    pub fn lmtp(config: Config, tls_active: bool) -> Session {
        Session {
            lmtp: true,
            ..Session::new(config, tls_active)
        }
    }

    /// The verbs of the commands handled since the last call, oldest first (EHLO, MAIL, …;
    /// `invalid` for a line that did not parse). Metrics read it after each `feed`.
    pub fn take_verbs(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.verbs)
    }

    /// The 220 greeting (RFC 5321 §4.2; RFC 2034 §3 exempts it from enhanced status codes).
    pub fn greeting(&self) -> Vec<u8> {
        let protocol = if self.lmtp { "LMTP" } else { "ESMTP" };
        Reply::without_status(220, format!("{} {protocol} Tern", self.config.hostname)).to_bytes()
    }

    /// The reply for a client that stayed silent too long (RFC 5321 §4.5.3.2).
    pub fn timeout_reply(&self) -> Vec<u8> {
        Reply::new(
            421,
            (4, 4, 2),
            format!("{} idle timeout", self.config.hostname),
        )
        .to_bytes()
    }

    /// The reply sent when the server shuts down.
    pub fn shutdown_reply(&self) -> Vec<u8> {
        Reply::new(421, (4, 3, 2), "shutting down").to_bytes()
    }

    /// The identity the client authenticated as, if it did.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// Whether the connection is (as far as the session knows) inside TLS.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Octets held for the client right now (pending line plus message buffers), for the
    /// bounded-memory tests.
    #[cfg(test)]
    pub(crate) fn buffered_octets(&self) -> usize {
        let in_flight = match &self.state {
            State::Data(receiver) => receiver.body().capacity(),
            State::Bdat(chunk) => chunk.body.as_ref().map_or(0, Body::capacity),
            _ => 0,
        };
        self.line.len() + in_flight + self.bdat_body.as_ref().map_or(0, Body::capacity)
    }

    /// The caller finished the TLS handshake after [`Action::StartTls`]. RFC 3207 §4.2: the
    /// session forgets everything it learned from the client (greeting, authentication, any
    /// transaction and any buffered input). The error count is kept: it is not knowledge
    /// from the client, and resetting it would let a client reset the limit.
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.helo = None;
        self.authenticated = None;
        self.reset_transaction();
        self.state = State::Command;
        self.line = Vec::new();
        self.discarding = false;
    }

    /// Feeds bytes from the client; runs every complete command in order (PIPELINING) and
    /// returns what to send back and what the caller must do next. Input after a STARTTLS
    /// command in the same buffer is discarded (RFC 3207 §4, CVE-2011-0411).
    pub async fn feed<H: Handler>(&mut self, input: &[u8], handler: &mut H) -> Output {
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            if self.closed {
                return Output {
                    reply: out,
                    action: Action::Close,
                };
            }
            if matches!(self.state, State::TlsPending) {
                // Whatever follows STARTTLS in the clear is never acted on: it could have been
                // injected by a man in the middle before the handshake.
                return Output {
                    reply: out,
                    action: Action::StartTls,
                };
            }
            if rest.is_empty() {
                return Output {
                    reply: out,
                    action: Action::Continue,
                };
            }
            match std::mem::replace(&mut self.state, State::Command) {
                State::Data(mut receiver) => {
                    let (used, done) = receiver.ingest(rest);
                    rest = rest.get(used..).unwrap_or_default();
                    if done {
                        self.finish_message(receiver.into_body(), handler, &mut out)
                            .await;
                    } else {
                        self.state = State::Data(receiver);
                    }
                }
                State::Bdat(mut chunk) => {
                    let take = chunk.remaining.min(rest.len());
                    let (octets, tail) = rest.split_at(take);
                    rest = tail;
                    chunk.remaining -= take;
                    if let Some(body) = chunk.body.as_mut() {
                        for &octet in octets {
                            body.push(octet);
                        }
                    }
                    if chunk.remaining == 0 {
                        self.finish_chunk(chunk, handler, &mut out).await;
                    } else {
                        self.state = State::Bdat(chunk);
                    }
                }
                other => {
                    self.state = other;
                    if let Some(line) = self.take_line(&mut rest, &mut out) {
                        self.dispatch_line(line, handler, &mut out).await;
                    }
                }
            }
        }
    }

    /// Moves input into the line buffer; returns the line once its LF arrived. Over-long lines
    /// are answered here and skipped up to their LF.
    fn take_line(&mut self, rest: &mut &[u8], out: &mut Vec<u8>) -> Option<Vec<u8>> {
        let input = *rest;
        let newline = input.iter().position(|&octet| octet == b'\n');
        let end = newline.map_or(input.len(), |position| position + 1);
        let (chunk, tail) = input.split_at(end);
        *rest = tail;
        let complete = newline.is_some();

        if self.discarding {
            if complete {
                self.discarding = false;
                self.line_too_long(out);
            }
            return None;
        }

        let limit = if self.in_sasl() || starts_with_auth(&self.line, chunk) {
            MAX_AUTH_LINE
        } else {
            MAX_COMMAND_LINE
        };
        if self.line.len() + chunk.len() > limit {
            self.line = Vec::new();
            if complete {
                self.line_too_long(out);
            } else {
                self.discarding = true;
            }
            return None;
        }
        self.line.extend_from_slice(chunk);
        complete.then(|| std::mem::take(&mut self.line))
    }

    fn in_sasl(&self) -> bool {
        matches!(
            self.state,
            State::SaslPlain
                | State::SaslLoginUsername
                | State::SaslLoginPassword { .. }
                | State::SaslScramFirst
                | State::SaslScramFinal(_)
                | State::SaslScramDone { .. }
        )
    }

    fn line_too_long(&mut self, out: &mut Vec<u8>) {
        // A too-long SASL response also ends the exchange: the client is out of step.
        if self.in_sasl() {
            self.state = State::Command;
        }
        self.emit(out, Reply::new(500, (5, 5, 2), "line too long"));
    }

    /// Writes a reply and counts negative ones; closes after `max_errors` of them, or at once
    /// on a 421 (RFC 5321 §3.8: 421 means the service is closing the channel).
    fn emit(&mut self, out: &mut Vec<u8>, reply: Reply) {
        out.extend_from_slice(&reply.to_bytes());
        if reply.wire_code() == 421 {
            self.closed = true;
        } else if !reply.is_positive() {
            self.errors = self.errors.saturating_add(1);
            if self.errors >= self.config.max_errors {
                out.extend_from_slice(
                    &Reply::new(
                        421,
                        (4, 7, 0),
                        format!(
                            "{} too many errors, closing connection",
                            self.config.hostname
                        ),
                    )
                    .to_bytes(),
                );
                self.closed = true;
            }
        }
    }

    fn reset_transaction(&mut self) {
        self.transaction = None;
        self.bdat_body = None;
    }

    async fn dispatch_line<H: Handler>(
        &mut self,
        line: Vec<u8>,
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        match std::mem::replace(&mut self.state, State::Command) {
            State::SaslPlain => {
                if let Some(response) = self.sasl_response(&line, out) {
                    match sasl::decode(response) {
                        Ok(message) => self.auth_plain(&message, handler, out).await,
                        Err(error) => self.sasl_error(error, out),
                    }
                }
            }
            State::SaslLoginUsername => {
                if let Some(response) = self.sasl_response(&line, out) {
                    match sasl::decode_text(response) {
                        Ok(username) => self.ask_login_password(username, out),
                        Err(error) => self.sasl_error(error, out),
                    }
                }
            }
            State::SaslLoginPassword { username } => {
                if let Some(response) = self.sasl_response(&line, out) {
                    match sasl::decode_text(response) {
                        Ok(password) => {
                            self.authenticate("", &username, &password, handler, out)
                                .await;
                        }
                        Err(error) => self.sasl_error(error, out),
                    }
                }
            }
            State::SaslScramFirst => {
                if let Some(response) = self.sasl_response(&line, out) {
                    match sasl::decode(response) {
                        Ok(message) => self.scram_first(&message, handler, out).await,
                        Err(error) => self.sasl_error(error, out),
                    }
                }
            }
            State::SaslScramFinal(exchange) => {
                if let Some(response) = self.sasl_response(&line, out) {
                    match sasl::decode(response) {
                        Ok(message) => self.scram_final(&exchange, &message, handler, out).await,
                        Err(error) => self.sasl_error(error, out),
                    }
                }
            }
            State::SaslScramDone { identity } => {
                if let Some(response) = self.sasl_response(&line, out) {
                    // RFC 4954 §4: the client answers the server's last data with an empty
                    // response before the server says 235.
                    match sasl::decode(response) {
                        Ok(message) if message.is_empty() => {
                            self.authenticated = Some(identity);
                            self.emit(out, Reply::new(235, (2, 7, 0), "authentication successful"));
                        }
                        Ok(_) => self.sasl_error(SaslError::Malformed, out),
                        Err(error) => self.sasl_error(error, out),
                    }
                }
            }
            other => {
                self.state = other;
                self.command(&line, handler, out).await;
            }
        }
    }

    /// The client-first-message: look the user up and answer with the server-first-message.
    async fn scram_first<H: Handler>(
        &mut self,
        message: &[u8],
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        let first = match scram::parse_client_first(message) {
            Ok(first) => first,
            Err(error) => {
                self.scram_error(error, out);
                return;
            }
        };
        let credentials = match handler.scram_credentials(&first.username).await {
            Ok(credentials) => credentials,
            Err(reply) => {
                self.emit(out, reply);
                return;
            }
        };
        let exchange = Exchange::start(first, credentials);
        let challenge = STANDARD.encode(exchange.server_first());
        self.emit(out, Reply::without_status(334, challenge));
        self.state = State::SaslScramFinal(Box::new(exchange));
    }

    /// The client-final-message: check the proof, let the handler decide, and send the
    /// server-final-message.
    async fn scram_final<H: Handler>(
        &mut self,
        exchange: &Exchange,
        message: &[u8],
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        let outcome = match exchange.finish(message) {
            Ok(outcome) => outcome,
            Err(error) => {
                self.scram_error(error, out);
                return;
            }
        };
        let (authzid, authcid) = (exchange.authzid(), exchange.username());
        match outcome {
            Outcome::Verified { server_final } => {
                match handler.scram_finished(authzid, authcid, true).await {
                    Ok(()) => {
                        let identity = if authzid.is_empty() { authcid } else { authzid };
                        self.emit(
                            out,
                            Reply::without_status(334, STANDARD.encode(server_final)),
                        );
                        self.state = State::SaslScramDone {
                            identity: identity.to_owned(),
                        };
                    }
                    Err(reply) => self.emit(out, reply),
                }
            }
            Outcome::Failed => {
                let reply = match handler.scram_finished(authzid, authcid, false).await {
                    Err(reply) => reply,
                    // A handler cannot accept a failed proof.
                    Ok(()) => Reply::auth_failed(),
                };
                self.emit(out, reply);
            }
        }
    }

    fn scram_error(&mut self, error: ScramError, out: &mut Vec<u8>) {
        match error {
            ScramError::Malformed => self.sasl_error(SaslError::Malformed, out),
            // RFC 5802 §6: a server without channel binding must fail an exchange that asks
            // for it; SCRAM-SHA-256-PLUS, the mechanism that would bind, is not offered.
            ScramError::ChannelBindingRequested => self.emit(
                out,
                Reply::new(504, (5, 5, 4), "channel binding not supported"),
            ),
        }
    }

    /// The text of a SASL response line, or `None` after answering a cancellation or garbage.
    fn sasl_response<'a>(&mut self, line: &'a [u8], out: &mut Vec<u8>) -> Option<&'a str> {
        let Ok(text) = std::str::from_utf8(line) else {
            self.sasl_error(SaslError::Base64, out);
            return None;
        };
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            // RFC 4954 §4: "*" cancels the exchange, answered with 501.
            self.emit(out, Reply::new(501, (5, 7, 0), "authentication cancelled"));
            return None;
        }
        Some(text)
    }

    fn sasl_error(&mut self, error: SaslError, out: &mut Vec<u8>) {
        let text = match error {
            SaslError::Base64 => "invalid base64 in SASL response",
            SaslError::Malformed => "malformed SASL response",
        };
        self.emit(out, Reply::new(501, (5, 5, 2), text));
    }

    fn ask_login_password(&mut self, username: String, out: &mut Vec<u8>) {
        self.emit(out, Reply::without_status(334, LOGIN_PASSWORD_CHALLENGE));
        self.state = State::SaslLoginPassword { username };
    }

    async fn auth_plain<H: Handler>(&mut self, message: &[u8], handler: &mut H, out: &mut Vec<u8>) {
        match sasl::parse_plain(message) {
            Ok(credentials) => {
                self.authenticate(
                    &credentials.authzid,
                    &credentials.authcid,
                    &credentials.password,
                    handler,
                    out,
                )
                .await;
            }
            Err(error) => self.sasl_error(error, out),
        }
    }

    async fn authenticate<H: Handler>(
        &mut self,
        authzid: &str,
        authcid: &str,
        password: &str,
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        match handler.authenticate(authzid, authcid, password).await {
            Ok(()) => {
                let identity = if authzid.is_empty() { authcid } else { authzid };
                self.authenticated = Some(identity.to_owned());
                self.emit(out, Reply::new(235, (2, 7, 0), "authentication successful"));
            }
            Err(reply) => self.emit(out, reply),
        }
    }

    async fn command<H: Handler>(&mut self, line: &[u8], handler: &mut H, out: &mut Vec<u8>) {
        // Addresses may be UTF-8 (RFC 6531); anything that is not UTF-8 is garbage, and
        // refusing it here keeps the parser's lossy decoding from inventing addresses.
        if std::str::from_utf8(line).is_err() {
            self.verbs.push("invalid");
            self.emit(
                out,
                Reply::new(500, (5, 5, 2), "command is not valid UTF-8"),
            );
            return;
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(error) => {
                self.verbs.push("invalid");
                self.emit(out, parse_error_reply(error));
                return;
            }
        };
        self.verbs.push(request.name());
        match request {
            // RFC 2033 §4.1: LHLO replaces EHLO and HELO, which an LMTP server refuses.
            Request::Ehlo { .. } | Request::Helo { .. } if self.lmtp => {
                self.emit(out, Reply::new(500, (5, 5, 1), "this is LMTP: use LHLO"));
            }
            Request::Lhlo { host } if self.lmtp => self.hello(host.into_owned(), true, out),
            Request::Ehlo { host } => self.hello(host.into_owned(), true, out),
            Request::Helo { host } => self.hello(host.into_owned(), false, out),
            Request::Mail { from } => self.mail(from, line, handler, out).await,
            Request::Rcpt { to } => self.rcpt(to, line, handler, out).await,
            Request::Data => self.data(out),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last, handler, out).await,
            Request::Rset => {
                self.reset_transaction();
                self.emit(out, Reply::ok());
            }
            Request::Noop { .. } => self.emit(out, Reply::ok()),
            Request::Quit => {
                let text = format!("{} closing connection", self.config.hostname);
                self.emit(out, Reply::new(221, (2, 0, 0), text));
                self.closed = true;
            }
            // RFC 5321 §3.5.3: 252 when the server will not verify but will accept mail.
            Request::Vrfy { .. } => self.emit(
                out,
                Reply::new(
                    252,
                    (2, 5, 0),
                    "cannot VRFY user, but will accept message and attempt delivery",
                ),
            ),
            Request::Help { .. } => self.emit(
                out,
                Reply::new(
                    214,
                    (2, 0, 0),
                    "commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
                ),
            ),
            Request::StartTls => self.starttls(out),
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                self.auth(mechanism, &initial_response, handler, out)
                    .await;
            }
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.emit(out, Reply::new(502, (5, 5, 1), "command not implemented"));
            }
        }
    }

    fn hello(&mut self, host: String, extended: bool, out: &mut Vec<u8>) {
        // RFC 5321 §4.1.4: EHLO/HELO resets any transaction, as RSET would.
        self.reset_transaction();
        self.helo = Some(host);
        let hostname = &self.config.hostname;
        let reply = if extended {
            let mut lines = vec![
                hostname.clone(),
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.config.max_message_size),
                "8BITMIME".to_owned(),
                "SMTPUTF8".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "CHUNKING".to_owned(),
                "DSN".to_owned(),
            ];
            if self.config.tls_available && !self.tls_active {
                lines.push("STARTTLS".to_owned());
            }
            // RFC 8689 §4: REQUIRETLS is offered only on a connection that is in TLS.
            if self.tls_active {
                lines.push("REQUIRETLS".to_owned());
            }
            if self.auth_offered() {
                lines.push("AUTH PLAIN LOGIN SCRAM-SHA-256".to_owned());
            }
            Reply::without_status(250, lines.join("\n"))
        } else {
            Reply::without_status(250, hostname.clone())
        };
        self.emit(out, reply);
    }

    fn auth_offered(&self) -> bool {
        self.config.auth == AuthPolicy::Required
            && (self.tls_active || !self.config.auth_requires_tls)
    }

    async fn mail<H: Handler>(
        &mut self,
        from: MailFrom<std::borrow::Cow<'_, str>>,
        line: &[u8],
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        let refusal = if self.helo.is_none() {
            Some(Reply::new(
                503,
                (5, 5, 1),
                if self.lmtp {
                    "send LHLO first"
                } else {
                    "send EHLO or HELO first"
                },
            ))
        } else if self.transaction.is_some() {
            Some(Reply::new(503, (5, 5, 1), "nested MAIL command"))
        } else if self.config.auth == AuthPolicy::Required && self.authenticated.is_none() {
            // RFC 4954 §6: 530 5.7.0 when policy requires authentication first.
            Some(Reply::new(530, (5, 7, 0), "authentication required"))
        } else if from.address.is_empty() && !angle_content(line).is_empty() {
            // The parser reads <postmaster> as the null path; as a reverse-path it is invalid.
            Some(Reply::new(501, (5, 1, 7), "bad sender address syntax"))
        } else if let Some(reply) = unsupported_mail_parameters(&from) {
            Some(reply)
        } else if from.flags & MAIL_RET_FULL != 0 && from.flags & MAIL_RET_HDRS != 0 {
            // RFC 3461 §4.3: RET takes one value, and no parameter may be given twice.
            Some(Reply::new(501, (5, 5, 4), "invalid RET parameter"))
        } else if from
            .env_id
            .as_deref()
            .is_some_and(|envid| !is_printable_ascii(envid))
        {
            // RFC 3461 §4.4: the ENVID is printable US-ASCII; refusing controls here also
            // keeps a decoded CRLF from reaching the header of a DSN.
            Some(Reply::new(501, (5, 5, 4), "invalid ENVID parameter"))
        } else if from.flags & MAIL_REQUIRETLS != 0 && !self.tls_active {
            // RFC 8689 §4.1: REQUIRETLS is only valid on a TLS connection.
            Some(Reply::new(
                530,
                (5, 7, 10),
                "REQUIRETLS needs a TLS connection",
            ))
        } else if from.size > self.config.max_message_size {
            // RFC 1870 §6: refuse at MAIL when the declared size is already too large.
            Some(Reply::new(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size",
            ))
        } else if !from.address.is_ascii() && from.flags & MAIL_SMTPUTF8 == 0 {
            // RFC 6531 §3.5: a non-ASCII address needs the SMTPUTF8 parameter.
            Some(Reply::new(
                553,
                (5, 6, 7),
                "non-ASCII address needs SMTPUTF8",
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.emit(out, reply);
            return;
        }

        let envelope = Envelope {
            helo: self.helo.clone().unwrap_or_default(),
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            body_8bit: from.flags & MAIL_BODY_8BITMIME != 0,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            size_hint: (from.size > 0).then_some(from.size),
            authenticated: self.authenticated.clone(),
            ret: if from.flags & MAIL_RET_FULL != 0 {
                Some(Ret::Full)
            } else if from.flags & MAIL_RET_HDRS != 0 {
                Some(Ret::Headers)
            } else {
                None
            },
            envid: from.env_id.as_deref().map(str::to_owned),
            rcpt_params: Vec::new(),
            requiretls: from.flags & MAIL_REQUIRETLS != 0,
        };
        match handler.mail_from(&envelope, &from.address).await {
            Ok(()) => {
                self.transaction = Some(Envelope {
                    mail_from: from.address.into_owned(),
                    ..envelope
                });
                self.emit(out, Reply::new(250, (2, 1, 0), "sender OK"));
            }
            Err(reply) => self.emit(out, reply),
        }
    }

    async fn rcpt<H: Handler>(
        &mut self,
        to: RcptTo<std::borrow::Cow<'_, str>>,
        line: &[u8],
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        let address = if to.address.is_empty() {
            // The parser reads both <> and <postmaster> as empty; only the latter is a valid
            // forward-path (RFC 5321 §4.5.1: every server must accept "Postmaster").
            if angle_content(line).eq_ignore_ascii_case("postmaster") {
                "postmaster".to_owned()
            } else {
                String::new()
            }
        } else {
            to.address.into_owned()
        };
        let refusal = match &self.transaction {
            None => Some(Reply::new(503, (5, 5, 1), "need MAIL before RCPT")),
            Some(_) if self.bdat_body.is_some() => {
                Some(Reply::new(503, (5, 5, 1), "RCPT not allowed after BDAT"))
            }
            Some(_) if address.is_empty() => {
                Some(Reply::new(501, (5, 1, 3), "bad recipient address syntax"))
            }
            Some(_) if to.flags & !NOTIFY_FLAGS != 0 || to.rrvs != 0 => {
                Some(Reply::new(555, (5, 5, 4), "RCPT parameters not supported"))
            }
            // RFC 3461 §4.1: NEVER must appear alone; the parser only catches it after others.
            Some(_)
                if to.flags & RCPT_NOTIFY_NEVER != 0
                    && to.flags & (NOTIFY_FLAGS & !RCPT_NOTIFY_NEVER) != 0 =>
            {
                Some(Reply::new(501, (5, 5, 4), "invalid NOTIFY parameter"))
            }
            // The parser accepts only the rfc822 address type and decodes its xtext; a decoded
            // address must still be printable ASCII (RFC 3461 §4.2, RFC 5321 §4.1.2), which
            // also keeps control characters out of the Original-Recipient field of a DSN.
            Some(_)
                if to
                    .orcpt
                    .as_deref()
                    .is_some_and(|orcpt| !is_printable_ascii(orcpt)) =>
            {
                Some(Reply::new(501, (5, 5, 4), "invalid ORCPT parameter"))
            }
            Some(envelope) if envelope.rcpt_to.len() >= self.config.max_recipients => {
                Some(Reply::new(452, (4, 5, 3), "too many recipients"))
            }
            Some(envelope) if !address.is_ascii() && !envelope.smtputf8 => Some(Reply::new(
                553,
                (5, 6, 7),
                "non-ASCII address needs SMTPUTF8",
            )),
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.emit(out, reply);
            return;
        }
        let Some(envelope) = self.transaction.as_ref() else {
            return;
        };
        let params = RcptParams {
            notify: notify_from_flags(to.flags),
            orcpt: to.orcpt.as_deref().map(|orcpt| format!("rfc822;{orcpt}")),
        };
        match handler.rcpt_to(envelope, &address).await {
            Ok(()) => {
                if let Some(envelope) = self.transaction.as_mut() {
                    envelope.rcpt_to.push(address);
                    envelope.rcpt_params.push(params);
                }
                self.emit(out, Reply::new(250, (2, 1, 5), "recipient OK"));
            }
            Err(reply) => self.emit(out, reply),
        }
    }

    /// Why DATA or BDAT cannot start now, if it cannot.
    fn message_refusal(&self) -> Option<Reply> {
        match &self.transaction {
            None => Some(Reply::new(503, (5, 5, 1), "need MAIL and RCPT first")),
            // RFC 5321 §3.3: 554 (or 503) when no recipient was accepted.
            Some(envelope) if envelope.rcpt_to.is_empty() => {
                Some(Reply::new(554, (5, 5, 1), "no valid recipients"))
            }
            Some(_) => None,
        }
    }

    fn data(&mut self, out: &mut Vec<u8>) {
        let refusal = if self.bdat_body.is_some() {
            // RFC 3030 §2: DATA and BDAT may not be mixed in one transaction.
            Some(Reply::new(503, (5, 5, 1), "DATA not allowed after BDAT"))
        } else {
            self.message_refusal()
        };
        if let Some(reply) = refusal {
            self.emit(out, reply);
            return;
        }
        self.emit(
            out,
            Reply::without_status(354, "end data with <CR><LF>.<CR><LF>"),
        );
        self.state = State::Data(DataReceiver::new(self.config.max_message_size));
    }

    async fn bdat<H: Handler>(
        &mut self,
        chunk_size: usize,
        last: bool,
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        // RFC 3030 §2: the chunk's octets follow the command whatever the reply, so a refused
        // chunk is still read (and dropped) before the refusal is sent.
        let refusal = self.message_refusal();
        let body = if refusal.is_none() {
            Some(
                self.bdat_body
                    .take()
                    .unwrap_or_else(|| Body::new(self.config.max_message_size)),
            )
        } else {
            None
        };
        let chunk = BdatChunk {
            remaining: chunk_size,
            last,
            body,
            refusal,
        };
        if chunk_size == 0 {
            self.finish_chunk(chunk, handler, out).await;
        } else {
            self.state = State::Bdat(chunk);
        }
    }

    async fn finish_chunk<H: Handler>(
        &mut self,
        chunk: BdatChunk,
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        if let Some(reply) = chunk.refusal {
            self.emit(out, reply);
            return;
        }
        let Some(body) = chunk.body else {
            return;
        };
        if chunk.last {
            self.finish_message(body, handler, out).await;
        } else if let Some(reply) = body.refusal() {
            // Refusing as soon as possible tells the client to stop sending chunks; the
            // transaction is over, so later chunks get 503 (RFC 3030 §2).
            self.reset_transaction();
            self.emit(out, reply);
        } else {
            let text = format!("{} octets received", body.size());
            self.bdat_body = Some(body);
            self.emit(out, Reply::new(250, (2, 0, 0), text));
        }
    }

    async fn finish_message<H: Handler>(&mut self, body: Body, handler: &mut H, out: &mut Vec<u8>) {
        self.bdat_body = None;
        let Some(envelope) = self.transaction.take() else {
            self.emit(out, Reply::new(503, (5, 5, 1), "no mail transaction"));
            return;
        };
        if self.lmtp {
            // RFC 2033 §4.2: one reply per recipient accepted at RCPT, in order. They are not
            // counted as errors: a full mailbox is not the client's mistake.
            let count = envelope.rcpt_to.len();
            let mut replies = match body.finish() {
                Ok(message) => handler.data_per_recipient(&envelope, message).await,
                Err(reply) => vec![reply; count],
            };
            replies.resize_with(count, Reply::temporary_failure);
            for reply in replies {
                out.extend_from_slice(&reply.to_bytes());
            }
            return;
        }
        let reply = match body.finish() {
            Ok(message) => match handler.data(&envelope, message).await {
                Ok(reply) | Err(reply) => reply,
            },
            Err(reply) => reply,
        };
        self.emit(out, reply);
    }

    fn starttls(&mut self, out: &mut Vec<u8>) {
        if self.tls_active {
            self.emit(out, Reply::new(503, (5, 5, 1), "already in TLS"));
        } else if !self.config.tls_available {
            self.emit(out, Reply::new(454, (4, 7, 0), "TLS not available"));
        } else {
            self.emit(out, Reply::new(220, (2, 0, 0), "ready to start TLS"));
            self.line = Vec::new();
            self.state = State::TlsPending;
        }
    }

    async fn auth<H: Handler>(
        &mut self,
        mechanism: u64,
        initial_response: &str,
        handler: &mut H,
        out: &mut Vec<u8>,
    ) {
        let refusal = if self.config.auth == AuthPolicy::Disabled {
            Some(Reply::new(502, (5, 5, 1), "AUTH not available"))
        } else if self.helo.is_none() {
            Some(Reply::new(503, (5, 5, 1), "send EHLO first"))
        } else if self.authenticated.is_some() {
            // RFC 4954 §4: AUTH is not permitted once authenticated.
            Some(Reply::new(503, (5, 5, 1), "already authenticated"))
        } else if self.transaction.is_some() {
            // RFC 4954 §4: AUTH is not permitted during a mail transaction.
            Some(Reply::new(
                503,
                (5, 5, 1),
                "AUTH not allowed during a mail transaction",
            ))
        } else if self.config.auth_requires_tls && !self.tls_active {
            Some(Reply::new(
                530,
                (5, 7, 0),
                "must issue a STARTTLS command first",
            ))
        } else if ![AUTH_PLAIN, AUTH_LOGIN, AUTH_SCRAM_SHA_256].contains(&mechanism) {
            Some(Reply::new(504, (5, 5, 4), "mechanism not supported"))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.emit(out, reply);
            return;
        }

        let has_initial = !initial_response.is_empty();
        if mechanism == AUTH_SCRAM_SHA_256 {
            if !has_initial {
                self.emit(out, Reply::without_status(334, ""));
                self.state = State::SaslScramFirst;
                return;
            }
            match sasl::decode(initial_response) {
                Ok(message) => self.scram_first(&message, handler, out).await,
                Err(error) => self.sasl_error(error, out),
            }
        } else if mechanism == AUTH_PLAIN {
            if !has_initial {
                // RFC 4954 §4: without an initial response the server sends an empty challenge.
                self.emit(out, Reply::without_status(334, ""));
                self.state = State::SaslPlain;
                return;
            }
            match sasl::decode(initial_response) {
                Ok(message) => self.auth_plain(&message, handler, out).await,
                Err(error) => self.sasl_error(error, out),
            }
        } else if has_initial {
            // Clients may send the LOGIN username as an initial response.
            match sasl::decode_text(initial_response) {
                Ok(username) => self.ask_login_password(username, out),
                Err(error) => self.sasl_error(error, out),
            }
        } else {
            self.emit(out, Reply::without_status(334, LOGIN_USERNAME_CHALLENGE));
            self.state = State::SaslLoginUsername;
        }
    }
}

/// Whether the line (what is buffered plus the new chunk) starts with `AUTH `, which earns it
/// the longer limit of RFC 4954 §4.
fn starts_with_auth(buffered: &[u8], chunk: &[u8]) -> bool {
    let mut prefix = buffered.iter().chain(chunk).take(5);
    b"AUTH ".iter().all(|expected| {
        prefix
            .next()
            .is_some_and(|octet| octet.eq_ignore_ascii_case(expected))
    })
}

/// The text between the first `<` and the following `>` of a command line, or "".
fn angle_content(line: &[u8]) -> &str {
    let Some(open) = line.iter().position(|&octet| octet == b'<') else {
        return "";
    };
    let after = line.get(open + 1..).unwrap_or_default();
    let close = after
        .iter()
        .position(|&octet| octet == b'>')
        .unwrap_or(after.len());
    std::str::from_utf8(after.get(..close).unwrap_or_default())
        .unwrap_or_default()
        .trim()
}

/// The RCPT flags of RFC 3461 §4.1 (NOTIFY); the parser already refuses NEVER combined with
/// anything else and unknown keywords.
const NOTIFY_FLAGS: u64 =
    RCPT_NOTIFY_NEVER | RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY;

/// The NOTIFY set of a RCPT command; no NOTIFY flag at all means the parameter was absent.
fn notify_from_flags(flags: u64) -> Notify {
    if flags & NOTIFY_FLAGS == 0 {
        return Notify::default();
    }
    let mut notify = Notify::NEVER;
    for (flag, event) in [
        (RCPT_NOTIFY_SUCCESS, Notify::SUCCESS),
        (RCPT_NOTIFY_FAILURE, Notify::FAILURE),
        (RCPT_NOTIFY_DELAY, Notify::DELAY),
    ] {
        if flags & flag != 0 {
            notify = notify.with(event);
        }
    }
    notify
}

/// Whether a decoded xtext value is non-empty printable US-ASCII (space included).
fn is_printable_ascii(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|octet| (b' '..=b'~').contains(&octet))
}

/// MAIL parameters of extensions this server does not advertise (RFC 5321 §4.1.1.11: 555).
/// The AUTH= parameter is accepted and ignored, which RFC 4954 §5 permits.
fn unsupported_mail_parameters(from: &MailFrom<std::borrow::Cow<'_, str>>) -> Option<Reply> {
    let supported = MAIL_BODY_7BIT
        | MAIL_BODY_8BITMIME
        | MAIL_SMTPUTF8
        | MAIL_RET_FULL
        | MAIL_RET_HDRS
        | MAIL_REQUIRETLS;
    let unsupported = from.flags & !supported != 0
        || from.trans_id.is_some()
        || from.by != 0
        || from.solicit.is_some()
        || from.mtrk.is_some()
        || from.hold_for != 0
        || from.hold_until != 0
        || from.mt_priority != 0;
    unsupported.then(|| Reply::new(555, (5, 5, 4), "MAIL parameter not supported"))
}

/// The reply for a command line the parser refused.
fn parse_error_reply(error: ParseError) -> Reply {
    match error {
        ParseError::UnknownCommand => Reply::new(500, (5, 5, 2), "command not recognized"),
        ParseError::InvalidSenderAddress => Reply::new(501, (5, 1, 7), "bad sender address syntax"),
        ParseError::InvalidRecipientAddress => {
            Reply::new(501, (5, 1, 3), "bad recipient address syntax")
        }
        ParseError::SyntaxError { syntax } => {
            Reply::new(501, (5, 5, 4), format!("syntax: {syntax}"))
        }
        ParseError::InvalidParameter { param } => {
            Reply::new(501, (5, 5, 4), format!("invalid {param} parameter"))
        }
        ParseError::UnsupportedParameter { param } => {
            // The name comes from the client: keep it short and printable in the reply.
            let name: String = param
                .chars()
                .filter(|ch| ch.is_ascii_graphic())
                .take(32)
                .collect();
            Reply::new(555, (5, 5, 4), format!("unsupported parameter {name}"))
        }
        ParseError::NeedsMoreData { .. }
        | ParseError::ResponseTooLong
        | ParseError::InvalidResponse { .. } => {
            Reply::new(500, (5, 5, 2), "command not recognized")
        }
    }
}
