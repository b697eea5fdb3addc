//! `tern bench imap` and `tern bench imap-idle`: load generators for IMAP servers (Tern's MAA,
//! or any other, such as Dovecot in `deploy/bench/imap-vs-dovecot.sh`).
//!
//! `imap` fills a mailbox with `messages` generated messages of varied, realistic sizes (short
//! notes, longer letters, and a few with base64 attachments: about 6.8 kB on average) over
//! APPEND, then times what a mail client does to it: SELECT, `FETCH 1:* (FLAGS)`,
//! `FETCH 1:* (FLAGS ENVELOPE)`, every body (`FETCH 1:* BODY.PEEK[]`) and `UID SEARCH FROM`.
//! Each is run `runs` times on one connection and the median is reported (the first run of a
//! server that caches parsed messages pays for the cache; the median shows the steady state).
//! The fill is done in `runs` equal chunks, so APPEND's rate is a median too.
//!
//! `imap-idle` opens `connections` sessions (implicit TLS, LOGIN, SELECT, IDLE) and reports the
//! server's resident memory before and after (before = after a warm-up round of sessions
//! opened and closed, so one-time growth is not charged to the sessions), read from `/proc` for the given process and its
//! descendants (a multi-process server like Dovecot is summed; PSS counts shared pages once).
//!
//! The client is hand-written and minimal so that the server is measured, not a client
//! library: implicit TLS only (both servers under test offer it), LOGIN, synchronising
//! literals read and written, responses counted rather than parsed. Not a mail client: it does
//! not understand what it reads beyond the tagged status and the few untagged lines it needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::bench::Trust;

/// One network operation may take this long at most (fetching 70 MB of bodies included).
const OP_TIMEOUT: Duration = Duration::from_secs(600);
/// A response line (without its literals) longer than this is a broken server.
const MAX_LINE: usize = 1 << 20;
/// A literal (one message) larger than this is a broken server.
const MAX_LITERAL: usize = 256 << 20;

/// Where and as whom.
#[derive(Debug, Clone)]
pub struct ImapTarget {
    /// An implicit-TLS (IMAPS) port.
    pub address: SocketAddr,
    pub trust: Trust,
    pub user: String,
    pub password: String,
    pub mailbox: String,
}

/// What `tern bench imap` runs.
#[derive(Debug, Clone)]
pub struct ImapBench {
    pub target: ImapTarget,
    /// Messages the mailbox should hold; missing ones are appended first.
    pub messages: usize,
    /// Timed repetitions of each measurement.
    pub runs: usize,
    /// The sender searched for (`UID SEARCH FROM`); the generated mail uses 50 senders
    /// `sender<N>@bench.test`, so one of them matches about 2 % of the messages.
    pub search_from: String,
    /// Only fill the mailbox, measure nothing.
    pub fill_only: bool,
}

/// One measured operation.
#[derive(Debug, Clone)]
pub struct Measure {
    pub name: &'static str,
    /// Each run's time.
    pub runs: Vec<Duration>,
    /// What one run returned (FETCH responses, SEARCH hits, octets), for a sanity check.
    pub detail: String,
}

impl Measure {
    pub fn median(&self) -> Duration {
        let mut sorted = self.runs.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct ImapReport {
    pub messages: usize,
    pub mailbox_bytes: u64,
    /// Messages appended per second, per fill chunk; empty when nothing was appended.
    pub append_rates: Vec<f64>,
    pub measures: Vec<Measure>,
}

impl ImapReport {
    pub fn append_median(&self) -> Option<f64> {
        let mut r = self.append_rates.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied()
    }
}

impl std::fmt::Display for ImapReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "mailbox   {} messages, {:.1} MB",
            self.messages,
            self.mailbox_bytes as f64 / 1e6
        )?;
        match self.append_median() {
            Some(rate) => writeln!(
                f,
                "{:<28} {:>10.1} msg/s  (median of {} chunks)",
                "APPEND",
                rate,
                self.append_rates.len()
            )?,
            None => writeln!(f, "{:<28} {:>10}", "APPEND", "(mailbox already full)")?,
        }
        for m in &self.measures {
            let runs: Vec<String> = m
                .runs
                .iter()
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                .collect();
            writeln!(
                f,
                "{:<28} {:>10.1} ms  (runs: {}; {})",
                m.name,
                m.median().as_secs_f64() * 1000.0,
                runs.join(" "),
                m.detail
            )?;
        }
        Ok(())
    }
}

