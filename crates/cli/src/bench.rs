//! `tern bench smtp`: a load generator for SMTP servers. It opens `connections` concurrent
//! sessions, sends `messages` messages of about `size` bytes (reconnecting after
//! `per_connection` messages), and reports throughput and latency percentiles, where latency is
//! the time from MAIL FROM to the final 250 after DATA of one message.
//!
//! `tern bench submit` ([`run_submit`]) is the same run against a submission port, made twice:
//! with sessions reused for many messages, and with a new session per message, whose cost
//! (TCP, the STARTTLS handshake, EHLO twice and AUTH) is then inside every message's latency.
//!
//! The SMTP client here is deliberately minimal and hand-written so that the benchmark measures
//! the server, not a client library: plain TCP or STARTTLS (RFC 3207) trusting one CA file (or,
//! on request, any certificate), AUTH PLAIN (RFC 4616), and PIPELINING (RFC 2920) of
//! MAIL/RCPT/DATA where the server offers it.
//! It does not do BDAT, SMTPUTF8, DSN, MX lookups or implicit TLS, and it is not a delivery
//! agent: a refused message is counted, never retried.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// What to run.
#[derive(Debug, Clone)]
pub struct SmtpBench {
    pub target: SocketAddr,
    /// Concurrent sessions.
    pub connections: usize,
    /// Messages in total.
    pub messages: usize,
    /// Approximate bytes per message, headers included.
    pub size: usize,
    pub recipients: Vec<String>,
    pub from: String,
    /// Messages per connection before reconnecting; 1 means a new connection per message.
    pub per_connection: usize,
    /// STARTTLS, trusting as said; `None` for plain SMTP.
    pub starttls: Option<Trust>,
    /// AUTH PLAIN user name and password.
    pub auth: Option<(String, String)>,
    /// No new message is started after this; the run stops early.
    pub duration_limit: Duration,
}

/// Which server certificates the benchmark's STARTTLS accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Only certificates issued by the CA in this PEM file (for `tern up`, its own certificate).
    Ca(PathBuf),
    /// Any certificate (the handshake signatures are still checked): for measuring a server
    /// with a self-signed certificate whose file is not at hand. Never for sending real mail.
    Insecure,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    /// Messages answered 250 after DATA.
    pub sent: usize,
    /// Messages refused, or lost to a connection or protocol failure.
    pub failed: usize,
    pub elapsed: Duration,
    /// `sent` per second of `elapsed`.
    pub per_second: f64,
    pub latency_p50: Duration,
    pub latency_p90: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
    pub first_error: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(f, "sent      {:>10}", self.sent)?;
        writeln!(f, "failed    {:>10}", self.failed)?;
        writeln!(f, "elapsed   {:>10.3} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "rate      {:>10.1} msg/s", self.per_second)?;
        writeln!(
            f,
            "latency   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(self.latency_p50),
            ms(self.latency_p90),
            ms(self.latency_p99),
            ms(self.latency_max)
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "first error: {e}")?;
        }
        Ok(())
    }
}

// One network operation (connect, a write, one reply) may take this long at most.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
// Operations in flight when the duration limit passes get this much longer to finish.
const GRACE: Duration = Duration::from_secs(2);
// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; allow more, but not without bound.
const MAX_REPLY_LINE: usize = 8192;
const MAX_REPLY_LINES: usize = 100;
const EHLO_NAME: &str = "tern-bench.invalid";

