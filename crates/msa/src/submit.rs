//! The submission policy shared by SMTP and gRPC: who may send as whom, which recipients are
//! accepted, the fix-ups applied to the message, and the one queue transaction.
//!
//! Replies are SMTP replies on both paths; the gRPC layer maps them to statuses. The sender
//! rules follow RFC 6409 §6.1 and §8: an account sends only as an address it owns (its own, or
//! an exact alias that lists it), in the envelope and in `From:`. `Sender:` and `Reply-To:` are
//! deliberately left alone: they name where answers go, not who is speaking.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use mail_parser::{HeaderName, MessageParser};
use serde::Deserialize;
use tern_runtime::mailfmt::{Received, has_header, now_unix, rfc5322_date};
use tern_runtime::ops::names;
use tern_smtp::{Envelope, Handler, Reply, ScramCredentials};
use tern_store::{Account, NewMessage, RecipientDsn, Resolution, Store};

use crate::throttle::{AuthLimits, Throttle};

/// The `limits` section of the MSA's configuration: what one account may submit. They apply to
/// every account alike.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubmissionLimits {
    /// Messages per account in any sliding hour, counted in the store so every MSA process
    /// shares the count; beyond it MAIL FROM gets `450 4.7.1`.
    pub messages_per_hour: u64,
    /// Recipients per message; beyond it RCPT TO gets `452 4.5.3` (RFC 5321 §4.5.3.1.10).
    pub max_recipients: usize,
    /// Octets per message as received; beyond it `552 5.3.4` (RFC 1870 §6).
    pub max_message_size: usize,
}

impl Default for SubmissionLimits {
    fn default() -> Self {
        Self {
            messages_per_hour: 500,
            max_recipients: 100,
            max_message_size: 25 * 1024 * 1024,
        }
    }
}

/// Everything the submission policy is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub auth: AuthLimits,
    pub limits: SubmissionLimits,
}

fn store_trouble(e: &tern_store::Error) -> Reply {
    tracing::warn!(error = %e, "store error during submission");
    Reply::temporary_failure()
}

fn auth_store_trouble(e: &tern_store::Error) -> Reply {
    tracing::warn!(error = %e, "store error during authentication");
    Reply::new(454, (4, 7, 0), "temporary authentication failure")
}

/// Everything a submission needs; cheap to clone, one per listener.
#[derive(Clone)]
pub struct Submitter {
    store: Store,
    hostname: String,
    limits: SubmissionLimits,
    /// Shared by every clone, so both ports and gRPC count failures together.
    throttle: Arc<Throttle>,
    /// DKIM signing with each domain's active key; clones share the key cache.
    dkim: crate::dkim::Dkim,
}

impl Submitter {
    /// A submitter with the default [`Policy`].
    pub fn new(store: Store, hostname: String) -> Self {
        Self::with_policy(store, hostname, Policy::default())
    }

    pub fn with_policy(store: Store, hostname: String, policy: Policy) -> Self {
        Self {
            store,
            hostname,
            limits: policy.limits,
            throttle: Arc::new(Throttle::new(policy.auth)),
            dkim: crate::dkim::Dkim::new(),
        }
    }

