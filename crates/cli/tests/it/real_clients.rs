//! The mail clients people run, against the MAA: mbsync (isync) keeps a local Maildir in step
//! with a Tern account over IMAPS in both directions, mutt (in batch, driven by `push`) reads a
//! message and files it into another folder, and fetchmail drains a maildrop over POP3S into
//! a delivery command. Each client trusts the cluster's certificate through its own setting.
//! The tools come from Debian (isync, mutt, fetchmail; `.ci/test` installs them). Both backends.

use std::path::{Path, PathBuf};
use std::process::Command;

use tern_store::{FlagOp, Store};
use tern_testkit::TestCluster;

use crate::common::*;

/// Runs a client to completion off the async runtime; a failure shows its output.
async fn run(mut cmd: Command) -> String {
    tokio::task::spawn_blocking(move || {
        let shown = format!("{cmd:?}");
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {shown} (is the tool installed?): {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{shown} failed:\n{text}");
        text
    })
    .await
    .unwrap()
}

/// Bob's mailbox `name`: its id and (flags, content) per message by UID.
async fn mailbox(store: &Store, name: &str) -> (i64, Vec<(Vec<String>, Vec<u8>)>) {
    let account = store.account(BOB.0).await.unwrap().unwrap();
    let id = store.mailbox(account.id, name).await.unwrap().unwrap().id;
    let mut out = Vec::new();
    for m in store.messages(id).await.unwrap() {
        let body = store.message_body(id, m.uid).await.unwrap().unwrap();
        out.push((m.flags, body));
    }
    (id, out)
}

async fn put(store: &Store, subjects: &[&str]) -> Vec<Vec<u8>> {
    let account = store.account(BOB.0).await.unwrap().unwrap();
    let mut sent = Vec::new();
    for s in subjects {
        let raw = message(s);
        store
            .append(account.id, "INBOX", &raw, &[], None)
            .await
            .unwrap();
        sent.push(raw);
    }
    sent
}

/// The files of a Maildir folder's `new` and `cur`, by name.
fn maildir_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(folder.join(sub)).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// A Maildir file as the server holds it: mbsync writes LF line ends locally and adds an
/// `X-TUID` header of its own while it propagates a message.
fn as_on_server(file: &Path) -> Vec<u8> {
    let text = std::fs::read(file).unwrap();
    let mut out = Vec::with_capacity(text.len() + 64);
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"X-TUID: ") {
            continue;
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The Maildir info flags of a file name (`…:2,FS` → "FS").
fn maildir_flags(file: &Path) -> String {
    let name = file.file_name().unwrap().to_str().unwrap();
    name.rsplit_once(":2,")
        .map(|(_, f)| f.to_string())
        .unwrap_or_default()
}

async fn mbsync_both_ways(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let store = c.store();
    let sent = put(store, &["one", "two", "three"]).await;
    let dir = c.dir.path().join("mbsync");
    let maildir = dir.join("mail");
    std::fs::create_dir_all(&maildir).unwrap();
    let rc = dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount tern\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass {pass}\n\
             SSLType IMAPS\nCertificateFile {ca}\n\n\
             IMAPStore remote\nAccount tern\n\n\
             MaildirStore local\nPath {md}/\nInbox {md}/INBOX\nSubFolders Verbatim\n\n\
             Channel tern\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n\
             Expunge Both\nSyncState *\n",
            port = c.state().imaps.port(),
            user = BOB.0,
            pass = BOB.1,
            ca = c.cert().display(),
            md = maildir.display(),
        ),
    )
    .unwrap();
    let mbsync = || {
        let mut cmd = Command::new("mbsync");
        cmd.arg("-c").arg(&rc).arg("tern");
        cmd
    };

    // Pull: every folder, every message byte for byte.
    run(mbsync()).await;
    for folder in ["INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"] {
        assert!(maildir.join(folder).is_dir(), "{folder} created locally");
    }
    let files = maildir_files(&maildir.join("INBOX"));
    assert_eq!(files.len(), 3, "{files:?}");
    let mut local: Vec<Vec<u8>> = files.iter().map(|f| as_on_server(f)).collect();
    local.sort();
    let mut remote: Vec<Vec<u8>> = mailbox(store, "INBOX")
        .await
        .1
        .into_iter()
        .map(|m| m.1)
        .collect();
    remote.sort();
    assert_eq!(local, remote);
    assert!(remote.iter().all(|r| sent.iter().any(|s| r.ends_with(s))));

    // Push: flag one, delete one, write a draft; the server follows.
    let find = |subject: &str| {
        files
            .iter()
            .find(|f| as_on_server(f).ends_with(&message(subject)))
            .unwrap()
            .clone()
    };
    let rename = |file: &Path, flags: &str| {
        let name = file.file_name().unwrap().to_str().unwrap();
        let base = name.split_once(":2,").map_or(name, |(b, _)| b);
        let folder = file.parent().unwrap().parent().unwrap();
        std::fs::rename(file, folder.join("cur").join(format!("{base}:2,{flags}"))).unwrap();
    };
    let (one, two) = (find("one"), find("two"));
    rename(&one, "FS");
    rename(&two, "T");
    let draft = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: written offline\r\n\r\nDraft body.\r\n";
    std::fs::write(maildir.join("Drafts/cur/offline.1:2,D"), draft).unwrap();
    run(mbsync()).await;
    let (inbox_id, inbox) = mailbox(store, "INBOX").await;
    assert_eq!(
        inbox.len(),
        2,
        "the trashed message is expunged on the server"
    );
    let one = inbox
        .iter()
        .find(|m| m.1.ends_with(&message("one")))
        .unwrap();
    assert_eq!(one.0, ["\\Seen", "\\Flagged"]);
    assert!(!inbox.iter().any(|m| m.1.ends_with(&message("two"))));
    let drafts = mailbox(store, "Drafts").await.1;
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].0, ["\\Draft"]);
    // mbsync marks what it uploads with an X-TUID header (to find the message again if the
    // server had no UIDPLUS); otherwise the bytes are the draft's.
    let stored = String::from_utf8(drafts[0].1.clone()).unwrap();
    let without_tuid: String = stored
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("X-TUID: "))
        .collect();
    assert_eq!(without_tuid.as_bytes(), draft);

    // And back: a flag set on the server reaches the Maildir's file name.
    let three_uid = store.messages(inbox_id).await.unwrap().last().unwrap().uid;
    store
        .store_flags(inbox_id, &[three_uid], FlagOp::Add, &["\\Answered".into()])
        .await
        .unwrap();
    run(mbsync()).await;
    let files = maildir_files(&maildir.join("INBOX"));
    assert_eq!(files.len(), 2, "{files:?}");
    let three = files
        .iter()
        .find(|f| as_on_server(f).ends_with(&message("three")))
        .unwrap();
    assert_eq!(maildir_flags(three), "R", "{three:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_sqlite() {
    mbsync_both_ways("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_postgres() {
    mbsync_both_ways("postgres").await;
}

async fn mutt_reads_and_moves(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let store = c.store();
    put(store, &["for mutt"]).await;
    let dir = c.dir.path().join("mutt");
    std::fs::create_dir_all(&dir).unwrap();
    let rc = dir.join("muttrc");
    let read = dir.join("read.eml");
    // Batch use: no caches, no questions, no pauses; the CA is the cluster's certificate.
    std::fs::write(
        &rc,
        format!(
            "set folder=\"imaps://127.0.0.1:{port}/\"\nset imap_user=\"{user}\"\n\
             set imap_pass=\"{pass}\"\nset spoolfile=\"+INBOX\"\n\
             set ssl_ca_certificates_file=\"{ca}\"\nset certificate_file=\"{dir}/certificates\"\n\
             set ssl_force_tls=yes\nset header_cache=\"\"\nset message_cachedir=\"\"\n\
             set confirmappend=no\nset confirmcreate=no\nset delete=yes\nset quit=yes\n\
             set move=no\nset wait_key=no\nset beep=no\nset mail_check=0\nset timeout=1\n\
             set record=\"\"\nset pipe_decode=no\n",
            port = c.state().imaps.port(),
            user = BOB.0,
            pass = BOB.1,
            ca = c.cert().display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    // mutt needs a terminal: `script` gives it one. The pushed keys pipe the message to a
    // file, save it to Archive (which marks it deleted), sync (expunge) and quit.
    let keys = format!(
        "push \"<pipe-message>cat > {read}<enter><save-message>=Archive<enter><sync-mailbox><quit>\"",
        read = read.display()
    );
    let mutt = format!(
        "mutt -n -F '{}' -e '{}'",
        rc.display(),
        keys.replace('\'', "'\\''")
    );
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "script", "-qec", &mutt, "/dev/null"])
        .env("TERM", "xterm")
        .env("HOME", &dir);
    run(cmd).await;
    let got = std::fs::read(&read).expect("mutt piped the message");
    let stored = mailbox(store, "Archive").await.1;
    assert_eq!(stored.len(), 1, "moved to Archive");
    assert_eq!(
        String::from_utf8_lossy(&got).replace("\r\n", "\n"),
        String::from_utf8_lossy(&stored[0].1).replace("\r\n", "\n"),
        "mutt read the whole message"
    );
    assert!(stored[0].1.ends_with(&message("for mutt")));
    assert!(
        mailbox(store, "INBOX").await.1.is_empty(),
        "gone from INBOX"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutt_sqlite() {
    mutt_reads_and_moves("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutt_postgres() {
    mutt_reads_and_moves("postgres").await;
}

async fn fetchmail_drains_pop3s(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let store = c.store();
    put(store, &["pop one", "pop two"]).await;
    let dir = c.dir.path().join("fetchmail");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.mbox");
    let rc = dir.join("fetchmailrc");
    // The certificate names localhost (and 127.0.0.1, which fetchmail does not check):
    // sslcommonname says which name to expect.
    std::fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 service {port} protocol pop3 timeout 30\n\
             user \"{user}\" there with password \"{pass}\" is \"bob\" here\n\
             ssl sslcertfile \"{ca}\" sslcertck sslcommonname \"localhost\"\n\
             mda \"cat >> {out}\"\nfetchall\n",
            port = c.state().pop3s.port(),
            user = BOB.0,
            pass = BOB.1,
            ca = c.cert().display(),
            out = out.display(),
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        // fetchmail refuses a password file others can read.
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut cmd = Command::new("fetchmail");
    cmd.arg("-f").arg(&rc).env("FETCHMAILHOME", &dir);
    let log = run(cmd).await;
    let got = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}: {log}"));
    for subject in ["pop one", "pop two"] {
        assert!(
            got.contains(&format!("Subject: {subject}\n")),
            "{subject} fetched: {got}"
        );
    }
    assert!(
        got.contains(".leading dot survives"),
        "dot-unstuffed: {got}"
    );
    assert!(
        mailbox(store, "INBOX").await.1.is_empty(),
        "fetchmail deleted what it fetched"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_sqlite() {
    fetchmail_drains_pop3s("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_postgres() {
    fetchmail_drains_pop3s("postgres").await;
}
