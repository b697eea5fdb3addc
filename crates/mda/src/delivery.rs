//! The Delivery gRPC service: resolves each recipient and stores the message in its INBOX.
//!
//! Exactly once: every copy is stored under the caller's delivery key (one per queue
//! recipient), and the store keeps at most one message per (account, key), in the same
//! transaction as the message itself. A retried call after a lost reply therefore stores
//! nothing twice and answers "delivered" again.

use tern_rpc::v1::delivery_server::Delivery;
use tern_rpc::v1::recipient_outcome::Status as OutcomeStatus;
use tern_rpc::v1::{DeliverRequest, DeliverResponse, RecipientOutcome};
use tern_store::{NewMessage, Resolution, Store};
use tonic::{Request, Response, Status};

pub struct DeliveryService {
    store: Store,
}

impl DeliveryService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn deliver_one(
        &self,
        req: &DeliverRequest,
        address: &str,
        key: &str,
    ) -> (OutcomeStatus, String) {
        let resolution = match self.store.resolve(address).await {
            Ok(r) => r,
            Err(e) => return temporary(&e),
        };
        let (accounts, remote) = match resolution {
            Resolution::NotLocalDomain => {
                return (
                    OutcomeStatus::PermanentFailure,
                    format!("550 5.1.2 {address}: not a local domain"),
                );
            }
            Resolution::NoSuchUser => {
                return (
                    OutcomeStatus::PermanentFailure,
                    format!("550 5.1.1 {address}: no such user here"),
                );
            }
            Resolution::Local { accounts, remote } => (accounts, remote),
        };
        let mut stored = Vec::new();
        for account in &accounts {
            let content = with_delivery_headers(&req.return_path, &account.address, &req.content);
            match self.store.deliver(account.id, "INBOX", key, &content).await {
                Ok(d) => stored.push(format!(
                    "{} uid {}{}",
                    account.address,
                    d.uid,
                    if d.duplicate { " (already stored)" } else { "" }
                )),
                Err(e) => return temporary(&e),
            }
        }
        if !remote.is_empty() {
            // Alias targets outside our domains go back to the queue as a new message from the
            // same return path. Forwarding (SRS, idempotent re-queueing) is the delivery issue's
            // work; until then a retried call could queue the forward twice, which is logged.
            let msg = NewMessage {
                sender: &req.return_path,
                recipients: &remote,
                content: &req.content,
                ..Default::default()
            };
            match self.store.enqueue(msg).await {
                Ok(id) => {
                    tracing::info!(queue.id = %id, forwarded = remote.len(), "alias targets outside local domains queued");
                    stored.push(format!("forwarded as {id}"));
                }
                Err(e) => return temporary(&e),
            }
        }
        (
            OutcomeStatus::Delivered,
            format!("250 2.0.0 {address} delivered: {}", stored.join(", ")),
        )
    }
}

fn temporary(e: &tern_store::Error) -> (OutcomeStatus, String) {
    tracing::warn!(error = %e, "delivery failed temporarily");
    (
        OutcomeStatus::TemporaryFailure,
        "451 4.3.0 mailbox store unavailable, try again later".to_string(),
    )
}

/// RFC 5321 §4.4: the final delivery adds Return-Path; Delivered-To (as Postfix and Dovecot
/// write it) records the mailbox that got the copy, which also lets loops be spotted later.
pub fn with_delivery_headers(return_path: &str, delivered_to: &str, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 128);
    out.extend_from_slice(
        format!("Return-Path: <{return_path}>\r\nDelivered-To: {delivered_to}\r\n").as_bytes(),
    );
    out.extend_from_slice(content);
    out
}

#[tonic::async_trait]
impl Delivery for DeliveryService {
    #[tracing::instrument(name = "mda.deliver", skip_all, fields(queue.id = %request.get_ref().queue_id, rcpts = request.get_ref().recipients.len()))]
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let req = request.into_inner();
        if req.recipients.is_empty() {
            return Err(Status::invalid_argument("no recipients"));
        }
        let mut outcomes = Vec::with_capacity(req.recipients.len());
        for rcpt in &req.recipients {
            if rcpt.delivery_key.is_empty() {
                return Err(Status::invalid_argument(
                    "every recipient needs a delivery_key",
                ));
            }
            let (status, reply) = self
                .deliver_one(&req, &rcpt.address, &rcpt.delivery_key)
                .await;
            tracing::info!(rcpt = %rcpt.address, reply = %reply, "delivery outcome");
            outcomes.push(RecipientOutcome {
                address: rcpt.address.clone(),
                status: status as i32,
                reply,
            });
        }
        Ok(Response::new(DeliverResponse { outcomes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_headers_are_prepended_and_body_untouched() {
        let out = with_delivery_headers("a@x.test", "b@y.test", b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(
            out,
            b"Return-Path: <a@x.test>\r\nDelivered-To: b@y.test\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        let null = with_delivery_headers("", "b@y.test", b"x");
        assert!(null.starts_with(b"Return-Path: <>\r\n"));
    }
}
