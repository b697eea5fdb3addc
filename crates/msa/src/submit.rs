//! The submission policy shared by SMTP and gRPC: who may send as whom, which recipients are
//! accepted, the fix-ups applied to the message, and the one queue transaction.
//!
//! Replies are SMTP replies on both paths; the gRPC layer maps them to statuses.

use std::net::SocketAddr;

use tern_runtime::mailfmt::{Received, has_header, now_unix, rfc5322_date};
use tern_smtp::{Envelope, Handler, Reply};
use tern_store::{Account, NewMessage, RecipientDsn, Resolution, Store};

fn store_trouble(e: &tern_store::Error) -> Reply {
    tracing::warn!(error = %e, "store error during submission");
    Reply::temporary_failure()
}

/// Everything a submission needs; cheap to clone, one per listener.
#[derive(Clone)]
pub struct Submitter {
    store: Store,
    hostname: String,
}

impl Submitter {
    pub fn new(store: Store, hostname: String) -> Self {
        Self { store, hostname }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn handler(&self, peer: SocketAddr, tls: bool) -> SubmissionHandler {
        SubmissionHandler {
            submitter: self.clone(),
            peer,
            tls,
            account: None,
        }
    }

    /// Checks credentials. Failures are logged in one stable shape an operator can feed to
    /// fail2ban: `auth failed client.address=… user=…`.
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Account, Reply> {
        match self.store.authenticate(user, password).await {
            Ok(Some(account)) => Ok(account),
            Ok(None) => {
                let ip = peer
                    .map(|p| p.ip().to_string())
                    .unwrap_or_else(|| "-".into());
                tracing::warn!(client.address = %ip, user = %user, "auth failed");
                Err(Reply::new(
                    535,
                    (5, 7, 8),
                    "authentication credentials invalid",
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "store error during authentication");
                Err(Reply::new(
                    454,
                    (4, 7, 0),
                    "temporary authentication failure",
                ))
            }
        }
    }

    /// RFC 6409 §6.1: the envelope sender must be an address the account may use.
    pub fn check_sender(&self, account: &Account, from: &str) -> Result<(), Reply> {
        if from.eq_ignore_ascii_case(&account.address) {
            Ok(())
        } else {
            Err(Reply::new(
                553,
                (5, 7, 1),
                format!("<{from}>: sender address not owned by {}", account.address),
            ))
        }
    }

    /// Recipients in our own domains must exist; others are relayed for the authenticated user.
    pub async fn check_recipient(&self, to: &str) -> Result<(), Reply> {
        if to
            .rsplit_once('@')
            .is_none_or(|(l, d)| l.is_empty() || d.is_empty())
        {
            return Err(Reply::new(
                501,
                (5, 1, 3),
                format!("<{to}>: bad recipient address syntax"),
            ));
        }
        match self.store.resolve(to).await {
            Ok(Resolution::NoSuchUser) => Err(Reply::new(
                550,
                (5, 1, 1),
                format!("<{to}>: no such user here"),
            )),
            Ok(Resolution::Local { .. } | Resolution::NotLocalDomain) => Ok(()),
            Err(e) => Err(store_trouble(&e)),
        }
    }

    /// Adds the trace header and missing Date/Message-ID (RFC 6409 §8), then queues the message
    /// in one transaction. Returns the queue id.
    pub async fn submit(
        &self,
        account: &Account,
        mail_from: &str,
        rcpts: &[String],
        message: &[u8],
        received: Received<'_>,
        envelope: Option<&Envelope>,
    ) -> Result<String, Reply> {
        let now = received.unix_secs;
        let mut content = Vec::with_capacity(message.len() + 512);
        content.extend_from_slice(received.header().as_bytes());
        if !has_header(message, "Date") {
            content.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(now)).as_bytes());
        }
        if !has_header(message, "Message-ID") {
            let id: u128 = rand::random();
            content.extend_from_slice(
                format!("Message-ID: <{id:032x}@{}>\r\n", self.hostname).as_bytes(),
            );
        }
        content.extend_from_slice(message);
        let (rcpt_dsn, ret) = envelope.map(queue_dsn).unwrap_or_default();
        let msg = NewMessage {
            sender: mail_from,
            recipients: rcpts,
            content: &content,
            envid: envelope.and_then(|e| e.envid.as_deref()),
            ret,
            rcpt_dsn: &rcpt_dsn,
            requiretls: envelope.is_some_and(|e| e.requiretls),
        };
        match self.store.enqueue(msg).await {
            Ok(id) => {
                tracing::info!(queue.id = %id, user = %account.address, rcpts = rcpts.len(), size = content.len(), "message submitted");
                Ok(id)
            }
            Err(e) => Err(store_trouble(&e)),
        }
    }
}

