//! The outbound SMTP transport: one TCP connection to a remote mail server, with STARTTLS per
//! policy, optional AUTH for a smarthost, and mail transactions with PIPELINING (RFC 5321,
//! RFC 2920, RFC 3207, RFC 4954).
//!
//! The protocol details (reply parsing, capabilities, command parameters, dot-stuffing and
//! the checks that refuse a message before sending) are `tern_smtp::client`; this module adds
//! sockets, TLS and the timeouts of RFC 5321 §4.5.3.2. It does not choose the server (that is
//! MX routing), retry, or write bounces: it reports per-recipient outcomes and whole-transaction
//! failures, temporary or permanent, and leaves those decisions to the queue runner. Every
//! failure while setting up a connection is temporary, so that another MX (or a later retry)
//! gets its chance. BDAT (CHUNKING) is not used: DATA works with every server.

mod tls;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tern_smtp::client::{Capabilities, MailParams, data_payload, parse_reply, rcpt_command};
use tern_smtp::{RcptParams, Reply, Ret};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::ServerName;

pub use tls::{opportunistic_connector, verifying_connector};

/// When to use STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Use STARTTLS when offered, accept any certificate, and fall back to plaintext if the
    /// handshake fails (RFC 7435 opportunistic security).
    Opportunistic,
    /// STARTTLS must succeed with a verified certificate, or the attempt fails (temporarily).
    Required,
    /// Never use TLS.
    Disabled,
}

/// The timeouts of RFC 5321 §4.5.3.2. Commands it does not name (EHLO, STARTTLS and the TLS
/// handshake, AUTH, RSET, QUIT) use `mail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// Waiting for the 220 greeting (§4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// The reply to MAIL (§4.5.3.2.2: 5 minutes), and to the unnamed commands.
    pub mail: Duration,
    /// The reply to each RCPT (§4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The 354 reply to DATA (§4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each write of the message content (§4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The reply after the final dot (§4.5.3.2.6: 10 minutes).
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(5 * 60),
            mail: Duration::from_secs(5 * 60),
            rcpt: Duration::from_secs(5 * 60),
            data_init: Duration::from_secs(2 * 60),
            data_block: Duration::from_secs(3 * 60),
            data_end: Duration::from_secs(10 * 60),
        }
    }
}

/// How this MTA speaks to other servers.
#[derive(Clone)]
pub struct ClientSettings {
    /// Our hostname, sent in EHLO/HELO.
    pub helo: String,
    /// When to use STARTTLS.
    pub tls: TlsPolicy,
    /// Verifies certificates; used with [`TlsPolicy::Required`].
    pub verify: TlsConnector,
    /// Accepts any certificate; used with [`TlsPolicy::Opportunistic`]
    /// (see [`opportunistic_connector`]).
    pub opportunistic: TlsConnector,
    /// Username and password for AUTH PLAIN at a smarthost; only ever sent inside TLS.
    pub auth: Option<(String, String)>,
    /// The RFC 5321 timeouts.
    pub timeouts: Timeouts,
}

impl std::fmt::Debug for ClientSettings {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("auth", &self.auth.as_ref().map(|(user, _)| user))
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// The settings of a transfer agent: the opportunistic policy, no AUTH and the RFC timeouts;
/// certificates are verified (for [`TlsPolicy::Required`]) against `ca_file` if given, else
/// against the Mozilla roots of `webpki-roots`.
pub fn client_settings(helo: String, ca_file: Option<&Path>) -> anyhow::Result<ClientSettings> {
    let verify = match ca_file {
        Some(path) => tern_runtime::tls::connector_trusting(path)?,
        None => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            verifying_connector(roots).context("TLS client configuration")?
        }
    };
    Ok(ClientSettings {
        helo,
        tls: TlsPolicy::Opportunistic,
        verify,
        opportunistic: opportunistic_connector().context("TLS client configuration")?,
        auth: None,
        timeouts: Timeouts::default(),
    })
}

