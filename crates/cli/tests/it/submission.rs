//! The submission policy end to end, with Python's smtplib on in-process clusters on both
//! backends: sender rules (RFC 6409 §6.1, §8.1) for MAIL FROM and `From:`, sending as an alias
//! the account owns, `Bcc:` removed while its recipient still gets the message, the recipient
//! and hourly limits, and failed-login throttling with small thresholds. Then other clients:
//! SCRAM-SHA-256 written out in Python (smtplib has none), and swaks with LOGIN and PLAIN.

use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

const CAROL: (&str, &str) = ("carol@example.test", "carol-password-333");

fn mail(from: &str, subject: &str, extra: &str) -> String {
    b64(format!(
        "From: {from}\r\nTo: Bob <bob@example.test>\r\n{extra}Subject: {subject}\r\n\r\nHello.\r\n"
    )
    .as_bytes())
}

async fn submission_policy(backend: &str) {
    let c = TestCluster::start_with(backend, |o| {
        o.msa.auth.free_failures = 2;
        o.msa.auth.max_delay_secs = 1;
        o.msa.auth.block_after = 3;
        o.msa.limits.max_recipients = 2;
        o.msa.limits.messages_per_hour = 1;
    })
    .await;
    c.provision("example.test", &[ALICE, BOB, CAROL]).await;
    c.store()
        .add_alias("sales@example.test", &["alice@example.test".to_string()])
        .await
        .unwrap();
    let ca = c.cert();
    let s = c.state().clone();

    let out = Client::new("session", s.submission.port(), &ca, ALICE.0, ALICE.1)
        // Someone else's address, and the null sender, as the envelope sender.
        .arg("--step", "MAIL FROM:<bob@example.test>")
        .arg("--step", "MAIL FROM:<>")
        // Own address in the envelope, someone else's in From:; a third recipient is one
        // too many.
        .arg("--step", "MAIL FROM:<alice@example.test>")
        .arg("--step", "RCPT TO:<bob@example.test>")
        .arg("--step", "RCPT TO:<carol@example.test>")
        .arg("--step", "RCPT TO:<alice@example.test>")
        .arg(
            "--step",
            format!("DATA {}", mail("Bob <bob@example.test>", "spoofed", "")),
        )
        // As the alias, with a Bcc: whose recipient is in the envelope only.
        .arg("--step", "MAIL FROM:<sales@example.test>")
        .arg("--step", "RCPT TO:<bob@example.test>")
        .arg("--step", "RCPT TO:<carol@example.test>")
        .arg(
            "--step",
            format!(
                "DATA {}",
                mail(
                    "Sales <sales@example.test>",
                    "from the alias",
                    "Bcc: Carol <carol@example.test>,\r\n  other@example.test\r\n"
                )
            ),
        )
        // The hourly limit (1 here) is now used up.
        .arg("--step", "MAIL FROM:<alice@example.test>")
        .run()
        .await;
    assert_eq!(out["auth"][0], 235, "{out}");
    let steps: Vec<(i64, String)> = out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect();
    let codes: Vec<(i64, &str)> = steps
        .iter()
        .map(|(c, t)| (*c, t.get(..5).unwrap_or("")))
        .collect();
    assert_eq!(
        codes,
        [
            (553, "5.7.1"),
            (553, "5.7.1"),
            (250, "2.1.0"),
            (250, "2.1.5"),
            (250, "2.1.5"),
            (452, "4.5.3"),
            (553, "5.7.1"),
            (250, "2.1.0"),
            (250, "2.1.5"),
            (250, "2.1.5"),
            (250, "2.0.0"),
            (450, "4.7.1"),
        ],
        "{out}"
    );
    assert!(steps[6].1.contains("bob@example.test"), "{out}");

    // Both recipients get the alias's message once, and neither copy shows the Bcc.
    for (who, password) in [BOB, CAROL] {
        let got = Client::new("fetch", s.imap.port(), &ca, who, password)
            .run()
            .await;
        assert_eq!(got["exists"], 1, "{who}: {got}");
        let raw = String::from_utf8(unb64(&got["messages"][0]["raw_b64"])).unwrap();
        assert!(raw.contains("Subject: from the alias\r\n"), "{raw}");
        assert!(
            raw.contains("From: Sales <sales@example.test>\r\n"),
            "{raw}"
        );
        assert!(!raw.to_ascii_lowercase().contains("bcc"), "{raw}");
        assert!(!raw.contains("other@example.test"), "{raw}");
    }

    // Two free failures, a third that waits and starts the block, then even the right
    // password is refused without being checked.
    let out = Client::new("auth-attempts", s.submission.port(), &ca, BOB.0, BOB.1)
        .arg("--attempt", "wrong-1")
        .arg("--attempt", "wrong-2")
        .arg("--attempt", "wrong-3")
        .arg("--attempt", BOB.1)
        .run()
        .await;
    let attempts = out["attempts"].as_array().unwrap();
    let codes: Vec<(i64, &str)> = attempts
        .iter()
        .map(|a| (a[0].as_i64().unwrap(), &a[1].as_str().unwrap()[..5]))
        .collect();
    assert_eq!(
        codes,
        [
            (535, "5.7.8"),
            (535, "5.7.8"),
            (535, "5.7.8"),
            (454, "4.7.0")
        ],
        "{out}"
    );
    assert!(
        attempts[2][2].as_f64().unwrap() >= 0.9,
        "third failure waits: {out}"
    );
    assert!(
        attempts[3][1]
            .as_str()
            .unwrap()
            .contains("too many failed logins"),
        "{out}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_policy_sqlite() {
    submission_policy("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_policy_postgres() {
    submission_policy("postgres").await;
}

/// SCRAM-SHA-256 through a real client: offered after STARTTLS, the server proves it holds the
/// account's keys, the message is delivered; a wrong password and an unknown user get 535 and
/// count as failed logins, so with a block after two the right password is then refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_submission() {
    let c = TestCluster::start_with("sqlite", |o| {
        o.msa.auth.free_failures = 2;
        o.msa.auth.block_after = 2;
    })
    .await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    let out = Client::new("scram", s.submission.port(), &ca, ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message("scram-sha-256")))
        .run()
        .await;
    assert_eq!(
        out["mechanisms"],
        serde_json::json!(["PLAIN", "LOGIN", "SCRAM-SHA-256"]),
        "{out}"
    );
    assert_eq!(out["auth"][0], 235, "{out}");
    assert_eq!(out["server_verified"], true, "{out}");
    assert_eq!(out["refused"], serde_json::json!({}), "{out}");
    for failure in ["wrong_password", "unknown_user"] {
        assert_eq!(out[failure][0], 535, "{failure}: {out}");
        assert!(
            out[failure][1].as_str().unwrap().starts_with("5.7.8 "),
            "{failure}: {out}"
        );
    }
    assert_eq!(out["after_failures"][0], 454, "{out}");
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");
    let raw = String::from_utf8(unb64(&got["messages"][0]["raw_b64"])).unwrap();
    assert!(raw.contains("Subject: scram-sha-256\r\n"), "{raw}");
    assert!(raw.contains("alice@example.test"), "{raw}");
    c.stop().await;
}

