//! Transcript tests for [`Session`]: client bytes in, exact server bytes out, against an
//! in-memory [`Backend`]. They cover what Python's imaplib and mutt send when logging in and
//! reading mail. They do not cover the agent's sockets or TLS handshake.

use std::future::{Future, ready};
use std::sync::{Arc, Mutex};

use futures::executor::block_on;

use crate::{
    Action, Backend, BackendError, Config, FlagOp, MailboxChanges, MailboxEntry, MessageMeta,
    Output, Session,
};

mod condstore;
/// LIST-EXTENDED, QUOTA, APPENDLIMIT, UTF8=ACCEPT, COMPRESS.
mod ext;

struct MemMessage {
    meta: MessageMeta,
    body: Vec<u8>,
}

struct MemBox {
    entry: MailboxEntry,
    messages: Vec<MemMessage>,
    /// (UID, mod-sequence of its expunge), as the store remembers them for QRESYNC.
    expunged: Vec<(u32, u64)>,
}

impl MemBox {
    /// Raises the mailbox's highest mod-sequence and returns it, as every change does.
    fn bump(&mut self) -> u64 {
        self.entry.highest_modseq += 1;
        self.entry.highest_modseq
    }

    fn remove(&mut self, uids: &[u32]) {
        if uids.is_empty() {
            return;
        }
        let modseq = self.bump();
        self.messages.retain(|m| !uids.contains(&m.meta.uid));
        self.expunged.extend(uids.iter().map(|&u| (u, modseq)));
    }
}

/// A Vec of mailboxes behind a shared lock, so a test can act as a second client.
#[derive(Clone)]
struct MemBackend {
    boxes: Arc<Mutex<Vec<MemBox>>>,
    subscribed: Arc<Mutex<Vec<String>>>,
    /// Quota limits (bytes, messages); usage is counted from the mailboxes.
    limits: Arc<Mutex<(Option<u64>, Option<u64>)>>,
    /// How often whole messages and header sections were read, so tests can check that
    /// header-only commands read no whole message.
    bodies_read: Arc<std::sync::atomic::AtomicUsize>,
    headers_read: Arc<std::sync::atomic::AtomicUsize>,
}

const MSG1: &[u8] = b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: Hello\r\nMessage-ID: <1@example.com>\r\n\r\nHi Bob\r\n";
const MSG2: &[u8] = b"From: carol@example.com\r\nSubject: Second\r\nX-Long: a\r\n b\r\n\r\nLine one\r\nLine two\r\n";
const MSG3: &[u8] = b"From: dave@example.com\r\nSubject: Third\r\n\r\nbody\0with NUL\r\n";

fn meta(uid: u32, flags: &[&str], body: &[u8]) -> MessageMeta {
    MessageMeta {
        uid,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        size: body.len() as u64,
        internal_date_ms: 1_704_103_200_000, // 2024-01-01 10:00:00 UTC
        modseq: 1,
    }
}

fn entry(name: &str, special_use: Option<&str>) -> MailboxEntry {
    MailboxEntry {
        name: name.to_string(),
        special_use: special_use.map(str::to_string),
        uid_validity: 42,
        uid_next: 1,
        messages: 0,
        unseen: 0,
        highest_modseq: 1,
    }
}

impl MemBackend {
    fn new() -> Self {
        let inbox = MemBox {
            entry: entry("INBOX", None),
            messages: vec![
                MemMessage {
                    meta: meta(1, &[], MSG1),
                    body: MSG1.to_vec(),
                },
                MemMessage {
                    meta: meta(2, &["\\Seen"], MSG2),
                    body: MSG2.to_vec(),
                },
                MemMessage {
                    meta: meta(5, &["\\Flagged"], MSG3),
                    body: MSG3.to_vec(),
                },
            ],
            expunged: Vec::new(),
        };
        let boxes = vec![
            inbox,
            MemBox {
                entry: entry("Sent", Some("\\Sent")),
                messages: Vec::new(),
                expunged: Vec::new(),
            },
            MemBox {
                entry: entry("Archive/2024", Some("\\Archive")),
                messages: Vec::new(),
                expunged: Vec::new(),
            },
            MemBox {
                entry: entry("Entw\u{fc}rfe", Some("\\Drafts")),
                messages: Vec::new(),
                expunged: Vec::new(),
            },
        ];
        Self {
            boxes: Arc::new(Mutex::new(boxes)),
            subscribed: Arc::new(Mutex::new(vec![
                "INBOX".to_string(),
                "Sent".to_string(),
                "Archive/2024".to_string(),
            ])),
            limits: Arc::new(Mutex::new((None, None))),
            bodies_read: Arc::default(),
            headers_read: Arc::default(),
        }
    }

    fn with_box<T>(&self, name: &str, f: impl FnOnce(&mut MemBox) -> T) -> Option<T> {
        let mut boxes = self.boxes.lock().unwrap();
        boxes.iter_mut().find(|b| b.entry.name == name).map(f)
    }

    fn add(&self, name: &str, uid: u32, body: &[u8]) {
        self.with_box(name, |b| {
            let mut meta = meta(uid, &[], body);
            meta.modseq = b.bump();
            b.messages.push(MemMessage {
                meta,
                body: body.to_vec(),
            })
        });
    }

    /// Another client's STORE: new flags and a new mod-sequence.
    fn set_flags(&self, name: &str, uid: u32, flags: &[&str]) {
        self.with_box(name, |b| {
            let modseq = b.bump();
            let m = b.messages.iter_mut().find(|m| m.meta.uid == uid).unwrap();
            m.meta.flags = flags.iter().map(|f| f.to_string()).collect();
            m.meta.modseq = modseq;
        });
    }

    /// Another client's EXPUNGE of these UIDs.
    fn expunge_uids(&self, name: &str, uids: &[u32]) {
        self.with_box(name, |b| b.remove(uids));
    }
}

fn described(b: &MemBox) -> MailboxEntry {
    let mut entry = b.entry.clone();
    entry.messages = b.messages.len() as u32;
    entry.unseen = b
        .messages
        .iter()
        .filter(|m| !m.meta.flags.iter().any(|f| f == "\\Seen"))
        .count() as u32;
    entry.uid_next = b.messages.iter().map(|m| m.meta.uid + 1).max().unwrap_or(1);
    entry
}

