//! The IMAP server session: connection state (RFC 9051 §3), command dispatch and the selected
//! mailbox's view of message sequence numbers.
//!
//! The session never touches a socket: bytes come in through [`Session::feed`] and the replies
//! and the next [`Action`] go out in an [`Output`]. It keeps its own snapshot of the selected
//! mailbox (sequence number → UID) so that numbers only change when the client is told with an
//! untagged EXPUNGE or EXISTS, never in the middle of FETCH, STORE or SEARCH (RFC 9051 §7.5.1).
//! IDLE (RFC 2177) is a state of its own: the agent watches for changes and calls
//! [`Session::poll_changes`]. MIME structure (BODYSTRUCTURE, numbered parts) is read by
//! `mime.rs`. SEARCH lives in `session/search.rs`; ENABLE, CONDSTORE and QRESYNC (RFC 7162)
//! in `session/condstore.rs`.

use std::borrow::Cow;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::command::{FetchModifier, SelectParameter, StoreModifier};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::imap_types::flag::{Flag, FlagPerm, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_codec::imap_types::status::StatusDataItemName;
use imap_codec::{AuthenticateDataCodec, CommandCodec};

use crate::framing::{Frame, Framer, Rejection};
use crate::response::{self, bad, code_other, no, ok};
use crate::{
    Action, Backend, BackendError, Config, FlagOp, MailboxChanges, MailboxEntry, MessageMeta,
    Output, message, mime, mutf7, subscriptions,
};

mod condstore;
mod ext;
mod list;
mod search;
mod searchres;
mod sort;
mod thread;
mod view;

use condstore::Enabled;
use view::{Meta, View};

/// The hierarchy delimiter we present (RFC 9051 §6.3.9).
const DELIMITER: char = '/';

/// Flags every mailbox supports (RFC 9051 §2.3.2).
const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

/// Connection state (RFC 9051 §3).
enum State {
    NotAuthenticated,
    Authenticated,
    Selected(Selected),
}

/// The selected mailbox as this client sees it.
struct Selected {
    name: String,
    read_only: bool,
    /// Index + 1 is the message sequence number.
    view: View,
    /// The mailbox's highest mod-sequence as of the view: changes above it are news.
    modseq: u64,
    /// The messages a `SEARCH RETURN (SAVE)` kept for `$` (RFC 5182), as UIDs: an expunged
    /// one drops out by itself. Empty from SELECT on.
    saved: Vec<u32>,
}

/// Whether `delta`, the changes since `sel.modseq`, fits the view: every changed message it
/// names at or below the view's largest UID is in the view (UIDs grow in commit order, so a
/// message the view never saw can only be new). When it does not, the session reads the whole
/// mailbox again.
fn fits(sel: &Selected, delta: &MailboxChanges) -> bool {
    let last = sel.largest_uid();
    delta
        .messages
        .iter()
        .all(|m| m.uid > last || sel.view.find(m.uid).is_ok())
}

impl Selected {
    fn largest_uid(&self) -> u32 {
        self.view.last().map_or(0, |e| e.uid)
    }

    fn count(&self) -> u32 {
        u32::try_from(self.view.len()).unwrap_or(u32::MAX)
    }
}

/// One IMAP connection's server side.
pub struct Session<B: Backend> {
    config: Config,
    backend: B,
    tls_active: bool,
    framer: Framer,
    state: State,
    failed_logins: u32,
    /// Set while an AUTHENTICATE exchange waits for the client's response line.
    auth_pending: Option<Tag<'static>>,
    /// Set while IDLE (RFC 2177, RFC 9051 §6.3.13) waits for the client's `DONE`.
    idling: Option<Tag<'static>>,
    closed: bool,
    /// UTF8=ACCEPT is enabled (RFC 6855): mailbox names are UTF-8 on the wire.
    utf8: bool,
    /// COMPRESS=DEFLATE is active (RFC 4978).
    compressed: bool,
    /// Verbs of the commands handled since the last [`Session::take_verbs`] (for metrics).
    verbs: Vec<&'static str>,
    /// Extensions the client turned on (ENABLE, or implicitly for CONDSTORE).
    enabled: Enabled,
    /// Where a long response's finished part goes while the rest is produced (see
    /// [`Session::stream_output`]); without it everything comes back from `feed`.
    early: Option<futures::channel::mpsc::Sender<Vec<u8>>>,
}

/// How much finished output a long FETCH holds before handing it to the agent (when it takes
/// output early, [`Session::stream_output`]).
const STREAM_AT: usize = 256 * 1024;

/// Hands `out` to the agent when it has grown past [`STREAM_AT`], waiting while the agent is
/// still writing what it was given before (so a slow client holds the session back, not its
/// memory). Without a taker, or once the agent stopped taking, `out` just keeps growing.
async fn stream_early(
    early: &mut Option<futures::channel::mpsc::Sender<Vec<u8>>>,
    out: &mut Vec<u8>,
) {
    if out.len() < STREAM_AT {
        return;
    }
    let Some(tx) = early else {
        return;
    };
    if futures::future::poll_fn(|cx| tx.poll_ready(cx))
        .await
        .is_ok()
        && let Err(e) = tx.try_send(std::mem::take(out))
    {
        // The receiver went away meanwhile: the bytes come back inside the error.
        *out = e.into_inner();
    }
}

impl<B: Backend> Session<B> {
    pub fn new(config: Config, backend: B, tls_active: bool) -> Self {
        let framer = Framer::new(config.max_literal);
        Self {
            config,
            backend,
            tls_active,
            framer,
            state: State::NotAuthenticated,
            failed_logins: 0,
            auth_pending: None,
            idling: None,
            closed: false,
            utf8: false,
            compressed: false,
            verbs: Vec::new(),
            enabled: Enabled::default(),
            early: None,
        }
    }

    /// From now on a long response (FETCH of many messages) is handed over in pieces of about
    /// 256 KiB on the returned channel while [`Session::feed`] is still producing the rest;
    /// `feed` then returns only what follows the last piece. The agent writes each piece as
    /// it comes, before `feed`'s own output, so the client receives the first messages while
    /// the last are read from the store, and a session never holds a whole mailbox's worth
    /// of output. The channel holds one piece: a client that reads slowly makes `feed` wait.
    pub fn stream_output(&mut self) -> futures::channel::mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = futures::channel::mpsc::channel(1);
        self.early = Some(tx);
        rx
    }

    /// The verbs of the commands handled since the last call, oldest first (SELECT, FETCH, …;
    /// `invalid` for a command that did not parse). Metrics read it after each `feed`.
    pub fn take_verbs(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.verbs)
    }

    /// The server greeting (RFC 9051 §7.1.1), advertising capabilities so clients can skip a
    /// CAPABILITY round trip.
    pub fn greeting(&self) -> Vec<u8> {
        let text = if self.config.greeting_host.is_empty() {
            "Tern IMAP ready".to_string()
        } else {
            format!("{} Tern IMAP ready", self.config.greeting_host)
        };
        let code = response::capabilities(&self.capability_atoms()).map(Code::Capability);
        response::greeting(code, &text)
    }

    /// Call after the TLS handshake that followed [`Action::StartTls`] succeeded.
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.framer.reset();
    }

    pub fn timeout_reply(&self) -> Vec<u8> {
        response::bye("idle timeout")
    }

    pub fn shutdown_reply(&self) -> Vec<u8> {
        response::bye("server shutting down")
    }

    /// Feeds bytes from the client and handles every complete command in them.
    pub async fn feed(&mut self, input: &[u8]) -> Output {
        let mut out = Vec::new();
        if self.closed {
            return Output {
                bytes: out,
                action: Action::Close,
            };
        }
        self.framer.push(input);
        loop {
            let action = if let Some(tag) = self.idling.take() {
                match self.framer.next_raw_line() {
                    Some(line) => self.idle_input(&tag, &line, &mut out),
                    None => {
                        self.idling = Some(tag);
                        break;
                    }
                }
            } else if let Some(tag) = self.auth_pending.take() {
                match self.framer.next_raw_line() {
                    Some(line) => self.authenticate_response(&tag, &line, &mut out).await,
                    None => {
                        self.auth_pending = Some(tag);
                        break;
                    }
                }
            } else {
                match self.framer.next() {
                    None => break,
                    Some(Frame::NeedContinuation(_)) => {
                        // RFC 9051 §7.5: agree to receive the announced literal.
                        out.extend_from_slice(b"+ Ready for literal data\r\n");
                        Action::Continue
                    }
                    Some(Frame::Rejected { head, reason }) => {
                        let tag = leading_tag(&head);
                        out.extend(match reason {
                            Rejection::LiteralTooBig => match &tag {
                                Some(tag) => {
                                    no(tag, Some(Code::TooBig), "Literal exceeds the size limit")
                                }
                                None => response::status(
                                    None,
                                    imap_codec::imap_types::response::StatusKind::Bad,
                                    Some(Code::TooBig),
                                    "Literal exceeds the size limit",
                                ),
                            },
                            Rejection::LineTooLong => response::status(
                                tag.as_ref(),
                                imap_codec::imap_types::response::StatusKind::Bad,
                                Some(Code::TooBig),
                                "Command line too long",
                            ),
                        });
                        Action::Continue
                    }
                    Some(Frame::Command(bytes)) => self.command(&bytes, &mut out).await,
                }
            };
            match action {
                Action::Continue => {}
                Action::Compress => {
                    // What the client sent after COMPRESS is already compressed: the agent
                    // takes it back with `compression_started`.
                    return Output {
                        bytes: out,
                        action: Action::Compress,
                    };
                }
                Action::StartTls => {
                    // RFC 9051 §6.2.1: anything pipelined after STARTTLS is discarded.
                    self.framer.reset();
                    return Output {
                        bytes: out,
                        action: Action::StartTls,
                    };
                }
                Action::Close => {
                    self.closed = true;
                    self.framer.reset();
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

    /// True while an IDLE command waits for `DONE`: the agent should then also wake on
    /// changes to [`Session::selected_mailbox`] and call [`Session::poll_changes`].
    pub fn is_idling(&self) -> bool {
        self.idling.is_some()
    }

    /// The name of the selected mailbox (UTF-8, as the backend spells it), if any.
    pub fn selected_mailbox(&self) -> Option<&str> {
        match &self.state {
            State::Selected(sel) => Some(&sel.name),
            _ => None,
        }
    }

    /// The selected mailbox's name and the backend, for an agent that waits on the backend
    /// for changes to that mailbox while the client idles.
    pub fn selected_mailbox_and_backend(&mut self) -> (Option<&str>, &mut B) {
        let name = match &self.state {
            State::Selected(sel) => Some(sel.name.as_str()),
            _ => None,
        };
        (name, &mut self.backend)
    }

    /// While idling: brings the selected mailbox up to date and returns the untagged
    /// EXISTS / EXPUNGE / FETCH responses to send at once (RFC 2177 allows expunges during
    /// IDLE). Outside IDLE it returns nothing: changes are then reported with the next command.
    /// A backend failure is reported as an untagged `* NO` and IDLE continues.
    pub async fn poll_changes(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.idling.is_none() || self.closed {
            return out;
        }
        if self.refresh(true, true, &mut out).await.is_err() {
            out.extend(response::status(
                None,
                imap_codec::imap_types::response::StatusKind::No,
                None,
                "Cannot check the mailbox now",
            ));
        }
        out
    }

    /// A line received during IDLE: `DONE` ends it, anything else is a protocol error that
    /// also ends it (RFC 2177: the client must send DONE before any other command).
    fn idle_input(&mut self, tag: &Tag<'static>, line: &[u8], out: &mut Vec<u8>) -> Action {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.eq_ignore_ascii_case(b"DONE") {
            out.extend(ok(tag, None, "IDLE terminated"));
        } else {
            out.extend(bad(Some(tag), "Expected DONE to end IDLE"));
        }
        Action::Continue
    }

    fn login_disabled(&self) -> bool {
        self.config.login_requires_tls && !self.tls_active
    }

    fn capability_atoms(&self) -> Vec<Cow<'static, str>> {
        let mut caps: Vec<Cow<'static, str>> = vec!["IMAP4rev2".into(), "IMAP4rev1".into()];
        if matches!(self.state, State::NotAuthenticated) {
            if self.config.tls_available && !self.tls_active {
                caps.push("STARTTLS".into());
            }
            // RFC 9051 §6.2.3 / §7.2.2: with LOGINDISABLED no plaintext mechanism is offered.
            if self.login_disabled() {
                caps.push("LOGINDISABLED".into());
            } else {
                caps.push("AUTH=PLAIN".into());
            }
        }
        caps.extend(
            [
                "SASL-IR",
                "LITERAL+",
                "ID",
                "ENABLE",
                "UNSELECT",
                "UIDPLUS",
                "MOVE",
                "NAMESPACE",
                "IDLE",
                "BINARY",
                "CONDSTORE",
                "QRESYNC",
                "ESEARCH",
                "SEARCHRES",
            ]
            .map(Cow::Borrowed),
        );
        caps.extend(self.extension_capabilities());
        caps
    }

    async fn command(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Action {
        // RFC 5182: imap-codec does not know `$`; spell out the saved messages first.
        let expanded;
        let bytes = match &self.state {
            State::Selected(sel) => match searchres::expand(bytes, &sel.saved, &sel.view) {
                Some(command) => {
                    expanded = command;
                    &expanded[..]
                }
                None => bytes,
            },
            _ => bytes,
        };
        // RFC 4731: imap-codec does not know SEARCH RETURN (...); take it off first.
        let (bytes, search_return): (Cow<'_, [u8]>, _) = match search::split_return(bytes) {
            Ok(None) => (Cow::Borrowed(bytes), None),
            Ok(Some((command, options))) => {
                // RFC 5182 §2.1: a SEARCH ... SAVE that fails in any way (BAD, NO
                // [BADCHARSET], the store) leaves `$` empty; success sets it again.
                if options.save
                    && let State::Selected(sel) = &mut self.state
                {
                    sel.saved = Vec::new();
                }
                (Cow::Owned(command), Some(options))
            }
            Err(text) => {
                self.verbs.push("SEARCH");
                out.extend(bad(leading_tag(bytes).as_ref(), text));
                return Action::Continue;
            }
        };
        let bytes = bytes.as_ref();
        match CommandCodec::default().decode(bytes) {
            Ok((&[], command)) => {
                self.verbs.push(command.name());
                if let CommandBody::Search {
                    charset,
                    criteria,
                    uid,
                } = &command.body
                    && matches!(self.state, State::Selected(_))
                {
                    if charset
                        .as_ref()
                        .is_none_or(|c| search::check_charset(&command.tag, c.as_ref(), out))
                    {
                        self.search(&command.tag, criteria.as_ref(), *uid, search_return, out)
                            .await;
                    }
                    return Action::Continue;
                }
                self.dispatch(command, out).await
            }
            _ => {
                if let Some(action) = self.extended_command(bytes, out).await {
                    return action;
                }
                self.verbs.push("invalid");
                let tag = leading_tag(bytes);
                out.extend(bad(tag.as_ref(), "Unknown command or invalid arguments"));
                Action::Continue
            }
        }
    }

    async fn dispatch(&mut self, command: Command<'_>, out: &mut Vec<u8>) -> Action {
        let tag = command.tag;
        let authenticated = !matches!(self.state, State::NotAuthenticated);
        let selected = matches!(self.state, State::Selected(_));
        if let Some(action) = self.dispatch_ext(&tag, &command.body, out).await {
            return action;
        }
        match command.body {
            CommandBody::Capability => {
                if let Some(caps) = response::capabilities(&self.capability_atoms()) {
                    out.extend(response::data(Data::Capability(caps)));
                }
                out.extend(ok(&tag, None, "CAPABILITY completed"));
            }
            CommandBody::Noop | CommandBody::Check => {
                if selected && let Err(err) = self.refresh(true, true, out).await {
                    out.extend(backend_error(&tag, &err));
                    return Action::Continue;
                }
                out.extend(ok(&tag, None, "Completed"));
            }
            CommandBody::Idle if authenticated => {
                out.extend_from_slice(b"+ idling\r\n");
                if selected && let Err(err) = self.refresh(true, true, out).await {
                    out.extend(backend_error(&tag, &err));
                    return Action::Continue;
                }
                self.idling = Some(tag.into_static());
                // The client may now wait for hours: keep no spare capacity meanwhile.
                if let State::Selected(sel) = &mut self.state {
                    sel.view.trim();
                }
            }
            CommandBody::Logout => {
                out.extend(response::bye("Logging out"));
                out.extend(ok(&tag, None, "LOGOUT completed"));
                return Action::Close;
            }
            CommandBody::StartTLS => {
                if authenticated {
                    out.extend(bad(Some(&tag), "Already authenticated"));
                } else if self.tls_active {
                    out.extend(bad(Some(&tag), "TLS is already active"));
                } else if !self.config.tls_available {
                    out.extend(no(&tag, None, "TLS is not available"));
                } else {
                    out.extend(ok(&tag, None, "Begin TLS negotiation now"));
                    return Action::StartTls;
                }
            }
            CommandBody::Login { username, password } => {
                let user = username.as_ref().to_vec();
                let pass = password.declassify().as_ref().to_vec();
                return self.login(&tag, &user, &pass, out).await;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if authenticated {
                    out.extend(bad(Some(&tag), "Already authenticated"));
                } else if mechanism != AuthMechanism::Plain {
                    out.extend(no(&tag, None, "Unsupported authentication mechanism"));
                } else if self.login_disabled() {
                    out.extend(no(
                        &tag,
                        Some(code_other("PRIVACYREQUIRED")),
                        "Use STARTTLS first",
                    ));
                } else {
                    match initial_response {
                        Some(data) => {
                            let data = data.declassify().to_vec();
                            return self.authenticate_plain(&tag, &data, out).await;
                        }
                        None => {
                            // RFC 9051 §6.2.2: an empty challenge for PLAIN.
                            out.extend_from_slice(b"+ \r\n");
                            self.auth_pending = Some(tag.into_static());
                        }
                    }
                }
            }
            CommandBody::Enable { capabilities } if authenticated => {
                self.enable(&tag, capabilities.as_ref(), out);
            }
            CommandBody::Id { .. } => {
                out.extend_from_slice(b"* ID (\"name\" \"Tern\")\r\n");
                out.extend(ok(&tag, None, "ID completed"));
            }
            CommandBody::Select {
                mailbox,
                parameters,
            } if authenticated => {
                self.select(&tag, &mailbox, false, &parameters, out).await;
            }
            CommandBody::Examine {
                mailbox,
                parameters,
            } if authenticated => {
                self.select(&tag, &mailbox, true, &parameters, out).await;
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } if authenticated => {
                let cmd = list::ListCommand::basic(&reference, &mailbox_wildcard);
                self.list_extended(&tag, &cmd, out).await;
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } if authenticated => {
                self.lsub(&tag, &reference, &mailbox_wildcard, out).await;
            }
            CommandBody::Subscribe { mailbox } if authenticated => {
                if let Some(name) = self.client_name(&tag, &mailbox, out) {
                    match self.backend.subscribe(&name).await {
                        Ok(()) => out.extend(ok(&tag, None, "SUBSCRIBE completed")),
                        Err(err) => out.extend(backend_error(&tag, &err)),
                    }
                }
            }
            CommandBody::Unsubscribe { mailbox } if authenticated => {
                if let Some(name) = self.client_name(&tag, &mailbox, out) {
                    match self.backend.unsubscribe(&name).await {
                        Ok(()) => out.extend(ok(&tag, None, "UNSUBSCRIBE completed")),
                        Err(err) => out.extend(backend_error(&tag, &err)),
                    }
                }
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } if authenticated => {
                self.status(&tag, &mailbox, &item_names, out).await;
            }
            CommandBody::Unselect if selected => {
                self.state = State::Authenticated;
                out.extend(ok(&tag, None, "UNSELECT completed"));
            }
            CommandBody::Close if selected => {
                if let State::Selected(sel) = &self.state
                    && !sel.read_only
                {
                    // RFC 9051 §6.4.1: CLOSE expunges silently.
                    let name = sel.name.clone();
                    if let Err(err) = self.backend.expunge(&name, None).await {
                        out.extend(backend_error(&tag, &err));
                        return Action::Continue;
                    }
                }
                self.state = State::Authenticated;
                out.extend(ok(&tag, None, "CLOSE completed"));
            }
            CommandBody::Expunge if selected => self.expunge(&tag, None, out).await,
            CommandBody::ExpungeUid { sequence_set } if selected => {
                self.expunge(&tag, Some(&sequence_set), out).await;
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } if selected => {
                self.fetch(
                    &tag,
                    &sequence_set,
                    &macro_or_item_names,
                    uid,
                    &modifiers,
                    out,
                )
                .await;
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } if selected => {
                let op = match kind {
                    StoreType::Add => FlagOp::Add,
                    StoreType::Remove => FlagOp::Remove,
                    StoreType::Replace => FlagOp::Replace,
                };
                let silent = response == StoreResponse::Silent;
                let unchanged_since = modifiers
                    .iter()
                    .map(|StoreModifier::UnchangedSince(n)| *n)
                    .next();
                self.store(
                    &tag,
                    &sequence_set,
                    (op, &flags),
                    silent,
                    uid,
                    unchanged_since,
                    out,
                )
                .await;
            }
            CommandBody::Create { mailbox } if authenticated => {
                self.create(&tag, &mailbox, out).await;
            }
            CommandBody::Delete { mailbox } if authenticated => {
                self.delete(&tag, &mailbox, out).await;
            }
            CommandBody::Rename { from, to } if authenticated => {
                self.rename(&tag, &from, &to, out).await;
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } if authenticated => {
                let content: &[u8] = match &message {
                    LiteralOrLiteral8::Literal(l) => l.as_ref(),
                    LiteralOrLiteral8::Literal8(l) => l.data.as_ref(),
                };
                let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
                let date = date.map(|d| d.as_ref().timestamp_millis());
                self.append(&tag, &mailbox, content, &flags, date, out)
                    .await;
            }
            CommandBody::Namespace if authenticated => {
                // RFC 2342: one personal namespace, no prefix, "/" as the delimiter.
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                out.extend(ok(&tag, None, "NAMESPACE completed"));
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } if selected => {
                self.copy(&tag, &sequence_set, &mailbox, uid, false, out)
                    .await;
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } if selected => {
                self.copy(&tag, &sequence_set, &mailbox, uid, true, out)
                    .await;
            }
            body @ (CommandBody::Enable { .. }
            | CommandBody::Create { .. }
            | CommandBody::Delete { .. }
            | CommandBody::Rename { .. }
            | CommandBody::Append { .. }
            | CommandBody::Namespace
            | CommandBody::Idle
            | CommandBody::Select { .. }
            | CommandBody::Examine { .. }
            | CommandBody::List { .. }
            | CommandBody::Lsub { .. }
            | CommandBody::Subscribe { .. }
            | CommandBody::Unsubscribe { .. }
            | CommandBody::Status { .. }) => {
                out.extend(bad(
                    Some(&tag),
                    &format!("{} requires authentication", body.name()),
                ));
            }
            body @ (CommandBody::Unselect
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }
            | CommandBody::Close
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. }
            | CommandBody::Search { .. }
            | CommandBody::Fetch { .. }
            | CommandBody::Store { .. }) => {
                out.extend(bad(
                    Some(&tag),
                    &format!("{} requires a selected mailbox", body.name()),
                ));
            }
            other => {
                out.extend(no(
                    &tag,
                    Some(code_other("CANNOT")),
                    &format!("{} is not implemented", other.name()),
                ));
            }
        }
        Action::Continue
    }

    async fn login(
        &mut self,
        tag: &Tag<'_>,
        user: &[u8],
        pass: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        if !matches!(self.state, State::NotAuthenticated) {
            out.extend(bad(Some(tag), "Already authenticated"));
            return Action::Continue;
        }
        if self.login_disabled() {
            // RFC 9051 §6.2.3: LOGIN is refused while LOGINDISABLED is advertised.
            out.extend(no(
                tag,
                Some(code_other("PRIVACYREQUIRED")),
                "Use STARTTLS first",
            ));
            return Action::Continue;
        }
        let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
            return self.auth_failed(tag, out);
        };
        match self.backend.login(user, pass).await {
            Ok(true) => {
                self.state = State::Authenticated;
                let code = response::capabilities(&self.capability_atoms()).map(Code::Capability);
                out.extend(ok(tag, code, "Logged in"));
                Action::Continue
            }
            Ok(false) => self.auth_failed(tag, out),
            Err(err) => {
                out.extend(backend_error(tag, &err));
                Action::Continue
            }
        }
    }

    fn auth_failed(&mut self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Action {
        self.failed_logins = self.failed_logins.saturating_add(1);
        out.extend(no(
            tag,
            Some(code_other("AUTHENTICATIONFAILED")),
            "Invalid credentials",
        ));
        if self.failed_logins >= self.config.max_failed_logins {
            out.extend(response::bye("Too many failed authentication attempts"));
            return Action::Close;
        }
        Action::Continue
    }

    /// The client's line after our "+" in AUTHENTICATE (RFC 9051 §6.2.2).
    async fn authenticate_response(
        &mut self,
        tag: &Tag<'static>,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        match AuthenticateDataCodec::default().decode(line) {
            Ok((&[], AuthenticateData::Continue(data))) => {
                let data = data.declassify().to_vec();
                self.authenticate_plain(tag, &data, out).await
            }
            Ok((&[], AuthenticateData::Cancel)) => {
                out.extend(bad(Some(tag), "Authentication cancelled"));
                Action::Continue
            }
            _ => {
                out.extend(bad(Some(tag), "Invalid authentication response"));
                Action::Continue
            }
        }
    }

    /// SASL PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`, already base64-decoded.
    async fn authenticate_plain(
        &mut self,
        tag: &Tag<'_>,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        let [authzid, authcid, passwd] = parts.as_slice() else {
            out.extend(bad(Some(tag), "Malformed PLAIN response"));
            return Action::Continue;
        };
        if !authzid.is_empty() && authzid != authcid {
            // Acting as another user is not supported (RFC 4616 §2).
            out.extend(no(
                tag,
                Some(code_other("AUTHORIZATIONFAILED")),
                "Authorization identity must be empty or match",
            ));
            return Action::Continue;
        }
        let (authcid, passwd) = (authcid.to_vec(), passwd.to_vec());
        self.login(tag, &authcid, &passwd, out).await
    }

    /// The mailbox a command names, or None after answering `NO [NONEXISTENT]` (or the backend's
    /// error) to the client.
    async fn existing_mailbox(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        out: &mut Vec<u8>,
    ) -> Option<MailboxEntry> {
        let Some(name) = self.mailbox_name(mailbox) else {
            out.extend(no(tag, Some(code_other("NONEXISTENT")), "No such mailbox"));
            return None;
        };
        match self.backend.mailbox(&name).await {
            Ok(Some(entry)) => Some(entry),
            Ok(None) | Err(BackendError::NotFound) => {
                out.extend(no(tag, Some(code_other("NONEXISTENT")), "No such mailbox"));
                None
            }
            Err(err) => {
                out.extend(backend_error(tag, &err));
                None
            }
        }
    }

    async fn select(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        parameters: &[SelectParameter],
        out: &mut Vec<u8>,
    ) {
        let mut qresync = None;
        for parameter in parameters {
            match parameter {
                // RFC 7162 §3.1.2: SELECT/EXAMINE (CONDSTORE) is a CONDSTORE-enabling command.
                SelectParameter::CondStore => self.enabled.condstore = true,
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    // RFC 7162 §3.2.5: only after ENABLE QRESYNC.
                    if !self.enabled.qresync {
                        out.extend(bad(Some(tag), "QRESYNC must be enabled first"));
                        return;
                    }
                    qresync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids));
                }
            }
        }
        // RFC 9051 §6.3.2: selecting deselects first, even when the new SELECT fails.
        if matches!(self.state, State::Selected(_)) {
            self.state = State::Authenticated;
            out.extend(response::untagged_ok(
                Some(code_other("CLOSED")),
                "Previous mailbox closed",
            ));
        }
        let Some(name) = self.mailbox_name(mailbox) else {
            out.extend(no(tag, Some(code_other("NONEXISTENT")), "No such mailbox"));
            return;
        };
        // One read gives the counters and every message's metadata, as of one instant.
        let all = match self.backend.changes(&name, 0).await {
            Ok(all) => all,
            Err(BackendError::NotFound) => {
                out.extend(no(tag, Some(code_other("NONEXISTENT")), "No such mailbox"));
                return;
            }
            Err(err) => {
                out.extend(backend_error(tag, &err));
                return;
            }
        };
        let highest_modseq = all.highest_modseq;
        let mut messages = all.messages;
        messages.sort_by_key(|m| m.uid);

        let mut flags: Vec<String> = SYSTEM_FLAGS.iter().map(|f| f.to_string()).collect();
        for meta in &messages {
            for flag in &meta.flags {
                if !flag.starts_with('\\') && !flags.contains(flag) {
                    flags.push(flag.clone());
                }
            }
        }
        let parsed: Vec<Flag<'_>> = flags
            .iter()
            .filter_map(|f| Flag::try_from(f.as_str()).ok())
            .collect();
        out.extend(response::data(Data::Flags(parsed.clone())));
        out.extend(response::data(Data::Exists(
            u32::try_from(messages.len()).unwrap_or(u32::MAX),
        )));
        if self.enabled.rev2 {
            // RFC 9051 §6.3.2: IMAP4rev2 has a LIST response here, and no RECENT or UNSEEN.
            let mut line = format!("* LIST () \"{DELIMITER}\" ").into_bytes();
            line.extend(response::string(mutf7::encode(&name).as_bytes()));
            line.extend_from_slice(b"\r\n");
            out.extend(line);
        } else {
            // RFC 3501 §7.3.2: IMAP4rev1 clients expect RECENT; we never set \Recent.
            out.extend(response::data(Data::Recent(0)));
            if let Some(first_unseen) = messages
                .iter()
                .position(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                && let Ok(code) = Code::unseen(u32::try_from(first_unseen + 1).unwrap_or(u32::MAX))
            {
                out.extend(response::untagged_ok(Some(code), "First unseen"));
            }
        }
        let permanent: Vec<FlagPerm<'_>> = if read_only {
            Vec::new()
        } else {
            parsed
                .into_iter()
                .map(FlagPerm::Flag)
                .chain(std::iter::once(FlagPerm::Asterisk))
                .collect()
        };
        out.extend(response::untagged_ok(
            Some(Code::PermanentFlags(permanent)),
            "Limited",
        ));
        if let Ok(code) = Code::uidvalidity(all.uid_validity) {
            out.extend(response::untagged_ok(Some(code), "UIDs valid"));
        }
        let uid_next = all
            .uid_next
            .max(messages.last().map_or(1, |m| m.uid.saturating_add(1)));
        if let Ok(code) = Code::uidnext(uid_next) {
            out.extend(response::untagged_ok(Some(code), "Predicted next UID"));
        }
        // RFC 7162 §3.1.2.1: every mailbox keeps mod-sequences, so every SELECT says where
        // they stand.
        out.extend(
            format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", highest_modseq.max(1)).into_bytes(),
        );
        let validity = all.uid_validity;
        self.state = State::Selected(Selected {
            name,
            read_only,
            modseq: highest_modseq,
            view: View::new(messages),
            saved: Vec::new(),
        });
        if let Some((uid_validity, modseq, known_uids)) = qresync
            && let Err(err) = self
                .qresync_select(uid_validity, validity, modseq, known_uids.as_ref(), out)
                .await
        {
            self.state = State::Authenticated;
            out.extend(backend_error(tag, &err));
            return;
        }
        let (code, verb) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        out.extend(ok(tag, Some(code), verb));
    }

    /// LSUB (RFC 3501 §6.3.9); LIST in all its forms is in `list.rs`.
    async fn lsub(
        &mut self,
        tag: &Tag<'_>,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        out: &mut Vec<u8>,
    ) {
        let reference = match reference {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(other) => self.decode_name(other.as_ref()).unwrap_or_default(),
        };
        let pattern_raw: &[u8] = match pattern {
            ListMailbox::Token(token) => token.as_ref(),
            ListMailbox::String(string) => string.as_ref(),
        };
        let pattern = self.decode_name(pattern_raw).unwrap_or_default();
        if pattern.is_empty() {
            // RFC 9051 §6.3.9: an empty pattern asks for the delimiter and root.
            out.extend(format!("* LSUB (\\Noselect) \"{DELIMITER}\" \"\"\r\n").into_bytes());
            out.extend(ok(tag, None, "LSUB completed"));
            return;
        }
        let full = normalize_inbox(&format!("{reference}{pattern}"));
        let entries = match self.backend.list_mailboxes().await {
            Ok(entries) => entries,
            Err(err) => {
                out.extend(backend_error(tag, &err));
                return;
            }
        };
        let subscribed = match self.backend.subscriptions().await {
            Ok(names) => names,
            Err(err) => {
                out.extend(backend_error(tag, &err));
                return;
            }
        };
        let existing: Vec<String> = entries.into_iter().map(|e| e.name).collect();
        for (name, noselect) in subscriptions::lsub(&full, &subscribed, &existing, wildcard_match) {
            let attributes = if noselect { "\\Noselect" } else { "" };
            let mut line = format!("* LSUB ({attributes}) \"{DELIMITER}\" ").into_bytes();
            line.extend(self.wire_name(&name));
            line.extend_from_slice(b"\r\n");
            out.extend(line);
        }
        out.extend(ok(tag, None, "LSUB completed"));
    }

    async fn status(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
        out: &mut Vec<u8>,
    ) {
        let Some(entry) = self.existing_mailbox(tag, mailbox, out).await else {
            return;
        };
        match self.status_response(&entry, items).await {
            Ok(line) => {
                out.extend(line);
                out.extend(ok(tag, None, "STATUS completed"));
            }
            Err(err) => out.extend(backend_error(tag, &err)),
        }
    }

    /// The untagged STATUS response for `entry` (STATUS, and LIST-STATUS, RFC 5819).
    async fn status_response(
        &mut self,
        entry: &MailboxEntry,
        items: &[StatusDataItemName],
    ) -> Result<Vec<u8>, BackendError> {
        let mut messages: Option<Vec<MessageMeta>> = None;
        let mut parts: Vec<String> = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", entry.messages)),
                StatusDataItemName::Recent => parts.push("RECENT 0".to_string()),
                StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", entry.uid_next)),
                StatusDataItemName::UidValidity => {
                    parts.push(format!("UIDVALIDITY {}", entry.uid_validity));
                }
                StatusDataItemName::Unseen => parts.push(format!("UNSEEN {}", entry.unseen)),
                StatusDataItemName::HighestModSeq => {
                    // RFC 7162 §3.1.2: STATUS HIGHESTMODSEQ is CONDSTORE-enabling.
                    self.enabled.condstore = true;
                    parts.push(format!("HIGHESTMODSEQ {}", entry.highest_modseq.max(1)));
                }
                StatusDataItemName::Deleted | StatusDataItemName::DeletedStorage => {
                    if messages.is_none() {
                        messages = Some(self.backend.messages(&entry.name).await?);
                    }
                    let deleted = messages
                        .iter()
                        .flatten()
                        .filter(|m| m.borrowed().has_flag("\\Deleted"));
                    parts.push(if *item == StatusDataItemName::Deleted {
                        format!("DELETED {}", deleted.count())
                    } else {
                        // RFC 9208 §4.3: what EXPUNGE would free, in units of 1024 octets.
                        let bytes: u64 = deleted.map(|m| m.size).sum();
                        format!("DELETED-STORAGE {}", bytes.div_ceil(1024))
                    });
                }
                #[allow(unreachable_patterns)]
                other => {
                    return Err(BackendError::Refused(format!(
                        "STATUS item {other:?} is not supported"
                    )));
                }
            }
        }
        let mut line = b"* STATUS ".to_vec();
        line.extend(self.wire_name(&entry.name));
        line.extend(format!(" ({})\r\n", parts.join(" ")).into_bytes());
        Ok(line)
    }

    /// Brings the selected view up to date with the store. Expunges are only announced when
    /// `expunge_ok` (never during FETCH, STORE or SEARCH: RFC 9051 §7.5.1), highest sequence
    /// number first so every EXPUNGE names a number that is still valid when it is read.
    async fn refresh(
        &mut self,
        expunge_ok: bool,
        report_flags: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let State::Selected(sel) = &mut self.state else {
            return Ok(());
        };
        let condstore = self.enabled.condstore;
        // Only what changed since the view's mod-sequence, unless that answer does not fit
        // the view: then everything, as at SELECT.
        let delta = match self.backend.changes(&sel.name, sel.modseq).await {
            Ok(delta) if sel.modseq > 0 && fits(sel, &delta) => Some(delta),
            Ok(_) | Err(BackendError::NotFound) => None,
            Err(err) => return Err(err),
        };
        let incremental = delta.is_some();
        let delta = match delta {
            Some(delta) => delta,
            None => match self.backend.changes(&sel.name, 0).await {
                Ok(mut all) => {
                    all.messages.sort_by_key(|m| m.uid);
                    all
                }
                // Deleted by another session: to this one it is empty now.
                Err(BackendError::NotFound) => MailboxChanges {
                    highest_modseq: sel.modseq,
                    ..MailboxChanges::default()
                },
                Err(err) => return Err(err),
            },
        };
        let last = sel.largest_uid();
        let mut changed = vec![false; sel.view.len()];
        let apply = |view: &mut View, i: usize, changed: &mut bool, fresh: &MessageMeta| {
            // Under CONDSTORE a new mod-sequence is news even if the flags look the
            // same again (RFC 7162 §3.1.4.2).
            let old = view.meta(i);
            if !same_flags(&fresh.flags, old.flags) || (condstore && fresh.modseq != old.modseq) {
                *changed = true;
            }
            view.update(i, fresh);
        };
        if incremental {
            for fresh in delta.messages.iter().filter(|m| m.uid <= last) {
                if let Ok(i) = sel.view.find(fresh.uid) {
                    apply(&mut sel.view, i, &mut changed[i], fresh);
                }
            }
            for uid in &delta.vanished {
                if let Ok(i) = sel.view.find(*uid) {
                    sel.view.mark_gone(i);
                }
            }
        } else {
            for (i, changed) in changed.iter_mut().enumerate() {
                let uid = sel.view[i].uid;
                match delta.messages.binary_search_by_key(&uid, |m| m.uid) {
                    Ok(pos) => apply(&mut sel.view, i, changed, &delta.messages[pos]),
                    Err(_) => sel.view.mark_gone(i),
                }
            }
        }
        sel.modseq = delta.highest_modseq;
        let fresh = delta.messages;
        if expunge_ok {
            // RFC 7162 §3.2.10: once QRESYNC is enabled, one VANISHED replaces the EXPUNGEs.
            let mut vanished = Vec::new();
            let qresync = self.enabled.qresync;
            sel.view.remove_gone(|i, entry| {
                if qresync {
                    vanished.push(entry.uid);
                } else {
                    out.extend(format!("* {} EXPUNGE\r\n", i + 1).into_bytes());
                }
                changed.remove(i);
            });
            out.extend(condstore::vanished_line(&vanished, false));
        }
        if report_flags {
            for (i, entry) in sel.view.iter().enumerate() {
                if changed[i] && !entry.gone() {
                    // RFC 7162 §3.1.4.2: with CONDSTORE, MODSEQ goes with every such FETCH.
                    let modseq = if condstore {
                        format!(" {}", condstore::modseq_item(entry.modseq))
                    } else {
                        String::new()
                    };
                    out.extend(
                        format!(
                            "* {} FETCH (UID {} FLAGS ({}){modseq})\r\n",
                            i + 1,
                            entry.uid,
                            sel.view.flags(entry).join(" ")
                        )
                        .into_bytes(),
                    );
                }
            }
        }
        let last = sel.largest_uid();
        let before = sel.view.len();
        for meta in fresh.into_iter().filter(|m| m.uid > last) {
            sel.view.push(meta);
        }
        if sel.view.len() != before {
            out.extend(response::data(Data::Exists(sel.count())));
        }
        Ok(())
    }

    async fn expunge(&mut self, tag: &Tag<'_>, uids: Option<&SequenceSet>, out: &mut Vec<u8>) {
        let State::Selected(sel) = &self.state else {
            return;
        };
        if sel.read_only {
            out.extend(no(tag, None, "Mailbox is read-only"));
            return;
        }
        let name = sel.name.clone();
        let chosen: Option<Vec<u32>> = uids.map(|set| {
            let largest = sel.largest_uid();
            sel.view
                .iter()
                .filter(|e| in_set(set, e.uid, largest))
                .map(|e| e.uid)
                .collect()
        });
        if let Err(err) = self.backend.expunge(&name, chosen.as_deref()).await {
            out.extend(backend_error(tag, &err));
            return;
        }
        match self.refresh(true, false, out).await {
            Ok(()) => out.extend(ok(tag, None, "EXPUNGE completed")),
            Err(err) => out.extend(backend_error(tag, &err)),
        }
    }

    async fn fetch(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        names: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
        out: &mut Vec<u8>,
    ) {
        // RFC 7162 §3.1.4.1, §3.2.6: CHANGEDSINCE n, and VANISHED only with it, only in
        // UID FETCH and only once QRESYNC is enabled.
        let mut changed_since = None;
        let mut want_vanished = false;
        for modifier in modifiers {
            match modifier {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => want_vanished = true,
            }
        }
        if want_vanished && (!uid || !self.enabled.qresync || changed_since.is_none()) {
            out.extend(bad(
                Some(tag),
                "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
            ));
            return;
        }
        let expanded;
        let names: &[MessageDataItemName<'_>] = match names {
            MacroOrMessageDataItemNames::Macro(m) => {
                expanded = m.expand();
                &expanded
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        let mut items = Vec::new();
        if uid {
            // RFC 9051 §6.4.9: UID FETCH always returns the UID.
            items.push(Item::Uid);
        }
        for name in names {
            match fetch_item(name) {
                Ok(Item::Uid) if uid => {}
                Ok(Item::ModSeq) if changed_since.is_some() => {}
                Ok(item) => items.push(item),
                Err(what) => {
                    out.extend(no(
                        tag,
                        Some(code_other("CANNOT")),
                        &format!("FETCH {what} is not supported yet"),
                    ));
                    return;
                }
            }
        }
        if changed_since.is_some() {
            // CHANGEDSINCE implies the MODSEQ item (RFC 7162 §3.1.4.1).
            items.push(Item::ModSeq);
        }
        if items.iter().any(|i| matches!(i, Item::ModSeq)) {
            // RFC 7162 §3.1: FETCH MODSEQ and CHANGEDSINCE are CONDSTORE-enabling.
            self.enabled.condstore = true;
        }
        if let Err(err) = self.refresh(false, false, out).await {
            out.extend(backend_error(tag, &err));
            return;
        }
        if let Some(since) = changed_since
            && want_vanished
            && let Err(err) = self.vanished_earlier(set, since, out).await
        {
            out.extend(backend_error(tag, &err));
            return;
        }
        let Enabled {
            condstore, qresync, ..
        } = self.enabled;
        let State::Selected(sel) = &mut self.state else {
            return;
        };
        let mut targets = match resolve(sel, set, uid) {
            Ok(targets) => targets,
            Err(()) => {
                out.extend(bad(Some(tag), "Invalid message sequence number"));
                return;
            }
        };
        if let Some(since) = changed_since {
            targets.retain(|&i| sel.view.meta(i).modseq > since);
        }

        // RFC 9051 §6.4.5: BODY[...] without .PEEK sets \Seen, and the changed FLAGS are
        // returned even when not asked for.
        let sets_seen = !sel.read_only
            && items.iter().any(|i| {
                matches!(
                    i,
                    Item::Body { peek: false, .. } | Item::Binary { peek: false, .. }
                )
            });
        let mut seen_changed: Vec<u32> = Vec::new();
        if sets_seen {
            let unseen: Vec<u32> = targets
                .iter()
                .filter(|&&i| !sel.view[i].gone() && !sel.view.meta(i).has_flag("\\Seen"))
                .map(|&i| sel.view[i].uid)
                .collect();
            if !unseen.is_empty() {
                let flags = ["\\Seen".to_string()];
                match self
                    .backend
                    .store_flags(&sel.name, &unseen, FlagOp::Add, &flags)
                    .await
                {
                    Ok(updated) => {
                        for meta in updated {
                            if let Ok(i) = sel.view.find(meta.uid) {
                                sel.view.update(i, &meta);
                            }
                        }
                        seen_changed = unseen;
                    }
                    Err(err) => {
                        out.extend(backend_error(tag, &err));
                        return;
                    }
                }
            }
        }

        let needs = items
            .iter()
            .map(Item::needs)
            .max()
            .unwrap_or(Needs::Nothing);
        let mut vanished = false;
        for index in targets {
            let entry = sel.view[index];
            if entry.gone() {
                vanished = true;
                continue;
            }
            let read = match needs {
                Needs::Nothing => Ok(None),
                Needs::Header => self.backend.header(&sel.name, entry.uid).await,
                Needs::Message => self.backend.body(&sel.name, entry.uid).await,
            };
            let body = if needs != Needs::Nothing {
                match read {
                    Ok(Some(body)) => Some(body),
                    Ok(None) => {
                        vanished = true;
                        continue;
                    }
                    Err(err) => {
                        out.extend(backend_error(tag, &err));
                        return;
                    }
                }
            } else {
                None
            };
            // RFC 3516 §4.3: a part we cannot decode fails the whole command.
            if let Some(body) = &body
                && items.iter().any(|i| match i {
                    Item::Binary { path, .. } | Item::BinarySize { path } => {
                        mime::binary(body, path) == Err(mime::BinaryError::UnknownCte)
                    }
                    _ => false,
                })
            {
                out.extend(no(
                    tag,
                    Some(code_other("UNKNOWN-CTE")),
                    "Cannot decode this part's transfer encoding",
                ));
                return;
            }
            let add_flags = seen_changed.contains(&entry.uid)
                && !items.iter().any(|i| matches!(i, Item::Flags));
            // A \Seen set by this FETCH is a flag change: under CONDSTORE its new MODSEQ
            // goes with it (RFC 7162 §3.1.4.2).
            // Under QRESYNC the UID too (RFC 7162 §3.2.4).
            let add_modseq =
                add_flags && condstore && !items.iter().any(|i| matches!(i, Item::ModSeq));
            let add_uid = add_flags && qresync && !items.iter().any(|i| matches!(i, Item::Uid));
            render_fetch(
                out,
                index + 1,
                sel.view.meta_of(&entry),
                &items,
                body.as_deref(),
                (add_flags, add_modseq, add_uid),
            );
            stream_early(&mut self.early, out).await;
        }
        if vanished {
            // RFC 9051 §7.1: tell the client why some messages were left out.
            out.extend(ok(
                tag,
                Some(code_other("EXPUNGEISSUED")),
                "Some messages were expunged",
            ));
        } else {
            out.extend(ok(tag, None, "FETCH completed"));
        }
    }

    /// STORE / UID STORE (RFC 9051 §6.4.6), with CONDSTORE's UNCHANGEDSINCE (RFC 7162
    /// §3.1.3): messages changed after that mod-sequence are left alone and named in
    /// `[MODIFIED ...]`.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        (op, flags): (FlagOp, &[Flag<'_>]),
        silent: bool,
        uid: bool,
        unchanged_since: Option<u64>,
        out: &mut Vec<u8>,
    ) {
        if unchanged_since.is_some() {
            // RFC 7162 §3.1: STORE UNCHANGEDSINCE is CONDSTORE-enabling.
            self.enabled.condstore = true;
        }
        if let Err(err) = self.refresh(false, false, out).await {
            out.extend(backend_error(tag, &err));
            return;
        }
        let Enabled {
            condstore, qresync, ..
        } = self.enabled;
        let State::Selected(sel) = &mut self.state else {
            return;
        };
        if sel.read_only {
            out.extend(no(tag, None, "Mailbox is read-only"));
            return;
        }
        let Some((targets, uids)) = live_targets(sel, set, uid, tag, out) else {
            return;
        };
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let result = match unchanged_since {
            Some(limit) => {
                self.backend
                    .store_flags_unchanged_since(&sel.name, &uids, op, &flags, limit)
                    .await
            }
            None => self
                .backend
                .store_flags(&sel.name, &uids, op, &flags)
                .await
                .map(|updated| (updated, Vec::new())),
        };
        let (updated, modified) = match result {
            Ok(done) => done,
            Err(err) => {
                out.extend(backend_error(tag, &err));
                return;
            }
        };
        for meta in updated {
            if let Ok(index) = sel.view.find(meta.uid) {
                let bumped = sel.view[index].modseq != meta.modseq;
                sel.view.update(index, &meta);
                let entry = sel.view.meta(index);
                // RFC 7162 §3.1.3: under CONDSTORE the new MODSEQ is sent even for .SILENT.
                let parts: Vec<String> = [
                    (uid || qresync).then(|| format!("UID {}", entry.uid)),
                    (!silent).then(|| format!("FLAGS ({})", entry.flags.join(" "))),
                    condstore.then(|| condstore::modseq_item(entry.modseq)),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !silent || (condstore && bumped) {
                    out.extend(
                        format!("* {} FETCH ({})\r\n", index + 1, parts.join(" ")).into_bytes(),
                    );
                }
            }
        }
        if !modified.is_empty() {
            // The MODIFIED set names UIDs for UID STORE, sequence numbers for STORE.
            let mut numbers: Vec<u32> = if uid {
                modified
            } else {
                sel.view
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| modified.contains(&e.uid))
                    .map(|(i, _)| u32::try_from(i + 1).unwrap_or(u32::MAX))
                    .collect()
            };
            numbers.sort_unstable();
            out.extend(
                format!(
                    "{} OK [MODIFIED {}] Conditional STORE failed\r\n",
                    tag.as_ref(),
                    uid_set(&numbers)
                )
                .into_bytes(),
            );
            return;
        }
        let gone = targets.iter().any(|&i| sel.view[i].gone());
        if gone {
            out.extend(ok(
                tag,
                Some(code_other("EXPUNGEISSUED")),
                "Some messages were expunged",
            ));
        } else {
            out.extend(ok(tag, None, "STORE completed"));
        }
    }
}