/// The envelope's RFC 3461 parameters in the queue's terms. tern-smtp already folds an absent
/// NOTIFY into its default (FAILURE,DELAY), which is what the queue assumes too.
fn queue_dsn(env: &Envelope) -> (Vec<RecipientDsn>, Option<tern_store::Ret>) {
    use tern_smtp::Notify as N;
    let rcpts = env
        .rcpt_params
        .iter()
        .map(|p| RecipientDsn {
            notify: tern_store::Notify {
                never: p.notify.is_never(),
                success: p.notify.contains(N::SUCCESS),
                failure: p.notify.contains(N::FAILURE),
                delay: p.notify.contains(N::DELAY),
                explicit: true,
            },
            orcpt: p.orcpt.clone(),
        })
        .collect();
    let ret = env.ret.map(|r| match r {
        tern_smtp::Ret::Full => tern_store::Ret::Full,
        tern_smtp::Ret::Headers => tern_store::Ret::Headers,
    });
    (rcpts, ret)
}

/// The SMTP policy of one submission connection.
pub struct SubmissionHandler {
    submitter: Submitter,
    peer: SocketAddr,
    tls: bool,
    account: Option<Account>,
}

impl SubmissionHandler {
    pub fn tls_started(&mut self) {
        self.tls = true;
    }
}

impl Handler for SubmissionHandler {
    async fn authenticate(
        &mut self,
        authzid: &str,
        authcid: &str,
        password: &str,
    ) -> Result<(), Reply> {
        // RFC 4616 §2: an authorization identity other than the authenticated one would mean
        // acting for someone else, which no account may do here.
        if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
            return Err(Reply::new(
                535,
                (5, 7, 8),
                "authentication credentials invalid",
            ));
        }
        let account = self
            .submitter
            .authenticate(authcid, password, Some(self.peer))
            .await?;
        self.account = Some(account);
        Ok(())
    }

    async fn mail_from(&mut self, _envelope: &Envelope, from: &str) -> Result<(), Reply> {
        let account = self
            .account
            .as_ref()
            .ok_or_else(|| Reply::new(530, (5, 7, 0), "authentication required"))?;
        self.submitter.check_sender(account, from)
    }

    async fn rcpt_to(&mut self, _envelope: &Envelope, to: &str) -> Result<(), Reply> {
        self.submitter.check_recipient(to).await
    }

    async fn data(&mut self, envelope: &Envelope, message: Vec<u8>) -> Result<Reply, Reply> {
        let account = self
            .account
            .as_ref()
            .ok_or_else(|| Reply::new(530, (5, 7, 0), "authentication required"))?;
        // RFC 3848: ESMTPSA = ESMTP with both TLS and AUTH.
        let with = if self.tls { "ESMTPSA" } else { "ESMTPA" };
        let received = Received {
            helo: &envelope.helo,
            // The user's own address stays private by default (RFC 6409 §8 leaves it open).
            client_ip: None,
            by_host: self.submitter.hostname(),
            with,
            authenticated_as: Some(&account.address),
            unix_secs: now_unix(),
        };
        let id = self
            .submitter
            .submit(
                account,
                &envelope.mail_from,
                &envelope.rcpt_to,
                &message,
                received,
                Some(envelope),
            )
            .await?;
        Ok(Reply::new(250, (2, 0, 0), format!("queued as {id}")))
    }
}
