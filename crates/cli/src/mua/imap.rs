//! Reading mail over IMAP4rev1 (RFC 3501) with async-imap on tokio: connect (implicit TLS,
//! STARTTLS per §6.2.1, or clear text), LOGIN, then either list a mailbox page with EXAMINE
//! (read-only, §6.3.2, so listing never changes a flag) or fetch one message with SELECT and
//! BODY[] (which sets `\Seen`, §6.4.5, as reading a message should).
//!
//! Deliberately not done here: AUTHENTICATE mechanisms (LOGIN is what every server offers),
//! modified UTF-7 mailbox names (§5.1.3; names are sent as given), IDLE, and keeping a
//! connection between commands: each call is one short session ending in LOGOUT.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_imap::imap_proto::{Response, Status};
use async_imap::types::{Fetch, Flag};
use async_imap::{Client, Session};
use futures::TryStreamExt;
use mail_parser::{Address, DateTime, MessageParser, MimeHeaders};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::progress::Progress;
use super::tls::{certificate_hint, client_config};
use super::{Attachment, ReadMessage, Security, Server, Summary};

/// The longest we wait for one step (connect, TLS, login, one command) before giving up, so a
/// dead server makes the command fail instead of hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The byte stream under the IMAP client: clear text until TLS, or TLS. Both variants are
/// `Unpin`, so forwarding the poll methods needs no pin projection.
#[derive(Debug)]
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How long we wait for the server's first line (RFC 3501 §7.1.1 greeting).
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) type ImapSession = Session<Transport>;

/// Runs one step under [`STEP_TIMEOUT`], naming the step if it runs out.
pub(super) async fn step<T>(
    what: impl FnOnce() -> String,
    future: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(result) => result,
        Err(_) => Err(anyhow!(
            "{} timed out after {} s: is the server reachable?",
            what(),
            STEP_TIMEOUT.as_secs()
        )),
    }
}

async fn tls_handshake(tcp: TcpStream, server: &Server) -> Result<Transport> {
    let config = client_config(server.ca_file.as_deref())?;
    let name = ServerName::try_from(server.host.clone())
        .with_context(|| format!("{:?} is not a valid host name for TLS", server.host))?;
    let at = format!("{}:{}", server.host, server.port);
    let tls = match TlsConnector::from(config).connect(name, tcp).await {
        Ok(tls) => tls,
        Err(error) => {
            let hint = certificate_hint(&error.to_string(), &server.host)
                .unwrap_or_else(|| "check --tls: is this an implicit-TLS port?".to_string());
            return Err(anyhow::Error::new(error).context(format!("TLS with {at} failed: {hint}")));
        }
    };
    Ok(Transport::Tls(Box::new(tls)))
}

/// Reads the server greeting (RFC 3501 §7.1): OK or PREAUTH lets us go on, BYE means the
/// server refuses us.
async fn read_greeting<T>(client: &mut Client<T>, server: &Server) -> Result<()>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let at = format!("{}:{}", server.host, server.port);
    // An implicit-TLS port stays silent while it waits for our ClientHello, so a missing
    // greeting is usually a missing --tls; say so long before STEP_TIMEOUT.
    let greeting = tokio::time::timeout(GREETING_TIMEOUT, client.read_response())
        .await
        .map_err(|_| {
            anyhow!(
                "{at} sent no IMAP greeting within {} s: if it is an implicit-TLS port (993) \
                 use --tls",
                GREETING_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("read the IMAP greeting from {at}"))?
        .ok_or_else(|| {
            anyhow!("{at} closed the connection before greeting: is it an IMAP port?")
        })?;
    match greeting.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            ..
        } => Ok(()),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => bail!(
            "{at} refused the connection: {}",
            outcome.information.as_deref().unwrap_or("BYE")
        ),
        _ => bail!("{at} did not send an IMAP greeting: check the port and --tls"),
    }
}

