//! Programs with API tokens: `tern token create` makes a token, the gRPC Submission service
//! takes a structured message (to, cc, bcc, attachments) with it, and the mail read back over
//! IMAP has the attachment intact and no Bcc, while the Bcc recipient got it too. The checks
//! are SMTP's (a spoofed From: is refused with 553 5.7.1), revoked, expired and unknown tokens
//! are refused, and the structured message arrives exactly as mail submitted over SMTP does:
//! the same trace fields and a DKIM signature from the same signer.

use mail_parser::{HeaderName, MessageParser, MimeHeaders};
use tern_rpc::v1::submission_client::SubmissionClient;
use tern_rpc::v1::{
    Attachment, GenerateDkimKeyRequest, Header, ListTokensRequest, RevokeTokenRequest,
    SubmitRawRequest, SubmitRequest,
};
use tern_testkit::TestCluster;
use tern_testkit::py::Client;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::common::*;

const CAROL: (&str, &str) = ("carol@example.test", "carol-password-333");
const TERN: &str = env!("CARGO_BIN_EXE_tern");

/// Runs the `tern` binary against the cluster; returns (success, stdout, stderr).
fn tern(c: &TestCluster, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(TERN)
        .arg("--data")
        .arg(c.data_dir())
        .args(args)
        .env_remove("TERN_ADMIN_URL")
        .env_remove("TERN_ADMIN_TOKEN")
        .output()
        .expect("run tern");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn basic<T>(msg: T, user: &str, password: &str) -> Request<T> {
    let mut r = Request::new(msg);
    let v = b64(format!("{user}:{password}").as_bytes());
    r.metadata_mut()
        .insert("authorization", format!("Basic {v}").parse().unwrap());
    r
}

fn attachment_bytes() -> Vec<u8> {
    // Every byte value, including CR, LF, NUL and a lone ".", over several encoded lines.
    let mut data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    data.extend_from_slice(b"\r\n.\r\n\n.");
    data
}

fn structured(subject: &str) -> SubmitRequest {
    SubmitRequest {
        from: "Alice <alice@example.test>".into(),
        to: vec!["Bob <bob@example.test>".into()],
        cc: vec![],
        bcc: vec![CAROL.0.into()],
        subject: subject.into(),
        text: "Hello Bob,\nthe figures are attached.\n".into(),
        html: "<p>Hello Bob,</p><p>the figures are attached.</p>".into(),
        attachments: vec![Attachment {
            filename: "figures.bin".into(),
            content_type: "application/octet-stream".into(),
            content: attachment_bytes(),
        }],
        headers: vec![Header {
            name: "X-Campaign".into(),
            value: "q3-report".into(),
        }],
    }
}

/// The raw messages in `user`'s INBOX, read over IMAP with Python's imaplib, once `count` are
/// there.
async fn imap_inbox(c: &TestCluster, user: (&str, &str), count: usize) -> Vec<Vec<u8>> {
    let out = Client::new("fetch", c.state().imap.port(), &c.cert(), user.0, user.1)
        .arg("--count", count)
        .run()
        .await;
    let messages: Vec<Vec<u8>> = out["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| unb64(&m["raw_b64"]))
        .collect();
    assert_eq!(messages.len(), count, "{user:?}'s INBOX");
    messages
}

fn with_subject<'a>(messages: &'a [Vec<u8>], subject: &str) -> &'a [u8] {
    messages
        .iter()
        .find(|m| {
            MessageParser::new()
                .parse(m.as_slice())
                .is_some_and(|p| p.subject() == Some(subject))
        })
        .unwrap_or_else(|| panic!("no message with subject {subject:?}"))
}

/// The names of the header fields, in order, up to the first `From:` (the trace and signature
/// fields the system put in front of what the author wrote).
fn added_fields(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let mut names = Vec::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let name = line.split(':').next().unwrap_or("").to_string();
        names.push(name);
    }
    names
}

fn header_text(raw: &[u8], name: &str) -> Option<String> {
    let parsed = MessageParser::new().parse(raw)?;
    parsed.header_raw(name).map(|v| v.trim().to_string())
}

