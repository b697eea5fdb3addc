//! Tests for the outbound transport against tiny scripted SMTP servers on 127.0.0.1:0. Each
//! peer reads the client's lines and answers as a script says, and records what it got, so
//! the tests check the wire on both sides. Timeouts run on paused time, not on sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use tern_smtp::{Notify, RcptParams, Reply};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::RootCertStore;

use super::{
    ClientSettings, Connection, Envelope, RcptOutcome, Timeouts, TlsPolicy, TransferError,
    opportunistic_connector, verifying_connector,
};

/// The server side of one scripted connection.
struct Peer<S> {
    stream: BufReader<S>,
    /// Every line the client sent, without CRLF (message content excluded).
    lines: Vec<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    fn new(stream: S) -> Peer<S> {
        Peer {
            stream: BufReader::new(stream),
            lines: Vec::new(),
        }
    }

    /// Reads one line; `None` at end of stream.
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let read = self.stream.read_line(&mut line).await.ok()?;
        if read == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        self.lines.push(line.clone());
        Some(line)
    }

    /// Reads a line and checks that it starts with `prefix`.
    async fn expect(&mut self, prefix: &str) -> String {
        let line = self.line().await.unwrap_or_default();
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}, got {line:?}"
        );
        line
    }

    async fn send(&mut self, text: &str) {
        let mut out = text.replace('\n', "\r\n");
        out.push_str("\r\n");
        self.stream
            .get_mut()
            .write_all(out.as_bytes())
            .await
            .expect("peer write");
    }

    /// Reads DATA content up to and including the `.` line, as sent (still dot-stuffed).
    async fn content(&mut self) -> Vec<u8> {
        let mut content = Vec::new();
        loop {
            let mut line = Vec::new();
            let read = self
                .stream
                .read_until(b'\n', &mut line)
                .await
                .expect("peer read");
            assert!(read > 0, "client closed during DATA");
            content.extend_from_slice(&line);
            if line == b".\r\n" {
                return content;
            }
        }
    }

    /// Greeting and an EHLO answered with `extensions` (one per line).
    async fn greet(&mut self, extensions: &[&str]) {
        self.send("220 mx.peer.test ESMTP test").await;
        self.expect("EHLO client.test").await;
        let mut reply = vec!["mx.peer.test".to_owned()];
        reply.extend(extensions.iter().map(|e| (*e).to_owned()));
        self.send(&ehlo_reply(&reply)).await;
    }
}

fn ehlo_reply(lines: &[String]) -> String {
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let separator = if index == last { ' ' } else { '-' };
            format!("250{separator}{line}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `script` as the server of the next connection(s) on a fresh listener.
async fn serve<F, Fut>(script: F) -> (SocketAddr, JoinHandle<Vec<String>>)
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (addr, tokio::spawn(script(listener)))
}

async fn accept(listener: &TcpListener) -> Peer<tokio::net::TcpStream> {
    let (stream, _) = listener.accept().await.expect("accept");
    Peer::new(stream)
}

fn settings(tls: TlsPolicy) -> ClientSettings {
    ClientSettings {
        helo: "client.test".to_owned(),
        tls,
        verify: verifying_connector(RootCertStore::empty()).expect("verify connector"),
        opportunistic: opportunistic_connector().expect("opportunistic connector"),
        auth: None,
        timeouts: Timeouts::default(),
    }
}

fn envelope<'a>(rcpts: &[&'a str]) -> Envelope<'a> {
    Envelope {
        mail_from: "sender@tern.test",
        rcpts: rcpts
            .iter()
            .map(|to| (*to, RcptParams::default()))
            .collect(),
        ret: None,
        envid: None,
        requiretls: false,
    }
}

const FULL: &[&str] = &[
    "PIPELINING",
    "SIZE 10000",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "DSN",
];

fn code(outcome: &RcptOutcome) -> (bool, u16) {
    match outcome {
        RcptOutcome::Accepted(reply) => (true, reply.code),
        RcptOutcome::Rejected(reply) => (false, reply.code),
    }
}