/// Runs the benchmark and reports. Fails only on a bad configuration (e.g. zero connections, an
/// unreadable CA file); every failure of the server under test is counted in the report.
pub async fn run_smtp(b: &SmtpBench) -> anyhow::Result<Report> {
    if b.connections == 0 || b.per_connection == 0 {
        bail!("connections and messages per connection must be at least 1");
    }
    if b.recipients.is_empty() {
        bail!("at least one recipient is needed");
    }
    for address in b.recipients.iter().chain(std::iter::once(&b.from)) {
        if address.contains(['<', '>', '\r', '\n']) {
            bail!("address {address:?} may not contain <, > or line breaks");
        }
    }
    let tls = match &b.starttls {
        Some(Trust::Ca(ca)) => Some(
            tern_runtime::tls::connector_trusting(ca)
                .with_context(|| format!("load CA file {}", ca.display()))?,
        ),
        Some(Trust::Insecure) => Some(
            tern_mta::outbound::opportunistic_connector().context("TLS client configuration")?,
        ),
        None => None,
    };
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        bench: b.clone(),
        tls,
        body: message_body(b),
        next: AtomicUsize::new(0),
        deadline: start + b.duration_limit,
        run_id: format!(
            "{}.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            std::process::id()
        ),
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..b.connections.min(b.messages.max(1)) {
        let ctx = ctx.clone();
        workers.spawn(async move { worker(&ctx).await });
    }
    let mut total = Tally::default();
    while let Some(done) = workers.join_next().await {
        let tally = done.context("benchmark worker panicked")?;
        total.merge(tally);
    }
    let elapsed = start.elapsed();
    Ok(total.report(elapsed))
}

/// `tern bench submit`: `bench` run twice against a submission server, first with each
/// session sending `reuse` messages, then with a new session (TLS handshake and AUTH included)
/// per message. `bench.per_connection` is ignored; everything else applies to both runs.
#[derive(Debug, Clone)]
pub struct SubmitBench {
    pub bench: SmtpBench,
    /// Messages per session in the first run.
    pub reuse: usize,
    /// Which runs to make.
    pub runs: SubmitRuns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitRuns {
    Both,
    ReuseOnly,
    NewOnly,
}

/// The two runs of [`run_submit`]; a run not asked for is `None`.
#[derive(Debug, Clone)]
pub struct SubmitReport {
    pub reuse: Option<(usize, Report)>,
    pub new_connection: Option<Report>,
}

impl std::fmt::Display for SubmitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut rows: Vec<(String, &Report)> = Vec::new();
        if let Some((n, r)) = &self.reuse {
            rows.push((format!("reuse ({n}/session)"), r));
        }
        if let Some(r) = &self.new_connection {
            rows.push(("new session per msg".to_string(), r));
        }
        writeln!(
            f,
            "{:<22} {:>7} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "run", "sent", "failed", "msg/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )?;
        for (name, r) in &rows {
            writeln!(
                f,
                "{:<22} {:>7} {:>6} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name,
                r.sent,
                r.failed,
                r.per_second,
                ms(r.latency_p50),
                ms(r.latency_p90),
                ms(r.latency_p99),
                ms(r.latency_max)
            )?;
        }
        for (name, r) in &rows {
            if let Some(e) = &r.first_error {
                writeln!(f, "first error ({name}): {e}")?;
            }
        }
        Ok(())
    }
}

/// Runs [`SubmitBench`]: the reuse run, then the new-session run, one after the other so they
/// do not compete. Fails only on a bad configuration, like [`run_smtp`].
pub async fn run_submit(b: &SubmitBench) -> anyhow::Result<SubmitReport> {
    if b.reuse == 0 {
        bail!("messages per session must be at least 1");
    }
    let mut report = SubmitReport {
        reuse: None,
        new_connection: None,
    };
    if b.runs != SubmitRuns::NewOnly {
        let bench = SmtpBench {
            per_connection: b.reuse,
            ..b.bench.clone()
        };
        report.reuse = Some((b.reuse, run_smtp(&bench).await?));
    }
    if b.runs != SubmitRuns::ReuseOnly {
        let bench = SmtpBench {
            per_connection: 1,
            ..b.bench.clone()
        };
        report.new_connection = Some(run_smtp(&bench).await?);
    }
    Ok(report)
}

struct Ctx {
    bench: SmtpBench,
    tls: Option<TlsConnector>,
    /// Everything of the message after its per-message Message-ID line, dot-stuffed, ending
    /// with CRLF.
    body: Vec<u8>,
    /// Tickets: each message (attempted or not) takes the next number.
    next: AtomicUsize,
    deadline: Instant,
    /// Makes Message-IDs unique across runs: the start time in nanoseconds and the process.
    run_id: String,
}

impl Ctx {
    /// The deadline of one network operation.
    fn op_deadline(&self) -> Instant {
        (Instant::now() + OP_TIMEOUT).min(self.deadline + GRACE)
    }

    /// Takes the next message number, or `None` when every message is taken or time is up.
    fn ticket(&self) -> Option<usize> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.bench.messages).then_some(n)
    }
}