async fn structured_submission_with_tokens(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB, CAROL]).await;
    // DKIM on, so the test also shows the structured path goes through the signer.
    let mut admin = tern::admin::admin(&c.admin_target()).await.unwrap();
    admin
        .generate_dkim_key(GenerateDkimKeyRequest {
            domain: "example.test".into(),
            selector: "s1".into(),
            algorithm: "ed25519".into(),
        })
        .await
        .unwrap();

    // A token from the command line: the secret alone on stdout.
    let (ok, stdout, stderr) = tern(&c, &["token", "create", ALICE.0, "--name", "reports"]);
    assert!(ok, "tern token create: {stderr}");
    let token = stdout.trim().to_string();
    assert!(
        token.starts_with("tern_") && token.len() == 69,
        "{stdout:?}"
    );
    assert!(stderr.contains("shown only once"), "{stderr}");
    let (ok, listed, stderr) = tern(&c, &["token", "list", ALICE.0]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains("reports") && listed.contains(&token[..13]),
        "{listed}"
    );
    assert!(
        !listed.contains(&token),
        "the secret is never listed: {listed}"
    );

    let channel = Channel::from_shared(format!("http://{}", c.state().grpc_msa))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut submit = SubmissionClient::new(channel);

    // The structured message, with a Bcc and a binary attachment.
    let id = submit
        .submit(bearer(structured("structured"), &token))
        .await
        .expect("structured submission")
        .into_inner()
        .queue_id;
    assert!(!id.is_empty());

    // The same author over SMTP (smtplib, STARTTLS, AUTH), for comparison.
    let smtp_message = message("over-smtp");
    let out = Client::new(
        "send",
        c.state().submission.port(),
        &c.cert(),
        ALICE.0,
        ALICE.1,
    )
    .arg("--mail-from", ALICE.0)
    .arg("--rcpt", BOB.0)
    .arg("--message-b64", b64(&smtp_message))
    .run()
    .await;
    assert_eq!(out["refused"], serde_json::json!({}), "{out}");

    // A raw message with the token: delivered byte for byte, trace fields in front.
    let raw_message = message("raw-with-token");
    submit
        .submit_raw(bearer(
            SubmitRawRequest {
                mail_from: ALICE.0.into(),
                rcpt_to: vec![BOB.0.into()],
                content: raw_message.clone(),
            },
            &token,
        ))
        .await
        .expect("raw submission with a token");

    let bob = imap_inbox(&c, BOB, 3).await;
    let got = with_subject(&bob, "structured");
    let parsed = MessageParser::new().parse(got).unwrap();
    assert_eq!(
        parsed.attachment(0).expect("attachment").contents(),
        attachment_bytes().as_slice(),
        "the attachment arrives intact"
    );
    assert_eq!(
        parsed.attachment(0).unwrap().attachment_name(),
        Some("figures.bin")
    );
    assert!(
        parsed
            .body_text(0)
            .is_some_and(|t| t.contains("the figures are attached.")),
    );
    assert!(
        parsed
            .body_html(0)
            .is_some_and(|h| h.contains("<p>Hello Bob,</p>"))
    );
    assert!(
        parsed.header(HeaderName::Bcc).is_none(),
        "no Bcc header for the recipients"
    );
    assert!(
        !String::from_utf8_lossy(got).contains("carol@"),
        "Bcc address never shown"
    );
    assert_eq!(header_text(got, "X-Campaign").as_deref(), Some("q3-report"));
    assert_eq!(
        parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some(ALICE.0)
    );

    // The Bcc recipient has the same message.
    let carol = imap_inbox(&c, CAROL, 1).await;
    let theirs = MessageParser::new().parse(carol[0].as_slice()).unwrap();
    assert_eq!(theirs.subject(), Some("structured"));
    assert!(theirs.header(HeaderName::Bcc).is_none());
    assert_eq!(
        theirs.attachment(0).unwrap().contents(),
        attachment_bytes().as_slice()
    );

    // Delivered the same as SMTP: the same fields put in front of the author's, the same
    // Return-Path, a DKIM signature for the same domain.
    let over_smtp = with_subject(&bob, "over-smtp");
    let fields = |raw: &[u8]| -> Vec<String> {
        added_fields(raw)
            .into_iter()
            .take_while(|n| n != "From" && n != "Date" && n != "Message-ID")
            .collect()
    };
    assert_eq!(fields(got), fields(over_smtp));
    assert_eq!(
        fields(got),
        ["Return-Path", "Delivered-To", "DKIM-Signature", "Received"]
    );
    assert_eq!(
        header_text(got, "Return-Path"),
        header_text(over_smtp, "Return-Path")
    );
    for raw in [got, over_smtp] {
        let sig = header_text(raw, "DKIM-Signature").unwrap();
        assert!(
            sig.contains("d=example.test") && sig.contains("s=s1"),
            "{sig}"
        );
    }
    assert!(header_text(got, "Received").unwrap().contains("with gRPC"));
    assert!(
        header_text(over_smtp, "Received")
            .unwrap()
            .contains("with ESMTPSA")
    );
    let raw_got = with_subject(&bob, "raw-with-token");
    assert!(raw_got.ends_with(&raw_message));

    // Same checks as SMTP: someone else's From: is refused with SMTP's words.
    let mut spoofed = structured("spoofed");
    spoofed.from = "Bob <bob@example.test>".into();
    let err = submit.submit(bearer(spoofed, &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().starts_with("553 5.7.1"), "{}", err.message());

    // Bad input never reaches the queue.
    let mut none = structured("nobody");
    none.to.clear();
    none.bcc.clear();
    let err = submit.submit(bearer(none, &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut injected = structured("injected\r\nBcc: mallory@evil.test");
    injected.bcc.clear();
    let err = submit.submit(bearer(injected, &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut injected = structured("injected-address");
    injected.to = vec!["bob@example.test\r\nBcc: mallory@evil.test".into()];
    let err = submit.submit(bearer(injected, &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut unknown = structured("unknown-rcpt");
    unknown.to = vec!["nobody@example.test".into()];
    let err = submit.submit(bearer(unknown, &token)).await.unwrap_err();
    assert!(err.message().starts_with("550 5.1.1"), "{}", err.message());

    // A password still works (Basic), a wrong one does not.
    submit
        .submit(basic(structured("with-password"), ALICE.0, ALICE.1))
        .await
        .expect("Basic credentials");
    let err = submit
        .submit(basic(structured("bad-password"), ALICE.0, "wrong-password"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A message above tonic's default 4 MiB request limit is accepted as SMTP would accept it.
    let mut big = structured("big");
    big.to = vec![ALICE.0.into()];
    big.bcc.clear();
    big.attachments[0].content = vec![b'x'; 5 * 1024 * 1024];
    submit
        .submit(bearer(big, &token))
        .await
        .expect("a 5 MiB attachment");

    // Unknown, malformed, expired and revoked tokens are refused, each saying why.
    for bad in [
        "tern_0000",
        "not-a-token",
        &token.replace("tern_", "tern_f")[..69],
    ] {
        let err = submit
            .submit(bearer(structured("bad-token"), bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad}: {err:?}");
        assert!(
            err.message().contains("invalid API token"),
            "{}",
            err.message()
        );
    }
    let short = c
        .store()
        .create_token(ALICE.0, "short", Some(tern_store::now_ms() + 300))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let err = submit
        .submit(bearer(structured("expired"), &short.secret))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());

    let tokens = admin
        .list_tokens(ListTokensRequest {
            address: ALICE.0.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let reports = tokens.iter().find(|t| t.name == "reports").unwrap();
    assert!(reports.last_used_ms > 0, "use is recorded");
    let (ok, out, stderr) = tern(&c, &["token", "revoke", &reports.id.to_string()]);
    assert!(ok && out.contains("revoked"), "{out} {stderr}");
    let err = submit
        .submit(bearer(structured("after-revoke"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    let err = admin
        .revoke_token(RevokeTokenRequest { id: reports.id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Nothing refused was queued: Bob has the three earlier messages and the Basic one, and
    // the big message to Alice is the fifth.
    let bob = imap_inbox(&c, BOB, 4).await;
    let subjects: Vec<String> = bob
        .iter()
        .filter_map(|m| {
            MessageParser::new()
                .parse(m.as_slice())?
                .subject()
                .map(String::from)
        })
        .collect();
    assert_eq!(subjects.len(), 4, "{subjects:?}");
    let queued = c.store().queue_list(None, 100).await.unwrap();
    assert_eq!(queued.len(), 5, "only the accepted submissions were queued");
    for s in ["structured", "over-smtp", "raw-with-token", "with-password"] {
        assert!(
            subjects.iter().any(|x| x == s),
            "{s} missing from {subjects:?}"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_structured_submission_with_tokens_sqlite() {
    structured_submission_with_tokens("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_structured_submission_with_tokens_postgres() {
    structured_submission_with_tokens("postgres").await;
}