#[tokio::test]
async fn full_delivery_is_pipelined_and_dot_stuffed() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(FULL).await;
        // Pipelined: all three commands arrive before the first reply is sent.
        peer.expect("MAIL FROM:<sender@tern.test>").await;
        peer.expect("RCPT TO:<a@peer.test>").await;
        peer.expect("RCPT TO:<b@peer.test>").await;
        peer.send("250 2.1.0 ok\n250 2.1.5 ok\n250 2.1.5 ok").await;
        peer.expect("DATA").await;
        peer.send("354 go ahead").await;
        let content = peer.content().await;
        assert_eq!(
            content, b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\n",
            "dot-stuffed with a final CRLF"
        );
        peer.send("250 2.0.0 queued").await;
        peer.expect("QUIT").await;
        peer.send("221 2.0.0 bye").await;
        peer.lines
    })
    .await;
    let mut connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Disabled))
        .await
        .expect("connect");
    assert_eq!(connection.peer(), "mx.peer.test [127.0.0.1]");
    assert!(connection.capabilities().pipelining);
    let mut envelope = envelope(&["a@peer.test", "b@peer.test"]);
    envelope.envid = Some("id 1");
    envelope.ret = Some(tern_smtp::Ret::Headers);
    envelope.rcpts[1].1 = RcptParams {
        notify: Notify::NEVER,
        orcpt: Some("rfc822;b@peer.test".to_owned()),
    };
    let outcomes = connection
        .send(&envelope, b"Subject: x\r\n\r\n.dot\r\nbody")
        .await
        .expect("delivered");
    assert_eq!(
        outcomes.iter().map(code).collect::<Vec<_>>(),
        [(true, 250), (true, 250)]
    );
    assert_eq!(
        outcomes[0],
        RcptOutcome::Accepted(Reply::new(250, (2, 1, 5), "ok"))
    );
    assert!(connection.is_reusable());
    connection.quit().await;
    let lines = peer.await.expect("peer");
    assert_eq!(
        lines[1],
        "MAIL FROM:<sender@tern.test> SIZE=26 RET=HDRS ENVID=id+201"
    );
    assert_eq!(lines[2], "RCPT TO:<a@peer.test>");
    assert_eq!(
        lines[3],
        "RCPT TO:<b@peer.test> NOTIFY=NEVER ORCPT=rfc822;b@peer.test"
    );
}

#[tokio::test]
async fn one_rejected_recipient_and_the_others_get_the_message() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["ENHANCEDSTATUSCODES"]).await;
        peer.expect("MAIL FROM:").await;
        peer.send("250 2.1.0 ok").await;
        peer.expect("RCPT TO:<a@peer.test>").await;
        peer.send("250 2.1.5 ok").await;
        peer.expect("RCPT TO:<nobody@peer.test>").await;
        peer.send("550 5.1.1 no such user").await;
        peer.expect("RCPT TO:<c@peer.test>").await;
        peer.send("451 4.3.0 try later").await;
        peer.expect("DATA").await;
        peer.send("354 go").await;
        peer.content().await;
        peer.send("250 2.0.0 queued").await;
        peer.lines
    })
    .await;
    let mut connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Disabled))
        .await
        .expect("connect");
    let outcomes = connection
        .send(
            &envelope(&["a@peer.test", "nobody@peer.test", "c@peer.test"]),
            b"hi\r\n",
        )
        .await
        .expect("delivered to one");
    assert_eq!(
        outcomes.iter().map(code).collect::<Vec<_>>(),
        [(true, 250), (false, 550), (false, 451)]
    );
    assert_eq!(
        outcomes[1],
        RcptOutcome::Rejected(Reply::new(550, (5, 1, 1), "no such user"))
    );
    peer.await.expect("peer");
}

#[tokio::test]
async fn all_recipients_rejected_sends_no_data() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["PIPELINING"]).await;
        peer.expect("MAIL FROM:").await;
        peer.expect("RCPT TO:").await;
        peer.send("250 ok\n550 no").await;
        peer.expect("RSET").await;
        peer.send("250 ok").await;
        peer.expect("QUIT").await;
        peer.send("221 bye").await;
        peer.lines
    })
    .await;
    let mut connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Disabled))
        .await
        .expect("connect");
    let outcomes = connection
        .send(&envelope(&["x@peer.test"]), b"hi\r\n")
        .await
        .expect("transaction completes");
    assert_eq!(
        outcomes.iter().map(code).collect::<Vec<_>>(),
        [(false, 550)]
    );
    assert!(connection.is_reusable());
    connection.quit().await;
    let lines = peer.await.expect("peer");
    assert!(!lines.iter().any(|line| line == "DATA"), "{lines:?}");
}

#[tokio::test]
async fn temporary_mail_failure_then_reuse_after_rset() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["ENHANCEDSTATUSCODES"]).await;
        peer.expect("MAIL FROM:").await;
        peer.send("451 4.3.0 busy").await;
        peer.expect("RSET").await;
        peer.send("250 2.0.0 ok").await;
        peer.expect("MAIL FROM:").await;
        peer.send("250 2.1.0 ok").await;
        peer.expect("RCPT TO:").await;
        peer.send("250 2.1.5 ok").await;
        peer.expect("DATA").await;
        peer.send("354 go").await;
        peer.content().await;
        peer.send("250 2.0.0 queued").await;
        peer.lines
    })
    .await;
    let mut connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Disabled))
        .await
        .expect("connect");
    let error = connection
        .send(&envelope(&["a@peer.test"]), b"hi\r\n")
        .await
        .expect_err("451");
    assert_eq!(error, TransferError::Temporary("451 4.3.0 busy".to_owned()));
    assert!(connection.is_reusable());
    let outcomes = connection
        .send(&envelope(&["a@peer.test"]), b"hi\r\n")
        .await
        .expect("second message");
    assert_eq!(outcomes.len(), 1);
    peer.await.expect("peer");
}

