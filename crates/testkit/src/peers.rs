//! Scripted peer SMTP servers for the MTA's delivery tests: each [`Peer`] listens on a loopback
//! address, speaks enough RFC 5321 for a sending MTA (EHLO/HELO, STARTTLS, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT, PIPELINING), records what it accepted, and misbehaves on purpose according
//! to its [`Behaviour`] (temporary failures, rejections, a dropped connection inside DATA).
//!
//! The MTA connects to port 25-equivalent `P` on whatever address DNS returns, so tests bind
//! several peers on 127.0.0.2:P, 127.0.0.3:P, … with one shared port: [`bind_same_port`].
//!
//! This is a test tool, deliberately not a production server: no AUTH, no BDAT/CHUNKING, no
//! SMTPUTF8 address checks, no relay policy, and limits only large enough to keep a runaway
//! client from exhausting memory. It never panics on what a client sends; it panics only on
//! set-up failures and in [`Peer::wait_for`], where a panic is the test failure.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How a peer answers transactions. Every variant answers the connection, EHLO and MAIL
/// normally; they differ at RCPT and at the end of DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Records every message and answers 250.
    Accept,
    /// Answers `451 4.3.0` at the end of DATA for the first `failures` transactions that reach
    /// it (counted across all connections), then accepts like [`Behaviour::Accept`].
    TempFailThenAccept { failures: u32 },
    /// Answers `550 5.1.1` to every RCPT.
    Reject,
    /// Accepts every RCPT, then answers `554 5.6.0` after DATA.
    RejectData,
    /// Answers 354 to DATA, reads part of the data, then closes the connection without a reply.
    DropDuringData,
    /// Answers `550 5.1.1` for these addresses only (compared without case) and accepts the rest.
    RejectRcpt(Vec<String>),
}

/// What a peer offers and how it behaves.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub behaviour: Behaviour,
    /// Offer STARTTLS with a self-signed certificate (see [`Peer::ca_cert`]).
    pub starttls: bool,
    /// Offer PIPELINING (RFC 2920). Without it the peer still answers pipelined commands in
    /// order, but counts them in [`Peer::pipelining_violations`].
    pub pipelining: bool,
    /// Offer 8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531, which requires 8BITMIME); without them
    /// `BODY=8BITMIME` and `SMTPUTF8` on MAIL are refused with 555 5.5.4.
    pub eight_bit: bool,
    /// Offer SIZE (RFC 1870) with this limit and enforce it at MAIL and at the end of DATA.
    pub size: Option<u64>,
    /// Name in the greeting and the EHLO reply.
    pub hostname: String,
}

impl PeerConfig {
    /// A plain peer with the given behaviour that offers PIPELINING and 8BITMIME and no size
    /// limit: the common case, spelled out so tests only change what they test.
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            starttls: false,
            pipelining: true,
            eight_bit: true,
            size: None,
            hostname: "peer.test".to_string(),
        }
    }
}

/// One message as the peer accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The reverse path without angle brackets; empty for the null sender.
    pub mail_from: String,
    /// The accepted forward paths without angle brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The message after dot-unstuffing, CRLF line endings, without the final `.` line.
    pub data: Vec<u8>,
    /// Whether the transaction ran inside STARTTLS.
    pub tls: bool,
    /// MAIL parameters as sent, e.g. `SIZE=1234`, `BODY=8BITMIME`.
    pub mail_params: Vec<String>,
    /// RCPT parameters of each accepted recipient, parallel to `rcpt_to`.
    pub rcpt_params: Vec<Vec<String>>,
    /// The EHLO or HELO argument of the session.
    pub helo: String,
}

/// A running peer; it stops accepting and closes its sessions when dropped.
pub struct Peer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    // Kept so the certificate files live as long as the peer.
    tls_dir: Option<tempfile::TempDir>,
}

/// State every session of one peer shares.
struct Shared {
    config: PeerConfig,
    acceptor: Option<TlsAcceptor>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    connections: AtomicUsize,
    transactions: AtomicUsize,
    pipelining_violations: AtomicUsize,
    // Remaining temporary failures of `TempFailThenAccept`, shared by all connections.
    temp_failures_left: Mutex<u32>,
}

/// A port that was free on `ip` a moment ago (bind to port 0, read it back, release it). Another
/// process may take it before the caller binds it; [`bind_same_port`] retries for that reason.
pub fn free_port_on(ip: IpAddr) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("bind {ip}:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local address of {ip}:0: {e}"))
        .port()
}

