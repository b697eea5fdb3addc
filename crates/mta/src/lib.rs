//! The transfer agent (`tern-mta`): SMTP on port 25 for mail from other servers, the queue
//! runners that deliver queued mail, and the Queue administration API.
//!
//! It accepts mail only for local domains (never an open relay), hands local recipients to the
//! MDA over gRPC, and delivers the rest to other domains' mail hosts (DNS MX routing or a
//! smarthost) over SMTP, bouncing what cannot be delivered. It does not write mailboxes (that is
//! the MDA) and does not authenticate users (that is the MSA).

pub mod dsn;
mod inbound;
mod known_rcpts;
pub mod outbound;
mod queue_admin;
mod remote;
pub mod route;
mod runner;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tern_runtime::Shutdown;
pub use tern_runtime::config::SmtpLimits;
use tern_runtime::net::{ConnectionLimits, Listener};
use tern_runtime::telemetry::LogFormat;
use tern_runtime::tls::CertFiles;
use tern_store::Store;
use tokio::net::TcpListener;

pub use inbound::InboundHandler;
pub use queue_admin::QueueService;
pub use remote::{OutboundConfig, Smarthost, TlsMode};
pub use runner::{Bouncer, Deferral, DeliveryClient, Runner, RunnerConfig, backoff, decide};

/// `tern-mta` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub database_url: String,
    /// The name this server gives in greetings and Received headers.
    pub hostname: String,
    #[serde(default = "default_smtp_listen")]
    pub smtp_listen: SocketAddr,
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Where the MDA's Delivery service is, e.g. `http://tern-mda:50053`.
    pub mda_url: String,
    /// Bearer token for the Queue service.
    pub admin_token: String,
    /// Certificate for STARTTLS on port 25; without it STARTTLS is not offered.
    pub tls: Option<CertFiles>,
    #[serde(default)]
    pub smtp: SmtpLimits,
    /// Domains accepted on port 25 for onward delivery although they are not local (a backup MX
    /// or a gateway). Empty by default: the MTA is never an open relay.
    #[serde(default)]
    pub relay_domains: Vec<String>,
    /// Sub-address delimiters for the RCPT check (`user+tag@` is accepted when `user@` is);
    /// keep it equal to the MDA's `delivery.recipient_delimiter`. Empty turns it off.
    #[serde(default = "default_recipient_delimiter")]
    pub recipient_delimiter: String,
    #[serde(default)]
    pub queue: RunnerConfig,
    #[serde(default)]
    pub outbound: OutboundConfig,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (off unless set).
    #[serde(default)]
    pub metrics: tern_runtime::ops::MetricsConfig,
}

fn default_recipient_delimiter() -> String {
    tern_store::DEFAULT_RECIPIENT_DELIMITER.to_string()
}

fn default_smtp_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 25))
}
fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50052))
}

/// Sockets the caller bound for the MTA.
pub struct Listeners {
    pub smtp: TcpListener,
    pub grpc: TcpListener,
}

/// What `run` needs besides the sockets.
pub struct Parts {
    pub hostname: String,
    pub admin_token: String,
    pub mda_url: String,
    pub tls: Option<CertFiles>,
    pub smtp: SmtpLimits,
    pub relay_domains: Vec<String>,
    pub recipient_delimiter: String,
    pub queue: RunnerConfig,
    pub outbound: OutboundConfig,
}

impl From<&Config> for Parts {
    fn from(c: &Config) -> Self {
        Parts {
            hostname: c.hostname.clone(),
            admin_token: c.admin_token.clone(),
            mda_url: c.mda_url.clone(),
            tls: c.tls.clone(),
            smtp: c.smtp.clone(),
            relay_domains: c.relay_domains.clone(),
            recipient_delimiter: c.recipient_delimiter.clone(),
            queue: c.queue.clone(),
            outbound: c.outbound.clone(),
        }
    }
}

/// Runs the SMTP listener, the queue runner and the Queue service until shutdown.
pub async fn run(
    parts: Parts,
    listeners: Listeners,
    store: Store,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let tls = parts
        .tls
        .as_ref()
        .map(tern_runtime::tls::acceptor)
        .transpose()?;
    tracing::info!(smtp.address = %listeners.smtp.local_addr()?, grpc.address = %listeners.grpc.local_addr()?, "mta serving");
    let store = store.with_recipient_delimiter(&parts.recipient_delimiter);

    let smtp_task = {
        let limits = parts.smtp.clone();
        let listener = Listener {
            name: "smtp",
            listener: listeners.smtp,
            limits: ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip),
            implicit_tls: None,
            busy_reply: b"421 4.7.0 too many connections, try again later\r\n".to_vec(),
        };
        let store = store.clone();
        let hostname = parts.hostname.clone();
        let sd = shutdown.clone();
        let relay = parts.relay_domains.clone();
        tokio::spawn(inbound::serve_smtp(
            listener, tls, hostname, limits, relay, store, sd,
        ))
    };

    let delivery = DeliveryClient::new(&parts.mda_url)?;
    let remote = std::sync::Arc::new(remote::Remote::new(
        parts.outbound.clone(),
        parts.hostname.clone(),
    )?);
    let bouncer = Bouncer::new(store.clone(), parts.hostname.clone());
    let runner = Runner::new(
        store.clone(),
        delivery,
        remote,
        bouncer.clone(),
        parts.queue.clone(),
    );
    let runner_task = tokio::spawn(runner.run(shutdown.token.clone()));
    let gauges_task = tokio::spawn(queue_gauges(store.clone(), shutdown.token.clone()));

    let grpc_token = shutdown.token.clone();
    let health = tern_runtime::grpc::health_service(&shutdown, &["tern.v1.Queue"]).await;
    let _grpc_up = shutdown.health.listener("mta.grpc");
    let grpc = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(60))
        .trace_fn(tern_runtime::telemetry::grpc_server_span)
        .add_service(health)
        .add_service(tern_rpc::v1::queue_server::QueueServer::new(
            QueueService::new(store, parts.admin_token, bouncer),
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listeners.grpc),
            grpc_token.cancelled_owned(),
        );

    let grpc_result = grpc.await;
    smtp_task.await?;
    runner_task.await??;
    gauges_task.await?;
    grpc_result?;
    Ok(())
}

/// How often the queue gauges are refreshed.
const QUEUE_GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// Samples the queue for `tern_queue_recipients{state}` and `tern_queue_oldest_age_seconds`
/// until shutdown. Every MTA copy reports the same shared queue; dashboards take the max.
async fn queue_gauges(store: Store, token: tokio_util::sync::CancellationToken) {
    use tern_runtime::ops::names;
    let mut tick = tokio::time::interval(QUEUE_GAUGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stats = match store.queue_stats().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "queue statistics unavailable");
                continue;
            }
        };
        for (state, n) in &stats.by_state {
            let state = match state {
                tern_store::RecipientState::Queued => "queued",
                tern_store::RecipientState::Delivered => "delivered",
                tern_store::RecipientState::Failed => "failed",
            };
            metrics::gauge!(names::QUEUE_RECIPIENTS, "state" => state).set(*n as f64);
        }
        let age = stats
            .oldest_queued_ms
            .map_or(0.0, |t| (tern_store::now_ms() - t).max(0) as f64 / 1000.0);
        metrics::gauge!(names::QUEUE_OLDEST_AGE_SECONDS).set(age);
    }
}