impl<B: Backend> Session<B> {
    /// A mailbox name from the client for CREATE/DELETE/RENAME/APPEND/COPY, or None after a
    /// BAD: not decodable, empty, or with control characters.
    fn client_name(
        &self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        out: &mut Vec<u8>,
    ) -> Option<String> {
        match self.mailbox_name(mailbox) {
            Some(name) if !name.is_empty() && !name.chars().any(char::is_control) => Some(name),
            _ => {
                out.extend(bad(Some(tag), "Invalid mailbox name"));
                None
            }
        }
    }

    /// CREATE (RFC 9051 §6.3.4): a trailing delimiter only declares the intent to create
    /// children; missing superiors are created too.
    async fn create(&mut self, tag: &Tag<'_>, mailbox: &Mailbox<'_>, out: &mut Vec<u8>) {
        let Some(name) = self.client_name(tag, mailbox, out) else {
            return;
        };
        let name = name.trim_end_matches(DELIMITER).to_string();
        if name.is_empty() || name.split(DELIMITER).any(str::is_empty) {
            out.extend(bad(Some(tag), "Invalid mailbox name"));
            return;
        }
        if name == "INBOX" {
            out.extend(no(
                tag,
                Some(code_other("ALREADYEXISTS")),
                "INBOX always exists",
            ));
            return;
        }
        let parts: Vec<&str> = name.split(DELIMITER).collect();
        for depth in 1..parts.len() {
            let superior = parts[..depth].join("/");
            match self.backend.create_mailbox(&superior).await {
                Ok(()) | Err(BackendError::Exists) => {}
                Err(err) => {
                    out.extend(backend_error(tag, &err));
                    return;
                }
            }
        }
        match self.backend.create_mailbox(&name).await {
            Ok(()) => out.extend(ok(tag, None, "CREATE completed")),
            Err(err) => out.extend(backend_error(tag, &err)),
        }
    }

