//! The mailbox access agent (`tern-maa`): IMAP (143 with STARTTLS, 993 with TLS), POP3 (110
//! with STLS, 995 with TLS) and the gRPC Mailbox service.
//!
//! The protocols themselves live in `tern-imap` and `tern-pop3`; this crate binds them to sockets
//! and to the store through `StoreBackend`. It never writes new mail (the MDA does) and never
//! parses protocol bytes itself.

mod backend;
mod grpc;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tern_runtime::Shutdown;
use tern_runtime::net::{ConnectionLimits, Listener, Timeouts, serve_sessions};
use tern_runtime::sessions::{ImapConnection, Pop3Connection};
use tern_runtime::telemetry::LogFormat;
use tern_runtime::tls::CertFiles;
use tern_store::Store;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use backend::StoreBackend;
pub use grpc::MailboxService;

/// `tern-maa` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub database_url: String,
    pub hostname: String,
    #[serde(default = "d_imap")]
    pub imap_listen: SocketAddr,
    #[serde(default = "d_imaps")]
    pub imaps_listen: SocketAddr,
    #[serde(default = "d_pop3")]
    pub pop3_listen: SocketAddr,
    #[serde(default = "d_pop3s")]
    pub pop3s_listen: SocketAddr,
    #[serde(default = "d_grpc")]
    pub grpc_listen: SocketAddr,
    pub tls: CertFiles,
    #[serde(default)]
    pub limits: AccessLimits,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (off unless set).
    #[serde(default)]
    pub metrics: tern_runtime::ops::MetricsConfig,
}

fn d_imap() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 143))
}
fn d_imaps() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 993))
}
fn d_pop3() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 110))
}
fn d_pop3s() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 995))
}
fn d_grpc() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50054))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AccessLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// RFC 9051 §5.4: an autologout timer must be at least 30 minutes.
    pub imap_idle_timeout_secs: u64,
    /// RFC 1939 §3: the POP3 autologout timer must be at least 10 minutes.
    pub pop3_idle_timeout_secs: u64,
    pub max_failed_logins: u32,
    /// Largest literal a client may send (APPEND and others).
    pub max_literal: u32,
    /// Largest message IMAP APPEND stores, advertised as APPENDLIMIT (RFC 7889). Keep it at the
    /// MTA's and MDA's `max_message_size`, so a client can store what delivery would take.
    pub max_message_size: u32,
}

impl Default for AccessLimits {
    fn default() -> Self {
        Self {
            max_connections: 5000,
            max_connections_per_ip: 50,
            imap_idle_timeout_secs: 30 * 60,
            pop3_idle_timeout_secs: 10 * 60,
            max_failed_logins: 3,
            max_literal: 50 * 1024 * 1024,
            max_message_size: u32::try_from(
                tern_runtime::config::SmtpLimits::default().max_message_size,
            )
            .unwrap_or(u32::MAX),
        }
    }
}

pub struct Listeners {
    pub imap: TcpListener,
    pub imaps: TcpListener,
    pub pop3: TcpListener,
    pub pop3s: TcpListener,
    pub grpc: TcpListener,
}

/// Serves IMAP, POP3 and gRPC Mailbox until shutdown.
pub async fn run(
    hostname: String,
    tls: CertFiles,
    limits: AccessLimits,
    listeners: Listeners,
    store: Store,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let acceptor = tern_runtime::tls::acceptor(&tls)?;
    tracing::info!(
        imap.address = %listeners.imap.local_addr()?,
        imaps.address = %listeners.imaps.local_addr()?,
        pop3.address = %listeners.pop3.local_addr()?,
        pop3s.address = %listeners.pop3s.local_addr()?,
        grpc.address = %listeners.grpc.local_addr()?,
        "maa serving"
    );
    let conn = ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip);
    let imap_busy = b"* BYE too many connections, try again later\r\n".to_vec();
    let pop_busy = b"-ERR [SYS/TEMP] too many connections, try again later\r\n".to_vec();
    let mut tasks = Vec::new();
    for (name, listener, implicit) in [
        ("imap", listeners.imap, false),
        ("imaps", listeners.imaps, true),
    ] {
        let l = Listener {
            name,
            listener,
            limits: conn,
            implicit_tls: implicit.then(|| acceptor.clone()),
            busy_reply: imap_busy.clone(),
        };
        tasks.push(tokio::spawn(imap_listener(
            l,
            acceptor.clone(),
            hostname.clone(),
            limits.clone(),
            store.clone(),
            shutdown.clone(),
        )));
    }
    for (name, listener, implicit) in [
        ("pop3", listeners.pop3, false),
        ("pop3s", listeners.pop3s, true),
    ] {
        let l = Listener {
            name,
            listener,
            limits: conn,
            implicit_tls: implicit.then(|| acceptor.clone()),
            busy_reply: pop_busy.clone(),
        };
        tasks.push(tokio::spawn(pop3_listener(
            l,
            acceptor.clone(),
            hostname.clone(),
            limits.clone(),
            store.clone(),
            shutdown.clone(),
        )));
    }
    let token = shutdown.token.clone();
    let health = tern_runtime::grpc::health_service(&shutdown, &["tern.v1.Mailbox"]).await;
    let _grpc_up = shutdown.health.listener("maa.grpc");
    let grpc = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(60))
        .trace_fn(tern_runtime::telemetry::grpc_server_span)
        .add_service(health)
        .add_service(
            tern_rpc::v1::mailbox_server::MailboxServer::new(
                MailboxService::new(store).with_shutdown(token.clone()),
            )
            .max_decoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listeners.grpc),
            token.cancelled_owned(),
        )
        .await;
    for t in tasks {
        t.await?;
    }
    grpc?;
    Ok(())
}

