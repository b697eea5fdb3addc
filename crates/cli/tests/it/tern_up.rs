//! `tern up` as a newcomer runs it: the real binary on SQLite with a data directory, the admin
//! commands finding it by themselves, smtplib/imaplib over TLS, and `tern send`/`inbox`/`read`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tern::up::State;
use tern_testkit::py::Client;

use crate::common::*;

const TERN: &str = env!("CARGO_BIN_EXE_tern");

/// Where the child processes keep `tern login`'s file: beside the data directory, never in the
/// real home of whoever runs the tests.
fn config_home(data: &Path) -> std::path::PathBuf {
    data.parent().unwrap().join("config")
}

fn tern(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(TERN)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("TERN_DATA")
        .env_remove("TERN_USER")
        .env_remove("TERN_PASSWORD")
        .env_remove("TERN_HOST")
        .env("XDG_CONFIG_HOME", config_home(data))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn ok(data: &Path, args: &[&str]) -> String {
    let (success, stdout, stderr) = tern(data, args);
    assert!(success, "tern {args:?} failed: {stderr}");
    stdout
}

struct Up(std::process::Child);
impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_up_on_sqlite_serves_the_whole_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tern-data");
    let mut up = Up(Command::new(TERN)
        .arg("--data")
        .arg(&data)
        .args(["up", "--ephemeral-ports"])
        .env_remove("TERN_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        if let Ok(s) = State::load(&data) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tern up did not write state.json"
        );
        assert!(up.0.try_wait().unwrap().is_none(), "tern up exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        state.database_url.starts_with("sqlite://"),
        "{}",
        state.database_url
    );
    assert!(data.join("admin-token").exists() && state.cert.exists());

    // Administration finds the running system by itself.
    ok(&data, &["domain", "add", "example.test"]);
    ok(&data, &["account", "add", ALICE.0, "--password", ALICE.1]);
    let mut child = Command::new(TERN)
        .arg("--data")
        .arg(&data)
        .args(["account", "add", BOB.0, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", BOB.1).as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    ok(&data, &["alias", "add", "postmaster@example.test", ALICE.0]);
    assert!(ok(&data, &["domain", "list"]).contains("example.test"));
    let accounts = ok(&data, &["account", "list"]);
    assert!(
        accounts.contains(ALICE.0) && accounts.contains(BOB.0),
        "{accounts}"
    );
    assert!(ok(&data, &["alias", "list"]).contains("postmaster@example.test\talice@example.test"));
    let (success, _, stderr) = tern(&data, &["domain", "list", "--token", "not-the-token"]);
    assert!(
        !success && stderr.contains("invalid admin token"),
        "the admin API needs the token: {stderr}"
    );
    let (success, _, stderr) = tern(&data, &["domain", "add", "example.test"]);
    assert!(
        !success && stderr.contains("exists"),
        "a duplicate domain is refused clearly: {stderr}"
    );

    // smtplib → IMAP: the bytes read back are the bytes sent plus trace headers.
    let sent_msg = message("via-tern-up");
    let sent = Client::new(
        "send",
        state.submission.port(),
        &state.cert,
        ALICE.0,
        ALICE.1,
    )
    .arg("--mail-from", ALICE.0)
    .arg("--rcpt", BOB.0)
    .arg("--message-b64", b64(&sent_msg))
    .run()
    .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");
    let got = Client::new("fetch", state.imap.port(), &state.cert, BOB.0, BOB.1)
        .run()
        .await;
    assert_eq!(got["exists"], 1, "{got}");
    assert_sent_plus_trace_headers(&sent_msg, &unb64(&got["messages"][0]["raw_b64"]));

    // tern send with an attachment, then tern inbox and tern read.
    let attachment = dir.path().join("report.pdf");
    std::fs::write(&attachment, b"%PDF-1.4 not really a pdf \x00\x01\x02").unwrap();
    let mut send = Command::new(TERN)
        .arg("--data")
        .arg(&data)
        .args([
            "send",
            "--from",
            ALICE.0,
            "--to",
            BOB.0,
            "--subject",
            "Quarterly report",
            "--attach",
        ])
        .arg(&attachment)
        .env("TERN_PASSWORD", ALICE.1)
        .env("XDG_CONFIG_HOME", config_home(&data))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    send.stdin
        .take()
        .unwrap()
        .write_all(b"Numbers attached.\n")
        .unwrap();
    let out = send.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tern send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("queued as"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, inbox, _) = tern(&data, &["inbox", "--user", BOB.0, "--password", BOB.1]);
        if inbox.contains("Quarterly report") {
            break;
        }
        assert!(Instant::now() < deadline, "message never listed: {inbox}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let save = dir.path().join("saved");
    let read = ok(
        &data,
        &[
            "read",
            "2",
            "--user",
            BOB.0,
            "--password",
            BOB.1,
            "--save",
            save.to_str().unwrap(),
        ],
    );
    assert!(
        read.contains("Quarterly report") && read.contains("Numbers attached."),
        "{read}"
    );
    assert_eq!(
        std::fs::read(save.join("report.pdf")).unwrap(),
        std::fs::read(&attachment).unwrap()
    );

    // tern login saves Bob's account (verified over IMAP); then the mail commands need no
    // credential flags at all.
    let mut login = Command::new(TERN)
        .arg("--data")
        .arg(&data)
        .args(["login", "--user", BOB.0, "--password-stdin"])
        .env("XDG_CONFIG_HOME", config_home(&data))
        .env_remove("TERN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", BOB.1).as_bytes())
        .unwrap();
    let out = login.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tern login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(BOB.0) && !said.contains(BOB.1), "{said}");
    let config_file = config_home(&data).join("tern").join("config.toml");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the saved password is private");
    }
    let inbox = ok(&data, &["inbox"]);
    assert!(inbox.contains("Quarterly report"), "{inbox}");
    assert!(ok(&data, &["folders"]).contains("INBOX"));
    let (success, _, stderr) = tern(
        &data,
        &[
            "login",
            "--account",
            "bad",
            "--user",
            BOB.0,
            "--password",
            "nope-nope-nope",
        ],
    );
    assert!(!success && stderr.contains("not saved"), "{stderr}");
    assert!(
        !std::fs::read_to_string(&config_file)
            .unwrap()
            .contains("[accounts.bad]")
    );
    // Bob answers Alice's message through the saved login; Alice sees the threaded reply.
    let replied = ok(&data, &["reply", "2", "--body", "Thanks, got it."]);
    assert!(replied.contains("queued as"), "{replied}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, inbox, _) = tern(&data, &["inbox", "--user", ALICE.0, "--password", ALICE.1]);
        if inbox.contains("Re: Quarterly report") {
            break;
        }
        assert!(Instant::now() < deadline, "reply never listed: {inbox}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Tern's IMAP MOVE: the report leaves Bob's INBOX for Archive.
    let moved = ok(&data, &["move", "2", "Archive"]);
    assert!(!moved.is_empty(), "tern move says what it did");
    let inbox = ok(&data, &["inbox"]);
    assert!(!inbox.contains("Quarterly report"), "{inbox}");
    ok(&data, &["logout"]);
    assert!(!config_file.exists(), "logout removes the saved login");

    // A wrong password is a clear error, not a hang.
    let (success, _, stderr) = tern(
        &data,
        &["inbox", "--user", BOB.0, "--password", "nope-nope-nope"],
    );
    assert!(
        !success && stderr.to_lowercase().contains("auth"),
        "{stderr}"
    );

    // Ctrl-C (SIGINT) stops it cleanly and removes state.json.
    let pid = up.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = up.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tern up did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "tern up exit status {status}");
    assert!(!State::path(&data).exists(), "state.json removed on stop");
}
