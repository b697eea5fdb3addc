//! Transcript tests for the POP3 session: client lines in, server lines out, against an
//! in-memory backend. They do not touch sockets or a real store.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use base64::Engine as _;

use super::*;

/// Drives a future whose every await is ready at once, which holds for [`Memory`].
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory backend never waits"),
    }
}

const MESSAGE_1: &[u8] =
    b"Subject: one\r\nFrom: a@example.org\r\n\r\nHello\r\n.dot line\r\nthird\r\n";
const MESSAGE_2: &[u8] = b"Subject: two\n\nbare lf body\n";
const MESSAGE_3: &[u8] = b"Subject: three\r\n\r\nx\r\n";

/// Shared view of what the backend was asked to do, kept after the session is gone.
#[derive(Default)]
struct Log {
    delete_calls: Vec<Vec<u32>>,
}

struct Memory {
    messages: Vec<(u32, Vec<u8>)>,
    /// Uids whose body has vanished since the snapshot.
    vanished: Vec<u32>,
    locked: bool,
    fail_delete: bool,
    log: Arc<Mutex<Log>>,
}

impl Memory {
    fn new() -> (Self, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let memory = Memory {
            messages: vec![
                (10, MESSAGE_1.to_vec()),
                (11, MESSAGE_2.to_vec()),
                (12, MESSAGE_3.to_vec()),
            ],
            vanished: Vec::new(),
            locked: false,
            fail_delete: false,
            log: Arc::clone(&log),
        };
        (memory, log)
    }
}

impl Backend for Memory {
    async fn login(&mut self, user: &str, password: &str) -> Result<bool, BackendError> {
        Ok(user == "alice" && password == "secret pass")
    }

    async fn maildrop(&mut self) -> Result<Vec<MaildropEntry>, BackendError> {
        if self.locked {
            return Err(BackendError::Locked);
        }
        Ok(self
            .messages
            .iter()
            .map(|(uid, body)| MaildropEntry {
                uid: *uid,
                size: message::wire_size(body),
                unique_id: format!("uid-{uid}"),
            })
            .collect())
    }

    async fn body(&mut self, uid: u32) -> Result<Option<Vec<u8>>, BackendError> {
        if self.vanished.contains(&uid) {
            return Ok(None);
        }
        Ok(self
            .messages
            .iter()
            .find(|(u, _)| *u == uid)
            .map(|(_, body)| body.clone()))
    }

    async fn delete(&mut self, uids: &[u32]) -> Result<(), BackendError> {
        if let Ok(mut log) = self.log.lock() {
            log.delete_calls.push(uids.to_vec());
        }
        if self.fail_delete {
            return Err(BackendError::Temporary("disk on fire".to_owned()));
        }
        Ok(())
    }
}

fn config() -> Config {
    Config {
        tls_available: false,
        login_requires_tls: false,
        max_failed_logins: 3,
        greeting_host: "pop.example.org".to_owned(),
    }
}

fn session() -> (Session<Memory>, Arc<Mutex<Log>>) {
    let (memory, log) = Memory::new();
    (Session::new(config(), memory, false), log)
}

/// Feeds `client` and checks the reply and action.
#[track_caller]
fn exchange(session: &mut Session<Memory>, client: &str, server: &str, action: Action) {
    let output = block_on(session.feed(client.as_bytes()));
    assert_eq!(
        String::from_utf8_lossy(&output.bytes),
        server,
        "after {client:?}"
    );
    assert_eq!(output.action, action, "after {client:?}");
}

#[track_caller]
fn ok(session: &mut Session<Memory>, client: &str, server: &str) {
    exchange(session, client, server, Action::Continue);
}

fn logged_in() -> (Session<Memory>, Arc<Mutex<Log>>) {
    let (mut s, log) = session();
    ok(&mut s, "USER alice\r\n", "+OK send PASS\r\n");
    ok(
        &mut s,
        "PASS secret pass\r\n",
        "+OK maildrop has 3 messages (113 octets)\r\n",
    );
    (s, log)
}

fn deletions(log: &Arc<Mutex<Log>>) -> Vec<Vec<u32>> {
    log.lock()
        .map(|log| log.delete_calls.clone())
        .unwrap_or_default()
}

