//! The operations endpoint every agent serves on its HTTP port: Prometheus `/metrics`,
//! `/healthz` (the process is alive) and `/readyz` (the store answers and every listener is up).
//!
//! Metrics go through the `metrics` facade into one process-wide Prometheus recorder, so code
//! anywhere (the session driver here, the queue runner, the store's error path) records with a
//! one-line macro and `tern up` serves every agent's series from one endpoint. The names live in
//! [`names`], with their help texts, so the Grafana dashboard can be checked against them.
//!
//! Readiness is per process lifecycle, not global: it hangs off the [`Shutdown`] handle that every
//! agent and every listener already receives. Each listener registers itself while it accepts
//! ([`Health::listener`]); `/readyz` answers 503 while any registered listener is down, while the
//! process is shutting down, or when the store probe fails or takes longer than
//! [`STORE_PROBE_TIMEOUT`]. The probe is a closure (a `SELECT 1` in practice): this crate knows
//! no SQL.
//!
//! What it deliberately does not do: no authentication (bind it to an internal address), no
//! push gateway, and no per-account or per-address labels (unbounded cardinality).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::Shutdown;

/// How long `/readyz` waits for the store before calling it unreachable.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric Tern records, with its help text. Labels are listed in each constant's comment.
pub mod names {
    /// Connections admitted by a listener. Labels: `listener` (smtp, submission, imap, …).
    pub const CONNECTIONS: &str = "tern_connections_total";
    /// Connections turned away by the total or per-IP limit. Labels: `listener`.
    pub const CONNECTIONS_REFUSED: &str = "tern_connections_refused_total";
    /// Connections open now. Labels: `listener`.
    pub const CONNECTIONS_OPEN: &str = "tern_connections_open";
    /// SMTP commands received. Labels: `listener`, `verb` (EHLO, MAIL, …, `invalid`).
    pub const SMTP_COMMANDS: &str = "tern_smtp_commands_total";
    /// SMTP replies sent, by final reply line. Labels: `listener`, `code` (250, 451, …).
    pub const SMTP_REPLIES: &str = "tern_smtp_replies_total";
    /// IMAP commands received. Labels: `verb` (LOGIN, SELECT, FETCH, …, `invalid`).
    pub const IMAP_COMMANDS: &str = "tern_imap_commands_total";
    /// Time from an IMAP command's bytes to its tagged reply. Labels: `verb`.
    pub const IMAP_COMMAND_SECONDS: &str = "tern_imap_command_duration_seconds";
    /// ManageSieve commands received. Labels: `verb` (PUTSCRIPT, LISTSCRIPTS, …, `unknown`).
    pub const MANAGESIEVE_COMMANDS: &str = "tern_managesieve_commands_total";
    /// Messages put on the queue. Labels: `agent` (msa: submission, mta: port 25).
    pub const MESSAGES_ACCEPTED: &str = "tern_messages_accepted_total";
    /// Messages refused at the end of DATA (or a gRPC submission refused). Labels: `agent`,
    /// `class` (4xx, 5xx).
    pub const MESSAGES_REJECTED: &str = "tern_messages_rejected_total";
    /// Queue recipients per state, sampled by the MTA. Labels: `state` (queued, delivered,
    /// failed).
    pub const QUEUE_RECIPIENTS: &str = "tern_queue_recipients";
    /// Age of the oldest message that still has a queued recipient (0 when none).
    pub const QUEUE_OLDEST_AGE_SECONDS: &str = "tern_queue_oldest_age_seconds";
    /// Delivery outcomes, one per recipient per attempt. Labels: `destination` (local, remote),
    /// `outcome` (delivered, deferred, failed).
    pub const DELIVERY_ATTEMPTS: &str = "tern_delivery_attempts_total";
    /// Time one delivery attempt took (a DeliverBatch call, or one SMTP transaction to a
    /// domain). Labels: `destination`.
    pub const DELIVERY_SECONDS: &str = "tern_delivery_duration_seconds";
    /// Time from queueing to a final outcome (delivered or failed). Labels: `destination`.
    pub const DELIVERY_QUEUE_SECONDS: &str = "tern_delivery_queue_seconds";
    /// Database errors seen by the store. Labels: `kind` (pool_timeout, io, database, other).
    pub const STORE_ERRORS: &str = "tern_store_errors_total";

