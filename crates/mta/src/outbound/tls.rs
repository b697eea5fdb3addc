//! TLS connectors for outbound SMTP: one that verifies the server's certificate (for
//! `TlsPolicy::Required`, e.g. a smarthost) and one for opportunistic STARTTLS (RFC 7435).
//!
//! Opportunistic security encrypts against passive eavesdroppers without authenticating the
//! server, because most MX hosts present certificates that do not match their names and
//! refusing them would only push the mail back to plaintext. The opportunistic verifier
//! therefore accepts any certificate, but it still checks the handshake signatures with the
//! ring provider, so the session key really belongs to whoever holds the certificate's key.
//! Not here: DANE (RFC 7672) and MTA-STS (RFC 8461), which would decide when to verify.

use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme, version,
};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A connector that verifies certificates against `roots` and the server name.
pub fn verifying_connector(roots: RootCertStore) -> Result<TlsConnector, Error> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A connector for opportunistic STARTTLS: any certificate is accepted (RFC 7435 §1.3), the
/// handshake signatures are still verified.
pub fn opportunistic_connector() -> Result<TlsConnector, Error> {
    let provider = provider();
    let verifier = AcceptAnyCertificate {
        provider: Arc::clone(&provider),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts every certificate chain but verifies the handshake signatures made with its key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
