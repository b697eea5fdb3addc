//! The Delivery gRPC service: resolves each recipient and stores the message in its INBOX.
//!
//! Exactly once: every copy is stored under the caller's delivery key (one per queue
//! recipient), and the store keeps at most one message per (account, key), in the same
//! transaction as the message itself. A retried call after a lost reply therefore stores
//! nothing twice and answers "delivered" again. Forwards to alias targets in other domains are
//! queued under the same key (`Store::enqueue_forward`), so they too happen once.
//!
//! A copy that would take its account over quota is refused alone (the other copies of the
//! batch are stored): 452 4.2.2 by default, so the MTA retries and the mail arrives once the
//! owner makes room; 552 5.2.2 when `quota_permanent` is set. For an alias fanning out to
//! several accounts, one full mailbox decides the recipient's outcome; a retry stores only the
//! copies still missing.

use std::collections::HashMap;

use serde::Deserialize;
use tern_rpc::v1::delivery_server::Delivery;
use tern_rpc::v1::recipient_outcome::Status as OutcomeStatus;
use tern_rpc::v1::{
    DeliverBatchRequest, DeliverBatchResponse, DeliverRecipient, DeliverRequest, DeliverResponse,
    RecipientOutcome,
};
use tern_store::{Account, Delivered, DeliveryItem, NewMessage, Resolution, Store};
use tonic::{Request, Response, Status};

/// Messages accepted in one DeliverBatch call.
pub const MAX_BATCH_MESSAGES: usize = 1000;

/// Delivery policy (`[delivery]` in the MDA's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Sub-address delimiters (any one of these characters): `user+tag@` reaches `user@` when
    /// nothing answers to the full address. Empty turns sub-addressing off. The MTA has the
    /// same setting for its RCPT check; keep the two equal.
    #[serde(default = "default_recipient_delimiter")]
    pub recipient_delimiter: String,
    /// Over quota: 552 5.2.2 (the sender gets a bounce at once) instead of 452 4.2.2 (the
    /// queue retries until the message fits or expires).
    #[serde(default)]
    pub quota_permanent: bool,
}

fn default_recipient_delimiter() -> String {
    tern_store::DEFAULT_RECIPIENT_DELIMITER.to_string()
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            recipient_delimiter: default_recipient_delimiter(),
            quota_permanent: false,
        }
    }
}

#[derive(Clone)]
pub struct DeliveryService {
    store: Store,
    settings: DeliverySettings,
}

/// Why a copy was not stored.
enum CopyError {
    OverQuota,
    /// Store trouble: try again later.
    Unavailable,
}

/// What one recipient of one message comes to before anything is stored.
enum Plan {
    /// Decided already (no such user, store trouble while resolving).
    Done(OutcomeStatus, String),
    /// Copies for these accounts (indexes into the batch's copies) and these remote targets.
    Store {
        copies: Vec<usize>,
        remote: Vec<String>,
    },
}

/// One mailbox copy to store: the account, the key and the content with delivery headers.
struct Copy {
    account: Account,
    key: String,
    content: Vec<u8>,
}