    /// Every name above with its help text (what `describe` registers).
    pub const ALL: &[(&str, &str)] = &[
        (CONNECTIONS, "Connections admitted by a listener"),
        (
            CONNECTIONS_REFUSED,
            "Connections refused by the connection limits",
        ),
        (CONNECTIONS_OPEN, "Connections open now"),
        (SMTP_COMMANDS, "SMTP commands received, by verb"),
        (SMTP_REPLIES, "SMTP replies sent, by code"),
        (IMAP_COMMANDS, "IMAP commands received, by verb"),
        (IMAP_COMMAND_SECONDS, "IMAP command latency"),
        (
            MANAGESIEVE_COMMANDS,
            "ManageSieve commands received, by verb",
        ),
        (MESSAGES_ACCEPTED, "Messages accepted onto the queue"),
        (MESSAGES_REJECTED, "Messages refused at the end of DATA"),
        (QUEUE_RECIPIENTS, "Queue recipients per state"),
        (QUEUE_OLDEST_AGE_SECONDS, "Age of the oldest queued message"),
        (
            DELIVERY_ATTEMPTS,
            "Delivery outcomes per recipient and attempt",
        ),
        (DELIVERY_SECONDS, "Duration of one delivery attempt"),
        (
            DELIVERY_QUEUE_SECONDS,
            "Time from queueing to a final outcome",
        ),
        (STORE_ERRORS, "Database errors seen by the store"),
    ];
}

/// Histogram buckets in seconds: 1 ms to 10 minutes, enough for an IMAP FETCH and for a
/// message that sat in the queue through a few retries.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
/// Until it is installed, the `metrics` macros record nothing, which costs nothing.
pub fn install_metrics() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("bucket list is not empty");
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is already global (a test harness's, say): render from a
                // private one, which then simply stays empty.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            for (name, help) in names::ALL {
                metrics::describe_counter!(*name, *help);
            }
            handle
        })
        .clone()
}

/// The readiness state shared by one process's agents and listeners (see the module docs).
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    next_id: AtomicU64,
    /// (id, name, up) for every listener registered during this lifecycle.
    listeners: Mutex<Vec<(u64, &'static str, bool)>>,
}

/// Marks a listener down when dropped (its accept loop has ended).
pub struct ListenerGuard {
    id: u64,
    health: Health,
}

