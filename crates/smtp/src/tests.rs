//! Transcript tests for [`Session`]: client bytes in, server bytes out, against a recording
//! [`Handler`]. Every transcript is played twice, once with each client batch in one `feed`
//! and once one octet at a time, and both must produce exactly the expected replies.
//!
//! These tests drive the session with a tiny poll loop instead of an async runtime: the crate
//! must not depend on one, and the recording handler never waits.

use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{
    Action, AuthPolicy, Config, Envelope, Handler, Notify, RcptParams, Reply, Ret,
    ScramCredentials, Session,
};

/// Polls a future that never waits (the recording handler answers at once) to completion.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
    }
}

/// A handler that records every call and applies a small, fixed policy:
/// - the only credentials are alice / secret (authzid empty or "alice"), for SCRAM too;
/// - SCRAM for "blocked" is refused at once with 454, as a throttled client would be;
/// - spammer@evil.test may not send;
/// - recipients at tern.test and "postmaster" are local, except nobody@tern.test; other
///   domains are refused as relaying.
#[derive(Debug, Default)]
struct Recorder {
    events: Vec<String>,
    messages: Vec<(Envelope, Vec<u8>)>,
}

impl Handler for Recorder {
    fn authenticate(
        &mut self,
        authzid: &str,
        authcid: &str,
        password: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        self.events.push(format!("auth {authzid}/{authcid}"));
        let ok = authcid == "alice"
            && password == "secret"
            && (authzid.is_empty() || authzid == "alice");
        ready(if ok {
            Ok(())
        } else {
            Err(Reply::auth_failed())
        })
    }

    fn scram_credentials(
        &mut self,
        authcid: &str,
    ) -> impl Future<Output = Result<Option<ScramCredentials>, Reply>> + Send {
        self.events.push(format!("scram {authcid}"));
        ready(match authcid {
            "alice" => Ok(Some(alice_scram().clone())),
            "blocked" => Err(Reply::new(454, (4, 7, 0), "too many failed logins")),
            _ => Ok(None),
        })
    }

    fn scram_finished(
        &mut self,
        authzid: &str,
        authcid: &str,
        verified: bool,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        self.events
            .push(format!("scram-finished {authzid}/{authcid} {verified}"));
        ready(if verified && (authzid.is_empty() || authzid == authcid) {
            Ok(())
        } else {
            Err(Reply::auth_failed())
        })
    }

    fn mail_from(
        &mut self,
        envelope: &Envelope,
        from: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        assert!(envelope.mail_from.is_empty());
        self.events.push(format!("mail {from}"));
        ready(if from == "spammer@evil.test" {
            Err(Reply::new(550, (5, 7, 1), "sender refused"))
        } else {
            Ok(())
        })
    }

    fn rcpt_to(
        &mut self,
        _envelope: &Envelope,
        to: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        self.events.push(format!("rcpt {to}"));
        ready(if to == "nobody@tern.test" {
            Err(Reply::no_such_user())
        } else if to == "postmaster" || to.ends_with("@tern.test") {
            Ok(())
        } else {
            Err(Reply::relay_denied())
        })
    }

    fn data(
        &mut self,
        envelope: &Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, Reply>> + Send {
        self.events.push(format!("data {} octets", message.len()));
        self.messages.push((envelope.clone(), message));
        let queued = self.messages.len();
        ready(Ok(Reply::new(
            250,
            (2, 0, 0),
            format!("queued as {queued}"),
        )))
    }

    /// LMTP: recipients whose local part starts with "full" are over quota.
    fn data_per_recipient(
        &mut self,
        envelope: &Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = Vec<Reply>> + Send {
        self.events
            .push(format!("lmtp data {} octets", message.len()));
        self.messages.push((envelope.clone(), message));
        let replies = envelope
            .rcpt_to
            .iter()
            .map(|rcpt| {
                if rcpt.starts_with("full") {
                    Reply::new(452, (4, 2, 2), format!("<{rcpt}> mailbox full"))
                } else {
                    Reply::new(250, (2, 0, 0), format!("<{rcpt}> delivered"))
                }
            })
            .collect();
        ready(replies)
    }
}

/// Alice's SCRAM-SHA-256 keys for the password "secret", derived once per test run.
fn alice_scram() -> &'static ScramCredentials {
    static KEYS: std::sync::OnceLock<ScramCredentials> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| ScramCredentials::derive("secret", b"alice's salt", 4096))
}

/// Port 25: no AUTH, STARTTLS available.
fn mta() -> Config {
    Config {
        hostname: "mx.tern.test".to_owned(),
        max_message_size: 10_000,
        max_recipients: 3,
        max_errors: 10,
        tls_available: true,
        auth: AuthPolicy::Disabled,
        auth_requires_tls: false,
    }
}

/// Submission: AUTH required, and only inside TLS.
fn msa() -> Config {
    Config {
        hostname: "submit.tern.test".to_owned(),
        auth: AuthPolicy::Required,
        auth_requires_tls: true,
        ..mta()
    }
}