    pub fn limits(&self) -> &SubmissionLimits {
        &self.limits
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

    /// Checks credentials, throttled (see [`crate::throttle`]): while the client address or
    /// the account is blocked the answer is `454 4.7.0` and the password is not checked; each
    /// failure waits a growing delay before its 535. Failures are logged in one stable shape an
    /// operator can feed to fail2ban: `auth failed client.address=… user=…`, and the start of a
    /// block once as `auth blocked client.address=… user=… blocked=…`.
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Account, Reply> {
        let client = peer.map(|p| p.ip());
        self.check_throttle(client, user)?;
        match self.store.authenticate(user, password).await {
            Ok(Some(account)) => {
                self.throttle.success(client, user);
                Ok(account)
            }
            Ok(None) => Err(self.failed_login(client, user).await),
            Err(e) => Err(auth_store_trouble(&e)),
        }
    }

    /// SCRAM-SHA-256, first step: the account's stored keys, or `None` for an unknown user and
    /// for an account whose password predates the keys (the exchange then fails at the proof,
    /// counted like a wrong password). Throttled like [`Submitter::authenticate`].
    pub async fn scram_credentials(
        &self,
        user: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Option<ScramCredentials>, Reply> {
        self.check_throttle(peer.map(|p| p.ip()), user)?;
        let keys = self
            .store
            .scram_keys(user)
            .await
            .map_err(|e| auth_store_trouble(&e))?;
        Ok(keys.map(|k| ScramCredentials {
            iterations: k.iterations,
            salt: k.salt,
            stored_key: k.stored_key,
            server_key: k.server_key,
        }))
    }

    /// SCRAM-SHA-256, last step: the session checked the client's proof. A failed proof is a
    /// failed login (logged, counted, delayed, 535); a verified one returns the account.
    pub async fn scram_finished(
        &self,
        user: &str,
        verified: bool,
        peer: Option<SocketAddr>,
    ) -> Result<Account, Reply> {
        let client = peer.map(|p| p.ip());
        if !verified {
            return Err(self.failed_login(client, user).await);
        }
        match self.store.account(user).await {
            Ok(Some(account)) => {
                self.throttle.success(client, user);
                Ok(account)
            }
            // Removed since its keys were read.
            Ok(None) => Err(self.failed_login(client, user).await),
            Err(e) => Err(auth_store_trouble(&e)),
        }
    }

    /// `454 4.7.0` while the client address or the account is blocked.
    fn check_throttle(&self, client: Option<std::net::IpAddr>, user: &str) -> Result<(), Reply> {
        match self.throttle.blocked(client, user) {
            Some(_) => Err(Reply::new(
                454,
                (4, 7, 0),
                "too many failed logins, try later",
            )),
            None => Ok(()),
        }
    }

    /// Logs and counts a failed login, waits the throttle's delay, and returns the 535.
    async fn failed_login(&self, client: Option<std::net::IpAddr>, user: &str) -> Reply {
        let ip = client
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "-".into());
        tracing::warn!(client.address = %ip, user = %user, "auth failed");
        let failure = self.throttle.failure(client, user);
        for key in &failure.blocked {
            tracing::warn!(client.address = %ip, user = %user, blocked = key.kind(), "auth blocked");
        }
        // The session waits too, which is the point: a guesser gets fewer tries per
        // connection and per minute.
        tokio::time::sleep(failure.delay).await;
        Reply::new(535, (5, 7, 8), "authentication credentials invalid")
    }

    /// The addresses `account` may send as (its own and the exact aliases naming it).
    async fn owned_addresses(&self, account: &Account) -> Result<Vec<String>, Reply> {
        self.store
            .sendable_addresses(&account.address)
            .await
            .map_err(|e| store_trouble(&e))
    }

    /// RFC 6409 §6.1: the envelope sender must be an address the account may use. The null
    /// sender is for notifications from mail systems (RFC 5321 §4.5.5), never for a user's
    /// own message, so submission refuses it.
    pub async fn check_sender(&self, account: &Account, from: &str) -> Result<(), Reply> {
        if from.is_empty() {
            return Err(Reply::new(
                553,
                (5, 7, 1),
                "null sender not allowed for submission",
            ));
        }
        let owned = self.owned_addresses(account).await?;
        if owned.iter().any(|a| a.eq_ignore_ascii_case(from)) {
            Ok(())
        } else {
            Err(Reply::new(
                553,
                (5, 7, 1),
                format!("<{from}>: sender address not owned by {}", account.address),
            ))
        }
    }

    /// The hourly message limit, checked when a transaction starts so the client learns before
    /// it sends the message.
    pub async fn check_rate(&self, account: &Account) -> Result<(), Reply> {
        let since = tern_store::now_ms().saturating_sub(60 * 60 * 1000);
        let sent = self
            .store
            .submissions_since(account.id, since)
            .await
            .map_err(|e| store_trouble(&e))?;
        if sent >= self.limits.messages_per_hour {
            tracing::warn!(user = %account.address, sent, "submission rate limit reached");
            return Err(Reply::new(450, (4, 7, 1), "rate limit exceeded, try later"));
        }
        Ok(())
    }

    /// `accepted` recipients are already in the envelope; one more must stay within the limit.
    pub fn check_recipient_count(&self, accepted: usize) -> Result<(), Reply> {
        if accepted >= self.limits.max_recipients {
            Err(Reply::new(452, (4, 5, 3), "too many recipients"))
        } else {
            Ok(())
        }
    }

    /// RFC 6409 §8.1: every address in every `From:` field must be one the account owns. A
    /// `From:` whose value cannot be read as addresses is refused too, since nobody could tell
    /// whose it is. A message without `From:` is not this check's business.
    pub async fn check_from_header(&self, account: &Account, message: &[u8]) -> Result<(), Reply> {
        let Some(parsed) = MessageParser::new().parse_headers(message) else {
            return Ok(());
        };
        let mut named = Vec::new();
        let mut unreadable = false;
        for value in parsed.header_values(HeaderName::From) {
            match value.as_address() {
                Some(list) => {
                    let before = named.len();
                    named.extend(list.iter().map(|a| a.address().unwrap_or("").to_string()));
                    unreadable |= named.len() == before;
                }
                None => unreadable = true,
            }
        }
        if named.is_empty() && !unreadable {
            return Ok(());
        }
        let owned = self.owned_addresses(account).await?;
        let stranger = named
            .iter()
            .find(|n| !owned.iter().any(|o| o.eq_ignore_ascii_case(n)));
        match (unreadable, stranger) {
            (false, None) => Ok(()),
            (_, Some(n)) if !n.is_empty() => Err(Reply::new(
                553,
                (5, 7, 1),
                format!("From: <{n}> is not an address of {}", account.address),
            )),
            _ => Err(Reply::new(
                553,
                (5, 7, 1),
                "From: header does not name an address you own",
            )),
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

    /// Checks the size and `From:`, removes `Bcc:`, adds the trace header and missing
    /// Date/Message-ID (RFC 6409 §8), then queues the message and counts it against the
    /// account in one transaction. Returns the queue id.
    pub async fn submit(
        &self,
        account: &Account,
        mail_from: &str,
        rcpts: &[String],
        message: &[u8],
        received: Received<'_>,
        envelope: Option<&Envelope>,
    ) -> Result<String, Reply> {
        let result = self
            .checked_submit(account, mail_from, rcpts, message, received, envelope)
            .await;
        match &result {
            Ok(_) => metrics::counter!(names::MESSAGES_ACCEPTED, "agent" => "msa").increment(1),
            Err(reply) => {
                let class = if reply.code < 500 { "4xx" } else { "5xx" };
                metrics::counter!(names::MESSAGES_REJECTED, "agent" => "msa", "class" => class)
                    .increment(1)
            }
        }
        result
    }

    async fn checked_submit(
        &self,
        account: &Account,
        mail_from: &str,
        rcpts: &[String],
        message: &[u8],
        received: Received<'_>,
        envelope: Option<&Envelope>,
    ) -> Result<String, Reply> {
        if message.len() > self.limits.max_message_size {
            return Err(Reply::new(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size",
            ));
        }
        self.check_from_header(account, message).await?;
        let message = &*strip_bcc(message);
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
        // Sign the final message, fix-ups included, for the From: domain (RFC 6376 §5).
        let dkim_domain = crate::dkim::from_domain(message, &account.domain);
        let content = self
            .dkim
            .sign_or_pass(&self.store, &dkim_domain, content)
            .await;
        let (rcpt_dsn, ret) = envelope.map(queue_dsn).unwrap_or_default();
        let traceparent = tern_runtime::telemetry::current_traceparent();
        let msg = NewMessage {
            sender: mail_from,
            recipients: rcpts,
            content: &content,
            envid: envelope.and_then(|e| e.envid.as_deref()),
            ret,
            rcpt_dsn: &rcpt_dsn,
            requiretls: envelope.is_some_and(|e| e.requiretls),
            trace_context: traceparent.as_deref(),
        };
        match self.store.enqueue_submission(account.id, msg).await {
            Ok(id) => {
                tracing::info!(queue.id = %id, user = %account.address, rcpts = rcpts.len(), size = content.len(), "message submitted");
                Ok(id)
            }
            Err(e) => Err(store_trouble(&e)),
        }
    }
}

/// Removes every `Bcc:` field, continuation lines included, from the header section: the
/// recipients it names are in the envelope, and the other recipients must not learn them
/// (RFC 5322 §3.6.3, RFC 6409 §8.1.1 leaves the choice to the MSA). Field names are
/// case-insensitive and the obsolete syntax allows white space before the colon (RFC 5322
/// §4.5.3). The body is never touched.
pub(crate) fn strip_bcc(message: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Vec<u8> = Vec::new();
    let mut kept_until = 0;
    let mut pos = 0;
    let mut dropping = false;
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !continuation {
            dropping = line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|colon| line[..colon].trim_ascii_end().eq_ignore_ascii_case(b"bcc"));
        }
        if dropping {
            out.extend_from_slice(&message[kept_until..pos]);
            kept_until = end;
        }
        pos = end;
    }
    if kept_until == 0 {
        return Cow::Borrowed(message);
    }
    out.extend_from_slice(&message[kept_until..]);
    Cow::Owned(out)
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

    async fn scram_credentials(
        &mut self,
        authcid: &str,
    ) -> Result<Option<ScramCredentials>, Reply> {
        self.submitter
            .scram_credentials(authcid, Some(self.peer))
            .await
    }

    async fn scram_finished(
        &mut self,
        authzid: &str,
        authcid: &str,
        verified: bool,
    ) -> Result<(), Reply> {
        let account = self
            .submitter
            .scram_finished(authcid, verified, Some(self.peer))
            .await?;
        // As for PLAIN: nobody may act for another account.
        if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
            return Err(Reply::new(
                535,
                (5, 7, 8),
                "authentication credentials invalid",
            ));
        }
        self.account = Some(account);
        Ok(())
    }

