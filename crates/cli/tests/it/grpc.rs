//! Programs instead of people: a message submitted through the gRPC Submission service arrives
//! like one submitted over SMTP and is read back through the gRPC Mailbox service; the same
//! sender and recipient checks apply.

use base64::Engine;
use tern_rpc::v1::mailbox_client::MailboxClient;
use tern_rpc::v1::submission_client::SubmissionClient;
use tern_rpc::v1::{
    FetchMessageRequest, ListMailboxesRequest, ListMessagesRequest, SubmitRawRequest,
};
use tern_testkit::TestCluster;
use tonic::Request;

use crate::common::*;

fn basic<T>(msg: T, user: &str, password: &str) -> Request<T> {
    let mut r = Request::new(msg);
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    r.metadata_mut()
        .insert("authorization", format!("Basic {v}").parse().unwrap());
    r
}

async fn submit_and_read_over_grpc(backend: &str) {
    let c = TestCluster::start(backend).await;
    c.provision("example.test", &[ALICE, BOB]).await;
    let mut submit = SubmissionClient::connect(format!("http://{}", c.state().grpc_msa))
        .await
        .unwrap();
    let raw = message("grpc");
    let req = |from: &str, to: &str, pw: &str| {
        basic(
            SubmitRawRequest {
                mail_from: from.into(),
                rcpt_to: vec![to.into()],
                content: raw.clone(),
            },
            ALICE.0,
            pw,
        )
    };

    let err = submit
        .submit_raw(req(ALICE.0, BOB.0, "wrong-password"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = submit
        .submit_raw(req(BOB.0, BOB.0, ALICE.1))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "sending as someone else: {err:?}"
    );
    assert!(err.message().starts_with("553 5.7.1"), "{}", err.message());
    let err = submit
        .submit_raw(req(ALICE.0, "nobody@example.test", ALICE.1))
        .await
        .unwrap_err();
    assert!(err.message().starts_with("550 5.1.1"), "{}", err.message());

    let id = submit
        .submit_raw(req(ALICE.0, BOB.0, ALICE.1))
        .await
        .unwrap()
        .into_inner()
        .queue_id;
    assert!(!id.is_empty());

    let mut mailbox = MailboxClient::connect(format!("http://{}", c.state().grpc_maa))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listed = loop {
        let list = mailbox
            .list_messages(basic(
                ListMessagesRequest {
                    mailbox: "INBOX".into(),
                    after_uid: 0,
                    limit: 10,
                },
                BOB.0,
                BOB.1,
            ))
            .await
            .unwrap()
            .into_inner()
            .messages;
        if !list.is_empty() {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(listed[0].subject, "grpc");
    assert_eq!(listed[0].from, "Alice <alice@example.test>");
    let fetched = mailbox
        .fetch_message(basic(
            FetchMessageRequest {
                mailbox: "INBOX".into(),
                uid: listed[0].uid,
            },
            BOB.0,
            BOB.1,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_sent_plus_trace_headers(&raw, &fetched.content);

    let boxes = mailbox
        .list_mailboxes(basic(ListMailboxesRequest {}, BOB.0, BOB.1))
        .await
        .unwrap()
        .into_inner()
        .mailboxes;
    let inbox = boxes.iter().find(|m| m.name == "INBOX").unwrap();
    assert_eq!((inbox.messages, inbox.unseen), (1, 1));
    let err = mailbox
        .list_mailboxes(basic(ListMailboxesRequest {}, BOB.0, "nope-nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_submission_and_mailbox_sqlite() {
    submit_and_read_over_grpc("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_submission_and_mailbox_postgres() {
    submit_and_read_over_grpc("postgres").await;
}
