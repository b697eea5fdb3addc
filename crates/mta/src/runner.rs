//! The queue runner: claims due recipients, hands local ones to the MDA over gRPC and remote
//! ones to their domain's mail hosts over SMTP, and records each outcome: delivered, failed
//! (with an RFC 3464 bounce to the return path) or deferred (retry schedule with jitter, one
//! "delayed" notice after a while, failure when the lifetime is over).
//!
//! Every attempt is recorded by `claim` before it is made (attempts+1, lease taken), so a runner
//! that crashes mid-attempt never causes a hot retry loop: its lease expires and another runner
//! takes the work over. Any number of runners, in any number of processes, share one queue.
//! Outcomes are written only while this runner still holds the lease, each in one transaction
//! with the DSN it calls for; the null sender never gets one (no bounce loops).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use tern_rpc::v1::delivery_client::DeliveryClient as GrpcDeliveryClient;
use tern_rpc::v1::recipient_outcome::Status as OutcomeStatus;
use tern_rpc::v1::{DeliverBatchRequest, DeliverRecipient, DeliverRequest};
use tern_runtime::ops::names;
use tern_store::{Claim, NewMessage, OutcomeRecord, RecipientState, Recorded, Store, now_ms};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::dsn::{self, DsnInput, DsnKind, DsnRecipient};
use crate::outbound::{Envelope as OutEnvelope, RcptOutcome, TransferError};
use crate::remote::{NoRoute, Remote};

/// Messages per DeliverBatch call.
const LOCAL_BATCH_MESSAGES: usize = 200;
/// Content bytes per DeliverBatch call (a single bigger message still goes, alone), well under
/// the gRPC message limit.
const LOCAL_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// The domain of an address, lower-cased (empty when there is no `@`).
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Claims grouped by message.
fn by_message(claims: Vec<Claim>) -> BTreeMap<String, Vec<Claim>> {
    let mut out: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
    for c in claims {
        out.entry(c.queue_id.clone()).or_default().push(c);
    }
    out
}

/// At most how many finished messages a runner deletes per sweep, in rounds of a batch.
const PURGE_BATCH: u32 = 1000;
const PURGE_ROUNDS: usize = 10;

/// Runs `purge(PURGE_BATCH)` until a batch comes back short, at most [`PURGE_ROUNDS`] times;
/// returns how many rows went. A failure is logged (naming `what`) and ends the sweep.
async fn sweep<F, Fut>(what: &str, purge: F) -> u64
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = tern_store::Result<u64>>,
{
    let mut total = 0;
    for _ in 0..PURGE_ROUNDS {
        match purge(PURGE_BATCH).await {
            Ok(n) => {
                total += n;
                if n < u64::from(PURGE_BATCH) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging {what} failed");
                break;
            }
        }
    }
    total
}

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
    /// After this long undelivered, the sender gets one "delayed" DSN (0: never).
    pub delay_warning_secs: u64,
    /// A message whose recipients are all delivered or failed stays in the queue this long
    /// (for `tern queue list|show`), then its content and history are deleted.
    pub keep_finished_secs: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 500,
            batch: 100,
            lease_secs: 300,
            concurrency: 16,
            retry_schedule_secs: vec![300, 600, 1200, 2400, 4000],
            jitter_percent: 10,
            max_age_secs: 5 * 24 * 3600,
            delay_warning_secs: 4 * 3600,
            keep_finished_secs: 24 * 3600,
        }
    }
}

/// How often a runner deletes finished messages: a quarter of the time they are kept, between
/// one second and one minute.
fn purge_every(cfg: &RunnerConfig) -> Duration {
    Duration::from_secs((cfg.keep_finished_secs / 4).clamp(1, 60))
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

/// What to do with a recipient whose attempt failed temporarily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Try again at `at_ms`; `warn` asks for the one "delayed" DSN now.
    Retry { at_ms: i64, warn: bool },
    /// Its lifetime is over: fail it (with a bounce).
    Expire,
}

/// The retry decision as a pure function of the clock, so lifetimes and warnings are tested
/// without waiting.
pub fn decide(cfg: &RunnerConfig, now_ms: i64, claim: &Claim, delay: Duration) -> Deferral {
    let age_ms = now_ms - claim.created_at_ms;
    if age_ms >= (cfg.max_age_secs as i64).saturating_mul(1000) {
        return Deferral::Expire;
    }
    let warn = cfg.delay_warning_secs > 0
        && !claim.delay_warned
        && age_ms >= (cfg.delay_warning_secs as i64).saturating_mul(1000);
    // Never schedule past the end of the lifetime: the last try happens at expiry.
    let expiry = claim.created_at_ms + (cfg.max_age_secs as i64).saturating_mul(1000);
    Deferral::Retry {
        at_ms: (now_ms + delay.as_millis() as i64).min(expiry),
        warn,
    }
}

