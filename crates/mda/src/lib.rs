//! The delivery agent (`tern-mda`): stores messages into mailboxes, exactly once, and serves the
//! directory administration API.
//!
//! It serves two gRPC services: `Delivery` (called by the MTA's queue runners) and `Admin`
//! (domains, accounts, aliases, quotas; bearer token required), optionally LMTP (RFC 2033)
//! for other MTAs, through the same delivery logic, and optionally ManageSieve (RFC 5804) for
//! users editing their Sieve scripts. It does not speak SMTP and does not decide
//! routing: the MTA sends it only recipients of local domains.

mod admin;
mod delivery;
mod lmtp;
mod managesieve;
pub mod sieve;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tern_rpc::v1::admin_server::AdminServer;
use tern_rpc::v1::delivery_server::DeliveryServer;
use tern_runtime::Shutdown;
use tern_runtime::config::{ManageSieveLimits, SmtpLimits};
use tern_runtime::telemetry::LogFormat;
use tern_runtime::tls::CertFiles;
use tern_store::Store;
use tokio::net::TcpListener;

pub use admin::AdminService;
pub use delivery::{DeliveryService, DeliverySettings};

/// `tern-mda` settings. Everything without a default must be given.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub database_url: String,
    /// Where the gRPC services listen.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Bearer token for the Admin service.
    pub admin_token: String,
    /// Where LMTP listens; no LMTP unless set. Bind it to loopback or a private network: LMTP
    /// has no authentication.
    #[serde(default)]
    pub lmtp_listen: Option<SocketAddr>,
    /// The name in LMTP greetings and Received headers.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Limits of LMTP sessions (message size, recipients, connections, idle timeout).
    #[serde(default)]
    pub lmtp: SmtpLimits,
    /// Where ManageSieve (RFC 5804, standard port 4190) listens; off unless set.
    #[serde(default)]
    pub managesieve_listen: Option<SocketAddr>,
    /// Limits and login policy of ManageSieve sessions.
    #[serde(default)]
    pub managesieve: ManageSieveLimits,
    /// Certificate for ManageSieve's STARTTLS. Without it no TLS is offered, and logins are
    /// possible only with `managesieve.login_requires_tls = false`.
    #[serde(default)]
    pub tls: Option<CertFiles>,
    /// Failed-login throttling for ManageSieve (the MSA's `auth_limits`, counted per process).
    #[serde(default)]
    pub auth_limits: tern_msa::AuthLimits,
    /// Delivery policy: sub-addressing, what over quota means.
    #[serde(default)]
    pub delivery: DeliverySettings,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (off unless set).
    #[serde(default)]
    pub metrics: tern_runtime::ops::MetricsConfig,
}

fn default_hostname() -> String {
    "localhost".to_string()
}

/// Sockets the caller bound for the MDA.
pub struct Listeners {
    pub grpc: TcpListener,
    pub lmtp: Option<TcpListener>,
    pub managesieve: Option<TcpListener>,
}

/// What `run` needs besides the sockets.
#[derive(Debug, Clone)]
pub struct Parts {
    pub admin_token: String,
    pub hostname: String,
    pub lmtp: SmtpLimits,
    pub delivery: DeliverySettings,
    pub managesieve: ManageSieveLimits,
    /// STARTTLS for ManageSieve.
    pub tls: Option<CertFiles>,
    pub auth_limits: tern_msa::AuthLimits,
}

impl From<&Config> for Parts {
    fn from(c: &Config) -> Self {
        Parts {
            admin_token: c.admin_token.clone(),
            hostname: c.hostname.clone(),
            lmtp: c.lmtp.clone(),
            delivery: c.delivery.clone(),
            managesieve: c.managesieve.clone(),
            tls: c.tls.clone(),
            auth_limits: c.auth_limits.clone(),
        }
    }
}

impl Config {
    /// Settings that cannot work together, found before anything is bound.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.managesieve_listen.is_some()
            && self.tls.is_none()
            && self.managesieve.login_requires_tls
        {
            anyhow::bail!(
                "managesieve_listen needs [tls] (or managesieve.login_requires_tls = false on a \
                 loopback listener): nobody could log in"
            );
        }
        Ok(())
    }
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50053))
}

/// Serves Delivery and Admin on `listeners.grpc`, and LMTP and ManageSieve when their
/// listeners are given, until `shutdown` is cancelled.
pub async fn run(
    parts: Parts,
    listeners: Listeners,
    store: Store,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Listeners {
        grpc,
        lmtp,
        managesieve,
    } = listeners;
    let addr = grpc.local_addr()?;
    tracing::info!(grpc.address = %addr, "mda serving");
    let delivery = DeliveryService::new(store.clone(), parts.delivery.clone());
    let lmtp_task = match lmtp {
        Some(listener) => {
            tracing::info!(lmtp.address = %listener.local_addr()?, "mda serving lmtp");
            Some(tokio::spawn(lmtp::serve(
                listener,
                parts.hostname.clone(),
                parts.lmtp.clone(),
                std::sync::Arc::new(delivery.clone()),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let managesieve_task = match managesieve {
        Some(listener) => {
            tracing::info!(managesieve.address = %listener.local_addr()?, "mda serving managesieve");
            let tls = match &parts.tls {
                Some(files) => Some(tern_runtime::tls::acceptor(files)?),
                None => None,
            };
            Some(tokio::spawn(managesieve::serve(
                listener,
                tls,
                parts.managesieve.clone(),
                std::sync::Arc::new(tern_msa::throttle::Throttle::new(parts.auth_limits.clone())),
                store.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let token = shutdown.token.clone();
    let admin_token = parts.admin_token;
    let health =
        tern_runtime::grpc::health_service(&shutdown, &["tern.v1.Delivery", "tern.v1.Admin"]).await;
    let _grpc_up = shutdown.health.listener("mda.grpc");
    let served = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(120))
        .trace_fn(tern_runtime::telemetry::grpc_server_span)
        .add_service(health)
        .add_service(
            DeliveryServer::new(delivery)
                .max_decoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(AdminServer::new(AdminService::new(store, admin_token)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            token.cancelled_owned(),
        )
        .await;
    for task in [lmtp_task, managesieve_task].into_iter().flatten() {
        task.await?;
    }
    served?;
    Ok(())
}
