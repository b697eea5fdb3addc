//! ManageSieve (RFC 5804) end to end, on in-process clusters on both backends, with real
//! clients over real TLS: sieve-connect (the Perl client operators use) does STARTTLS and
//! AUTHENTICATE PLAIN, has a broken script refused with its line number, uploads a good one,
//! activates and lists it; a message submitted with smtplib is then filed where the script
//! says. Python's ssl module speaks the commands sieve-connect lacks (RENAMESCRIPT,
//! HAVESPACE, CHECKSCRIPT, UNAUTHENTICATE) and checks the exact responses: capabilities
//! re-sent after STARTTLS, no login before TLS, NONEXISTENT, ACTIVE, and deleting.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

const SCRIPT: &str = "require [\"fileinto\", \"mailbox\"];\n\
    if header :contains \"subject\" \"report\" {\n    fileinto :create \"Reports\";\n}\n";

/// Runs sieve-connect against the cluster's ManageSieve port as `user`, the password on
/// stdin; returns (success, stdout, stderr).
async fn sieve_connect(
    c: &TestCluster,
    user: (&str, &str),
    args: &[&str],
) -> (bool, String, String) {
    let port = c.state().managesieve.expect("ManageSieve listener").port();
    let ca = c.cert();
    let mut cmd = Command::new("sieve-connect");
    cmd.args([
        "--server",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--nosrv",
    ])
    .args(["--user", user.0, "--passwordfd", "0", "--authmech", "PLAIN"])
    .arg("--tlscafile")
    .arg(&ca)
    .args(args)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let password = user.1.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("run sieve-connect (is it installed?)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The response lines of each step of a Python ManageSieve session.
async fn python_session(c: &TestCluster, steps: &[&str]) -> Value {
    let port = c.state().managesieve.expect("ManageSieve listener").port();
    let mut client = Client::new("managesieve", port, &c.cert(), BOB.0, BOB.1);
    for step in steps {
        client = client.arg("--step", step);
    }
    client.run().await
}

fn lines(v: &Value) -> Vec<String> {
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

async fn send(c: &TestCluster, subject: &str) {
    let s = c.state().clone();
    let sent = Client::new("send", s.submission.port(), &c.cert(), ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message(subject)))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
}

async fn count(c: &TestCluster, address: &str, folder: &str) -> usize {
    let store = c.store();
    let account = store.account(address).await.unwrap().unwrap();
    match store.mailbox(account.id, folder).await.unwrap() {
        Some(mb) => store.messages(mb.id).await.unwrap().len(),
        None => 0,
    }
}

async fn managesieve_end_to_end(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let dir = c.dir.path();

    // sieve-connect: STARTTLS, AUTHENTICATE PLAIN, and a script with a syntax error on line 3
    // refused with the line named; nothing is stored.
    let broken = dir.join("broken.sieve");
    std::fs::write(
        &broken,
        "require \"fileinto\";\n\nif header :contains \"subject\" \"x\" { fileinto \"A\" }\n",
    )
    .unwrap();
    let broken = broken.to_str().unwrap();
    let (ok, out, err) = sieve_connect(
        &c,
        BOB,
        &[
            "--localsieve",
            broken,
            "--remotesieve",
            "broken",
            "--upload",
        ],
    )
    .await;
    assert!(!ok, "a broken script must be refused: {out} {err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(
        c.store()
            .list_sieve_scripts(BOB.0)
            .await
            .unwrap()
            .is_empty()
    );

    // A good script: uploaded, activated, listed as active.
    let good = dir.join("main.sieve");
    std::fs::write(&good, SCRIPT).unwrap();
    let good = good.to_str().unwrap();
    let (ok, out, err) = sieve_connect(
        &c,
        BOB,
        &["--localsieve", good, "--remotesieve", "main", "--upload"],
    )
    .await;
    assert!(ok, "{out} {err}");
    let (ok, out, err) = sieve_connect(&c, BOB, &["--remotesieve", "main", "--activate"]).await;
    assert!(ok, "{out} {err}");
    let (ok, out, err) = sieve_connect(&c, BOB, &["--list"]).await;
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("main") && l.to_lowercase().contains("activ")),
        "{out}"
    );
    let stored = c.store().sieve_script(BOB.0, "main").await.unwrap();
    assert_eq!((stored.source.as_str(), stored.active), (SCRIPT, true));
    // A wrong password is refused.
    let (ok, _, _) = sieve_connect(&c, (BOB.0, "wrong-password"), &["--list"]).await;
    assert!(!ok, "a wrong password must be refused");

    // The script takes effect: a report is filed into the folder it creates.
    send(&c, "quarterly report").await;
    eventually(
        "the report in Bob's Reports folder",
        Duration::from_secs(20),
        || async { count(&c, BOB.0, "Reports").await == 1 },
    )
    .await;
    assert_eq!(count(&c, BOB.0, "INBOX").await, 0);

    // The protocol in detail, over Python's ssl module.
    let bad_script = b64(b"keep;\nfileinto \"x\";\n");
    let put_bad = format!("put:other:{bad_script}");
    let put_other = format!("put:other:{}", b64(b"discard;\n"));
    let got = python_session(
        &c,
        &[
            "raw:AUTHENTICATE \"PLAIN\" \"AGJvYgB4\"",
            "starttls",
            "auth",
            "raw:CAPABILITY",
            "raw:RENAMESCRIPT \"main\" \"work\"",
            &put_bad,
            &put_other,
            "raw:RENAMESCRIPT \"other\" \"work\"",
            "raw:LISTSCRIPTS",
            "raw:GETSCRIPT \"main\"",
            "raw:DELETESCRIPT \"work\"",
            "raw:HAVESPACE \"new\" 999999999",
            "raw:HAVESPACE \"new\" 100",
            "raw:CHECKSCRIPT \"keep;\"",
            "raw:NOOP \"tag-1\"",
            "raw:SETACTIVE \"\"",
            "raw:DELETESCRIPT \"work\"",
            "raw:DELETESCRIPT \"other\"",
            "raw:LISTSCRIPTS",
            "raw:UNAUTHENTICATE",
            "raw:LISTSCRIPTS",
            "raw:LOGOUT",
        ],
    )
    .await;
    let greeting: Vec<String> = got["greeting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(
        greeting.contains(&"\"STARTTLS\"".to_string()),
        "{greeting:?}"
    );
    assert!(
        greeting.contains(&"\"SASL\" \"\"".to_string()),
        "{greeting:?}"
    );
    assert!(
        greeting.contains(&"\"VERSION\" \"1.0\"".to_string()),
        "{greeting:?}"
    );
    let sieve = greeting
        .iter()
        .find(|l| l.starts_with("\"SIEVE\""))
        .expect("SIEVE capability");
    for ext in ["fileinto", "vacation", "imap4flags", "reject", "mailbox"] {
        assert!(sieve.split(['"', ' ']).any(|e| e == ext), "{sieve}");
    }
    assert!(
        !sieve.contains("duplicate"),
        "disabled extensions are not offered: {sieve}"
    );
    let steps = got["steps"].as_array().unwrap();
    let want: &[(&str, &[&str])] = &[
        (
            "raw",
            &["NO (ENCRYPT-NEEDED) \"Use STARTTLS before authenticating\""],
        ),
        ("starttls", &["OK \"TLS negotiation successful\""]),
        ("auth", &["\"\"", "OK \"Logged in\""]),
        ("raw", &["OK \"Capability completed\""]),
        ("raw", &["OK \"Renamescript completed\""]),
        ("put", &["NO \"line 2, "]),
        ("put", &["OK \"Putscript completed\""]),
        (
            "raw",
            &["NO (ALREADYEXISTS) \"A script with that name already exists\""],
        ),
        (
            "raw",
            &[
                "\"other\"",
                "\"work\" ACTIVE",
                "OK \"Listscripts completed\"",
            ],
        ),
        (
            "raw",
            &["NO (NONEXISTENT) \"There is no script by that name\""],
        ),
        (
            "raw",
            &["NO (ACTIVE) \"The active script cannot be deleted; deactivate it first\""],
        ),
        ("raw", &["NO (QUOTA/MAXSIZE) "]),
        ("raw", &["OK \"Putscript would succeed\""]),
        ("raw", &["OK \"Script is valid\""]),
        ("raw", &["OK (TAG \"tag-1\") \"Done\""]),
        ("raw", &["OK \"Setactive completed\""]),
        ("raw", &["OK \"Deletescript completed\""]),
        ("raw", &["OK \"Deletescript completed\""]),
        ("raw", &["OK \"Listscripts completed\""]),
        ("raw", &["OK"]),
        ("raw", &["NO \"Authenticate first\""]),
        ("raw", &["OK \"Logout completed\""]),
    ];
    assert_eq!(steps.len(), want.len(), "{got}");
    for (i, (step, (name, expect))) in steps.iter().zip(want).enumerate() {
        assert_eq!(step["step"], *name, "step {i}: {step}");
        let got_lines = lines(step);
        let tail = &got_lines[got_lines.len() - expect.len()..];
        for (g, e) in tail.iter().zip(expect.iter()) {
            assert!(
                g.starts_with(e),
                "step {i}: {g:?} should start with {e:?} in {got_lines:?}"
            );
        }
    }
    // After STARTTLS the capabilities came again, now with SASL PLAIN and without STARTTLS;
    // once logged in, CAPABILITY names the owner.
    let after_tls = lines(&steps[1]);
    assert_eq!(after_tls[0], "OK \"Begin TLS negotiation now\"");
    assert!(
        after_tls.contains(&"\"SASL\" \"PLAIN\"".to_string()),
        "{after_tls:?}"
    );
    assert!(
        !after_tls.contains(&"\"STARTTLS\"".to_string()),
        "{after_tls:?}"
    );
    assert_eq!(
        after_tls.last().unwrap(),
        "OK \"TLS negotiation successful\""
    );
    let caps = lines(&steps[3]);
    assert!(
        caps.contains(&format!("\"OWNER\" \"{}\"", BOB.0)),
        "{caps:?}"
    );
    assert!(
        c.store()
            .list_sieve_scripts(BOB.0)
            .await
            .unwrap()
            .is_empty()
    );

    // Sieve off again: mail goes to INBOX.
    send(&c, "another report").await;
    eventually(
        "the report in Bob's INBOX",
        Duration::from_secs(20),
        || async { count(&c, BOB.0, "INBOX").await == 1 },
    )
    .await;
    assert_eq!(count(&c, BOB.0, "Reports").await, 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managesieve_end_to_end_sqlite() {
    managesieve_end_to_end("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managesieve_end_to_end_postgres() {
    managesieve_end_to_end("postgres").await;
}