#[derive(Default)]
struct Tally {
    sent: usize,
    failed: usize,
    latencies: Vec<Duration>,
    first_error: Option<(Instant, String)>,
}

impl Tally {
    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some((Instant::now(), error));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.latencies.extend(other.latencies);
        self.first_error = match (self.first_error.take(), other.first_error) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
    }

    fn report(mut self, elapsed: Duration) -> Report {
        self.latencies.sort_unstable();
        let secs = elapsed.as_secs_f64();
        Report {
            sent: self.sent,
            failed: self.failed,
            elapsed,
            per_second: if secs > 0.0 {
                self.sent as f64 / secs
            } else {
                0.0
            },
            latency_p50: percentile(&self.latencies, 50),
            latency_p90: percentile(&self.latencies, 90),
            latency_p99: percentile(&self.latencies, 99),
            latency_max: self.latencies.last().copied().unwrap_or_default(),
            first_error: self.first_error.map(|(_, e)| e),
        }
    }
}

/// Nearest-rank percentile of sorted samples; zero without samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// One concurrent session slot: sends messages until the tickets or the time run out,
/// reconnecting after `per_connection` messages or after a connection failure.
async fn worker(ctx: &Ctx) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut on_this_connection = 0;
    while let Some(n) = ctx.ticket() {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Conn::open(ctx).await {
                Ok(c) => {
                    on_this_connection = 0;
                    c
                }
                Err(e) => {
                    tally.fail(format!("{e:#}"));
                    continue;
                }
            },
        };
        match c.send_message(ctx, n).await {
            Ok(Ok(latency)) => {
                tally.sent += 1;
                tally.latencies.push(latency);
            }
            Ok(Err(refused)) => tally.fail(refused),
            Err(e) => {
                // The session is in an unknown state: drop it and start a fresh one.
                tally.fail(format!("{e:#}"));
                continue;
            }
        }
        on_this_connection += 1;
        if on_this_connection >= ctx.bench.per_connection {
            c.quit(ctx).await;
        } else {
            conn = Some(c);
        }
    }
    if let Some(c) = conn {
        c.quit(ctx).await;
    }
    tally
}

/// Builds the shared part of every message: headers and a body of 76-character lines filling
/// it up to about `size` bytes. Filler lines never start with a dot, so no stuffing is needed.
fn message_body(b: &SmtpBench) -> Vec<u8> {
    let mut out = format!(
        "Date: {}\r\nFrom: <{}>\r\nTo: <{}>\r\nSubject: tern bench\r\n\r\n",
        mail_builder::headers::date::Date::now().to_rfc822(),
        b.from,
        b.recipients[0],
    )
    .into_bytes();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // The Message-ID line added per message is about 60 bytes.
    let target = b.size.saturating_sub(60);
    let mut line = 0usize;
    while out.len() + 2 < target {
        let len = (target - out.len() - 2).min(76);
        out.extend((0..len).map(|i| ALPHABET[(i + line) % ALPHABET.len()]));
        out.extend_from_slice(b"\r\n");
        line += 1;
    }
    out
}

/// A byte stream that may be plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One server reply: its code and the text of its lines.
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

struct Conn {
    io: Box<dyn Io>,
    input: Vec<u8>,
    pipelining: bool,
    // RFC 1870 §6: the SIZE parameter may be given only to a server that offers SIZE.
    size: bool,
}

