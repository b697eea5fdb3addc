//! `tern-mda`: the delivery agent as its own process (production shape: Postgres, gRPC on
//! 50053). All logic lives in the library.

use anyhow::Context;
use tern_mda::Config;
use tern_runtime::{Shutdown, ops, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = tern_runtime::config::from_args_or_exit("tern-mda");
    if let Err(e) = config.check() {
        eprintln!("tern-mda: configuration error: {e:#}");
        std::process::exit(64);
    }
    telemetry::init(config.log_format);
    let store = tern_store::Store::connect(&config.database_url)
        .await
        .context("connect to the store")?;
    let grpc = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("bind gRPC listener {}", config.grpc_listen))?;
    let lmtp = match config.lmtp_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind LMTP listener {addr}"))?,
        ),
        None => None,
    };
    let managesieve = match config.managesieve_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind ManageSieve listener {addr}"))?,
        ),
        None => None,
    };
    let sd = Shutdown::new();
    let s = store.clone();
    let probe = ops::probe(move || {
        let s = s.clone();
        async move { s.ping().await }
    });
    ops::spawn(ops::bind(&config.metrics).await?, &sd, probe);
    let task = tokio::spawn(tern_mda::run(
        tern_mda::Parts::from(&config),
        tern_mda::Listeners {
            grpc,
            lmtp,
            managesieve,
        },
        store.clone(),
        sd.clone(),
    ));
    let result =
        shutdown::run_until_signal("tern-mda", &sd, task, std::time::Duration::from_secs(30)).await;
    store.close().await;
    result
}
