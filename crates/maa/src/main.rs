//! `tern-maa`: the mailbox access agent as its own process (IMAP 143/993, POP3 110/995, gRPC
//! on 50054).

use anyhow::Context;
use tern_maa::{Config, Listeners};
use tern_runtime::{Shutdown, ops, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = tern_runtime::config::from_args_or_exit("tern-maa");
    telemetry::init(config.log_format);
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
        imap: bind(config.imap_listen, "IMAP").await?,
        imaps: bind(config.imaps_listen, "IMAPS").await?,
        pop3: bind(config.pop3_listen, "POP3").await?,
        pop3s: bind(config.pop3s_listen, "POP3S").await?,
        grpc: bind(config.grpc_listen, "gRPC").await?,
    };
    let sd = Shutdown::new();
    let s = store.clone();
    let probe = ops::probe(move || {
        let s = s.clone();
        async move { s.ping().await }
    });
    ops::spawn(ops::bind(&config.metrics).await?, &sd, probe);
    let task = tokio::spawn(tern_maa::run(
        config.hostname.clone(),
        config.tls.clone(),
        config.limits.clone(),
        listeners,
        store.clone(),
        sd.clone(),
    ));
    let result =
        shutdown::run_until_signal("tern-maa", &sd, task, std::time::Duration::from_secs(30)).await;
    store.close().await;
    result
}
