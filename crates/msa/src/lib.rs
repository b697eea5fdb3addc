//! The submission agent (`tern-msa`): where users and programs hand in mail.
//!
//! SMTP submission (RFC 6409) on 587 with STARTTLS and on 465 with implicit TLS (RFC 8314),
//! AUTH required and offered only inside TLS; a gRPC Submission service for programs. Both
//! paths run the same checks and the same fix-ups and put the message on the queue once,
//! however many recipients it has. Delivery is the MTA's job, not this agent's.

pub mod dkim;
mod grpc;
pub mod structured;
mod submit;
pub mod throttle;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tern_runtime::Shutdown;
use tern_runtime::config::SmtpLimits;
use tern_runtime::net::{ConnectionLimits, Listener, Timeouts, serve_sessions};
use tern_runtime::sessions::SmtpConnection;
use tern_runtime::telemetry::LogFormat;
use tern_runtime::tls::CertFiles;
use tern_smtp::{AuthPolicy, Session};
use tern_store::Store;
use tokio::net::TcpListener;

pub use grpc::SubmissionService;
pub use submit::{Policy, SubmissionHandler, SubmissionLimits, Submitter};
pub use throttle::AuthLimits;

/// `tern-msa` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub database_url: String,
    pub hostname: String,
    #[serde(default = "default_submission")]
    pub submission_listen: SocketAddr,
    #[serde(default = "default_submissions")]
    pub submissions_listen: SocketAddr,
    #[serde(default = "default_grpc")]
    pub grpc_listen: SocketAddr,
    /// Certificate for both ports; submission without TLS is not offered.
    pub tls: CertFiles,
    #[serde(default)]
    pub smtp: SmtpLimits,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Failed-login throttling (see [`throttle`]).
    #[serde(default)]
    pub auth_limits: AuthLimits,
    /// What one account may submit.
    #[serde(default)]
    pub limits: SubmissionLimits,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (off unless set).
    #[serde(default)]
    pub metrics: tern_runtime::ops::MetricsConfig,
}

impl Config {
    /// The policy settings [`run`] takes.
    pub fn policy(&self) -> Policy {
        Policy {
            auth: self.auth_limits.clone(),
            limits: self.limits.clone(),
        }
    }
}

fn default_submission() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 587))
}
fn default_submissions() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 465))
}
fn default_grpc() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50051))
}

pub struct Listeners {
    /// Port 587: plain at first, STARTTLS before AUTH.
    pub submission: TcpListener,
    /// Port 465: TLS from the first byte.
    pub submissions: TcpListener,
    pub grpc: TcpListener,
}

/// Serves both submission ports and the gRPC Submission service until shutdown.
pub async fn run(
    hostname: String,
    tls: CertFiles,
    mut limits: SmtpLimits,
    policy: Policy,
    listeners: Listeners,
    store: Store,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // The SMTP session enforces size and recipient count itself (and advertises SIZE), so it
    // is given the stricter of the two settings; the submitter checks them again for gRPC.
    limits.max_message_size = limits.max_message_size.min(policy.limits.max_message_size);
    limits.max_recipients = limits.max_recipients.min(policy.limits.max_recipients);
    let acceptor = tern_runtime::tls::acceptor(&tls)?;
    tracing::info!(
        submission.address = %listeners.submission.local_addr()?,
        submissions.address = %listeners.submissions.local_addr()?,
        grpc.address = %listeners.grpc.local_addr()?,
        "msa serving"
    );
    // gRPC carries whole messages: tonic's 4 MiB default would refuse what SMTP accepts. The
    // limit leaves room for the request's other fields around the largest allowed message.
    let grpc_max_request = policy.limits.max_message_size.saturating_add(1024 * 1024);
    let submitter = Submitter::with_policy(store, hostname, policy);
    let busy = b"421 4.7.0 too many connections, try again later\r\n".to_vec();
    let conn_limits = ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip);
    let starttls = tokio::spawn(smtp_listener(
        Listener {
            name: "submission",
            listener: listeners.submission,
            limits: conn_limits,
            implicit_tls: None,
            busy_reply: busy.clone(),
        },
        acceptor.clone(),
        submitter.clone(),
        limits.clone(),
        shutdown.clone(),
    ));
    let implicit = tokio::spawn(smtp_listener(
        Listener {
            name: "submissions",
            listener: listeners.submissions,
            limits: conn_limits,
            implicit_tls: Some(acceptor.clone()),
            busy_reply: busy,
        },
        acceptor,
        submitter.clone(),
        limits,
        shutdown.clone(),
    ));
    let token = shutdown.token.clone();
    let health = tern_runtime::grpc::health_service(&shutdown, &["tern.v1.Submission"]).await;
    let _grpc_up = shutdown.health.listener("msa.grpc");
    let grpc = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(120))
        .trace_fn(tern_runtime::telemetry::grpc_server_span)
        .add_service(health)
        .add_service(
            tern_rpc::v1::submission_server::SubmissionServer::new(SubmissionService::new(
                submitter,
            ))
            .max_decoding_message_size(grpc_max_request)
            .max_encoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listeners.grpc),
            token.cancelled_owned(),
        )
        .await;
    starttls.await?;
    implicit.await?;
    grpc?;
    Ok(())
}

async fn smtp_listener(
    listener: Listener,
    acceptor: tokio_rustls::TlsAcceptor,
    submitter: Submitter,
    limits: SmtpLimits,
    shutdown: Shutdown,
) {
    let name = listener.name;
    let timeouts = Timeouts {
        idle: Duration::from_secs(limits.idle_timeout_secs),
        handshake: Duration::from_secs(30),
    };
    let hostname = submitter.hostname().to_string();
    serve_sessions(listener, shutdown, Some(acceptor), timeouts, move |tls_active, peer| {
        let config = tern_smtp::Config {
            hostname: hostname.clone(),
            max_message_size: limits.max_message_size,
            max_recipients: limits.max_recipients,
            max_errors: limits.max_errors,
            tls_available: true,
            auth: AuthPolicy::Required,
            auth_requires_tls: true,
        };
        let handler = submitter.handler(peer, tls_active);
        let session = SmtpConnection::new(Session::new(config, tls_active), handler, SubmissionHandler::tls_started).listener(name);
        (session, tracing::info_span!("smtp.session", client.address = %peer, listener = name, tls = tls_active))
    })
    .await;
}
