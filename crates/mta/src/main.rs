//! `tern-mta`: the transfer agent as its own process (port 25, queue runners, gRPC on 50052).

use anyhow::Context;
use tern_mta::{Config, Listeners, Parts};
use tern_runtime::{Shutdown, ops, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = tern_runtime::config::from_args_or_exit("tern-mta");
    telemetry::init(config.log_format);
    let store = tern_store::Store::connect(&config.database_url)
        .await
        .context("connect to the store")?;
    let listeners = Listeners {
        smtp: tokio::net::TcpListener::bind(config.smtp_listen)
            .await
            .with_context(|| format!("bind SMTP listener {}", config.smtp_listen))?,
        grpc: tokio::net::TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("bind gRPC listener {}", config.grpc_listen))?,
    };
    let sd = Shutdown::new();
    let s = store.clone();
    let probe = ops::probe(move || {
        let s = s.clone();
        async move { s.ping().await }
    });
    ops::spawn(ops::bind(&config.metrics).await?, &sd, probe);
    let task = tokio::spawn(tern_mta::run(
        Parts::from(&config),
        listeners,
        store.clone(),
        sd.clone(),
    ));
    let result =
        shutdown::run_until_signal("tern-mta", &sd, task, std::time::Duration::from_secs(30)).await;
    store.close().await;
    result
}