    async fn delete(&mut self, tag: &Tag<'_>, mailbox: &Mailbox<'_>, out: &mut Vec<u8>) {
        let Some(name) = self.client_name(tag, mailbox, out) else {
            return;
        };
        if name == "INBOX" {
            out.extend(no(
                tag,
                Some(code_other("CANNOT")),
                "INBOX cannot be deleted",
            ));
            return;
        }
        match self.backend.delete_mailbox(&name).await {
            Ok(()) => {
                if matches!(&self.state, State::Selected(sel) if sel.name == name) {
                    self.state = State::Authenticated;
                }
                out.extend(ok(tag, None, "DELETE completed"));
            }
            Err(err) => out.extend(backend_error(tag, &err)),
        }
    }

    async fn rename(
        &mut self,
        tag: &Tag<'_>,
        from: &Mailbox<'_>,
        to: &Mailbox<'_>,
        out: &mut Vec<u8>,
    ) {
        let Some(from) = self.client_name(tag, from, out) else {
            return;
        };
        let Some(to) = self.client_name(tag, to, out) else {
            return;
        };
        let to = to.trim_end_matches(DELIMITER).to_string();
        match self.backend.rename_mailbox(&from, &to).await {
            Ok(()) => {
                if let State::Selected(sel) = &mut self.state
                    && from != "INBOX"
                    && (sel.name == from || sel.name.starts_with(&format!("{from}/")))
                {
                    sel.name = format!("{to}{}", &sel.name[from.len()..]);
                }
                out.extend(ok(tag, None, "RENAME completed"));
            }
            Err(err) => out.extend(backend_error(tag, &err)),
        }
    }

