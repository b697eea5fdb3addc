//! MIME structure and subscriptions over IMAP with Python's imaplib against a real cluster, on
//! both backends: a multipart message with a binary attachment goes in over SMTP, then
//! `FETCH 1 (BODYSTRUCTURE)` describes it and `BODY.PEEK[2]` returns the attachment's encoded
//! bytes exactly; SUBSCRIBE / UNSUBSCRIBE / LSUB and RENAME carrying a subscription along.

use base64::Engine;
use tern_testkit::TestCluster;
use tern_testkit::py::Client;

use crate::common::*;

/// The attachment: every byte value, so nothing may be lost or re-encoded on the way.
fn attachment() -> Vec<u8> {
    (0..=255u8).cycle().take(1000).collect()
}

/// text/plain plus an application/octet-stream attachment in base64, 76-column lines.
fn multipart(attachment: &[u8]) -> (Vec<u8>, String) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(attachment);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let body = lines.join("\r\n") + "\r\n";
    let message = format!(
        "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: With attachment\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <mime@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=-sep-=\"\r\n\r\n\
         --=-sep-=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\n\
         --=-sep-=\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n{body}--=-sep-=--\r\n"
    );
    (message.into_bytes(), body)
}

async fn mime(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let ca = c.cert();
    let s = c.state().clone();
    let data = attachment();
    let (message, encoded) = multipart(&data);
    let sent = Client::new("send", s.submission.port(), &ca, ALICE.0, ALICE.1)
        .arg("--mail-from", ALICE.0)
        .arg("--rcpt", BOB.0)
        .arg("--message-b64", b64(&message))
        .run()
        .await;
    assert_eq!(sent["refused"], serde_json::json!({}), "{sent}");

    let out = Client::new("mime", s.imap.port(), &ca, BOB.0, BOB.1)
        .run()
        .await;
    // The part ends before the CRLF that belongs to the closing delimiter.
    let part2 = unb64(&out["part2_b64"]);
    let want = &encoded.as_bytes()[..encoded.len() - 2];
    assert_eq!(part2, want, "{out}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(
            part2
                .split(|&b| b == b'\r' || b == b'\n')
                .flatten()
                .copied()
                .collect::<Vec<u8>>(),
        )
        .unwrap();
    assert_eq!(decoded, data);
    let bs = out["bodystructure"].as_str().unwrap();
    let expected = format!(
        "BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 19 1 NIL NIL \
         NIL NIL)(\"application\" \"octet-stream\" (\"name\" \"data.bin\") NIL NIL \"base64\" {} \
         NIL (\"attachment\" (\"filename\" \"data.bin\")) NIL NIL) \"mixed\" (\"boundary\" \
         \"=-sep-=\") NIL NIL NIL)",
        want.len()
    );
    assert!(bs.contains(&expected), "{bs}\nwant {expected}");
    assert_eq!(
        out["mime2"],
        "Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n",
        "{out}"
    );
    assert!(!out["flags"].as_str().unwrap().contains("\\Seen"), "{out}");

    let lsub = |k: &str| out[k].to_string();
    for name in ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"] {
        assert!(
            lsub("lsub_before").contains(&format!("\\\"{name}\\\"")),
            "{out}"
        );
    }
    assert_eq!(out["subscribe"], "OK", "{out}");
    assert_eq!(out["unsubscribe"], "OK", "{out}");
    assert!(
        lsub("lsub_after").contains("(\\\\Noselect) \\\"/\\\" \\\"Projects\\\""),
        "{out}"
    );
    assert!(!lsub("lsub_after").contains("Junk"), "{out}");
    assert_eq!(out["rename"], "OK", "{out}");
    assert!(
        lsub("lsub_renamed").contains("() \\\"/\\\" \\\"Old\\\""),
        "{out}"
    );
    assert!(!lsub("lsub_renamed").contains("Archive"), "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_mime_and_subscriptions_sqlite() {
    mime("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_mime_and_subscriptions_postgres() {
    mime("postgres").await;
}
