//! The admin side of `tern`: gRPC clients for Admin (on the MDA) and Queue (on the MTA), with
//! the bearer token attached to every call, and the discovery of a local `tern up`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tern_rpc::v1::admin_client::AdminClient;
use tern_rpc::v1::queue_client::QueueClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::up::{State, read_admin_token};

/// Where the admin services are and the token for them.
#[derive(Debug, Clone)]
pub struct Target {
    pub admin_url: String,
    pub queue_url: String,
    pub token: String,
}

impl Target {
    /// From explicit values where given (flags or `TERN_ADMIN_URL`, `TERN_QUEUE_URL`,
    /// `TERN_ADMIN_TOKEN`), else from the local `tern up` in `data_dir`.
    pub fn resolve(
        data_dir: &Path,
        admin_url: Option<String>,
        queue_url: Option<String>,
        token: Option<String>,
    ) -> anyhow::Result<Target> {
        let local = || State::load(data_dir);
        let admin_url = match admin_url {
            Some(u) => u,
            None => format!("http://{}", local()?.grpc_mda),
        };
        let queue_url = match queue_url {
            Some(u) => u,
            None => format!("http://{}", local()?.grpc_mta),
        };
        let token = match token {
            Some(t) => t,
            None => read_admin_token(data_dir)
                .context("no admin token: pass --token or TERN_ADMIN_TOKEN, or run next to a `tern up` data directory")?,
        };
        Ok(Target {
            admin_url,
            queue_url,
            token,
        })
    }
}

#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid gRPC address {url}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("cannot reach {url}: is Tern running (`tern up`)?"))
}

fn bearer(token: &str) -> anyhow::Result<Bearer> {
    let v = format!("Bearer {token}")
        .parse()
        .context("admin token has characters not allowed in metadata")?;
    Ok(Bearer(v))
}

pub async fn admin(
    target: &Target,
) -> anyhow::Result<AdminClient<InterceptedService<Channel, Bearer>>> {
    Ok(AdminClient::with_interceptor(
        channel(&target.admin_url).await?,
        bearer(&target.token)?,
    ))
}

pub async fn queue(
    target: &Target,
) -> anyhow::Result<QueueClient<InterceptedService<Channel, Bearer>>> {
    Ok(QueueClient::with_interceptor(
        channel(&target.queue_url).await?,
        bearer(&target.token)?,
    ))
}

/// Turns a gRPC status into a message for a person.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let hint = match status.code() {
        Code::Unauthenticated => {
            " (check the admin token: --token, TERN_ADMIN_TOKEN or DIR/admin-token)"
        }
        Code::Unavailable => " (is the server running and its store reachable?)",
        _ => "",
    };
    anyhow::anyhow!("{}{hint}", status.message())
}
