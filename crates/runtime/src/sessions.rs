//! Adapters from the I/O-free protocol sessions (`tern-smtp`, `tern-imap`, `tern-pop3`,
//! `tern-managesieve`) to the `LineProtocol` the socket driver runs. A few lines each: the
//! sessions already decide every byte; this only maps their outputs to the driver's actions,
//! and counts what went by for the metrics (commands by verb, SMTP replies by code, IMAP
//! command latency), so no agent has to.

use std::future::Future;
use std::time::{Duration, Instant};
use tracing::Instrument;

use crate::net::{Action, LineProtocol};
use crate::ops::names;

/// Counts every final reply line (`250 ...`, not `250-...`) in `bytes` by its code.
fn count_smtp_replies(listener: &'static str, bytes: &[u8]) {
    for line in bytes.split(|&b| b == b'\n') {
        let final_line = line.len() >= 3
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line.get(3), None | Some(b' ') | Some(b'\r'));
        if final_line {
            let code = std::str::from_utf8(&line[..3]).unwrap_or("000").to_string();
            metrics::counter!(names::SMTP_REPLIES, "listener" => listener, "code" => code)
                .increment(1);
        }
    }
}

fn smtp_action(a: tern_smtp::Action) -> Action {
    match a {
        tern_smtp::Action::Continue => Action::Continue,
        tern_smtp::Action::StartTls => Action::StartTls,
        tern_smtp::Action::Close => Action::Close,
    }
}

/// An SMTP session plus the agent's policy handler. `on_tls` lets the handler learn that the
/// connection is now encrypted (for the Received header's protocol name).
pub struct SmtpConnection<H> {
    session: tern_smtp::Session,
    handler: H,
    on_tls: fn(&mut H),
    listener: &'static str,
}

impl<H> SmtpConnection<H> {
    pub fn new(session: tern_smtp::Session, handler: H, on_tls: fn(&mut H)) -> Self {
        Self {
            session,
            handler,
            on_tls,
            listener: "smtp",
        }
    }

    /// The `listener` label of this connection's metrics ("smtp" unless set).
    pub fn listener(mut self, name: &'static str) -> Self {
        self.listener = name;
        self
    }
}

impl<H: tern_smtp::Handler + Send> LineProtocol for SmtpConnection<H> {
    fn greeting(&self) -> Vec<u8> {
        let g = self.session.greeting();
        count_smtp_replies(self.listener, &g);
        g
    }
    async fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Action) {
        // One span per read: normally one command (or a pipelined group), else a stretch of
        // message data. The verbs are known only once the session has parsed the input.
        let span = tracing::info_span!("smtp.command", smtp.verb = tracing::field::Empty);
        let out = self
            .session
            .feed(input, &mut self.handler)
            .instrument(span.clone())
            .await;
        let verbs = self.session.take_verbs();
        span.record("smtp.verb", verb_field(&verbs));
        for verb in verbs {
            metrics::counter!(names::SMTP_COMMANDS, "listener" => self.listener, "verb" => verb)
                .increment(1);
        }
        count_smtp_replies(self.listener, &out.reply);
        (out.reply, smtp_action(out.action))
    }
    fn tls_started(&mut self) {
        self.session.tls_started();
        (self.on_tls)(&mut self.handler);
    }
    fn timeout_reply(&self) -> Vec<u8> {
        let r = self.session.timeout_reply();
        count_smtp_replies(self.listener, &r);
        r
    }
    fn shutdown_reply(&self) -> Vec<u8> {
        let r = self.session.shutdown_reply();
        count_smtp_replies(self.listener, &r);
        r
    }
}

/// How long an IMAP client may stay in IDLE without a word (RFC 2177: clients re-issue IDLE
/// at least every 29 minutes).
pub const IMAP_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The agent side of IMAP IDLE: what the backend waits on while a client idles.
pub trait IdleWatch: Send {
    /// Completes when `mailbox` (the selected one, as named to the backend; `None` in the
    /// authenticated state) may have changed, or when it is time for a fallback poll. Must be
    /// cancel-safe and must not hold a database connection while it waits.
    fn changed(&mut self, mailbox: Option<&str>) -> impl Future<Output = ()> + Send;
}

/// An IMAP session over the agent's mailbox backend.
pub struct ImapConnection<B: tern_imap::Backend>(pub tern_imap::Session<B>);

