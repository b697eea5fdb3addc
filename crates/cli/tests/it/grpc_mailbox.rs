//! The gRPC Mailbox service as a mail program uses it: mailboxes with counts, paged listings
//! with envelopes, a message raw and parsed (bodies, attachments), and changes — flags, move,
//! delete to Trash or for good — that an idling IMAP client and a Watch stream both see, as
//! they see IMAP's own changes. Password (Basic) and API token (Bearer) authentication; every
//! call sees only the caller's account. Both backends.

use std::time::Duration;

use tern_rpc::v1::mailbox_client::MailboxClient;
use tern_rpc::v1::{
    DeleteMessagesRequest, FetchMessageRequest, FlagOperation, ListMailboxesRequest,
    ListMessagesRequest, MailboxInfo, MoveMessagesRequest, SetFlagsRequest, WatchRequest,
};
use tern_testkit::TestCluster;
use tern_testkit::py::Client;
use tonic::Request;
use tonic::transport::Channel;

use crate::common::*;

fn auth<T>(msg: T, header: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", header.parse().unwrap());
    r
}

fn bob() -> String {
    format!("Basic {}", b64(format!("{}:{}", BOB.0, BOB.1).as_bytes()))
}

const WITH_ATTACHMENT: &[u8] = b"From: Alice <alice@example.test>\r\n\
To: Bob <bob@example.test>, carol@example.test\r\n\
Cc: dave@example.test\r\n\
Subject: =?UTF-8?Q?R=C3=A9sum=C3=A9?= attached\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <cv@example.test>\r\n\
In-Reply-To: <ask@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
\r\n\
--alt\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Here is my r=E9sum=E9.\r\n\
--alt\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Here is my r\xc3\xa9sum\xc3\xa9.</p>\r\n\
--alt--\r\n\
--outer\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"cv.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n\
--outer--\r\n";

async fn mailboxes(client: &mut MailboxClient<Channel>) -> Vec<MailboxInfo> {
    client
        .list_mailboxes(auth(ListMailboxesRequest {}, &bob()))
        .await
        .unwrap()
        .into_inner()
        .mailboxes
}

fn counts(list: &[MailboxInfo], name: &str) -> (u32, u32) {
    let m = list.iter().find(|m| m.name == name).expect(name);
    (m.messages, m.unseen)
}

async fn next_event(
    stream: &mut tonic::Streaming<tern_rpc::v1::MailboxEvent>,
) -> tern_rpc::v1::MailboxEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a Watch event within 10 s")
        .unwrap()
        .expect("stream open")
}

