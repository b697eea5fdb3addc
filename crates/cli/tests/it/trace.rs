//! One trace per message across agents: an in-process OTLP receiver (the collector's
//! TraceService, from opentelemetry-proto) collects the spans of an in-process cluster while a
//! message goes smtplib → MSA → queue → MTA runner → gRPC → MDA, and one trace id must cover
//! the MSA's SMTP session, the runner's delivery and the MDA's handling of the call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tern_runtime::telemetry::{self, LogFormat, OtlpConfig};
use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

/// A received span: its trace id (hex), exported name and string attributes.
#[derive(Debug, Clone)]
struct Received {
    trace: String,
    name: String,
    attrs: BTreeMap<String, String>,
}

#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let attrs = span
                        .attributes
                        .iter()
                        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                            _ => None,
                        })
                        .collect();
                    got.push(Received {
                        trace: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                        name: span.name,
                        attrs,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_covers_msa_mta_and_mda() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    // Installed before the cluster, whose own logging set-up then finds a subscriber in place.
    telemetry::init_with(
        LogFormat::Text,
        Some(OtlpConfig {
            endpoint: format!("http://{addr}"),
            service_name: "tern-test".into(),
            batch_delay: Some(Duration::from_millis(50)),
        }),
    );
    assert!(telemetry::exporting());

    let c = TestCluster::start("sqlite").await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let s = c.state().clone();
    let sent = Client::new("send", s.submission.port(), &c.cert(), ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message("traced")))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    let got = Client::new("fetch", s.imap.port(), &c.cert(), BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");

    // The queue stored the submission's context: the runner's span continues that trace, and
    // the MDA's server span continues the runner's through the gRPC traceparent.
    let want = [
        "smtp.session",
        "queue.local",
        "tern.v1.Delivery/DeliverBatch",
        "mda.deliver_batch",
        "smtp.command",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        telemetry::flush();
        let spans = receiver.0.lock().unwrap().clone();
        let submission = spans.iter().find(|s| {
            s.name == "smtp.session"
                && s.attrs.get("listener").map(String::as_str) == Some("submission")
        });
        if let Some(session) = submission {
            let names: BTreeSet<&str> = spans
                .iter()
                .filter(|s| s.trace == session.trace)
                .map(|s| s.name.as_str())
                .collect();
            if want.iter().all(|w| names.contains(w)) {
                let grpc = spans
                    .iter()
                    .find(|s| s.trace == session.trace && s.name == want[2])
                    .unwrap();
                assert_eq!(
                    grpc.attrs.get("rpc.system").map(String::as_str),
                    Some("grpc")
                );
                assert_eq!(
                    grpc.attrs.get("rpc.method").map(String::as_str),
                    Some("DeliverBatch")
                );
                // The session's commands are spans of their own, named by verb.
                let verbs: BTreeSet<&str> = spans
                    .iter()
                    .filter(|s| s.trace == session.trace && s.name == "smtp.command")
                    .filter_map(|s| s.attrs.get("smtp.verb").map(String::as_str))
                    .collect();
                assert!(
                    verbs.iter().any(|v| v.contains("MAIL")),
                    "smtp.command verbs: {verbs:?}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "trace {} has only {names:?}; all spans: {spans:#?}",
                session.trace
            );
        } else {
            assert!(
                std::time::Instant::now() < deadline,
                "no submission session span exported: {spans:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}