/// Binds one listener on every address in `ips`, all on the same port, and returns that port
/// with the listeners in the order of `ips`. A port free on the first address may be taken on
/// another, so any failed bind starts over with a new port.
pub async fn bind_same_port(ips: &[IpAddr]) -> (u16, Vec<TcpListener>) {
    assert!(!ips.is_empty(), "bind_same_port needs at least one address");
    const ATTEMPTS: usize = 50;
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        let port = free_port_on(ips[0]);
        let mut listeners = Vec::with_capacity(ips.len());
        for ip in ips {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    last_error = format!("{ip}:{port}: {e}");
                    break;
                }
            }
        }
        if listeners.len() == ips.len() {
            return (port, listeners);
        }
    }
    panic!("could not bind {ips:?} on one shared port in {ATTEMPTS} attempts (last: {last_error})");
}

impl Peer {
    /// Starts serving `listener` in the background. With `starttls` a self-signed certificate
    /// for the host name, `localhost` and the listener's IP address is made in a temporary
    /// directory first.
    pub async fn start(listener: TcpListener, config: PeerConfig) -> Peer {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("peer listener address: {e}"));
        let (acceptor, tls_dir) = if config.starttls {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("peer TLS tempdir: {e}"));
            let names = vec![
                config.hostname.clone(),
                "localhost".to_string(),
                addr.ip().to_string(),
            ];
            let files = tern_runtime::tls::ensure_self_signed(dir.path(), &names)
                .unwrap_or_else(|e| panic!("peer self-signed certificate: {e:#}"));
            let acceptor = tern_runtime::tls::acceptor(&files)
                .unwrap_or_else(|e| panic!("peer TLS acceptor: {e:#}"));
            (Some(acceptor), Some(dir))
        } else {
            (None, None)
        };
        let failures = match config.behaviour {
            Behaviour::TempFailThenAccept { failures } => failures,
            _ => 0,
        };
        let shared = Arc::new(Shared {
            config,
            acceptor,
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            connections: AtomicUsize::new(0),
            transactions: AtomicUsize::new(0),
            pipelining_violations: AtomicUsize::new(0),
            temp_failures_left: Mutex::new(failures),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Peer {
            addr,
            shared,
            stop,
            tls_dir,
        }
    }

    /// Every message accepted so far, in the order the peer answered 250.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Waits until at least `n` messages were accepted and returns them all. Panics after
    /// `timeout` with what the peer saw, so a failing test says where delivery stopped.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so an arrival between the check and the wait
            // is not missed.
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "peer {} ({:?}): waited {timeout:?} for {n} message(s), received {} \
                     (connections: {}, transactions attempted: {})",
                    self.addr,
                    self.shared.config.behaviour,
                    self.received().len(),
                    self.connections(),
                    self.transactions_attempted()
                );
            }
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// MAIL commands the peer accepted, i.e. transactions begun, whatever became of them.
    pub fn transactions_attempted(&self) -> usize {
        self.shared.transactions.load(Ordering::SeqCst)
    }

    /// Commands that arrived before the reply to the previous one on a peer that does not
    /// offer PIPELINING (RFC 2920 §3.1: a client may pipeline only when the server offers it).
    pub fn pipelining_violations(&self) -> usize {
        self.shared.pipelining_violations.load(Ordering::SeqCst)
    }

    /// The self-signed certificate a client should trust, when the peer offers STARTTLS.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls_dir.as_ref().map(|d| d.path().join("cert.pem"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread may poison the lock; the data is still what was recorded.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else {
            // Accept errors (e.g. too many open files) are transient; do not spin on them.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(tcp, &shared) => {}
            }
        });
    }
}

/// A byte stream that may be plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

// RFC 5321 §4.5.3.1.4 allows 512 octets per command line; a test peer tolerates more, but not
// without bound.
const MAX_LINE: usize = 4096;
// Messages beyond this are refused (552) even without SIZE, so a runaway client cannot fill
// memory.
const MAX_MESSAGE: u64 = 64 * 1024 * 1024;
const MAX_RCPTS: usize = 1000;
const MAX_ERRORS: usize = 20;
const IDLE: Duration = Duration::from_secs(120);

