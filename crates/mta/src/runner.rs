//! The queue runner: claims due recipients, hands local ones to the MDA over gRPC, and records
//! each outcome with a retry schedule.
//!
//! Every attempt is recorded by `claim` before it is made (attempts+1, lease taken), so a runner
//! that crashes mid-attempt never causes a hot retry loop: its lease expires and another runner
//! takes the work over. Any number of runners, in any number of processes, share one queue.
//! Remote (non-local) recipients wait in the queue for the SMTP client of the transfer-agent
//! issue; they are deferred with a reply that says so, never dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use tern_rpc::v1::delivery_client::DeliveryClient as GrpcDeliveryClient;
use tern_rpc::v1::recipient_outcome::Status as OutcomeStatus;
use tern_rpc::v1::{DeliverRecipient, DeliverRequest};
use tern_store::{Claim, Store, now_ms};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

/// Queue runner settings; defaults close to Postfix's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RunnerConfig {
    /// How often an idle runner looks for due work.
    pub poll_interval_ms: u64,
    /// Recipients claimed per round.
    pub batch: u32,
    /// How long a claim is held before another runner may take it over.
    pub lease_secs: u64,
    /// Messages delivered at once by one runner.
    pub concurrency: usize,
    /// Delay before retry n (1-based); the last entry repeats.
    pub retry_schedule_secs: Vec<u64>,
    /// Random spread added to each delay, in percent, so retries do not arrive in waves.
    pub jitter_percent: u8,
    /// A recipient still undelivered this long after queueing fails for good.
    pub max_age_secs: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 500,
            batch: 100,
            lease_secs: 300,
            concurrency: 16,
            retry_schedule_secs: vec![60, 300, 900, 1800, 3600],
            jitter_percent: 10,
            max_age_secs: 5 * 24 * 3600,
        }
    }
}

/// Delay before the next attempt after `attempts` attempts, with jitter.
pub fn backoff(cfg: &RunnerConfig, attempts: u32, rng: &mut impl Rng) -> Duration {
    let idx = (attempts.max(1) as usize - 1).min(cfg.retry_schedule_secs.len().saturating_sub(1));
    let base_ms = cfg.retry_schedule_secs.get(idx).copied().unwrap_or(300) * 1000;
    let spread = base_ms * u64::from(cfg.jitter_percent) / 100;
    let jitter = if spread > 0 {
        rng.random_range(0..=spread)
    } else {
        0
    };
    Duration::from_millis(base_ms + jitter)
}

/// The MDA's Delivery service. The channel connects lazily and reconnects by itself, so an MDA
/// that is down only defers mail.
#[derive(Clone)]
pub struct DeliveryClient {
    inner: GrpcDeliveryClient<Channel>,
}

impl DeliveryClient {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| anyhow::anyhow!("invalid mda_url {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        Ok(Self {
            inner: GrpcDeliveryClient::new(endpoint.connect_lazy()),
        })
    }
}

pub struct Runner {
    store: Store,
    delivery: DeliveryClient,
    cfg: RunnerConfig,
    owner: String,
}