/// The MDA's Delivery service. The channel connects lazily and reconnects by itself, so an MDA
/// that is down only defers mail.
///
/// Balancing over MDA copies: when `mda_url`'s host is a DNS name (`http://tern-mda:50053`),
/// the name is resolved every [`MDA_RESOLVE_INTERVAL`] and calls are spread over every address
/// it has (Docker Compose's service name with `--scale tern-mda=3`, a Kubernetes headless
/// Service); one HTTP/2 connection to one resolved address would otherwise carry every call.
/// An IP literal gets one plain channel, as before.
#[derive(Clone)]
pub struct DeliveryClient {
    inner: GrpcDeliveryClient<Channel>,
}

/// How often a DNS-named MDA URL is resolved again (new copies join, gone ones leave).
pub const MDA_RESOLVE_INTERVAL: Duration = Duration::from_secs(15);

fn mda_endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("invalid mda_url {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120)))
}

impl DeliveryClient {
    /// Must be called inside a Tokio runtime when `url` names a host (the resolver is a task).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let endpoint = mda_endpoint(url)?;
        let uri = endpoint.uri().clone();
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let channel = if host.parse::<std::net::IpAddr>().is_ok() {
            endpoint.connect_lazy()
        } else {
            let port = uri
                .port_u16()
                .ok_or_else(|| anyhow::anyhow!("mda_url {url:?} needs a port"))?;
            let (channel, changes) = Channel::balance_channel::<std::net::SocketAddr>(16);
            let scheme = uri.scheme_str().unwrap_or("http").to_string();
            tokio::spawn(resolve_mdas(host.to_string(), port, scheme, changes));
            channel
        };
        Ok(Self {
            inner: GrpcDeliveryClient::new(channel)
                .max_decoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(tern_rpc::MAX_GRPC_MESSAGE_BYTES),
        })
    }
}

/// Keeps the balanced channel's endpoints equal to the addresses `host` resolves to. Every
/// address is inserted again on each round, because the balancer drops an endpoint whose
/// connection failed. Ends when the channel is gone.
async fn resolve_mdas(
    host: String,
    port: u16,
    scheme: String,
    changes: tokio::sync::mpsc::Sender<
        tonic::transport::channel::Change<std::net::SocketAddr, Endpoint>,
    >,
) {
    use tonic::transport::channel::Change;
    let mut known: std::collections::HashSet<std::net::SocketAddr> = Default::default();
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => {
                let now: std::collections::HashSet<_> = addrs.collect();
                for gone in known.difference(&now) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for addr in &now {
                    let Ok(ep) = mda_endpoint(&format!("{scheme}://{addr}")) else {
                        continue;
                    };
                    if changes.send(Change::Insert(*addr, ep)).await.is_err() {
                        return;
                    }
                }
                if now != known {
                    tracing::info!(mda = %host, addresses = now.len(), "delivery agents resolved");
                }
                known = now;
            }
            Err(e) => tracing::warn!(mda = %host, error = %e, "cannot resolve the delivery agent"),
        }
        tokio::time::sleep(MDA_RESOLVE_INTERVAL).await;
    }
}

pub struct Runner {
    store: Store,
    delivery: DeliveryClient,
    remote: Arc<Remote>,
    outcomes: Bouncer,
    cfg: RunnerConfig,
    owner: String,
}

