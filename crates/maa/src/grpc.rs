//! The gRPC Mailbox service: list mailboxes and messages, fetch a message (raw and parsed with
//! mail-parser), set flags, move and delete messages, authenticated per call as the account
//! (`authorization: Basic base64(address:password)` or `Bearer tern_…`, an API token).
//!
//! Every change goes through the same store methods as IMAP STORE, MOVE and EXPUNGE, which
//! notify inside their transactions (`store::changes`), so IMAP sessions and Watch streams see
//! a change made here exactly as they see one made over IMAP.
//!
//! Watch streams a mailbox's counters (UIDNEXT, EXISTS, unseen, HIGHESTMODSEQ) whenever the
//! store reports a change to it (`Store::subscribe_changes`), with a 30 s fallback poll; no
//! database connection is held between events.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tern_store::MailboxChanged;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use tern_rpc::v1::mailbox_server::Mailbox;
use tern_rpc::v1::{
    DeleteMessagesRequest, DeleteMessagesResponse, FetchMessageRequest, FetchMessageResponse,
    FlagOperation, ListMailboxesRequest, ListMailboxesResponse, ListMessagesRequest,
    ListMessagesResponse, MailboxEvent, MailboxInfo, MessageAttachment, MessageFlags,
    MessageSummary, MoveMessagesRequest, MoveMessagesResponse, ParsedMessage, SetFlagsRequest,
    SetFlagsResponse, UidPair, WatchRequest,
};
use tern_runtime::grpc::basic_credentials;
use tern_store::tokens::{TOKEN_PREFIX, TokenCheck};
use tern_store::{Account, FlagOp, Store};
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
        let bearer = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            let token = token.trim();
            if !token.starts_with(TOKEN_PREFIX) {
                return Err(Status::unauthenticated(format!(
                    "invalid API token: Tern tokens start with {TOKEN_PREFIX}"
                )));
            }
            return match self.store.authenticate_token(token).await {
                Ok(TokenCheck::Valid(account)) => Ok(account),
                Ok(TokenCheck::Expired) => Err(Status::unauthenticated("API token expired")),
                Ok(TokenCheck::Unknown) => Err(Status::unauthenticated(
                    "invalid API token: unknown or revoked",
                )),
                Err(e) => Err(unavailable(e)),
            };
        }
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
        Ok(self.mailbox_info(account, name).await?.id)
    }

    /// The account's mailbox `name` (INBOX when empty), or NOT_FOUND.
    async fn mailbox_info(
        &self,
        account: &Account,
        name: &str,
    ) -> Result<tern_store::MailboxInfo, Status> {
        let name = if name.is_empty() { "INBOX" } else { name };
        self.store
            .mailbox(account.id, name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("no mailbox {name:?}")))
    }
}

fn unavailable(e: tern_store::Error) -> Status {
    tracing::warn!(error = %e, "store error");
    Status::unavailable("mailbox store unavailable")
}

/// A store error from a change the caller asked for: their mistakes (a bad flag, a missing
/// mailbox, over quota) are theirs to see; anything else is the store's trouble.
fn change_failed(e: tern_store::Error) -> Status {
    match e {
        tern_store::Error::Invalid(why) => Status::invalid_argument(why),
        tern_store::Error::NotFound(what) => Status::not_found(what),
        tern_store::Error::OverQuota(why) => Status::resource_exhausted(why),
        other => unavailable(other),
    }
}

/// At most this many UIDs per change call (a bound on one transaction's size).
const MAX_UIDS: usize = 10_000;

fn check_uids(uids: &[u32]) -> Result<(), Status> {
    if uids.is_empty() {
        return Err(Status::invalid_argument("no UIDs given"));
    }
    if uids.len() > MAX_UIDS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_UIDS} UIDs per call"
        )));
    }
    if uids.contains(&0) {
        return Err(Status::invalid_argument("UID 0 does not exist"));
    }
    Ok(())
}

fn uid_pairs(pairs: &[(u32, u32)]) -> Vec<UidPair> {
    pairs
        .iter()
        .map(|&(source_uid, destination_uid)| UidPair {
            source_uid,
            destination_uid,
        })
        .collect()
}

/// Listings read at most this much of each message: its header section, normally.
const HEAD_BYTES: u32 = 64 * 1024;

fn address_text(a: &mail_parser::Addr<'_>) -> String {
    match (a.name(), a.address()) {
        (Some(n), Some(addr)) => format!("{n} <{addr}>"),
        (None, Some(addr)) => addr.to_string(),
        (Some(n), None) => n.to_string(),
        (None, None) => String::new(),
    }
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    list.map(|l| l.iter().map(address_text).collect())
        .unwrap_or_default()
}