/// One message's envelope as it goes out.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The reverse-path, `""` for the null sender (bounces).
    pub mail_from: &'a str,
    /// The recipients for this server, with their DSN parameters.
    pub rcpts: Vec<(&'a str, RcptParams)>,
    /// `RET=`, passed on when the server offers DSN.
    pub ret: Option<Ret>,
    /// `ENVID=`, passed on when the server offers DSN.
    pub envid: Option<&'a str>,
    /// The message must only travel over TLS to servers that offer REQUIRETLS (RFC 8689).
    pub requiretls: bool,
}

/// What the server said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// Accepted, and (when the transaction succeeded) the message was delivered to it; the
    /// reply is the one to RCPT.
    Accepted(Reply),
    /// Refused at RCPT: 4xx is temporary, 5xx permanent.
    Rejected(Reply),
}

/// Why a whole transaction (or a connection) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// Try again later, perhaps at another MX: a 4xx reply, an I/O error or a timeout.
    Temporary(String),
    /// The server (or our pre-send checks) refused the message for good.
    Permanent(Reply),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Temporary(reason) => f.write_str(reason),
            TransferError::Permanent(reply) => f.write_str(&describe(reply)),
        }
    }
}

impl std::error::Error for TransferError {}

/// A reply on one line, for logs and error descriptions.
fn describe(reply: &Reply) -> String {
    reply.to_string().replace("\r\n", " / ")
}

/// The error for a negative reply: 5xx permanent, anything else temporary.
fn refused(reply: Reply) -> TransferError {
    if reply.is_permanent() {
        TransferError::Permanent(reply)
    } else {
        TransferError::Temporary(describe(&reply))
    }
}

/// Octets read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Octets of message content written per timed write (RFC 5321 §4.5.3.2.5 times each block).
const WRITE_CHUNK: usize = 64 * 1024;

/// The socket, before or after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The plain socket was handed to a TLS handshake that failed; nothing is left.
    Closed,
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// How far setting up a connection got.
enum Setup {
    Ready(Box<Connection>),
    /// The STARTTLS handshake failed; under the opportunistic policy we reconnect without TLS.
    HandshakeFailed(String),
}