/// Undoes `\r`, `\n`, `\\` and `\xHH` escapes in a transcript line.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let octet = bytes[index];
        if octet == b'\\' && index + 1 < bytes.len() {
            match bytes[index + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = &text[index + 2..index + 4];
                    out.push(u8::from_str_radix(hex, 16).expect("bad \\x escape in transcript"));
                    index += 2;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            index += 2;
        } else {
            out.push(octet);
            index += 1;
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Feeding {
    Whole,
    Bytewise,
}

/// Plays a transcript. Lines are `C: command` (sent with CRLF appended), `R: raw` (sent as is,
/// escapes undone), `S: reply` (expected, CRLF appended, escapes undone) and `A: close` /
/// `A: starttls` / `A: continue` (the action after the last feed; `starttls` then completes the
/// handshake). Consecutive client lines are one batch, as a pipelining client sends them.
fn play(config: Config, tls: bool, script: &str, feeding: Feeding) -> (Recorder, Session) {
    play_session(Session::new(config, tls), script, feeding)
}

/// [`play`] on a session made by the caller (LMTP).
fn play_session(mut session: Session, script: &str, feeding: Feeding) -> (Recorder, Session) {
    let mut handler = Recorder::default();
    let mut actual = session.greeting();
    let mut expected = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut action = Action::Continue;

    let flush = |session: &mut Session,
                 handler: &mut Recorder,
                 pending: &mut Vec<u8>,
                 actual: &mut Vec<u8>,
                 action: &mut Action| {
        if pending.is_empty() {
            return;
        }
        match feeding {
            Feeding::Whole => {
                let output = block_on(session.feed(pending, handler));
                actual.extend_from_slice(&output.reply);
                *action = output.action;
            }
            Feeding::Bytewise => {
                for octet in pending.iter() {
                    let output = block_on(session.feed(std::slice::from_ref(octet), handler));
                    actual.extend_from_slice(&output.reply);
                    *action = output.action;
                }
            }
        }
        pending.clear();
    };
    let check = |actual: &[u8], expected: &[u8]| {
        assert_eq!(
            String::from_utf8_lossy(actual),
            String::from_utf8_lossy(expected),
            "transcript mismatch ({feeding:?} feeding)"
        );
    };

    let mut previous_was_reply = false;
    for line in script.lines() {
        let line = line.trim_start();
        if line.is_empty() {
            continue;
        }
        let (tag, text) = line.split_at(2);
        let text = text.strip_prefix(' ').unwrap_or(text);
        match tag {
            "C:" | "R:" => {
                if previous_was_reply {
                    check(&actual, &expected);
                }
                pending.extend_from_slice(&unescape(text));
                if tag == "C:" {
                    pending.extend_from_slice(b"\r\n");
                }
                previous_was_reply = false;
            }
            "S:" => {
                flush(
                    &mut session,
                    &mut handler,
                    &mut pending,
                    &mut actual,
                    &mut action,
                );
                expected.extend_from_slice(&unescape(text));
                expected.extend_from_slice(b"\r\n");
                previous_was_reply = true;
            }
            "A:" => {
                flush(
                    &mut session,
                    &mut handler,
                    &mut pending,
                    &mut actual,
                    &mut action,
                );
                check(&actual, &expected);
                let wanted = match text {
                    "close" => Action::Close,
                    "starttls" => Action::StartTls,
                    "continue" => Action::Continue,
                    other => panic!("unknown action {other}"),
                };
                assert_eq!(action, wanted, "action ({feeding:?} feeding)");
                if wanted == Action::StartTls {
                    session.tls_started();
                }
                previous_was_reply = true;
            }
            other => panic!("unknown transcript tag {other}"),
        }
    }
    flush(
        &mut session,
        &mut handler,
        &mut pending,
        &mut actual,
        &mut action,
    );
    check(&actual, &expected);
    (handler, session)
}

/// Plays a transcript fed whole and fed octet by octet; both must match it, and both must
/// leave the handler with the same calls.
fn transcript(config: Config, tls: bool, script: &str) -> Recorder {
    let (whole, _) = play(config.clone(), tls, script, Feeding::Whole);
    let (bytewise, _) = play(config, tls, script, Feeding::Bytewise);
    assert_eq!(whole.events, bytewise.events);
    assert_eq!(whole.messages, bytewise.messages);
    whole
}

/// The expected EHLO reply lines of a test server that has TLS available: STARTTLS outside
/// TLS, REQUIRETLS inside it.
fn ehlo(host: &str, tls: bool, auth: bool) -> String {
    let mut keywords = vec![
        host.to_owned(),
        "PIPELINING".to_owned(),
        "SIZE 10000".to_owned(),
        "8BITMIME".to_owned(),
        "SMTPUTF8".to_owned(),
        "ENHANCEDSTATUSCODES".to_owned(),
        "CHUNKING".to_owned(),
        "DSN".to_owned(),
    ];
    if tls {
        keywords.push("REQUIRETLS".to_owned());
    } else {
        keywords.push("STARTTLS".to_owned());
    }
    if auth {
        keywords.push("AUTH PLAIN LOGIN SCRAM-SHA-256".to_owned());
    }
    let last = keywords.len() - 1;
    keywords
        .iter()
        .enumerate()
        .map(|(index, keyword)| {
            let separator = if index == last { ' ' } else { '-' };
            format!("S: 250{separator}{keyword}\n")
        })
        .collect()
}

/// The greeting and EHLO exchange of a test server.
fn hello(host: &str, tls: bool, auth: bool) -> String {
    format!(
        "S: 220 {host} ESMTP Tern\nC: EHLO client.example\n{}",
        ehlo(host, tls, auth)
    )
}

/// The greeting and EHLO exchange of the MTA outside TLS.
fn mta_hello() -> String {
    hello("mx.tern.test", false, false)
}

/// The MSA inside TLS after EHLO and a successful AUTH PLAIN.
fn msa_logged_in() -> String {
    format!(
        "{}C: AUTH PLAIN AGFsaWNlAHNlY3JldA==\nS: 235 2.7.0 authentication successful\n",
        hello("submit.tern.test", true, true)
    )
}

#[test]
fn full_session_delivers_an_unstuffed_message() {
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org> BODY=8BITMIME SIZE=100
        S: 250 2.1.0 sender OK
        C: RCPT TO:<alice@tern.test>
        S: 250 2.1.5 recipient OK
        C: DATA
        S: 354 end data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 queued as 1
        C: VRFY alice
        S: 252 2.5.0 cannot VRFY user, but will accept message and attempt delivery
        C: NOOP
        S: 250 2.0.0 OK
        C: HELP
        S: 214 2.0.0 commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH
        C: EXPN staff
        S: 502 5.5.1 command not implemented
        C: QUIT
        S: 221 2.0.0 mx.tern.test closing connection
        A: close
        C: NOOP
        A: close
        ",
        mta_hello()
    );
    let handler = transcript(mta(), false, &script);
    let (envelope, message) = &handler.messages[0];
    assert_eq!(message, b"Subject: hi\r\n\r\n.leading dot\r\n");
    assert_eq!(
        envelope,
        &Envelope {
            helo: "client.example".to_owned(),
            mail_from: "bob@example.org".to_owned(),
            rcpt_to: vec!["alice@tern.test".to_owned()],
            body_8bit: true,
            smtputf8: false,
            size_hint: Some(100),
            authenticated: None,
            rcpt_params: vec![RcptParams::default()],
            ..Envelope::default()
        }
    );
}

#[test]
fn helo_session_and_sequence_errors() {
    let config = Config {
        max_errors: 100,
        ..mta()
    };
    let handler = transcript(
        config,
        false,
        r"
        S: 220 mx.tern.test ESMTP Tern
        C: MAIL FROM:<bob@example.org>
        S: 503 5.5.1 send EHLO or HELO first
        C: HELO client.example
        S: 250 mx.tern.test
        C: RCPT TO:<alice@tern.test>
        S: 503 5.5.1 need MAIL before RCPT
        C: DATA
        S: 503 5.5.1 need MAIL and RCPT first
        C: MAIL FROM:<>
        S: 250 2.1.0 sender OK
        C: MAIL FROM:<bob@example.org>
        S: 503 5.5.1 nested MAIL command
        C: DATA
        S: 554 5.5.1 no valid recipients
        C: RCPT TO:<>
        S: 501 5.1.3 bad recipient address syntax
        C: RCPT TO:<Postmaster>
        S: 250 2.1.5 recipient OK
        C: RCPT TO:<user@elsewhere.example>
        S: 550 5.7.1 relaying denied
        C: RCPT TO:<alice@tern.test> CONNEG
        S: 555 5.5.4 RCPT parameters not supported
        C: RSET
        S: 250 2.0.0 OK
        C: MAIL FROM:<postmaster>
        S: 501 5.1.7 bad sender address syntax
        C: MAIL FROM:<bob@example.org> CONPERM
        S: 555 5.5.4 MAIL parameter not supported
        C: MAIL FROM:<bob@example.org> FOO=BAR
        S: 555 5.5.4 unsupported parameter FOO=BAR
        C: MAIL FROM:<jörg@example.org>
        S: 553 5.6.7 non-ASCII address needs SMTPUTF8
        C: MAIL FROM:<jörg@example.org> SMTPUTF8
        S: 250 2.1.0 sender OK
        C: RCPT TO:<jörg@tern.test>
        S: 250 2.1.5 recipient OK
        C: HELLO
        S: 500 5.5.2 command not recognized
        C: R\xffSET
        S: 500 5.5.2 command is not valid UTF-8
        ",
    );
    assert!(handler.events.contains(&"rcpt postmaster".to_owned()));
    assert!(handler.events.contains(&"mail jörg@example.org".to_owned()));
}

#[test]
fn non_utf8_command_is_refused() {
    transcript(
        mta(),
        false,
        r"
        S: 220 mx.tern.test ESMTP Tern
        R: EHLO \xff\xfe\r\n
        S: 500 5.5.2 command is not valid UTF-8
        ",
    );
}

#[test]
fn pipelined_transaction_in_one_packet() {
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        C: RCPT TO:<nobody@tern.test>
        C: RCPT TO:<carol@tern.test>
        C: DATA
        C: Hello
        C: .
        C: MAIL FROM:<spammer@evil.test>
        C: RCPT TO:<alice@tern.test>
        C: DATA
        C: QUIT
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 550 5.1.1 no such user here
        S: 250 2.1.5 recipient OK
        S: 354 end data with <CR><LF>.<CR><LF>
        S: 250 2.0.0 queued as 1
        S: 550 5.7.1 sender refused
        S: 503 5.5.1 need MAIL before RCPT
        S: 503 5.5.1 need MAIL and RCPT first
        S: 221 2.0.0 mx.tern.test closing connection
        A: close
        ",
        mta_hello()
    );
    let handler = transcript(mta(), false, &script);
    assert_eq!(handler.messages.len(), 1);
    assert_eq!(
        handler.messages[0].0.rcpt_to,
        ["alice@tern.test", "carol@tern.test"]
    );
    assert_eq!(handler.messages[0].1, b"Hello\r\n");
}