impl Health {
    /// Registers `name` as up until the returned guard is dropped.
    pub fn listener(&self, name: &'static str) -> ListenerGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().push((id, name, true));
        ListenerGuard {
            id,
            health: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, &'static str, bool)>> {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Why the listeners make the process unready, if they do: none registered yet, or some
    /// down.
    pub fn listener_problem(&self) -> Option<String> {
        let l = self.lock();
        if l.is_empty() {
            return Some("no listener started yet".into());
        }
        let down: Vec<&str> = l.iter().filter(|e| !e.2).map(|e| e.1).collect();
        (!down.is_empty()).then(|| format!("listeners down: {}", down.join(", ")))
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        let mut l = self.health.lock();
        if let Some(e) = l.iter_mut().find(|e| e.0 == self.id) {
            e.2 = false;
        }
    }
}

/// The store check `/readyz` runs: `Ok` when the store answered.
pub type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Makes a [`Probe`] from an async closure, e.g. `probe(move || { let s = store.clone();
/// async move { s.ping().await } })`.
pub fn probe<F, Fut, E>(f: F) -> Probe
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    Arc::new(move || {
        let fut = f();
        Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
    })
}

#[derive(Clone)]
struct OpsState {
    metrics: PrometheusHandle,
    shutdown: Shutdown,
    probe: Probe,
}

/// What `/readyz` would answer now: `Ok` or the reasons for not being ready.
pub async fn readiness(shutdown: &Shutdown, probe: &Probe) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if shutdown.token.is_cancelled() {
        problems.push("shutting down".to_string());
    }
    if let Some(p) = shutdown.health.listener_problem() {
        problems.push(p);
    }
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("store unreachable: {e}")),
        Err(_) => problems.push(format!(
            "store unreachable: no answer within {} s",
            STORE_PROBE_TIMEOUT.as_secs()
        )),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` is cancelled.
/// Installs the metrics recorder if nothing has yet.
pub async fn serve(listener: TcpListener, shutdown: Shutdown, probe: Probe) -> anyhow::Result<()> {
    let metrics = install_metrics();
    let token = shutdown.token.clone();
    // Histograms keep raw samples until rendered; a scrape-less process must not grow forever.
    let upkeep = {
        let metrics = metrics.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => metrics.run_upkeep(),
                }
            }
        })
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(OpsState {
            metrics,
            shutdown,
            probe,
        });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(token.cancelled_owned())
        .await;
    upkeep.abort();
    result.map_err(Into::into)
}

async fn metrics_handler(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<OpsState>) -> impl IntoResponse {
    match readiness(&s.shutdown, &s.probe).await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        ),
    }
}

/// Starts [`serve`] on `listener` (when there is one) as a task, logging its address. Errors
/// end the task with a warning: the endpoint is for watching the agent, not part of its job.
pub fn spawn(listener: Option<TcpListener>, shutdown: &Shutdown, probe: Probe) {
    let Some(listener) = listener else { return };
    // Installed before the agents start, so their first counts are not lost.
    install_metrics();
    match listener.local_addr() {
        Ok(addr) => tracing::info!(http.address = %addr, "metrics and health endpoint listening"),
        Err(e) => tracing::warn!(error = %e, "metrics listener has no address"),
    }
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, shutdown, probe).await {
            tracing::warn!(error = %e, "metrics and health endpoint failed");
        }
    });
}

/// Binds the ops HTTP listener of an agent's `[metrics] address`, if one is configured.
pub async fn bind(config: &MetricsConfig) -> anyhow::Result<Option<TcpListener>> {
    use anyhow::Context;
    match config.address {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind metrics listener {addr}"))
            .map(Some),
    }
}

/// `[metrics]` in every agent's configuration: where the ops HTTP endpoint listens. Off when
/// `address` is absent (`TERN_METRICS__ADDRESS=0.0.0.0:9464` turns it on).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct MetricsConfig {
    pub address: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let code = buf[9..12].parse().unwrap();
        let body = buf.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    #[tokio::test]
    async fn readyz_follows_the_store_probe_listeners_and_shutdown() {
        let sd = Shutdown::new();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = up.clone();
        let p = probe(move || {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("connection refused")
                }
            }
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l, sd.clone(), p));

        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503, "no listener yet: {body}");
        let guard = sd.health.listener("smtp");
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));

        up.store(false, Ordering::SeqCst);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains("store unreachable: connection refused"),
            "{body}"
        );
        up.store(true, Ordering::SeqCst);
        assert_eq!(get(addr, "/readyz").await.0, 200, "ready again");

        drop(guard);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("listeners down: smtp"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_rendered_for_prometheus() {
        let sd = Shutdown::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        install_metrics();
        tokio::spawn(serve(
            l,
            sd.clone(),
            probe(|| async { Ok::<(), String>(()) }),
        ));
        metrics::counter!(names::SMTP_REPLIES, "listener" => "test", "code" => "250").increment(2);
        metrics::histogram!(names::IMAP_COMMAND_SECONDS, "verb" => "NOOP").record(0.003);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains(r#"tern_smtp_replies_total{listener="test",code="250"} 2"#),
            "{body}"
        );
        assert!(
            body.contains(r#"tern_imap_command_duration_seconds_bucket{verb="NOOP",le="0.005"} 1"#),
            "histograms have buckets: {body}"
        );
        sd.cancel();
    }

    /// The provisioned Grafana dashboard may only chart series Tern records.
    #[test]
    fn dashboard_queries_only_known_metrics() {
        let text = include_str!("../../../deploy/grafana/dashboards/tern.json");
        let json: serde_json::Value = serde_json::from_str(text).expect("dashboard is valid JSON");
        let mut exprs = Vec::new();
        collect_exprs(&json, &mut exprs);
        assert!(exprs.len() >= 8, "the dashboard charts something");
        let known: Vec<&str> = names::ALL.iter().map(|(n, _)| *n).collect();
        for expr in &exprs {
            let mut found = 0;
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("tern_") {
                    continue;
                }
                found += 1;
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .filter(|b| known.contains(b))
                    .unwrap_or(word);
                assert!(
                    known.contains(&base),
                    "dashboard uses unknown metric {word} in {expr}"
                );
            }
            assert!(found > 0, "query without a Tern metric: {expr}");
        }
    }

    fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
            _ => {}
        }
    }
}