#[test]
fn full_session() {
    let (mut s, log) = session();
    assert_eq!(s.greeting(), b"+OK Tern POP3 ready\r\n");
    ok(
        &mut s,
        "CAPA\r\n",
        "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nPIPELINING\r\nRESP-CODES\r\n\
         AUTH-RESP-CODE\r\nSASL PLAIN\r\nIMPLEMENTATION Tern\r\n.\r\n",
    );
    ok(&mut s, "user alice\r\n", "+OK send PASS\r\n");
    ok(
        &mut s,
        "pass secret pass\r\n",
        "+OK maildrop has 3 messages (113 octets)\r\n",
    );
    ok(&mut s, "STAT\r\n", "+OK 3 113\r\n");
    ok(
        &mut s,
        "LIST\r\n",
        "+OK 3 messages (113 octets)\r\n1 62\r\n2 30\r\n3 21\r\n.\r\n",
    );
    ok(
        &mut s,
        "UIDL\r\n",
        "+OK unique-id listing follows\r\n1 uid-10\r\n2 uid-11\r\n3 uid-12\r\n.\r\n",
    );
    ok(
        &mut s,
        "RETR 3\r\n",
        "+OK 21 octets\r\nSubject: three\r\n\r\nx\r\n.\r\n",
    );
    ok(&mut s, "NOOP\r\n", "+OK\r\n");
    exchange(
        &mut s,
        "QUIT\r\n",
        "+OK pop.example.org signing off (3 messages left)\r\n",
        Action::Close,
    );
    assert_eq!(deletions(&log), vec![Vec::<u32>::new()]);
    exchange(&mut s, "NOOP\r\n", "", Action::Close);
}

#[test]
fn top_sends_header_blank_line_and_requested_body_lines() {
    let (mut s, _) = logged_in();
    ok(
        &mut s,
        "TOP 1 0\r\n",
        "+OK top of message follows\r\nSubject: one\r\nFrom: a@example.org\r\n\r\n.\r\n",
    );
    ok(
        &mut s,
        "TOP 1 2\r\n",
        "+OK top of message follows\r\nSubject: one\r\nFrom: a@example.org\r\n\r\nHello\r\n\
         ..dot line\r\n.\r\n",
    );
    ok(
        &mut s,
        "TOP 2 99999999999999999999999\r\n",
        "+OK top of message follows\r\nSubject: two\r\n\r\nbare lf body\r\n.\r\n",
    );
    ok(&mut s, "TOP 1\r\n", "-ERR syntax error\r\n");
    ok(&mut s, "TOP 1 x\r\n", "-ERR invalid line count\r\n");
    ok(&mut s, "TOP 9 1\r\n", "-ERR no such message\r\n");
}

#[test]
fn retr_byte_stuffs_and_sends_crlf_for_bare_lf() {
    let (mut s, _) = logged_in();
    ok(
        &mut s,
        "RETR 1\r\n",
        "+OK 62 octets\r\nSubject: one\r\nFrom: a@example.org\r\n\r\nHello\r\n..dot line\r\n\
         third\r\n.\r\n",
    );
    ok(
        &mut s,
        "RETR 2\r\n",
        "+OK 30 octets\r\nSubject: two\r\n\r\nbare lf body\r\n.\r\n",
    );
}

#[test]
fn dele_then_rset_restores_every_message() {
    let (mut s, log) = logged_in();
    ok(&mut s, "DELE 1\r\n", "+OK message 1 deleted\r\n");
    ok(&mut s, "DELE 3\r\n", "+OK message 3 deleted\r\n");
    ok(&mut s, "STAT\r\n", "+OK 1 30\r\n");
    ok(
        &mut s,
        "RSET\r\n",
        "+OK maildrop has 3 messages (113 octets)\r\n",
    );
    ok(&mut s, "STAT\r\n", "+OK 3 113\r\n");
    exchange(
        &mut s,
        "QUIT\r\n",
        "+OK pop.example.org signing off (3 messages left)\r\n",
        Action::Close,
    );
    assert_eq!(deletions(&log), vec![Vec::<u32>::new()]);
}

#[test]
fn dele_then_quit_applies_deletions_once() {
    let (mut s, log) = logged_in();
    ok(
        &mut s,
        "DELE 1\r\nDELE 2\r\n",
        "+OK message 1 deleted\r\n+OK message 2 deleted\r\n",
    );
    assert!(deletions(&log).is_empty(), "nothing is removed before QUIT");
    exchange(
        &mut s,
        "QUIT\r\n",
        "+OK pop.example.org signing off (1 messages left)\r\n",
        Action::Close,
    );
    assert_eq!(deletions(&log), vec![vec![10, 11]]);
}