#[test]
fn starttls_discards_pipelined_input_and_forgets_the_session() {
    let handler = transcript(
        msa(),
        false,
        r"
        S: 220 submit.tern.test ESMTP Tern
        C: EHLO client.example
        S: 250-submit.tern.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        C: STARTTLS
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        C: MAIL FROM:<evil@example.org>
        S: 220 2.0.0 ready to start TLS
        A: starttls
        C: MAIL FROM:<alice@tern.test>
        S: 503 5.5.1 send EHLO or HELO first
        C: EHLO client.example
        S: 250-submit.tern.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250-REQUIRETLS
        S: 250 AUTH PLAIN LOGIN SCRAM-SHA-256
        C: STARTTLS
        S: 503 5.5.1 already in TLS
        ",
    );
    assert!(handler.events.is_empty(), "{:?}", handler.events);
}

#[test]
fn input_fed_before_the_handshake_is_ignored() {
    let mut session = Session::new(mta(), false);
    let mut handler = Recorder::default();
    let output = block_on(session.feed(b"EHLO a\r\nSTARTTLS\r\n", &mut handler));
    assert_eq!(output.action, Action::StartTls);
    let output = block_on(session.feed(b"MAIL FROM:<a@b.c>\r\n", &mut handler));
    assert_eq!(output.reply, b"");
    assert_eq!(output.action, Action::StartTls);
    session.tls_started();
    assert!(session.tls_active());
    let output = block_on(session.feed(b"NOOP\r\n", &mut handler));
    assert_eq!(output.reply, b"250 2.0.0 OK\r\n");
    assert!(handler.events.is_empty());
}

#[test]
fn starttls_refused_when_unavailable() {
    let config = Config {
        tls_available: false,
        ..mta()
    };
    transcript(
        config,
        false,
        r"
        S: 220 mx.tern.test ESMTP Tern
        C: STARTTLS
        S: 454 4.7.0 TLS not available
        ",
    );
}

#[test]
fn auth_plain_with_initial_response_then_mail() {
    let script = format!(
        r"{}
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 503 5.5.1 already authenticated
        C: MAIL FROM:<alice@tern.test>
        S: 250 2.1.0 sender OK
        C: AUTH LOGIN
        S: 503 5.5.1 already authenticated
        ",
        msa_logged_in()
    );
    let (handler, session) = play(msa(), true, &script, Feeding::Whole);
    assert_eq!(session.authenticated(), Some("alice"));
    assert_eq!(handler.events, ["auth /alice", "mail alice@tern.test"]);
    play(msa(), true, &script, Feeding::Bytewise);
}

#[test]
fn auth_plain_with_empty_challenge_and_authzid() {
    let handler = transcript(
        msa(),
        true,
        r"
        S: 220 submit.tern.test ESMTP Tern
        C: HELO client.example
        S: 250 submit.tern.test
        C: MAIL FROM:<alice@tern.test>
        S: 530 5.7.0 authentication required
        C: AUTH PLAIN
        S: 334\x20
        C: Ym9iAGFsaWNlAHNlY3JldA==
        S: 535 5.7.8 authentication credentials invalid
        C: AUTH PLAIN
        S: 334\x20
        C: YWxpY2UAYWxpY2UAc2VjcmV0
        S: 235 2.7.0 authentication successful
        ",
    );
    assert_eq!(handler.events, ["auth bob/alice", "auth alice/alice"]);
}

#[test]
fn auth_login_good_and_bad() {
    let handler = transcript(
        msa(),
        true,
        r"
        S: 220 submit.tern.test ESMTP Tern
        C: EHLO client.example
        S: 250-submit.tern.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250-REQUIRETLS
        S: 250 AUTH PLAIN LOGIN SCRAM-SHA-256
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: YWxpY2U=
        S: 334 UGFzc3dvcmQ6
        C: d3Jvbmc=
        S: 535 5.7.8 authentication credentials invalid
        C: AUTH LOGIN YWxpY2U=
        S: 334 UGFzc3dvcmQ6
        C: c2VjcmV0
        S: 235 2.7.0 authentication successful
        ",
    );
    assert_eq!(handler.events, ["auth /alice", "auth /alice"]);
}

#[test]
fn auth_malformed_cancelled_and_unknown() {
    let script = format!(
        r"{}
        C: AUTH PLAIN !!!!
        S: 501 5.5.2 invalid base64 in SASL response
        C: AUTH PLAIN YWxpY2U=
        S: 501 5.5.2 malformed SASL response
        C: AUTH PLAIN =
        S: 501 5.5.2 malformed SASL response
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: %%%
        S: 501 5.5.2 invalid base64 in SASL response
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: *
        S: 501 5.7.0 authentication cancelled
        C: AUTH PLAIN
        S: 334\x20
        C: *
        S: 501 5.7.0 authentication cancelled
        C: AUTH CRAM-MD5
        S: 504 5.5.4 mechanism not supported
        C: AUTH FOOBAR
        S: 504 5.5.4 mechanism not supported
        C: AUTH
        S: 501 5.5.4 syntax: AUTH mechanism [initial-response]
        C: NOOP
        S: 250 2.0.0 OK
        ",
        hello("submit.tern.test", true, true)
    );
    let handler = transcript(msa(), true, &script);
    assert!(handler.events.is_empty(), "{:?}", handler.events);
}