impl Conn {
    /// Connects, reads the greeting, says EHLO, and does STARTTLS and AUTH as configured.
    async fn open(ctx: &Ctx) -> anyhow::Result<Conn> {
        let target = ctx.bench.target;
        let tcp = tokio::time::timeout_at(ctx.op_deadline(), TcpStream::connect(target))
            .await
            .map_err(|_| anyhow::anyhow!("connect to {target}: timed out"))?
            .with_context(|| format!("connect to {target}"))?;
        // Small commands must not wait for Nagle's algorithm, or latency measures the kernel.
        tcp.set_nodelay(true).context("set TCP_NODELAY")?;
        let mut c = Conn {
            io: Box::new(tcp),
            input: Vec::new(),
            pipelining: false,
            size: false,
        };
        let greeting = c.reply(ctx).await?;
        if greeting.code != 220 {
            bail!("greeting: {greeting}");
        }
        let mut caps = c.ehlo(ctx).await?;
        if let Some(connector) = &ctx.tls {
            if !has(&caps, "STARTTLS") {
                bail!("the server does not offer STARTTLS");
            }
            let ready = c.command(ctx, "STARTTLS\r\n").await?;
            if ready.code != 220 {
                bail!("STARTTLS: {ready}");
            }
            // RFC 3207 §5: bytes after the 220 in the clear would be a response injection.
            if !c.input.is_empty() {
                bail!("the server sent data after its STARTTLS reply");
            }
            let name = ServerName::IpAddress(target.ip().into());
            let plain = std::mem::replace(&mut c.io, Box::new(tokio::io::duplex(1).0));
            let tls = tokio::time::timeout_at(ctx.op_deadline(), connector.connect(name, plain))
                .await
                .map_err(|_| anyhow::anyhow!("TLS handshake: timed out"))?
                .context("TLS handshake")?;
            c.io = Box::new(tls);
            // RFC 3207 §4.2: forget what was learnt in the clear and ask again.
            caps = c.ehlo(ctx).await?;
        }
        c.pipelining = has(&caps, "PIPELINING");
        c.size = has(&caps, "SIZE");
        if let Some((user, password)) = &ctx.bench.auth {
            let offers_plain = caps.iter().any(|l| {
                let mut words = l.split_ascii_whitespace();
                words.next().is_some_and(|w| w.eq_ignore_ascii_case("AUTH"))
                    && words.any(|m| m.eq_ignore_ascii_case("PLAIN"))
            });
            if !offers_plain {
                bail!("the server does not offer AUTH PLAIN");
            }
            // RFC 4616 §2: authzid NUL authcid NUL passwd, with an empty authzid.
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            let done = c.command(ctx, &format!("AUTH PLAIN {token}\r\n")).await?;
            if done.code != 235 {
                bail!("AUTH PLAIN: {done}");
            }
        }
        Ok(c)
    }

    /// EHLO, returning the keyword lines after the greeting line.
    async fn ehlo(&mut self, ctx: &Ctx) -> anyhow::Result<Vec<String>> {
        let reply = self.command(ctx, &format!("EHLO {EHLO_NAME}\r\n")).await?;
        if reply.code != 250 {
            bail!("EHLO: {reply}");
        }
        Ok(reply.lines.into_iter().skip(1).collect())
    }

    /// Sends one message. The outer error is a broken session; the inner one a refusal by the
    /// server, after which the session is usable again.
    async fn send_message(
        &mut self,
        ctx: &Ctx,
        n: usize,
    ) -> anyhow::Result<Result<Duration, String>> {
        let b = &ctx.bench;
        let started = Instant::now();
        let mail = if self.size {
            format!("MAIL FROM:<{}> SIZE={}\r\n", b.from, b.size)
        } else {
            format!("MAIL FROM:<{}>\r\n", b.from)
        };
        let rcpts: Vec<String> = b
            .recipients
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();
        let mut refusal: Option<String> = None;
        let mut accepted = 0usize;
        let data = if self.pipelining {
            // RFC 2920 §3.1: MAIL, RCPT and DATA may go in one group; DATA ends it.
            let mut group = mail.clone();
            rcpts.iter().for_each(|r| group.push_str(r));
            group.push_str("DATA\r\n");
            self.write(ctx, group.as_bytes()).await?;
            let m = self.reply(ctx).await?;
            if !m.positive() {
                refusal = Some(format!("MAIL: {m}"));
            }
            for _ in &rcpts {
                let r = self.reply(ctx).await?;
                if r.positive() {
                    accepted += 1;
                } else if refusal.is_none() {
                    refusal = Some(format!("RCPT: {r}"));
                }
            }
            self.reply(ctx).await?
        } else {
            let m = self.command(ctx, &mail).await?;
            if !m.positive() {
                return Ok(Err(format!("MAIL: {m}")));
            }
            for r in &rcpts {
                let reply = self.command(ctx, r).await?;
                if reply.positive() {
                    accepted += 1;
                } else if refusal.is_none() {
                    refusal = Some(format!("RCPT: {reply}"));
                }
            }
            if accepted == 0 {
                self.reset(ctx).await?;
                return Ok(Err(refusal.unwrap_or_default()));
            }
            self.command(ctx, "DATA\r\n").await?
        };
        if data.code != 354 {
            self.reset(ctx).await?;
            return Ok(Err(refusal.unwrap_or_else(|| format!("DATA: {data}"))));
        }
        if accepted == 0 || refusal.as_deref().is_some_and(|r| r.starts_with("MAIL")) {
            // A server that answers 354 without a valid transaction gets an empty message,
            // which ends DATA without delivering anything of ours.
            self.write(ctx, b".\r\n").await?;
            self.reply(ctx).await?;
            self.reset(ctx).await?;
            return Ok(Err(refusal.unwrap_or_default()));
        }
        let id = format!("Message-ID: <{n}.{}@{EHLO_NAME}>\r\n", ctx.run_id);
        let mut message = Vec::with_capacity(id.len() + ctx.body.len() + 3);
        message.extend_from_slice(id.as_bytes());
        message.extend_from_slice(&ctx.body);
        message.extend_from_slice(b".\r\n");
        self.write(ctx, &message).await?;
        let done = self.reply(ctx).await?;
        if done.code == 250 {
            Ok(Ok(started.elapsed()))
        } else {
            Ok(Err(format!("end of DATA: {done}")))
        }
    }