    /// APPEND (RFC 9051 §6.3.12) with UIDPLUS's APPENDUID (RFC 4315).
    async fn append(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        content: &[u8],
        flags: &[String],
        date: Option<i64>,
        out: &mut Vec<u8>,
    ) {
        let Some(name) = self.client_name(tag, mailbox, out) else {
            return;
        };
        if content.is_empty() {
            out.extend(no(tag, None, "Cannot store an empty message"));
            return;
        }
        if flags.iter().any(|f| f.eq_ignore_ascii_case("\\Recent")) {
            out.extend(bad(Some(tag), "\\Recent cannot be set"));
            return;
        }
        match self.backend.append(&name, content, flags, date).await {
            Ok((validity, uid)) => {
                let selected_here = matches!(&self.state, State::Selected(sel) if sel.name == name);
                if selected_here && let Err(err) = self.refresh(true, true, out).await {
                    out.extend(backend_error(tag, &err));
                    return;
                }
                out.extend(
                    format!(
                        "{} OK [APPENDUID {validity} {uid}] APPEND completed\r\n",
                        tag.as_ref()
                    )
                    .into_bytes(),
                );
            }
            Err(BackendError::NotFound) => {
                out.extend(no(tag, Some(Code::TryCreate), "No such mailbox"));
            }
            Err(err) => out.extend(backend_error(tag, &err)),
        }
    }

