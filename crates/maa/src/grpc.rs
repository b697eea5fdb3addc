//! The gRPC Mailbox service: list mailboxes and messages and fetch a message, authenticated
//! per call as the account (`authorization: Basic base64(address:password)`).
//!
//! Watch streams a mailbox's counters (UIDNEXT, EXISTS, unseen, HIGHESTMODSEQ) whenever the
//! store reports a change to it (`Store::subscribe_changes`), with a 30 s fallback poll; no
//! database connection is held between events.
//!
//! Flag changes, moves and deletes belong to the mailbox-access issue.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tern_store::MailboxChanged;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use tern_rpc::v1::mailbox_server::Mailbox;
use tern_rpc::v1::{
    FetchMessageRequest, FetchMessageResponse, ListMailboxesRequest, ListMailboxesResponse,
    ListMessagesRequest, ListMessagesResponse, MailboxEvent, MailboxInfo, MessageSummary,
    WatchRequest,
};
use tern_runtime::grpc::basic_credentials;
use tern_store::{Account, Store};
use tonic::{Request, Response, Status};

pub struct MailboxService {
    store: Store,
    /// Ends open Watch streams, so that a graceful shutdown is not held up by them.
    shutdown: CancellationToken,
}

impl MailboxService {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            shutdown: CancellationToken::new(),
        }
    }

    /// Watch streams end (cleanly) when `token` is cancelled.
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    async fn account<T>(&self, req: &Request<T>) -> Result<Account, Status> {
        let (user, pass) = basic_credentials(req)?;
        match self.store.authenticate(&user, &pass).await {
            Ok(Some(a)) => Ok(a),
            Ok(None) => {
                tracing::warn!(user = %user, "auth failed");
                Err(Status::unauthenticated("invalid credentials"))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn mailbox_id(&self, account: &Account, name: &str) -> Result<i64, Status> {
        let name = if name.is_empty() { "INBOX" } else { name };
        match self
            .store
            .mailbox(account.id, name)
            .await
            .map_err(unavailable)?
        {
            Some(m) => Ok(m.id),
            None => Err(Status::not_found(format!("no mailbox {name:?}"))),
        }
    }
}

fn unavailable(e: tern_store::Error) -> Status {
    tracing::warn!(error = %e, "store error");
    Status::unavailable("mailbox store unavailable")
}

/// From, Subject and Date of a message, decoded, for listings.
fn summary_headers(raw: &[u8]) -> (String, String, String) {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Default::default();
    };
    let from = msg
        .from()
        .and_then(|a| a.first())
        .map(|a| match (a.name(), a.address()) {
            (Some(n), Some(addr)) => format!("{n} <{addr}>"),
            (None, Some(addr)) => addr.to_string(),
            (Some(n), None) => n.to_string(),
            (None, None) => String::new(),
        })
        .unwrap_or_default();
    let subject = msg.subject().unwrap_or_default().to_string();
    let date = msg.date().map(|d| d.to_rfc822()).unwrap_or_default();
    (from, subject, date)
}

/// How often a Watch looks at its mailbox even without a notification.
const WATCH_POLL: Duration = Duration::from_secs(30);

fn event(m: &tern_store::MailboxInfo) -> MailboxEvent {
    MailboxEvent {
        mailbox: m.name.clone(),
        uid_validity: m.uid_validity,
        uid_next: m.uid_next,
        messages: m.messages,
        unseen: m.unseen,
        highest_modseq: m.highest_modseq,
    }
}

/// One Watch call's state between events.
struct Watch {
    store: Store,
    changes: broadcast::Receiver<MailboxChanged>,
    account_id: i64,
    mailbox_id: i64,
    last: Option<MailboxEvent>,
    done: bool,
    shutdown: CancellationToken,
}

impl Watch {
    /// The next event that differs from the last one sent; `None` ends the stream.
    async fn next(&mut self) -> Option<Result<MailboxEvent, Status>> {
        if self.done {
            return None;
        }
        loop {
            if self.last.is_some() {
                let shutdown = self.shutdown.clone();
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    () = self.wait() => {}
                }
            }
            let info = match self.store.mailbox_by_id(self.mailbox_id).await {
                Ok(Some(info)) => info,
                Ok(None) => {
                    self.done = true;
                    return Some(Err(Status::not_found("mailbox deleted")));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(unavailable(e)));
                }
            };
            let now = event(&info);
            if self.last.as_ref() != Some(&now) {
                self.last = Some(now.clone());
                return Some(Ok(now));
            }
        }
    }

    /// Until a notification concerns this mailbox (or may: lag, reconnection), at most
    /// [`WATCH_POLL`].
    async fn wait(&mut self) {
        let (account, mailbox) = (self.account_id, self.mailbox_id);
        let changes = &mut self.changes;
        let relevant = async {
            loop {
                match changes.recv().await {
                    Ok(e) if e.concerns(account, mailbox) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        let _ = tokio::time::timeout(WATCH_POLL, relevant).await;
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<MailboxEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Mailbox for MailboxService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let account = self.account(&req).await?;
        let mailbox_id = self.mailbox_id(&account, &req.get_ref().mailbox).await?;
        // Subscribed before the first read, so no change after that read is missed.
        let changes = self.store.subscribe_changes().await.map_err(unavailable)?;
        let watch = Watch {
            store: self.store.clone(),
            changes,
            account_id: account.id,
            mailbox_id,
            last: None,
            done: false,
            shutdown: self.shutdown.clone(),
        };
        let stream = futures::stream::unfold(watch, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_mailboxes(
        &self,
        req: Request<ListMailboxesRequest>,
    ) -> Result<Response<ListMailboxesResponse>, Status> {
        let account = self.account(&req).await?;
        let list = self
            .store
            .list_mailboxes(account.id)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(ListMailboxesResponse {
            mailboxes: list
                .into_iter()
                .map(|m| MailboxInfo {
                    name: m.name,
                    uid_validity: m.uid_validity,
                    uid_next: m.uid_next,
                    messages: m.messages,
                    unseen: m.unseen,
                })
                .collect(),
        }))
    }

    async fn list_messages(
        &self,
        req: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let account = self.account(&req).await?;
        let r = req.get_ref();
        let id = self.mailbox_id(&account, &r.mailbox).await?;
        let limit = if r.limit == 0 { 50 } else { r.limit.min(1000) } as usize;
        let metas = self.store.messages(id).await.map_err(unavailable)?;
        let mut out = Vec::new();
        for m in metas
            .into_iter()
            .filter(|m| m.uid > r.after_uid)
            .take(limit)
        {
            let raw = self
                .store
                .message_body(id, m.uid)
                .await
                .map_err(unavailable)?
                .unwrap_or_default();
            let (from, subject, date) = summary_headers(&raw);
            out.push(MessageSummary {
                uid: m.uid,
                flags: m.flags,
                size: m.size,
                internal_date_ms: m.internal_date_ms,
                from,
                subject,
                date,
            });
        }
        Ok(Response::new(ListMessagesResponse { messages: out }))
    }

    async fn fetch_message(
        &self,
        req: Request<FetchMessageRequest>,
    ) -> Result<Response<FetchMessageResponse>, Status> {
        let account = self.account(&req).await?;
        let r = req.get_ref();
        let id = self.mailbox_id(&account, &r.mailbox).await?;
        let content = self
            .store
            .message_body(id, r.uid)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("no message with uid {}", r.uid)))?;
        let flags = self
            .store
            .messages(id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|m| m.uid == r.uid)
            .map(|m| m.flags)
            .unwrap_or_default();
        Ok(Response::new(FetchMessageResponse { content, flags }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_headers_decode_encoded_words() {
        let raw = b"From: =?UTF-8?Q?J=C3=B6rg?= <j@example.test>\r\nSubject: =?UTF-8?B?SGVsbG8g8J+Riw==?=\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody";
        let (from, subject, date) = summary_headers(raw);
        assert_eq!(from, "J\u{f6}rg <j@example.test>");
        assert_eq!(subject, "Hello \u{1f44b}");
        assert!(date.contains("23 Nov 2026"), "{date}");
    }
}