/// An open SMTP connection, greeted and (per policy) in TLS, ready for transactions.
pub struct Connection {
    stream: Stream,
    /// Octets read but not yet parsed; bounded by one reply plus one read.
    buffer: Vec<u8>,
    capabilities: Capabilities,
    tls: bool,
    peer: String,
    reusable: bool,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// TCP connect to `addr`, greeting, EHLO (HELO fallback on 500/502), STARTTLS per policy
    /// (opportunistic: tried when offered, and if the handshake fails we reconnect once
    /// without TLS; required: must succeed with a verified certificate for `server_name`),
    /// EHLO again inside TLS, and AUTH if configured. Every failure here is temporary.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        settings: &ClientSettings,
    ) -> Result<Connection, TransferError> {
        match Connection::establish(addr, server_name, settings, true).await? {
            Setup::Ready(connection) => Ok(*connection),
            Setup::HandshakeFailed(reason) if settings.tls == TlsPolicy::Opportunistic => {
                tracing::info!(
                    peer = %addr,
                    reason = %reason,
                    "opportunistic TLS failed, retrying in plaintext"
                );
                match Connection::establish(addr, server_name, settings, false).await? {
                    Setup::Ready(connection) => Ok(*connection),
                    Setup::HandshakeFailed(reason) => Err(TransferError::Temporary(reason)),
                }
            }
            Setup::HandshakeFailed(reason) => Err(TransferError::Temporary(reason)),
        }
    }

    async fn establish(
        addr: SocketAddr,
        server_name: &str,
        settings: &ClientSettings,
        try_tls: bool,
    ) -> Result<Setup, TransferError> {
        let timeouts = settings.timeouts;
        let tcp = match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => {
                return Err(TransferError::Temporary(format!(
                    "connect to {addr}: {error}"
                )));
            }
            Err(_) => {
                return Err(TransferError::Temporary(format!(
                    "connect to {addr}: timed out"
                )));
            }
        };
        let mut connection = Connection {
            stream: Stream::Plain(tcp),
            buffer: Vec::new(),
            capabilities: Capabilities::default(),
            tls: false,
            peer: format!("{server_name} [{}]", addr.ip()),
            reusable: true,
            timeouts,
        };
        let greeting = connection
            .read_reply(timeouts.greeting, "waiting for the greeting")
            .await?;
        if greeting.wire_code() != 220 {
            return Err(TransferError::Temporary(format!(
                "greeting: {}",
                describe(&greeting)
            )));
        }
        connection.hello(&settings.helo).await?;

        let use_tls = match settings.tls {
            TlsPolicy::Disabled => false,
            TlsPolicy::Opportunistic => try_tls && connection.capabilities.starttls,
            TlsPolicy::Required if !connection.capabilities.starttls => {
                return Err(TransferError::Temporary(format!(
                    "{} does not offer STARTTLS, which is required",
                    connection.peer
                )));
            }
            TlsPolicy::Required => true,
        };
        if use_tls {
            let reply = connection.command(b"STARTTLS\r\n", "STARTTLS").await?;
            if reply.wire_code() != 220 {
                // RFC 3207 §4: the server may refuse STARTTLS; only the required policy cares.
                if settings.tls == TlsPolicy::Required {
                    return Err(TransferError::Temporary(format!(
                        "STARTTLS refused: {}",
                        describe(&reply)
                    )));
                }
            } else {
                let connector = match settings.tls {
                    TlsPolicy::Required => &settings.verify,
                    _ => &settings.opportunistic,
                };
                match connection.start_tls(connector, server_name, addr).await {
                    Ok(()) => connection.hello(&settings.helo).await?,
                    Err(reason) => return Ok(Setup::HandshakeFailed(reason)),
                }
            }
        }

        if let Some((user, password)) = &settings.auth {
            connection.authenticate(user, password).await?;
        }
        Ok(Setup::Ready(Box::new(connection)))
    }

    /// EHLO, or HELO when the server does not know EHLO (RFC 5321 §3.2).
    async fn hello(&mut self, helo: &str) -> Result<(), TransferError> {
        let ehlo = format!("EHLO {helo}\r\n");
        let reply = self.command(ehlo.as_bytes(), "EHLO").await?;
        if reply.wire_code() == 250 {
            self.capabilities = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if matches!(reply.wire_code(), 500 | 502) {
            let helo = format!("HELO {helo}\r\n");
            let reply = self.command(helo.as_bytes(), "HELO").await?;
            if reply.wire_code() == 250 {
                self.capabilities = Capabilities::default();
                return Ok(());
            }
            return Err(TransferError::Temporary(format!(
                "HELO refused: {}",
                describe(&reply)
            )));
        }
        Err(TransferError::Temporary(format!(
            "EHLO refused: {}",
            describe(&reply)
        )))
    }

    /// The TLS handshake after a 220 to STARTTLS; the error is a description for the log.
    async fn start_tls(
        &mut self,
        connector: &TlsConnector,
        server_name: &str,
        addr: SocketAddr,
    ) -> Result<(), String> {
        // RFC 3207 §4.2 and CVE-2011-0411: anything the server sent after its 220 arrived in
        // the clear and could have been injected, so it must not be read as a TLS reply.
        if !self.buffer.is_empty() {
            return Err("data after the STARTTLS reply".to_owned());
        }
        let name = ServerName::try_from(server_name.to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err("not a plain connection".to_owned());
        };
        // Until the handshake succeeds the connection is unusable.
        self.reusable = false;
        let handshake = connector.connect(name, tcp);
        match tokio::time::timeout(self.timeouts.mail, handshake).await {
            Ok(Ok(stream)) => {
                self.stream = Stream::Tls(Box::new(stream));
                self.tls = true;
                self.reusable = true;
                Ok(())
            }
            Ok(Err(error)) => Err(format!("TLS handshake with {}: {error}", self.peer)),
            Err(_) => Err(format!("TLS handshake with {}: timed out", self.peer)),
        }
    }

    /// AUTH PLAIN (RFC 4954, RFC 4616), only ever inside TLS.
    async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), TransferError> {
        if !self.tls {
            return Err(TransferError::Temporary(format!(
                "not sending credentials to {} outside TLS",
                self.peer
            )));
        }
        if !self.capabilities.auth.iter().any(|m| m == "PLAIN") {
            return Err(TransferError::Temporary(format!(
                "{} does not offer AUTH PLAIN",
                self.peer
            )));
        }
        let token = STANDARD.encode(format!("\0{user}\0{password}"));
        let command = format!("AUTH PLAIN {token}\r\n");
        let reply = self.command(command.as_bytes(), "AUTH").await?;
        if reply.wire_code() == 235 {
            Ok(())
        } else {
            Err(TransferError::Temporary(format!(
                "authentication refused: {}",
                describe(&reply)
            )))
        }
    }

    /// One transaction: MAIL, the RCPTs (pipelined when the server offers PIPELINING), DATA.
    /// Returns one outcome per recipient, in order; when every recipient is refused no DATA
    /// is sent. After a negative reply the transaction is reset with RSET so the connection
    /// can carry the next message.
    pub async fn send(
        &mut self,
        envelope: &Envelope<'_>,
        content: &[u8],
    ) -> Result<Vec<RcptOutcome>, TransferError> {
        if !self.reusable {
            return Err(TransferError::Temporary(format!(
                "connection to {} is no longer usable",
                self.peer
            )));
        }
        let recipients: Vec<&str> = envelope.rcpts.iter().map(|(to, _)| *to).collect();
        let params = MailParams::new(
            envelope.mail_from,
            &recipients,
            content,
            envelope.ret,
            envelope.envid,
            envelope.requiretls,
        );
        params
            .check(&self.capabilities, self.tls)
            .map_err(TransferError::Permanent)?;

        let mail = params.command(&self.capabilities);
        let rcpts: Vec<Vec<u8>> = envelope
            .rcpts
            .iter()
            .map(|(to, rcpt)| rcpt_command(to, rcpt, &self.capabilities))
            .collect();
        let (mail_reply, rcpt_replies) = if self.capabilities.pipelining {
            // RFC 2920 §3.1: MAIL and RCPT may be sent in one group; DATA is kept apart so
            // that nothing is sent when every recipient is refused.
            let mut batch = mail;
            for rcpt in &rcpts {
                batch.extend_from_slice(rcpt);
            }
            self.write(&batch, self.timeouts.mail, "sending MAIL")
                .await?;
            let mail_reply = self.read_reply(self.timeouts.mail, "after MAIL").await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                replies.push(self.read_reply(self.timeouts.rcpt, "after RCPT").await?);
            }
            (mail_reply, replies)
        } else {
            let mail_reply = self.exchange(&mail, self.timeouts.mail, "MAIL").await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            if mail_reply.is_positive() {
                for rcpt in &rcpts {
                    replies.push(self.exchange(rcpt, self.timeouts.rcpt, "RCPT").await?);
                }
            }
            (mail_reply, replies)
        };
        if let Some(closing) = std::iter::once(&mail_reply)
            .chain(&rcpt_replies)
            .find(|reply| reply.wire_code() == 421)
        {
            // RFC 5321 §3.8: 421 means the server is closing the connection.
            self.reusable = false;
            return Err(TransferError::Temporary(describe(closing)));
        }
        if !mail_reply.is_positive() {
            self.reset().await;
            return Err(refused(mail_reply));
        }
        let outcomes: Vec<RcptOutcome> = rcpt_replies
            .into_iter()
            .map(|reply| {
                if reply.is_positive() {
                    RcptOutcome::Accepted(reply)
                } else {
                    RcptOutcome::Rejected(reply)
                }
            })
            .collect();
        if !outcomes
            .iter()
            .any(|outcome| matches!(outcome, RcptOutcome::Accepted(_)))
        {
            self.reset().await;
            return Ok(outcomes);
        }

        let reply = self
            .exchange(b"DATA\r\n", self.timeouts.data_init, "DATA")
            .await?;
        if reply.wire_code() != 354 {
            return Err(self.failed(reply).await);
        }
        let payload = data_payload(content);
        for block in payload.chunks(WRITE_CHUNK) {
            self.write(block, self.timeouts.data_block, "during DATA")
                .await?;
        }
        let reply = self
            .read_reply(self.timeouts.data_end, "after the end of DATA")
            .await?;
        if reply.wire_code() / 100 != 2 {
            return Err(self.failed(reply).await);
        }
        Ok(outcomes)
    }

    /// The error for a negative reply mid-transaction, after resetting the transaction (or
    /// marking the connection unusable on 421).
    async fn failed(&mut self, reply: Reply) -> TransferError {
        if reply.wire_code() == 421 {
            self.reusable = false;
            return TransferError::Temporary(describe(&reply));
        }
        self.reset().await;
        if reply.wire_code() / 100 == 5 {
            TransferError::Permanent(reply)
        } else {
            TransferError::Temporary(describe(&reply))
        }
    }

    /// RSET after a failed transaction; if even that fails, the connection is not reused.
    async fn reset(&mut self) {
        match self.exchange(b"RSET\r\n", self.timeouts.mail, "RSET").await {
            Ok(reply) if reply.wire_code() == 250 => {}
            _ => self.reusable = false,
        }
    }

    /// Whether another transaction may use this connection (false after an I/O error, a
    /// timeout or a 421).
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Whether the connection is in TLS.
    pub fn tls_active(&self) -> bool {
        self.tls
    }

    /// What the server offered in its (last) EHLO reply.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// `name [ip]`, for logs and the Remote-MTA of a bounce.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// QUIT and close; errors no longer matter here.
    pub async fn quit(mut self) {
        if self.reusable {
            let _ = self.exchange(b"QUIT\r\n", self.timeouts.mail, "QUIT").await;
        }
        let _ = tokio::time::timeout(self.timeouts.mail, self.stream.shutdown()).await;
    }

    /// Sends one command and reads its reply.
    async fn command(&mut self, line: &[u8], verb: &str) -> Result<Reply, TransferError> {
        self.exchange(line, self.timeouts.mail, verb).await
    }

    async fn exchange(
        &mut self,
        line: &[u8],
        limit: Duration,
        verb: &str,
    ) -> Result<Reply, TransferError> {
        self.write(line, limit, &format!("sending {verb}")).await?;
        self.read_reply(limit, &format!("after {verb}")).await
    }

    async fn write(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        stage: &str,
    ) -> Result<(), TransferError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        let result = tokio::time::timeout(limit, write).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.broken(format!("connection lost {stage}: {error}"))),
            Err(_) => Err(self.broken(format!("timeout {stage}"))),
        }
    }

    /// Reads one reply, at most `limit` after asking.
    async fn read_reply(&mut self, limit: Duration, stage: &str) -> Result<Reply, TransferError> {
        let enhanced = self.capabilities.enhanced_status_codes;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match parse_reply(&self.buffer, enhanced) {
                Ok(Some((reply, used))) => {
                    self.buffer.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(self.broken(format!("{stage}: {error} from {}", self.peer)));
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match read {
                Ok(Ok(0)) => {
                    return Err(self.broken(format!("connection lost {stage}")));
                }
                Ok(Ok(count)) => self
                    .buffer
                    .extend_from_slice(chunk.get(..count).unwrap_or_default()),
                Ok(Err(error)) => {
                    return Err(self.broken(format!("connection lost {stage}: {error}")));
                }
                Err(_) => return Err(self.broken(format!("timeout {stage}"))),
            }
        }
    }

    /// Marks the connection unusable and describes why.
    fn broken(&mut self, reason: String) -> TransferError {
        self.reusable = false;
        TransferError::Temporary(reason)
    }
}