/// Runs `tern bench imap`.
pub async fn run_imap(b: &ImapBench) -> anyhow::Result<ImapReport> {
    if b.runs == 0 {
        bail!("runs must be at least 1");
    }
    let connector = connector(&b.target.trust)?;
    let mut c = Conn::open(&b.target, &connector).await?;
    let existing = c.select(&b.target.mailbox).await?;
    let missing = b.messages.saturating_sub(existing);
    let mut append_rates = Vec::new();
    if missing > 0 {
        let chunks = if b.fill_only { 1 } else { b.runs };
        let per_chunk = missing.div_ceil(chunks);
        let mut n = existing;
        while n < b.messages {
            let count = per_chunk.min(b.messages - n);
            let start = Instant::now();
            for i in n..n + count {
                c.append(&b.target.mailbox, &generate(i)).await?;
            }
            append_rates.push(count as f64 / start.elapsed().as_secs_f64());
            n += count;
        }
    }
    let exists = c.select(&b.target.mailbox).await?;
    let mut report = ImapReport {
        messages: exists,
        mailbox_bytes: 0,
        append_rates,
        measures: Vec::new(),
    };
    if b.fill_only {
        c.logout().await;
        return Ok(report);
    }
    let select = format!("SELECT {}", quoted(&b.target.mailbox));
    let search = format!("UID SEARCH FROM {}", quoted(&b.search_from));
    let ops: [(&'static str, &str); 5] = [
        ("SELECT", &select),
        ("FETCH 1:* (FLAGS)", "FETCH 1:* (FLAGS)"),
        ("FETCH 1:* (FLAGS ENVELOPE)", "FETCH 1:* (FLAGS ENVELOPE)"),
        ("FETCH 1:* BODY.PEEK[]", "FETCH 1:* BODY.PEEK[]"),
        ("UID SEARCH FROM", &search),
    ];
    for (name, command) in ops {
        let mut m = Measure {
            name,
            runs: Vec::new(),
            detail: String::new(),
        };
        for _ in 0..b.runs {
            let start = Instant::now();
            let r = c.command(command).await?;
            m.runs.push(start.elapsed());
            if !r.ok {
                bail!("{command}: {}", r.status);
            }
            m.detail = match name {
                "SELECT" => format!("{exists} EXISTS"),
                "UID SEARCH FROM" => {
                    let hits = r
                        .lines
                        .iter()
                        .filter(|l| l.starts_with("* SEARCH"))
                        .map(|l| l.split_ascii_whitespace().count() - 2)
                        .sum::<usize>();
                    format!("{hits} hits")
                }
                _ => {
                    if name.contains("BODY") {
                        report.mailbox_bytes = r.literal_bytes;
                    }
                    format!(
                        "{} FETCH responses, {:.1} MB",
                        r.fetches,
                        r.bytes as f64 / 1e6
                    )
                }
            };
            if name.starts_with("FETCH") && r.fetches != exists {
                bail!(
                    "{command}: {} FETCH responses for {exists} messages",
                    r.fetches
                );
            }
        }
        report.measures.push(m);
    }
    c.logout().await;
    Ok(report)
}

/// What `tern bench imap-idle` runs.
#[derive(Debug, Clone)]
pub struct IdleBench {
    pub target: ImapTarget,
    pub connections: usize,
    /// Sessions being opened at once.
    pub concurrency: usize,
    /// The server's process; its descendants are counted too.
    pub pid: u32,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub processes: usize,
    pub rss_kb: u64,
    pub pss_kb: u64,
}

#[derive(Debug, Clone)]
pub struct IdleReport {
    pub connections: usize,
    pub open_time: Duration,
    /// Before anything.
    pub cold: Memory,
    /// Sessions opened and closed before `before` was read.
    pub warm_up: usize,
    pub before: Memory,
    pub after: Memory,
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |kb: u64| kb as f64 / 1024.0;
        let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / self.connections.max(1) as f64;
        writeln!(
            f,
            "idling    {} sessions (opened in {:.1} s)",
            self.connections,
            self.open_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "cold      RSS {:.1} MB  PSS {:.1} MB  ({} processes)",
            mb(self.cold.rss_kb),
            mb(self.cold.pss_kb),
            self.cold.processes
        )?;
        writeln!(
            f,
            "warm      RSS {:.1} MB  PSS {:.1} MB  (after {} sessions opened and closed)",
            mb(self.before.rss_kb),
            mb(self.before.pss_kb),
            self.warm_up
        )?;
        writeln!(
            f,
            "idle      RSS {:.1} MB  PSS {:.1} MB  ({} processes)",
            mb(self.after.rss_kb),
            mb(self.after.pss_kb),
            self.after.processes
        )?;
        writeln!(
            f,
            "per session  RSS {:.1} kB  PSS {:.1} kB",
            per(self.after.rss_kb, self.before.rss_kb),
            per(self.after.pss_kb, self.before.pss_kb)
        )
    }
}