    /// COPY (RFC 9051 §6.4.7) and MOVE (RFC 6851), with COPYUID (RFC 4315).
    async fn copy(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        remove: bool,
        out: &mut Vec<u8>,
    ) {
        let Some(dest) = self.client_name(tag, mailbox, out) else {
            return;
        };
        let State::Selected(sel) = &self.state else {
            return;
        };
        if remove && sel.read_only {
            out.extend(no(tag, None, "Mailbox is read-only"));
            return;
        }
        let Some((_, uids)) = live_targets(sel, set, uid, tag, out) else {
            return;
        };
        let verb = if remove { "MOVE" } else { "COPY" };
        if uids.is_empty() {
            out.extend(ok(tag, None, &format!("{verb} completed, nothing to do")));
            return;
        }
        let source = sel.name.clone();
        let (validity, pairs) = match self.backend.copy(&source, &uids, &dest, remove).await {
            Ok(done) => done,
            Err(BackendError::NotFound) => {
                out.extend(no(tag, Some(Code::TryCreate), "No such mailbox"));
                return;
            }
            Err(err) => {
                out.extend(backend_error(tag, &err));
                return;
            }
        };
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            format!("[COPYUID {validity} {} {}] ", uid_set(&src), uid_set(&dst))
        };
        if remove {
            // RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
            if !code.is_empty() {
                out.extend(format!("* OK {code}Moved\r\n").into_bytes());
            }
            if let Err(err) = self.refresh(true, false, out).await {
                out.extend(backend_error(tag, &err));
                return;
            }
            out.extend(ok(tag, None, "MOVE completed"));
        } else {
            if dest == source
                && let Err(err) = self.refresh(false, false, out).await
            {
                out.extend(backend_error(tag, &err));
                return;
            }
            out.extend(format!("{} OK {code}COPY completed\r\n", tag.as_ref()).into_bytes());
        }
    }
}