#[test]
fn auth_before_tls_is_refused_and_not_advertised() {
    transcript(
        Config {
            tls_available: false,
            ..msa()
        },
        false,
        r"
        S: 220 submit.tern.test ESMTP Tern
        C: EHLO client.example
        S: 250-submit.tern.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 DSN
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 530 5.7.0 must issue a STARTTLS command first
        C: MAIL FROM:<alice@tern.test>
        S: 530 5.7.0 authentication required
        ",
    );
}

#[test]
fn auth_is_not_available_on_port_25() {
    let script = format!(
        r"{}
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 502 5.5.1 AUTH not available
        ",
        hello("mx.tern.test", true, false)
    );
    transcript(mta(), true, &script);
}

#[test]
fn long_auth_line_is_allowed_up_to_12288_octets() {
    let mut plain = b"\0alice\0".to_vec();
    plain.extend(std::iter::repeat_n(b'p', 600));
    let script = format!(
        "{}\nC: AUTH PLAIN {}\nS: 535 5.7.8 authentication credentials invalid\n",
        hello("submit.tern.test", true, true),
        STANDARD.encode(&plain)
    );
    transcript(msa(), true, &script);
    let script = format!(
        "S: 220 submit.tern.test ESMTP Tern\nC: AUTH PLAIN {}\nS: 500 5.5.2 line too long\nC: NOOP\nS: 250 2.0.0 OK\n",
        "A".repeat(12_300)
    );
    transcript(msa(), true, &script);
}

#[test]
fn too_long_line_is_refused_and_the_next_command_works() {
    let script = format!(
        "S: 220 mx.tern.test ESMTP Tern\n\
         C: NOOP {}\n\
         S: 500 5.5.2 line too long\n\
         C: NOOP {}\n\
         S: 250 2.0.0 OK\n\
         C: NOOP {}\n\
         C: NOOP\n\
         S: 500 5.5.2 line too long\n\
         S: 250 2.0.0 OK\n",
        "x".repeat(600),
        // 505 + "NOOP " + CRLF is exactly 512 octets: the longest allowed line.
        "y".repeat(505),
        "z".repeat(506),
    );
    transcript(mta(), false, &script);
}

#[test]
fn oversize_message_gets_552_and_the_next_transaction_works() {
    let big = "0123456789".repeat(30);
    let config = Config {
        max_message_size: 100,
        ..mta()
    };
    let script = format!(
        r"
        S: 220 mx.tern.test ESMTP Tern
        C: HELO client.example
        S: 250 mx.tern.test
        C: MAIL FROM:<bob@example.org> SIZE=101
        S: 552 5.3.4 message size exceeds fixed maximum message size
        C: MAIL FROM:<bob@example.org> SIZE=100
        S: 250 2.1.0 sender OK
        C: RCPT TO:<alice@tern.test>
        S: 250 2.1.5 recipient OK
        C: DATA
        S: 354 end data with <CR><LF>.<CR><LF>
        C: {big}
        C: {big}
        C: .
        S: 552 5.3.4 message size exceeds fixed maximum message size
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        C: DATA
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 354 end data with <CR><LF>.<CR><LF>
        C: small
        C: .
        S: 250 2.0.0 queued as 1
        "
    );
    let handler = transcript(config, false, &script);
    assert_eq!(handler.messages.len(), 1);
    assert_eq!(handler.messages[0].1, b"small\r\n");
}

#[test]
fn long_text_line_in_data_is_refused() {
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        C: DATA
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 354 end data with <CR><LF>.<CR><LF>
        C: {}
        C: .
        S: 554 5.6.0 message refused: a line is longer than 1000 octets
        ",
        mta_hello(),
        "x".repeat(999)
    );
    let handler = transcript(mta(), false, &script);
    assert!(handler.messages.is_empty());
}

#[test]
fn smuggling_attempts_never_end_data() {
    for attack in [r"\n.\n", r"\r.\r", r"\n.\r\n", r"\r\n.\n", r"\r.\r\n"] {
        let script = format!(
            r"{}
            C: MAIL FROM:<bob@example.org>
            C: RCPT TO:<alice@tern.test>
            C: DATA
            S: 250 2.1.0 sender OK
            S: 250 2.1.5 recipient OK
            S: 354 end data with <CR><LF>.<CR><LF>
            R: Subject: innocent\r\n\r\nhello{attack}MAIL FROM:<spammer@evil.test>\r\nRCPT TO:<carol@tern.test>\r\nDATA\r\nsmuggled\r\n.\r\n
            S: 550 5.6.0 message refused: bare CR or LF found, lines must end with CRLF
            C: MAIL FROM:<bob@example.org>
            C: RCPT TO:<alice@tern.test>
            C: DATA
            C: clean
            C: .
            S: 250 2.1.0 sender OK
            S: 250 2.1.5 recipient OK
            S: 354 end data with <CR><LF>.<CR><LF>
            S: 250 2.0.0 queued as 1
            ",
            mta_hello()
        );
        let handler = transcript(mta(), false, &script);
        assert_eq!(
            handler.events,
            [
                "mail bob@example.org",
                "rcpt alice@tern.test",
                "mail bob@example.org",
                "rcpt alice@tern.test",
                "data 7 octets"
            ],
            "attack {attack}"
        );
    }
}

#[test]
fn bdat_chunks_make_one_message() {
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        R: BDAT 7\r\nHello\r\nBDAT 7 LAST\r\nWorld\r\n
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 250 2.0.0 7 octets received
        S: 250 2.0.0 queued as 1
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        C: BDAT 0 LAST
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 250 2.0.0 queued as 2
        R: BDAT 6\r\nRSET\r\nNOOP\r\n
        S: 503 5.5.1 need MAIL and RCPT first
        S: 250 2.0.0 OK
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        R: BDAT 3\r\na\nbDATA\r\n
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 550 5.6.0 message refused: bare CR or LF found, lines must end with CRLF
        S: 503 5.5.1 need MAIL and RCPT first
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        R: BDAT 2\r\nab
        C: RCPT TO:<carol@tern.test>
        C: DATA
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 250 2.0.0 2 octets received
        S: 503 5.5.1 RCPT not allowed after BDAT
        S: 503 5.5.1 DATA not allowed after BDAT
        R: BDAT 1 LAST\r\n\r
        S: 550 5.6.0 message refused: bare CR or LF found, lines must end with CRLF
        ",
        mta_hello()
    );
    let handler = transcript(mta(), false, &script);
    assert_eq!(handler.messages.len(), 2);
    assert_eq!(handler.messages[0].1, b"Hello\r\nWorld\r\n");
    assert_eq!(handler.messages[1].1, b"");
}

