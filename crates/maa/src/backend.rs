//! The mailbox backends of the IMAP and POP3 sessions, implemented over the store. The protocol
//! crates see only their own small traits; this file is the whole coupling.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tern_runtime::sessions::IdleWatch;
use tern_store::{Account, MailboxChanged, Store};
use tokio::sync::broadcast;

fn temporary(e: tern_store::Error) -> String {
    tracing::warn!(error = %e, "store error in mailbox session");
    "mailbox store unavailable".to_string()
}

/// One logged-in account's view of the store. Mailbox ids are cached per name for the session;
/// a mailbox deleted meanwhile is looked up again.
pub struct StoreBackend {
    store: Store,
    account: Option<Account>,
    ids: HashMap<String, i64>,
    /// UIDVALIDITY per mailbox id: it never changes for an id.
    validity: HashMap<i64, u32>,
    /// Mailbox change notifications, subscribed on the first IMAP IDLE.
    changes: Option<broadcast::Receiver<MailboxChanged>>,
    /// Bodies read ahead during a scan through a mailbox (FETCH 1:* BODY[], SEARCH BODY).
    ahead: ReadAhead,
}

/// Messages read ahead: a FETCH or SEARCH over many messages asks for their bodies (or header
/// sections) one by one in ascending UID order; after two such requests in a row, the next
/// bodies (at most [`AHEAD_MESSAGES`], [`AHEAD_BYTES`] together) or header sections (at most
/// [`AHEAD_HEADERS`], each at most the store's 64 KiB) come in one query instead of one each.
/// Message contents never change, so nothing read ahead is ever stale. Emptied when the
/// session idles, so an idle session holds none.
#[derive(Default)]
struct ReadAhead {
    mailbox_id: i64,
    headers: bool,
    last_uid: Option<u32>,
    items: VecDeque<(u32, Vec<u8>)>,
}

const AHEAD_MESSAGES: u32 = 64;
const AHEAD_HEADERS: u32 = 512;
const AHEAD_BYTES: u64 = 1024 * 1024;

impl ReadAhead {
    fn clear(&mut self) {
        *self = ReadAhead::default();
    }
}

impl StoreBackend {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            account: None,
            ids: HashMap::new(),
            validity: HashMap::new(),
            changes: None,
            ahead: ReadAhead::default(),
        }
    }

    /// The content (or with `headers` the header section) of message `uid` of mailbox `id`,
    /// read ahead when the caller is scanning.
    async fn read(&mut self, id: i64, uid: u32, headers: bool) -> Result<Option<Vec<u8>>, String> {
        let ahead = &mut self.ahead;
        if ahead.mailbox_id != id || ahead.headers != headers {
            ahead.clear();
            ahead.mailbox_id = id;
            ahead.headers = headers;
        }
        let scanning = ahead.last_uid.is_some_and(|last| last < uid);
        ahead.last_uid = Some(uid);
        while ahead.items.front().is_some_and(|(u, _)| *u < uid) {
            ahead.items.pop_front();
        }
        match ahead.items.front() {
            Some((u, _)) if *u == uid => return Ok(ahead.items.pop_front().map(|(_, b)| b)),
            // Read ahead past `uid` already: it is gone.
            Some(_) => return Ok(None),
            None => {}
        }
        let rows = match (scanning, headers) {
            (false, false) => return self.store.message_body(id, uid).await.map_err(temporary),
            (false, true) => return self.store.message_header(id, uid).await.map_err(temporary),
            (true, false) => {
                self.store
                    .message_bodies_from(id, uid, AHEAD_MESSAGES, AHEAD_BYTES)
                    .await
            }
            (true, true) => {
                self.store
                    .message_headers_from(id, uid, AHEAD_HEADERS)
                    .await
            }
        }
        .map_err(temporary)?;
        let ahead = &mut self.ahead;
        ahead.items = rows.into();
        match ahead.items.front() {
            Some((u, _)) if *u == uid => Ok(ahead.items.pop_front().map(|(_, b)| b)),
            _ => Ok(None),
        }
    }

    async fn login(&mut self, user: &str, password: &str) -> Result<bool, String> {
        match self.store.authenticate(user, password).await {
            Ok(Some(account)) => {
                self.account = Some(account);
                Ok(true)
            }
            Ok(None) => {
                tracing::warn!(user = %user, "auth failed");
                Ok(false)
            }
            Err(e) => Err(temporary(e)),
        }
    }

    fn account_id(&self) -> Result<i64, String> {
        self.account
            .as_ref()
            .map(|a| a.id)
            .ok_or_else(|| "not logged in".to_string())
    }

    /// Ok(None) when the account has no such mailbox.
    async fn mailbox_id(&mut self, name: &str) -> Result<Option<i64>, String> {
        let key = canonical(name);
        if let Some(id) = self.ids.get(&key) {
            return Ok(Some(*id));
        }
        let account = self.account_id()?;
        match self.store.mailbox(account, &key).await.map_err(temporary)? {
            Some(m) => {
                self.ids.insert(key, m.id);
                Ok(Some(m.id))
            }
            None => Ok(None),
        }
    }
}