impl Runner {
    pub fn new(store: Store, delivery: DeliveryClient, cfg: RunnerConfig) -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let owner = format!(
            "{host}:{}:{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            store,
            delivery,
            cfg,
            owner,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `token` is cancelled; attempts under way finish, then leases are released.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.cfg.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let poll = Duration::from_millis(this.cfg.poll_interval_ms.max(10));
        tracing::info!(runner = %this.owner, "queue runner started");
        while !token.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let claims = match this
                .store
                .claim(
                    &this.owner,
                    this.cfg.batch,
                    this.cfg.lease_secs as i64 * 1000,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "queue claim failed");
                    Vec::new()
                }
            };
            if claims.is_empty() {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            let mut by_message: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
            for c in claims {
                by_message.entry(c.queue_id.clone()).or_default().push(c);
            }
            for (queue_id, claims) in by_message {
                let permit = permits.clone().acquire_owned().await?;
                let this = this.clone();
                let span = tracing::info_span!("queue.attempt", queue.id = %queue_id, rcpts = claims.len());
                tasks.spawn(
                    async move {
                        this.attempt(&queue_id, claims).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
        while tasks.join_next().await.is_some() {}
        match this.store.release_leases(&this.owner).await {
            Ok(n) => tracing::info!(released = n, "queue runner stopped"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release leases; they expire on their own")
            }
        }
        Ok(())
    }

    /// One attempt for the claimed recipients of one message.
    async fn attempt(&self, queue_id: &str, claims: Vec<Claim>) {
        let content = match self.store.message_content(queue_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "queue content unreadable");
                for c in &claims {
                    self.defer(c, "451 4.3.0 queue storage unavailable").await;
                }
                return;
            }
        };
        let mut local = Vec::new();
        for c in claims {
            let domain = c.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            match self.store.is_local_domain(domain).await {
                Ok(true) => local.push(c),
                Ok(false) => {
                    self.defer(
                        &c,
                        "451 4.4.3 remote delivery is not enabled on this server yet",
                    )
                    .await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "domain lookup failed");
                    self.defer(&c, "451 4.3.0 directory unavailable").await;
                }
            }
        }
        if local.is_empty() {
            return;
        }
        let request = DeliverRequest {
            return_path: local[0].sender.clone(),
            recipients: local
                .iter()
                .map(|c| DeliverRecipient {
                    address: c.address.clone(),
                    delivery_key: format!("q:{}", c.recipient_id),
                })
                .collect(),
            content,
            queue_id: queue_id.to_string(),
        };
        let mut client = self.delivery.inner.clone();
        match client.deliver(request).await {
            Ok(resp) => {
                let outcomes = resp.into_inner().outcomes;
                for c in &local {
                    match outcomes.iter().find(|o| o.address == c.address) {
                        Some(o) if o.status == OutcomeStatus::Delivered as i32 => {
                            self.delivered(c, &o.reply).await
                        }
                        Some(o) if o.status == OutcomeStatus::PermanentFailure as i32 => {
                            self.failed(c, &o.reply).await
                        }
                        Some(o) => self.defer(c, &o.reply).await,
                        None => {
                            self.defer(c, "451 4.3.0 delivery agent gave no outcome")
                                .await
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "delivery agent call failed");
                for c in &local {
                    self.defer(c, "451 4.4.1 delivery agent unreachable").await;
                }
            }
        }
    }

    async fn delivered(&self, c: &Claim, reply: &str) {
        tracing::info!(rcpt = %c.address, reply, "delivered");
        if let Err(e) = self
            .store
            .mark_delivered(c.recipient_id, &self.owner, reply)
            .await
        {
            tracing::warn!(error = %e, rcpt = %c.address, "could not record delivery");
        }
    }

    async fn failed(&self, c: &Claim, reply: &str) {
        tracing::info!(rcpt = %c.address, reply, "failed permanently");
        if let Err(e) = self
            .store
            .mark_failed(c.recipient_id, &self.owner, reply)
            .await
        {
            tracing::warn!(error = %e, rcpt = %c.address, "could not record failure");
        }
    }

    async fn defer(&self, c: &Claim, reply: &str) {
        let age_ms = now_ms() - c.created_at_ms;
        if age_ms >= self.cfg.max_age_secs as i64 * 1000 {
            let text = format!("4.4.7 delivery time expired; last reply: {reply}");
            return self.failed(c, &text).await;
        }
        let delay = backoff(&self.cfg, c.attempts, &mut rand::rng());
        let next = now_ms() + delay.as_millis() as i64;
        tracing::info!(rcpt = %c.address, reply, retry_in_s = delay.as_secs(), "deferred");
        if let Err(e) = self
            .store
            .mark_deferred(c.recipient_id, &self.owner, reply, next)
            .await
        {
            tracing::warn!(error = %e, rcpt = %c.address, "could not record deferral");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_follows_the_schedule_with_bounded_jitter_and_caps() {
        let cfg = RunnerConfig {
            retry_schedule_secs: vec![60, 300, 3600],
            jitter_percent: 10,
            ..Default::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (attempts, base) in [(1u32, 60u64), (2, 300), (3, 3600), (9, 3600), (0, 60)] {
            for _ in 0..50 {
                let d = backoff(&cfg, attempts, &mut rng).as_millis() as u64;
                assert!(
                    d >= base * 1000 && d <= base * 1100,
                    "attempt {attempts}: {d}"
                );
            }
        }
        let flat = RunnerConfig {
            retry_schedule_secs: vec![5],
            jitter_percent: 0,
            ..Default::default()
        };
        assert_eq!(backoff(&flat, 4, &mut rng), Duration::from_secs(5));
    }
}