/// One connection: its buffers and the SMTP state between commands.
struct Session<'a> {
    shared: &'a Shared,
    io: Box<dyn Io>,
    input: Vec<u8>,
    output: Vec<u8>,
    tls: bool,
    helo: Option<String>,
    txn: Option<Transaction>,
    errors: usize,
}

struct Transaction {
    mail_from: String,
    mail_params: Vec<String>,
    rcpt_to: Vec<String>,
    rcpt_params: Vec<Vec<String>>,
}

/// What a command asks the connection loop to do after its reply is queued.
enum Next {
    Continue,
    Close,
    StartTls,
    Data,
}

async fn serve(tcp: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut s = Session {
        shared,
        io: Box::new(tcp),
        input: Vec::new(),
        output: Vec::new(),
        tls: false,
        helo: None,
        txn: None,
        errors: 0,
    };
    s.reply(&format!(
        "220 {} ESMTP tern-testkit peer",
        shared.config.hostname
    ));
    loop {
        let Some(line) = s.next_line().await? else {
            return Ok(());
        };
        if !shared.config.pipelining && !s.input.is_empty() {
            shared.pipelining_violations.fetch_add(1, Ordering::SeqCst);
        }
        match s.command(&line) {
            Next::Continue => {}
            Next::Close => {
                s.flush().await?;
                return s.io.shutdown().await;
            }
            Next::StartTls => {
                s.flush().await?;
                // RFC 3207 §4.2 and the STARTTLS injection attacks: anything the client sent
                // after STARTTLS in the clear must not be read as commands inside TLS.
                s.input.clear();
                let Some(acceptor) = shared.acceptor.clone() else {
                    return Ok(());
                };
                let plain = std::mem::replace(&mut s.io, Box::new(tokio::io::duplex(1).0));
                s.io = Box::new(acceptor.accept(plain).await?);
                s.tls = true;
                // RFC 3207 §4.2: the session starts over; the client must EHLO again.
                s.helo = None;
                s.txn = None;
            }
            Next::Data => {
                s.flush().await?;
                if !s.data().await? {
                    return Ok(());
                }
            }
        }
        if s.errors >= MAX_ERRORS {
            s.reply("421 4.7.0 too many errors");
            s.flush().await?;
            return Ok(());
        }
    }
}