/// How often an idling IMAP session looks at its mailbox even without a notification (a lost
/// listener connection, or SQLite shared with another process).
const IDLE_POLL: Duration = Duration::from_secs(30);

impl IdleWatch for StoreBackend {
    /// Waits for a change of the selected mailbox (any change of the account's mailboxes in
    /// the authenticated state, where IDLE has nothing to report but keeps the client around),
    /// at most [`IDLE_POLL`]. Holds no database connection while it waits: the notifications
    /// come from the store's single listener. Cancel-safe: dropping it mid-wait loses no
    /// event that matters, since the session refreshes from the store after every wake.
    async fn changed(&mut self, mailbox: Option<&str>) {
        // Nothing read ahead is kept while the client idles.
        self.ahead.clear();
        let Ok(account) = self.account_id() else {
            return std::future::pending().await;
        };
        let Some(receiver) = self.changes.as_mut() else {
            match self.store.subscribe_changes().await {
                // Freshly subscribed: look once now, so that nothing committed between the
                // session's last look and the subscription is missed.
                Ok(receiver) => self.changes = Some(receiver),
                Err(err) => {
                    tracing::warn!(error = %err, "imap.idle cannot subscribe to changes; polling");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
            return;
        };
        // A mailbox that cannot be resolved now is polled.
        let mailbox_id = mailbox.and_then(|name| self.ids.get(&canonical(name)).copied());
        let wait = async {
            loop {
                match receiver.recv().await {
                    Ok(event) => {
                        let relevant = match (mailbox, mailbox_id) {
                            (Some(_), Some(id)) => event.concerns(account, id),
                            (Some(_), None) => true,
                            (None, _) => {
                                event == MailboxChanged::ANY || event.account_id == account
                            }
                        };
                        if relevant {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        let _ = tokio::time::timeout(IDLE_POLL, wait).await;
    }
}

fn canonical(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        name.to_string()
    }
}

fn imap_entry(m: tern_store::MailboxInfo) -> tern_imap::MailboxEntry {
    tern_imap::MailboxEntry {
        name: m.name,
        special_use: m.special_use,
        uid_validity: m.uid_validity,
        uid_next: m.uid_next,
        messages: m.messages,
        unseen: m.unseen,
        highest_modseq: m.highest_modseq,
    }
}

fn imap_meta(m: tern_store::MessageMeta) -> tern_imap::MessageMeta {
    tern_imap::MessageMeta {
        uid: m.uid,
        flags: m.flags,
        size: m.size,
        internal_date_ms: m.internal_date_ms,
        modseq: m.modseq,
    }
}

mod imap_impl {
    use super::*;
    use tern_imap::{Backend, BackendError, FlagOp, MailboxEntry, MessageMeta};

    fn t(e: String) -> BackendError {
        BackendError::Temporary(e)
    }

    /// Store answers that are about the request become IMAP answers; the rest is trouble.
    fn answer(e: tern_store::Error) -> BackendError {
        match e {
            tern_store::Error::NotFound(_) => BackendError::NotFound,
            tern_store::Error::Conflict(_) => BackendError::Exists,
            tern_store::Error::Invalid(text) => BackendError::Refused(text),
            tern_store::Error::OverQuota(_) => BackendError::OverQuota,
            other => t(temporary(other)),
        }
    }

    /// The IMAP flag operation as the store's.
    fn store_op(op: FlagOp) -> tern_store::FlagOp {
        match op {
            FlagOp::Add => tern_store::FlagOp::Add,
            FlagOp::Remove => tern_store::FlagOp::Remove,
            FlagOp::Replace => tern_store::FlagOp::Replace,
        }
    }

    impl StoreBackend {
        /// The id of mailbox `name`, which must exist.
        async fn existing(&mut self, name: &str) -> Result<i64, BackendError> {
            self.mailbox_id(name)
                .await
                .map_err(t)?
                .ok_or(BackendError::NotFound)
        }
    }

    impl Backend for StoreBackend {
        async fn login(&mut self, user: &str, password: &str) -> Result<bool, BackendError> {
            StoreBackend::login(self, user, password).await.map_err(t)
        }

        async fn create_mailbox(&mut self, name: &str) -> Result<(), BackendError> {
            let account = self.account_id().map_err(t)?;
            self.store
                .create_mailbox(account, name)
                .await
                .map(drop)
                .map_err(answer)
        }

        async fn delete_mailbox(&mut self, name: &str) -> Result<(), BackendError> {
            let account = self.account_id().map_err(t)?;
            self.ids.clear();
            self.store
                .delete_mailbox(account, name)
                .await
                .map_err(answer)
        }

        async fn rename_mailbox(&mut self, from: &str, to: &str) -> Result<(), BackendError> {
            let account = self.account_id().map_err(t)?;
            self.ids.clear();
            self.store
                .rename_mailbox(account, from, to)
                .await
                .map_err(answer)
        }

        async fn subscribe(&mut self, name: &str) -> Result<(), BackendError> {
            let account = self.account_id().map_err(t)?;
            self.store.subscribe(account, name).await.map_err(answer)
        }

        async fn unsubscribe(&mut self, name: &str) -> Result<(), BackendError> {
            let account = self.account_id().map_err(t)?;
            self.store
                .unsubscribe(account, name)
                .await
                .map(drop)
                .map_err(answer)
        }

        async fn subscriptions(&mut self) -> Result<Vec<String>, BackendError> {
            let account = self.account_id().map_err(t)?;
            self.store.subscriptions(account).await.map_err(answer)
        }

        async fn quota(&mut self) -> Result<tern_imap::QuotaInfo, BackendError> {
            let address = match &self.account {
                Some(account) => account.address.clone(),
                None => return Err(t("not logged in".to_string())),
            };
            let q = self.store.quota(&address).await.map_err(answer)?;
            Ok(tern_imap::QuotaInfo {
                storage_limit: q.limit.bytes,
                storage_used: q.used.bytes,
                message_limit: q.limit.messages,
                messages_used: q.used.messages,
            })
        }

        async fn append(
            &mut self,
            name: &str,
            content: &[u8],
            flags: &[String],
            internal_date_ms: Option<i64>,
        ) -> Result<(u32, u32), BackendError> {
            let account = self.account_id().map_err(t)?;
            let done = self
                .store
                .append(account, name, content, flags, internal_date_ms)
                .await
                .map_err(answer)?;
            let validity = match self.validity.get(&done.mailbox_id) {
                Some(&validity) => validity,
                None => {
                    let validity = self
                        .store
                        .uid_validity(done.mailbox_id)
                        .await
                        .map_err(answer)?
                        .ok_or(BackendError::NotFound)?;
                    self.validity.insert(done.mailbox_id, validity);
                    validity
                }
            };
            Ok((validity, done.uid))
        }

        async fn copy(
            &mut self,
            from: &str,
            uids: &[u32],
            to: &str,
            remove: bool,
        ) -> Result<(u32, Vec<(u32, u32)>), BackendError> {
            let account = self.account_id().map_err(t)?;
            let source = self
                .mailbox_id(from)
                .await
                .map_err(t)?
                .ok_or_else(|| BackendError::Refused("the selected mailbox is gone".into()))?;
            let done = if remove {
                self.store.move_messages(account, source, uids, to).await
            } else {
                self.store.copy_messages(account, source, uids, to).await
            }
            .map_err(answer)?;
            Ok((done.uid_validity, done.uids))
        }

        async fn list_mailboxes(&mut self) -> Result<Vec<MailboxEntry>, BackendError> {
            let account = self.account_id().map_err(t)?;
            let list = self
                .store
                .list_mailboxes(account)
                .await
                .map_err(temporary)
                .map_err(t)?;
            Ok(list.into_iter().map(imap_entry).collect())
        }

        async fn mailbox(&mut self, name: &str) -> Result<Option<MailboxEntry>, BackendError> {
            let account = self.account_id().map_err(t)?;
            let m = self
                .store
                .mailbox(account, name)
                .await
                .map_err(temporary)
                .map_err(t)?;
            Ok(m.map(imap_entry))
        }

        async fn messages(&mut self, name: &str) -> Result<Vec<MessageMeta>, BackendError> {
            let id = self.existing(name).await?;
            let list = self
                .store
                .messages(id)
                .await
                .map_err(temporary)
                .map_err(t)?;
            Ok(list.into_iter().map(imap_meta).collect())
        }

        async fn changes(
            &mut self,
            name: &str,
            since: u64,
        ) -> Result<tern_imap::MailboxChanges, BackendError> {
            let id = self.existing(name).await?;
            let c = self
                .store
                .mailbox_changes(id, since)
                .await
                .map_err(answer)?;
            Ok(tern_imap::MailboxChanges {
                uid_validity: c.uid_validity,
                uid_next: c.uid_next,
                highest_modseq: c.highest_modseq,
                messages: c.messages.into_iter().map(imap_meta).collect(),
                vanished: c.vanished,
            })
        }

        async fn header(&mut self, name: &str, uid: u32) -> Result<Option<Vec<u8>>, BackendError> {
            let id = self.existing(name).await?;
            self.read(id, uid, true).await.map_err(t)
        }

        async fn body(&mut self, name: &str, uid: u32) -> Result<Option<Vec<u8>>, BackendError> {
            let id = self.existing(name).await?;
            self.read(id, uid, false).await.map_err(t)
        }

        async fn store_flags(
            &mut self,
            name: &str,
            uids: &[u32],
            op: FlagOp,
            flags: &[String],
        ) -> Result<Vec<MessageMeta>, BackendError> {
            let id = self.existing(name).await?;
            let op = store_op(op);
            let list = self
                .store
                .store_flags(id, uids, op, flags)
                .await
                .map_err(temporary)
                .map_err(t)?;
            Ok(list.into_iter().map(imap_meta).collect())
        }

        async fn expunge(
            &mut self,
            name: &str,
            uids: Option<&[u32]>,
        ) -> Result<Vec<u32>, BackendError> {
            let id = self.existing(name).await?;
            self.store
                .expunge(id, uids)
                .await
                .map_err(temporary)
                .map_err(t)
        }

        async fn store_flags_unchanged_since(
            &mut self,
            name: &str,
            uids: &[u32],
            op: FlagOp,
            flags: &[String],
            unchanged_since: u64,
        ) -> Result<(Vec<MessageMeta>, Vec<u32>), BackendError> {
            let id = self.existing(name).await?;
            let op = store_op(op);
            let (list, modified) = self
                .store
                .store_flags_unchanged_since(id, uids, op, flags, Some(unchanged_since))
                .await
                .map_err(temporary)
                .map_err(t)?;
            Ok((list.into_iter().map(imap_meta).collect(), modified))
        }

        async fn vanished(&mut self, name: &str, since: u64) -> Result<Vec<u32>, BackendError> {
            let id = self.existing(name).await?;
            self.store
                .vanished_since(id, since)
                .await
                .map_err(temporary)
                .map_err(t)
        }
    }
}

mod pop3_impl {
    use super::*;
    use tern_pop3::{Backend, BackendError, MaildropEntry};

    fn t(e: String) -> BackendError {
        BackendError::Temporary(e)
    }

    impl Backend for StoreBackend {
        async fn login(&mut self, user: &str, password: &str) -> Result<bool, BackendError> {
            StoreBackend::login(self, user, password).await.map_err(t)
        }

        async fn maildrop(&mut self) -> Result<Vec<MaildropEntry>, BackendError> {
            let account = self.account_id().map_err(t)?;
            let inbox = self
                .store
                .mailbox(account, "INBOX")
                .await
                .map_err(temporary)
                .map_err(t)?
                .ok_or_else(|| t("account has no INBOX".into()))?;
            self.ids.insert("INBOX".into(), inbox.id);
            let list = self
                .store
                .messages(inbox.id)
                .await
                .map_err(temporary)
                .map_err(t)?;
            // RFC 1939 §7: a unique-id must stay the same across sessions; UIDVALIDITY.UID does,
            // and changes exactly when IMAP clients would also have to resynchronise.
            Ok(list
                .into_iter()
                .map(|m| MaildropEntry {
                    uid: m.uid,
                    size: m.size,
                    unique_id: format!("{}.{}", inbox.uid_validity, m.uid),
                })
                .collect())
        }

        async fn body(&mut self, uid: u32) -> Result<Option<Vec<u8>>, BackendError> {
            let id = self
                .mailbox_id("INBOX")
                .await
                .map_err(t)?
                .ok_or_else(|| t("account has no INBOX".into()))?;
            self.store
                .message_body(id, uid)
                .await
                .map_err(temporary)
                .map_err(t)
        }

        async fn delete(&mut self, uids: &[u32]) -> Result<(), BackendError> {
            if uids.is_empty() {
                return Ok(());
            }
            let id = self
                .mailbox_id("INBOX")
                .await
                .map_err(t)?
                .ok_or_else(|| t("account has no INBOX".into()))?;
            let deleted = [String::from("\\Deleted")];
            self.store
                .store_flags(id, uids, tern_store::FlagOp::Add, &deleted)
                .await
                .map_err(temporary)
                .map_err(t)?;
            self.store
                .expunge(id, Some(uids))
                .await
                .map_err(temporary)
                .map_err(t)?;
            Ok(())
        }
    }
}