/// Connects, protects the connection as configured, and logs in.
pub(super) async fn connect(server: &Server) -> Result<ImapSession> {
    let at = format!("{}:{}", server.host, server.port);
    let tcp = step(|| format!("connecting to {at}"), async {
        TcpStream::connect((server.host.as_str(), server.port))
            .await
            .with_context(|| {
                format!("connect to IMAP server {at}: is the server running and the port right?")
            })
    })
    .await?;
    let client = step(
        || format!("setting up the IMAP connection to {at}"),
        async {
            match server.security {
                Security::Plain => {
                    let mut client = Client::new(Transport::Plain(tcp));
                    read_greeting(&mut client, server).await?;
                    Ok(client)
                }
                Security::Tls => {
                    let mut client = Client::new(tls_handshake(tcp, server).await?);
                    read_greeting(&mut client, server).await?;
                    Ok(client)
                }
                Security::Starttls => {
                    let mut client = Client::new(tcp);
                    read_greeting(&mut client, server).await?;
                    client
                        .run_command_and_check_ok("STARTTLS", None)
                        .await
                        .with_context(|| {
                            format!(
                                "{at} refused STARTTLS: use --tls if this is an \
                                 implicit-TLS port (993)"
                            )
                        })?;
                    // RFC 3501 §6.2.1: the TLS negotiation starts right after the tagged OK,
                    // and no greeting follows it.
                    Ok(Client::new(
                        tls_handshake(client.into_inner(), server).await?,
                    ))
                }
            }
        },
    )
    .await?;
    let session = step(|| format!("logging in to {at}"), async {
        client
            .login(&server.user, &server.password)
            .await
            .map_err(|(error, _client)| match error {
                async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_) => {
                    anyhow::Error::new(error).context(format!(
                        "authentication failed for {}: check the password (--password or TERN_PASSWORD)",
                        server.user
                    ))
                }
                other => anyhow::Error::new(other).context(format!("log in to {at}")),
            })
    })
    .await?;
    Ok(session)
}

/// Ends the session politely. The caller already has what it came for, so a failing LOGOUT is
/// not worth reporting.
pub(super) async fn logout(mut session: ImapSession) {
    let _ = tokio::time::timeout(STEP_TIMEOUT, session.logout()).await;
}

pub(super) fn mailbox_error(
    error: async_imap::error::Error,
    mailbox: &str,
    server: &Server,
) -> anyhow::Error {
    anyhow::Error::new(error).context(format!(
        "open mailbox {mailbox:?} on {}:{}: check its name (INBOX always exists)",
        server.host, server.port
    ))
}

/// The sequence range for `page` (from 1) of `limit` messages, newest first: page 1 holds the
/// highest sequence numbers. `None` when the page lies beyond the mailbox.
pub(super) fn page_range(total: u32, page: u32, limit: u32) -> Option<(u32, u32)> {
    let skip = page.saturating_sub(1).checked_mul(limit)?;
    let high = total.checked_sub(skip).filter(|h| *h >= 1)?;
    if limit == 0 {
        return None;
    }
    let low = high.saturating_sub(limit - 1).max(1);
    Some((low, high))
}

/// Lists a page of a mailbox, newest first, without changing anything (EXAMINE).
pub async fn inbox(
    server: &Server,
    mailbox: &str,
    page: u32,
    limit: u32,
) -> Result<(Vec<Summary>, u32)> {
    let mut session = connect(server).await?;
    let at = format!("{}:{}", server.host, server.port);
    let status = step(|| format!("EXAMINE {mailbox} on {at}"), async {
        session
            .examine(mailbox)
            .await
            .map_err(|e| mailbox_error(e, mailbox, server))
    })
    .await?;
    let total = status.exists;
    let Some((low, high)) = page_range(total, page, limit) else {
        logout(session).await;
        return Ok((Vec::new(), total));
    };
    let fetches: Vec<Fetch> = step(|| format!("FETCH from {mailbox} on {at}"), async {
        // BODY.PEEK (RFC 3501 §6.4.5) leaves \Seen alone; EXAMINE already guarantees that,
        // PEEK makes the intent explicit for servers that are lax about read-only mode.
        let stream = session
            .fetch(
                format!("{low}:{high}"),
                "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER])",
            )
            .await
            .with_context(|| format!("list messages in {mailbox:?}"))?;
        // More than 100 headers take a noticeable while on a slow link: count them on stderr.
        let wanted = u64::from(high - low + 1);
        let mut progress = Progress::new(format!("listing {mailbox}"), wanted, wanted > 100);
        let list: Vec<Fetch> = stream
            .inspect_ok(|_| progress.inc(1))
            .try_collect()
            .await
            .with_context(|| format!("read the message list of {mailbox:?}"))?;
        progress.finish();
        Ok(list)
    })
    .await?;
    logout(session).await;

    let mut list: Vec<Summary> = fetches
        .iter()
        // Servers may send unsolicited FETCH responses (flag changes) for other messages;
        // only the ones we asked for, carrying a header, belong in the listing.
        .filter(|f| (low..=high).contains(&f.message) && f.header().is_some())
        .map(summarize)
        .collect();
    list.sort_by_key(|s| std::cmp::Reverse(s.seq));
    list.dedup_by_key(|s| s.seq);
    Ok((list, total))
}