/// Runs swaks (apt package `swaks`, installed by .ci/test) and returns its transcript; a
/// failed run fails the test with the transcript shown.
async fn swaks(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("swaks")
            .args(&args)
            .output()
            .expect("run swaks (apt-get install swaks)");
        let transcript = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "swaks {args:?} failed:\n{transcript}");
        transcript
    })
    .await
    .expect("swaks task")
}

/// swaks as an operator would test a submission server: STARTTLS on 587 with AUTH LOGIN and
/// AUTH PLAIN, and implicit TLS on 465; every message arrives, read back over IMAP. And port 25
/// never offers AUTH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits_with_login_and_plain() {
    let c = TestCluster::start("sqlite").await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    let runs = [
        ("LOGIN", "--tls", s.submission),
        ("PLAIN", "--tls", s.submission),
        ("PLAIN", "--tls-on-connect", s.submissions),
    ];
    for (mechanism, tls, addr) in runs {
        let subject = format!("swaks {mechanism} {tls}");
        let transcript = swaks(
            [
                "--server",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
                tls,
                "--auth",
                mechanism,
                "--auth-user",
                ALICE.0,
                "--auth-password",
                ALICE.1,
                "--from",
                ALICE.0,
                "--to",
                BOB.0,
                "--ehlo",
                "client.test",
                "--header",
                &format!("Subject: {subject}"),
                "--body",
                "Sent by swaks.",
                "--timeout",
                "30",
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert!(
            transcript.contains("235 2.7.0 authentication successful"),
            "{transcript}"
        );
        assert!(transcript.contains("250 2.0.0 queued as"), "{transcript}");
    }
    // Port 25 offers STARTTLS but no AUTH, in the clear or inside TLS.
    let transcript = swaks(
        [
            "--server",
            &s.smtp.ip().to_string(),
            "--port",
            &s.smtp.port().to_string(),
            "--tls",
            "--quit-after",
            "EHLO",
            "--ehlo",
            "peer.test",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(transcript.contains("=== TLS started"), "{transcript}");
    assert!(
        transcript.contains("<~  250 "),
        "the EHLO inside TLS: {transcript}"
    );
    assert!(!transcript.contains("AUTH"), "{transcript}");
    let got = Client::new("fetch", s.imap.port(), &ca, BOB.0, BOB.1)
        .arg("--count", 3)
        .run()
        .await;
    assert_eq!(got["exists"], 3, "{got}");
    let mut subjects: Vec<String> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let raw = String::from_utf8(unb64(&m["raw_b64"])).unwrap();
            raw.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "swaks LOGIN --tls",
            "swaks PLAIN --tls",
            "swaks PLAIN --tls-on-connect"
        ],
        "{got}"
    );
    c.stop().await;
}