#[test]
fn oversize_bdat_chunk_is_skipped_and_refused() {
    let config = Config {
        max_message_size: 10,
        ..mta()
    };
    let script = format!(
        r"
        S: 220 mx.tern.test ESMTP Tern
        C: HELO client.example
        S: 250 mx.tern.test
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        R: BDAT 40\r\n{}
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 552 5.3.4 message size exceeds fixed maximum message size
        C: BDAT 6 LAST
        C: NOOP
        S: 503 5.5.1 need MAIL and RCPT first
        ",
        "x".repeat(40)
    );
    transcript(config, false, &script);
}

#[test]
fn too_many_recipients_get_452() {
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<a@tern.test>
        C: RCPT TO:<b@tern.test>
        C: RCPT TO:<c@tern.test>
        C: RCPT TO:<d@tern.test>
        C: DATA
        C: hi
        C: .
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 250 2.1.5 recipient OK
        S: 250 2.1.5 recipient OK
        S: 452 4.5.3 too many recipients
        S: 354 end data with <CR><LF>.<CR><LF>
        S: 250 2.0.0 queued as 1
        ",
        mta_hello()
    );
    let handler = transcript(mta(), false, &script);
    assert_eq!(handler.messages[0].0.rcpt_to.len(), 3);
}

#[test]
fn too_many_errors_close_the_session() {
    let config = Config {
        max_errors: 3,
        ..mta()
    };
    transcript(
        config,
        false,
        r"
        S: 220 mx.tern.test ESMTP Tern
        C: FOO
        C: NOOP
        C: BAR
        C: BAZ
        C: NOOP
        S: 500 5.5.2 command not recognized
        S: 250 2.0.0 OK
        S: 500 5.5.2 command not recognized
        S: 500 5.5.2 command not recognized
        S: 421 4.7.0 mx.tern.test too many errors, closing connection
        A: close
        ",
    );
}

#[test]
fn handler_421_closes_the_session() {
    struct Closing;
    impl Handler for Closing {
        fn authenticate(
            &mut self,
            _: &str,
            _: &str,
            _: &str,
        ) -> impl Future<Output = Result<(), Reply>> + Send {
            ready(Ok(()))
        }
        fn mail_from(
            &mut self,
            _: &Envelope,
            _: &str,
        ) -> impl Future<Output = Result<(), Reply>> + Send {
            ready(Err(Reply::new(421, (4, 3, 2), "shutting down")))
        }
        fn rcpt_to(
            &mut self,
            _: &Envelope,
            _: &str,
        ) -> impl Future<Output = Result<(), Reply>> + Send {
            ready(Ok(()))
        }
        fn data(
            &mut self,
            _: &Envelope,
            _: Vec<u8>,
        ) -> impl Future<Output = Result<Reply, Reply>> + Send {
            ready(Ok(Reply::ok()))
        }
    }
    let mut session = Session::new(mta(), false);
    let output = block_on(session.feed(b"HELO a\r\nMAIL FROM:<b@c.d>\r\nNOOP\r\n", &mut Closing));
    assert_eq!(
        output.reply,
        b"250 mx.tern.test\r\n421 4.3.2 shutting down\r\n"
    );
    assert_eq!(output.action, Action::Close);
}

#[test]
fn timeout_and_shutdown_replies() {
    let session = Session::new(mta(), false);
    assert_eq!(
        session.timeout_reply(),
        b"421 4.4.2 mx.tern.test idle timeout\r\n"
    );
    assert_eq!(session.shutdown_reply(), b"421 4.3.2 shutting down\r\n");
    assert_eq!(session.authenticated(), None);
}

#[test]
fn feed_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let mut session = Session::new(mta(), false);
    let mut handler = Recorder::default();
    let future = session.feed(b"NOOP\r\n", &mut handler);
    assert_send(&future);
    assert_eq!(block_on(future).reply, b"250 2.0.0 OK\r\n");
}

/// A small deterministic generator (xorshift64*), so failures reproduce without a seed file.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Checks that output is a sequence of well-formed reply lines: three digits, then a space or
/// a dash, then text without CR or LF, then CRLF.
fn assert_well_formed(output: &[u8]) {
    let text = String::from_utf8_lossy(output);
    let Some(body) = text
        .strip_suffix("\r\n")
        .or(if text.is_empty() { Some("") } else { None })
    else {
        panic!("output does not end with CRLF: {text:?}");
    };
    if body.is_empty() {
        return;
    }
    for line in body.split("\r\n") {
        let bytes = line.as_bytes();
        assert!(bytes.len() >= 4, "short reply line {line:?}");
        assert!(
            bytes[..3].iter().all(u8::is_ascii_digit),
            "bad code in {line:?}"
        );
        assert!(
            bytes[3] == b' ' || bytes[3] == b'-',
            "bad separator in {line:?}"
        );
        assert!(!line.contains(['\r', '\n']), "stray line break in {line:?}");
    }
}

#[test]
fn pseudo_random_garbage_never_panics_and_stays_bounded() {
    const PIECES: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"HELO x\r\n",
        b"MAIL FROM:<a@b.c>\r\n",
        b"MAIL FROM:<> SIZE=999999999999999999999\r\n",
        b"RCPT TO:<d@tern.test>\r\n",
        b"DATA\r\n",
        b"BDAT 5\r\n",
        b"BDAT 3 LAST\r\n",
        b"BDAT 18446744073709551616\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH LOGIN\r\n",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        b"AUTH SCRAM-SHA-256 bixuPWFsaWNlLHI9YWJj\r\n",
        b"AUTH SCRAM-SHA-256\r\n",
        b"Yz1iaXdzLHI9YWJjLHA9QUFBQQ==\r\n",
        b"STARTTLS\r\n",
        b"RSET\r\n",
        b"\r\n.\r\n",
        b".\r\n",
        b"\n.\n",
        b"\r",
        b"\n",
        b".",
        b"*\r\n",
        b"=\r\n",
        b"<>",
        b"\0",
        b"\xff\xfe",
    ];
    let mut random = Lcg(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let config = match round % 3 {
            0 => mta(),
            1 => msa(),
            _ => Config {
                max_message_size: 64,
                max_recipients: 1,
                max_errors: 1000,
                ..msa()
            },
        };
        let mut session = Session::new(config, round % 2 == 0);
        let mut handler = Recorder::default();
        let mut input = Vec::new();
        for _ in 0..200 {
            match random.below(4) {
                0 => {
                    let length = random.below(700);
                    input.extend((0..length).map(|_| random.next() as u8));
                }
                _ => input.extend_from_slice(PIECES[random.below(PIECES.len())]),
            }
        }
        let mut rest = &input[..];
        while !rest.is_empty() {
            let take = (random.below(300) + 1).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let output = block_on(session.feed(chunk, &mut handler));
            assert_well_formed(&output.reply);
            assert!(session.buffered_octets() <= 12_288 + 10_000);
            match output.action {
                Action::Close => break,
                Action::StartTls => session.tls_started(),
                Action::Continue => {}
            }
        }
    }
}