#[cfg(test)]
pub(crate) fn uid_set_for_tests(uids: &[u32]) -> String {
    uid_set(uids)
}

/// The view positions a sequence set names and the UIDs among them not yet expunged, or None
/// after answering BAD for a sequence number beyond the mailbox.
fn live_targets(
    sel: &Selected,
    set: &SequenceSet,
    uid: bool,
    tag: &Tag<'_>,
    out: &mut Vec<u8>,
) -> Option<(Vec<usize>, Vec<u32>)> {
    let Ok(targets) = resolve(sel, set, uid) else {
        out.extend(bad(Some(tag), "Invalid message sequence number"));
        return None;
    };
    let uids = targets
        .iter()
        .map(|&i| &sel.view[i])
        .filter(|e| !e.gone())
        .map(|e| e.uid)
        .collect();
    Some((targets, uids))
}

/// A UID set in IMAP syntax with runs compressed: 1,2,3,7 → "1:3,7". Input in ascending order
/// gives the shortest form; any order gives a correct one, in the order given (as COPYUID
/// needs, since its two sets correspond pairwise).
fn uid_set(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            end = uids[i + 1];
            i += 1;
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Maps a backend failure to a tagged NO without revealing internal details.
fn backend_error(tag: &Tag<'_>, err: &BackendError) -> Vec<u8> {
    match err {
        BackendError::NotFound => no(
            tag,
            Some(code_other("NONEXISTENT")),
            "No such mailbox or message",
        ),
        BackendError::Exists => no(
            tag,
            Some(code_other("ALREADYEXISTS")),
            "Mailbox already exists",
        ),
        BackendError::Refused(text) => no(tag, Some(code_other("CANNOT")), text),
        BackendError::OverQuota => no(tag, Some(code_other("OVERQUOTA")), "Quota exceeded"),
        BackendError::Temporary(_) => no(
            tag,
            Some(code_other("UNAVAILABLE")),
            "Temporary failure, try again later",
        ),
    }
}

/// Reads the tag of a command we could not parse, so the BAD can be tagged (RFC 9051 §7.1.3).
fn leading_tag(bytes: &[u8]) -> Option<Tag<'static>> {
    let end = bytes
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    Tag::try_from(&bytes[..end])
        .ok()
        .map(IntoStatic::into_static)
}

