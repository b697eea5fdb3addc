//! The Delivery gRPC service: resolves each recipient, lets the account's Sieve script (if
//! any, see `sieve`) decide where each copy goes, and stores it (INBOX without a script).
//!
//! Exactly once: every copy is stored under the caller's delivery key (one per queue
//! recipient), and the store keeps at most one message per (account, key), in the same
//! transaction as the message itself. A retried call after a lost reply therefore stores
//! nothing twice and answers "delivered" again. Forwards to alias targets in other domains are
//! queued under the same key (`Store::enqueue_forward`), and Sieve redirects under keys
//! derived from it, so they too happen once.
//!
//! A copy that would take its account over quota is refused alone (the other copies of the
//! batch are stored): 452 4.2.2 by default, so the MTA retries and the mail arrives once the
//! owner makes room; 552 5.2.2 when `quota_permanent` is set. For an alias fanning out to
//! several accounts, one full mailbox decides the recipient's outcome; a retry stores only the
//! copies still missing.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use tern_rpc::v1::delivery_server::Delivery;
use tern_rpc::v1::recipient_outcome::Status as OutcomeStatus;
use tern_rpc::v1::{
    DeliverBatchRequest, DeliverBatchResponse, DeliverRecipient, DeliverRequest, DeliverResponse,
    RecipientOutcome,
};
use tern_store::{Account, Delivered, DeliveryItem, NewMessage, Resolution, Store};

use crate::sieve::{CopyRef, Decision, Envelope, Filter};
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
    filter: Arc<Filter>,
    settings: DeliverySettings,
}

/// Why a copy was not stored.
#[derive(Debug, Clone, Copy)]
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

/// One account's copy: the account, the key, the content with delivery headers, and which
/// message and recipient it came from (the Sieve envelope).
struct Copy {
    account: Account,
    key: String,
    content: Vec<u8>,
    message: usize,
    rcpt: String,
}

