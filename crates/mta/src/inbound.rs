//! SMTP on port 25: mail from other servers, accepted only for local domains and existing
//! recipients. The protocol itself is `tern-smtp`; this file is the policy.
//!
//! Never an open relay: a recipient is accepted only when its domain is one of ours and the
//! directory resolves it. Old relay tricks (`%` hack, `!` paths, quoted local parts holding `@`,
//! IP literals) are refused outright rather than left to the resolver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_runtime::Shutdown;
use tern_runtime::mailfmt::{Received, count_header, now_unix};
use tern_runtime::net::{Listener, Timeouts, serve_sessions};
use tern_runtime::ops::names;
use tern_runtime::sessions::SmtpConnection;
use tern_smtp::{AuthPolicy, Envelope, Handler, Reply, Session};
use tern_store::{NewMessage, RecipientDsn, Resolution, Store};
use tokio_rustls::TlsAcceptor;

use crate::SmtpLimits;
use crate::known_rcpts::KnownRecipients;

pub struct InboundHandler {
    store: Store,
    hostname: String,
    peer: SocketAddr,
    max_received: usize,
    tls: bool,
    relay_domains: Arc<[String]>,
    known: Arc<KnownRecipients>,
}

fn store_trouble(e: &tern_store::Error) -> Reply {
    tracing::warn!(error = %e, "store error during SMTP transaction");
    Reply::temporary_failure()
}

/// Splits `local@domain` at the last `@`, refusing the forms that were once used to relay.
pub fn relay_safe_split(address: &str) -> Result<(&str, &str), Reply> {
    let denied = || Reply::new(550, (5, 7, 1), format!("<{address}>: relaying denied"));
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or_else(|| Reply::new(501, (5, 1, 3), "bad recipient address syntax"))?;
    if local.is_empty() || domain.is_empty() {
        return Err(Reply::new(501, (5, 1, 3), "bad recipient address syntax"));
    }
    // RFC 5321 §3.6.1 source routes arrive stripped by the parser; what remains are the `%` and
    // `!` conventions and quoted local parts, which old relays interpreted as further hops.
    if local.contains(['%', '!', '@', '"'])
        || local.starts_with('@')
        || domain.starts_with('[')
        || domain.contains(':')
    {
        return Err(denied());
    }
    Ok((local, domain))
}

impl Handler for InboundHandler {
    async fn authenticate(
        &mut self,
        _authzid: &str,
        _authcid: &str,
        _password: &str,
    ) -> Result<(), Reply> {
        // AUTH is never advertised on port 25; the session refuses it before we are asked.
        Err(Reply::new(
            503,
            (5, 5, 1),
            "authentication is not available on this port",
        ))
    }

    async fn mail_from(&mut self, _envelope: &Envelope, _from: &str) -> Result<(), Reply> {
        // Sender checks (SPF, DMARC) belong to the transfer-agent issue; any sender is accepted.
        Ok(())
    }

    async fn rcpt_to(&mut self, _envelope: &Envelope, to: &str) -> Result<(), Reply> {
        let (_, domain) = relay_safe_split(to)?;
        // Domains the operator relays for (a backup MX, a gateway in front of another server):
        // accepted for any local part and delivered onward like any remote recipient.
        if self
            .relay_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return Ok(());
        }
        if self.known.contains(to) {
            return Ok(());
        }
        match self.store.resolve(to).await {
            Ok(Resolution::Local { .. }) => {
                self.known.insert(to);
                Ok(())
            }
            Ok(Resolution::NoSuchUser) => Err(Reply::new(
                550,
                (5, 1, 1),
                format!("<{to}>: no such user here"),
            )),
            Ok(Resolution::NotLocalDomain) => Err(Reply::new(
                550,
                (5, 7, 1),
                format!("<{to}>: relaying denied"),
            )),
            Err(e) => Err(store_trouble(&e)),
        }
    }

    async fn data(&mut self, envelope: &Envelope, message: Vec<u8>) -> Result<Reply, Reply> {
        let result = self.queue_message(envelope, message).await;
        match &result {
            Ok(_) => metrics::counter!(names::MESSAGES_ACCEPTED, "agent" => "mta").increment(1),
            Err(reply) => {
                let class = if reply.code < 500 { "4xx" } else { "5xx" };
                metrics::counter!(names::MESSAGES_REJECTED, "agent" => "mta", "class" => class)
                    .increment(1)
            }
        }
        result
    }
}