#[test]
fn quit_reports_failed_deletion() {
    let (mut memory, log) = Memory::new();
    memory.fail_delete = true;
    let mut s = Session::new(config(), memory, false);
    ok(
        &mut s,
        "USER alice\r\nPASS secret pass\r\n",
        "+OK send PASS\r\n+OK maildrop has 3 messages (113 octets)\r\n",
    );
    ok(
        &mut s,
        "DELE 1\r\nDELE 2\r\nDELE 3\r\n",
        "+OK message 1 deleted\r\n+OK message 2 deleted\r\n+OK message 3 deleted\r\n",
    );
    exchange(
        &mut s,
        "QUIT\r\n",
        "-ERR [SYS/TEMP] some deleted messages not removed\r\n",
        Action::Close,
    );
    assert_eq!(deletions(&log), vec![vec![10, 11, 12]]);
}

#[test]
fn quit_before_login_closes_without_touching_the_maildrop() {
    let (mut s, log) = session();
    ok(&mut s, "USER alice\r\n", "+OK send PASS\r\n");
    exchange(
        &mut s,
        "QUIT\r\n",
        "+OK pop.example.org signing off\r\n",
        Action::Close,
    );
    assert!(deletions(&log).is_empty());
}

#[test]
fn deleted_messages_cannot_be_reached() {
    let (mut s, _) = logged_in();
    ok(&mut s, "DELE 2\r\n", "+OK message 2 deleted\r\n");
    ok(&mut s, "DELE 2\r\n", "-ERR message 2 already deleted\r\n");
    ok(&mut s, "RETR 2\r\n", "-ERR message 2 already deleted\r\n");
    ok(&mut s, "TOP 2 1\r\n", "-ERR message 2 already deleted\r\n");
    ok(&mut s, "LIST 2\r\n", "-ERR message 2 already deleted\r\n");
    ok(&mut s, "UIDL 2\r\n", "-ERR message 2 already deleted\r\n");
    ok(
        &mut s,
        "LIST\r\n",
        "+OK 2 messages (83 octets)\r\n1 62\r\n3 21\r\n.\r\n",
    );
    ok(
        &mut s,
        "UIDL\r\n",
        "+OK unique-id listing follows\r\n1 uid-10\r\n3 uid-12\r\n.\r\n",
    );
    ok(&mut s, "STAT\r\n", "+OK 2 83\r\n");
}

#[test]
fn list_and_uidl_with_an_argument() {
    let (mut s, _) = logged_in();
    ok(&mut s, "LIST 2\r\n", "+OK 2 30\r\n");
    ok(&mut s, "UIDL 3\r\n", "+OK 3 uid-12\r\n");
    ok(&mut s, "LIST 4\r\n", "-ERR no such message\r\n");
    ok(&mut s, "LIST 0\r\n", "-ERR no such message\r\n");
    ok(&mut s, "UIDL +1\r\n", "-ERR invalid message number +1\r\n");
    ok(&mut s, "LIST 1 2\r\n", "-ERR syntax error\r\n");
    ok(&mut s, "RETR\r\n", "-ERR syntax error\r\n");
    ok(
        &mut s,
        "LIST 99999999999999999999999999\r\n",
        "-ERR no such message\r\n",
    );
}

#[test]
fn auth_plain_with_initial_response() {
    let (mut s, _) = session();
    let response = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0secret pass");
    ok(
        &mut s,
        &format!("AUTH PLAIN {response}\r\n"),
        "+OK maildrop has 3 messages (113 octets)\r\n",
    );
    ok(&mut s, "STAT\r\n", "+OK 3 113\r\n");
}

#[test]
fn auth_plain_with_continuation() {
    let (mut s, _) = session();
    ok(&mut s, "AUTH plain\r\n", "+ \r\n");
    let response = base64::engine::general_purpose::STANDARD.encode(b"alice\0alice\0secret pass");
    ok(
        &mut s,
        &format!("{response}\r\n"),
        "+OK maildrop has 3 messages (113 octets)\r\n",
    );
}