impl Runner {
    pub fn new(
        store: Store,
        delivery: DeliveryClient,
        remote: Arc<Remote>,
        outcomes: Bouncer,
        cfg: RunnerConfig,
    ) -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let owner = format!(
            "{host}:{}:{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            store,
            delivery,
            remote,
            outcomes,
            cfg,
            owner,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Deletes finished messages older than `keep_finished_secs`, and the mailboxes' delivery
    /// keys older than `max_age_secs + keep_finished_secs`, a bounded amount per call so one
    /// sweep never holds the runner up for long.
    async fn purge_finished(&self) {
        let ago = |secs: u64| {
            now_ms().saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
        };
        let before = ago(self.cfg.keep_finished_secs);
        let messages = sweep("finished queue messages", |limit| {
            self.store.purge_finished(before, limit)
        })
        .await;
        if messages > 0 {
            tracing::info!(messages, "finished queue messages purged");
        }
        // The mailboxes' delivery keys: nothing is retried after `max_age_secs`, and the
        // finished messages are kept `keep_finished_secs` more, so a key older than both can
        // never be asked about again.
        let before = ago(self
            .cfg
            .max_age_secs
            .saturating_add(self.cfg.keep_finished_secs));
        let keys = sweep("old delivery keys", |limit| {
            self.store.purge_delivery_keys(before, limit)
        })
        .await;
        if keys > 0 {
            tracing::info!(keys, "old delivery keys purged");
        }
    }

    /// Runs until `token` is cancelled; attempts under way finish, then leases are released.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.cfg.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let poll = Duration::from_millis(this.cfg.poll_interval_ms.max(10));
        tracing::info!(runner = %this.owner, "queue runner started");
        let mut last_purge: Option<std::time::Instant> = None;
        while !token.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            if last_purge.is_none_or(|at| at.elapsed() >= purge_every(&this.cfg)) {
                last_purge = Some(std::time::Instant::now());
                this.purge_finished().await;
            }
            // Claim only what can start soon: a lease is a promise to try within its time.
            let free = permits.available_permits().max(1) as u32;
            let claims = match this
                .store
                .claim(
                    &this.owner,
                    this.cfg.batch.min(free * 8),
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
            let traces = this.trace_contexts(&claims).await;
            let (local, remote) = this.split_local(claims).await;
            if !local.is_empty() {
                let permit = permits.clone().acquire_owned().await?;
                let this = this.clone();
                let span = tracing::info_span!("queue.local", rcpts = local.len());
                // One parent per span: the batch continues its first message's trace and
                // links the others.
                let mut ids: Vec<&str> = local.iter().map(|(c, _)| c.queue_id.as_str()).collect();
                ids.dedup();
                for (i, tp) in ids.iter().filter_map(|id| traces.get(*id)).enumerate() {
                    if i == 0 {
                        tern_runtime::telemetry::continue_trace(&span, tp);
                    } else {
                        tern_runtime::telemetry::link_trace(&span, tp);
                    }
                }
                tasks.spawn(
                    async move {
                        this.deliver_local(local).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            for (queue_id, claims) in by_message(remote) {
                let permit = permits.clone().acquire_owned().await?;
                let this = this.clone();
                let span = tracing::info_span!("queue.attempt", queue.id = %queue_id, rcpts = claims.len());
                if let Some(tp) = traces.get(&queue_id) {
                    tern_runtime::telemetry::continue_trace(&span, tp);
                }
                tasks.spawn(
                    async move {
                        this.attempt_remote(&queue_id, claims).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
        while tasks.join_next().await.is_some() {}
        this.remote.close_all().await;
        match this.store.release_leases(&this.owner).await {
            Ok(n) => tracing::info!(released = n, "queue runner stopped"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release leases; they expire on their own")
            }
        }
        Ok(())
    }

    /// The stored trace contexts of the claimed messages (none when spans are not exported:
    /// the query would be wasted).
    async fn trace_contexts(&self, claims: &[Claim]) -> HashMap<String, String> {
        if !tern_runtime::telemetry::exporting() {
            return HashMap::new();
        }
        let mut ids: Vec<&str> = claims.iter().map(|c| c.queue_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        self.store.trace_contexts(&ids).await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "trace contexts unreadable");
            HashMap::new()
        })
    }

    /// Splits a round's claims into local recipients (for the MDA) and remote ones, asking the
    /// directory once per distinct domain. A recipient whose domain cannot be looked up goes
    /// with the local ones, which defers it with the directory's trouble as the reason.
    async fn split_local(&self, claims: Vec<Claim>) -> (Vec<(Claim, bool)>, Vec<Claim>) {
        let mut known: HashMap<String, Option<bool>> = HashMap::new();
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for c in claims {
            let domain = domain_of(&c.address);
            let is_local = match known.get(&domain) {
                Some(v) => *v,
                None => {
                    let v = match self.store.is_local_domain(&domain).await {
                        Ok(v) => Some(v),
                        Err(e) => {
                            tracing::warn!(error = %e, "domain lookup failed");
                            None
                        }
                    };
                    known.insert(domain, v);
                    v
                }
            };
            match is_local {
                Some(true) => local.push((c, true)),
                Some(false) => remote.push(c),
                None => local.push((c, false)),
            }
        }
        (local, remote)
    }

    /// One attempt for a round's local recipients, of any number of messages: their contents
    /// in one query, the messages to the MDA in as few DeliverBatch calls as the size bound
    /// allows, and all outcomes recorded in one transaction per call.
    async fn deliver_local(&self, claims: Vec<(Claim, bool)>) {
        let mut planned = Vec::new();
        let mut ready = Vec::new();
        for (c, domain_known) in claims {
            if domain_known {
                ready.push(c);
            } else {
                planned.push(self.plan_defer(&c, "451 4.3.0 directory unavailable", &[]));
            }
        }
        let messages = by_message(ready);
        let ids: Vec<&str> = messages.keys().map(String::as_str).collect();
        let contents: HashMap<String, Vec<u8>> = match self.store.message_contents(&ids).await {
            Ok(rows) => rows.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "queue content unreadable");
                HashMap::new()
            }
        };
        let mut batch: Vec<(String, Vec<Claim>)> = Vec::new();
        let mut batch_bytes = 0usize;
        for (queue_id, claims) in messages {
            let Some(content) = contents.get(&queue_id) else {
                for c in &claims {
                    planned.push(self.plan_defer(c, "451 4.3.0 queue storage unavailable", &[]));
                }
                continue;
            };
            if !batch.is_empty()
                && (batch_bytes + content.len() > LOCAL_BATCH_BYTES
                    || batch.len() >= LOCAL_BATCH_MESSAGES)
            {
                let full = std::mem::take(&mut batch);
                planned.extend(self.deliver_local_batch(full, &contents).await);
                planned.iter_mut().for_each(|p| p.destination = LOCAL);
                self.outcomes.record(&self.owner, &planned).await;
                planned.clear();
                batch_bytes = 0;
            }
            batch_bytes += content.len();
            batch.push((queue_id, claims));
        }
        if !batch.is_empty() {
            planned.extend(self.deliver_local_batch(batch, &contents).await);
        }
        planned.iter_mut().for_each(|p| p.destination = LOCAL);
        self.outcomes.record(&self.owner, &planned).await;
    }

    /// One DeliverBatch call; the outcomes it calls for, not yet recorded.
    async fn deliver_local_batch(
        &self,
        batch: Vec<(String, Vec<Claim>)>,
        contents: &HashMap<String, Vec<u8>>,
    ) -> Vec<Planned> {
        let content_of = |id: &str| contents.get(id).map(Vec::as_slice).unwrap_or_default();
        let request = DeliverBatchRequest {
            messages: batch
                .iter()
                .map(|(queue_id, claims)| DeliverRequest {
                    return_path: claims[0].sender.clone(),
                    recipients: claims
                        .iter()
                        .map(|c| DeliverRecipient {
                            address: c.address.clone(),
                            delivery_key: format!("q:{}", c.recipient_id),
                        })
                        .collect(),
                    content: content_of(queue_id).to_vec(),
                    queue_id: queue_id.clone(),
                })
                .collect(),
        };
        let mut planned = Vec::new();
        let mut client = self.delivery.inner.clone();
        let started = Instant::now();
        let mut request = tonic::Request::new(request);
        tern_runtime::telemetry::inject(&mut request);
        let response = client.deliver_batch(request).await;
        metrics::histogram!(names::DELIVERY_SECONDS, "destination" => LOCAL)
            .record(started.elapsed().as_secs_f64());
        match response {
            Ok(resp) => {
                let results = resp.into_inner().results;
                for (i, (queue_id, claims)) in batch.iter().enumerate() {
                    let content = content_of(queue_id);
                    let outcomes = results
                        .get(i)
                        .map(|r| r.outcomes.as_slice())
                        .unwrap_or_default();
                    for c in claims {
                        planned.push(match outcomes.iter().find(|o| o.address == c.address) {
                            Some(o) if o.status == OutcomeStatus::Delivered as i32 => {
                                self.outcomes.plan_delivered(c, &o.reply, None, content)
                            }
                            Some(o) if o.status == OutcomeStatus::PermanentFailure as i32 => {
                                self.outcomes.plan_failed(c, &o.reply, None, content)
                            }
                            Some(o) => self.plan_defer(c, &o.reply, content),
                            None => self.plan_defer(
                                c,
                                "451 4.3.0 delivery agent gave no outcome",
                                content,
                            ),
                        });
                    }
                }
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "delivery agent call failed");
                for (queue_id, claims) in &batch {
                    for c in claims {
                        planned.push(self.plan_defer(
                            c,
                            "451 4.4.1 delivery agent unreachable",
                            content_of(queue_id),
                        ));
                    }
                }
            }
        }
        planned
    }

    /// One attempt for the claimed remote recipients of one message.
    async fn attempt_remote(&self, queue_id: &str, claims: Vec<Claim>) {
        let content = match self.store.message_content(queue_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "queue content unreadable");
                for c in &claims {
                    self.defer(c, "451 4.3.0 queue storage unavailable", &[])
                        .await;
                }
                return;
            }
        };
        let mut by_domain: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
        for c in claims {
            by_domain.entry(domain_of(&c.address)).or_default().push(c);
        }
        for (domain, claims) in by_domain {
            let span = tracing::info_span!("queue.remote", rcpt.domain = %domain);
            let started = Instant::now();
            self.deliver_remote(&domain, &claims, &content)
                .instrument(span)
                .await;
            metrics::histogram!(names::DELIVERY_SECONDS, "destination" => REMOTE)
                .record(started.elapsed().as_secs_f64());
        }
    }