/// The envelope fields of a listing, decoded.
#[derive(Debug, Default)]
struct Envelope {
    from: String,
    to: Vec<String>,
    cc: Vec<String>,
    subject: String,
    date: String,
    message_id: String,
    in_reply_to: String,
}

fn envelope(msg: &mail_parser::Message<'_>) -> Envelope {
    Envelope {
        from: msg
            .from()
            .and_then(|a| a.first())
            .map(address_text)
            .unwrap_or_default(),
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        subject: msg.subject().unwrap_or_default().to_string(),
        date: msg.date().map(|d| d.to_rfc822()).unwrap_or_default(),
        message_id: msg.message_id().unwrap_or_default().to_string(),
        in_reply_to: msg.in_reply_to().as_text().unwrap_or_default().to_string(),
    }
}

/// A whole message parsed: decoded headers, the text and HTML bodies, and every attachment
/// with its decoded content.
fn parse_message(raw: &[u8]) -> ParsedMessage {
    use mail_parser::MimeHeaders;
    let Some(msg) = mail_parser::MessageParser::default().parse(raw) else {
        return ParsedMessage::default();
    };
    let env = envelope(&msg);
    let text = (0..msg.text_body_count())
        .filter_map(|i| msg.body_text(i))
        .collect::<Vec<_>>()
        .join("\n");
    // body_html converts a text/plain body when there is no HTML one: report only real HTML.
    let html = msg
        .html_bodies()
        .filter(|p| p.is_text_html())
        .filter_map(|p| p.text_contents())
        .collect::<Vec<_>>()
        .join("\n");
    let attachments = msg
        .attachments()
        .map(|part| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_string())
                .to_ascii_lowercase();
            let content = part.contents().to_vec();
            MessageAttachment {
                filename: part.attachment_name().unwrap_or_default().to_string(),
                content_type,
                size: content.len() as u64,
                content,
            }
        })
        .collect();
    ParsedMessage {
        subject: env.subject,
        from: env.from,
        to: env.to,
        cc: env.cc,
        date: env.date,
        message_id: env.message_id,
        text,
        html,
        attachments,
    }
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
                    special_use: m.special_use.unwrap_or_default(),
                    highest_modseq: m.highest_modseq,
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
        let limit = if r.limit == 0 { 50 } else { r.limit.min(1000) };
        // One more than asked tells whether another page follows.
        let mut page = self
            .store
            .messages_page(id, r.after_uid, limit + 1, HEAD_BYTES)
            .await
            .map_err(unavailable)?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        let parser = mail_parser::MessageParser::default();
        let messages: Vec<MessageSummary> = page
            .into_iter()
            .map(|m| {
                let env = parser
                    .parse_headers(&m.head)
                    .map(|msg| envelope(&msg))
                    .unwrap_or_default();
                MessageSummary {
                    uid: m.meta.uid,
                    flags: m.meta.flags,
                    size: m.meta.size,
                    internal_date_ms: m.meta.internal_date_ms,
                    from: env.from,
                    subject: env.subject,
                    date: env.date,
                    to: env.to,
                    cc: env.cc,
                    message_id: env.message_id,
                    in_reply_to: env.in_reply_to,
                    modseq: m.meta.modseq,
                }
            })
            .collect();
        let next_after_uid = if more {
            messages.last().map_or(0, |m| m.uid)
        } else {
            0
        };
        Ok(Response::new(ListMessagesResponse {
            messages,
            next_after_uid,
        }))
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
        // The message's own row (no content), not the whole mailbox's metadata.
        let flags = self
            .store
            .messages_page(id, r.uid.saturating_sub(1), 1, 0)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|m| m.meta.uid == r.uid)
            .map(|m| m.meta.flags)
            .unwrap_or_default();
        let parsed = parse_message(&content);
        Ok(Response::new(FetchMessageResponse {
            content,
            flags,
            parsed: Some(parsed),
        }))
    }

    async fn set_flags(
        &self,
        req: Request<SetFlagsRequest>,
    ) -> Result<Response<SetFlagsResponse>, Status> {
        let account = self.account(&req).await?;
        let r = req.get_ref();
        check_uids(&r.uids)?;
        let op = match FlagOperation::try_from(r.operation) {
            Ok(FlagOperation::Add) => FlagOp::Add,
            Ok(FlagOperation::Remove) => FlagOp::Remove,
            Ok(FlagOperation::Replace) => FlagOp::Replace,
            _ => {
                return Err(Status::invalid_argument(
                    "operation must be ADD, REMOVE or REPLACE",
                ));
            }
        };
        let id = self.mailbox_id(&account, &r.mailbox).await?;
        let metas = self
            .store
            .store_flags(id, &r.uids, op, &r.flags)
            .await
            .map_err(change_failed)?;
        Ok(Response::new(SetFlagsResponse {
            messages: metas
                .into_iter()
                .map(|m| MessageFlags {
                    uid: m.uid,
                    flags: m.flags,
                    modseq: m.modseq,
                })
                .collect(),
        }))
    }

    async fn move_messages(
        &self,
        req: Request<MoveMessagesRequest>,
    ) -> Result<Response<MoveMessagesResponse>, Status> {
        let account = self.account(&req).await?;
        let r = req.get_ref();
        check_uids(&r.uids)?;
        if r.destination.is_empty() {
            return Err(Status::invalid_argument("no destination mailbox"));
        }
        let id = self.mailbox_id(&account, &r.mailbox).await?;
        let copied = self
            .store
            .move_messages(account.id, id, &r.uids, &r.destination)
            .await
            .map_err(change_failed)?;
        Ok(Response::new(MoveMessagesResponse {
            uid_validity: copied.uid_validity,
            moved: uid_pairs(&copied.uids),
        }))
    }

    async fn delete_messages(
        &self,
        req: Request<DeleteMessagesRequest>,
    ) -> Result<Response<DeleteMessagesResponse>, Status> {
        let account = self.account(&req).await?;
        let r = req.get_ref();
        check_uids(&r.uids)?;
        let source = self.mailbox_info(&account, &r.mailbox).await?;
        let is_trash = |m: &tern_store::MailboxInfo| {
            m.special_use
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("\\Trash"))
        };
        if r.expunge || is_trash(&source) {
            let expunged = self
                .store
                .remove_messages(source.id, &r.uids)
                .await
                .map_err(change_failed)?;
            return Ok(Response::new(DeleteMessagesResponse {
                expunged,
                ..Default::default()
            }));
        }
        let trash = self
            .store
            .list_mailboxes(account.id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(is_trash)
            .ok_or_else(|| {
                Status::failed_precondition(
                    "the account has no Trash mailbox: delete with expunge to remove for good",
                )
            })?;
        let copied = self
            .store
            .move_messages(account.id, source.id, &r.uids, &trash.name)
            .await
            .map_err(change_failed)?;
        Ok(Response::new(DeleteMessagesResponse {
            expunged: Vec::new(),
            moved_to: trash.name,
            uid_validity: copied.uid_validity,
            moved: uid_pairs(&copied.uids),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_decodes_encoded_words() {
        let raw = b"From: =?UTF-8?Q?J=C3=B6rg?= <j@example.test>\r\nTo: a@x.test, B <b@x.test>\r\nSubject: =?UTF-8?B?SGVsbG8g8J+Riw==?=\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@x.test>\r\n\r\nbody";
        let msg = mail_parser::MessageParser::default()
            .parse_headers(&raw[..])
            .unwrap();
        let env = envelope(&msg);
        assert_eq!(env.from, "J\u{f6}rg <j@example.test>");
        assert_eq!(env.to, ["a@x.test", "B <b@x.test>"]);
        assert_eq!(env.subject, "Hello \u{1f44b}");
        assert_eq!(env.message_id, "m1@x.test");
        assert!(env.date.contains("23 Nov 2026"), "{}", env.date);
    }

    #[test]
    fn parsed_message_has_bodies_and_decoded_attachments() {
        let raw = b"From: a@x.test\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain body\r\n\
--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html body</p>\r\n--b2--\r\n\
--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";
        let p = parse_message(raw);
        assert_eq!(p.subject, "files");
        assert_eq!(p.text.trim(), "plain body");
        assert_eq!(p.html.trim(), "<p>html body</p>");
        assert_eq!(p.attachments.len(), 1);
        let a = &p.attachments[0];
        assert_eq!(a.filename, "report.pdf");
        assert_eq!(a.content_type, "application/pdf");
        assert_eq!(a.content, b"%PDF-1.4\n");
        assert_eq!(a.size, 9);
    }

    #[test]
    fn plain_message_has_no_html_and_no_attachments() {
        let p = parse_message(b"Subject: hi\r\n\r\njust text\r\n");
        assert_eq!(p.text.trim(), "just text");
        assert!(p.html.is_empty());
        assert!(p.attachments.is_empty());
    }
}