#[test]
fn auth_plain_failures() {
    let (mut s, _) = session();
    ok(
        &mut s,
        "AUTH\r\n",
        "+OK supported mechanisms follow\r\nPLAIN\r\n.\r\n",
    );
    ok(
        &mut s,
        "AUTH CRAM-MD5\r\n",
        "-ERR unsupported authentication mechanism\r\n",
    );
    ok(
        &mut s,
        "AUTH PLAIN\r\n*\r\n",
        "+ \r\n-ERR authentication cancelled\r\n",
    );
    ok(
        &mut s,
        "AUTH PLAIN\r\n!!!\r\n",
        "+ \r\n-ERR invalid base64 in authentication response\r\n",
    );
    ok(
        &mut s,
        "AUTH PLAIN =\r\n",
        "-ERR malformed PLAIN response\r\n",
    );
    let wrong = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0guess");
    ok(
        &mut s,
        &format!("AUTH PLAIN {wrong}\r\n"),
        "-ERR [AUTH] invalid user name or password\r\n",
    );
    let other = base64::engine::general_purpose::STANDARD.encode(b"bob\0alice\0secret pass");
    exchange(
        &mut s,
        &format!("AUTH PLAIN {other}\r\n"),
        "-ERR [AUTH] invalid user name or password\r\n",
        Action::Continue,
    );
    // The session is back in AUTHORIZATION: a plain command is a command again.
    ok(&mut s, "STAT\r\n", "-ERR not logged in\r\n");
}

#[test]
fn stls_discards_pipelined_input() {
    let (memory, _) = Memory::new();
    let mut s = Session::new(
        Config {
            tls_available: true,
            ..config()
        },
        memory,
        false,
    );
    ok(
        &mut s,
        "CAPA\r\n",
        "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nPIPELINING\r\nRESP-CODES\r\n\
         AUTH-RESP-CODE\r\nSASL PLAIN\r\nSTLS\r\nIMPLEMENTATION Tern\r\n.\r\n",
    );
    ok(&mut s, "USER alice\r\n", "+OK send PASS\r\n");
    exchange(
        &mut s,
        "STLS\r\nPASS secret pass\r\nSTAT\r\n",
        "+OK begin TLS negotiation\r\n",
        Action::StartTls,
    );
    // Anything before the handshake completes is ignored as well.
    ok(&mut s, "PASS secret pass\r\n", "");
    s.tls_started();
    // RFC 2595 §4: the USER name given before TLS is forgotten.
    ok(&mut s, "PASS secret pass\r\n", "-ERR send USER first\r\n");
    ok(&mut s, "STLS\r\n", "-ERR TLS is already active\r\n");
    ok(
        &mut s,
        "CAPA\r\n",
        "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nPIPELINING\r\nRESP-CODES\r\n\
         AUTH-RESP-CODE\r\nSASL PLAIN\r\nIMPLEMENTATION Tern\r\n.\r\n",
    );
}

#[test]
fn stls_unavailable_and_after_login() {
    let (mut s, _) = session();
    ok(&mut s, "STLS\r\n", "-ERR STLS is not available\r\n");
    let (memory, _) = Memory::new();
    let mut s = Session::new(
        Config {
            tls_available: true,
            ..config()
        },
        memory,
        false,
    );
    ok(
        &mut s,
        "USER alice\r\nPASS secret pass\r\n",
        "+OK send PASS\r\n+OK maildrop has 3 messages (113 octets)\r\n",
    );
    ok(&mut s, "STLS\r\n", "-ERR already logged in\r\n");
}

#[test]
fn login_before_tls_is_refused_when_required() {
    let (memory, _) = Memory::new();
    let config = Config {
        tls_available: true,
        login_requires_tls: true,
        ..config()
    };
    let mut s = Session::new(config, memory, false);
    let refusal = "-ERR [AUTH] TLS is required for login, use STLS\r\n";
    ok(&mut s, "USER alice\r\n", refusal);
    ok(&mut s, "PASS secret pass\r\n", refusal);
    ok(&mut s, "AUTH PLAIN\r\n", refusal);
    exchange(
        &mut s,
        "STLS\r\n",
        "+OK begin TLS negotiation\r\n",
        Action::StartTls,
    );
    s.tls_started();
    ok(
        &mut s,
        "USER alice\r\nPASS secret pass\r\n",
        "+OK send PASS\r\n+OK maildrop has 3 messages (113 octets)\r\n",
    );
}

#[test]
fn wrong_credentials_close_after_the_limit() {
    let (mut s, _) = session();
    let reject = "+OK send PASS\r\n-ERR [AUTH] invalid user name or password\r\n";
    ok(&mut s, "USER alice\r\nPASS wrong\r\n", reject);
    ok(&mut s, "PASS secret pass\r\n", "-ERR send USER first\r\n");
    ok(&mut s, "USER mallory\r\nPASS secret pass\r\n", reject);
    exchange(
        &mut s,
        "USER alice\r\nPASS nope\r\nUSER alice\r\n",
        reject,
        Action::Close,
    );
    exchange(&mut s, "USER alice\r\n", "", Action::Close);
}