impl InboundHandler {
    /// The end of DATA: loop check, Received header, one queue transaction.
    async fn queue_message(&self, envelope: &Envelope, message: Vec<u8>) -> Result<Reply, Reply> {
        if count_header(&message, "Received") >= self.max_received {
            return Err(Reply::new(
                554,
                (5, 4, 6),
                "too many hops: mail loop detected",
            ));
        }
        let with = if self.tls { "ESMTPS" } else { "ESMTP" };
        let received = Received {
            helo: &envelope.helo,
            client_ip: Some(self.peer.ip()),
            by_host: &self.hostname,
            with,
            authenticated_as: None,
            unix_secs: now_unix(),
        }
        .header();
        let mut content = Vec::with_capacity(received.len() + message.len());
        content.extend_from_slice(received.as_bytes());
        content.extend_from_slice(&message);
        let (rcpt_dsn, ret) = queue_dsn(envelope);
        let traceparent = tern_runtime::telemetry::current_traceparent();
        let msg = NewMessage {
            sender: &envelope.mail_from,
            recipients: &envelope.rcpt_to,
            content: &content,
            envid: envelope.envid.as_deref(),
            ret,
            rcpt_dsn: &rcpt_dsn,
            requiretls: envelope.requiretls,
            trace_context: traceparent.as_deref(),
        };
        // RFC 5321 §6.1: the 250 below is our promise to deliver; it goes out only once the
        // queue transaction has committed.
        match self.store.enqueue(msg).await {
            Ok(id) => {
                tracing::info!(queue.id = %id, rcpts = envelope.rcpt_to.len(), size = content.len(), "message queued");
                Ok(Reply::new(250, (2, 0, 0), format!("queued as {id}")))
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

pub async fn serve_smtp(
    listener: Listener,
    tls: Option<TlsAcceptor>,
    hostname: String,
    limits: SmtpLimits,
    relay_domains: Vec<String>,
    store: Store,
    shutdown: Shutdown,
) {
    let relay_domains: Arc<[String]> = relay_domains.into();
    let known = Arc::new(KnownRecipients::default());
    let timeouts = Timeouts {
        idle: Duration::from_secs(limits.idle_timeout_secs),
        handshake: Duration::from_secs(30),
    };
    let tls_available = tls.is_some();
    serve_sessions(listener, shutdown, tls, timeouts, move |tls_active, peer| {
        let config = tern_smtp::Config {
            hostname: hostname.clone(),
            max_message_size: limits.max_message_size,
            max_recipients: limits.max_recipients,
            max_errors: limits.max_errors,
            tls_available,
            auth: AuthPolicy::Disabled,
            auth_requires_tls: true,
        };
        let handler = InboundHandler {
            store: store.clone(),
            hostname: hostname.clone(),
            peer,
            max_received: limits.max_received_headers,
            tls: tls_active,
            relay_domains: relay_domains.clone(),
            known: known.clone(),
        };
        let session = SmtpConnection::new(Session::new(config, tls_active), handler, |h: &mut InboundHandler| h.tls = true);
        (session, tracing::info_span!("smtp.session", client.address = %peer, listener = "smtp", tls = tls_active))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_tricks_are_denied() {
        for bad in [
            "a%b.test@example.test",
            "b.test!a@example.test",
            "\"a@b.test\"@example.test",
            "a@[127.0.0.1]",
            "a@[IPv6:::1]",
        ] {
            let e = relay_safe_split(bad).unwrap_err();
            assert_eq!((e.code, e.status), (550, Some((5, 7, 1))), "{bad}");
        }
        assert_eq!(
            relay_safe_split("bob@example.test").unwrap(),
            ("bob", "example.test")
        );
        assert_eq!(relay_safe_split("nobody").unwrap_err().code, 501);
    }
}
