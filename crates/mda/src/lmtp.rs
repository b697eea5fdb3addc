//! The LMTP server (RFC 2033), so that other MTAs (Postfix's `lmtp`, Exim, fetchmail) can hand
//! mail to Tern's mailboxes directly.
//!
//! The protocol is `tern_smtp::Session` in LMTP mode; this module is its handler. Recipients
//! are checked at RCPT (550 5.1.1 for nobody, 550 5.1.2 for other domains: LMTP is final
//! delivery, never relaying), and after DATA every accepted recipient goes through the same
//! `DeliveryService` as the gRPC path (resolution, Return-Path and Delivered-To, quota,
//! forwards), each getting its own reply.
//!
//! Delivery keys: LMTP has no retry identity (a client that lost our reply sends the whole
//! transaction again, indistinguishable from a new message), so each recipient of each
//! transaction gets a fresh random key. A hash of the content and envelope would instead merge
//! genuinely repeated messages (the same notification sent twice), which the issue forbids as
//! it forbids deduplicating on Message-ID. The price is LMTP's usual at-least-once delivery
//! when a reply is lost after the commit, as with Dovecot or Cyrus. Deliberately absent: AUTH
//! and STARTTLS (LMTP is for trusted local networks; bind it to loopback or a private address).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_rpc::v1::recipient_outcome::Status as OutcomeStatus;
use tern_rpc::v1::{DeliverRecipient, DeliverRequest, RecipientOutcome};
use tern_runtime::Shutdown;
use tern_runtime::config::SmtpLimits;
use tern_runtime::mailfmt::{Received, now_unix};
use tern_runtime::net::{ConnectionLimits, Listener, Timeouts, serve_sessions};
use tern_runtime::sessions::SmtpConnection;
use tern_smtp::{AuthPolicy, Envelope, Handler, Reply, Session};
use tern_store::Resolution;
use tokio::net::TcpListener;

use crate::delivery::DeliveryService;

/// One LMTP connection's policy.
pub struct LmtpHandler {
    delivery: Arc<DeliveryService>,
    hostname: Arc<str>,
    peer: SocketAddr,
}

impl Handler for LmtpHandler {
    async fn authenticate(&mut self, _: &str, _: &str, _: &str) -> Result<(), Reply> {
        Err(Reply::new(
            503,
            (5, 5, 1),
            "authentication is not available on this port",
        ))
    }

    async fn mail_from(&mut self, _envelope: &Envelope, _from: &str) -> Result<(), Reply> {
        Ok(())
    }

    async fn rcpt_to(&mut self, _envelope: &Envelope, to: &str) -> Result<(), Reply> {
        match self.delivery.store().resolve(to).await {
            Ok(Resolution::Local { .. }) => Ok(()),
            Ok(Resolution::NoSuchUser) => Err(Reply::new(
                550,
                (5, 1, 1),
                format!("<{to}>: no such user here"),
            )),
            Ok(Resolution::NotLocalDomain) => Err(Reply::new(
                550,
                (5, 1, 2),
                format!("<{to}>: not a local domain"),
            )),
            Err(e) if e.is_temporary() => {
                tracing::warn!(error = %e, "lmtp recipient check failed");
                Err(Reply::temporary_failure())
            }
            Err(_) => Err(Reply::new(
                501,
                (5, 1, 3),
                format!("<{to}>: bad recipient address syntax"),
            )),
        }
    }

    /// Not used in LMTP mode (the session calls `data_per_recipient`); answers like the first
    /// recipient would.
    async fn data(&mut self, envelope: &Envelope, message: Vec<u8>) -> Result<Reply, Reply> {
        let replies = self.deliver(envelope, message).await;
        replies
            .into_iter()
            .next()
            .ok_or_else(Reply::temporary_failure)
    }

    async fn data_per_recipient(&mut self, envelope: &Envelope, message: Vec<u8>) -> Vec<Reply> {
        self.deliver(envelope, message).await
    }
}

