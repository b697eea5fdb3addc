//! The gRPC Submission service: programs submit a raw RFC 5322 message (`SubmitRaw`) or one in
//! parts that the server builds into MIME (`Submit`, see [`crate::structured`]).
//!
//! Callers authenticate as an account with `authorization: Bearer tern_…` (an API token, see
//! `tern_store::tokens`) or `authorization: Basic base64(address:password)`. After that both
//! calls take one path, [`SubmissionService::queue`], which runs the SMTP checks in the order
//! SMTP meets them and hands the message to the same [`Submitter::submit`] as SMTP: sender
//! ownership, limits, fix-ups, DKIM and the one queue transaction are shared, not copied.
//!
//! Failed token checks are not throttled like passwords: a token has 256 random bits, so
//! guessing is hopeless, and the answer costs one indexed read.

use std::net::SocketAddr;

use tern_rpc::v1::submission_server::Submission;
use tern_rpc::v1::{SubmitRawRequest, SubmitRequest, SubmitResponse};
use tern_runtime::grpc::basic_credentials;
use tern_runtime::mailfmt::{Received, now_unix};
use tern_smtp::Reply;
use tern_store::Account;
use tern_store::tokens::{TOKEN_PREFIX, TokenCheck};
use tonic::{Code, Request, Response, Status};

use crate::Submitter;
use crate::structured::{self, Attachment, Structured};

pub struct SubmissionService {
    submitter: Submitter,
}

impl SubmissionService {
    pub fn new(submitter: Submitter) -> Self {
        Self { submitter }
    }

    /// The account the request speaks for: an API token (Bearer) or a password (Basic).
    async fn account<T>(&self, request: &Request<T>) -> Result<Account, Status> {
        let peer = request.remote_addr();
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match header {
            Some(value) if value.starts_with("Bearer ") => {
                let token = value["Bearer ".len()..].trim();
                self.token_account(token, peer).await
            }
            Some(_) => {
                let (user, pass) = basic_credentials(request)?;
                self.submitter
                    .authenticate(&user, &pass, peer)
                    .await
                    .map_err(status)
            }
            None => Err(Status::unauthenticated(
                "missing authorization metadata: `Bearer <API token>` (tern token create) \
                 or `Basic base64(address:password)`",
            )),
        }
    }

    async fn token_account(
        &self,
        token: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Account, Status> {
        let client = peer.map_or_else(|| "-".to_string(), |p| p.ip().to_string());
        if !token.starts_with(TOKEN_PREFIX) {
            tracing::warn!(client.address = %client, "token auth failed: not an API token");
            return Err(Status::unauthenticated(format!(
                "invalid API token: Tern tokens start with {TOKEN_PREFIX} (create one with \
                 `tern token create`)"
            )));
        }
        match self.submitter.store().authenticate_token(token).await {
            Ok(TokenCheck::Valid(account)) => Ok(account),
            Ok(TokenCheck::Expired) => {
                tracing::warn!(client.address = %client, "token auth failed: expired");
                Err(Status::unauthenticated(
                    "API token expired: create a new one with `tern token create`",
                ))
            }
            Ok(TokenCheck::Unknown) => {
                tracing::warn!(client.address = %client, "token auth failed: unknown");
                Err(Status::unauthenticated(
                    "invalid API token: unknown or revoked",
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "store error during token authentication");
                Err(Status::unavailable("temporary authentication failure"))
            }
        }
    }

    /// The SMTP checks in SMTP's order (recipient count, size, MAIL FROM, rate, each RCPT
    /// TO), then [`Submitter::submit`]: From: ownership, Bcc removal, fix-ups, DKIM, queue.
    async fn queue(
        &self,
        account: &Account,
        mail_from: &str,
        rcpt_to: &[String],
        content: &[u8],
    ) -> Result<String, Status> {
        if rcpt_to.is_empty() {
            return Err(Status::invalid_argument(
                "at least one recipient is required",
            ));
        }
        self.submitter
            .check_recipient_count(rcpt_to.len() - 1)
            .map_err(status)?;
        if content.len() > self.submitter.limits().max_message_size {
            return Err(status(Reply::new(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size",
            )));
        }
        self.submitter
            .check_sender(account, mail_from)
            .await
            .map_err(status)?;
        self.submitter.check_rate(account).await.map_err(status)?;
        for rcpt in rcpt_to {
            self.submitter.check_recipient(rcpt).await.map_err(status)?;
        }
        let content = normalize_line_endings(content);
        let received = Received {
            helo: "grpc",
            client_ip: None,
            by_host: self.submitter.hostname(),
            with: "gRPC",
            authenticated_as: Some(&account.address),
            unix_secs: now_unix(),
        };
        self.submitter
            .submit(account, mail_from, rcpt_to, &content, received, None)
            .await
            .map_err(status)
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

/// Converts the protobuf request into the crate's own type.
fn structured_from(req: SubmitRequest) -> Structured {
    Structured {
        from: req.from,
        to: req.to,
        cc: req.cc,
        bcc: req.bcc,
        subject: req.subject,
        text: req.text,
        html: req.html,
        attachments: req
            .attachments
            .into_iter()
            .map(|a| Attachment {
                filename: a.filename,
                content_type: a.content_type,
                content: a.content,
            })
            .collect(),
        headers: req.headers.into_iter().map(|h| (h.name, h.value)).collect(),
    }
}

#[tonic::async_trait]
impl Submission for SubmissionService {
    #[tracing::instrument(name = "msa.submit_raw", skip_all)]
    async fn submit_raw(
        &self,
        request: Request<SubmitRawRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let account = self.account(&request).await?;
        let req = request.into_inner();
        let id = self
            .queue(&account, &req.mail_from, &req.rcpt_to, &req.content)
            .await?;
        Ok(Response::new(SubmitResponse { queue_id: id }))
    }

    #[tracing::instrument(name = "msa.submit", skip_all)]
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let account = self.account(&request).await?;
        let msg = structured_from(request.into_inner());
        let id: u128 = rand::random();
        let message_id = format!("{id:032x}@{}", self.submitter.hostname());
        let built = structured::build(&msg, &message_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = self
            .queue(&account, &built.mail_from, &built.rcpt_to, &built.content)
            .await?;
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

    #[test]
    fn smtp_replies_map_to_statuses() {
        let code = |c: u16| status(Reply::new(c, (5, 0, 0), "x")).code();
        assert_eq!(code(535), Code::Unauthenticated);
        assert_eq!(code(553), Code::PermissionDenied);
        assert_eq!(code(550), Code::InvalidArgument);
        assert_eq!(code(552), Code::ResourceExhausted);
        assert_eq!(code(451), Code::Unavailable);
        let s = status(Reply::new(553, (5, 7, 1), "not yours"));
        assert!(s.message().starts_with("553 5.7.1"), "{}", s.message());
    }
}
