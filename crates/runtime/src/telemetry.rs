//! Logging and tracing: tracing to stderr, as text or JSON, filtered by `RUST_LOG` (default
//! `info`); OpenTelemetry export over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the
//! standard variables apply: `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER[_ARG]`,
//! `OTEL_BSP_SCHEDULE_DELAY`, …); and the W3C trace context carried across every hop: gRPC
//! metadata (`traceparent`) and the queue's `trace_context` column.
//!
//! Nothing here records message bodies or secrets — that rule is kept at each span and event,
//! not filtered here. Without an endpoint no exporter exists and spans cost what plain tracing
//! costs; the propagation helpers then find no context and carry nothing.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tonic::codegen::http;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How long finished spans wait to be sent in a batch; `None` takes
    /// `OTEL_BSP_SCHEDULE_DELAY` (default 5 s). Tests use a few milliseconds.
    pub batch_delay: Option<Duration>,
}

impl OtlpConfig {
    /// From `OTEL_EXPORTER_OTLP_ENDPOINT` (unset or empty: no export) and `OTEL_SERVICE_NAME`
    /// (default: the executable's name, e.g. `tern-mta`).
    pub fn from_env() -> Option<OtlpConfig> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        if endpoint.trim().is_empty() {
            return None;
        }
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            })
            .unwrap_or_else(|| "tern".into());
        Some(OtlpConfig {
            endpoint,
            service_name,
            batch_delay: None,
        })
    }
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber, exporting over OTLP when the environment asks for it.
/// Calling it twice is harmless (the second call does nothing), which keeps tests that start
/// several agents in one process simple.
pub fn init(format: LogFormat) {
    init_with(format, OtlpConfig::from_env());
}

/// [`init`] with the export settings given explicitly (tests point it at their own receiver).
/// Must run inside a Tokio runtime when `otlp` is given: the gRPC exporter lives on it.
pub fn init_with(format: LogFormat, otlp: Option<OtlpConfig>) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otel_layer = otlp.and_then(|cfg| match provider(&cfg) {
        Ok(provider) => {
            let tracer = provider.tracer("tern");
            let _ = PROVIDER.set(provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        Err(e) => {
            eprintln!("OpenTelemetry export disabled: {e:#}");
            None
        }
    });
    let (text, json) = match format {
        LogFormat::Text => (
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel_layer)
        .try_init();
}

fn provider(cfg: &OtlpConfig) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(cfg.endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let mut batch = BatchConfigBuilder::default();
    if let Some(delay) = cfg.batch_delay {
        batch = batch.with_scheduled_delay(delay);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// True when spans are exported (an OTLP endpoint was configured).
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Sends the spans still waiting in the batch (at exit). Does nothing when not exporting.
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// Ends export: flushes and stops the exporter (the end of an agent's `main`).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

/// The current span's trace context as a W3C `traceparent` value, or `None` when there is no
/// sampled OpenTelemetry context (export off). Stored with a queued message.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut map: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut map);
    map.remove("traceparent")
}

/// Makes `span` continue the trace of a stored `traceparent` (a queue attempt continues the
/// trace of the submission, however much later and wherever it runs).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to a stored `traceparent` without making it the parent (the other messages
/// of a batched delivery).
pub fn link_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Puts the current span's context into an outgoing gRPC request (`traceparent`).
pub fn inject<T>(request: &mut tonic::Request<T>) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(request.metadata_mut()))
    });
}

/// A `tonic::service::Interceptor` that injects the trace context into every call.
pub fn inject_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    inject(&mut request);
    Ok(request)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one incoming gRPC call, for `Server::builder().trace_fn(..)`: named after the
/// method (`otel.name`, OpenTelemetry's `rpc.*` attributes) and continuing the caller's trace
/// from its `traceparent` metadata.
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    let cx = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(request.headers()))
    });
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
    span
}