    async fn reset(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        let r = self.command(ctx, "RSET\r\n").await?;
        if r.code != 250 {
            bail!("RSET: {r}");
        }
        Ok(())
    }

    /// Ends the session politely; a failure here no longer matters to any message.
    async fn quit(mut self, ctx: &Ctx) {
        if self.command(ctx, "QUIT\r\n").await.is_ok() {
            let _ = tokio::time::timeout_at(ctx.op_deadline(), self.io.shutdown()).await;
        }
    }

    async fn command(&mut self, ctx: &Ctx, line: &str) -> anyhow::Result<Reply> {
        self.write(ctx, line.as_bytes()).await?;
        self.reply(ctx).await
    }

    async fn write(&mut self, ctx: &Ctx, bytes: &[u8]) -> anyhow::Result<()> {
        tokio::time::timeout_at(ctx.op_deadline(), async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| anyhow::anyhow!("write: timed out"))?
        .context("write")
    }

    /// Reads one reply, all its lines (RFC 5321 §4.2.1: `ddd-` continues, `ddd ` ends).
    async fn reply(&mut self, ctx: &Ctx) -> anyhow::Result<Reply> {
        let mut lines = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let line = self.line(ctx).await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .with_context(|| format!("malformed reply line {line:?}"))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
        }
        bail!("reply longer than {MAX_REPLY_LINES} lines")
    }

    async fn line(&mut self, ctx: &Ctx) -> anyhow::Result<String> {
        let deadline = ctx.op_deadline();
        loop {
            if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.input.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw);
                return Ok(text.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.input.len() > MAX_REPLY_LINE {
                bail!("reply line longer than {MAX_REPLY_LINE} bytes");
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .map_err(|_| anyhow::anyhow!("waiting for a reply: timed out"))?
                .context("read")?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Whether an EHLO keyword line list offers `keyword`.
fn has(caps: &[String], keyword: &str) -> bool {
    caps.iter().any(|l| {
        l.split_ascii_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_testkit::peers::{Behaviour, Peer, PeerConfig};
    use tokio::io::{AsyncBufReadExt, BufReader};

    async fn peer(config: PeerConfig) -> Peer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Peer::start(listener, config).await
    }

    fn bench(target: SocketAddr, messages: usize, per_connection: usize) -> SmtpBench {
        SmtpBench {
            target,
            connections: 4,
            messages,
            size: 2048,
            recipients: vec!["b@y.test".into(), "c@y.test".into()],
            from: "a@x.test".into(),
            per_connection,
            starttls: None,
            auth: None,
            duration_limit: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn pipelined_bench_delivers_every_message_and_reuses_connections() {
        let p = peer(PeerConfig::new(Behaviour::Accept)).await;
        let report = run_smtp(&bench(p.addr, 50, 5)).await.unwrap();
        assert_eq!((report.sent, report.failed), (50, 0), "{report}");
        assert!(report.first_error.is_none());
        assert!(report.latency_p50 <= report.latency_p90);
        assert!(report.latency_p99 <= report.latency_max);
        assert!(report.latency_max > Duration::ZERO && report.per_second > 0.0);
        let got = p.received();
        assert_eq!(got.len(), 50);
        // Four workers each reconnect after five messages: at least ten connections, and at
        // most one partly used connection more per worker.
        assert!((10..=14).contains(&p.connections()), "{}", p.connections());
        let m = &got[0];
        assert_eq!(m.rcpt_to, vec!["b@y.test", "c@y.test"]);
        assert!((1900..=2100).contains(&m.data.len()), "{}", m.data.len());
        assert!(m.data.starts_with(b"Message-ID: <"));
        let ids: std::collections::HashSet<&[u8]> = got
            .iter()
            .map(|m| m.data.split(|&b| b == b'\n').next().unwrap_or_default())
            .collect();
        assert_eq!(ids.len(), 50, "every message has its own Message-ID");
        let text = report.to_string();
        assert!(text.contains("sent") && text.contains("p99"), "{text}");
    }

    #[tokio::test]
    async fn starttls_without_pipelining_uses_one_connection_per_message() {
        let mut config = PeerConfig::new(Behaviour::Accept);
        config.starttls = true;
        config.pipelining = false;
        config.size = Some(1_000_000);
        let p = peer(config).await;
        let mut b = bench(p.addr, 10, 1);
        b.starttls = p.ca_cert().map(Trust::Ca);
        let report = run_smtp(&b).await.unwrap();
        assert_eq!((report.sent, report.failed), (10, 0), "{report}");
        assert_eq!(p.connections(), 10);
        assert_eq!(
            p.pipelining_violations(),
            0,
            "no pipelining where not offered"
        );
        let got = p.received();
        assert!(got.iter().all(|m| m.tls));
        assert_eq!(got[0].mail_params, vec!["SIZE=2048".to_string()]);
    }

    #[tokio::test]
    async fn refusals_are_counted_and_the_first_is_reported() {
        let p = peer(PeerConfig::new(Behaviour::Reject)).await;
        let report = run_smtp(&bench(p.addr, 20, 10)).await.unwrap();
        assert_eq!((report.sent, report.failed), (0, 20), "{report}");
        let first = report.first_error.unwrap_or_default();
        assert!(first.contains("550 5.1.1"), "{first}");
        assert!(
            p.connections() <= 8,
            "refusals keep the session: {}",
            p.connections()
        );
    }

    #[tokio::test]
    async fn temporary_failures_and_dropped_connections_count_as_failed() {
        let p = peer(PeerConfig::new(Behaviour::TempFailThenAccept {
            failures: 3,
        }))
        .await;
        let report = run_smtp(&bench(p.addr, 10, 10)).await.unwrap();
        assert_eq!((report.sent, report.failed), (7, 3), "{report}");

        let p = peer(PeerConfig::new(Behaviour::DropDuringData)).await;
        let report = run_smtp(&bench(p.addr, 6, 3)).await.unwrap();
        assert_eq!((report.sent, report.failed), (0, 6), "{report}");
        assert_eq!(p.connections(), 6, "a broken session is replaced");
    }

    #[tokio::test]
    async fn a_server_that_never_greets_is_cut_off_by_the_duration_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let mut b = bench(target, 1000, 1);
        b.duration_limit = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let report = run_smtp(&b).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(report.sent, 0);
        assert_eq!(
            report.failed, 4,
            "one stuck greeting per connection: {report}"
        );
        assert!(report.first_error.unwrap_or_default().contains("timed out"));
        silent.abort();
    }

    #[tokio::test]
    async fn unreachable_server_fails_every_message_quickly() {
        let port = tern_testkit::peers::free_port_on("127.0.0.1".parse().unwrap());
        let b = bench(SocketAddr::from(([127, 0, 0, 1], port)), 8, 1);
        let report = run_smtp(&b).await.unwrap();
        assert_eq!((report.sent, report.failed), (0, 8));
        assert!(report.first_error.unwrap_or_default().contains("connect"));
    }

    #[tokio::test]
    async fn bad_settings_are_errors() {
        let mut b = bench("127.0.0.1:25".parse().unwrap(), 1, 1);
        b.connections = 0;
        assert!(run_smtp(&b).await.is_err());
        let mut b = bench("127.0.0.1:25".parse().unwrap(), 1, 1);
        b.recipients.clear();
        assert!(run_smtp(&b).await.is_err());
        let mut b = bench("127.0.0.1:25".parse().unwrap(), 1, 1);
        b.from = "a@x>\r\nRCPT TO:<evil".into();
        assert!(run_smtp(&b).await.is_err());
    }

    /// AUTH PLAIN against a scripted server: the transcript the client must produce.
    #[tokio::test]
    async fn auth_plain_transcript() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut io = BufReader::new(tcp);
            let script: &[(&str, &str)] = &[
                ("", "220 scripted ESMTP\r\n"),
                (
                    "EHLO tern-bench.invalid",
                    "250-scripted\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n",
                ),
                // base64("\0user\0secret")
                ("AUTH PLAIN AHVzZXIAc2VjcmV0", "235 2.7.0 ok\r\n"),
                ("MAIL FROM:<a@x.test>", "250 ok\r\n"),
                ("RCPT TO:<b@y.test>", "250 ok\r\n"),
                ("DATA", "354 go\r\n"),
            ];
            for (expect, answer) in script {
                if !expect.is_empty() {
                    let mut line = String::new();
                    io.read_line(&mut line).await.unwrap();
                    assert_eq!(line.trim_end(), *expect);
                }
                io.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
            let mut data = Vec::new();
            while !data.ends_with(b"\r\n.\r\n") {
                let n = io.read_until(b'\n', &mut data).await.unwrap();
                assert!(n > 0, "the client ended DATA");
            }
            io.get_mut().write_all(b"250 queued\r\n").await.unwrap();
            let mut line = String::new();
            io.read_line(&mut line).await.unwrap();
            assert_eq!(line.trim_end(), "QUIT");
            io.get_mut().write_all(b"221 bye\r\n").await.unwrap();
        });
        let mut b = bench(target, 1, 1);
        b.connections = 1;
        b.recipients = vec!["b@y.test".into()];
        b.auth = Some(("user".into(), "secret".into()));
        let report = run_smtp(&b).await.unwrap();
        server.await.unwrap();
        assert_eq!((report.sent, report.failed), (1, 0), "{report}");
    }

    /// Both runs of `tern bench submit` over STARTTLS accepting a certificate nobody was told
    /// to trust: the reuse run opens few sessions, the other one per message.
    #[tokio::test]
    async fn submit_bench_runs_reuse_then_new_sessions_over_insecure_starttls() {
        let mut config = PeerConfig::new(Behaviour::Accept);
        config.starttls = true;
        let p = peer(config).await;
        let mut base = bench(p.addr, 12, 1);
        // One session slot: with two, one slot may take seven of the twelve messages and
        // need a third session, depending on scheduling.
        base.connections = 1;
        base.starttls = Some(Trust::Insecure);
        let b = SubmitBench {
            bench: base,
            reuse: 6,
            runs: SubmitRuns::Both,
        };
        let report = run_submit(&b).await.unwrap();
        let (n, reuse) = report.reuse.clone().unwrap();
        let fresh = report.new_connection.clone().unwrap();
        assert_eq!(n, 6);
        assert_eq!((reuse.sent, reuse.failed), (12, 0), "{report}");
        assert_eq!((fresh.sent, fresh.failed), (12, 0), "{report}");
        assert_eq!(
            p.connections(),
            2 + 12,
            "two reused sessions, then one per message"
        );
        assert!(p.received().iter().all(|m| m.tls));
        let text = report.to_string();
        assert!(
            text.contains("reuse (6/session)") && text.contains("new session per msg"),
            "{text}"
        );

        let only = SubmitBench {
            runs: SubmitRuns::NewOnly,
            ..b.clone()
        };
        let report = run_submit(&only).await.unwrap();
        assert!(report.reuse.is_none() && report.new_connection.is_some());
        let zero = SubmitBench { reuse: 0, ..b };
        assert!(run_submit(&zero).await.is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 90), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