impl LmtpHandler {
    async fn deliver(&self, envelope: &Envelope, message: Vec<u8>) -> Vec<Reply> {
        let received = Received {
            helo: &envelope.helo,
            client_ip: Some(self.peer.ip()),
            by_host: &self.hostname,
            with: "LMTP",
            authenticated_as: None,
            unix_secs: now_unix(),
        }
        .header();
        let mut content = Vec::with_capacity(received.len() + message.len());
        content.extend_from_slice(received.as_bytes());
        content.extend_from_slice(&message);
        let transaction = random_hex();
        let request = DeliverRequest {
            return_path: envelope.mail_from.clone(),
            recipients: envelope
                .rcpt_to
                .iter()
                .enumerate()
                .map(|(i, address)| DeliverRecipient {
                    address: address.clone(),
                    delivery_key: format!("lmtp:{transaction}:{i}"),
                })
                .collect(),
            content,
            queue_id: format!("lmtp:{transaction}"),
        };
        let mut responses = self
            .delivery
            .deliver_messages(std::slice::from_ref(&request))
            .await;
        let outcomes = responses.pop().map(|r| r.outcomes).unwrap_or_default();
        outcomes.iter().map(outcome_reply).collect()
    }
}

/// 128 random bits in hex: unique per transaction.
fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SMTP reply carried in a delivery outcome ("452 4.2.2 text"), or a generic one for the
/// outcome's status when the text does not start with a code and an enhanced status.
fn outcome_reply(outcome: &RecipientOutcome) -> Reply {
    let mut parts = outcome.reply.splitn(3, ' ');
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let status = parts.next().and_then(|s| {
        let mut n = s.split('.');
        Some((
            n.next()?.parse::<u8>().ok()?,
            n.next()?.parse::<u16>().ok()?,
            n.next()?.parse::<u16>().ok()?,
        ))
    });
    let text = parts.next().unwrap_or_default();
    if let (Some(code), Some(status)) = (code, status)
        && (200..600).contains(&code)
    {
        return Reply::new(code, status, text);
    }
    match OutcomeStatus::try_from(outcome.status) {
        Ok(OutcomeStatus::Delivered) => Reply::new(250, (2, 0, 0), "delivered"),
        Ok(OutcomeStatus::PermanentFailure) => Reply::new(550, (5, 0, 0), "delivery failed"),
        _ => Reply::temporary_failure(),
    }
}

/// Serves LMTP on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    hostname: String,
    limits: SmtpLimits,
    delivery: Arc<DeliveryService>,
    shutdown: Shutdown,
) {
    let timeouts = Timeouts {
        idle: Duration::from_secs(limits.idle_timeout_secs),
        handshake: Duration::from_secs(30),
    };
    let listener = Listener {
        name: "lmtp",
        listener,
        limits: ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip),
        implicit_tls: None,
        busy_reply: b"421 4.7.0 too many connections, try again later\r\n".to_vec(),
    };
    let hostname: Arc<str> = hostname.into();
    serve_sessions(
        listener,
        shutdown,
        None,
        timeouts,
        move |tls_active, peer| {
            let config = tern_smtp::Config {
                hostname: hostname.to_string(),
                max_message_size: limits.max_message_size,
                max_recipients: limits.max_recipients,
                max_errors: limits.max_errors,
                tls_available: false,
                auth: AuthPolicy::Disabled,
                auth_requires_tls: true,
            };
            let handler = LmtpHandler {
                delivery: delivery.clone(),
                hostname: hostname.clone(),
                peer,
            };
            let session = SmtpConnection::new(
                Session::lmtp(config, tls_active),
                handler,
                |_: &mut LmtpHandler| {},
            );
            (
                session,
                tracing::info_span!("lmtp.session", client.address = %peer),
            )
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: OutcomeStatus, reply: &str) -> RecipientOutcome {
        RecipientOutcome {
            address: "a@b.test".into(),
            status: status as i32,
            reply: reply.into(),
        }
    }

    #[test]
    fn outcome_replies_keep_their_codes() {
        let r = outcome_reply(&outcome(
            OutcomeStatus::TemporaryFailure,
            "452 4.2.2 a@b.test: mailbox full, try again later",
        ));
        assert_eq!(
            (r.code, r.status, r.text.as_str()),
            (
                452,
                Some((4, 2, 2)),
                "a@b.test: mailbox full, try again later"
            )
        );
        let r = outcome_reply(&outcome(OutcomeStatus::Delivered, "ok"));
        assert_eq!((r.code, r.status), (250, Some((2, 0, 0))));
        let r = outcome_reply(&outcome(OutcomeStatus::PermanentFailure, "999 9.9.9 x"));
        assert_eq!(r.code, 550);
        let r = outcome_reply(&outcome(OutcomeStatus::Unspecified, ""));
        assert_eq!(r.code, 451);
    }

    #[test]
    fn transaction_keys_are_fresh() {
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 32);
    }
}