impl Session<'_> {
    fn reply(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn error(&mut self, line: &str) {
        self.errors += 1;
        self.reply(line);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.io.write_all(&self.output).await?;
            self.io.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Reads more input into the buffer; `false` at end of stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = match tokio::time::timeout(IDLE, self.io.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(false),
        };
        self.input.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next command line without its line ending. Replies are held back while complete
    /// lines remain in the buffer and written when the buffer runs dry, which is how RFC 2920
    /// §3.2 lets a server answer a pipelined group in one write.
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.input.drain(..=end).collect();
                let mut line = &raw[..raw.len() - 1];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                return Ok(Some(String::from_utf8_lossy(line).into_owned()));
            }
            if self.input.len() > MAX_LINE {
                self.reply("500 5.5.6 line too long");
                self.flush().await?;
                return Ok(None);
            }
            self.flush().await?;
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    fn command(&mut self, line: &str) -> Next {
        let (verb, args) = match line.find(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if args.is_empty() => self.error("501 5.5.4 a domain is required"),
            "EHLO" => {
                self.helo = Some(args.to_string());
                self.txn = None;
                let config = &self.shared.config;
                let mut lines = vec![format!("{} greets {args}", config.hostname)];
                if config.pipelining {
                    lines.push("PIPELINING".into());
                }
                if let Some(size) = config.size {
                    lines.push(format!("SIZE {size}"));
                }
                if config.eight_bit {
                    lines.push("8BITMIME".into());
                    lines.push("SMTPUTF8".into());
                }
                if config.starttls && !self.tls {
                    lines.push("STARTTLS".into());
                }
                lines.push("DSN".into());
                lines.push("ENHANCEDSTATUSCODES".into());
                let last = lines.len() - 1;
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    self.reply(&format!("250{sep}{l}"));
                }
            }
            "HELO" => {
                self.helo = Some(args.to_string());
                self.txn = None;
                let greeting = format!("250 {}", self.shared.config.hostname);
                self.reply(&greeting);
            }
            "STARTTLS" => {
                if !args.is_empty() {
                    self.error("501 5.5.4 no parameters allowed");
                } else if self.tls || self.shared.acceptor.is_none() {
                    self.error("502 5.5.1 STARTTLS not offered");
                } else {
                    self.reply("220 2.0.0 ready to start TLS");
                    return Next::StartTls;
                }
            }
            "MAIL" => self.mail(args),
            "RCPT" => self.rcpt(args),
            "DATA" => {
                if !args.is_empty() {
                    self.error("501 5.5.4 no parameters allowed");
                } else {
                    match &self.txn {
                        None => self.error("503 5.5.1 MAIL first"),
                        // RFC 2920 §3.1: a pipelined DATA after failed RCPTs must be refused.
                        Some(t) if t.rcpt_to.is_empty() => {
                            self.error("554 5.5.1 no valid recipients")
                        }
                        Some(_) => {
                            self.reply("354 end data with <CR><LF>.<CR><LF>");
                            return Next::Data;
                        }
                    }
                }
            }
            "RSET" => {
                self.txn = None;
                self.reply("250 2.0.0 reset");
            }
            "NOOP" => self.reply("250 2.0.0 ok"),
            "VRFY" => self.reply("252 2.5.0 cannot verify"),
            "QUIT" => {
                self.reply("221 2.0.0 bye");
                return Next::Close;
            }
            _ => self.error("500 5.5.2 command not recognised"),
        }
        Next::Continue
    }

    fn mail(&mut self, args: &str) {
        if self.helo.is_none() {
            return self.error("503 5.5.1 EHLO first");
        }
        if self.txn.is_some() {
            return self.error("503 5.5.1 nested MAIL");
        }
        let Some((path, params)) = parse_path(args, "FROM:") else {
            return self.error("501 5.5.4 syntax: MAIL FROM:<address>");
        };
        let config = &self.shared.config;
        for p in &params {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
                None => (p.to_ascii_uppercase(), None),
            };
            let ok = match (key.as_str(), value) {
                ("SIZE", Some(v)) if config.size.is_some() => {
                    let Ok(n) = v.parse::<u64>() else {
                        return self.error("501 5.5.4 bad SIZE");
                    };
                    if n > config.size.unwrap_or(MAX_MESSAGE) {
                        return self.error("552 5.3.4 message too big");
                    }
                    true
                }
                ("BODY", Some(v)) => {
                    v.eq_ignore_ascii_case("7BIT")
                        || (v.eq_ignore_ascii_case("8BITMIME") && config.eight_bit)
                }
                ("SMTPUTF8", None) => config.eight_bit,
                ("RET", Some(v)) => {
                    v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS")
                }
                ("ENVID", Some(_)) => true,
                _ => false,
            };
            if !ok {
                return self.error(&format!("555 5.5.4 parameter not supported: {p}"));
            }
        }
        self.shared.transactions.fetch_add(1, Ordering::SeqCst);
        self.txn = Some(Transaction {
            mail_from: path,
            mail_params: params,
            rcpt_to: Vec::new(),
            rcpt_params: Vec::new(),
        });
        self.reply("250 2.1.0 sender ok");
    }

    fn rcpt(&mut self, args: &str) {
        let Some(count) = self.txn.as_ref().map(|t| t.rcpt_to.len()) else {
            return self.error("503 5.5.1 MAIL first");
        };
        let Some((path, params)) = parse_path(args, "TO:") else {
            return self.error("501 5.5.4 syntax: RCPT TO:<address>");
        };
        if path.is_empty() {
            return self.error("501 5.1.3 empty recipient");
        }
        for p in &params {
            let key = p.split_once('=').map_or(p.as_str(), |(k, _)| k);
            if !(key.eq_ignore_ascii_case("NOTIFY") || key.eq_ignore_ascii_case("ORCPT")) {
                return self.error(&format!("555 5.5.4 parameter not supported: {p}"));
            }
        }
        let rejected = match &self.shared.config.behaviour {
            Behaviour::Reject => true,
            Behaviour::RejectRcpt(list) => list.iter().any(|a| a.eq_ignore_ascii_case(&path)),
            _ => false,
        };
        if rejected {
            return self.reply("550 5.1.1 no such user");
        }
        if count >= MAX_RCPTS {
            return self.reply("452 4.5.3 too many recipients");
        }
        if let Some(t) = self.txn.as_mut() {
            t.rcpt_to.push(path);
            t.rcpt_params.push(params);
        }
        self.reply("250 2.1.5 recipient ok");
    }

    /// Reads the message after 354 and answers it. `false` when the connection is to close
    /// without a reply (the peer dropped it on purpose, or the client went away).
    async fn data(&mut self) -> std::io::Result<bool> {
        let Some(txn) = self.txn.take() else {
            return Ok(true);
        };
        if self.shared.config.behaviour == Behaviour::DropDuringData {
            // Wait for some of the message so the client is mid-DATA, then hang up.
            if self.input.is_empty() {
                self.fill().await?;
            }
            return Ok(false);
        }
        let limit = self
            .shared
            .config
            .size
            .unwrap_or(MAX_MESSAGE)
            .min(MAX_MESSAGE);
        let mut message = Vec::new();
        let mut unstuff = Unstuffer::default();
        let mut too_big = false;
        loop {
            let (used, done) = unstuff.feed(&self.input, &mut message);
            self.input.drain(..used);
            if message.len() as u64 > limit {
                too_big = true;
                message.clear();
            }
            if done {
                break;
            }
            if !self.fill().await? {
                return Ok(false);
            }
        }
        let temp_fail = {
            let mut left = lock(&self.shared.temp_failures_left);
            if *left > 0 {
                *left -= 1;
                true
            } else {
                false
            }
        };
        if too_big {
            self.reply("552 5.3.4 message too big");
        } else if temp_fail {
            self.reply("451 4.3.0 temporary failure, try again later");
        } else if self.shared.config.behaviour == Behaviour::RejectData {
            self.reply("554 5.6.0 message refused");
        } else {
            let received = Received {
                mail_from: txn.mail_from,
                rcpt_to: txn.rcpt_to,
                data: message,
                tls: self.tls,
                mail_params: txn.mail_params,
                rcpt_params: txn.rcpt_params,
                helo: self.helo.clone().unwrap_or_default(),
            };
            lock(&self.shared.received).push(received);
            self.shared.arrived.notify_waiters();
            self.reply("250 2.0.0 queued");
        }
        Ok(true)
    }
}

