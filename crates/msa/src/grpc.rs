//! The gRPC Submission service: programs submit a raw RFC 5322 message, authenticated as an
//! account with `authorization: Basic base64(address:password)`. Same checks as SMTP.

use tern_rpc::v1::submission_server::Submission;
use tern_rpc::v1::{SubmitRawRequest, SubmitResponse};
use tern_runtime::grpc::basic_credentials;
use tern_runtime::mailfmt::{Received, now_unix};
use tern_smtp::Reply;
use tonic::{Code, Request, Response, Status};

use crate::Submitter;

pub struct SubmissionService {
    submitter: Submitter,
}

impl SubmissionService {
    pub fn new(submitter: Submitter) -> Self {
        Self { submitter }
    }
}

/// Maps an SMTP reply to the closest gRPC status, keeping the SMTP text.
fn status(r: Reply) -> Status {
    let code = match r.code {
        535 | 530 => Code::Unauthenticated,
        553 => Code::PermissionDenied,
        550 | 501 => Code::InvalidArgument,
        552 | 452 | 450 => Code::ResourceExhausted,
        400..=499 => Code::Unavailable,
        _ => Code::FailedPrecondition,
    };
    Status::new(code, r.to_string())
}

#[tonic::async_trait]
impl Submission for SubmissionService {
    #[tracing::instrument(name = "msa.submit_raw", skip_all)]
    async fn submit_raw(
        &self,
        request: Request<SubmitRawRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let (user, pass) = basic_credentials(&request)?;
        let peer = request.remote_addr();
        let account = self
            .submitter
            .authenticate(&user, &pass, peer)
            .await
            .map_err(status)?;
        let req = request.into_inner();
        if req.rcpt_to.is_empty() {
            return Err(Status::invalid_argument(
                "at least one recipient is required",
            ));
        }
        // The same limits and sender rules as SMTP, in the order SMTP meets them.
        self.submitter
            .check_recipient_count(req.rcpt_to.len() - 1)
            .map_err(status)?;
        if req.content.len() > self.submitter.limits().max_message_size {
            return Err(status(Reply::new(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size",
            )));
        }
        self.submitter
            .check_sender(&account, &req.mail_from)
            .await
            .map_err(status)?;
        self.submitter.check_rate(&account).await.map_err(status)?;
        for rcpt in &req.rcpt_to {
            self.submitter.check_recipient(rcpt).await.map_err(status)?;
        }
        let content = normalize_line_endings(&req.content);
        let received = Received {
            helo: "grpc",
            client_ip: None,
            by_host: self.submitter.hostname(),
            with: "gRPC",
            authenticated_as: Some(&account.address),
            unix_secs: now_unix(),
        };
        let id = self
            .submitter
            .submit(
                &account,
                &req.mail_from,
                &req.rcpt_to,
                &content,
                received,
                None,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(SubmitResponse { queue_id: id }))
    }
}

/// Programs often hand in LF-only text; the queue stores CRLF as SMTP would have delivered it.
fn normalize_line_endings(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 40);
    let mut prev = 0u8;
    for &b in input {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_become_crlf_once() {
        assert_eq!(normalize_line_endings(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }
}