#[tokio::test]
async fn permanent_data_rejection_is_permanent() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["ENHANCEDSTATUSCODES"]).await;
        peer.expect("MAIL FROM:").await;
        peer.send("250 2.1.0 ok").await;
        peer.expect("RCPT TO:").await;
        peer.send("250 2.1.5 ok").await;
        peer.expect("DATA").await;
        peer.send("354 go").await;
        peer.content().await;
        peer.send("554 5.7.1 spam").await;
        peer.expect("RSET").await;
        peer.send("250 2.0.0 ok").await;
        peer.lines
    })
    .await;
    let mut connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Disabled))
        .await
        .expect("connect");
    let error = connection
        .send(&envelope(&["a@peer.test"]), b"hi\r\n")
        .await
        .expect_err("554");
    assert_eq!(
        error,
        TransferError::Permanent(Reply::new(554, (5, 7, 1), "spam"))
    );
    peer.await.expect("peer");
}

#[tokio::test]
async fn connection_dropped_during_data_is_temporary() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&[]).await;
        peer.expect("MAIL FROM:").await;
        peer.send("250 ok").await;
        peer.expect("RCPT TO:").await;
        peer.send("250 ok").await;
        peer.expect("DATA").await;
        peer.send("354 go").await;
        peer.expect("first line").await;
        peer.lines
    })
    .await;
    let mut connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Disabled))
        .await
        .expect("connect");
    let result = connection
        .send(&envelope(&["a@peer.test"]), b"first line\r\nsecond\r\n")
        .await;
    peer.await.expect("peer");
    match result {
        Err(TransferError::Temporary(reason)) => {
            assert!(reason.contains("connection lost"), "{reason}");
            assert!(reason.contains("DATA"), "{reason}");
        }
        other => panic!("expected a temporary failure, got {other:?}"),
    }
    assert!(!connection.is_reusable());
}

#[tokio::test]
async fn size_and_8bit_failures_are_permanent_and_send_nothing() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["SIZE 10", "ENHANCEDSTATUSCODES"]).await;
        peer.expect("QUIT").await;
        peer.send("221 bye").await;
        peer.lines
    })
    .await;
    let mut connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Disabled))
        .await
        .expect("connect");
    let too_big = connection
        .send(&envelope(&["a@peer.test"]), b"0123456789\r\n")
        .await;
    assert!(
        matches!(&too_big, Err(TransferError::Permanent(reply)) if reply.status == Some((5, 3, 4))),
        "{too_big:?}"
    );
    let eight_bit = connection
        .send(&envelope(&["a@peer.test"]), "é\r\n".as_bytes())
        .await;
    assert!(
        matches!(&eight_bit, Err(TransferError::Permanent(reply)) if reply.status == Some((5, 6, 3))),
        "{eight_bit:?}"
    );
    assert!(connection.is_reusable());
    connection.quit().await;
    let lines = peer.await.expect("peer");
    assert_eq!(lines, ["EHLO client.test", "QUIT"]);
}

#[tokio::test]
async fn helo_fallback_when_ehlo_is_unknown() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.send("220 old.peer.test").await;
        peer.expect("EHLO client.test").await;
        peer.send("502 what").await;
        peer.expect("HELO client.test").await;
        peer.send("250 old.peer.test").await;
        peer.expect("MAIL FROM:<sender@tern.test>").await;
        peer.lines
    })
    .await;
    let mut connection =
        Connection::connect(addr, "old.peer.test", &settings(TlsPolicy::Opportunistic))
            .await
            .expect("connect");
    assert_eq!(connection.capabilities(), &Default::default());
    assert!(!connection.tls_active());
    let result = connection
        .send(&envelope(&["a@peer.test"]), b"hi\r\n")
        .await;
    assert!(matches!(result, Err(TransferError::Temporary(_))));
    let lines = peer.await.expect("peer");
    assert_eq!(lines[2], "MAIL FROM:<sender@tern.test>", "no SIZE to HELO");
}