/// Runs `tern bench imap-idle`: opens every session, measures, then closes them.
pub async fn run_idle(b: &IdleBench) -> anyhow::Result<IdleReport> {
    if b.connections == 0 || b.concurrency == 0 {
        bail!("connections and concurrency must be at least 1");
    }
    let connector = connector(&b.target.trust)?;
    let target = Arc::new(b.target.clone());
    let cold = memory(b.pid)?;
    // One round of logins first, closed again: the server's one-time growth (pools, caches,
    // the allocator's arenas after a burst of password hashing) is not the sessions' cost.
    let warm_up = b.concurrency.min(b.connections);
    let mut warming = tokio::task::JoinSet::new();
    for _ in 0..warm_up {
        let (target, connector) = (Arc::clone(&target), connector.clone());
        warming.spawn(async move {
            let mut c = Conn::open(&target, &connector).await?;
            c.select(&target.mailbox).await?;
            c.logout().await;
            anyhow::Ok(())
        });
    }
    while let Some(done) = warming.join_next().await {
        done.context("warm-up task")?.context("warm-up session")?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = memory(b.pid)?;
    let start = Instant::now();
    let mut sessions: Vec<Conn> = Vec::with_capacity(b.connections);
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0;
    while sessions.len() < b.connections {
        while next < b.connections && pending.len() < b.concurrency {
            let (target, connector) = (Arc::clone(&target), connector.clone());
            pending.spawn(async move {
                let mut c = Conn::open(&target, &connector).await?;
                c.select(&target.mailbox).await?;
                c.idle().await?;
                anyhow::Ok(c)
            });
            next += 1;
        }
        let Some(done) = pending.join_next().await else {
            break;
        };
        let opened = done.context("session task")?.with_context(|| {
            format!(
                "open session {} (is `ulimit -n` high enough?)",
                sessions.len() + 1
            )
        })?;
        sessions.push(opened);
    }
    let open_time = start.elapsed();
    // Let the server settle (allocator, lazily spawned work) before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = memory(b.pid)?;
    drop(sessions);
    Ok(IdleReport {
        connections: b.connections,
        open_time,
        cold,
        warm_up,
        before,
        after,
    })
}

/// `pid` and its descendants' resident memory (VmRSS from `/proc/<pid>/status`, Pss from
/// `smaps_rollup` where readable).
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").context("read /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // The command name may hold spaces and parentheses: fields follow the last ')'.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_ascii_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut m = Memory::default();
    for p in tree {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            if p == pid {
                bail!("no process {pid}");
            }
            continue;
        };
        m.processes += 1;
        m.rss_kb += field(&status, "VmRSS:");
        m.pss_kb += std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .map(|s| field(&s, "Pss:"))
            .unwrap_or(0);
    }
    Ok(m)
}

fn connector(trust: &Trust) -> anyhow::Result<TlsConnector> {
    match trust {
        Trust::Ca(ca) => tern_runtime::tls::connector_trusting(ca)
            .with_context(|| format!("load CA file {}", ca.display())),
        Trust::Insecure => {
            tern_mta::outbound::opportunistic_connector().context("TLS client configuration")
        }
    }
}