impl<B: tern_imap::Backend + IdleWatch> LineProtocol for ImapConnection<B> {
    fn greeting(&self) -> Vec<u8> {
        self.0.greeting()
    }
    async fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Action) {
        let started = Instant::now();
        let span = tracing::info_span!("imap.command", imap.verb = tracing::field::Empty);
        let out = self.0.feed(input).instrument(span.clone()).await;
        // Commands pipelined in one read share its time; one command per read is the norm.
        let verbs = self.0.take_verbs();
        span.record("imap.verb", verb_field(&verbs));
        let each = started.elapsed().as_secs_f64() / verbs.len().max(1) as f64;
        for verb in verbs {
            metrics::counter!(names::IMAP_COMMANDS, "verb" => verb).increment(1);
            metrics::histogram!(names::IMAP_COMMAND_SECONDS, "verb" => verb).record(each);
        }
        let action = match out.action {
            tern_imap::Action::Continue => Action::Continue,
            tern_imap::Action::StartTls => Action::StartTls,
            tern_imap::Action::Compress => Action::Compress,
            tern_imap::Action::Close => Action::Close,
        };
        (out.bytes, action)
    }
    fn tls_started(&mut self) {
        self.0.tls_started();
    }
    fn compress_started(&mut self) -> Vec<u8> {
        self.0.compression_started()
    }
    fn timeout_reply(&self) -> Vec<u8> {
        self.0.timeout_reply()
    }
    fn shutdown_reply(&self) -> Vec<u8> {
        self.0.shutdown_reply()
    }
    fn idle_timeout(&self) -> Option<Duration> {
        self.0.is_idling().then_some(IMAP_IDLE_TIMEOUT)
    }
    async fn wake(&mut self) {
        if !self.0.is_idling() {
            return std::future::pending().await;
        }
        let (mailbox, backend) = self.0.selected_mailbox_and_backend();
        let mailbox = mailbox.map(str::to_string);
        backend.changed(mailbox.as_deref()).await;
    }
    async fn poll(&mut self) -> Vec<u8> {
        self.0.poll_changes().await
    }
    fn early_output(&mut self) -> Option<futures::channel::mpsc::Receiver<Vec<u8>>> {
        Some(self.0.stream_output())
    }
}

/// A POP3 session over the agent's maildrop backend.
pub struct Pop3Connection<B: tern_pop3::Backend>(pub tern_pop3::Session<B>);

impl<B: tern_pop3::Backend> LineProtocol for Pop3Connection<B> {
    fn greeting(&self) -> Vec<u8> {
        self.0.greeting()
    }
    async fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Action) {
        let out = self.0.feed(input).await;
        let action = match out.action {
            tern_pop3::Action::Continue => Action::Continue,
            tern_pop3::Action::StartTls => Action::StartTls,
            tern_pop3::Action::Close => Action::Close,
        };
        (out.bytes, action)
    }
    fn tls_started(&mut self) {
        self.0.tls_started();
    }
    fn timeout_reply(&self) -> Vec<u8> {
        self.0.timeout_reply()
    }
    fn shutdown_reply(&self) -> Vec<u8> {
        // RFC 1939 has no unsolicited goodbye; a final -ERR line is what clients log.
        b"-ERR [SYS/TEMP] server shutting down\r\n".to_vec()
    }
}

/// A ManageSieve session over the agent's script backend. RFC 5804 §2.2: after STARTTLS
/// the server speaks first, re-issuing its capabilities.
pub struct ManageSieveConnection<B: tern_managesieve::Backend> {
    session: tern_managesieve::Session<B>,
    after_tls: Vec<u8>,
}

impl<B: tern_managesieve::Backend> ManageSieveConnection<B> {
    pub fn new(session: tern_managesieve::Session<B>) -> Self {
        Self {
            session,
            after_tls: Vec::new(),
        }
    }
}

impl<B: tern_managesieve::Backend> LineProtocol for ManageSieveConnection<B> {
    fn greeting(&self) -> Vec<u8> {
        self.session.greeting()
    }
    async fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Action) {
        let span = tracing::info_span!(
            "managesieve.command",
            managesieve.verb = tracing::field::Empty
        );
        let out = self.session.feed(input).instrument(span.clone()).await;
        let verbs = self.session.take_verbs();
        span.record("managesieve.verb", verb_field(&verbs));
        for verb in verbs {
            metrics::counter!(names::MANAGESIEVE_COMMANDS, "verb" => verb).increment(1);
        }
        let action = match out.action {
            tern_managesieve::Action::Continue => Action::Continue,
            tern_managesieve::Action::StartTls => Action::StartTls,
            tern_managesieve::Action::Close => Action::Close,
        };
        (out.bytes, action)
    }
    fn tls_started(&mut self) {
        self.after_tls = self.session.tls_started();
    }
    fn after_tls(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.after_tls)
    }
    fn timeout_reply(&self) -> Vec<u8> {
        self.session.timeout_reply()
    }
    fn shutdown_reply(&self) -> Vec<u8> {
        self.session.shutdown_reply()
    }
}

/// The `*.verb` field of a command span: the verbs handled in one read, or `data` when the read
/// carried only message or literal data.
fn verb_field(verbs: &[&'static str]) -> String {
    if verbs.is_empty() {
        "data".to_string()
    } else {
        verbs.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_reply_lines_are_counted() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            count_smtp_replies(
                "smtp",
                b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 go ahead\r\n",
            );
            count_smtp_replies("smtp", b"550 5.1.1 no such user\r\n");
        });
        let mut counts: Vec<(String, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let code = key
                    .key()
                    .labels()
                    .find(|l| l.key() == "code")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                let n = match value {
                    metrics_util::debugging::DebugValue::Counter(n) => n,
                    other => panic!("not a counter: {other:?}"),
                };
                (code, n)
            })
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [("250".into(), 1), ("354".into(), 1), ("550".into(), 1)]
        );
    }
}