/// Splits `FROM:<path> PARAM PARAM` (the prefix matched without case, a space after the colon
/// tolerated) into the path without brackets and the parameters.
fn parse_path(args: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let head = args.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = args[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let close = rest.find('>')?;
    let path = rest[..close].to_string();
    let params = rest[close + 1..]
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect();
    Some((path, params))
}

/// Where the DATA reader is within a line (RFC 5321 §4.5.2: a line starting with a dot had one
/// added by the client; the line holding only a dot ends the message).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Unstuffer {
    #[default]
    LineStart,
    Dot,
    DotCr,
    Middle,
    MiddleCr,
}

impl Unstuffer {
    /// Consumes bytes of `input` into `out` (unstuffed) and returns how many were used and
    /// whether the end-of-data line was seen. Only CRLF ends a line, so a bare LF followed by a
    /// dot never ends the message (no SMTP smuggling through the peer either).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            *self = match (*self, b) {
                (Self::LineStart, b'.') => Self::Dot,
                (Self::LineStart | Self::Middle, b'\r') => Self::MiddleCr,
                (Self::Dot, b'\r') => Self::DotCr,
                (Self::DotCr, b'\n') => {
                    *self = Self::LineStart;
                    return (i + 1, true);
                }
                // A CR after the removed dot that is not followed by LF is content.
                (Self::DotCr, b'\r') => {
                    out.push(b'\r');
                    Self::MiddleCr
                }
                (Self::DotCr, other) => {
                    out.extend_from_slice(&[b'\r', other]);
                    Self::Middle
                }
                (Self::MiddleCr, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    Self::LineStart
                }
                (Self::MiddleCr, b'\r') => {
                    out.push(b'\r');
                    Self::MiddleCr
                }
                (Self::MiddleCr, other) => {
                    out.extend_from_slice(&[b'\r', other]);
                    Self::Middle
                }
                (Self::LineStart | Self::Dot | Self::Middle, other) => {
                    out.push(other);
                    Self::Middle
                }
            };
        }
        (input.len(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    async fn peer(config: PeerConfig) -> Peer {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        Peer::start(listener, config).await
    }

    /// A raw client: writes exactly what the test says and reads whole (multi-line) replies.
    struct Client<S> {
        io: BufReader<S>,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
        async fn send(&mut self, text: &str) {
            self.io.get_mut().write_all(text.as_bytes()).await.unwrap();
        }

        /// One reply, its lines joined by `|`; empty at end of stream.
        async fn reply(&mut self) -> String {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let n = tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line))
                    .await
                    .expect("reply in time")
                    .unwrap_or(0);
                if n == 0 {
                    return lines.join("|");
                }
                let line = line.trim_end().to_string();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    return lines.join("|");
                }
            }
        }

        /// Sends `text` and checks that the next replies start with `expected`, in order.
        async fn talk(&mut self, text: &str, expected: &[&str]) {
            self.send(text).await;
            for want in expected {
                let got = self.reply().await;
                assert!(
                    got.starts_with(want),
                    "after {text:?}: want {want:?}, got {got:?}"
                );
            }
        }
    }

    async fn connect(peer: &Peer) -> Client<TcpStream> {
        let tcp = TcpStream::connect(peer.addr).await.unwrap();
        let mut c = Client {
            io: BufReader::new(tcp),
        };
        assert!(c.reply().await.starts_with("220 peer.test"));
        c
    }

    #[tokio::test]
    async fn accept_records_a_pipelined_transaction_after_dot_unstuffing() {
        let p = peer(PeerConfig::new(Behaviour::Accept)).await;
        let mut c = connect(&p).await;
        c.send("EHLO client.test\r\n").await;
        let ehlo = c.reply().await;
        assert!(
            ehlo.contains("250-PIPELINING") && ehlo.contains("8BITMIME"),
            "{ehlo}"
        );
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        c.talk(
            "MAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test> NOTIFY=NEVER\r\n\
             RCPT TO:<c@y.test>\r\nDATA\r\n",
            &["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"],
        )
        .await;
        c.talk(
            "Subject: hi\r\n\r\n..leading dot\r\nbare\nlf\n.\nstill body\r\n.\r\nQUIT\r\n",
            &["250 2.0.0", "221"],
        )
        .await;
        let got = p.wait_for(1, Duration::from_secs(5)).await;
        assert_eq!(
            got,
            vec![Received {
                mail_from: "a@x.test".into(),
                rcpt_to: vec!["b@y.test".into(), "c@y.test".into()],
                data: b"Subject: hi\r\n\r\n.leading dot\r\nbare\nlf\n.\nstill body\r\n".to_vec(),
                tls: false,
                mail_params: vec!["BODY=8BITMIME".into()],
                rcpt_params: vec![vec!["NOTIFY=NEVER".into()], vec![]],
                helo: "client.test".into(),
            }]
        );
        assert_eq!((p.connections(), p.transactions_attempted()), (1, 1));
        assert_eq!(p.pipelining_violations(), 0);
    }

    #[tokio::test]
    async fn null_sender_and_two_transactions_on_one_connection() {
        let p = peer(PeerConfig::new(Behaviour::Accept)).await;
        let mut c = connect(&p).await;
        c.talk("HELO client.test\r\n", &["250 peer.test"]).await;
        for i in 0..2 {
            c.talk("MAIL FROM:<>\r\n", &["250"]).await;
            c.talk("RCPT TO:<b@y.test>\r\n", &["250"]).await;
            c.talk("DATA\r\n", &["354"]).await;
            c.talk(&format!("n{i}\r\n.\r\n"), &["250"]).await;
        }
        c.talk("RSET\r\nNOOP\r\nQUIT\r\n", &["250", "250", "221"])
            .await;
        let got = p.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].mail_from, "");
        assert_eq!(got[1].data, b"n1\r\n");
        assert_eq!(p.connections(), 1);
    }

    #[tokio::test]
    async fn temp_fail_then_accept_fails_the_first_transactions_across_connections() {
        let p = peer(PeerConfig::new(Behaviour::TempFailThenAccept {
            failures: 2,
        }))
        .await;
        let mut answers = Vec::new();
        for _ in 0..3 {
            let mut c = connect(&p).await;
            c.talk(
                "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
                &["250", "250", "250", "354"],
            )
            .await;
            c.send("hello\r\n.\r\n").await;
            answers.push(c.reply().await);
        }
        assert!(answers[0].starts_with("451 4.3.0"), "{answers:?}");
        assert!(answers[1].starts_with("451 4.3.0"), "{answers:?}");
        assert!(answers[2].starts_with("250"), "{answers:?}");
        assert_eq!(p.received().len(), 1);
        assert_eq!((p.connections(), p.transactions_attempted()), (3, 3));
    }

    #[tokio::test]
    async fn reject_refuses_every_recipient_and_then_data() {
        let p = peer(PeerConfig::new(Behaviour::Reject)).await;
        let mut c = connect(&p).await;
        c.talk(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nQUIT\r\n",
            &["250", "250", "550 5.1.1", "554 5.5.1", "221"],
        )
        .await;
        assert!(p.received().is_empty());
        assert_eq!(p.transactions_attempted(), 1);
    }

    #[tokio::test]
    async fn reject_data_answers_554_after_the_message() {
        let p = peer(PeerConfig::new(Behaviour::RejectData)).await;
        let mut c = connect(&p).await;
        c.talk(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
            &["250", "250", "250", "354"],
        )
        .await;
        c.talk("x\r\n.\r\n", &["554 5.6.0"]).await;
        assert!(p.received().is_empty());
    }

    #[tokio::test]
    async fn reject_rcpt_refuses_only_the_listed_addresses() {
        let p = peer(PeerConfig::new(Behaviour::RejectRcpt(vec![
            "Bad@y.test".into(),
        ])))
        .await;
        let mut c = connect(&p).await;
        c.talk(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bad@Y.TEST>\r\nRCPT TO:<good@y.test>\r\n\
             DATA\r\n",
            &["250", "250", "550 5.1.1", "250", "354"],
        )
        .await;
        c.talk("x\r\n.\r\n", &["250"]).await;
        assert_eq!(p.received()[0].rcpt_to, vec!["good@y.test".to_string()]);
    }

    #[tokio::test]
    async fn drop_during_data_closes_without_a_reply() {
        let p = peer(PeerConfig::new(Behaviour::DropDuringData)).await;
        let mut c = connect(&p).await;
        c.talk(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
            &["250", "250", "250", "354"],
        )
        .await;
        c.send("Subject: part\r\n").await;
        assert_eq!(c.reply().await, "", "the connection closes with no reply");
        assert!(p.received().is_empty());
    }

    #[tokio::test]
    async fn strict_parameters_follow_what_is_offered() {
        let mut config = PeerConfig::new(Behaviour::Accept);
        config.eight_bit = false;
        config.size = Some(100);
        let p = peer(config).await;
        let mut c = connect(&p).await;
        c.send("EHLO c\r\n").await;
        let ehlo = c.reply().await;
        assert!(
            ehlo.contains("SIZE 100") && !ehlo.contains("8BITMIME"),
            "{ehlo}"
        );
        c.talk(
            "MAIL FROM:<a@x.test> BODY=8BITMIME\r\nMAIL FROM:<a@x.test> SMTPUTF8\r\n\
             MAIL FROM:<a@x.test> SIZE=101\r\nMAIL FROM:<a@x.test> AUTH=<>\r\n\
             MAIL FROM:<a@x.test> SIZE=50\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
            &[
                "555 5.5.4",
                "555 5.5.4",
                "552 5.3.4",
                "555 5.5.4",
                "250",
                "250",
                "354",
            ],
        )
        .await;
        let big = "y".repeat(150);
        c.talk(&format!("{big}\r\n.\r\n"), &["552 5.3.4"]).await;
        c.talk(
            "MAIL FROM a@x.test\r\nRCPT TO:<b@y.test>\r\nBDAT 1\r\n",
            &["501", "503", "500"],
        )
        .await;
        assert!(p.received().is_empty());
    }

    #[tokio::test]
    async fn pipelined_commands_to_a_peer_without_pipelining_are_counted() {
        let mut config = PeerConfig::new(Behaviour::Accept);
        config.pipelining = false;
        let p = peer(config).await;
        let mut c = connect(&p).await;
        c.send("EHLO c\r\n").await;
        assert!(!c.reply().await.contains("PIPELINING"));
        c.talk("MAIL FROM:<a@x.test>\r\n", &["250"]).await;
        assert_eq!(p.pipelining_violations(), 0);
        c.talk("RCPT TO:<b@y.test>\r\nDATA\r\n", &["250", "354"])
            .await;
        assert_eq!(p.pipelining_violations(), 1);
    }

    #[tokio::test]
    async fn starttls_restarts_the_session_and_marks_the_message() {
        let mut config = PeerConfig::new(Behaviour::Accept);
        config.starttls = true;
        let p = peer(config).await;
        let mut c = connect(&p).await;
        c.send("EHLO c\r\n").await;
        assert!(c.reply().await.contains("250-STARTTLS"));
        // A command injected after STARTTLS in the clear must be thrown away.
        c.talk("STARTTLS\r\nNOOP\r\n", &["220 2.0.0"]).await;
        let ca = p.ca_cert().expect("a certificate");
        let connector = tern_runtime::tls::connector_trusting(&ca).unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::from(LOCAL);
        let tls = connector
            .connect(name, c.io.into_inner())
            .await
            .expect("handshake with the peer's certificate");
        let mut c = Client {
            io: BufReader::new(tls),
        };
        c.talk("MAIL FROM:<a@x.test>\r\n", &["503 5.5.1"]).await;
        c.send("EHLO again\r\n").await;
        let ehlo = c.reply().await;
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        c.talk(
            "STARTTLS\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
            &["502", "250", "250", "354"],
        )
        .await;
        c.talk("secret\r\n.\r\nQUIT\r\n", &["250", "221"]).await;
        let got = p.received();
        assert!(got[0].tls);
        assert_eq!(got[0].helo, "again");
    }

    #[tokio::test]
    async fn peers_share_one_port_on_several_loopback_addresses() {
        let ips: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
        let (port, listeners) = bind_same_port(&ips).await;
        let mut peers = Vec::new();
        for l in listeners {
            peers.push(Peer::start(l, PeerConfig::new(Behaviour::Accept)).await);
        }
        assert_eq!(peers[0].addr, SocketAddr::new(ips[0], port));
        assert_eq!(peers[1].addr, SocketAddr::new(ips[1], port));
        let mut c = connect(&peers[1]).await;
        c.talk("QUIT\r\n", &["221"]).await;
        assert_eq!((peers[0].connections(), peers[1].connections()), (0, 1));
    }

    #[tokio::test]
    async fn a_dropped_peer_stops_listening() {
        let p = peer(PeerConfig::new(Behaviour::Accept)).await;
        let addr = p.addr;
        let mut c = connect(&p).await;
        drop(p);
        assert_eq!(c.reply().await, "", "open sessions are closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    #[should_panic(expected = "waited")]
    async fn wait_for_panics_with_what_it_saw() {
        let p = peer(PeerConfig::new(Behaviour::Accept)).await;
        p.wait_for(1, Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn python_smtplib_delivers_to_a_peer() {
        let p = peer(PeerConfig::new(Behaviour::Accept)).await;
        let port = p.addr.port();
        let script = format!(
            "import smtplib\n\
             s = smtplib.SMTP('127.0.0.1', {port}, timeout=10)\n\
             s.sendmail('a@x.test', ['b@y.test', 'c@y.test'], \
             'Subject: py\\r\\n\\r\\n.dot\\r\\nend\\r\\n')\n\
             s.quit()\n"
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .args(["-c", &script])
                .output()
                .expect("run python3")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = p.wait_for(1, Duration::from_secs(5)).await;
        assert_eq!(got[0].rcpt_to, vec!["b@y.test", "c@y.test"]);
        assert_eq!(got[0].data, b"Subject: py\r\n\r\n.dot\r\nend\r\n");
        assert!(!got[0].helo.is_empty());
    }

    #[test]
    fn unstuffing_works_across_chunk_boundaries() {
        let wire = b"a\r\n..b\r\n.c\r\n\r\n.\r\nMAIL";
        for split in 0..wire.len() {
            let mut u = Unstuffer::default();
            let mut out = Vec::new();
            let (used1, done1) = u.feed(&wire[..split], &mut out);
            let used = if done1 {
                used1
            } else {
                assert_eq!(used1, split);
                let (used2, done2) = u.feed(&wire[split..], &mut out);
                assert!(done2, "split at {split}");
                split + used2
            };
            assert_eq!(used, wire.len() - 4, "split at {split}");
            assert_eq!(out, b"a\r\n.b\r\nc\r\n\r\n", "split at {split}");
        }
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        let mut u = Unstuffer::default();
        let mut out = Vec::new();
        assert_eq!(u.feed(b".\r\n", &mut out), (3, true));
        assert!(out.is_empty());
    }
}