    /// One SMTP transaction for all recipients of this message in `domain`, trying the
    /// destination's addresses in order until one answers for the recipients.
    async fn deliver_remote(&self, domain: &str, claims: &[Claim], content: &[u8]) {
        let _slot = self.remote.permit(domain).await;
        let plan = match self.remote.plan(domain).await {
            Ok(p) => p,
            Err(NoRoute::Temporary(reply)) => {
                for c in claims {
                    self.defer(c, &reply, content).await;
                }
                return;
            }
            Err(NoRoute::Permanent(reply)) => {
                for c in claims {
                    self.outcomes
                        .failed(c, &self.owner, &reply, None, content)
                        .await;
                }
                return;
            }
        };
        let first = &claims[0];
        let envelope = OutEnvelope {
            mail_from: &first.sender,
            rcpts: claims
                .iter()
                .map(|c| (c.address.as_str(), rcpt_params(c)))
                .collect(),
            ret: first.ret.map(|r| match r {
                tern_store::Ret::Full => tern_smtp::Ret::Full,
                tern_store::Ret::Headers => tern_smtp::Ret::Headers,
            }),
            envid: first.envid.as_deref(),
            requiretls: first.requiretls,
        };
        let mut last_error = String::from("451 4.4.1 no mail host answered");
        for (addr, name) in &plan.targets {
            let mut conn = match self.remote.connect(*addr, name, &plan).await {
                Ok(c) => c,
                Err(TransferError::Temporary(why)) => {
                    tracing::info!(host = %name, %addr, error = %why, "connection failed, trying the next address");
                    last_error = format!("451 4.4.1 {name} [{}]: {why}", addr.ip());
                    continue;
                }
                Err(TransferError::Permanent(reply)) => {
                    let text = format!("{reply} (from {name} [{}])", addr.ip());
                    for c in claims {
                        self.outcomes
                            .failed(c, &self.owner, &text, Some(name), content)
                            .await;
                    }
                    return;
                }
            };
            let peer = conn.peer().to_string();
            match conn.send(&envelope, content).await {
                Ok(outcomes) => {
                    self.remote.release(*addr, plan.tls, conn).await;
                    for (c, outcome) in claims.iter().zip(outcomes) {
                        match outcome {
                            RcptOutcome::Accepted(r) => {
                                let text = format!("{r} (from {peer})");
                                self.outcomes
                                    .delivered(c, &self.owner, &text, Some(name), content)
                                    .await
                            }
                            RcptOutcome::Rejected(r) if r.code >= 500 => {
                                let text = format!("{r} (from {peer})");
                                self.outcomes
                                    .failed(c, &self.owner, &text, Some(name), content)
                                    .await
                            }
                            RcptOutcome::Rejected(r) => {
                                self.defer(c, &format!("{r} (from {peer})"), content).await
                            }
                        }
                    }
                    return;
                }
                Err(TransferError::Permanent(reply)) => {
                    self.remote.release(*addr, plan.tls, conn).await;
                    let text = format!("{reply} (from {peer})");
                    for c in claims {
                        self.outcomes
                            .failed(c, &self.owner, &text, Some(name), content)
                            .await;
                    }
                    return;
                }
                Err(TransferError::Temporary(why)) => {
                    // RFC 5321 §5.1: a temporary failure at one host is a reason to try the next.
                    tracing::info!(%peer, error = %why, "temporary failure, trying the next address");
                    self.remote.release(*addr, plan.tls, conn).await;
                    last_error = format!("{why} (from {peer})");
                }
            }
        }
        for c in claims {
            self.defer(c, &last_error, content).await;
        }
    }