#[test]
fn debug_output_hides_buffered_input() {
    let mut session = Session::new(msa(), true);
    let mut handler = Recorder::default();
    let output = block_on(session.feed(b"EHLO a\r\nAUTH PLAIN\r\nAGFsaWNlAHNl", &mut handler));
    assert!(output.reply.ends_with(b"334 \r\n"));
    let debug = format!("{session:?}");
    assert!(debug.contains("sasl"), "{debug}");
    assert!(!debug.contains("AGFsaWNlAHNl"), "{debug}");
}

#[test]
fn dsn_parameters_are_recorded_in_the_envelope() {
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org> RET=HDRS ENVID=QQ+2B314+3Dx
        S: 250 2.1.0 sender OK
        C: RCPT TO:<alice@tern.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Alice+2Btag@tern.test
        S: 250 2.1.5 recipient OK
        C: RCPT TO:<carol@tern.test> NOTIFY=NEVER
        S: 250 2.1.5 recipient OK
        C: RCPT TO:<dave@tern.test>
        S: 250 2.1.5 recipient OK
        C: DATA
        S: 354 end data with <CR><LF>.<CR><LF>
        C: hi
        C: .
        S: 250 2.0.0 queued as 1
        C: MAIL FROM:<bob@example.org> RET=FULL
        S: 250 2.1.0 sender OK
        C: RCPT TO:<alice@tern.test>
        S: 250 2.1.5 recipient OK
        C: DATA
        S: 354 end data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 queued as 2
        ",
        mta_hello()
    );
    let handler = transcript(mta(), false, &script);
    let (envelope, _) = &handler.messages[0];
    assert_eq!(envelope.ret, Some(Ret::Headers));
    assert_eq!(envelope.envid.as_deref(), Some("QQ+314=x"));
    assert!(!envelope.requiretls);
    assert_eq!(
        envelope.rcpt_params,
        [
            RcptParams {
                notify: Notify::SUCCESS.with(Notify::DELAY),
                orcpt: Some("rfc822;Alice+tag@tern.test".to_owned()),
            },
            RcptParams {
                notify: Notify::NEVER,
                orcpt: None,
            },
            RcptParams::default(),
        ]
    );
    let (second, _) = &handler.messages[1];
    assert_eq!(second.ret, Some(Ret::Full));
    assert_eq!(second.envid, None);
    assert_eq!(second.rcpt_params, [RcptParams::default()]);
}

#[test]
fn dsn_parameter_syntax_errors_get_501() {
    let config = Config {
        max_errors: 100,
        ..mta()
    };
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org> RET=BOTH
        S: 501 5.5.4 invalid RET parameter
        C: MAIL FROM:<bob@example.org> RET=HDRS RET=FULL
        S: 501 5.5.4 invalid RET parameter
        C: MAIL FROM:<bob@example.org> ENVID=
        S: 501 5.5.4 invalid ENVID parameter
        C: MAIL FROM:<bob@example.org> ENVID=a+0D+0Ab
        S: 501 5.5.4 invalid ENVID parameter
        C: MAIL FROM:<bob@example.org> ENVID={}
        S: 501 5.5.4 invalid ENVID parameter
        C: MAIL FROM:<bob@example.org>
        S: 250 2.1.0 sender OK
        C: RCPT TO:<alice@tern.test> NOTIFY=NEVER,SUCCESS
        S: 501 5.5.4 invalid NOTIFY parameter
        C: RCPT TO:<alice@tern.test> NOTIFY=SOMETIMES
        S: 501 5.5.4 invalid NOTIFY parameter
        C: RCPT TO:<alice@tern.test> ORCPT=x400;alice
        S: 501 5.5.4 invalid ORCPT parameter
        C: RCPT TO:<alice@tern.test> ORCPT=rfc822;
        S: 501 5.5.4 invalid ORCPT parameter
        C: RCPT TO:<alice@tern.test> ORCPT=rfc822;a+0Ab@tern.test
        S: 501 5.5.4 invalid ORCPT parameter
        C: RCPT TO:<alice@tern.test> ORCPT=rfc822;a+C3+A9@tern.test
        S: 501 5.5.4 invalid ORCPT parameter
        C: RCPT TO:<alice@tern.test> NOTIFY=FAILURE
        S: 250 2.1.5 recipient OK
        ",
        mta_hello(),
        "x".repeat(101)
    );
    let handler = transcript(config, false, &script);
    assert_eq!(
        handler.events,
        ["mail bob@example.org", "rcpt alice@tern.test"]
    );
}

#[test]
fn requiretls_is_offered_and_accepted_only_inside_tls() {
    let script = format!(
        r"{}
        C: MAIL FROM:<bob@example.org> REQUIRETLS
        S: 530 5.7.10 REQUIRETLS needs a TLS connection
        C: STARTTLS
        S: 220 2.0.0 ready to start TLS
        A: starttls
        C: EHLO client.example
        {}
        C: MAIL FROM:<bob@example.org> REQUIRETLS RET=FULL
        S: 250 2.1.0 sender OK
        C: RCPT TO:<alice@tern.test>
        S: 250 2.1.5 recipient OK
        C: DATA
        S: 354 end data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 queued as 1
        ",
        mta_hello(),
        ehlo("mx.tern.test", true, false)
    );
    let handler = transcript(mta(), false, &script);
    let (envelope, _) = &handler.messages[0];
    assert!(envelope.requiretls);
    assert_eq!(envelope.ret, Some(Ret::Full));
}

/// A SCRAM client driving a session line by line; the answers depend on the server's random
/// nonce, so these tests compute each client message from the previous reply instead of
/// playing a fixed transcript.
struct ScramClient {
    session: Session,
    handler: Recorder,
    feeding: Feeding,
}

impl ScramClient {
    /// An MSA session inside TLS, after EHLO.
    fn new(feeding: Feeding) -> ScramClient {
        let mut client = ScramClient {
            session: Session::new(msa(), true),
            handler: Recorder::default(),
            feeding,
        };
        let ehlo = client.send("EHLO client.example");
        assert!(
            ehlo.ends_with("250 AUTH PLAIN LOGIN SCRAM-SHA-256\r\n"),
            "{ehlo}"
        );
        client
    }

    /// Sends one line (CRLF appended) and returns everything the session answered.
    fn send(&mut self, line: &str) -> String {
        let input = format!("{line}\r\n");
        let mut reply = Vec::new();
        match self.feeding {
            Feeding::Whole => {
                let output = block_on(self.session.feed(input.as_bytes(), &mut self.handler));
                assert_eq!(output.action, Action::Continue);
                reply = output.reply;
            }
            Feeding::Bytewise => {
                for octet in input.as_bytes() {
                    let output = block_on(
                        self.session
                            .feed(std::slice::from_ref(octet), &mut self.handler),
                    );
                    assert_eq!(output.action, Action::Continue);
                    reply.extend_from_slice(&output.reply);
                }
            }
        }
        String::from_utf8(reply).unwrap()
    }

    /// Sends a base64-encoded SASL message and returns the decoded `334` challenge, or the
    /// whole reply as `Err` when it is not a challenge.
    fn exchange(&mut self, line: &str) -> Result<String, String> {
        let reply = self.send(line);
        match reply
            .strip_prefix("334 ")
            .and_then(|r| r.strip_suffix("\r\n"))
        {
            Some(challenge) => Ok(String::from_utf8(STANDARD.decode(challenge).unwrap()).unwrap()),
            None => Err(reply),
        }
    }