/// A client's mailbox name as the backend's UTF-8 name: modified UTF-7 (RFC 3501 §5.1.3) is
/// decoded; bytes that are not valid modified UTF-7 but valid UTF-8 are taken as they are,
/// because some clients send raw UTF-8 without enabling it. After UTF8=ACCEPT the session
/// takes names as UTF-8 only (`Session::decode_name`).
fn decode_name(raw: &[u8]) -> Option<String> {
    mutf7::decode(raw).or_else(|| String::from_utf8(raw.to_vec()).ok())
}

/// RFC 9051 §5.1: "INBOX" is case-insensitive, also as the first level of a hierarchy.
fn normalize_inbox(name: &str) -> String {
    match name.get(..5) {
        Some(head)
            if head.eq_ignore_ascii_case("INBOX")
                && matches!(name[5..].chars().next(), None | Some(DELIMITER)) =>
        {
            format!("INBOX{}", &name[5..])
        }
        _ => name.to_string(),
    }
}

/// LIST pattern matching (RFC 9051 §6.3.9): `*` matches anything, `%` anything but the
/// hierarchy delimiter. Dynamic programming keeps hostile patterns linear per character.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    for p in pattern.chars() {
        let mut next = vec![false; name.len() + 1];
        for j in 0..=name.len() {
            next[j] = match p {
                '*' => row[j] || (j > 0 && next[j - 1]),
                '%' => row[j] || (j > 0 && next[j - 1] && name[j - 1] != DELIMITER),
                c => j > 0 && row[j - 1] && name[j - 1] == c,
            };
        }
        row = next;
    }
    row[name.len()]
}

fn same_flags(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|f| b.iter().any(|g| g.eq_ignore_ascii_case(f)))
}

fn seq_value(value: &SeqOrUid, largest: u32) -> u32 {
    match value {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => largest,
    }
}

