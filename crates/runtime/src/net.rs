//! Sockets: a stream that can turn into TLS mid-session (STARTTLS/STLS), a listener loop that
//! enforces connection limits, and `drive`, which runs any I/O-free line protocol session
//! (SMTP, IMAP, POP3) over a stream with idle timeouts and shutdown.
//!
//! The protocol sessions decide every reply; this module only moves bytes, counts connections
//! (for the limits and for the `tern_connections_*` metrics) and keeps time.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Shutdown;
use crate::deflate::Deflate;
use crate::ops::names;

/// A client connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Has the kernel acknowledge what was received at once rather than after its delayed-ACK
    /// timer (TCP_QUICKACK, Linux; the kernel drops it again by itself, so the driver calls
    /// this after every read). A client that writes the end of a command separately, as
    /// Python's imaplib sends an APPEND literal and then its CRLF, has that last write held
    /// by Nagle's algorithm until our ACK comes: up to 40 ms per command without this.
    pub fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        {
            let tcp = match self {
                Stream::Plain(tcp) => tcp,
                Stream::Tls(tls) => tls.get_ref().0,
            };
            // Only a latency hint: a failure changes nothing else.
            let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
        }
    }

    /// Runs the server side of a TLS handshake on a plain stream.
    pub async fn upgrade(self, acceptor: &TlsAcceptor) -> io::Result<Stream> {
        match self {
            Stream::Plain(tcp) => Ok(Stream::Tls(Box::new(acceptor.accept(tcp).await?))),
            Stream::Tls(_) => Err(io::Error::other("stream is already TLS")),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the session asks the driver to do after a reply has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    StartTls,
    /// Both directions become raw DEFLATE (IMAP COMPRESS, RFC 4978); see
    /// [`LineProtocol::compress_started`].
    Compress,
    Close,
}

/// An I/O-free protocol session as the driver sees it. The SMTP, IMAP and POP3 crates each have
/// their own session type; agents adapt them to this trait in a few lines.
pub trait LineProtocol: Send {
    fn greeting(&self) -> Vec<u8>;
    fn feed(&mut self, input: &[u8]) -> impl Future<Output = (Vec<u8>, Action)> + Send;
    fn tls_started(&mut self);
    /// What to send the client right after the TLS handshake (ManageSieve, RFC 5804 §2.2,
    /// re-issues its capabilities); nothing by default.
    fn after_tls(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn timeout_reply(&self) -> Vec<u8>;
    fn shutdown_reply(&self) -> Vec<u8>;
    /// The silence allowed now, when it differs from [`Timeouts::idle`] (IMAP IDLE: 30 min).
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }
    /// Completes when the session may have news for a client that is waiting without a
    /// command under way (IMAP IDLE); `drive` then writes what [`LineProtocol::poll`] returns.
    /// Never completes by default. Must be cancel-safe: it is raced against socket reads.
    fn wake(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
    /// Unsolicited output after [`LineProtocol::wake`] completed.
    fn poll(&mut self) -> impl Future<Output = Vec<u8>> + Send {
        std::future::ready(Vec::new())
    }
    /// Where the session hands the finished part of a long reply while `feed` still produces
    /// the rest (IMAP FETCH of many messages); `drive` writes each piece as it comes, before
    /// `feed`'s own reply. Asked once, when the connection starts; none by default.
    fn early_output(&mut self) -> Option<futures::channel::mpsc::Receiver<Vec<u8>>> {
        None
    }
    /// After [`Action::Compress`]: the input the session holds that arrived after the command
    /// (already compressed), for `drive` to inflate and feed back.
    fn compress_started(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// The most inflated input handed to a session at once (COMPRESS): a few compressed bytes
/// can expand a thousandfold, and the session's limits should see it in pieces.
const INFLATE_CHUNK: usize = 64 * 1024;

/// Writes `bytes` (compressed when DEFLATE is on) and flushes.
async fn send(stream: &mut Stream, deflate: &mut Option<Deflate>, bytes: &[u8]) -> io::Result<()> {
    match deflate {
        Some(z) => stream.write_all(&z.deflate(bytes)?).await?,
        None => stream.write_all(bytes).await?,
    }
    stream.flush().await
}

/// Timeouts for `drive`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long the client may stay silent.
    pub idle: Duration,
    /// How long the TLS handshake after STARTTLS may take.
    pub handshake: Duration,
}

/// Bounds of the per-connection read buffer (see `drive`). The minimum is what a quiet
/// connection holds: a command line fits, and a full read doubles it.
const READ_MIN: usize = 512;
const READ_MAX: usize = 64 * 1024;

/// The buffer for the next read after one that returned `n` bytes into `buf`: twice as large
/// after a full read (up to [`READ_MAX`]), back to [`READ_MIN`] (memory returned) after a read
/// that fit in that, otherwise unchanged.
fn next_read_buffer(mut buf: Vec<u8>, n: usize) -> Vec<u8> {
    if n == buf.len() && buf.len() < READ_MAX {
        buf.resize((buf.len() * 2).min(READ_MAX), 0);
        buf
    } else if n <= READ_MIN && buf.len() > READ_MIN {
        vec![0u8; READ_MIN]
    } else {
        buf
    }
}

/// How a session ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Closed,
    ClientGone,
    IdleTimeout,
    Shutdown,
    TlsFailed,
}

/// Runs `session` over `stream` until either side closes. A `feed` that is under way is never
/// interrupted by shutdown: the end of DATA through the queue commit runs to completion, and the
/// shutdown reply goes out only between commands.
pub async fn drive<P: LineProtocol>(
    mut stream: Stream,
    mut session: P,
    starttls: Option<&TlsAcceptor>,
    timeouts: Timeouts,
    shutdown: &CancellationToken,
) -> io::Result<Ended> {
    stream.write_all(&session.greeting()).await?;
    stream.flush().await?;
    let mut early = session.early_output();
    // Small while the client is quiet (an IDLE session may wait for hours, and thousands of
    // them each holding a large buffer add up), doubled while reads fill it (a message body,
    // a literal), back to small after a short read.
    let mut buf = vec![0u8; READ_MIN];
    // The silence allowed is counted from the client's last input, not from the last
    // unsolicited update we sent it.
    let mut last_input = tokio::time::Instant::now();
    let mut deflate: Option<Deflate> = None;
    loop {
        let deadline = last_input + session.idle_timeout().unwrap_or(timeouts.idle);
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let _ = send(&mut stream, &mut deflate, &session.shutdown_reply()).await;
                let _ = stream.shutdown().await;
                return Ok(Ended::Shutdown);
            }
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => r,
            () = session.wake() => {
                let news = Box::pin(session.poll()).await;
                if !news.is_empty()
                    && let Err(e) = send(&mut stream, &mut deflate, &news).await
                {
                    return if is_disconnect(&e) { Ok(Ended::ClientGone) } else { Err(e) };
                }
                continue;
            }
        };
        last_input = tokio::time::Instant::now();
        let n = match read {
            Err(_) => {
                let _ = send(&mut stream, &mut deflate, &session.timeout_reply()).await;
                let _ = stream.shutdown().await;
                return Ok(Ended::IdleTimeout);
            }
            Ok(Ok(0)) => return Ok(Ended::ClientGone),
            Ok(Ok(n)) => {
                stream.ack_now();
                n
            }
            Ok(Err(e)) if is_disconnect(&e) => return Ok(Ended::ClientGone),
            Ok(Err(e)) => return Err(e),
        };
        // Plain input goes to the session as read; compressed input is inflated in pieces.
        let mut input: Vec<u8> = buf[..n].to_vec();
        buf = next_read_buffer(buf, n);
        let mut pos = 0;
        loop {
            let (chunk, more) = match deflate.as_mut() {
                None => (std::mem::take(&mut input), false),
                Some(z) => {
                    let (plain, used) = z.inflate(&input[pos..], INFLATE_CHUNK)?;
                    pos += used;
                    if plain.is_empty() {
                        break;
                    }
                    let more = plain.len() == INFLATE_CHUNK;
                    (plain, more)
                }
            };
            // Boxed: a command's future (a whole IMAP FETCH, an SMTP DATA commit) is large, and
            // held inline it would size this connection's task for as long as it lives, even
            // while the client is quiet. On the heap it exists only while a command runs.
            let (reply, action) = match early.as_mut() {
                None => Box::pin(session.feed(&chunk)).await,
                Some(early) => {
                    match feed_streaming(&mut session, &chunk, early, &mut stream, &mut deflate)
                        .await
                    {
                        Ok(done) => done,
                        Err(e) if is_disconnect(&e) => return Ok(Ended::ClientGone),
                        Err(e) => return Err(e),
                    }
                }
            };
            if !reply.is_empty()
                && let Err(e) = send(&mut stream, &mut deflate, &reply).await
            {
                return if is_disconnect(&e) {
                    Ok(Ended::ClientGone)
                } else {
                    Err(e)
                };
            }
            match action {
                Action::Continue => {}
                Action::Compress => {
                    // What the client sent after COMPRESS is compressed already.
                    deflate = Some(Deflate::new());
                    input = session.compress_started();
                    pos = 0;
                    continue;
                }
                Action::Close => {
                    let _ = stream.shutdown().await;
                    return Ok(Ended::Closed);
                }
                Action::StartTls => {
                    let Some(acceptor) = starttls else {
                        return Err(io::Error::other(
                            "session asked for STARTTLS on a listener without TLS",
                        ));
                    };
                    stream = match tokio::time::timeout(
                        timeouts.handshake,
                        Box::pin(stream.upgrade(acceptor)),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(_)) | Err(_) => return Ok(Ended::TlsFailed),
                    };
                    session.tls_started();
                    let hello = session.after_tls();
                    if !hello.is_empty()
                        && let Err(e) = send(&mut stream, &mut deflate, &hello).await
                    {
                        return if is_disconnect(&e) {
                            Ok(Ended::ClientGone)
                        } else {
                            Err(e)
                        };
                    }
                }
            }
            if deflate.is_none() || (pos == input.len() && !more) {
                break;
            }
        }
    }
}

