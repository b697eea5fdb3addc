//! `TestCluster`: every agent in-process on `127.0.0.1:0` against a fresh database, started the
//! same way `tern up` starts them, with helpers to provision domains and accounts through the
//! real Admin gRPC service.

use std::path::PathBuf;

use tern::admin::{self, Target};
use tern::up::{self, Ports, Running, State, UpOptions};
use tern_rpc::v1;

use crate::TestDb;

pub struct TestCluster {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    running: Option<Running>,
}

impl TestCluster {
    /// Starts a cluster on "postgres" or "sqlite".
    pub async fn start(backend: &str) -> TestCluster {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a cluster after `configure` has adjusted the options (outbound routing, retry
    /// schedule, …).
    pub async fn start_with(backend: &str, configure: impl FnOnce(&mut UpOptions)) -> TestCluster {
        crate::init_logging();
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("create cluster directory");
        let mut opts = UpOptions::new(dir.path().join("data"));
        opts.database_url = Some(db.url.clone());
        opts.ports = Ports::EPHEMERAL;
        opts.queue.poll_interval_ms = 50;
        configure(&mut opts);
        let running = up::start(opts).await.expect("start cluster");
        TestCluster {
            db,
            dir,
            running: Some(running),
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("cluster is running")
    }

    pub fn state(&self) -> &State {
        &self.running().state
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cert(&self) -> PathBuf {
        self.state().cert.clone()
    }

    pub fn store(&self) -> &tern_store::Store {
        &self.running().store
    }

    pub fn admin_target(&self) -> Target {
        Target {
            admin_url: format!("http://{}", self.state().grpc_mda),
            queue_url: format!("http://{}", self.state().grpc_mta),
            token: self.running().admin_token.clone(),
        }
    }

    /// Adds a domain and accounts through the Admin gRPC service.
    pub async fn provision(&self, domain: &str, accounts: &[(&str, &str)]) {
        let target = self.admin_target();
        let mut client = admin::admin(&target).await.expect("admin client");
        client
            .add_domain(v1::DomainRequest {
                name: domain.into(),
            })
            .await
            .expect("add domain");
        for (address, password) in accounts {
            client
                .add_account(v1::AddAccountRequest {
                    address: (*address).into(),
                    password: (*password).into(),
                })
                .await
                .expect("add account");
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("cluster stopped cleanly");
        }
    }
}
