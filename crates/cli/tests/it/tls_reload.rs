//! Certificates reloaded without a restart, on every TLS listener of a running cluster: new
//! files are put in place, SIGHUP asks for the reload at once (the periodic check would find
//! them within `RELOAD_INTERVAL` anyway), and implicit TLS for submission, IMAP and POP3 and
//! STARTTLS on port 25 all present the new certificate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use tern_testkit::TestCluster;

/// Whether a handshake with `connector` (which trusts only the new certificate) succeeds;
/// with `smtp_starttls` the SMTP greeting, EHLO and STARTTLS come first.
async fn handshake(addr: SocketAddr, smtp_starttls: bool, connector: &TlsConnector) -> bool {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    if smtp_starttls {
        let mut lines = BufReader::new(&mut tcp);
        let mut line = String::new();
        lines.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("220 "), "{line}");
        lines
            .get_mut()
            .write_all(b"EHLO peer.test\r\n")
            .await
            .unwrap();
        loop {
            line.clear();
            lines.read_line(&mut line).await.unwrap();
            if line.starts_with("250 ") {
                break;
            }
        }
        lines.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
        line.clear();
        lines.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("220 "), "{line}");
    }
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_a_replaced_certificate_without_restart() {
    let c = TestCluster::start("sqlite").await;
    let s = c.state().clone();
    let names = ["localhost", "127.0.0.1"].map(String::from);
    let fresh = tempfile::tempdir().unwrap();
    let new = tern_runtime::tls::ensure_self_signed(fresh.path(), &names).unwrap();
    let connector = tern_runtime::tls::connector_trusting(&new.cert).unwrap();
    let listeners = [
        ("submissions", s.submissions, false),
        ("imaps", s.imaps, false),
        ("pop3s", s.pop3s, false),
        ("smtp starttls", s.smtp, true),
    ];
    for (name, addr, starttls) in listeners {
        assert!(
            !handshake(addr, starttls, &connector).await,
            "{name}: the new certificate is not in service yet"
        );
    }

    // Over the files `tern up` generated, as a renewal would.
    let tls_dir = c.cert().parent().unwrap().to_path_buf();
    std::fs::copy(&new.key, tls_dir.join("key.pem")).unwrap();
    std::fs::copy(&new.cert, tls_dir.join("cert.pem")).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());

    let deadline = Instant::now() + Duration::from_secs(15);
    for (name, addr, starttls) in listeners {
        while !handshake(addr, starttls, &connector).await {
            assert!(
                Instant::now() < deadline,
                "{name}: certificate not reloaded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c.stop().await;
}
