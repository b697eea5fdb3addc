//! Message submission (RFC 6409) with lettre: STARTTLS (RFC 3207) or implicit TLS (RFC 8314),
//! AUTH PLAIN or LOGIN (RFC 4954), then the bytes from [`build_message`] with an explicit
//! envelope so that Bcc recipients get the message without appearing in it.
//!
//! Deliberately not done here: building the message (see `compose.rs`), DSN parameters,
//! pipelining choices (lettre's), and retrying: a failure is reported to the person at once.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::compose::parse_mailbox;
use super::tls::{certificate_hint, read_ca_file};
use super::{Compose, Security, Server, build_message};

/// How long one SMTP command may take before we give up; RFC 5321 §4.5.3.2 suggests minutes
/// for a server, but a person at a terminal wants an answer sooner.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The SMTP envelope: the From address as reverse-path, every To, Cc and Bcc as forward-paths.
pub(super) fn envelope(mail: &Compose) -> Result<Envelope> {
    let from = parse_mailbox(&mail.from).context("sender (From)")?;
    let from: Address = from
        .email
        .parse()
        .with_context(|| format!("sender address {:?} is not valid", from.email))?;
    let mut recipients = Vec::new();
    for entry in mail.to.iter().chain(&mail.cc).chain(&mail.bcc) {
        let mailbox = parse_mailbox(entry)?;
        let address: Address = mailbox
            .email
            .parse()
            .with_context(|| format!("recipient address {:?} is not valid", mailbox.email))?;
        // A person may list the same address twice (To and Cc); one RCPT TO is enough.
        if !recipients.contains(&address) {
            recipients.push(address);
        }
    }
    Envelope::new(Some(from), recipients)
        .map_err(|e| anyhow!("{e}"))
        .context("build the SMTP envelope: give at least one recipient")
}

fn tls_parameters(server: &Server) -> Result<TlsParameters> {
    let mut builder = TlsParameters::builder(server.host.clone());
    if let Some(path) = &server.ca_file {
        // read_ca_file rejects a file without certificates, which lettre would accept silently.
        let (pem, _) = read_ca_file(path)?;
        let certificate = Certificate::from_pem(&pem)
            .with_context(|| format!("parse CA file {} as PEM", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build_rustls().context("set up TLS for SMTP")
}

/// Turns lettre's error into a sentence that says what failed and what to try.
fn explain(error: lettre::transport::smtp::Error, server: &Server) -> anyhow::Error {
    let at = format!("{}:{}", server.host, server.port);
    if let Some(hint) = certificate_hint(&error.to_string(), &server.host) {
        return anyhow::Error::new(error).context(format!("TLS with {at} failed: {hint}"));
    }
    let code = error.status().map(u16::from);
    let hint = match code {
        // RFC 4954 §6: 535 is "authentication credentials invalid".
        Some(535) => format!(
            "authentication failed for {}: check the password (--password or TERN_PASSWORD)",
            server.user
        ),
        // RFC 4954 §6: 530 means the server wants authentication (or TLS) first.
        Some(530) => format!(
            "the server at {at} requires authentication: give --user and --password (or TERN_USER and TERN_PASSWORD)"
        ),
        Some(550 | 551 | 553) => {
            format!("the server at {at} rejected the sender or a recipient: check the addresses")
        }
        Some(552) | Some(554) => format!("the server at {at} refused the message"),
        Some(c) if (400..500).contains(&c) => {
            format!(
                "the server at {at} is temporarily unable to accept the message: try again later"
            )
        }
        Some(_) => format!("the server at {at} refused the message"),
        None if error.is_tls() => format!(
            "TLS with {at} failed: check --tls, and pass the server's certificate with \
             --ca if it is self-signed"
        ),
        None if error.is_response() => format!(
            "the server at {at} did not answer like an SMTP server: check --tls \
             (implicit-TLS ports such as 465 need tls) and the port"
        ),
        None if error.is_timeout() => format!("{at} did not answer in time"),
        None if error.is_client() => format!(
            "could not talk to {at}: check --tls and the port (587 for STARTTLS, \
             465 for TLS)"
        ),
        None => format!("could not send through {at}: is the server running and the port right?"),
    };
    anyhow::Error::new(error).context(hint)
}

/// Builds the message and submits it; returns the text of the server's final reply.
pub async fn send(server: &Server, mail: &Compose) -> Result<String> {
    let raw = build_message(mail)?;
    let envelope = envelope(mail)?;
    let tls = match server.security {
        Security::Starttls => Tls::Required(tls_parameters(server)?),
        Security::Tls => Tls::Wrapper(tls_parameters(server)?),
        Security::Plain => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.clone())
        .port(server.port)
        .tls(tls)
        .timeout(Some(COMMAND_TIMEOUT));
    // An empty user means "do not authenticate", e.g. a relay that trusts the loopback address.
    if !server.user.is_empty() {
        builder = builder
            .credentials(Credentials::new(
                server.user.clone(),
                server.password.clone(),
            ))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    let transport = builder.build();
    // lettre reports nothing until the server's final reply, so a large message gets a
    // running clock on a terminal rather than a silent wait.
    let label = format!("sending {:.1} MB", raw.len() as f64 / 1_000_000.0);
    let response = super::while_running(
        &label,
        raw.len() > 1_000_000,
        transport.send_raw(&envelope, &raw),
    )
    .await
    .map_err(|e| explain(e, server))?;
    Ok(response.message().collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_carries_bcc_and_deduplicates() {
        let mail = Compose {
            from: "Alice <alice@example.test>".into(),
            to: vec!["bob@example.test".into()],
            cc: vec!["Bob <bob@example.test>".into(), "carol@example.test".into()],
            bcc: vec!["dave@example.test".into()],
            ..Compose::default()
        };
        let envelope = envelope(&mail).unwrap();
        assert_eq!(
            envelope.from().map(ToString::to_string).as_deref(),
            Some("alice@example.test")
        );
        let to: Vec<String> = envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(
            to,
            [
                "bob@example.test",
                "carol@example.test",
                "dave@example.test"
            ]
        );
    }

    #[test]
    fn envelope_rejects_bad_addresses() {
        let mail = Compose {
            from: "alice@example.test".into(),
            to: vec!["bob@".into()],
            ..Compose::default()
        };
        assert!(envelope(&mail).is_err());
    }

    #[tokio::test]
    async fn refused_connection_says_where() {
        // Bind and drop a listener to get a port on which nothing listens.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let server = Server {
            host: "127.0.0.1".into(),
            port,
            security: Security::Plain,
            user: String::new(),
            password: String::new(),
            ca_file: None,
        };
        let mail = Compose {
            from: "alice@example.test".into(),
            to: vec!["bob@example.test".into()],
            ..Compose::default()
        };
        let err = format!("{:#}", send(&server, &mail).await.unwrap_err());
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