    async fn mail_from(&mut self, _envelope: &Envelope, from: &str) -> Result<(), Reply> {
        let account = self
            .account
            .as_ref()
            .ok_or_else(|| Reply::new(530, (5, 7, 0), "authentication required"))?;
        self.submitter.check_sender(account, from).await?;
        self.submitter.check_rate(account).await
    }

    async fn rcpt_to(&mut self, envelope: &Envelope, to: &str) -> Result<(), Reply> {
        self.submitter
            .check_recipient_count(envelope.rcpt_to.len())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(message: &str) -> String {
        String::from_utf8(strip_bcc(message.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn every_bcc_field_goes_with_its_continuation_lines() {
        let message = "From: a@example.org\r\n\
                       BCC: x@example.org,\r\n \ty@example.org\r\n\
                       To: b@example.org\r\n\
                       Bcc : z@example.org\r\n\
                       bcc:\r\n\
                       Subject: hi\r\n\
                       \r\n\
                       Bcc: this line is body text\r\n";
        assert_eq!(
            stripped(message),
            "From: a@example.org\r\n\
             To: b@example.org\r\n\
             Subject: hi\r\n\
             \r\n\
             Bcc: this line is body text\r\n"
        );
    }

    #[test]
    fn a_message_without_bcc_is_not_copied() {
        let message = b"To: b@example.org\r\nX-Bcc-Note: kept\r\nBccx: kept\r\n\r\nbody\r\n";
        assert!(matches!(strip_bcc(message), Cow::Borrowed(m) if m == message));
    }

    #[test]
    fn bcc_as_the_first_and_last_field_and_without_a_body() {
        assert_eq!(
            stripped("Bcc: x@example.org\r\nTo: b@example.org\r\n"),
            "To: b@example.org\r\n"
        );
        assert_eq!(
            stripped("To: b@example.org\r\nBcc: x@example.org"),
            "To: b@example.org\r\n"
        );
        assert_eq!(stripped(""), "");
    }
}
