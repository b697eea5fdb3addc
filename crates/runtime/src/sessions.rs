//! Adapters from the I/O-free protocol sessions (`tern-smtp`, `tern-imap`, `tern-pop3`) to the
//! `LineProtocol` the socket driver runs. A few lines each: the sessions already decide every
//! byte; this only maps their outputs to the driver's actions.

use crate::net::{Action, LineProtocol};

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
}

impl<H> SmtpConnection<H> {
    pub fn new(session: tern_smtp::Session, handler: H, on_tls: fn(&mut H)) -> Self {
        Self {
            session,
            handler,
            on_tls,
        }
    }
}

impl<H: tern_smtp::Handler + Send> LineProtocol for SmtpConnection<H> {
    fn greeting(&self) -> Vec<u8> {
        self.session.greeting()
    }
    async fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Action) {
        let out = self.session.feed(input, &mut self.handler).await;
        (out.reply, smtp_action(out.action))
    }
    fn tls_started(&mut self) {
        self.session.tls_started();
        (self.on_tls)(&mut self.handler);
    }
    fn timeout_reply(&self) -> Vec<u8> {
        self.session.timeout_reply()
    }
    fn shutdown_reply(&self) -> Vec<u8> {
        self.session.shutdown_reply()
    }
}

/// An IMAP session over the agent's mailbox backend.
pub struct ImapConnection<B: tern_imap::Backend>(pub tern_imap::Session<B>);

impl<B: tern_imap::Backend> LineProtocol for ImapConnection<B> {
    fn greeting(&self) -> Vec<u8> {
        self.0.greeting()
    }
    async fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Action) {
        let out = self.0.feed(input).await;
        let action = match out.action {
            tern_imap::Action::Continue => Action::Continue,
            tern_imap::Action::StartTls => Action::StartTls,
            tern_imap::Action::Close => Action::Close,
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
        self.0.shutdown_reply()
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