async fn imap_listener(
    listener: Listener,
    acceptor: TlsAcceptor,
    hostname: String,
    limits: AccessLimits,
    store: Store,
    shutdown: Shutdown,
) {
    let name = listener.name;
    let timeouts = Timeouts {
        idle: Duration::from_secs(limits.imap_idle_timeout_secs),
        handshake: Duration::from_secs(30),
    };
    serve_sessions(listener, shutdown, Some(acceptor), timeouts, move |tls_active, peer| {
        let config = tern_imap::Config {
            tls_available: true,
            login_requires_tls: true,
            // APPEND's literal is the message: the delivery limit bounds it (APPENDLIMIT).
            max_literal: limits.max_literal.min(limits.max_message_size),
            max_failed_logins: limits.max_failed_logins,
            greeting_host: hostname.clone(),
        };
        let session = ImapConnection(tern_imap::Session::new(config, StoreBackend::new(store.clone()), tls_active));
        (session, tracing::info_span!("imap.session", client.address = %peer, listener = name, tls = tls_active))
    })
    .await;
}

async fn pop3_listener(
    listener: Listener,
    acceptor: TlsAcceptor,
    hostname: String,
    limits: AccessLimits,
    store: Store,
    shutdown: Shutdown,
) {
    let name = listener.name;
    let timeouts = Timeouts {
        idle: Duration::from_secs(limits.pop3_idle_timeout_secs),
        handshake: Duration::from_secs(30),
    };
    serve_sessions(listener, shutdown, Some(acceptor), timeouts, move |tls_active, peer| {
        let config = tern_pop3::Config {
            tls_available: true,
            login_requires_tls: true,
            max_failed_logins: limits.max_failed_logins,
            greeting_host: hostname.clone(),
        };
        let session = Pop3Connection(tern_pop3::Session::new(config, StoreBackend::new(store.clone()), tls_active));
        (session, tracing::info_span!("pop3.session", client.address = %peer, listener = name, tls = tls_active))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_runtime::net::{Stream, drive};
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    /// A connection's task is allocated once, at the size of the largest state its future can
    /// be in, and an IMAP client in IDLE keeps it for hours: 10,000 idle sessions must fit in
    /// 200 MB with everything else. So the driver holds no command's future inline (those are
    /// boxed while they run); this catches one that creeps back in. Debug builds lay futures
    /// out larger than release builds, so the bound here is looser than what ships.
    #[tokio::test]
    async fn an_imap_connection_future_stays_small() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = tern_imap::Config {
            tls_available: false,
            login_requires_tls: false,
            max_literal: 1 << 20,
            max_failed_logins: 3,
            greeting_host: String::new(),
        };
        let session = ImapConnection(tern_imap::Session::new(
            config,
            StoreBackend::new(store),
            false,
        ));
        let token = CancellationToken::new();
        let timeouts = Timeouts {
            idle: Duration::from_secs(60),
            handshake: Duration::from_secs(5),
        };
        let connection = drive(Stream::Plain(server), session, None, timeouts, &token);
        let size = std::mem::size_of_val(&connection);
        eprintln!("IMAP connection future: {size} bytes");
        assert!(size <= 4096, "IMAP connection future is {size} bytes");
    }
}
