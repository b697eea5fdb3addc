//! `tern-msa`: the submission agent as its own process (587, 465, gRPC on 50051).

use anyhow::Context;
use tern_msa::{Config, Listeners};
use tern_runtime::{Shutdown, ops, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = tern_runtime::config::from_args_or_exit("tern-msa");
    telemetry::init(config.log_format);
    // Check the certificate before binding anything: a bad path is a configuration error.
    tern_runtime::tls::acceptor(&config.tls).context("load TLS certificate")?;
    let store = tern_store::Store::connect(&config.database_url)
        .await
        .context("connect to the store")?;
    let bind = |addr: std::net::SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {what} listener {addr}"))
    };
    let listeners = Listeners {
        submission: bind(config.submission_listen, "submission").await?,
        submissions: bind(config.submissions_listen, "submissions").await?,
        grpc: bind(config.grpc_listen, "gRPC").await?,
    };
    let sd = Shutdown::new();
    let s = store.clone();
    let probe = ops::probe(move || {
        let s = s.clone();
        async move { s.ping().await }
    });
    ops::spawn(ops::bind(&config.metrics).await?, &sd, probe);
    let task = tokio::spawn(tern_msa::run(
        config.hostname.clone(),
        config.tls.clone(),
        config.smtp.clone(),
        config.policy(),
        listeners,
        store.clone(),
        sd.clone(),
    ));
    let result =
        shutdown::run_until_signal("tern-msa", &sd, task, std::time::Duration::from_secs(30)).await;
    store.close().await;
    result
}