    /// Runs a whole exchange up to the client-final-message and returns the reply to it and
    /// the server signature the client expects.
    fn login(
        &mut self,
        authzid: &str,
        user: &str,
        password: &str,
        initial: bool,
    ) -> (String, String) {
        let gs2 = if authzid.is_empty() {
            "n,,".to_owned()
        } else {
            format!("n,a={authzid},")
        };
        let bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
        let first = STANDARD.encode(format!("{gs2}{bare}"));
        let server_first = if initial {
            self.exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
        } else {
            assert_eq!(self.send("AUTH SCRAM-SHA-256"), "334 \r\n");
            self.exchange(&first)
        }
        .unwrap();
        let (client_final, v) =
            crate::scram::tests::client_final(password, &bare, &server_first, &gs2);
        (self.send(&STANDARD.encode(client_final)), v)
    }
}

const FEEDINGS: [Feeding; 2] = [Feeding::Whole, Feeding::Bytewise];

#[test]
fn scram_sha_256_login_then_mail() {
    for feeding in FEEDINGS {
        for initial in [true, false] {
            let mut client = ScramClient::new(feeding);
            let (reply, v) = client.login("", "alice", "secret", initial);
            assert_eq!(reply, format!("334 {}\r\n", STANDARD.encode(v)));
            assert_eq!(
                client.session.authenticated(),
                None,
                "not before the last step"
            );
            assert_eq!(client.send(""), "235 2.7.0 authentication successful\r\n");
            assert_eq!(client.session.authenticated(), Some("alice"));
            assert_eq!(
                client.send("MAIL FROM:<alice@tern.test>"),
                "250 2.1.0 sender OK\r\n"
            );
            assert_eq!(
                client.send("AUTH SCRAM-SHA-256"),
                "503 5.5.1 already authenticated\r\n"
            );
            assert_eq!(
                client.handler.events,
                [
                    "scram alice",
                    "scram-finished /alice true",
                    "mail alice@tern.test"
                ]
            );
        }
    }
}

#[test]
fn scram_server_first_message_has_a_fresh_nonce_salt_and_iterations() {
    let mut client = ScramClient::new(Feeding::Whole);
    let first = STANDARD.encode("n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL");
    let server_first = client
        .exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
        .unwrap();
    let attributes: Vec<&str> = server_first.split(',').collect();
    let server_nonce = attributes[0]
        .strip_prefix("r=fyko+d2lbbFgONRv9qkxdawL")
        .unwrap();
    // 24 random octets in base64.
    assert_eq!(STANDARD.decode(server_nonce).unwrap().len(), 24);
    assert_eq!(
        attributes[1..],
        [
            format!("s={}", STANDARD.encode(b"alice's salt")),
            "i=4096".to_owned()
        ]
    );
    assert_eq!(client.send("*"), "501 5.7.0 authentication cancelled\r\n");
    let again = client
        .exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
        .unwrap();
    assert_ne!(again, server_first, "a new nonce for every exchange");
}

#[test]
fn scram_wrong_password_and_authzid_fail_with_535() {
    for feeding in FEEDINGS {
        let mut client = ScramClient::new(feeding);
        let (reply, _) = client.login("", "alice", "wrong", true);
        assert_eq!(reply, "535 5.7.8 authentication credentials invalid\r\n");
        // Acting for someone else is the handler's call, made after the proof.
        let (reply, _) = client.login("bob", "alice", "secret", false);
        assert_eq!(reply, "535 5.7.8 authentication credentials invalid\r\n");
        assert_eq!(client.session.authenticated(), None);
        assert_eq!(
            client.send("MAIL FROM:<alice@tern.test>"),
            "530 5.7.0 authentication required\r\n"
        );
        assert_eq!(
            client.handler.events,
            [
                "scram alice",
                "scram-finished /alice false",
                "scram alice",
                "scram-finished bob/alice true"
            ]
        );
    }
}

#[test]
fn scram_unknown_user_is_answered_like_a_known_one_then_fails() {
    for feeding in FEEDINGS {
        let mut client = ScramClient::new(feeding);
        let first = STANDARD.encode("n,,n=ghost,r=fyko+d2lbbFgONRv9qkxdawL");
        let server_first = client
            .exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
            .unwrap();
        let salt = server_first.split(',').nth(1).unwrap().to_owned();
        assert_eq!(STANDARD.decode(&salt[2..]).unwrap().len(), 16);
        assert!(server_first.ends_with(",i=4096"), "{server_first}");
        assert_eq!(client.send("*"), "501 5.7.0 authentication cancelled\r\n");
        // The same salt on the next attempt, as for a real account.
        let (reply, _) = client.login("", "ghost", "secret", true);
        assert_eq!(reply, "535 5.7.8 authentication credentials invalid\r\n");
        let second = client
            .exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
            .unwrap();
        assert_eq!(second.split(',').nth(1), Some(salt.as_str()));
        assert_eq!(
            client.handler.events,
            [
                "scram ghost",
                "scram ghost",
                "scram-finished /ghost false",
                "scram ghost"
            ]
        );
    }
}

#[test]
fn scram_channel_binding_is_refused() {
    let script = format!(
        r"{}
        C: AUTH SCRAM-SHA-256 {}
        S: 504 5.5.4 channel binding not supported
        C: AUTH SCRAM-SHA-256-PLUS {}
        S: 504 5.5.4 mechanism not supported
        C: NOOP
        S: 250 2.0.0 OK
        ",
        hello("submit.tern.test", true, true),
        STANDARD.encode("p=tls-exporter,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"),
        STANDARD.encode("p=tls-exporter,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"),
    );
    let handler = transcript(msa(), true, &script);
    assert!(handler.events.is_empty(), "{:?}", handler.events);
}

#[test]
fn scram_malformed_messages_get_501() {
    let script = format!(
        r"{}
        C: AUTH SCRAM-SHA-256 !!!!
        S: 501 5.5.2 invalid base64 in SASL response
        C: AUTH SCRAM-SHA-256 =
        S: 501 5.5.2 malformed SASL response
        C: AUTH SCRAM-SHA-256 {}
        S: 501 5.5.2 malformed SASL response
        C: AUTH SCRAM-SHA-256 {}
        S: 501 5.5.2 malformed SASL response
        C: AUTH SCRAM-SHA-256
        S: 334\x20
        C: {}
        S: 501 5.5.2 malformed SASL response
        C: NOOP
        S: 250 2.0.0 OK
        ",
        hello("submit.tern.test", true, true),
        STANDARD.encode("n,,r=abc"),
        STANDARD.encode("n,,m=ext,n=alice,r=abc"),
        STANDARD.encode("n,,n=al=ice,r=abc"),
    );
    let handler = transcript(msa(), true, &script);
    assert!(handler.events.is_empty(), "{:?}", handler.events);

    for feeding in FEEDINGS {
        let mut client = ScramClient::new(feeding);
        let first = STANDARD.encode("n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL");
        // A client-final-message without its proof, and one that is not base64.
        let server_first = client
            .exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
            .unwrap();
        let nonce = server_first.split(',').next().unwrap();
        assert_eq!(
            client.send(&STANDARD.encode(format!("c=biws,{nonce}"))),
            "501 5.5.2 malformed SASL response\r\n"
        );
        client
            .exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
            .unwrap();
        assert_eq!(
            client.send("%%%"),
            "501 5.5.2 invalid base64 in SASL response\r\n"
        );
        // Anything but an empty response after the server's signature.
        let (reply, _) = client.login("", "alice", "secret", true);
        assert!(reply.starts_with("334 "), "{reply}");
        assert_eq!(client.send("Zm9v"), "501 5.5.2 malformed SASL response\r\n");
        assert_eq!(client.session.authenticated(), None);
        // Malformed messages are not failed logins.
        assert_eq!(
            client.handler.events,
            [
                "scram alice",
                "scram alice",
                "scram alice",
                "scram-finished /alice true"
            ]
        );
    }
}