/// Runs `session.feed(input)` while writing what it hands over early, in order. A write that
/// fails ends the command where it stands (the client is gone or broken): only reads are
/// under way when a session streams (see [`LineProtocol::early_output`]).
async fn feed_streaming<P: LineProtocol>(
    session: &mut P,
    input: &[u8],
    early: &mut futures::channel::mpsc::Receiver<Vec<u8>>,
    stream: &mut Stream,
    deflate: &mut Option<Deflate>,
) -> io::Result<(Vec<u8>, Action)> {
    use futures::StreamExt;
    let mut feed = Box::pin(session.feed(input));
    let done = loop {
        tokio::select! {
            biased;
            Some(piece) = early.next() => send(stream, deflate, &piece).await?,
            done = &mut feed => break done,
        }
    };
    drop(feed);
    // Pieces handed over just before `feed` returned precede its reply.
    while let Ok(piece) = early.try_recv() {
        send(stream, deflate, &piece).await?;
    }
    Ok(done)
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct ConnectionLimits {
    pub max_total: usize,
    pub max_per_ip: usize,
}

impl ConnectionLimits {
    pub const fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts open connections; a `Permit` gives its slot back when dropped.
#[derive(Clone)]
pub struct ConnectionGate {
    limits: ConnectionLimits,
    counts: Arc<Mutex<Counts>>,
}

pub struct Permit {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionGate {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// Takes a slot for `ip`, or None when the total or per-IP limit is reached.
    pub fn admit(&self, ip: IpAddr) -> Option<Permit> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let per_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= self.limits.max_total || per_ip >= self.limits.max_per_ip {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, per_ip + 1);
        Some(Permit {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A bound listener and what it needs to serve: the limits, an optional implicit-TLS acceptor,
/// and the bytes to send a client turned away by the limits (e.g. SMTP "421 4.7.0 ...").
pub struct Listener {
    pub name: &'static str,
    pub listener: TcpListener,
    pub limits: ConnectionLimits,
    pub implicit_tls: Option<TlsAcceptor>,
    pub busy_reply: Vec<u8>,
}

/// Accepts connections until shutdown, running `handle` for each admitted one on the tracker.
/// For implicit-TLS listeners the handshake happens in the connection's task, bounded by
/// `handshake_timeout`, so a slow client never stalls the accept loop.
pub async fn serve<F, Fut>(
    listener: Listener,
    shutdown: Shutdown,
    handshake_timeout: Duration,
    handle: F,
) where
    F: Fn(Stream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let gate = ConnectionGate::new(listener.limits);
    let handle = Arc::new(handle);
    let name = listener.name;
    // Up (for /readyz) while this loop accepts; down once it returns.
    let _up = shutdown.health.listener(name);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.token.cancelled() => break,
            a = listener.listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(permit) = gate.admit(peer.ip()) else {
            tracing::info!(listener = name, client.address = %peer, "connection refused: limit reached");
            metrics::counter!(names::CONNECTIONS_REFUSED, "listener" => name).increment(1);
            let busy = listener.busy_reply.clone();
            let is_tls = listener.implicit_tls.is_some();
            shutdown.tracker.spawn(async move {
                let mut tcp = tcp;
                if !is_tls {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&busy)).await;
                }
                let _ = tcp.shutdown().await;
            });
            continue;
        };
        let handle = handle.clone();
        let tls = listener.implicit_tls.clone();
        metrics::counter!(names::CONNECTIONS, "listener" => name).increment(1);
        shutdown.tracker.spawn(async move {
            let _permit = permit;
            let _open = OpenConnection::new(name);
            let stream = match tls {
                None => Stream::Plain(tcp),
                // Boxed, like a command in `drive`: the handshake's state is large and would
                // otherwise size the task for the connection's whole life.
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, Box::pin(acceptor.accept(tcp))).await {
                    Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                    _ => {
                        tracing::debug!(client.address = %peer, "implicit TLS handshake failed");
                        return;
                    }
                },
            };
            handle(stream, peer).await;
        });
    }
}

/// Counts a connection in `tern_connections_open` for as long as it lives.
struct OpenConnection(&'static str);

impl OpenConnection {
    fn new(listener: &'static str) -> Self {
        metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => listener).increment(1.0);
        OpenConnection(listener)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => self.0).decrement(1.0);
    }
}

/// Serves a line protocol on `listener` until shutdown: for every admitted connection, `make`
/// builds the session (told whether the connection is already TLS, and the peer) and the span
/// it runs in, and `drive` runs it with STARTTLS through `starttls` when given.
pub async fn serve_sessions<P, F>(
    listener: Listener,
    shutdown: Shutdown,
    starttls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    make: F,
) where
    P: LineProtocol + 'static,
    F: Fn(bool, SocketAddr) -> (P, tracing::Span) + Send + Sync + 'static,
{
    use tracing::Instrument;
    let token = shutdown.token.clone();
    serve(
        listener,
        shutdown,
        timeouts.handshake,
        move |stream, peer| {
            let (session, span) = make(stream.is_tls(), peer);
            let starttls = starttls.clone();
            let token = token.clone();
            async move {
                match drive(stream, session, starttls.as_ref(), timeouts, &token).await {
                    Ok(end) => tracing::debug!(?end, "session ended"),
                    Err(e) => tracing::debug!(error = %e, "session failed"),
                }
            }
            .instrument(span)
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffer_grows_on_full_reads_and_shrinks_when_quiet() {
        let buf = vec![0u8; READ_MIN];
        let buf = next_read_buffer(buf, 10);
        assert_eq!(buf.len(), READ_MIN, "a short read keeps it small");
        let mut buf = next_read_buffer(buf, READ_MIN);
        assert_eq!(buf.len(), 2 * READ_MIN);
        while buf.len() < READ_MAX {
            let n = buf.len();
            buf = next_read_buffer(buf, n);
        }
        assert_eq!(buf.len(), READ_MAX);
        let buf = next_read_buffer(buf, READ_MAX);
        assert_eq!(buf.len(), READ_MAX, "never beyond the maximum");
        let buf = next_read_buffer(buf, READ_MIN + 1);
        assert_eq!(buf.len(), READ_MAX, "a middling read keeps the size");
        let buf = next_read_buffer(buf, 3);
        assert_eq!(
            (buf.len(), buf.capacity()),
            (READ_MIN, READ_MIN),
            "memory returned"
        );
    }

    #[test]
    fn gate_enforces_total_and_per_ip_limits_and_frees_slots() {
        let gate = ConnectionGate::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "per-IP limit");
        let _p3 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "total limit");
        drop(p1);
        assert!(gate.admit(a).is_some(), "slot given back");
    }

    /// Echoes lines upper-cased; "QUIT" closes; "DEFLATE" turns on compression.
    struct Upper(Vec<u8>);
    impl LineProtocol for Upper {
        fn greeting(&self) -> Vec<u8> {
            b"HELLO\r\n".to_vec()
        }
        async fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Action) {
            self.0.extend_from_slice(input);
            let mut out = Vec::new();
            while let Some(i) = self.0.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.0.drain(..=i).collect();
                if line.starts_with(b"QUIT") {
                    out.extend_from_slice(b"BYE\r\n");
                    return (out, Action::Close);
                }
                if line.starts_with(b"DEFLATE") {
                    out.extend_from_slice(b"OK\r\n");
                    return (out, Action::Compress);
                }
                out.extend(line.to_ascii_uppercase());
            }
            (out, Action::Continue)
        }
        fn compress_started(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.0)
        }
        fn tls_started(&mut self) {}
        fn timeout_reply(&self) -> Vec<u8> {
            b"TIMEOUT\r\n".to_vec()
        }
        fn shutdown_reply(&self) -> Vec<u8> {
            b"SHUTDOWN\r\n".to_vec()
        }
    }

    /// Hands three pieces over early, then replies; the channel holds one piece, so this
    /// completes only if the driver writes while `feed` runs.
    struct Chatty(Option<futures::channel::mpsc::Sender<Vec<u8>>>);
    impl LineProtocol for Chatty {
        fn greeting(&self) -> Vec<u8> {
            b"HI\r\n".to_vec()
        }
        async fn feed(&mut self, _input: &[u8]) -> (Vec<u8>, Action) {
            use futures::SinkExt;
            let tx = self.0.as_mut().unwrap();
            for piece in ["one\r\n", "two\r\n", "three\r\n"] {
                tx.send(piece.as_bytes().to_vec()).await.unwrap();
            }
            (b"END\r\n".to_vec(), Action::Close)
        }
        fn early_output(&mut self) -> Option<futures::channel::mpsc::Receiver<Vec<u8>>> {
            let (tx, rx) = futures::channel::mpsc::channel(0);
            self.0 = Some(tx);
            Some(rx)
        }
        fn tls_started(&mut self) {}
        fn timeout_reply(&self) -> Vec<u8> {
            Vec::new()
        }
        fn shutdown_reply(&self) -> Vec<u8> {
            Vec::new()
        }
    }

    #[tokio::test]
    async fn drive_writes_early_output_in_order_while_feed_runs() {
        let (mut client, server) = pair().await;
        let token = CancellationToken::new();
        let task = tokio::spawn(async move {
            drive(Stream::Plain(server), Chatty(None), None, T, &token).await
        });
        client.write_all(b"go\r\n").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
            .await
            .expect("the driver drains early output while feed runs")
            .unwrap();
        assert_eq!(got, b"HI\r\none\r\ntwo\r\nthree\r\nEND\r\n");
        assert_eq!(task.await.unwrap().unwrap(), Ended::Closed);
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    const T: Timeouts = Timeouts {
        idle: Duration::from_secs(30),
        handshake: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn drive_runs_a_session_to_close() {
        let (mut client, server) = pair().await;
        let token = CancellationToken::new();
        let task = tokio::spawn(async move {
            drive(Stream::Plain(server), Upper(Vec::new()), None, T, &token).await
        });
        client.write_all(b"abc\r\nQUIT\r\n").await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HELLO\r\nABC\r\nBYE\r\n");
        assert_eq!(task.await.unwrap().unwrap(), Ended::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn drive_times_out_idle_clients() {
        let (mut client, server) = pair().await;
        let token = CancellationToken::new();
        let task = tokio::spawn(async move {
            drive(Stream::Plain(server), Upper(Vec::new()), None, T, &token).await
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HELLO\r\nTIMEOUT\r\n");
        assert_eq!(task.await.unwrap().unwrap(), Ended::IdleTimeout);
    }

    #[tokio::test]
    async fn drive_says_goodbye_on_shutdown() {
        let (mut client, server) = pair().await;
        let token = CancellationToken::new();
        let t2 = token.clone();
        let task = tokio::spawn(async move {
            drive(Stream::Plain(server), Upper(Vec::new()), None, T, &t2).await
        });
        let mut hello = [0u8; 7];
        client.read_exact(&mut hello).await.unwrap();
        token.cancel();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"SHUTDOWN\r\n");
        assert_eq!(task.await.unwrap().unwrap(), Ended::Shutdown);
    }

    #[tokio::test]
    async fn drive_compresses_both_ways_after_the_switch() {
        let (mut client, server) = pair().await;
        let token = CancellationToken::new();
        let task = tokio::spawn(async move {
            drive(Stream::Plain(server), Upper(Vec::new()), None, T, &token).await
        });
        let mut z = Deflate::new();
        // Compressed input pipelined right after the switch, in the same write.
        let mut first = b"abc\r\nDEFLATE\r\n".to_vec();
        first.extend(z.deflate(b"def\r\n").unwrap());
        client.write_all(&first).await.unwrap();
        // More than one inflate piece (INFLATE_CHUNK) from a small compressed write.
        let big = format!("{}\r\n", "x".repeat(99)).repeat(1000);
        client
            .write_all(&z.deflate(format!("{big}QUIT\r\n").as_bytes()).unwrap())
            .await
            .unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let plain = b"HELLO\r\nABC\r\nOK\r\n";
        assert_eq!(&got[..plain.len()], plain);
        let (inflated, used) = z.inflate(&got[plain.len()..], 1 << 20).unwrap();
        assert_eq!(used, got.len() - plain.len());
        let expected = format!("DEF\r\n{}BYE\r\n", big.to_ascii_uppercase());
        assert_eq!(String::from_utf8(inflated).unwrap(), expected);
        assert_eq!(task.await.unwrap().unwrap(), Ended::Closed);
    }
}
