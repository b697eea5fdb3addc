//! The delivery agent (`tern-mda`): stores messages into mailboxes, exactly once, and serves the
//! directory administration API.
//!
//! It serves two gRPC services: `Delivery` (called by the MTA's queue runners) and `Admin`
//! (domains, accounts, aliases; bearer token required). It does not speak SMTP and does not
//! decide routing: the MTA sends it only recipients of local domains.

mod admin;
mod delivery;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tern_rpc::v1::admin_server::AdminServer;
use tern_rpc::v1::delivery_server::DeliveryServer;
use tern_runtime::Shutdown;
use tern_runtime::telemetry::LogFormat;
use tern_store::Store;
use tokio::net::TcpListener;

pub use admin::AdminService;
pub use delivery::DeliveryService;

/// `tern-mda` settings. Everything without a default must be given.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub database_url: String,
    /// Where the gRPC services listen.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Bearer token for the Admin service.
    pub admin_token: String,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (off unless set).
    #[serde(default)]
    pub metrics: tern_runtime::ops::MetricsConfig,
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50053))
}

/// Serves Delivery and Admin on `grpc` until `shutdown` is cancelled.
pub async fn run(
    admin_token: String,
    grpc: TcpListener,
    store: Store,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let addr = grpc.local_addr()?;
    tracing::info!(grpc.address = %addr, "mda serving");
    let token = shutdown.token.clone();
    let health =
        tern_runtime::grpc::health_service(&shutdown, &["tern.v1.Delivery", "tern.v1.Admin"]).await;
    let _grpc_up = shutdown.health.listener("mda.grpc");
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(120))
        .trace_fn(tern_runtime::telemetry::grpc_server_span)
        .add_service(health)
        .add_service(
            DeliveryServer::new(DeliveryService::new(store.clone()))
                .max_decoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(AdminServer::new(AdminService::new(store, admin_token)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            token.cancelled_owned(),
        )
        .await?;
    Ok(())
}