/// An IMAP quoted string (RFC 9051 §4.3); the bench's own names and passwords only.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Message `i` of the generated mailbox: deterministic, so both servers get the same mail.
/// Sizes: 70 % short (1–4 kB), 25 % letters (4–20 kB), 5 % with an attachment (20–100 kB).
pub fn generate(i: usize) -> Vec<u8> {
    let mut rng = XorShift::new(i as u64);
    let bucket = rng.below(100);
    let size = match bucket {
        0..70 => 1_000 + rng.below(3_000),
        70..95 => 4_000 + rng.below(16_000),
        95..99 => 20_000 + rng.below(36_000),
        _ => 60_000 + rng.below(40_000),
    } as usize;
    let sender = rng.below(50);
    let mut m = format!(
        "Return-Path: <sender{sender}@bench.test>\r\n\
         From: Sender {sender} <sender{sender}@bench.test>\r\n\
         To: Bench <bench@bench.test>\r\n\
         Subject: Message {i}: {}\r\n\
         Date: Mon, 23 Nov 2026 {:02}:{:02}:{:02} +0000\r\n\
         Message-ID: <{i}.{}@bench.test>\r\n\
         MIME-Version: 1.0\r\n",
        words(&mut rng, 6),
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        rng.next()
    );
    let attachment = bucket >= 95;
    if attachment {
        m.push_str(
            "Content-Type: multipart/mixed; boundary=\"=_bench\"\r\n\r\n\
             --=_bench\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        );
        let text = 800 + rng.below(1_200) as usize;
        while m.len() < text {
            m.push_str(&words(&mut rng, 12));
            m.push_str("\r\n");
        }
        m.push_str(
            "\r\n--=_bench\r\nContent-Type: application/pdf\r\n\
             Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n",
        );
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        while m.len() + 80 < size {
            let line: String = (0..76)
                .map(|_| B64[rng.below(64) as usize] as char)
                .collect();
            m.push_str(&line);
            m.push_str("\r\n");
        }
        m.push_str("--=_bench--\r\n");
    } else {
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
        while m.len() < size {
            m.push_str(&words(&mut rng, 12));
            m.push_str("\r\n");
        }
    }
    m.into_bytes()
}

fn words(rng: &mut XorShift, n: usize) -> String {
    const WORDS: [&str; 32] = [
        "the", "meeting", "report", "attached", "please", "review", "before", "friday", "thanks",
        "budget", "server", "mail", "quarter", "numbers", "draft", "notes", "call", "tomorrow",
        "project", "update", "schedule", "team", "question", "answer", "invoice", "travel",
        "office", "release", "version", "agenda", "minutes", "summary",
    ];
    (0..n)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// xorshift64*: reproducible filler, not randomness anyone relies on.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A command's outcome, counted.
struct Response {
    ok: bool,
    status: String,
    /// Untagged lines, literals left out (kept only when short).
    lines: Vec<String>,
    fetches: usize,
    bytes: u64,
    literal_bytes: u64,
}

struct Conn {
    io: BufReader<Box<dyn Io>>,
    tag: u64,
    line: Vec<u8>,
    literal: Vec<u8>,
}

impl Conn {
    /// Connects with implicit TLS, reads the greeting and logs in.
    async fn open(t: &ImapTarget, connector: &TlsConnector) -> anyhow::Result<Conn> {
        let deadline = Instant::now() + OP_TIMEOUT;
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(t.address))
            .await
            .map_err(|_| anyhow::anyhow!("connect to {}: timed out", t.address))?
            .with_context(|| format!("connect to {}", t.address))?;
        tcp.set_nodelay(true).context("set TCP_NODELAY")?;
        let name = ServerName::IpAddress(t.address.ip().into());
        let tls = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake: timed out"))?
            .context("TLS handshake")?;
        let mut c = Conn {
            io: BufReader::with_capacity(16 * 1024, Box::new(tls) as Box<dyn Io>),
            tag: 0,
            line: Vec::new(),
            literal: Vec::new(),
        };
        let greeting = c.read_line(deadline).await?;
        if !greeting.starts_with(b"* OK") {
            bail!("greeting: {}", String::from_utf8_lossy(&greeting));
        }
        let login = format!("LOGIN {} {}", quoted(&t.user), quoted(&t.password));
        let r = c.command(&login).await?;
        if !r.ok {
            bail!("LOGIN: {}", r.status);
        }
        Ok(c)
    }

    /// SELECT, returning EXISTS.
    async fn select(&mut self, mailbox: &str) -> anyhow::Result<usize> {
        let r = self.command(&format!("SELECT {}", quoted(mailbox))).await?;
        if !r.ok {
            bail!("SELECT {mailbox}: {}", r.status);
        }
        r.lines
            .iter()
            .find_map(|l| {
                let mut w = l.split_ascii_whitespace();
                let (_, n, what) = (w.next()?, w.next()?, w.next()?);
                what.eq_ignore_ascii_case("EXISTS")
                    .then(|| n.parse().ok())
                    .flatten()
            })
            .context("SELECT without EXISTS")
    }

    /// APPEND with a synchronising literal.
    async fn append(&mut self, mailbox: &str, message: &[u8]) -> anyhow::Result<()> {
        let deadline = Instant::now() + OP_TIMEOUT;
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        let head = format!("{tag} APPEND {} {{{}}}\r\n", quoted(mailbox), message.len());
        self.write(head.as_bytes(), deadline).await?;
        let cont = self.read_line(deadline).await?;
        if !cont.starts_with(b"+") {
            bail!("APPEND: {}", String::from_utf8_lossy(&cont).trim_end());
        }
        self.write(message, deadline).await?;
        self.write(b"\r\n", deadline).await?;
        let r = self.response(&tag, deadline).await?;
        if !r.ok {
            bail!("APPEND: {}", r.status);
        }
        Ok(())
    }

    /// IDLE, returning once the server has said "+".
    async fn idle(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + OP_TIMEOUT;
        self.tag += 1;
        self.write(format!("a{} IDLE\r\n", self.tag).as_bytes(), deadline)
            .await?;
        loop {
            let line = self.read_line(deadline).await?;
            if line.starts_with(b"+") {
                return Ok(());
            }
            if !line.starts_with(b"*") {
                bail!("IDLE: {}", String::from_utf8_lossy(&line).trim_end());
            }
        }
    }

    async fn logout(mut self) {
        let _ = self.command("LOGOUT").await;
    }

    async fn command(&mut self, command: &str) -> anyhow::Result<Response> {
        let deadline = Instant::now() + OP_TIMEOUT;
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.write(format!("{tag} {command}\r\n").as_bytes(), deadline)
            .await?;
        self.response(&tag, deadline).await
    }

    async fn write(&mut self, bytes: &[u8], deadline: Instant) -> anyhow::Result<()> {
        tokio::time::timeout_at(deadline, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| anyhow::anyhow!("write: timed out"))?
        .context("write")
    }

    /// Reads up to the tagged status line, reading (and counting) literals.
    async fn response(&mut self, tag: &str, deadline: Instant) -> anyhow::Result<Response> {
        let mut r = Response {
            ok: false,
            status: String::new(),
            lines: Vec::new(),
            fetches: 0,
            bytes: 0,
            literal_bytes: 0,
        };
        loop {
            // One logical line: text, and after each `{n}` its n octets, then more text.
            let mut text = self.read_line(deadline).await?;
            r.bytes += text.len() as u64;
            while let Some(n) = literal_length(&text) {
                if n > MAX_LITERAL {
                    bail!("literal of {n} octets");
                }
                self.literal.resize(n, 0);
                tokio::time::timeout_at(deadline, self.io.read_exact(&mut self.literal))
                    .await
                    .map_err(|_| anyhow::anyhow!("read: timed out"))?
                    .context("read literal")?;
                r.bytes += n as u64;
                r.literal_bytes += n as u64;
                let more = self.read_line(deadline).await?;
                r.bytes += more.len() as u64;
                text.truncate(text.len().min(256));
                text.extend_from_slice(&more);
            }
            let line = String::from_utf8_lossy(&text);
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix(tag).and_then(|l| l.strip_prefix(' ')) {
                r.ok = rest.starts_with("OK");
                r.status = rest.to_string();
                return Ok(r);
            }
            if line.starts_with("* ") {
                let mut w = line.split_ascii_whitespace();
                if w.nth(2).is_some_and(|v| v.eq_ignore_ascii_case("FETCH")) {
                    r.fetches += 1;
                } else if r.lines.len() < 1000 {
                    r.lines.push(line.to_string());
                }
            }
        }
    }

    /// One line through CRLF (returned with it).
    async fn read_line(&mut self, deadline: Instant) -> anyhow::Result<Vec<u8>> {
        self.line.clear();
        let n = tokio::time::timeout_at(
            deadline,
            (&mut self.io)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut self.line),
        )
        .await
        .map_err(|_| anyhow::anyhow!("read: timed out"))?
        .context("read")?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        if !self.line.ends_with(b"\n") {
            bail!("response line longer than {MAX_LINE} octets");
        }
        Ok(std::mem::take(&mut self.line))
    }
}

/// The length of the literal announced at the end of `line` (`{123}\r\n`), if any.
fn literal_length(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"\r\n").unwrap_or(line);
    let body = body.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&body[open + 1..]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_mail_is_deterministic_varied_and_about_7_kb() {
        assert_eq!(generate(7), generate(7));
        let sizes: Vec<usize> = (0..2000).map(|i| generate(i).len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((5_500..8_500).contains(&mean), "mean {mean}");
        assert!(*sizes.iter().min().unwrap() < 2_000);
        assert!(*sizes.iter().max().unwrap() > 50_000);
        for i in 0..200 {
            let m = generate(i);
            assert!(
                !m.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
                "bare LF in message {i}"
            );
            assert!(
                mail_parser::MessageParser::default().parse(&m).is_some(),
                "message {i} parses"
            );
        }
    }

    #[test]
    fn literal_lengths() {
        assert_eq!(literal_length(b"* 1 FETCH (BODY[] {42}\r\n"), Some(42));
        assert_eq!(literal_length(b"* 1 FETCH (FLAGS ())\r\n"), None);
        assert_eq!(literal_length(b"* 1 FETCH (X {x}\r\n"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