#[test]
fn scram_nonce_mismatch_fails_like_a_wrong_proof() {
    for feeding in FEEDINGS {
        let mut client = ScramClient::new(feeding);
        let bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
        let server_first = client
            .exchange(&format!(
                "AUTH SCRAM-SHA-256 {}",
                STANDARD.encode(format!("n,,{bare}"))
            ))
            .unwrap();
        // The right password, but a proof over a nonce the server did not choose.
        let forged = server_first.replacen(
            "r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawLX",
            1,
        );
        let (client_final, _) = crate::scram::tests::client_final("secret", bare, &forged, "n,,");
        assert_eq!(
            client.send(&STANDARD.encode(client_final)),
            "535 5.7.8 authentication credentials invalid\r\n"
        );
        assert_eq!(
            client.handler.events,
            ["scram alice", "scram-finished /alice false"]
        );
    }
}

#[test]
fn scram_cancelled_at_every_step() {
    for feeding in FEEDINGS {
        let mut client = ScramClient::new(feeding);
        assert_eq!(client.send("AUTH SCRAM-SHA-256"), "334 \r\n");
        assert_eq!(client.send("*"), "501 5.7.0 authentication cancelled\r\n");
        let first = STANDARD.encode("n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL");
        client
            .exchange(&format!("AUTH SCRAM-SHA-256 {first}"))
            .unwrap();
        assert_eq!(client.send("*"), "501 5.7.0 authentication cancelled\r\n");
        let (reply, _) = client.login("", "alice", "secret", true);
        assert!(reply.starts_with("334 "), "{reply}");
        assert_eq!(client.send("*"), "501 5.7.0 authentication cancelled\r\n");
        assert_eq!(client.session.authenticated(), None);
        assert_eq!(client.send("NOOP"), "250 2.0.0 OK\r\n");
    }
}

#[test]
fn scram_refused_by_the_handler_before_the_challenge() {
    let script = format!(
        r"{}
        C: AUTH SCRAM-SHA-256 {}
        S: 454 4.7.0 too many failed logins
        ",
        hello("submit.tern.test", true, true),
        STANDARD.encode("n,,n=blocked,r=abc"),
    );
    let handler = transcript(msa(), true, &script);
    assert_eq!(handler.events, ["scram blocked"]);
}

#[test]
fn scram_is_neither_offered_nor_accepted_outside_tls_or_on_port_25() {
    transcript(
        msa(),
        false,
        r"
        S: 220 submit.tern.test ESMTP Tern
        C: EHLO client.example
        S: 250-submit.tern.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        C: AUTH SCRAM-SHA-256 bixuPWFsaWNlLHI9YWJj
        S: 530 5.7.0 must issue a STARTTLS command first
        ",
    );
    let script = format!(
        r"{}
        C: AUTH SCRAM-SHA-256 bixuPWFsaWNlLHI9YWJj
        S: 502 5.5.1 AUTH not available
        ",
        hello("mx.tern.test", true, false)
    );
    let handler = transcript(mta(), true, &script);
    assert!(handler.events.is_empty(), "{:?}", handler.events);
}

/// Plays an LMTP transcript fed whole and octet by octet.
fn lmtp_transcript(config: Config, script: &str) -> Recorder {
    let (whole, _) = play_session(Session::lmtp(config.clone(), false), script, Feeding::Whole);
    let (bytewise, _) = play_session(Session::lmtp(config, false), script, Feeding::Bytewise);
    assert_eq!(whole.events, bytewise.events);
    assert_eq!(whole.messages, bytewise.messages);
    whole
}

#[test]
fn lmtp_answers_each_recipient_after_data() {
    let lhlo = ehlo("mx.tern.test", false, false);
    let script = format!(
        r"S: 220 mx.tern.test LMTP Tern
        C: EHLO client.example
        S: 500 5.5.1 this is LMTP: use LHLO
        C: HELO client.example
        S: 500 5.5.1 this is LMTP: use LHLO
        C: MAIL FROM:<bob@example.org>
        S: 503 5.5.1 send LHLO first
        C: LHLO client.example
        {lhlo}
        C: MAIL FROM:<bob@example.org>
        C: RCPT TO:<alice@tern.test>
        C: RCPT TO:<nobody@tern.test>
        C: RCPT TO:<full@tern.test>
        C: DATA
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 550 5.1.1 no such user here
        S: 250 2.1.5 recipient OK
        S: 354 end data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: body
        C: .
        S: 250 2.0.0 <alice@tern.test> delivered
        S: 452 4.2.2 <full@tern.test> mailbox full
        C: QUIT
        S: 221 2.0.0 mx.tern.test closing connection
        A: close
        "
    );
    let handler = lmtp_transcript(mta(), &script);
    assert_eq!(handler.messages.len(), 1);
    let (envelope, message) = &handler.messages[0];
    assert_eq!(envelope.rcpt_to, ["alice@tern.test", "full@tern.test"]);
    assert_eq!(message, b"Subject: hi\r\n\r\nbody\r\n");
}

#[test]
fn lmtp_refused_message_is_refused_for_every_recipient() {
    // A bare LF in the message: the session refuses it itself, once per recipient.
    let lhlo = ehlo("mx.tern.test", false, false);
    let script = format!(
        r"S: 220 mx.tern.test LMTP Tern
        C: LHLO client.example
        {lhlo}
        C: MAIL FROM:<>
        C: RCPT TO:<alice@tern.test>
        C: RCPT TO:<bob@tern.test>
        C: DATA
        S: 250 2.1.0 sender OK
        S: 250 2.1.5 recipient OK
        S: 250 2.1.5 recipient OK
        S: 354 end data with <CR><LF>.<CR><LF>
        R: bare\nLF\r\n.\r\n
        S: 550 5.6.0 message refused: bare CR or LF found, lines must end with CRLF
        S: 550 5.6.0 message refused: bare CR or LF found, lines must end with CRLF
        C: NOOP
        S: 250 2.0.0 OK
        "
    );
    let handler = lmtp_transcript(mta(), &script);
    assert!(handler.messages.is_empty());
}