    /// The outcome of a temporary failure: retry later, or fail when the lifetime is over.
    fn plan_defer(&self, c: &Claim, reply: &str, content: &[u8]) -> Planned {
        let delay = backoff(&self.cfg, c.attempts, &mut rand::rng());
        match decide(&self.cfg, now_ms(), c, delay) {
            Deferral::Expire => {
                let text = format!("4.4.7 delivery time expired; last reply: {reply}");
                self.outcomes.plan_failed(c, &text, None, content)
            }
            Deferral::Retry { at_ms, warn } => {
                let until = warn.then(|| c.created_at_ms / 1000 + self.cfg.max_age_secs as i64);
                self.outcomes.plan_deferred(c, reply, at_ms, until, content)
            }
        }
    }

    async fn defer(&self, c: &Claim, reply: &str, content: &[u8]) {
        let p = self.plan_defer(c, reply, content);
        self.outcomes.record(&self.owner, &[p]).await
    }
}

fn rcpt_params(c: &Claim) -> tern_smtp::RcptParams {
    let n = &c.notify;
    let notify = if !n.explicit {
        tern_smtp::Notify::default()
    } else {
        // Bits as tern_smtp::Notify stores them: success 1, failure 2, delay 4; none is NEVER.
        let bits = u8::from(n.success) | (u8::from(n.failure) << 1) | (u8::from(n.delay) << 2);
        tern_smtp::Notify::from_bits(if n.never { 0 } else { bits })
    };
    tern_smtp::RcptParams {
        notify,
        orcpt: c.orcpt.clone(),
    }
}