/// A TLS acceptor with a fresh self-signed certificate; the directory must outlive it.
fn acceptor() -> (tempfile::TempDir, tokio_rustls::TlsAcceptor) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = tern_runtime::tls::ensure_self_signed(dir.path(), &["mx.peer.test".to_owned()])
        .expect("certificate");
    let acceptor = tern_runtime::tls::acceptor(&files).expect("acceptor");
    (dir, acceptor)
}

#[tokio::test]
async fn opportunistic_starttls_is_used_when_offered() {
    let (_dir, tls) = acceptor();
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["STARTTLS"]).await;
        peer.expect("STARTTLS").await;
        peer.send("220 go ahead").await;
        let plain = peer.stream.into_inner();
        let secure = tls.accept(plain).await.expect("handshake");
        let mut peer = Peer::new(secure);
        peer.expect("EHLO client.test").await;
        peer.send("250-mx.peer.test\n250 8BITMIME").await;
        peer.expect("QUIT").await;
        peer.send("221 bye").await;
        peer.lines
    })
    .await;
    let connection = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Opportunistic))
        .await
        .expect("connect");
    assert!(connection.tls_active());
    assert!(connection.capabilities().eight_bit_mime);
    assert!(!connection.capabilities().starttls);
    connection.quit().await;
    peer.await.expect("peer");
}

#[tokio::test]
async fn opportunistic_falls_back_to_plaintext_when_the_handshake_fails() {
    let (addr, peer) = serve(|listener| async move {
        let mut first = accept(&listener).await;
        first.greet(&["STARTTLS"]).await;
        first.expect("STARTTLS").await;
        first.send("220 go ahead").await;
        // Not TLS at all: the client's handshake fails on this.
        first.send("garbage instead of a server hello").await;
        drop(first);
        let mut second = accept(&listener).await;
        second.greet(&["STARTTLS"]).await;
        second.expect("MAIL FROM:").await;
        second.lines
    })
    .await;
    let mut connection =
        Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Opportunistic))
            .await
            .expect("plaintext fallback");
    assert!(!connection.tls_active());
    assert!(connection.is_reusable());
    let _ = connection
        .send(&envelope(&["a@peer.test"]), b"hi\r\n")
        .await;
    let lines = peer.await.expect("peer");
    assert_eq!(lines, ["EHLO client.test", "MAIL FROM:<sender@tern.test>"]);
}

#[tokio::test]
async fn required_tls_fails_without_starttls_and_with_a_bad_certificate() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["PIPELINING"]).await;
        peer.line().await;
        peer.lines
    })
    .await;
    let error = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Required))
        .await
        .expect_err("no STARTTLS");
    assert!(
        matches!(&error, TransferError::Temporary(reason) if reason.contains("STARTTLS")),
        "{error:?}"
    );
    peer.await.expect("peer");

    // The self-signed certificate is not trusted by `verify`, so Required gives up rather
    // than falling back to plaintext.
    let (_dir, tls) = acceptor();
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["STARTTLS"]).await;
        peer.expect("STARTTLS").await;
        peer.send("220 go ahead").await;
        let _ = tls.accept(peer.stream.into_inner()).await;
        Vec::new()
    })
    .await;
    let error = Connection::connect(addr, "mx.peer.test", &settings(TlsPolicy::Required))
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(error, TransferError::Temporary(_)), "{error:?}");
    peer.await.expect("peer");
}

#[tokio::test]
async fn auth_is_never_sent_outside_tls() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        peer.greet(&["AUTH PLAIN"]).await;
        peer.line().await;
        peer.lines
    })
    .await;
    let mut settings = settings(TlsPolicy::Disabled);
    settings.auth = Some(("user".to_owned(), "secret".to_owned()));
    let error = Connection::connect(addr, "mx.peer.test", &settings)
        .await
        .expect_err("no TLS");
    assert!(matches!(error, TransferError::Temporary(_)));
    let lines = peer.await.expect("peer");
    assert!(
        !lines.iter().any(|line| line.starts_with("AUTH")),
        "{lines:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn silent_server_times_out_at_the_greeting() {
    let (addr, peer) = serve(|listener| async move {
        let mut peer = accept(&listener).await;
        // Never greets; waits for the client to give up and close.
        peer.line().await;
        peer.lines
    })
    .await;
    let settings = ClientSettings {
        timeouts: Timeouts {
            greeting: Duration::from_secs(300),
            ..Timeouts::default()
        },
        ..settings(TlsPolicy::Disabled)
    };
    let started = tokio::time::Instant::now();
    let error = Connection::connect(addr, "mx.peer.test", &settings)
        .await
        .expect_err("timeout");
    assert_eq!(
        error,
        TransferError::Temporary("timeout waiting for the greeting".to_owned())
    );
    assert!(started.elapsed() >= Duration::from_secs(300));
    assert!(peer.await.expect("peer").is_empty());
}