impl DeliveryService {
    pub fn new(store: Store, settings: DeliverySettings) -> Self {
        let store = store.with_recipient_delimiter(&settings.recipient_delimiter);
        Self {
            filter: Arc::new(Filter::new(store.clone())),
            store,
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
        for (message, req) in messages.iter().enumerate() {
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
                                message,
                                rcpt: rcpt.address.clone(),
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

        let refs: Vec<CopyRef<'_>> = copies
            .iter()
            .map(|c| CopyRef {
                account_id: c.account.id,
                envelope: Envelope {
                    from: &messages[c.message].return_path,
                    to: &c.rcpt,
                    account: &c.account.address,
                },
                content: &c.content,
            })
            .collect();
        let decisions = self.filter.decide(&refs).await;
        let stored = self.store_copies(&copies, &decisions).await;

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
                        self.finish_recipient(
                            req, rcpt, &idx, &copies, &decisions, &stored, &remote,
                        )
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

    /// Stores every copy where its decision puts it (no copy for a discard or a reject): in
    /// one transaction when that works, else one by one. A copy that Sieve files into several
    /// mailboxes keeps the delivery key for its first mailbox and gets `key#2`, `key#3`, …
    /// for the others, so a retry still stores each of them once.
    async fn store_copies(
        &self,
        copies: &[Copy],
        decisions: &[Decision],
    ) -> Vec<Result<Vec<Delivered>, CopyError>> {
        if copies.is_empty() {
            return Vec::new();
        }
        for (c, d) in copies.iter().zip(decisions) {
            if d.reject.is_none() {
                self.filter.create_mailboxes(c.account.id, d).await;
            }
        }
        let mut keys: Vec<(usize, String, Vec<String>)> = Vec::new();
        for (i, (c, d)) in copies.iter().zip(decisions).enumerate() {
            if d.reject.is_some() {
                continue;
            }
            for (n, t) in d.targets.iter().enumerate() {
                let key = if n == 0 {
                    c.key.clone()
                } else {
                    format!("{}#{}", c.key, n + 1)
                };
                let flags = t
                    .flags
                    .iter()
                    .filter(|f| tern_store::sieve::flag_is_storable(f))
                    .cloned()
                    .collect();
                keys.push((i, key, flags));
            }
        }
        let mut target_of = vec![0usize; keys.len()];
        let mut seen_per_copy = vec![0usize; copies.len()];
        for (k, (i, _, _)) in keys.iter().enumerate() {
            target_of[k] = seen_per_copy[*i];
            seen_per_copy[*i] += 1;
        }
        let items: Vec<DeliveryItem<'_>> = keys
            .iter()
            .zip(&target_of)
            .map(|((i, key, flags), &n)| {
                let target = &decisions[*i].targets[n];
                DeliveryItem {
                    account_id: copies[*i].account.id,
                    mailbox: &target.mailbox,
                    delivery_key: key,
                    content: target.content.as_deref().unwrap_or(&copies[*i].content),
                    flags,
                }
            })
            .collect();
        let mut results: Vec<Result<Delivered, CopyError>> = Vec::with_capacity(items.len());
        let mut batched = false;
        if items.len() > 1 {
            match self.store.deliver_many(&items).await {
                Ok(done) => {
                    results = done.into_iter().map(copy_result).collect();
                    batched = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, copies = items.len(), "batch delivery failed; storing copies one by one");
                }
            }
        }
        if !batched {
            for item in &items {
                let result = match self.store.deliver_many(std::slice::from_ref(item)).await {
                    Ok(mut done) if done.len() == 1 => done.remove(0),
                    Ok(_) => Err(tern_store::Error::Internal(
                        "one copy, not one result".into(),
                    )),
                    Err(e) => Err(e),
                };
                results.push(copy_result(result));
            }
        }
        let mut out: Vec<Result<Vec<Delivered>, CopyError>> = vec![Ok(Vec::new()); copies.len()];
        for ((i, _, _), result) in keys.iter().zip(results) {
            match (&mut out[*i], result) {
                (Ok(done), Ok(d)) => done.push(d),
                (slot @ Ok(_), Err(e)) => *slot = Err(e),
                (Err(_), _) => {}
            }
        }
        out
    }

    /// The outcome of one recipient whose copies have been stored (or not): a Sieve reject
    /// fails the recipient permanently when every account it reaches rejected (a reject by one
    /// member of an alias list only drops that member's copy); otherwise the scripts' other
    /// actions are carried out and the recipient is delivered.
    #[allow(clippy::too_many_arguments)]
    async fn finish_recipient(
        &self,
        req: &DeliverRequest,
        rcpt: &DeliverRecipient,
        idx: &[usize],
        copies: &[Copy],
        decisions: &[Decision],
        stored: &[Result<Vec<Delivered>, CopyError>],
        remote: &[String],
    ) -> (OutcomeStatus, String) {
        let address = rcpt.address.as_str();
        let key = rcpt.delivery_key.as_str();
        if remote.is_empty()
            && let Some(reply) = idx
                .iter()
                .map(|&i| decisions[i].reject.as_ref())
                .collect::<Option<Vec<_>>>()
                .and_then(|r| r.first().map(|s| (*s).clone()))
        {
            return (OutcomeStatus::PermanentFailure, reply);
        }
        let mut done = Vec::with_capacity(idx.len() + 1);
        let mut full: Option<&str> = None;
        for &i in idx {
            let copy = &copies[i];
            let decision = &decisions[i];
            if decision.reject.is_some() {
                tracing::info!(account = %copy.account.address, "sieve: rejected by one member of a list; copy dropped");
                done.push(format!("{} rejected", copy.account.address));
                continue;
            }
            match &stored[i] {
                Ok(ds) if ds.is_empty() => {
                    done.push(format!("{} discarded", copy.account.address));
                }
                Ok(ds) => {
                    for (d, t) in ds.iter().zip(&decision.targets) {
                        done.push(format!(
                            "{} uid {}{}{}",
                            copy.account.address,
                            d.uid,
                            if t.mailbox.eq_ignore_ascii_case("INBOX") {
                                String::new()
                            } else {
                                format!(" in {}", t.mailbox)
                            },
                            if d.duplicate { " (already stored)" } else { "" }
                        ));
                    }
                }
                Err(CopyError::Unavailable) => {
                    return (OutcomeStatus::TemporaryFailure, unavailable());
                }
                Err(CopyError::OverQuota) => {
                    full.get_or_insert(copy.account.address.as_str());
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
        for &i in idx {
            let copy = &copies[i];
            let decision = &decisions[i];
            if decision.reject.is_some() {
                continue;
            }
            let envelope = Envelope {
                from: &req.return_path,
                to: address,
                account: &copy.account.address,
            };
            match self
                .filter
                .carry_out(copy.account.id, key, envelope, &req.content, decision)
                .await
            {
                Ok(notes) => done.extend(notes),
                Err(e) => {
                    tracing::warn!(error = %e, "sieve: queueing a redirect failed");
                    return (OutcomeStatus::TemporaryFailure, unavailable());
                }
            }
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
    use tern_rpc::v1::DeliverRecipient;

    fn request(subject: &str, key: &str) -> DeliverRequest {
        DeliverRequest {
            return_path: "ann@example.net".into(),
            recipients: vec![DeliverRecipient {
                address: "bob@example.org".into(),
                delivery_key: key.into(),
            }],
            content: format!(
                "From: ann@example.net\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\r\nhi\r\n"
            )
            .into_bytes(),
            queue_id: "q".into(),
        }
    }

    async fn count(store: &Store, account: i64, mailbox: &str) -> usize {
        match store.mailbox(account, mailbox).await.unwrap() {
            Some(mb) => store.messages(mb.id).await.unwrap().len(),
            None => 0,
        }
    }

    /// Sieve at the gRPC service: a copy filed into two new folders is stored once per folder,
    /// a retry with the same delivery key stores nothing more, flags are set, and a reject is
    /// the recipient's permanent failure.
    #[tokio::test]
    async fn sieve_decides_mailboxes_exactly_once_and_rejects() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.add_domain("example.org").await.unwrap();
        let bob = store.add_account("bob@example.org", "pw").await.unwrap();
        store
            .put_sieve_script(
                "bob@example.org",
                "main",
                "require [\"fileinto\", \"copy\", \"mailbox\", \"imap4flags\", \"reject\"];\n\
                 if header :is \"subject\" \"no\" { reject \"Go away\"; stop; }\n\
                 fileinto :copy :create \"A\";\n\
                 fileinto :create :flags \"\\\\Flagged\" \"B\";\n",
                true,
            )
            .await
            .unwrap();
        let service = DeliveryService::new(store.clone(), DeliverySettings::default());
        for attempt in 0..2 {
            let out = service
                .deliver_messages(&[request("yes", "q:1")])
                .await
                .remove(0);
            let o = &out.outcomes[0];
            assert_eq!(o.status, OutcomeStatus::Delivered as i32, "{o:?}");
            assert!(
                o.reply.contains("in A") && o.reply.contains("in B"),
                "{o:?}"
            );
            assert_eq!(o.reply.contains("already stored"), attempt == 1, "{o:?}");
        }
        assert_eq!(count(&store, bob.id, "A").await, 1);
        assert_eq!(count(&store, bob.id, "B").await, 1);
        assert_eq!(count(&store, bob.id, "INBOX").await, 0);
        let b = store.mailbox(bob.id, "B").await.unwrap().unwrap();
        assert_eq!(store.messages(b.id).await.unwrap()[0].flags, ["\\Flagged"]);

        let out = service
            .deliver_messages(&[request("no", "q:2")])
            .await
            .remove(0);
        let o = &out.outcomes[0];
        assert_eq!(o.status, OutcomeStatus::PermanentFailure as i32, "{o:?}");
        assert_eq!(o.reply, "550 5.7.1 Go away");
        assert_eq!(count(&store, bob.id, "A").await, 1);

        // Sieve off: INBOX as before.
        store
            .activate_sieve_script("bob@example.org", None)
            .await
            .unwrap();
        let out = service
            .deliver_messages(&[request("no", "q:3")])
            .await
            .remove(0);
        assert_eq!(out.outcomes[0].status, OutcomeStatus::Delivered as i32);
        assert_eq!(count(&store, bob.id, "INBOX").await, 1);
    }

    /// Regression: a redirect was queued again each time the MTA retried a delivery (same
    /// delivery key) after a lost reply.
    #[tokio::test]
    async fn sieve_redirect_is_queued_once_per_delivery_key() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.add_domain("example.org").await.unwrap();
        store.add_account("bob@example.org", "pw").await.unwrap();
        store
            .put_sieve_script(
                "bob@example.org",
                "main",
                "redirect \"carol@example.com\";\n",
                true,
            )
            .await
            .unwrap();
        let service = DeliveryService::new(store.clone(), DeliverySettings::default());
        for attempt in 0..3 {
            let out = service
                .deliver_messages(&[request("fwd", "q:7")])
                .await
                .remove(0);
            let o = &out.outcomes[0];
            assert_eq!(o.status, OutcomeStatus::Delivered as i32, "{o:?}");
            assert_eq!(o.reply.contains("already queued"), attempt > 0, "{o:?}");
        }
        let queued = store.queue_list(None, 100).await.unwrap();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert_eq!(queued[0].recipients[0].address, "carol@example.com");
        assert_eq!(queued[0].sender, "ann@example.net");
    }

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