impl DeliveryService {
    pub fn new(store: Store, settings: DeliverySettings) -> Self {
        Self {
            store: store.with_recipient_delimiter(&settings.recipient_delimiter),
            settings,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Delivers every recipient of every message. Resolution happens first, then all copies
    /// are stored in one transaction; if that transaction fails (one bad copy spoils it), each
    /// copy is stored on its own so that one failure stays that recipient's. Remote alias
    /// targets are queued per recipient afterwards.
    pub(crate) async fn deliver_messages(
        &self,
        messages: &[DeliverRequest],
    ) -> Vec<DeliverResponse> {
        let mut resolved: HashMap<String, Result<Resolution, String>> = HashMap::new();
        let mut copies: Vec<Copy> = Vec::new();
        let mut plans: Vec<Vec<Plan>> = Vec::with_capacity(messages.len());
        for req in messages {
            let mut message_plans = Vec::with_capacity(req.recipients.len());
            for rcpt in &req.recipients {
                let address = rcpt.address.as_str();
                let key = address.to_ascii_lowercase();
                if !resolved.contains_key(&key) {
                    let r = self.store.resolve(address).await.map_err(|e| {
                        tracing::warn!(error = %e, "recipient resolution failed");
                        e.to_string()
                    });
                    resolved.insert(key.clone(), r);
                }
                let plan = match &resolved[&key] {
                    Err(_) => Plan::Done(OutcomeStatus::TemporaryFailure, unavailable()),
                    Ok(Resolution::NotLocalDomain) => Plan::Done(
                        OutcomeStatus::PermanentFailure,
                        format!("550 5.1.2 {address}: not a local domain"),
                    ),
                    Ok(Resolution::NoSuchUser) => Plan::Done(
                        OutcomeStatus::PermanentFailure,
                        format!("550 5.1.1 {address}: no such user here"),
                    ),
                    Ok(Resolution::Local { accounts, remote }) => {
                        let mut idx = Vec::with_capacity(accounts.len());
                        for account in accounts {
                            idx.push(copies.len());
                            copies.push(Copy {
                                account: account.clone(),
                                key: rcpt.delivery_key.clone(),
                                content: with_delivery_headers(
                                    &req.return_path,
                                    &account.address,
                                    &req.content,
                                ),
                            });
                        }
                        Plan::Store {
                            copies: idx,
                            remote: remote.clone(),
                        }
                    }
                };
                message_plans.push(plan);
            }
            plans.push(message_plans);
        }

        let stored = self.store_copies(&copies).await;

        let mut out = Vec::with_capacity(messages.len());
        for (req, message_plans) in messages.iter().zip(plans) {
            let mut outcomes = Vec::with_capacity(req.recipients.len());
            for (rcpt, plan) in req.recipients.iter().zip(message_plans) {
                let (status, reply) = match plan {
                    Plan::Done(status, reply) => (status, reply),
                    Plan::Store {
                        copies: idx,
                        remote,
                    } => {
                        self.finish_recipient(req, rcpt, &idx, &copies, &stored, &remote)
                            .await
                    }
                };
                tracing::info!(rcpt = %rcpt.address, reply = %reply, "delivery outcome");
                outcomes.push(RecipientOutcome {
                    address: rcpt.address.clone(),
                    status: status as i32,
                    reply,
                });
            }
            out.push(DeliverResponse { outcomes });
        }
        out
    }

    /// Stores every copy: in one transaction when that works, else one by one. An over-quota
    /// copy fails alone either way.
    async fn store_copies(&self, copies: &[Copy]) -> Vec<Result<Delivered, CopyError>> {
        if copies.is_empty() {
            return Vec::new();
        }
        let items: Vec<DeliveryItem<'_>> = copies
            .iter()
            .map(|c| DeliveryItem {
                account_id: c.account.id,
                mailbox: "INBOX",
                delivery_key: &c.key,
                content: &c.content,
            })
            .collect();
        if items.len() > 1 {
            match self.store.deliver_many(&items).await {
                Ok(done) => return done.into_iter().map(copy_result).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, copies = items.len(), "batch delivery failed; storing copies one by one");
                }
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let result = match self.store.deliver_many(std::slice::from_ref(item)).await {
                Ok(mut done) if done.len() == 1 => done.remove(0),
                Ok(_) => Err(tern_store::Error::Internal(
                    "one copy, not one result".into(),
                )),
                Err(e) => Err(e),
            };
            out.push(copy_result(result));
        }
        out
    }

    /// The outcome of one recipient whose copies have been stored (or not).
    async fn finish_recipient(
        &self,
        req: &DeliverRequest,
        rcpt: &DeliverRecipient,
        idx: &[usize],
        copies: &[Copy],
        stored: &[Result<Delivered, CopyError>],
        remote: &[String],
    ) -> (OutcomeStatus, String) {
        let address = rcpt.address.as_str();
        let key = rcpt.delivery_key.as_str();
        let mut done = Vec::with_capacity(idx.len() + 1);
        let mut full: Option<&str> = None;
        for &i in idx {
            match &stored[i] {
                Ok(d) => done.push(format!(
                    "{} uid {}{}",
                    copies[i].account.address,
                    d.uid,
                    if d.duplicate { " (already stored)" } else { "" }
                )),
                Err(CopyError::Unavailable) => {
                    return (OutcomeStatus::TemporaryFailure, unavailable());
                }
                Err(CopyError::OverQuota) => {
                    full.get_or_insert(copies[i].account.address.as_str());
                }
            }
        }
        if let Some(account) = full {
            tracing::info!(rcpt = %address, account = %account, "mailbox over quota");
            return if self.settings.quota_permanent {
                (
                    OutcomeStatus::PermanentFailure,
                    format!("552 5.2.2 {address}: mailbox full"),
                )
            } else {
                (
                    OutcomeStatus::TemporaryFailure,
                    format!("452 4.2.2 {address}: mailbox full, try again later"),
                )
            };
        }
        if !remote.is_empty() {
            // Alias targets outside our domains go back to the queue as a new message, once
            // per delivery key. The return path stays the original sender's: rewriting it with
            // SRS (so that the target's SPF check passes) also needs the reverse mapping for
            // bounces at the MTA's RCPT check, which is not built yet; see ARCHITECTURE.md.
            let msg = NewMessage {
                sender: &req.return_path,
                recipients: remote,
                content: &req.content,
                ..Default::default()
            };
            match self.store.enqueue_forward(key, msg).await {
                Ok(f) => {
                    tracing::info!(queue.id = %f.queue_id, forwarded = remote.len(), duplicate = f.duplicate, "alias targets outside local domains queued");
                    done.push(format!(
                        "forwarded as {}{}",
                        f.queue_id,
                        if f.duplicate { " (already queued)" } else { "" }
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "forwarding to alias targets failed");
                    return (OutcomeStatus::TemporaryFailure, unavailable());
                }
            }
        }
        (
            OutcomeStatus::Delivered,
            format!("250 2.0.0 {address} delivered: {}", done.join(", ")),
        )
    }
}

fn copy_result(result: tern_store::Result<Delivered>) -> Result<Delivered, CopyError> {
    result.map_err(|e| match e {
        tern_store::Error::OverQuota(why) => {
            tracing::debug!(why = %why, "copy over quota");
            CopyError::OverQuota
        }
        e => {
            tracing::warn!(error = %e, "delivery failed temporarily");
            CopyError::Unavailable
        }
    })
}

fn unavailable() -> String {
    "451 4.3.0 mailbox store unavailable, try again later".to_string()
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

fn check_request(req: &DeliverRequest) -> Result<(), Status> {
    if req.recipients.is_empty() {
        return Err(Status::invalid_argument("no recipients"));
    }
    if req.recipients.iter().any(|r| r.delivery_key.is_empty()) {
        return Err(Status::invalid_argument(
            "every recipient needs a delivery_key",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Delivery for DeliveryService {
    #[tracing::instrument(name = "mda.deliver", skip_all, fields(queue.id = %request.get_ref().queue_id, rcpts = request.get_ref().recipients.len()))]
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let req = request.into_inner();
        check_request(&req)?;
        let mut out = self.deliver_messages(std::slice::from_ref(&req)).await;
        out.pop()
            .map(Response::new)
            .ok_or_else(|| Status::internal("no outcome"))
    }

    #[tracing::instrument(name = "mda.deliver_batch", skip_all, fields(messages = request.get_ref().messages.len()))]
    async fn deliver_batch(
        &self,
        request: Request<DeliverBatchRequest>,
    ) -> Result<Response<DeliverBatchResponse>, Status> {
        let req = request.into_inner();
        if req.messages.is_empty() {
            return Err(Status::invalid_argument("no messages"));
        }
        if req.messages.len() > MAX_BATCH_MESSAGES {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH_MESSAGES} messages per batch"
            )));
        }
        for m in &req.messages {
            check_request(m)?;
        }
        let results = self.deliver_messages(&req.messages).await;
        Ok(Response::new(DeliverBatchResponse { results }))
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