fn flag_name(flag: &Flag<'_>) -> String {
    match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(name) => name.to_string(),
    }
}

fn summarize(fetch: &Fetch) -> Summary {
    let fallback_date = fetch
        .internal_date()
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    summary_from_header(
        fetch.message,
        fetch.uid.unwrap_or(0),
        fetch.size.unwrap_or(0),
        fetch.flags().map(|f| flag_name(&f)).collect(),
        fetch.header().unwrap_or_default(),
        fallback_date,
    )
}

/// Builds a listing line from the raw header block; pure, so it is tested without a server.
pub(super) fn summary_from_header(
    seq: u32,
    uid: u32,
    size: u32,
    flags: Vec<String>,
    header: &[u8],
    fallback_date: String,
) -> Summary {
    let parsed = MessageParser::new().parse_headers(header);
    let (date, from, subject) = match &parsed {
        Some(message) => (
            message.date().map(short_date).unwrap_or(fallback_date),
            message
                .from()
                .and_then(|a| a.first())
                .map(|a| {
                    a.name()
                        .filter(|n| !n.trim().is_empty())
                        .or(a.address())
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap_or_default(),
            message.subject().unwrap_or_default().to_string(),
        ),
        None => (fallback_date, String::new(), String::new()),
    };
    Summary {
        seq,
        uid,
        date,
        from,
        subject,
        flags,
        size,
    }
}

/// `YYYY-MM-DD HH:MM` in the zone the sender wrote the Date in.
fn short_date(date: &DateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        date.year, date.month, date.day, date.hour, date.minute
    )
}

/// Reads message `n` (a sequence number) in full; SELECT and BODY[] mark it `\Seen`.
pub async fn read(server: &Server, mailbox: &str, n: u32) -> Result<ReadMessage> {
    let mut session = connect(server).await?;
    let at = format!("{}:{}", server.host, server.port);
    let status = step(|| format!("SELECT {mailbox} on {at}"), async {
        session
            .select(mailbox)
            .await
            .map_err(|e| mailbox_error(e, mailbox, server))
    })
    .await?;
    if n == 0 || n > status.exists {
        logout(session).await;
        bail!(
            "message {n} does not exist in {mailbox} ({} messages): see tern inbox for the numbers",
            status.exists
        );
    }
    let fetches: Vec<Fetch> = step(|| format!("FETCH {n} from {mailbox} on {at}"), async {
        let stream = session
            .fetch(n.to_string(), "(UID BODY[])")
            .await
            .with_context(|| format!("fetch message {n} from {mailbox:?}"))?;
        stream
            .try_collect()
            .await
            .with_context(|| format!("read message {n} from {mailbox:?}"))
    })
    .await?;
    logout(session).await;
    // The body may come in one FETCH response and the new \Seen flag in another (§7.4.2).
    let fetch = fetches
        .iter()
        .find(|f| f.message == n && f.body().is_some())
        .ok_or_else(|| anyhow!("the server sent no body for message {n} in {mailbox:?}"))?;
    let uid = fetches.iter().find_map(|f| f.uid).unwrap_or(0);
    let raw = fetch.body().unwrap_or_default().to_vec();
    Ok(parse_message(uid, raw))
}

fn format_addresses(address: &Address<'_>) -> String {
    address
        .iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(addr)) if !name.trim().is_empty() => format!("{name} <{addr}>"),
            (_, Some(addr)) => addr.to_string(),
            (Some(name), None) => name.to_string(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decodes a raw message into the parts `tern read` shows; pure, so it is tested without a
/// server. A message mail-parser cannot make sense of still comes back with its raw bytes.
pub(super) fn parse_message(uid: u32, raw: Vec<u8>) -> ReadMessage {
    let Some(message) = MessageParser::default().parse(&raw) else {
        return ReadMessage {
            uid,
            headers: Vec::new(),
            text: String::from_utf8_lossy(&raw).into_owned(),
            attachments: Vec::new(),
            raw,
        };
    };
    let mut headers = Vec::new();
    if let Some(date) = message.header_raw("Date") {
        // Unfold (RFC 5322 §2.2.3) so the date stays on one line.
        let date = date.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.push(("Date".to_string(), date));
    }
    for (name, value) in [
        ("From", message.from()),
        ("To", message.to()),
        ("Cc", message.cc()),
    ] {
        if let Some(address) = value {
            headers.push((name.to_string(), format_addresses(address)));
        }
    }
    if let Some(subject) = message.subject() {
        headers.push(("Subject".to_string(), subject.to_string()));
    }
    if let Some(id) = message.message_id() {
        headers.push(("Message-ID".to_string(), format!("<{id}>")));
    }
    // body_text converts an HTML-only body to text, which is what a terminal can show.
    let text = message
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let attachments = message
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_string())
                .to_ascii_lowercase();
            let filename = part
                .attachment_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("attachment-{}", i + 1));
            Attachment {
                filename,
                content_type,
                data: part.contents().to_vec(),
            }
        })
        .collect();
    drop(message);
    ReadMessage {
        uid,
        headers,
        text,
        attachments,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_count_from_the_newest() {
        assert_eq!(page_range(0, 1, 20), None);
        assert_eq!(page_range(5, 1, 20), Some((1, 5)));
        assert_eq!(page_range(45, 1, 20), Some((26, 45)));
        assert_eq!(page_range(45, 2, 20), Some((6, 25)));
        assert_eq!(page_range(45, 3, 20), Some((1, 5)));
        assert_eq!(page_range(45, 4, 20), None);
        assert_eq!(page_range(45, 0, 20), Some((26, 45)));
        assert_eq!(page_range(45, 1, 0), None);
        assert_eq!(page_range(u32::MAX, u32::MAX, u32::MAX), None);
    }

    #[test]
    fn summary_decodes_the_header() {
        let header = b"Date: Tue, 07 May 2024 09:05:00 +0200\r\n\
From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.test>\r\n\
Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n\r\n";
        let summary = summary_from_header(
            3,
            17,
            1234,
            vec!["\\Seen".into()],
            header,
            "2000-01-01 00:00".into(),
        );
        assert_eq!(
            summary,
            Summary {
                seq: 3,
                uid: 17,
                date: "2024-05-07 09:05".into(),
                from: "Jürgen".into(),
                subject: "Grüße".into(),
                flags: vec!["\\Seen".into()],
                size: 1234,
            }
        );
    }

    #[test]
    fn summary_falls_back_when_headers_are_missing() {
        let summary = summary_from_header(
            1,
            1,
            10,
            vec![],
            b"From: bare@example.test\r\n\r\n",
            "2024-01-02 03:04".into(),
        );
        assert_eq!(summary.date, "2024-01-02 03:04");
        assert_eq!(summary.from, "bare@example.test");
        assert_eq!(summary.subject, "");
    }

    #[test]
    fn parses_a_multipart_message() {
        let raw = b"Date: Tue, 07 May 2024\r\n 09:05:00 +0200\r\n\
From: Alice <alice@example.test>\r\n\
To: bob@example.test, Carol <carol@example.test>\r\n\
Subject: Report\r\n\
Message-ID: <abc@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Here it is.\r\n\
--b1\r\n\
Content-Type: application/PDF; name=\"r.pdf\"\r\n\
Content-Disposition: attachment; filename=\"r.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQ=\r\n\
--b1--\r\n"
            .to_vec();
        let msg = parse_message(9, raw.clone());
        assert_eq!(msg.uid, 9);
        assert_eq!(
            msg.headers,
            vec![
                ("Date".into(), "Tue, 07 May 2024 09:05:00 +0200".into()),
                ("From".into(), "Alice <alice@example.test>".into()),
                (
                    "To".into(),
                    "bob@example.test, Carol <carol@example.test>".into()
                ),
                ("Subject".into(), "Report".into()),
                ("Message-ID".into(), "<abc@example.test>".into()),
            ]
        );
        assert_eq!(msg.text.trim_end(), "Here it is.");
        assert_eq!(
            msg.attachments,
            vec![Attachment {
                filename: "r.pdf".into(),
                content_type: "application/pdf".into(),
                data: b"%PDF-1.4".to_vec(),
            }]
        );
        assert_eq!(msg.raw, raw);
    }

    #[test]
    fn html_only_message_becomes_text() {
        let raw = b"From: a@example.test\r\nSubject: hi\r\nContent-Type: text/html\r\n\r\n\
<html><body><p>Hello <b>there</b></p><script>x</script></body></html>\r\n"
            .to_vec();
        let msg = parse_message(1, raw);
        assert!(msg.text.contains("Hello there"), "{:?}", msg.text);
        assert!(!msg.text.contains("<b>"), "{:?}", msg.text);
    }
}
