//! Production shape: the four agent binaries as separate processes on one Postgres database,
//! configured only through `TERN_*` environment variables, talking gRPC to each other.

use tern_testkit::TestDb;
use tern_testkit::procs::Agent;
use tern_testkit::py::Client;

use crate::common::*;

const TOKEN: &str = "process-test-admin-token";

/// A fresh database, a temporary directory with a self-signed certificate, and the `TERN_*`
/// variables every agent gets (gRPC on an ephemeral port).
async fn processes_env(
    token: &str,
) -> (
    TestDb,
    tempfile::TempDir,
    tern_runtime::tls::CertFiles,
    Vec<(&'static str, String)>,
) {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let tls = tern_runtime::tls::ensure_self_signed(
        &dir.path().join("tls"),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    let common = vec![
        ("TERN_DATABASE_URL", db.url.clone()),
        ("TERN_HOSTNAME", "mx.example.test".to_string()),
        ("TERN_ADMIN_TOKEN", token.to_string()),
        ("TERN_TLS__CERT", tls.cert.display().to_string()),
        ("TERN_TLS__KEY", tls.key.display().to_string()),
        ("TERN_GRPC_LISTEN", "127.0.0.1:0".to_string()),
    ];
    (db, dir, tls, common)
}

/// example.test with Alice and Bob, through the MDA's Admin service and the configured token.
async fn provision(target: &tern::admin::Target) {
    let mut admin = tern::admin::admin(target).await.unwrap();
    admin
        .add_domain(tern_rpc::v1::DomainRequest {
            name: "example.test".into(),
        })
        .await
        .unwrap();
    for (address, password) in [ALICE, BOB] {
        admin
            .add_account(tern_rpc::v1::AddAccountRequest {
                address: address.into(),
                password: password.into(),
            })
            .await
            .unwrap();
    }
}

/// The port of the address an agent logged as `field`.
fn port(a: &Agent, field: &str) -> u16 {
    a.address(field)
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_binaries_on_postgres_carry_a_message_from_smtplib_to_imaplib() {
    let (_db, dir, tls, common) = processes_env(TOKEN).await;
    let token = TOKEN.to_string();
    let any = "127.0.0.1:0".to_string();
    let with = |extra: &[(&'static str, String)]| {
        let mut v = common.clone();
        v.extend_from_slice(extra);
        v
    };
    let logs = dir.path();
    let mda = Agent::spawn("tern-mda", &common, logs);
    let mda_url = format!("http://{}", mda.address("grpc.address"));
    let mta = Agent::spawn(
        "tern-mta",
        &with(&[
            ("TERN_SMTP_LISTEN", any.clone()),
            ("TERN_MDA_URL", mda_url.clone()),
            ("TERN_QUEUE__POLL_INTERVAL_MS", "100".into()),
        ]),
        logs,
    );
    let msa = Agent::spawn(
        "tern-msa",
        &with(&[
            ("TERN_SUBMISSION_LISTEN", any.clone()),
            ("TERN_SUBMISSIONS_LISTEN", any.clone()),
        ]),
        logs,
    );
    let maa = Agent::spawn(
        "tern-maa",
        &with(&[
            ("TERN_IMAP_LISTEN", any.clone()),
            ("TERN_IMAPS_LISTEN", any.clone()),
            ("TERN_POP3_LISTEN", any.clone()),
            ("TERN_POP3S_LISTEN", any.clone()),
        ]),
        logs,
    );

    // Provision through the MDA's Admin service with the configured token.
    let target = tern::admin::Target {
        admin_url: mda_url.clone(),
        queue_url: format!("http://{}", mta.address("grpc.address")),
        token,
    };
    provision(&target).await;

    let sent_msg = message("separate-processes");
    let sent = Client::new(
        "send",
        port(&msa, "submission.address"),
        &tls.cert,
        ALICE.0,
        ALICE.1,
    )
    .arg("--mail-from", ALICE.0)
    .arg("--rcpt", BOB.0)
    .arg("--message-b64", b64(&sent_msg))
    .run()
    .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");

    let got = Client::new("fetch", port(&maa, "imap.address"), &tls.cert, BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");
    assert_sent_plus_trace_headers(&sent_msg, &unb64(&got["messages"][0]["raw_b64"]));

    // Mail from another server on port 25 reaches the same mailbox.
    let mx_port = port(&mta, "smtp.address");
    let inbound = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import smtplib; s=smtplib.SMTP('127.0.0.1',{mx_port}); s.ehlo('peer.test'); \
                 r=s.sendmail('someone@remote.test',['bob@example.test'],b'Subject: from afar\\r\\n\\r\\nhi\\r\\n'); \
                 s.mail('someone@remote.test'); c=s.rcpt('victim@elsewhere.test'); print(c[0]); s.quit()"
            ))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    })
    .await
    .unwrap();
    assert!(inbound.0, "port 25 client failed: {}", inbound.2);
    assert_eq!(
        inbound.1.trim(),
        "550",
        "port 25 never relays to other domains"
    );
    let got = Client::new("fetch", port(&maa, "imap.address"), &tls.cert, BOB.0, BOB.1)
        .arg("--count", 2)
        .run()
        .await;
    assert_eq!(got["exists"], 2, "{got}");

    // Every agent stops cleanly on SIGTERM.
    for agent in [msa, mta, maa, mda] {
        let name = agent.name.clone();
        let status = agent.terminate();
        assert!(status.success(), "{name} exited with {status}");
    }
}

/// The deployment shape of issue 7 without a Docker engine: two of each agent as separate
/// processes on one Postgres database. Mail goes in through both MSAs and both MTAs' port 25,
/// both queue runners share the queue (each MTA hands local mail to its own MDA), and both
/// MAAs read the same mailbox: every message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_each_agent_on_one_postgres_deliver_every_message_once() {
    let (_db, dir, tls, common) = processes_env(TOKEN).await;
    let token = TOKEN.to_string();
    let any = "127.0.0.1:0".to_string();
    let with = |extra: &[(&'static str, String)]| {
        let mut v = common.clone();
        v.extend_from_slice(extra);
        v
    };
    let logs = dir.path();
    let mdas: Vec<Agent> = (0..2)
        .map(|_| Agent::spawn("tern-mda", &common, logs))
        .collect();
    let mtas: Vec<Agent> = mdas
        .iter()
        .map(|mda| {
            Agent::spawn(
                "tern-mta",
                &with(&[
                    ("TERN_SMTP_LISTEN", any.clone()),
                    (
                        "TERN_MDA_URL",
                        format!("http://{}", mda.address("grpc.address")),
                    ),
                    ("TERN_QUEUE__POLL_INTERVAL_MS", "50".into()),
                ]),
                logs,
            )
        })
        .collect();
    let msas: Vec<Agent> = (0..2)
        .map(|_| {
            Agent::spawn(
                "tern-msa",
                &with(&[
                    ("TERN_SUBMISSION_LISTEN", any.clone()),
                    ("TERN_SUBMISSIONS_LISTEN", any.clone()),
                ]),
                logs,
            )
        })
        .collect();
    let maas: Vec<Agent> = (0..2)
        .map(|_| {
            Agent::spawn(
                "tern-maa",
                &with(&[
                    ("TERN_IMAP_LISTEN", any.clone()),
                    ("TERN_IMAPS_LISTEN", any.clone()),
                    ("TERN_POP3_LISTEN", any.clone()),
                    ("TERN_POP3S_LISTEN", any.clone()),
                ]),
                logs,
            )
        })
        .collect();

    let target = tern::admin::Target {
        admin_url: format!("http://{}", mdas[1].address("grpc.address")),
        queue_url: format!("http://{}", mtas[0].address("grpc.address")),
        token,
    };
    provision(&target).await;

    // Three messages through each MSA, one through each MTA's port 25.
    let mut expected = Vec::new();
    for (i, msa) in msas.iter().enumerate() {
        for n in 0..3 {
            let subject = format!("via-msa{i}-{n}");
            let sent = Client::new(
                "send",
                port(msa, "submission.address"),
                &tls.cert,
                ALICE.0,
                ALICE.1,
            )
            .arg("--mail-from", ALICE.0)
            .arg("--rcpt", BOB.0)
            .arg("--message-b64", b64(&message(&subject)))
            .run()
            .await;
            assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
            expected.push(subject);
        }
    }
    for (i, mta) in mtas.iter().enumerate() {
        let mx_port = port(mta, "smtp.address");
        let subject = format!("via-mta{i}");
        let ok = tokio::task::spawn_blocking({
            let subject = subject.clone();
            move || {
                std::process::Command::new("python3")
                    .arg("-c")
                    .arg(format!(
                        "import smtplib; s=smtplib.SMTP('127.0.0.1',{mx_port}); \
                         s.sendmail('peer@remote.test',['bob@example.test'],\
                         b'Subject: {subject}\\r\\nMessage-ID: <{subject}@remote.test>\\r\\n\\r\\nhi\\r\\n'); s.quit()"
                    ))
                    .status()
                    .unwrap()
                    .success()
            }
        })
        .await
        .unwrap();
        assert!(ok, "port 25 of mta {i} refused the message");
        expected.push(subject);
    }

    // Both MAAs see all of them, each exactly once.
    for maa in &maas {
        let got = Client::new("fetch", port(maa, "imap.address"), &tls.cert, BOB.0, BOB.1)
            .arg("--count", expected.len())
            .run()
            .await;
        assert_eq!(got["exists"], expected.len(), "{got}");
        let bodies: Vec<String> = got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| String::from_utf8_lossy(&unb64(&m["raw_b64"])).to_string())
            .collect();
        for subject in &expected {
            let copies = bodies
                .iter()
                .filter(|b| b.contains(&format!("Subject: {subject}\r\n")))
                .count();
            assert_eq!(copies, 1, "{subject} arrived {copies} times");
        }
    }

    for agent in msas.into_iter().chain(mtas).chain(maas).chain(mdas) {
        let name = agent.name.clone();
        let status = agent.terminate();
        assert!(status.success(), "{name} exited with {status}");
    }
}