/// A DSN on its way to `to`: sent with the null sender, so it is never bounced itself.
fn notification<'a>(to: &'a [String], content: &'a [u8]) -> NewMessage<'a> {
    NewMessage {
        sender: "",
        recipients: to,
        content,
        ..Default::default()
    }
}

/// Records outcomes and writes the DSNs they call for, each in one transaction with the
/// outcome: a failed recipient and its bounce commit together or not at all.
/// An outcome decided but not yet recorded (see [`Bouncer::record`]).
/// The `destination` labels of the delivery metrics.
const LOCAL: &str = "local";
const REMOTE: &str = "remote";

pub struct Planned {
    recipient_id: i64,
    address: String,
    sender: String,
    state: RecipientState,
    reply: String,
    next_attempt_at_ms: Option<i64>,
    /// The DSN to queue with it, if any.
    notice: Option<Vec<u8>>,
    /// The `destination` label of its metrics: remote unless the runner says local.
    destination: &'static str,
    /// When the message was queued, for the queue-to-outcome latency.
    queued_at_ms: i64,
}

#[derive(Clone)]
pub struct Bouncer {
    store: Store,
    reporting_mta: String,
}

/// The RFC 3463 status inside a reply ("550 5.1.1 ..." → "5.1.1"), or one made from the code.
fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let first = words.next().unwrap_or("");
    let is_status = |w: &str| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if is_status(first) {
        return first.to_string();
    }
    if let Some(second) = words.next().filter(|w| is_status(w)) {
        return second.to_string();
    }
    match first.as_bytes().first() {
        Some(b'2') => "2.0.0".into(),
        Some(b'4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

impl Bouncer {
    pub fn new(store: Store, reporting_mta: String) -> Self {
        Self {
            store,
            reporting_mta,
        }
    }

    fn dsn(
        &self,
        kind: DsnKind,
        c: &Claim,
        reply: &str,
        remote: Option<&str>,
        content: &[u8],
        retry_until: Option<i64>,
    ) -> Option<Vec<u8>> {
        if dsn::never_bounce_to(&c.sender) {
            return None;
        }
        let n = &c.notify;
        // RFC 3461 §4.1: without NOTIFY the default is FAILURE and DELAY; NEVER silences all.
        let wanted = match kind {
            DsnKind::Failed => !n.never && (!n.explicit || n.failure),
            DsnKind::Delayed => !n.never && (!n.explicit || n.delay),
            DsnKind::Delivered => n.explicit && n.success,
        };
        if !wanted {
            return None;
        }
        let now = now_ms() / 1000;
        let recipients = [DsnRecipient {
            final_recipient: c.address.clone(),
            original_recipient: c.orcpt.clone(),
            status: status_of(reply),
            diagnostic: Some(format!("smtp; {reply}")),
            remote_mta: remote.map(|r| format!("dns; {r}")),
            last_attempt_unix: Some(now),
            will_retry_until_unix: retry_until,
        }];
        let input = DsnInput {
            kind,
            reporting_mta: &self.reporting_mta,
            to: &c.sender,
            envid: c.envid.as_deref(),
            arrival_unix: c.created_at_ms / 1000,
            recipients: &recipients,
            original: content,
            // An 8-bit original would make the whole report 8-bit, and a bounce refused by a
            // peer without 8BITMIME is lost (bounces are never bounced): return headers then.
            return_full: !matches!(c.ret, Some(tern_store::Ret::Headers)) && content.is_ascii(),
            now_unix: now,
        };
        Some(dsn::build(&input))
    }

    /// The outcome "delivered", with the "delivered" DSN a NOTIFY=SUCCESS recipient asked for.
    pub fn plan_delivered(
        &self,
        c: &Claim,
        reply: &str,
        remote: Option<&str>,
        content: &[u8],
    ) -> Planned {
        tracing::info!(rcpt = %c.address, reply, "delivered");
        Planned {
            recipient_id: c.recipient_id,
            address: c.address.clone(),
            sender: c.sender.clone(),
            state: RecipientState::Delivered,
            reply: reply.to_string(),
            next_attempt_at_ms: None,
            notice: self.dsn(DsnKind::Delivered, c, reply, remote, content, None),
            destination: REMOTE,
            queued_at_ms: c.created_at_ms,
        }
    }

    /// The outcome "failed", with its bounce.
    pub fn plan_failed(
        &self,
        c: &Claim,
        reply: &str,
        remote: Option<&str>,
        content: &[u8],
    ) -> Planned {
        tracing::info!(rcpt = %c.address, reply, "failed permanently");
        Planned {
            recipient_id: c.recipient_id,
            address: c.address.clone(),
            sender: c.sender.clone(),
            state: RecipientState::Failed,
            reply: reply.to_string(),
            next_attempt_at_ms: None,
            notice: self.dsn(DsnKind::Failed, c, reply, remote, content, None),
            destination: REMOTE,
            queued_at_ms: c.created_at_ms,
        }
    }

    /// The outcome "try again at `at_ms`"; `warn_until` asks for the "delayed" DSN, giving
    /// the time retries end (Unix seconds).
    pub fn plan_deferred(
        &self,
        c: &Claim,
        reply: &str,
        at_ms: i64,
        warn_until: Option<i64>,
        content: &[u8],
    ) -> Planned {
        tracing::info!(rcpt = %c.address, reply, retry_in_s = (at_ms - now_ms()) / 1000, "deferred");
        Planned {
            recipient_id: c.recipient_id,
            address: c.address.clone(),
            sender: c.sender.clone(),
            state: RecipientState::Queued,
            reply: reply.to_string(),
            next_attempt_at_ms: Some(at_ms),
            notice: warn_until
                .and_then(|until| self.dsn(DsnKind::Delayed, c, reply, None, content, Some(until))),
            destination: REMOTE,
            queued_at_ms: c.created_at_ms,
        }
    }

    /// Records outcomes, each with its DSN, all in one transaction: a failed recipient and its
    /// bounce commit together or not at all. Outcomes whose lease was lost are dropped.
    pub async fn record(&self, owner: &str, planned: &[Planned]) {
        if planned.is_empty() {
            return;
        }
        let now = now_ms();
        for p in planned {
            let outcome = match p.state {
                RecipientState::Delivered => "delivered",
                RecipientState::Failed => "failed",
                RecipientState::Queued => "deferred",
            };
            metrics::counter!(names::DELIVERY_ATTEMPTS, "destination" => p.destination, "outcome" => outcome)
                .increment(1);
            if p.state != RecipientState::Queued {
                let waited = (now - p.queued_at_ms).max(0) as f64 / 1000.0;
                metrics::histogram!(names::DELIVERY_QUEUE_SECONDS, "destination" => p.destination)
                    .record(waited);
            }
        }
        let senders: Vec<[String; 1]> = planned.iter().map(|p| [p.sender.clone()]).collect();
        let records = planned
            .iter()
            .zip(&senders)
            .map(|(p, to)| OutcomeRecord {
                recipient_id: p.recipient_id,
                state: p.state,
                reply: &p.reply,
                next_attempt_at_ms: p.next_attempt_at_ms,
                notification: p.notice.as_deref().map(|m| notification(to, m)),
            })
            .collect();
        match self.store.record_outcomes(owner, records).await {
            Ok(done) => {
                for (p, r) in planned.iter().zip(done) {
                    match r {
                        Recorded::Done(Some(id)) => {
                            tracing::info!(rcpt = %p.address, notice.id = %id, "delivery status notification queued")
                        }
                        Recorded::Done(None) => {}
                        Recorded::LeaseLost => {
                            tracing::info!(rcpt = %p.address, "lease lost; outcome dropped")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, outcomes = planned.len(), "could not record outcomes; the leases expire and the recipients are tried again")
            }
        }
    }

    pub async fn delivered(
        &self,
        c: &Claim,
        owner: &str,
        reply: &str,
        remote: Option<&str>,
        content: &[u8],
    ) {
        let p = self.plan_delivered(c, reply, remote, content);
        self.record(owner, &[p]).await
    }

    pub async fn failed(
        &self,
        c: &Claim,
        owner: &str,
        reply: &str,
        remote: Option<&str>,
        content: &[u8],
    ) {
        let p = self.plan_failed(c, reply, remote, content);
        self.record(owner, &[p]).await
    }

    pub async fn deferred(
        &self,
        c: &Claim,
        owner: &str,
        reply: &str,
        at_ms: i64,
        warn_until: Option<i64>,
        content: &[u8],
    ) {
        let p = self.plan_deferred(c, reply, at_ms, warn_until, content);
        self.record(owner, &[p]).await
    }

    /// The administrator's "bounce now": fails every still-queued recipient with a bounce.
    pub async fn bounce_now(&self, queue_id: &str) -> tern_store::Result<usize> {
        let (owner, claims) = self.store.queue_bounce(queue_id).await?;
        if claims.is_empty() {
            return Ok(0);
        }
        let content = self.store.message_content(queue_id).await?;
        for c in &claims {
            let reply = "550 5.0.0 returned to sender by the postmaster";
            let mut p = self.plan_failed(c, reply, None, &content);
            p.destination = "admin";
            self.record(&owner, &[p]).await;
        }
        Ok(claims.len())
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

    fn claim(created_at_ms: i64, delay_warned: bool) -> Claim {
        Claim {
            recipient_id: 1,
            queue_id: "q".into(),
            sender: "a@example.test".into(),
            address: "b@remote.test".into(),
            attempts: 3,
            created_at_ms,
            notify: Default::default(),
            orcpt: None,
            envid: None,
            ret: None,
            requiretls: false,
            delay_warned,
        }
    }

    const H: i64 = 3_600_000;

    #[test]
    fn deferral_retries_warns_once_and_expires_on_the_clock() {
        let cfg = RunnerConfig {
            max_age_secs: 5 * 24 * 3600,
            delay_warning_secs: 4 * 3600,
            ..Default::default()
        };
        let t0 = 1_000 * H;
        let ten_min = Duration::from_secs(600);
        // Young: retry, no warning.
        assert_eq!(
            decide(&cfg, t0 + H, &claim(t0, false), ten_min),
            Deferral::Retry {
                at_ms: t0 + H + 600_000,
                warn: false
            }
        );
        // Past the warning time: warn, once.
        assert_eq!(
            decide(&cfg, t0 + 5 * H, &claim(t0, false), ten_min),
            Deferral::Retry {
                at_ms: t0 + 5 * H + 600_000,
                warn: true
            }
        );
        assert_eq!(
            decide(&cfg, t0 + 5 * H, &claim(t0, true), ten_min),
            Deferral::Retry {
                at_ms: t0 + 5 * H + 600_000,
                warn: false
            }
        );
        // The next try never lands after the lifetime: the last one is at expiry.
        let near_end = t0 + 120 * H - 60_000;
        assert_eq!(
            decide(&cfg, near_end, &claim(t0, true), ten_min),
            Deferral::Retry {
                at_ms: t0 + 120 * H,
                warn: false
            }
        );
        // Lifetime over: fail.
        assert_eq!(
            decide(&cfg, t0 + 120 * H, &claim(t0, true), ten_min),
            Deferral::Expire
        );
        // Warnings can be switched off.
        let quiet = RunnerConfig {
            delay_warning_secs: 0,
            ..cfg
        };
        assert_eq!(
            decide(&quiet, t0 + 5 * H, &claim(t0, false), ten_min),
            Deferral::Retry {
                at_ms: t0 + 5 * H + 600_000,
                warn: false
            }
        );
    }

    #[test]
    fn purge_sweeps_follow_the_retention() {
        let with = |secs| RunnerConfig {
            keep_finished_secs: secs,
            ..RunnerConfig::default()
        };
        assert_eq!(purge_every(&with(0)), Duration::from_secs(1));
        assert_eq!(purge_every(&with(20)), Duration::from_secs(5));
        assert_eq!(
            purge_every(&RunnerConfig::default()),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn default_schedule_is_minutes_first_and_near_an_hour_at_most() {
        let cfg = RunnerConfig {
            jitter_percent: 0,
            ..Default::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(backoff(&cfg, 1, &mut rng), Duration::from_secs(300));
        assert_eq!(backoff(&cfg, 50, &mut rng), Duration::from_secs(4000));
    }

    #[test]
    fn status_codes_come_from_the_reply() {
        assert_eq!(status_of("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(status_of("4.4.7 delivery time expired"), "4.4.7");
        assert_eq!(status_of("451 try later"), "4.0.0");
        assert_eq!(status_of("554 no"), "5.0.0");
        assert_eq!(status_of(""), "5.0.0");
    }

    /// Counts the calls it gets and answers each with no outcomes.
    #[derive(Clone, Default)]
    struct CountingMda(Arc<std::sync::atomic::AtomicUsize>);

    #[tonic::async_trait]
    impl tern_rpc::v1::delivery_server::Delivery for CountingMda {
        async fn deliver(
            &self,
            _: tonic::Request<DeliverRequest>,
        ) -> Result<tonic::Response<tern_rpc::v1::DeliverResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not used"))
        }
        async fn deliver_batch(
            &self,
            _: tonic::Request<DeliverBatchRequest>,
        ) -> Result<tonic::Response<tern_rpc::v1::DeliverBatchResponse>, tonic::Status> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(tonic::Response::new(Default::default()))
        }
    }

    /// A host-named MDA URL goes through the resolver and the balanced channel; "localhost"
    /// may also resolve to ::1, where nothing listens, and the balancer must route around it.
    #[tokio::test]
    async fn a_dns_named_mda_is_resolved_and_called() {
        let mda = CountingMda::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(tern_rpc::v1::delivery_server::DeliveryServer::new(
                    mda.clone(),
                ))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let client = DeliveryClient::new(&format!("http://localhost:{port}")).unwrap();
        for _ in 0..3 {
            let mut c = client.inner.clone();
            tokio::time::timeout(
                Duration::from_secs(20),
                c.deliver_batch(DeliverBatchRequest::default()),
            )
            .await
            .expect("the call is not left waiting for an endpoint")
            .expect("the call reaches the MDA");
        }
        assert_eq!(mda.0.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(
            DeliveryClient::new("http://localhost").is_err(),
            "a port is required"
        );
    }
}
