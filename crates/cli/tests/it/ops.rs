//! Operations endpoints on in-process clusters: `/metrics` counters move as a message goes
//! through submission, the queue, local delivery and IMAP; the gRPC health service answers on
//! every agent; `/readyz` turns unready when PostgreSQL becomes unreachable (through a TCP proxy
//! the test cuts) and ready again when it returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tern_testkit::TestCluster;
use tern_testkit::py::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// A plain HTTP/1.1 GET: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the ops endpoint");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|b| b.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// GETs `path` until `done(code, body)` holds (at most 30 s), returning the last body.
async fn poll_http(addr: SocketAddr, path: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(addr, path).await;
        if done(code, &body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "GET {path} never got there; last answer {code}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_mail_flows_and_health_answers() {
    let c = TestCluster::start("sqlite").await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let s = c.state().clone();
    let http = s.http.expect("tern up serves the ops endpoint");

    assert_eq!(http_get(http, "/healthz").await.0, 200);
    poll_http(http, "/readyz", |code, _| code == 200).await;
    let (code, before) = http_get(http, "/metrics").await;
    assert_eq!(code, 200);

    let sent = Client::new("send", s.submission.port(), &c.cert(), ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message("metrics")))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    let got = Client::new("fetch", s.imap.port(), &c.cert(), BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");

    // The delivery outcome is recorded just after the MDA answers; wait for the counter.
    let delivered = [("destination", "local"), ("outcome", "delivered")];
    let after = poll_http(http, "/metrics", |code, body| {
        code == 200 && sample(body, "tern_delivery_attempts_total", &delivered) >= 1.0
    })
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert!(
        moved("tern_messages_accepted_total", &[("agent", "msa")]) >= 1.0,
        "{after}"
    );
    assert!(
        moved("tern_connections_total", &[("listener", "submission")]) >= 1.0,
        "{after}"
    );
    let mail = [("listener", "submission"), ("verb", "MAIL")];
    assert!(moved("tern_smtp_commands_total", &mail) >= 1.0, "{after}");
    let ok = [("listener", "submission"), ("code", "250")];
    assert!(
        moved("tern_smtp_replies_total", &ok) >= 3.0,
        "MAIL, RCPT, DATA: {after}"
    );
    let auth = [("listener", "submission"), ("code", "235")];
    assert!(moved("tern_smtp_replies_total", &auth) >= 1.0, "{after}");
    assert!(
        moved("tern_delivery_attempts_total", &delivered) >= 1.0,
        "{after}"
    );
    let local = [("destination", "local")];
    assert!(
        moved("tern_delivery_duration_seconds_count", &local) >= 1.0,
        "{after}"
    );
    assert!(
        moved("tern_delivery_queue_seconds_count", &local) >= 1.0,
        "{after}"
    );
    assert!(
        moved("tern_imap_commands_total", &[("verb", "SELECT")]) >= 1.0,
        "{after}"
    );
    let select = [("verb", "SELECT")];
    assert!(
        moved("tern_imap_command_duration_seconds_count", &select) >= 1.0,
        "{after}"
    );

    // The standard gRPC health service on each agent's server.
    for (addr, service) in [
        (s.grpc_mda, "tern.v1.Delivery"),
        (s.grpc_mta, "tern.v1.Queue"),
        (s.grpc_msa, "tern.v1.Submission"),
        (s.grpc_maa, "tern.v1.Mailbox"),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to the health service");
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        for name in ["", service] {
            let status = client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health check {name:?} at {addr}: {e}"))
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{name:?} at {addr}"
            );
        }
    }
    c.stop().await;
}

/// A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones closed
/// at once) and restore. The upstream is set once it is known (the cluster makes its database).
struct CuttableProxy {
    addr: SocketAddr,
    upstream: Arc<OnceLock<SocketAddr>>,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttableProxy {
    async fn start() -> CuttableProxy {
        let upstream: Arc<OnceLock<SocketAddr>> = Arc::default();
        let up2 = upstream.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c2, conns2) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if c2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Some(&upstream) = up2.get() else {
                    continue;
                };
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        CuttableProxy {
            addr,
            upstream,
            cut,
            conns,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `postgres://user@HOST:PORT/db?...` → (HOST:PORT, the URL with `with` in its place).
fn swap_host(url: &str, with: SocketAddr) -> (SocketAddr, String) {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let end = hostpart.find(['/', '?']).unwrap_or(hostpart.len());
    let host = &hostpart[..end];
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    let host = host.replace("localhost", "127.0.0.1");
    let upstream: SocketAddr = host.parse().expect("PostgreSQL test URL has an IP host");
    let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    (
        upstream,
        format!("{scheme}://{user}{with}{}", &hostpart[end..]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_store_on_postgres() {
    let proxy = CuttableProxy::start().await;
    let (proxy_addr, upstream) = (proxy.addr, proxy.upstream.clone());
    let c = TestCluster::start_with("postgres", move |o| {
        let url = o.database_url.clone().expect("cluster database URL");
        let (server, through_proxy) = swap_host(&url, proxy_addr);
        upstream.set(server).expect("set once");
        o.database_url = Some(through_proxy);
    })
    .await;
    let http = c.state().http.expect("ops endpoint");
    // Ready once every agent's listeners are up, through the proxy.
    poll_http(http, "/readyz", |code, _| code == 200).await;

    proxy.cut();
    let body = poll_http(http, "/readyz", |code, _| code == 503).await;
    assert!(body.contains("store unreachable"), "{body}");
    assert_eq!(http_get(http, "/healthz").await.0, 200, "still alive");

    proxy.restore();
    poll_http(http, "/readyz", |code, _| code == 200).await;
    c.stop().await;
}