#[test]
fn locked_maildrop_is_reported_with_in_use() {
    let (mut memory, _) = Memory::new();
    memory.locked = true;
    let mut s = Session::new(config(), memory, false);
    ok(
        &mut s,
        "USER alice\r\nPASS secret pass\r\nSTAT\r\n",
        "+OK send PASS\r\n-ERR [IN-USE] maildrop is in use by another session\r\n\
         -ERR not logged in\r\n",
    );
}

#[test]
fn vanished_message_is_an_error_not_a_crash() {
    let (mut memory, _) = Memory::new();
    memory.vanished = vec![11];
    let mut s = Session::new(config(), memory, false);
    ok(
        &mut s,
        "USER alice\r\nPASS secret pass\r\n",
        "+OK send PASS\r\n+OK maildrop has 3 messages (113 octets)\r\n",
    );
    ok(&mut s, "RETR 2\r\n", "-ERR message 2 no longer exists\r\n");
    ok(&mut s, "TOP 2 0\r\n", "-ERR message 2 no longer exists\r\n");
}

#[test]
fn commands_in_the_wrong_state() {
    let (mut s, _) = session();
    ok(&mut s, "RETR 1\r\n", "-ERR not logged in\r\n");
    ok(&mut s, "NOOP\r\n", "-ERR not logged in\r\n");
    ok(&mut s, "APOP alice 0123\r\n", "-ERR unknown command\r\n");
    ok(&mut s, "\r\n", "-ERR unknown command\r\n");
    ok(&mut s, "USER\r\n", "-ERR USER needs a name\r\n");
    ok(&mut s, "\u{e9}\r\n", "-ERR unknown command\r\n");
    let output = block_on(s.feed(b"USER \xff\r\n"));
    assert_eq!(output.bytes, b"-ERR command is not valid UTF-8\r\n");
    let (mut s, _) = logged_in();
    ok(&mut s, "USER alice\r\n", "-ERR already logged in\r\n");
    ok(&mut s, "AUTH PLAIN\r\n", "-ERR already logged in\r\n");
    ok(&mut s, "LAST\r\n", "-ERR unknown command\r\n");
}

/// The commands of `full_session` and friends, sent as one pipelined buffer.
const PIPELINE: &str = "CAPA\r\nUSER alice\r\nPASS secret pass\r\nSTAT\r\nLIST\r\nLIST 2\r\n\
                        UIDL\r\nTOP 1 1\r\nRETR 1\r\nRETR 2\nDELE 1\r\nDELE 1\r\nRSET\r\n\
                        DELE 3\r\nNOOP\r\nQUIT\r\nSTAT\r\n";

fn feed_in_chunks(chunk: usize) -> (Vec<u8>, Action, Vec<Vec<u32>>) {
    let (mut s, log) = session();
    let mut bytes = Vec::new();
    let mut action = Action::Continue;
    for piece in PIPELINE.as_bytes().chunks(chunk) {
        let output = block_on(s.feed(piece));
        bytes.extend_from_slice(&output.bytes);
        action = output.action;
    }
    (bytes, action, deletions(&log))
}

#[test]
fn pipelining_in_one_buffer_answers_every_command_in_order() {
    let (bytes, action, deleted) = feed_in_chunks(PIPELINE.len());
    let mut expected = String::new();
    let (mut s, _) = session();
    for line in PIPELINE.split_inclusive('\n') {
        let output = block_on(s.feed(line.as_bytes()));
        expected.push_str(&String::from_utf8_lossy(&output.bytes));
    }
    assert_eq!(String::from_utf8_lossy(&bytes), expected);
    assert!(expected.starts_with("+OK capability list follows\r\n"));
    assert!(expected.ends_with("+OK pop.example.org signing off (2 messages left)\r\n"));
    assert_eq!(action, Action::Close);
    assert_eq!(deleted, vec![vec![12]]);
}

#[test]
fn one_byte_chunks_give_the_same_output() {
    let whole = feed_in_chunks(PIPELINE.len());
    assert_eq!(feed_in_chunks(1), whole);
    assert_eq!(feed_in_chunks(7), whole);
}