async fn mailbox_service(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let store = c.store();
    let account = store.account(BOB.0).await.unwrap().unwrap();
    let mut uids = Vec::new();
    for raw in [message("first"), WITH_ATTACHMENT.to_vec(), message("third")] {
        let d = store
            .append(account.id, "INBOX", &raw, &[], None)
            .await
            .unwrap();
        uids.push(d.uid);
    }
    let mut client = MailboxClient::connect(format!("http://{}", c.state().grpc_maa))
        .await
        .unwrap();

    // Mailboxes with counts and special use.
    let list = mailboxes(&mut client).await;
    assert_eq!(list[0].name, "INBOX");
    assert_eq!(counts(&list, "INBOX"), (3, 3));
    let trash = list.iter().find(|m| m.name == "Trash").unwrap();
    assert_eq!(trash.special_use, "\\Trash");

    // Paged listing with envelopes.
    let page = |after_uid| ListMessagesRequest {
        mailbox: "INBOX".into(),
        after_uid,
        limit: 2,
    };
    let first = client
        .list_messages(auth(page(0), &bob()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        uids[..2]
    );
    assert_eq!(first.next_after_uid, uids[1]);
    let cv = &first.messages[1];
    assert_eq!(cv.subject, "R\u{e9}sum\u{e9} attached");
    assert_eq!(cv.from, "Alice <alice@example.test>");
    assert_eq!(cv.to, ["Bob <bob@example.test>", "carol@example.test"]);
    assert_eq!(cv.cc, ["dave@example.test"]);
    assert_eq!(cv.message_id, "cv@example.test");
    assert_eq!(cv.in_reply_to, "ask@example.test");
    assert_eq!(cv.size, WITH_ATTACHMENT.len() as u64);
    assert!(cv.flags.is_empty(), "{cv:?}");
    let second = client
        .list_messages(auth(page(first.next_after_uid), &bob()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.messages.len(), 1);
    assert_eq!(second.messages[0].subject, "third");
    assert_eq!(second.next_after_uid, 0, "last page");

    // Raw and parsed.
    let fetched = client
        .fetch_message(auth(
            FetchMessageRequest {
                mailbox: "INBOX".into(),
                uid: uids[1],
            },
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.content, WITH_ATTACHMENT);
    let parsed = fetched.parsed.unwrap();
    assert_eq!(parsed.subject, "R\u{e9}sum\u{e9} attached");
    assert_eq!(parsed.text.trim(), "Here is my r\u{e9}sum\u{e9}.");
    assert_eq!(parsed.html.trim(), "<p>Here is my r\u{e9}sum\u{e9}.</p>");
    assert_eq!(parsed.attachments.len(), 1);
    let pdf = &parsed.attachments[0];
    assert_eq!(
        (pdf.filename.as_str(), pdf.content_type.as_str()),
        ("cv.pdf", "application/pdf")
    );
    assert_eq!(
        pdf.content,
        "%PDF-1.4\n%\u{e4}\u{fc}\u{f6}\u{df}\n".as_bytes()
    );
    assert_eq!(pdf.size, pdf.content.len() as u64);
    let err = client
        .fetch_message(auth(
            FetchMessageRequest {
                mailbox: "INBOX".into(),
                uid: 999,
            },
            &bob(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Changes reach a Watch stream and an idling IMAP session.
    let mut watch = client
        .watch(auth(
            WatchRequest {
                mailbox: "INBOX".into(),
            },
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner();
    let before = next_event(&mut watch).await;
    assert_eq!(before.messages, 3);
    let ca = c.cert();
    let ready = c.dir.path().join("idle-ready");
    let idle = tokio::spawn(
        Client::new("idle", c.state().imap.port(), &ca, BOB.0, BOB.1)
            .arg("--ready-file", ready.display())
            .arg("--wait", 20)
            .run(),
    );
    eventually("IMAP client idling", Duration::from_secs(30), || {
        let ready = ready.clone();
        async move { ready.exists() }
    })
    .await;

    let set = |op: FlagOperation, flags: &[&str], uids: Vec<u32>| SetFlagsRequest {
        mailbox: "INBOX".into(),
        uids,
        operation: op as i32,
        flags: flags.iter().map(|f| (*f).to_string()).collect(),
    };
    let flagged = client
        .set_flags(auth(
            set(FlagOperation::Add, &["\\Flagged", "\\Seen"], vec![uids[0]]),
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].flags, ["\\Seen", "\\Flagged"]);
    let after_flags = next_event(&mut watch).await;
    assert!(after_flags.highest_modseq > before.highest_modseq);
    assert_eq!(after_flags.unseen, 2, "{after_flags:?}");
    let removed = client
        .set_flags(auth(
            set(FlagOperation::Remove, &["\\Seen"], vec![uids[0], 999]),
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(removed[0].flags, ["\\Flagged"], "absent UID 999 skipped");
    let replaced = client
        .set_flags(auth(
            set(FlagOperation::Replace, &["$Label1"], vec![uids[1]]),
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(replaced[0].flags, ["$Label1"]);
    let gone = client
        .delete_messages(auth(
            DeleteMessagesRequest {
                mailbox: "INBOX".into(),
                uids: vec![uids[2]],
                expunge: true,
            },
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.expunged, [uids[2]]);
    assert!(gone.moved_to.is_empty());
    // Two new messages end the client's IDLE (it stops at an EXISTS above SELECT's count).
    let mut extra = Vec::new();
    for subject in ["late 1", "late 2"] {
        let d = store
            .append(account.id, "INBOX", &message(subject), &[], None)
            .await
            .unwrap();
        extra.push(d.uid);
    }
    let idled = idle.await.unwrap();
    let untagged = idled["untagged"].to_string();
    assert!(
        untagged.contains("* 1 FETCH") && untagged.contains("\\\\Flagged"),
        "IDLE saw the gRPC flag change: {idled}"
    );
    assert!(
        untagged.contains("* 3 EXPUNGE"),
        "IDLE saw the gRPC expunge: {idled}"
    );
    // The changes may come as one event or several.
    loop {
        if next_event(&mut watch).await.messages == 4 {
            break;
        }
    }
    let gone = client
        .delete_messages(auth(
            DeleteMessagesRequest {
                mailbox: "INBOX".into(),
                uids: extra.clone(),
                expunge: true,
            },
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.expunged, extra);
    loop {
        if next_event(&mut watch).await.messages == 2 {
            break;
        }
    }

    // Move, then delete to Trash, then delete from Trash for good.
    let moved = client
        .move_messages(auth(
            MoveMessagesRequest {
                mailbox: "INBOX".into(),
                uids: vec![uids[0]],
                destination: "Archive".into(),
            },
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.moved.len(), 1);
    assert_eq!(moved.moved[0].source_uid, uids[0]);
    let trashed = client
        .delete_messages(auth(
            DeleteMessagesRequest {
                mailbox: "INBOX".into(),
                uids: vec![uids[1]],
                expunge: false,
            },
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trashed.moved_to, "Trash");
    assert!(trashed.expunged.is_empty());
    let in_trash = trashed.moved[0].destination_uid;
    let list = mailboxes(&mut client).await;
    assert_eq!(counts(&list, "INBOX"), (0, 0));
    assert_eq!(counts(&list, "Archive"), (1, 1));
    assert_eq!(counts(&list, "Trash"), (1, 1));
    let used = store.quota(BOB.0).await.unwrap().used;
    let purged = client
        .delete_messages(auth(
            DeleteMessagesRequest {
                mailbox: "Trash".into(),
                uids: vec![in_trash],
                expunge: false,
            },
            &bob(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.expunged, [in_trash], "deleting in Trash is for good");
    let after = store.quota(BOB.0).await.unwrap().used;
    assert_eq!(
        used.bytes - after.bytes,
        WITH_ATTACHMENT.len() as u64,
        "quota refunded"
    );
    assert_eq!(counts(&mailboxes(&mut client).await, "Trash"), (0, 0));

    // Bad requests and other people's credentials.
    let err = client
        .set_flags(auth(
            set(FlagOperation::Unspecified, &["\\Seen"], vec![uids[0]]),
            &bob(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .set_flags(auth(set(FlagOperation::Add, &["\\Seen"], vec![]), &bob()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .set_flags(auth(
            set(FlagOperation::Add, &["\\Bogus"], vec![uids[0]]),
            &bob(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = client
        .move_messages(auth(
            MoveMessagesRequest {
                mailbox: "Archive".into(),
                uids: vec![moved.moved[0].destination_uid],
                destination: "Nowhere".into(),
            },
            &bob(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let wrong = format!("Basic {}", b64(format!("{}:nope", BOB.0).as_bytes()));
    let err = client
        .list_mailboxes(auth(ListMailboxesRequest {}, &wrong))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let alice = format!(
        "Basic {}",
        b64(format!("{}:{}", ALICE.0, ALICE.1).as_bytes())
    );
    let alices = client
        .list_messages(auth(
            ListMessagesRequest {
                mailbox: "Archive".into(),
                after_uid: 0,
                limit: 0,
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(alices.messages.is_empty(), "Alice sees only her Archive");

    // An API token works like the password.
    let token = store.create_token(BOB.0, "script", None).await.unwrap();
    let list = client
        .list_mailboxes(auth(
            ListMailboxesRequest {},
            &format!("Bearer {}", token.secret),
        ))
        .await
        .unwrap()
        .into_inner()
        .mailboxes;
    assert_eq!(counts(&list, "Archive"), (1, 1));
    let err = client
        .list_mailboxes(auth(
            ListMailboxesRequest {},
            "Bearer tern_not-a-real-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_mailbox_manage_sqlite() {
    mailbox_service("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_mailbox_manage_postgres() {
    mailbox_service("postgres").await;
}