impl Backend for MemBackend {
    fn login(
        &mut self,
        user: &str,
        password: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send {
        ready(Ok(user == "bob" && password == "secret pw"))
    }

    fn list_mailboxes(
        &mut self,
    ) -> impl Future<Output = Result<Vec<MailboxEntry>, BackendError>> + Send {
        let boxes = self.boxes.lock().unwrap();
        ready(Ok(boxes.iter().map(described).collect()))
    }

    fn mailbox(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Option<MailboxEntry>, BackendError>> + Send {
        ready(Ok(self.with_box(name, |b| described(b))))
    }

    fn messages(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<MessageMeta>, BackendError>> + Send {
        ready(
            self.with_box(name, |b| {
                b.messages.iter().map(|m| m.meta.clone()).collect()
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn changes(
        &mut self,
        name: &str,
        since: u64,
    ) -> impl Future<Output = Result<MailboxChanges, BackendError>> + Send {
        ready(
            self.with_box(name, |b| {
                let mut messages: Vec<MessageMeta> = b
                    .messages
                    .iter()
                    .filter(|m| m.meta.modseq > since || since == 0)
                    .map(|m| m.meta.clone())
                    .collect();
                messages.sort_by_key(|m| m.uid);
                let mut vanished: Vec<u32> = b
                    .expunged
                    .iter()
                    .filter(|e| since > 0 && e.1 > since)
                    .map(|e| e.0)
                    .collect();
                vanished.sort_unstable();
                MailboxChanges {
                    uid_validity: b.entry.uid_validity,
                    uid_next: described(b).uid_next,
                    highest_modseq: b.entry.highest_modseq,
                    messages,
                    vanished,
                }
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn header(
        &mut self,
        name: &str,
        uid: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BackendError>> + Send {
        self.headers_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ready(
            self.with_box(name, |b| {
                b.messages
                    .iter()
                    .find(|m| m.meta.uid == uid)
                    .map(|m| crate::message::split(&m.body).0.to_vec())
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn body(
        &mut self,
        name: &str,
        uid: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BackendError>> + Send {
        self.bodies_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ready(
            self.with_box(name, |b| {
                b.messages
                    .iter()
                    .find(|m| m.meta.uid == uid)
                    .map(|m| m.body.clone())
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn store_flags(
        &mut self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
    ) -> impl Future<Output = Result<Vec<MessageMeta>, BackendError>> + Send {
        ready(
            self.with_box(name, |b| mem_store(b, uids, op, flags, None).0)
                .ok_or(BackendError::NotFound),
        )
    }

    fn store_flags_unchanged_since(
        &mut self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: u64,
    ) -> impl Future<Output = Result<(Vec<MessageMeta>, Vec<u32>), BackendError>> + Send {
        ready(
            self.with_box(name, |b| {
                mem_store(b, uids, op, flags, Some(unchanged_since))
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn vanished(
        &mut self,
        name: &str,
        since: u64,
    ) -> impl Future<Output = Result<Vec<u32>, BackendError>> + Send {
        ready(
            self.with_box(name, |b| {
                let mut uids: Vec<u32> = b
                    .expunged
                    .iter()
                    .filter(|e| e.1 > since)
                    .map(|e| e.0)
                    .collect();
                uids.sort_unstable();
                uids
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn expunge(
        &mut self,
        name: &str,
        uids: Option<&[u32]>,
    ) -> impl Future<Output = Result<Vec<u32>, BackendError>> + Send {
        ready(
            self.with_box(name, |b| {
                let doomed: Vec<u32> = b
                    .messages
                    .iter()
                    .filter(|m| m.meta.flags.iter().any(|f| f == "\\Deleted"))
                    .filter(|m| uids.is_none_or(|u| u.contains(&m.meta.uid)))
                    .map(|m| m.meta.uid)
                    .collect();
                b.remove(&doomed);
                doomed
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn create_mailbox(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let mut boxes = self.boxes.lock().unwrap();
        let result = if boxes.iter().any(|b| b.entry.name == name) {
            Err(BackendError::Exists)
        } else {
            boxes.push(MemBox {
                entry: entry(name, None),
                messages: Vec::new(),
                expunged: Vec::new(),
            });
            Ok(())
        };
        ready(result)
    }

    fn delete_mailbox(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let mut boxes = self.boxes.lock().unwrap();
        let before = boxes.len();
        boxes.retain(|b| b.entry.name != name);
        ready(if boxes.len() == before {
            Err(BackendError::NotFound)
        } else {
            Ok(())
        })
    }

    fn rename_mailbox(
        &mut self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let mut boxes = self.boxes.lock().unwrap();
        let result = if boxes.iter().any(|b| b.entry.name == to) {
            Err(BackendError::Exists)
        } else {
            match boxes.iter_mut().find(|b| b.entry.name == from) {
                Some(b) => {
                    b.entry.name = to.to_string();
                    for name in self.subscribed.lock().unwrap().iter_mut() {
                        if name == from {
                            *name = to.to_string();
                        }
                    }
                    Ok(())
                }
                None => Err(BackendError::NotFound),
            }
        };
        ready(result)
    }

    fn append(
        &mut self,
        name: &str,
        content: &[u8],
        flags: &[String],
        _internal_date_ms: Option<i64>,
    ) -> impl Future<Output = Result<(u32, u32), BackendError>> + Send {
        let message_limit = self.limits.lock().unwrap().1;
        let stored: usize = self
            .boxes
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.messages.len())
            .sum();
        if message_limit.is_some_and(|limit| stored as u64 >= limit) {
            return ready(Err(BackendError::OverQuota));
        }
        ready(
            self.with_box(name, |b| {
                let uid = described(b).uid_next;
                let mut m = meta(uid, &[], content);
                m.flags = flags.to_vec();
                m.modseq = b.bump();
                b.messages.push(MemMessage {
                    meta: m,
                    body: content.to_vec(),
                });
                (b.entry.uid_validity, uid)
            })
            .ok_or(BackendError::NotFound),
        )
    }

    fn copy(
        &mut self,
        from: &str,
        uids: &[u32],
        to: &str,
        remove: bool,
    ) -> impl Future<Output = Result<(u32, Vec<(u32, u32)>), BackendError>> + Send {
        let mut boxes = self.boxes.lock().unwrap();
        let result = (|| {
            let src = boxes
                .iter()
                .position(|b| b.entry.name == from)
                .ok_or(BackendError::NotFound)?;
            let dst = boxes
                .iter()
                .position(|b| b.entry.name == to)
                .ok_or(BackendError::NotFound)?;
            let mut picked: Vec<(u32, Vec<String>, Vec<u8>)> = boxes[src]
                .messages
                .iter()
                .filter(|m| uids.contains(&m.meta.uid))
                .map(|m| (m.meta.uid, m.meta.flags.clone(), m.body.clone()))
                .collect();
            picked.sort_by_key(|p| p.0);
            let first = described(&boxes[dst]).uid_next;
            let mut pairs = Vec::new();
            for (next, (old, flags, body)) in (first..).zip(picked) {
                let mut m = meta(next, &[], &body);
                m.flags = flags;
                m.modseq = boxes[dst].bump();
                boxes[dst].messages.push(MemMessage { meta: m, body });
                pairs.push((old, next));
            }
            if remove {
                let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                boxes[src].remove(&moved);
            }
            Ok((boxes[dst].entry.uid_validity, pairs))
        })();
        ready(result)
    }

    fn subscribe(&mut self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send {
        let mut subscribed = self.subscribed.lock().unwrap();
        if !subscribed.iter().any(|n| n == name) {
            subscribed.push(name.to_string());
        }
        ready(Ok(()))
    }

    fn unsubscribe(&mut self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.subscribed.lock().unwrap().retain(|n| n != name);
        ready(Ok(()))
    }

    fn subscriptions(&mut self) -> impl Future<Output = Result<Vec<String>, BackendError>> + Send {
        ready(Ok(self.subscribed.lock().unwrap().clone()))
    }

    fn quota(&mut self) -> impl Future<Output = Result<crate::QuotaInfo, BackendError>> + Send {
        let (storage_limit, message_limit) = *self.limits.lock().unwrap();
        let boxes = self.boxes.lock().unwrap();
        let all = boxes.iter().flat_map(|b| &b.messages);
        ready(Ok(crate::QuotaInfo {
            storage_limit,
            storage_used: all.clone().map(|m| m.meta.size).sum(),
            message_limit,
            messages_used: all.count() as u64,
        }))
    }
}

/// STORE on the in-memory mailbox: changed messages share one new mod-sequence; with
/// `unchanged_since`, messages changed after it are skipped and returned second.
fn mem_store(
    b: &mut MemBox,
    uids: &[u32],
    op: FlagOp,
    flags: &[String],
    unchanged_since: Option<u64>,
) -> (Vec<MessageMeta>, Vec<u32>) {
    let next = b.entry.highest_modseq + 1;
    let mut bumped = false;
    let mut updated = Vec::new();
    let mut modified = Vec::new();
    for m in b.messages.iter_mut().filter(|m| uids.contains(&m.meta.uid)) {
        if unchanged_since.is_some_and(|limit| m.meta.modseq > limit) {
            modified.push(m.meta.uid);
            continue;
        }
        let before = m.meta.flags.clone();
        match op {
            FlagOp::Replace => m.meta.flags = flags.to_vec(),
            FlagOp::Add => {
                for f in flags {
                    if !m.meta.flags.contains(f) {
                        m.meta.flags.push(f.clone());
                    }
                }
            }
            FlagOp::Remove => m.meta.flags.retain(|f| !flags.contains(f)),
        }
        if m.meta.flags != before {
            m.meta.modseq = next;
            bumped = true;
        }
        updated.push(m.meta.clone());
    }
    if bumped {
        b.entry.highest_modseq = next;
    }
    (updated, modified)
}

fn config() -> Config {
    Config {
        tls_available: true,
        login_requires_tls: false,
        max_literal: 1024,
        max_failed_logins: 3,
        greeting_host: "mail.example.org".to_string(),
    }
}

fn session() -> (Session<MemBackend>, MemBackend) {
    let backend = MemBackend::new();
    (Session::new(config(), backend.clone(), false), backend)
}

fn feed(session: &mut Session<MemBackend>, input: &str) -> Output {
    block_on(session.feed(input.as_bytes()))
}

/// Sends each client chunk and checks the exact reply.
fn transcript(session: &mut Session<MemBackend>, steps: &[(&str, &str)]) {
    for (client, server) in steps {
        let output = feed(session, client);
        assert_eq!(
            String::from_utf8_lossy(&output.bytes),
            *server,
            "after client sent {client:?}"
        );
        assert_eq!(output.action, Action::Continue, "after {client:?}");
    }
}

fn logged_in() -> (Session<MemBackend>, MemBackend) {
    let (mut s, b) = session();
    let out = feed(&mut s, "a LOGIN bob \"secret pw\"\r\n");
    assert!(
        out.bytes.starts_with(b"a OK"),
        "{:?}",
        String::from_utf8_lossy(&out.bytes)
    );
    (s, b)
}

fn selected() -> (Session<MemBackend>, MemBackend) {
    let (mut s, b) = logged_in();
    let out = feed(&mut s, "s SELECT INBOX\r\n");
    assert!(
        out.bytes
            .ends_with(b"s OK [READ-WRITE] SELECT completed\r\n")
    );
    (s, b)
}

const CAPS_PLAIN: &str = "IMAP4rev2 IMAP4REV1 STARTTLS AUTH=PLAIN SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024";

#[test]
fn greeting_and_capability() {
    let (mut s, _) = session();
    assert_eq!(
        String::from_utf8(s.greeting()).unwrap(),
        format!("* OK [CAPABILITY {CAPS_PLAIN}] mail.example.org Tern IMAP ready\r\n")
    );
    transcript(
        &mut s,
        &[(
            "c1 CAPABILITY\r\n",
            &format!("* CAPABILITY {CAPS_PLAIN}\r\nc1 OK CAPABILITY completed\r\n"),
        )],
    );
    assert_eq!(s.timeout_reply(), b"* BYE idle timeout\r\n");
    assert_eq!(s.shutdown_reply(), b"* BYE server shutting down\r\n");
}

#[test]
fn login_disabled_until_starttls() {
    let mut cfg = config();
    cfg.login_requires_tls = true;
    let mut s = Session::new(cfg, MemBackend::new(), false);
    assert_eq!(
        String::from_utf8(s.greeting()).unwrap(),
        "* OK [CAPABILITY IMAP4rev2 IMAP4REV1 STARTTLS LOGINDISABLED SASL-IR LITERAL+ ID ENABLE \
         UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024] mail.example.org Tern IMAP ready\r\n"
    );
    transcript(
        &mut s,
        &[
            (
                "a LOGIN bob \"secret pw\"\r\n",
                "a NO [PRIVACYREQUIRED] Use STARTTLS first\r\n",
            ),
            (
                "b AUTHENTICATE PLAIN AGJvYgBzZWNyZXQgcHc=\r\n",
                "b NO [PRIVACYREQUIRED] Use STARTTLS first\r\n",
            ),
        ],
    );
    // Commands pipelined after STARTTLS are plaintext injection: they must be dropped.
    let out = feed(&mut s, "c STARTTLS\r\nd LOGIN bob \"secret pw\"\r\n");
    assert_eq!(out.bytes, b"c OK Begin TLS negotiation now\r\n");
    assert_eq!(out.action, Action::StartTls);
    s.tls_started();
    transcript(
        &mut s,
        &[
            (
                "e CAPABILITY\r\n",
                "* CAPABILITY IMAP4rev2 IMAP4REV1 AUTH=PLAIN SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024\r\n\
                 e OK CAPABILITY completed\r\n",
            ),
            ("f STARTTLS\r\n", "f BAD TLS is already active\r\n"),
            (
                "g LOGIN bob \"secret pw\"\r\n",
                "g OK [CAPABILITY IMAP4rev2 IMAP4REV1 SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024] Logged in\r\n",
            ),
        ],
    );
}

#[test]
fn starttls_not_offered_without_certificate() {
    let mut cfg = config();
    cfg.tls_available = false;
    let mut s = Session::new(cfg, MemBackend::new(), false);
    assert!(
        !String::from_utf8(s.greeting())
            .unwrap()
            .contains("STARTTLS")
    );
    transcript(
        &mut s,
        &[("a STARTTLS\r\n", "a NO TLS is not available\r\n")],
    );
}

#[test]
fn login_good_and_bad_then_too_many_failures() {
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[
            (
                "a LOGIN bob wrong\r\n",
                "a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n",
            ),
            (
                "b SELECT INBOX\r\n",
                "b BAD SELECT requires authentication\r\n",
            ),
            (
                "c LOGIN bob \"secret pw\"\r\n",
                "c OK [CAPABILITY IMAP4rev2 IMAP4REV1 SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024] Logged in\r\n",
            ),
            (
                "d LOGIN bob \"secret pw\"\r\n",
                "d BAD Already authenticated\r\n",
            ),
        ],
    );

    let (mut s, _) = session();
    feed(&mut s, "a LOGIN x y\r\n");
    feed(&mut s, "b LOGIN x y\r\n");
    let out = feed(&mut s, "c LOGIN x y\r\nd NOOP\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out.bytes),
        "c NO [AUTHENTICATIONFAILED] Invalid credentials\r\n\
         * BYE Too many failed authentication attempts\r\n"
    );
    assert_eq!(out.action, Action::Close);
    assert_eq!(feed(&mut s, "e NOOP\r\n").action, Action::Close);
}

#[test]
fn authenticate_plain_with_initial_response_and_continuation() {
    // base64("\0bob\0secret pw") and base64("bob\0bob\0secret pw").
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[(
            "a AUTHENTICATE PLAIN AGJvYgBzZWNyZXQgcHc=\r\n",
            "a OK [CAPABILITY IMAP4rev2 IMAP4REV1 SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024] Logged in\r\n",
        )],
    );

    let (mut s, _) = session();
    transcript(
        &mut s,
        &[
            ("a AUTHENTICATE PLAIN\r\n", "+ \r\n"),
            ("*\r\n", "a BAD Authentication cancelled\r\n"),
            ("b AUTHENTICATE PLAIN\r\n", "+ \r\n"),
            (
                "Ym9iAGJvYgB3cm9uZw==\r\n",
                "b NO [AUTHENTICATIONFAILED] Invalid credentials\r\n",
            ),
            ("c AUTHENTICATE PLAIN\r\n", "+ \r\n"),
            (
                "Ym9iAGJvYgBzZWNyZXQgcHc=\r\n",
                "c OK [CAPABILITY IMAP4rev2 IMAP4REV1 SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024] Logged in\r\n",
            ),
        ],
    );

    let (mut s, _) = session();
    transcript(
        &mut s,
        &[
            (
                "a AUTHENTICATE CRAM-MD5\r\n",
                "a NO Unsupported authentication mechanism\r\n",
            ),
            // authzid "eve" acting for "bob".
            (
                "b AUTHENTICATE PLAIN ZXZlAGJvYgBzZWNyZXQgcHc=\r\n",
                "b NO [AUTHORIZATIONFAILED] Authorization identity must be empty or match\r\n",
            ),
        ],
    );
}

#[test]
fn literals_synchronizing_and_non_synchronizing() {
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[
            ("a LOGIN {3}\r\n", "+ Ready for literal data\r\n"),
            ("bob {9}\r\n", "+ Ready for literal data\r\n"),
            (
                "secret pw\r\n",
                "a OK [CAPABILITY IMAP4rev2 IMAP4REV1 SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024] Logged in\r\n",
            ),
        ],
    );
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[(
            "a LOGIN {3+}\r\nbob {9+}\r\nsecret pw\r\n",
            "a OK [CAPABILITY IMAP4rev2 IMAP4REV1 SASL-IR LITERAL+ ID ENABLE UNSELECT UIDPLUS MOVE NAMESPACE IDLE BINARY CONDSTORE QRESYNC ESEARCH SEARCHRES LIST-EXTENDED LIST-STATUS SPECIAL-USE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE UTF8=ACCEPT SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES COMPRESS=DEFLATE APPENDLIMIT=1024] Logged in\r\n",
        )],
    );
    // Over max_literal (1024): refused before the data is sent, or skipped if already sent.
    transcript(
        &mut s,
        &[
            (
                "b STATUS {5000}\r\n",
                "b NO [TOOBIG] Literal exceeds the size limit\r\n",
            ),
            (
                &format!(
                    "c STATUS {{2000+}}\r\n{} (MESSAGES)\r\nd NOOP\r\n",
                    "x".repeat(2000)
                ),
                "c NO [TOOBIG] Literal exceeds the size limit\r\nd OK Completed\r\n",
            ),
        ],
    );
}

#[test]
fn long_lines_and_garbage_get_bad_and_session_continues() {
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[
            (
                "hello there\r\n",
                "hello BAD Unknown command or invalid arguments\r\n",
            ),
            ("\r\n", "* BAD Unknown command or invalid arguments\r\n"),
            (
                "a FETCH\r\n",
                "a BAD Unknown command or invalid arguments\r\n",
            ),
            (
                "\u{1}\u{2} x\r\n",
                "* BAD Unknown command or invalid arguments\r\n",
            ),
            ("b NOOP\r\n", "b OK Completed\r\n"),
            (
                "c SUBSCRIBE foo\r\n",
                "c BAD SUBSCRIBE requires authentication\r\n",
            ),
            (
                "d ID NIL\r\n",
                "* ID (\"name\" \"Tern\")\r\nd OK ID completed\r\n",
            ),
        ],
    );
    let long = format!("e NOOP {}\r\nf NOOP\r\n", "x".repeat(100_000));
    transcript(
        &mut s,
        &[(
            &long,
            "e BAD [TOOBIG] Command line too long\r\nf OK Completed\r\n",
        )],
    );
}

#[test]
fn select_and_examine() {
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "s SELECT inbox\r\n",
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
                 * 3 EXISTS\r\n\
                 * 0 RECENT\r\n\
                 * OK [UNSEEN 1] First unseen\r\n\
                 * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Limited\r\n\
                 * OK [UIDVALIDITY 42] UIDs valid\r\n\
                 * OK [UIDNEXT 6] Predicted next UID\r\n\
                 * OK [HIGHESTMODSEQ 1] Highest\r\n\
                 s OK [READ-WRITE] SELECT completed\r\n",
            ),
            (
                "e EXAMINE Sent\r\n",
                "* OK [CLOSED] Previous mailbox closed\r\n\
                 * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
                 * 0 EXISTS\r\n\
                 * 0 RECENT\r\n\
                 * OK [PERMANENTFLAGS ()] Limited\r\n\
                 * OK [UIDVALIDITY 42] UIDs valid\r\n\
                 * OK [UIDNEXT 1] Predicted next UID\r\n\
                 * OK [HIGHESTMODSEQ 1] Highest\r\n\
                 e OK [READ-ONLY] EXAMINE completed\r\n",
            ),
            (
                "f STORE 1 +FLAGS (\\Seen)\r\n",
                "f NO Mailbox is read-only\r\n",
            ),
            (
                "g SELECT Nope\r\n",
                "* OK [CLOSED] Previous mailbox closed\r\ng NO [NONEXISTENT] No such mailbox\r\n",
            ),
            (
                "h FETCH 1 FLAGS\r\n",
                "h BAD FETCH requires a selected mailbox\r\n",
            ),
            // Modified UTF-7 name of "Entwürfe".
            (
                "i EXAMINE Entw&APw-rfe\r\n",
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
                 * 0 EXISTS\r\n\
                 * 0 RECENT\r\n\
                 * OK [PERMANENTFLAGS ()] Limited\r\n\
                 * OK [UIDVALIDITY 42] UIDs valid\r\n\
                 * OK [UIDNEXT 1] Predicted next UID\r\n\
                 * OK [HIGHESTMODSEQ 1] Highest\r\n\
                 i OK [READ-ONLY] EXAMINE completed\r\n",
            ),
            ("j UNSELECT\r\n", "j OK UNSELECT completed\r\n"),
            ("k CLOSE\r\n", "k BAD CLOSE requires a selected mailbox\r\n"),
        ],
    );
}

#[test]
fn list_lsub_and_status() {
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a LIST \"\" \"\"\r\n",
                "* LIST (\\Noselect) \"/\" \"\"\r\na OK LIST completed\r\n",
            ),
            (
                "b LIST \"\" *\r\n",
                "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
                 * LIST (\\Noselect \\HasChildren) \"/\" \"Archive\"\r\n\
                 * LIST (\\HasNoChildren \\Archive) \"/\" \"Archive/2024\"\r\n\
                 * LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"\r\n\
                 * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n\
                 b OK LIST completed\r\n",
            ),
            (
                "c LIST \"\" %\r\n",
                "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
                 * LIST (\\Noselect \\HasChildren) \"/\" \"Archive\"\r\n\
                 * LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"\r\n\
                 * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n\
                 c OK LIST completed\r\n",
            ),
            (
                "d LIST Archive/ %\r\n",
                "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive/2024\"\r\nd OK LIST completed\r\n",
            ),
            (
                "e LSUB \"\" inbox\r\n",
                "* LSUB () \"/\" \"INBOX\"\r\ne OK LSUB completed\r\n",
            ),
            (
                "f STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT DELETED)\r\n",
                "* STATUS \"INBOX\" (MESSAGES 3 UIDNEXT 6 UIDVALIDITY 42 UNSEEN 2 RECENT 0 DELETED 0)\r\n\
                 f OK STATUS completed\r\n",
            ),
            (
                "g STATUS Nope (MESSAGES)\r\n",
                "g NO [NONEXISTENT] No such mailbox\r\n",
            ),
            (
                "h ENABLE IMAP4rev2\r\n",
                "* ENABLED IMAP4rev2\r\nh OK ENABLE completed\r\n",
            ),
        ],
    );
}

#[test]
fn fetch_forms_used_by_mutt_and_imaplib() {
    let (mut s, b) = selected();
    let fields = "BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT TO CC MESSAGE-ID REFERENCES \
                  CONTENT-TYPE CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES LIST-POST X-LABEL)]";
    let h1 = "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: Alice <alice@example.com>\r\n\
              To: bob@example.com\r\nSubject: Hello\r\nMessage-ID: <1@example.com>\r\n\r\n";
    let h2 = "From: carol@example.com\r\nSubject: Second\r\n\r\n";
    let h3 = "From: dave@example.com\r\nSubject: Third\r\n\r\n";
    let label = "BODY[HEADER.FIELDS (DATE FROM SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE \
                 CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES LIST-POST X-LABEL)]";
    let date = "\"01-Jan-2024 10:00:00 +0000\"";
    let expected = format!(
        "* 1 FETCH (UID 1 FLAGS () INTERNALDATE {date} RFC822.SIZE {} {label} {{{}}}\r\n{h1})\r\n\
         * 2 FETCH (UID 2 FLAGS (\\Seen) INTERNALDATE {date} RFC822.SIZE {} {label} {{{}}}\r\n{h2})\r\n\
         * 3 FETCH (UID 5 FLAGS (\\Flagged) INTERNALDATE {date} RFC822.SIZE {} {label} {{{}}}\r\n{h3})\r\n\
         m OK FETCH completed\r\n",
        MSG1.len(),
        h1.len(),
        MSG2.len(),
        h2.len(),
        MSG3.len(),
        h3.len()
    );
    transcript(
        &mut s,
        &[(
            &format!("m FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE {fields})\r\n"),
            &expected,
        )],
    );

    // mutt reads a message with UID FETCH ... BODY.PEEK[]; the NUL byte is counted and sent.
    let out = feed(&mut s, "n UID FETCH 5 BODY.PEEK[]\r\n");
    let mut want = format!("* 3 FETCH (UID 5 BODY[] {{{}}}\r\n", MSG3.len()).into_bytes();
    want.extend_from_slice(MSG3);
    want.extend_from_slice(b")\r\nn OK FETCH completed\r\n");
    assert_eq!(out.bytes, want);

    // PEEK left \Seen alone; imaplib's FETCH 1 (RFC822) sets it and reports the new flags.
    let out = feed(&mut s, "o FETCH 1 (RFC822)\r\n");
    let mut want = format!("* 1 FETCH (RFC822 {{{}}}\r\n", MSG1.len()).into_bytes();
    want.extend_from_slice(MSG1);
    want.extend_from_slice(b" FLAGS (\\Seen))\r\no OK FETCH completed\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out.bytes),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(
        b.with_box("INBOX", |m| m.messages[0].meta.flags.clone()),
        Some(vec!["\\Seen".to_string()])
    );

    transcript(
        &mut s,
        &[
            (
                "p FETCH 2 (BODY[TEXT] RFC822.HEADER)\r\n",
                "* 2 FETCH (BODY[TEXT] {20}\r\nLine one\r\nLine two\r\n RFC822.HEADER {59}\r\n\
                 From: carol@example.com\r\nSubject: Second\r\nX-Long: a\r\n b\r\n\r\n)\r\n\
                 p OK FETCH completed\r\n",
            ),
            (
                "q FETCH 2 (BODY.PEEK[HEADER.FIELDS.NOT (From Subject)] BODY[]<0.4> BODY.PEEK[TEXT]<5.100>)\r\n",
                "* 2 FETCH (BODY[HEADER.FIELDS.NOT (From Subject)] {17}\r\nX-Long: a\r\n b\r\n\r\n \
                 BODY[]<0> {4}\r\nFrom BODY[TEXT]<5> {15}\r\none\r\nLine two\r\n)\r\n\
                 q OK FETCH completed\r\n",
            ),
            (
                "r FETCH 2 RFC822.TEXT\r\n",
                "* 2 FETCH (RFC822.TEXT {20}\r\nLine one\r\nLine two\r\n)\r\nr OK FETCH completed\r\n",
            ),
            (
                "s FETCH 1 FAST\r\n",
                &format!(
                    "* 1 FETCH (FLAGS (\\Seen) INTERNALDATE {date} RFC822.SIZE {})\r\ns OK FETCH completed\r\n",
                    MSG1.len()
                ),
            ),
            (
                "t FETCH 1 ENVELOPE\r\n",
                "* 1 FETCH (ENVELOPE (\"Mon, 1 Jan 2024 10:00:00 +0000\" \"Hello\" \
                 ((\"Alice\" NIL \"alice\" \"example.com\")) ((\"Alice\" NIL \"alice\" \"example.com\")) \
                 ((\"Alice\" NIL \"alice\" \"example.com\")) ((NIL NIL \"bob\" \"example.com\")) NIL NIL NIL \
                 \"<1@example.com>\"))\r\nt OK FETCH completed\r\n",
            ),
            (
                "u FETCH 4 FLAGS\r\n",
                "u BAD Invalid message sequence number\r\n",
            ),
            ("v UID FETCH 3:4 FLAGS\r\n", "v OK FETCH completed\r\n"),
            (
                "w FETCH 1 BODYSTRUCTURE\r\n",
                "* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \
                 \"7BIT\" 8 1 NIL NIL NIL NIL))\r\nw OK FETCH completed\r\n",
            ),
            (
                "x FETCH 1 BODY[1.2]\r\n",
                "* 1 FETCH (BODY[1.2] NIL)\r\nx OK FETCH completed\r\n",
            ),
        ],
    );
}

#[test]
fn examine_never_sets_seen() {
    let (mut s, b) = logged_in();
    feed(&mut s, "e EXAMINE INBOX\r\n");
    let out = feed(&mut s, "f FETCH 1 BODY[HEADER]\r\n");
    assert!(!String::from_utf8_lossy(&out.bytes).contains("FLAGS"));
    assert_eq!(
        b.with_box("INBOX", |m| m.messages[0].meta.flags.clone()),
        Some(vec![])
    );
}

#[test]
fn store_and_silent_store() {
    let (mut s, _) = selected();
    transcript(
        &mut s,
        &[
            (
                "a STORE 1:2 +FLAGS (\\Flagged)\r\n",
                "* 1 FETCH (FLAGS (\\Flagged))\r\n* 2 FETCH (FLAGS (\\Seen \\Flagged))\r\n\
                 a OK STORE completed\r\n",
            ),
            (
                "b STORE 2 -FLAGS.SILENT (\\Seen)\r\n",
                "b OK STORE completed\r\n",
            ),
            (
                "c UID STORE 5 FLAGS ($Junk \\Answered)\r\n",
                "* 3 FETCH (UID 5 FLAGS ($Junk \\Answered))\r\nc OK STORE completed\r\n",
            ),
            (
                "d FETCH 1:* FLAGS\r\n",
                "* 1 FETCH (FLAGS (\\Flagged))\r\n* 2 FETCH (FLAGS (\\Flagged))\r\n\
                 * 3 FETCH (FLAGS ($Junk \\Answered))\r\nd OK FETCH completed\r\n",
            ),
        ],
    );
}

#[test]
fn expunge_numbering_is_descending() {
    let (mut s, b) = selected();
    b.add("INBOX", 6, b"Subject: four\r\n\r\n");
    b.add("INBOX", 7, b"Subject: five\r\n\r\n");
    transcript(
        &mut s,
        &[
            // The new messages are announced before the seq numbers are used.
            ("a NOOP\r\n", "* 5 EXISTS\r\na OK Completed\r\n"),
            (
                "b STORE 2,4 +FLAGS.SILENT (\\Deleted)\r\n",
                "b OK STORE completed\r\n",
            ),
            (
                "c SEARCH DELETED\r\n",
                "* SEARCH 2 4\r\nc OK SEARCH completed\r\n",
            ),
            (
                "d EXPUNGE\r\n",
                "* 4 EXPUNGE\r\n* 2 EXPUNGE\r\nd OK EXPUNGE completed\r\n",
            ),
            (
                "e UID FETCH 1:* UID\r\n",
                "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 5)\r\n* 3 FETCH (UID 7)\r\n\
                 e OK FETCH completed\r\n",
            ),
            (
                "f UID STORE 7 +FLAGS.SILENT (\\Deleted)\r\n",
                "f OK STORE completed\r\n",
            ),
            ("g UID EXPUNGE 1:5\r\n", "g OK EXPUNGE completed\r\n"),
            (
                "h UID EXPUNGE 7\r\n",
                "* 3 EXPUNGE\r\nh OK EXPUNGE completed\r\n",
            ),
        ],
    );
}

#[test]
fn foreign_expunge_waits_for_noop() {
    let (mut s, b) = selected();
    // Another session expunges UID 2 (seq 2) behind our back.
    b.expunge_uids("INBOX", &[2]);
    transcript(
        &mut s,
        &[
            // RFC 9051 §7.5.1: no EXPUNGE during FETCH; numbers stay put.
            (
                "a FETCH 1:3 UID\r\n",
                "* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 5)\r\na OK [EXPUNGEISSUED] Some messages were expunged\r\n",
            ),
            (
                "b SEARCH ALL\r\n",
                "* SEARCH 1 3\r\nb OK SEARCH completed\r\n",
            ),
            ("c NOOP\r\n", "* 2 EXPUNGE\r\nc OK Completed\r\n"),
            (
                "d FETCH 2 UID\r\n",
                "* 2 FETCH (UID 5)\r\nd OK FETCH completed\r\n",
            ),
        ],
    );
    // A flag change by someone else (with its new mod-sequence) shows up on NOOP.
    b.set_flags("INBOX", 1, &["\\Answered"]);
    transcript(
        &mut s,
        &[(
            "e NOOP\r\n",
            "* 1 FETCH (UID 1 FLAGS (\\Answered))\r\ne OK Completed\r\n",
        )],
    );
}

#[test]
fn search_keys() {
    let (mut s, _) = selected();
    transcript(
        &mut s,
        &[
            (
                "a SEARCH ALL\r\n",
                "* SEARCH 1 2 3\r\na OK SEARCH completed\r\n",
            ),
            (
                "b UID SEARCH ALL\r\n",
                "* SEARCH 1 2 5\r\nb OK SEARCH completed\r\n",
            ),
            (
                "c SEARCH UNSEEN\r\n",
                "* SEARCH 1 3\r\nc OK SEARCH completed\r\n",
            ),
            (
                "d SEARCH SEEN\r\n",
                "* SEARCH 2\r\nd OK SEARCH completed\r\n",
            ),
            (
                "e SEARCH FLAGGED UNDELETED\r\n",
                "* SEARCH 3\r\ne OK SEARCH completed\r\n",
            ),
            (
                "f UID SEARCH UID 2:*\r\n",
                "* SEARCH 2 5\r\nf OK SEARCH completed\r\n",
            ),
            (
                "g SEARCH 2:3 NOT SEEN\r\n",
                "* SEARCH 3\r\ng OK SEARCH completed\r\n",
            ),
            (
                "h SEARCH OR FROM alice SUBJECT third\r\n",
                "* SEARCH 1 3\r\nh OK SEARCH completed\r\n",
            ),
            (
                "i SEARCH BODY \"line TWO\"\r\n",
                "* SEARCH 2\r\ni OK SEARCH completed\r\n",
            ),
            (
                "j SEARCH CHARSET UTF-8 TEXT bob\r\n",
                "* SEARCH 1\r\nj OK SEARCH completed\r\n",
            ),
            (
                "k SEARCH CHARSET KOI8-R ALL\r\n",
                "k NO [BADCHARSET (UTF-8 US-ASCII)] Only UTF-8 and US-ASCII are supported\r\n",
            ),
            (
                "l SEARCH SINCE 1-Jan-2024\r\n",
                "* SEARCH 1 2 3\r\nl OK SEARCH completed\r\n",
            ),
            (
                "m SEARCH DELETED\r\n",
                "* SEARCH\r\nm OK SEARCH completed\r\n",
            ),
        ],
    );
}

#[test]
fn close_expunges_silently_and_logout_closes() {
    let (mut s, b) = selected();
    transcript(
        &mut s,
        &[
            (
                "a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n",
                "a OK STORE completed\r\n",
            ),
            ("b CLOSE\r\n", "b OK CLOSE completed\r\n"),
        ],
    );
    assert_eq!(b.with_box("INBOX", |m| m.messages.len()), Some(2));
    let out = feed(&mut s, "c LOGOUT\r\n");
    assert_eq!(out.bytes, b"* BYE Logging out\r\nc OK LOGOUT completed\r\n");
    assert_eq!(out.action, Action::Close);
}

/// The bytes of a whole session, fed either at once or one byte at a time.
const SCRIPT: &str = "a LOGIN {3}\r\nbob \"secret pw\"\r\nb SELECT INBOX\r\n\
    c FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n\
    d STORE 1 +FLAGS (\\Deleted)\r\ne AUTHENTICATE PLAIN\r\nf EXPUNGE\r\ng LIST \"\" *\r\n\
    h SEARCH UNSEEN\r\ni LOGOUT\r\n";

#[test]
fn one_byte_chunks_give_the_same_output() {
    let (mut whole, _) = session();
    let all = block_on(whole.feed(SCRIPT.as_bytes()));
    let (mut split, _) = session();
    let mut bytes = Vec::new();
    let mut action = Action::Continue;
    for byte in SCRIPT.as_bytes() {
        let out = block_on(split.feed(std::slice::from_ref(byte)));
        bytes.extend(out.bytes);
        action = out.action;
    }
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&all.bytes)
    );
    assert_eq!(action, Action::Close);
    assert_eq!(all.action, Action::Close);
    assert!(
        String::from_utf8_lossy(&all.bytes).contains("* 1 EXPUNGE\r\nf OK EXPUNGE completed\r\n")
    );
}

#[test]
fn random_input_never_panics() {
    // A fixed xorshift generator keeps the test reproducible.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces: [&[u8]; 16] = [
        b"a ",
        b"LOGIN bob \"secret pw\"",
        b"SELECT INBOX",
        b"FETCH 1:* ",
        b"(BODY[]<0.5>)",
        b"{3}",
        b"{4+}",
        b"\r\n",
        b"*",
        b"UID ",
        b"STORE 1 +FLAGS (\\Seen)",
        b"SEARCH OR ",
        b"AUTHENTICATE PLAIN",
        b"\"",
        b"%",
        b"EXPUNGE",
    ];
    for _ in 0..300 {
        let (mut s, _) = session();
        for _ in 0..40 {
            let mut chunk = Vec::new();
            for _ in 0..(next() % 6) {
                if next() % 3 == 0 {
                    chunk.push(next() as u8);
                } else {
                    chunk.extend_from_slice(pieces[(next() % 16) as usize]);
                }
            }
            let out = block_on(s.feed(&chunk));
            if out.action == Action::StartTls {
                s.tls_started();
            }
        }
    }
}

/// A FETCH over many large messages hands its output over in pieces while it runs (the
/// agent writes them at once); the pieces and `feed`'s own output are, in order, exactly
/// what the same FETCH returns without streaming.
#[test]
fn long_fetch_streams_its_output_in_pieces() {
    use futures::StreamExt;
    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(60_000));
    let fill = |b: &MemBackend| {
        for uid in 101..=120 {
            b.add("INBOX", uid, body.as_bytes());
        }
    };
    let (mut plain, b) = selected();
    fill(&b);
    let expected = feed(&mut plain, "f FETCH 1:* (UID BODY.PEEK[])\r\n").bytes;
    assert!(
        expected.len() > 1_200_000,
        "{}",
        String::from_utf8_lossy(&expected[..expected.len().min(600)])
    );

    let (mut s, b) = selected();
    fill(&b);
    let mut early = s.stream_output();
    let collected = std::cell::RefCell::new(Vec::new());
    let output = block_on(async {
        let feeding = std::pin::pin!(s.feed(b"f FETCH 1:* (UID BODY.PEEK[])\r\n"));
        let draining = std::pin::pin!(async {
            while let Some(piece) = early.next().await {
                collected.borrow_mut().push(piece);
            }
        });
        // The channel holds one piece: feed finishes only because it is drained meanwhile.
        match futures::future::select(feeding, draining).await {
            futures::future::Either::Left((output, _)) => output,
            futures::future::Either::Right(_) => unreachable!("the session keeps the sender"),
        }
    });
    while let Ok(piece) = early.try_recv() {
        collected.borrow_mut().push(piece);
    }
    let pieces = collected.into_inner();
    assert!(pieces.len() >= 4, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|p| p.len() >= 256 * 1024));
    assert!(
        output.bytes.len() < 256 * 1024,
        "feed kept {} bytes",
        output.bytes.len()
    );
    let mut all = pieces.concat();
    all.extend(output.bytes);
    assert!(all == expected, "streamed output differs");
}

/// SEARCHRES (RFC 5182): SAVE keeps what SEARCH found, `$` names it in later commands by
/// sequence number or UID, a failed SAVE empties it, an expunged message drops out.
#[test]
fn saved_search_results_stand_for_dollar() {
    let (mut s, _) = selected();
    let out = |s: &mut Session<MemBackend>, c: &str| String::from_utf8(feed(s, c).bytes).unwrap();
    assert_eq!(
        out(&mut s, "r1 SEARCH RETURN (SAVE) UNSEEN\r\n"),
        "r1 OK SEARCH completed\r\n"
    );
    assert_eq!(
        out(&mut s, "r2 FETCH $ (FLAGS)\r\n"),
        "* 1 FETCH (FLAGS ())\r\n* 3 FETCH (FLAGS (\\Flagged))\r\nr2 OK FETCH completed\r\n"
    );
    let uid_fetch = out(&mut s, "r3 UID FETCH $ (FLAGS)\r\n");
    assert!(
        uid_fetch.contains("UID 1") && uid_fetch.contains("UID 5"),
        "{uid_fetch}"
    );
    assert!(!uid_fetch.contains("UID 2"), "{uid_fetch}");
    assert_eq!(
        out(&mut s, "r4 SEARCH $ FLAGGED\r\n"),
        "* SEARCH 3\r\nr4 OK SEARCH completed\r\n"
    );
    assert_eq!(
        out(&mut s, "r5 SEARCH RETURN (MAX SAVE) ALL\r\n"),
        "* ESEARCH (TAG \"r5\") MAX 3\r\nr5 OK SEARCH completed\r\n"
    );
    assert_eq!(
        out(&mut s, "r6 UID SEARCH UID $\r\n"),
        "* SEARCH 5\r\nr6 OK SEARCH completed\r\n"
    );
    // A SAVE that fails leaves `$` empty: it then names nothing, without an error.
    assert!(out(&mut s, "r7 SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n").starts_with("r7 NO"));
    assert_eq!(
        out(&mut s, "r8 FETCH $ (FLAGS)\r\n"),
        "r8 OK FETCH completed\r\n"
    );
    assert_eq!(
        out(&mut s, "r9 SEARCH $\r\n"),
        "* SEARCH\r\nr9 OK SEARCH completed\r\n"
    );
    // An expunged message drops out; the others keep being found by their new numbers.
    out(&mut s, "t1 SEARCH RETURN (SAVE) OR SEEN FLAGGED\r\n");
    out(&mut s, "t2 STORE 2 +FLAGS.SILENT (\\Deleted)\r\n");
    out(&mut s, "t3 EXPUNGE\r\n");
    assert_eq!(
        out(&mut s, "t4 FETCH $ (FLAGS)\r\n"),
        "* 2 FETCH (FLAGS (\\Flagged))\r\nt4 OK FETCH completed\r\n"
    );
    // `$` is a whole sequence set only; SELECT starts over with nothing saved.
    assert!(out(&mut s, "t5 FETCH 1,$ (FLAGS)\r\n").starts_with("t5 BAD"));
    out(&mut s, "t6 SELECT INBOX\r\n");
    assert_eq!(
        out(&mut s, "t7 SEARCH $\r\n"),
        "* SEARCH\r\nt7 OK SEARCH completed\r\n"
    );
}

#[test]
fn session_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (mut s, _) = session();
    let future = s.feed(b"a NOOP\r\n");
    assert_send(&future);
    drop(future);
}

#[test]
fn create_delete_rename_and_namespace() {
    let (mut s, backend) = logged_in();
    transcript(
        &mut s,
        &[
            ("a1 CREATE Projects/2026/\r\n", "a1 OK CREATE completed\r\n"),
            (
                "a2 CREATE Projects\r\n",
                "a2 NO [ALREADYEXISTS] Mailbox already exists\r\n",
            ),
            (
                "a3 CREATE inbox\r\n",
                "a3 NO [ALREADYEXISTS] INBOX always exists\r\n",
            ),
            ("a4 CREATE \"a//b\"\r\n", "a4 BAD Invalid mailbox name\r\n"),
            (
                "a5 RENAME Projects/2026 Projects/Done\r\n",
                "a5 OK RENAME completed\r\n",
            ),
            (
                "a6 RENAME Nope Other\r\n",
                "a6 NO [NONEXISTENT] No such mailbox or message\r\n",
            ),
            ("a7 DELETE Projects/Done\r\n", "a7 OK DELETE completed\r\n"),
            (
                "a8 DELETE INBOX\r\n",
                "a8 NO [CANNOT] INBOX cannot be deleted\r\n",
            ),
            (
                "a9 NAMESPACE\r\n",
                "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\na9 OK NAMESPACE completed\r\n",
            ),
        ],
    );
    let names: Vec<String> = backend
        .boxes
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.entry.name.clone())
        .collect();
    assert!(names.contains(&"Projects".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("Projects/")),
        "{names:?}"
    );
}

#[test]
fn append_answers_appenduid_and_trycreate() {
    let (mut s, backend) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a1 APPEND Sent (\\Seen) {12+}\r\nSubject: x\r\n\r\n",
                "a1 OK [APPENDUID 42 1] APPEND completed\r\n",
            ),
            (
                "a2 APPEND Missing {3+}\r\nabc\r\n",
                "a2 NO [TRYCREATE] No such mailbox\r\n",
            ),
            (
                "a3 APPEND Sent (\\Recent) {3+}\r\nabc\r\n",
                "a3 BAD \\Recent cannot be set\r\n",
            ),
        ],
    );
    let flags = backend
        .with_box("Sent", |b| b.messages[0].meta.flags.clone())
        .unwrap();
    assert_eq!(flags, vec!["\\Seen".to_string()]);
    // APPEND to the selected mailbox announces the new message.
    let _ = feed(&mut s, "b1 SELECT INBOX\r\n");
    let out = feed(&mut s, "b2 APPEND INBOX {3+}\r\nabc\r\n");
    let text = String::from_utf8(out.bytes).unwrap();
    assert!(text.contains("* 4 EXISTS\r\n"), "{text}");
    assert!(
        text.ends_with("b2 OK [APPENDUID 42 6] APPEND completed\r\n"),
        "{text}"
    );
}

#[test]
fn copy_and_move_answer_copyuid_and_expunge() {
    let (mut s, backend) = logged_in();
    let _ = feed(&mut s, "a0 SELECT INBOX\r\n");
    transcript(
        &mut s,
        &[
            (
                "a1 COPY 1:2 Sent\r\n",
                "a1 OK [COPYUID 42 1:2 1:2] COPY completed\r\n",
            ),
            (
                "a2 UID COPY 5 Nope\r\n",
                "a2 NO [TRYCREATE] No such mailbox\r\n",
            ),
            (
                "a3 UID MOVE 2:5 Sent\r\n",
                "* OK [COPYUID 42 2,5 3:4] Moved\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\na3 OK MOVE completed\r\n",
            ),
            (
                "a4 COPY 7 Sent\r\n",
                "a4 BAD Invalid message sequence number\r\n",
            ),
            (
                "a5 UID COPY 99 Sent\r\n",
                "a5 OK COPY completed, nothing to do\r\n",
            ),
        ],
    );
    assert_eq!(backend.with_box("Sent", |b| b.messages.len()).unwrap(), 4);
    assert_eq!(backend.with_box("INBOX", |b| b.messages.len()).unwrap(), 1);
    // EXAMINE is read-only: COPY works, MOVE does not.
    let _ = feed(&mut s, "b0 EXAMINE Sent\r\n");
    transcript(
        &mut s,
        &[
            ("b1 MOVE 1 INBOX\r\n", "b1 NO Mailbox is read-only\r\n"),
            (
                "b2 COPY 1 INBOX\r\n",
                "b2 OK [COPYUID 42 1 2] COPY completed\r\n",
            ),
        ],
    );
}

#[test]
fn uid_sets_compress_runs() {
    assert_eq!(
        crate::session::uid_set_for_tests(&[1, 2, 3, 7, 9, 10]),
        "1:3,7,9:10"
    );
    assert_eq!(crate::session::uid_set_for_tests(&[5]), "5");
    assert_eq!(crate::session::uid_set_for_tests(&[]), "");
}

const MIXED: &str = "From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: Report\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
This is a multi-part message.\r\n--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Bob\r\n\
--inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
<p>Hello Bob</p>\r\n--inner--\r\n\r\n\
--outer\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\r\nJVBERi0xLjQK\r\n--outer--\r\n";

const FORWARD: &str = "From: carol@example.com\r\nSubject: Fwd\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n\
--b\r\nContent-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n\
From: dave@example.com\r\nSubject: Inner\r\n\r\nInner body\r\n--b--\r\n";

const QP: &str = "From: erin@example.com\r\nSubject: QP\r\n\
Content-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\
Content-Language: en, fr\r\n\r\nCaf=E9 au lait=\r\n chaud\r\n";

/// INBOX with the three MIME messages as 4, 5 and 6 (UIDs 6, 7, 8), selected.
fn mime_selected() -> Session<MemBackend> {
    let (mut s, b) = logged_in();
    b.add("INBOX", 6, MIXED.as_bytes());
    b.add("INBOX", 7, FORWARD.as_bytes());
    b.add("INBOX", 8, QP.as_bytes());
    let out = feed(&mut s, "s SELECT INBOX\r\n");
    assert!(
        out.bytes
            .ends_with(b"s OK [READ-WRITE] SELECT completed\r\n")
    );
    s
}

fn lit(data: &str) -> String {
    format!("{{{}}}\r\n{data}", data.len())
}

#[test]
fn bodystructure_of_alternative_with_attachment() {
    let mut s = mime_selected();
    transcript(
        &mut s,
        &[
            (
                "a FETCH 4 (BODYSTRUCTURE)\r\n",
                "* 4 FETCH (BODYSTRUCTURE (((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \
                 \"7BIT\" 9 1 NIL NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \
                 \"quoted-printable\" 16 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"inner\") \
                 NIL NIL NIL)(\"application\" \"pdf\" (\"name\" \"report.pdf\") NIL NIL \"base64\" 12 \
                 NIL (\"attachment\" (\"filename\" \"report.pdf\")) NIL NIL) \"mixed\" \
                 (\"boundary\" \"outer\") NIL NIL NIL))\r\na OK FETCH completed\r\n",
            ),
            (
                "b FETCH 4 (BODY)\r\n",
                "* 4 FETCH (BODY (((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 9 1)\
                 (\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 16 1) \
                 \"alternative\")(\"application\" \"pdf\" (\"name\" \"report.pdf\") NIL NIL \
                 \"base64\" 12) \"mixed\"))\r\nb OK FETCH completed\r\n",
            ),
            (
                "c UID FETCH 6 (BODY.PEEK[2] BODY.PEEK[1.1] BODY.PEEK[1.2.MIME] BODY.PEEK[1.2]<3.5>)\r\n",
                &format!(
                    "* 4 FETCH (UID 6 BODY[2] {} BODY[1.1] {} BODY[1.2.MIME] {} BODY[1.2]<3> {})\r\n\
                     c OK FETCH completed\r\n",
                    lit("JVBERi0xLjQK"),
                    lit("Hello Bob"),
                    lit("Content-Type: text/html; charset=utf-8\r\n\
                         Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
                    lit("Hello"),
                ),
            ),
            (
                // Part 1 is the whole multipart/alternative entity, without the delimiter's CRLF.
                "d FETCH 4 (BODY.PEEK[1] BODY.PEEK[3] BODY.PEEK[1.1.1])\r\n",
                &format!(
                    "* 4 FETCH (BODY[1] {} BODY[3] NIL BODY[1.1.1] NIL)\r\nd OK FETCH completed\r\n",
                    lit(
                        "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Bob\r\n\
                         --inner\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>Hello Bob</p>\r\n\
                         --inner--\r\n"
                    ),
                ),
            ),
            // Without PEEK a numbered part sets \Seen like BODY[] does.
            (
                "e FETCH 4 (BODY[1.1])\r\n",
                &format!(
                    "* 4 FETCH (BODY[1.1] {} FLAGS (\\Seen))\r\ne OK FETCH completed\r\n",
                    lit("Hello Bob")
                ),
            ),
        ],
    );
}

#[test]
fn bodystructure_and_sections_of_message_rfc822() {
    let mut s = mime_selected();
    let inner_env = "(NIL \"Inner\" ((NIL NIL \"dave\" \"example.com\")) \
                     ((NIL NIL \"dave\" \"example.com\")) ((NIL NIL \"dave\" \"example.com\")) \
                     NIL NIL NIL NIL NIL)";
    transcript(
        &mut s,
        &[
            (
                "a FETCH 5 BODYSTRUCTURE\r\n",
                &format!(
                    "* 5 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7BIT\" 10 1 NIL NIL \
                     NIL NIL)(\"message\" \"rfc822\" NIL NIL \"forwarded\" \"7BIT\" 52 {inner_env} \
                     (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 10 1 NIL NIL NIL \
                     NIL) 4 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL))\r\n\
                     a OK FETCH completed\r\n"
                ),
            ),
            (
                "b FETCH 5 (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] \
                 BODY.PEEK[2.HEADER.FIELDS (SUBJECT)] BODY.PEEK[2.MIME] BODY.PEEK[1.HEADER])\r\n",
                &format!(
                    "* 5 FETCH (BODY[2.HEADER] {} BODY[2.TEXT] {} BODY[2.1] {} \
                     BODY[2.HEADER.FIELDS (SUBJECT)] {} BODY[2.MIME] {} BODY[1.HEADER] NIL)\r\n\
                     b OK FETCH completed\r\n",
                    lit("From: dave@example.com\r\nSubject: Inner\r\n\r\n"),
                    lit("Inner body"),
                    lit("Inner body"),
                    lit("Subject: Inner\r\n\r\n"),
                    lit("Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"),
                ),
            ),
            (
                "c FETCH 5 (BODY.PEEK[2])\r\n",
                &format!(
                    "* 5 FETCH (BODY[2] {})\r\nc OK FETCH completed\r\n",
                    lit("From: dave@example.com\r\nSubject: Inner\r\n\r\nInner body")
                ),
            ),
        ],
    );
}

#[test]
fn bodystructure_of_single_part_quoted_printable() {
    let mut s = mime_selected();
    let body = "Caf=E9 au lait=\r\n chaud\r\n";
    transcript(
        &mut s,
        &[
            (
                "a FETCH 6 (BODYSTRUCTURE BODY)\r\n",
                "* 6 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"iso-8859-1\") NIL NIL \
                 \"quoted-printable\" 25 2 NIL NIL (\"en\" \"fr\") NIL) BODY (\"text\" \"plain\" \
                 (\"charset\" \"iso-8859-1\") NIL NIL \"quoted-printable\" 25 2))\r\n\
                 a OK FETCH completed\r\n",
            ),
            (
                "b FETCH 6 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[1]<20.100>)\r\n",
                &format!(
                    "* 6 FETCH (BODY[1] {} BODY[2] NIL BODY[1]<20> {})\r\nb OK FETCH completed\r\n",
                    lit(body),
                    lit("aud\r\n"),
                ),
            ),
        ],
    );
}

#[test]
fn subscribe_unsubscribe_and_lsub() {
    let (mut s, b) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a LSUB \"\" *\r\n",
                "* LSUB () \"/\" \"INBOX\"\r\n* LSUB () \"/\" \"Archive/2024\"\r\n\
                 * LSUB () \"/\" \"Sent\"\r\na OK LSUB completed\r\n",
            ),
            // "%" stops at Archive, which is not subscribed: it is listed \Noselect.
            (
                "b LSUB \"\" %\r\n",
                "* LSUB () \"/\" \"INBOX\"\r\n* LSUB (\\Noselect) \"/\" \"Archive\"\r\n\
                 * LSUB () \"/\" \"Sent\"\r\nb OK LSUB completed\r\n",
            ),
            (
                "c SUBSCRIBE Entw&APw-rfe\r\n",
                "c OK SUBSCRIBE completed\r\n",
            ),
            ("d UNSUBSCRIBE Sent\r\n", "d OK UNSUBSCRIBE completed\r\n"),
            ("e SUBSCRIBE Later\r\n", "e OK SUBSCRIBE completed\r\n"),
            // A subscribed name without a mailbox is \Noselect; UTF-8 names go out in mUTF-7.
            (
                "f LSUB \"\" *\r\n",
                "* LSUB () \"/\" \"INBOX\"\r\n* LSUB () \"/\" \"Archive/2024\"\r\n\
                 * LSUB () \"/\" \"Entw&APw-rfe\"\r\n* LSUB (\\Noselect) \"/\" \"Later\"\r\n\
                 f OK LSUB completed\r\n",
            ),
            // RENAME carries the subscription along (the backend's job, seen through LSUB).
            (
                "g RENAME Entw&APw-rfe Drafts\r\n",
                "g OK RENAME completed\r\n",
            ),
            (
                "h LSUB \"\" D*\r\n",
                "* LSUB () \"/\" \"Drafts\"\r\nh OK LSUB completed\r\n",
            ),
            ("i SUBSCRIBE \"\"\r\n", "i BAD Invalid mailbox name\r\n"),
        ],
    );
    assert_eq!(
        *b.subscribed.lock().unwrap(),
        ["INBOX", "Archive/2024", "Drafts", "Later"]
    );
    let (mut fresh, _) = session();
    transcript(
        &mut fresh,
        &[(
            "a SUBSCRIBE INBOX\r\n",
            "a BAD SUBSCRIBE requires authentication\r\n",
        )],
    );
}

#[test]
fn binary_sections_are_decoded() {
    let mut s = mime_selected();
    transcript(
        &mut s,
        &[
            (
                "a FETCH 4 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1.2]<3.5>)\r\n",
                &format!(
                    "* 4 FETCH (BINARY[2] {} BINARY.SIZE[2] 9 BINARY[1.2]<3> {})\r\n\
                     a OK FETCH completed\r\n",
                    lit("%PDF-1.4\n"),
                    lit("Hello"),
                ),
            ),
            (
                "b FETCH 6 (BINARY.SIZE[1] BINARY.PEEK[3])\r\n",
                "* 6 FETCH (BINARY.SIZE[1] 20 BINARY[3] NIL)\r\nb OK FETCH completed\r\n",
            ),
        ],
    );
    // The decoded quoted-printable is ISO-8859-1; BINARY without PEEK sets \Seen.
    let out = feed(&mut s, "c FETCH 6 (BINARY[1])\r\n");
    assert_eq!(
        out.bytes,
        b"* 6 FETCH (BINARY[1] {20}\r\nCaf\xe9 au lait chaud\r\n FLAGS (\\Seen))\r\n\
          c OK FETCH completed\r\n"
    );
}

#[test]
fn binary_of_unknown_encoding_is_refused_and_nul_uses_literal8() {
    let (mut s, b) = logged_in();
    b.add(
        "INBOX",
        6,
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
          Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n--x\r\n\
          Content-Transfer-Encoding: base64\r\n\r\nAEE=\r\n--x--\r\n",
    );
    feed(&mut s, "s SELECT INBOX\r\n");
    transcript(
        &mut s,
        &[(
            "a FETCH 4 (BINARY.PEEK[1])\r\n",
            "a NO [UNKNOWN-CTE] Cannot decode this part's transfer encoding\r\n",
        )],
    );
    let out = feed(&mut s, "b FETCH 4 (BINARY.PEEK[2])\r\n");
    assert_eq!(
        out.bytes,
        b"* 4 FETCH (BINARY[2] ~{2}\r\n\0A)\r\nb OK FETCH completed\r\n"
    );
}

#[test]
fn idle_reports_changes_from_another_client_until_done() {
    let (mut s, b) = selected();
    transcript(&mut s, &[("i IDLE\r\n", "+ idling\r\n")]);
    assert!(s.is_idling());
    assert_eq!(s.selected_mailbox(), Some("INBOX"));
    // Nothing changed yet: a poll reports nothing.
    assert!(block_on(s.poll_changes()).is_empty());
    // A second client delivers a message and expunges another.
    b.add("INBOX", 6, b"Subject: new\r\n\r\n");
    assert_eq!(
        String::from_utf8(block_on(s.poll_changes())).unwrap(),
        "* 4 EXISTS\r\n"
    );
    b.expunge_uids("INBOX", &[2]);
    b.set_flags("INBOX", 1, &["\\Seen"]);
    assert_eq!(
        String::from_utf8(block_on(s.poll_changes())).unwrap(),
        "* 2 EXPUNGE\r\n* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
    );
    // DONE may arrive in pieces; only then does IDLE end.
    transcript(
        &mut s,
        &[
            ("DO", ""),
            ("NE\r\n", "i OK IDLE terminated\r\n"),
            ("n NOOP\r\n", "n OK Completed\r\n"),
        ],
    );
    assert!(!s.is_idling());
    // Outside IDLE, polling reports nothing; the next command does.
    b.add("INBOX", 7, b"Subject: later\r\n\r\n");
    assert!(block_on(s.poll_changes()).is_empty());
    transcript(
        &mut s,
        &[("m NOOP\r\n", "* 4 EXISTS\r\nm OK Completed\r\n")],
    );
}

#[test]
fn idle_reports_pending_changes_and_refuses_anything_but_done() {
    let (mut s, b) = selected();
    b.add("INBOX", 6, b"Subject: new\r\n\r\n");
    transcript(
        &mut s,
        &[
            ("i IDLE\r\n", "+ idling\r\n* 4 EXISTS\r\n"),
            // Any other input ends IDLE with BAD; the session goes on.
            ("j NOOP\r\n", "i BAD Expected DONE to end IDLE\r\n"),
            ("k NOOP\r\n", "k OK Completed\r\n"),
        ],
    );
    assert!(!s.is_idling());
}

#[test]
fn idle_in_authenticated_state_and_not_before_login() {
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[("i IDLE\r\n", "i BAD IDLE requires authentication\r\n")],
    );
    let (mut s, _) = logged_in();
    assert_eq!(s.selected_mailbox(), None);
    transcript(
        &mut s,
        &[
            ("i IDLE\r\n", "+ idling\r\n"),
            ("done\r\n", "i OK IDLE terminated\r\n"),
        ],
    );
}

#[test]
fn append_takes_a_binary_literal() {
    let (mut s, backend) = logged_in();
    let out = feed(&mut s, "a APPEND Sent ~{5}\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out.bytes),
        "+ Ready for literal data\r\n"
    );
    let out = feed(&mut s, "a\0b\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out.bytes),
        "a OK [APPENDUID 42 1] APPEND completed\r\n"
    );
    let body = backend
        .with_box("Sent", |b| b.messages[0].body.clone())
        .unwrap();
    assert_eq!(body, b"a\0b\r\n");
}

#[test]
fn header_only_items_and_searches_read_no_whole_message() {
    let (mut s, b) = selected();
    let out = feed(
        &mut s,
        "f FETCH 1:* (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.HEADER)\r\n",
    );
    let text = String::from_utf8_lossy(&out.bytes).to_string();
    assert!(text.ends_with("f OK FETCH completed\r\n"), "{text}");
    assert!(text.contains("\"Hello\""), "{text}");
    assert!(text.contains("BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: Third\r\n\r\n"));
    transcript(
        &mut s,
        &[
            (
                "g UID SEARCH FROM carol SUBJECT second\r\n",
                "* SEARCH 2\r\ng OK SEARCH completed\r\n",
            ),
            (
                "h SORT (SUBJECT) UTF-8 ALL\r\n",
                "* SORT 1 2 3\r\nh OK SORT completed\r\n",
            ),
        ],
    );
    let read =
        |c: &Arc<std::sync::atomic::AtomicUsize>| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(read(&b.bodies_read), 0);
    assert_eq!(read(&b.headers_read), 9);
    // BODY[TEXT] and SEARCH BODY need the whole message.
    let out = feed(&mut s, "i FETCH 2 BODY.PEEK[TEXT]\r\n");
    assert_eq!(
        String::from_utf8_lossy(&out.bytes),
        "* 2 FETCH (BODY[TEXT] {20}\r\nLine one\r\nLine two\r\n)\r\ni OK FETCH completed\r\n"
    );
    assert_eq!(read(&b.bodies_read), 1);
}

#[test]
fn changes_since_the_view_reach_the_session() {
    let (mut s, b) = selected();
    // Another client's flag change and a new message: found through the changes alone.
    b.set_flags("INBOX", 2, &["\\Answered"]);
    b.add("INBOX", 7, MSG1);
    transcript(
        &mut s,
        &[(
            "n NOOP\r\n",
            "* 2 FETCH (UID 2 FLAGS (\\Answered))\r\n* 4 EXISTS\r\nn OK Completed\r\n",
        )],
    );
    b.expunge_uids("INBOX", &[1, 7]);
    transcript(
        &mut s,
        &[(
            "o NOOP\r\n",
            "* 4 EXPUNGE\r\n* 1 EXPUNGE\r\no OK Completed\r\n",
        )],
    );
    // A changed message the view never had (not something a store does): the session reads
    // the whole mailbox again rather than guess.
    b.with_box("INBOX", |m| {
        let modseq = m.bump();
        m.messages.insert(
            0,
            MemMessage {
                meta: MessageMeta {
                    modseq,
                    ..meta(0, &["\\Seen"], MSG1)
                },
                body: MSG1.to_vec(),
            },
        );
    });
    transcript(&mut s, &[("p NOOP\r\n", "p OK Completed\r\n")]);
}