#[test]
fn long_lines_get_one_error_and_the_session_stays_in_step() {
    let (mut s, _) = session();
    // RFC 2449 §4: 255 octets including CRLF is allowed.
    let name = "a".repeat(255 - "USER \r\n".len());
    ok(&mut s, &format!("USER {name}\r\n"), "+OK send PASS\r\n");
    let name = "a".repeat(256 - "USER \r\n".len());
    ok(
        &mut s,
        &format!("USER {name}\r\nQUIT"),
        "-ERR line too long\r\n",
    );
    // A huge line fed in pieces is answered once, when it ends, and nothing is buffered.
    for _ in 0..1000 {
        ok(&mut s, &"x".repeat(1000), "");
    }
    ok(&mut s, "\r\nCAPA", "-ERR line too long\r\n");
    exchange(&mut s, "\r\n", &capa_without_stls(), Action::Continue);
}

fn capa_without_stls() -> String {
    "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nPIPELINING\r\nRESP-CODES\r\n\
     AUTH-RESP-CODE\r\nSASL PLAIN\r\nIMPLEMENTATION Tern\r\n.\r\n"
        .to_owned()
}

#[test]
fn sasl_response_may_exceed_the_command_limit_but_stays_bounded() {
    let (mut s, _) = session();
    let password = "p".repeat(400);
    let response = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{password}"));
    ok(
        &mut s,
        &format!("AUTH PLAIN\r\n{response}\r\n"),
        "+ \r\n-ERR [AUTH] invalid user name or password\r\n",
    );
    let huge = "A".repeat(10_000);
    ok(
        &mut s,
        &format!("AUTH PLAIN\r\n{huge}\r\nNOOP\r\n"),
        "+ \r\n-ERR line too long, authentication aborted\r\n-ERR not logged in\r\n",
    );
}

#[test]
fn timeout_reply_is_an_error_line() {
    let (s, _) = session();
    assert_eq!(
        s.timeout_reply(),
        b"-ERR [SYS/TEMP] autologout: idle for too long\r\n"
    );
}

#[test]
fn feed_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn check<B: Backend>(session: &mut Session<B>) {
        let future = session.feed(b"NOOP\r\n");
        assert_send(&future);
    }
    let (mut s, _) = session();
    check(&mut s);
}

/// A small xorshift generator, so the test needs no dependency and replays the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

#[test]
fn random_input_never_panics_and_every_reply_is_a_line() {
    let words: &[&[u8]] = &[
        b"USER alice",
        b"PASS secret pass",
        b"STAT",
        b"LIST",
        b"LIST 1",
        b"UIDL 2",
        b"RETR 1",
        b"TOP 1 3",
        b"DELE 1",
        b"DELE 9",
        b"RSET",
        b"NOOP",
        b"CAPA",
        b"AUTH PLAIN",
        b"AUTH",
        b"STLS",
        b"QUIT",
        b"*",
        b"=",
        b"AGFsaWNlAHNlY3JldCBwYXNz",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b".",
        b"\0",
        b"\xff\xfe",
        b"99999999999999999999999",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut logins = 0;
    for round in 0..300 {
        let (memory, _) = Memory::new();
        let config = Config {
            tls_available: round % 2 == 0,
            login_requires_tls: round % 5 == 0,
            max_failed_logins: 2,
            ..config()
        };
        let mut s = Session::new(config, memory, round % 3 == 0);
        let mut input = Vec::new();
        for _ in 0..rng.below(200) {
            match rng.below(4) {
                0 => input.extend((0..rng.below(300)).map(|_| rng.next() as u8)),
                _ => input.extend_from_slice(words[rng.below(words.len())]),
            }
            if rng.below(3) == 0 {
                input.extend_from_slice(b"\r\n");
            }
        }
        let mut closed = false;
        for piece in input.chunks(1 + rng.below(64)) {
            let output = block_on(s.feed(piece));
            assert!(output.bytes.is_empty() || output.bytes.ends_with(b"\r\n"));
            if output.bytes.windows(17).any(|w| w == b"+OK maildrop has ") {
                logins += 1;
            }
            if closed {
                assert!(output.bytes.is_empty());
                assert_eq!(output.action, Action::Close);
            }
            match output.action {
                Action::Close => closed = true,
                Action::StartTls => s.tls_started(),
                Action::Continue => {}
            }
        }
    }
    // The generator must reach the TRANSACTION state often enough to exercise its commands.
    assert!(logins > 10, "only {logins} logins");
}