/// Membership without expanding the set, so `1:4294967295` costs nothing.
fn in_set(set: &SequenceSet, n: u32, largest: u32) -> bool {
    set.0.as_ref().iter().any(|sequence| match sequence {
        Sequence::Single(v) => seq_value(v, largest) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (seq_value(a, largest), seq_value(b, largest));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

/// The view indices a sequence set names. A message sequence number beyond the mailbox is an
/// error (RFC 9051 §9, `seq-number`) unless it is a range ending in `*`; UIDs that do not
/// exist are simply ignored (RFC 9051 §6.4.9).
fn resolve(sel: &Selected, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, ()> {
    if uid {
        let largest = sel.largest_uid();
        return Ok((0..sel.view.len())
            .filter(|&i| in_set(set, sel.view[i].uid, largest))
            .collect());
    }
    let count = sel.count();
    for sequence in set.0.as_ref() {
        let too_big = |v: &SeqOrUid| matches!(v, SeqOrUid::Value(n) if n.get() > count);
        let invalid = match sequence {
            Sequence::Single(v) => too_big(v),
            Sequence::Range(a, b) => {
                let star = matches!(a, SeqOrUid::Asterisk) || matches!(b, SeqOrUid::Asterisk);
                !star && (too_big(a) || too_big(b))
            }
        };
        if invalid {
            return Err(());
        }
    }
    Ok((0..sel.view.len())
        .filter(|&i| in_set(set, u32::try_from(i + 1).unwrap_or(u32::MAX), count))
        .collect())
}

/// A FETCH data item we know how to answer.
enum Item {
    Uid,
    Flags,
    /// MODSEQ (RFC 7162 §3.1.4.1).
    ModSeq,
    InternalDate,
    Size,
    Envelope,
    /// BODYSTRUCTURE (`extended`) or BODY.
    Structure {
        extended: bool,
    },
    /// BINARY[section]<partial> (RFC 9051 §6.4.5): the decoded part.
    Binary {
        path: Vec<u32>,
        partial: Option<(u32, u32)>,
        peek: bool,
        label: Vec<u8>,
    },
    BinarySize {
        path: Vec<u32>,
    },
    Body {
        section: Part,
        /// The part number (`1.2` is `[1, 2]`); empty for the whole message.
        path: Vec<u32>,
        partial: Option<(u32, u32)>,
        peek: bool,
        /// The item name in the response, e.g. `BODY[HEADER.FIELDS (FROM)]` or `RFC822`.
        label: Vec<u8>,
    },
}

/// What of a message a FETCH item needs, in increasing order of cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    /// Only the metadata the session holds (UID, FLAGS, sizes, dates, MODSEQ).
    Nothing,
    /// The header section ([`Backend::header`]).
    Header,
    /// The whole message ([`Backend::body`]).
    Message,
}

impl Item {
    fn needs(&self) -> Needs {
        match self {
            Item::Uid | Item::Flags | Item::ModSeq | Item::InternalDate | Item::Size => {
                Needs::Nothing
            }
            Item::Envelope => Needs::Header,
            Item::Body {
                section: Part::Header | Part::Fields { .. },
                path,
                ..
            } if path.is_empty() => Needs::Header,
            Item::Body { .. }
            | Item::Structure { .. }
            | Item::Binary { .. }
            | Item::BinarySize { .. } => Needs::Message,
        }
    }
}

enum Part {
    Full,
    Header,
    Fields {
        names: Vec<Vec<u8>>,
        not: bool,
    },
    Text,
    /// `BODY[1.MIME]`.
    Mime,
}

fn fetch_item(name: &MessageDataItemName<'_>) -> Result<Item, &'static str> {
    Ok(match name {
        MessageDataItemName::Uid => Item::Uid,
        MessageDataItemName::Flags => Item::Flags,
        MessageDataItemName::ModSeq => Item::ModSeq,
        MessageDataItemName::InternalDate => Item::InternalDate,
        MessageDataItemName::Rfc822Size => Item::Size,
        MessageDataItemName::Envelope => Item::Envelope,
        MessageDataItemName::Rfc822 => Item::Body {
            section: Part::Full,
            path: Vec::new(),
            partial: None,
            peek: false,
            label: b"RFC822".to_vec(),
        },
        MessageDataItemName::Rfc822Header => Item::Body {
            section: Part::Header,
            path: Vec::new(),
            partial: None,
            peek: true,
            label: b"RFC822.HEADER".to_vec(),
        },
        MessageDataItemName::Rfc822Text => Item::Body {
            section: Part::Text,
            path: Vec::new(),
            partial: None,
            peek: false,
            label: b"RFC822.TEXT".to_vec(),
        },
        MessageDataItemName::BodyExt {
            section,
            partial,
            peek,
        } => {
            let (number, (part, spec)): (_, (Part, Vec<u8>)) = match section {
                None => (None, (Part::Full, Vec::new())),
                Some(Section::Part(number)) => (Some(number), (Part::Full, Vec::new())),
                Some(Section::Header(number)) => {
                    (number.as_ref(), (Part::Header, b"HEADER".to_vec()))
                }
                Some(Section::Text(number)) => (number.as_ref(), (Part::Text, b"TEXT".to_vec())),
                Some(Section::Mime(number)) => (Some(number), (Part::Mime, b"MIME".to_vec())),
                Some(Section::HeaderFields(number, names)) => {
                    (number.as_ref(), field_part(names.as_ref(), false))
                }
                Some(Section::HeaderFieldsNot(number, names)) => {
                    (number.as_ref(), field_part(names.as_ref(), true))
                }
            };
            let path: Vec<u32> = number
                .map(|n| n.0.as_ref().iter().map(|p| p.get()).collect())
                .unwrap_or_default();
            let mut label = b"BODY[".to_vec();
            label.extend(section_numbers(&path).into_bytes());
            if !path.is_empty() && !spec.is_empty() {
                label.push(b'.');
            }
            label.extend(spec);
            label.push(b']');
            if let Some((origin, _)) = partial {
                // RFC 9051 §7.5.2: only the origin is echoed.
                label.extend(format!("<{origin}>").into_bytes());
            }
            Item::Body {
                section: part,
                path,
                partial: partial.map(|(origin, len)| (origin, len.get())),
                peek: *peek,
                label,
            }
        }
        MessageDataItemName::Binary {
            section,
            partial,
            peek,
        } => {
            let path: Vec<u32> = section.iter().map(|p| p.get()).collect();
            let mut label = format!("BINARY[{}]", section_numbers(&path)).into_bytes();
            if let Some((origin, _)) = partial {
                label.extend(format!("<{origin}>").into_bytes());
            }
            Item::Binary {
                path,
                partial: partial.map(|(origin, len)| (origin, len.get())),
                peek: *peek,
                label,
            }
        }
        MessageDataItemName::BinarySize { section } => Item::BinarySize {
            path: section.iter().map(|p| p.get()).collect(),
        },
        MessageDataItemName::Body => Item::Structure { extended: false },
        MessageDataItemName::BodyStructure => Item::Structure { extended: true },
    })
}

/// `1.2.3` for a part number path.
fn section_numbers(path: &[u32]) -> String {
    let numbers: Vec<String> = path.iter().map(u32::to_string).collect();
    numbers.join(".")
}

fn field_part(names: &[imap_codec::imap_types::core::AString<'_>], not: bool) -> (Part, Vec<u8>) {
    let mut spec = if not {
        b"HEADER.FIELDS.NOT (".to_vec()
    } else {
        b"HEADER.FIELDS (".to_vec()
    };
    let mut raw = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            spec.push(b' ');
        }
        spec.extend(response::astring(name.as_ref()));
        raw.push(name.as_ref().to_vec());
    }
    spec.push(b')');
    (Part::Fields { names: raw, not }, spec)
}

/// One `* n FETCH (...)` response. Written by hand rather than through imap-types because
/// message data is arbitrary bytes (NUL included, which `Literal` refuses) and must go out
/// exactly as stored, with exact literal lengths.
fn render_fetch(
    out: &mut Vec<u8>,
    seq: usize,
    meta: Meta<'_>,
    items: &[Item],
    body: Option<&[u8]>,
    (add_flags, add_modseq, add_uid): (bool, bool, bool),
) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "* {seq} FETCH (");
    let flags = || format!("FLAGS ({})", meta.flags.join(" ")).into_bytes();
    let message = body.unwrap_or_default();
    let (header, text) = message::split(message);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        match item {
            Item::Uid => out.extend(format!("UID {}", meta.uid).into_bytes()),
            Item::Flags => out.extend(flags()),
            Item::ModSeq => out.extend(condstore::modseq_item(meta.modseq).into_bytes()),
            Item::InternalDate => out.extend(
                format!(
                    "INTERNALDATE {}",
                    message::internal_date(meta.internal_date_ms)
                )
                .into_bytes(),
            ),
            Item::Size => out.extend(format!("RFC822.SIZE {}", meta.size).into_bytes()),
            Item::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                message::push_envelope(out, header);
            }
            Item::Binary {
                path,
                partial,
                label,
                ..
            } => {
                out.extend_from_slice(label);
                match mime::binary(message, path) {
                    Ok(data) => {
                        let data: &[u8] = match partial {
                            Some((origin, len)) => {
                                let start = (*origin as usize).min(data.len());
                                let end = start.saturating_add(*len as usize).min(data.len());
                                &data[start..end]
                            }
                            None => &data,
                        };
                        // literal8 (RFC 9051 §4.3) when the data holds NUL.
                        out.extend_from_slice(if data.contains(&0) { b" ~" } else { b" " });
                        out.extend(response::literal(data));
                    }
                    Err(_) => out.extend_from_slice(b" NIL"),
                }
            }
            Item::BinarySize { path } => {
                let size = mime::binary(message, path).map_or(0, |d| d.len());
                out.extend(format!("BINARY.SIZE[{}] {size}", section_numbers(path)).into_bytes());
            }
            Item::Structure { extended } => {
                out.extend_from_slice(if *extended {
                    b"BODYSTRUCTURE "
                } else {
                    b"BODY "
                });
                out.extend(mime::structure(&mime::parse(message), *extended));
            }
            Item::Body {
                section,
                path,
                partial,
                label,
                ..
            } => {
                let data: Cow<'_, [u8]> = match (section, path.is_empty()) {
                    (Part::Full, true) => Cow::Borrowed(message),
                    (Part::Header, true) => Cow::Borrowed(header),
                    (Part::Text, true) => Cow::Borrowed(text),
                    (Part::Fields { names, not }, true) => {
                        Cow::Owned(message::select_fields(header, names, *not))
                    }
                    (section, _) => {
                        let spec = match section {
                            Part::Full => mime::Spec::Content,
                            Part::Header => mime::Spec::Header,
                            Part::Text => mime::Spec::Text,
                            Part::Mime => mime::Spec::Mime,
                            Part::Fields { names, not } => mime::Spec::Fields { names, not: *not },
                        };
                        match mime::section(message, path, spec) {
                            Some(data) => Cow::Owned(data),
                            None => {
                                // A part that does not exist (RFC 9051 §6.4.5 leaves this
                                // open): NIL, as Dovecot answers.
                                out.extend_from_slice(label);
                                out.extend_from_slice(b" NIL");
                                continue;
                            }
                        }
                    }
                };
                let data: &[u8] = match partial {
                    Some((origin, len)) => {
                        let start = (*origin as usize).min(data.len());
                        let end = start.saturating_add(*len as usize).min(data.len());
                        &data[start..end]
                    }
                    None => &data,
                };
                out.extend_from_slice(label);
                out.push(b' ');
                response::push_literal(out, data);
            }
        }
    }
    if add_flags {
        if !items.is_empty() {
            out.push(b' ');
        }
        out.extend(flags());
    }
    if add_modseq {
        out.push(b' ');
        out.extend(condstore::modseq_item(meta.modseq).into_bytes());
    }
    if add_uid {
        out.extend(format!(" UID {}", meta.uid).into_bytes());
    }
    out.extend_from_slice(b")\r\n");
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "a/b/c"));
        assert!(wildcard_match("%", "INBOX"));
        assert!(!wildcard_match("%", "a/b"));
        assert!(wildcard_match("a/%", "a/b"));
        assert!(wildcard_match("a*c", "a/b/c"));
        assert!(!wildcard_match("a%c", "a/b/c"));
        assert!(wildcard_match("Sent", "Sent"));
        assert!(!wildcard_match("Sent", "Sent/x"));
        let hostile = "*".repeat(500) + "x";
        assert!(!wildcard_match(&hostile, &"a".repeat(500)));
    }

    #[test]
    fn inbox_is_case_insensitive() {
        assert_eq!(normalize_inbox("inbox"), "INBOX");
        assert_eq!(normalize_inbox("Inbox/Sub"), "INBOX/Sub");
        assert_eq!(normalize_inbox("Inboxes"), "Inboxes");
    }
}
