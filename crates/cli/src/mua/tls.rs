//! Trust anchors for the MUA's TLS connections: the Mozilla root set from webpki-roots plus the
//! optional extra CA file a person passes (e.g. the self-signed certificate of a local
//! `tern up`).
//!
//! webpki-roots is the root set lettre already uses for SMTP in this build (its `webpki-roots`
//! feature is on in the workspace), so IMAP trusts exactly what SMTP trusts. The operating
//! system's store is deliberately not read: a private CA is added with the CA file instead.
//! Certificate checks are never switched off.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Reads every certificate in a PEM file; a file without one is an error, not an empty set.
pub(super) fn read_ca_file(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>)> {
    let pem = std::fs::read(path)
        .with_context(|| format!("read CA file {}: check the path", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("parse CA file {} as PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok((pem, certs))
}

/// Explains a failed certificate check, found by its rustls error name in `error_text` (the
/// error types differ between lettre and tokio-rustls, the names do not). `None` when the
/// failure was not about the certificate.
pub(super) fn certificate_hint(error_text: &str, host: &str) -> Option<String> {
    let hint = if error_text.contains("CaUsedAsEndEntity") {
        "the server presents a CA certificate (basicConstraints CA:TRUE) as its own \
         certificate, which rustls refuses: give the server an end-entity certificate"
            .to_string()
    } else if error_text.contains("UnknownIssuer") || error_text.contains("BadSignature") {
        "the server's certificate is not signed by a trusted CA: if it is self-signed \
         (e.g. a local tern up), pass it with --ca"
            .to_string()
    } else if error_text.contains("NotValidForName") {
        format!(
            "the server's certificate is not valid for {host:?}: connect with a host name \
             the certificate names"
        )
    } else if error_text.contains("Expired") {
        "the server's certificate has expired".to_string()
    } else if error_text.contains("NotValidYet") {
        "the server's certificate is not valid yet: check this machine's clock".to_string()
    } else if error_text.contains("invalid peer certificate") {
        "the server's certificate was rejected".to_string()
    } else {
        return None;
    };
    Some(hint)
}

/// A rustls client configuration on the ring provider trusting webpki-roots and `ca_file`.
pub(super) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let (_, certs) = read_ca_file(path)?;
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!(
                    "CA file {} holds a certificate rustls cannot use as a trust anchor",
                    path.display()
                )
            })?;
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("set up TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A syntactically valid self-signed certificate is not needed to test the file handling:
    // PEM parsing only checks the armour and the base64, and RootCertStore::add is where
    // the DER is parsed.
    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("tern-mua-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"no certificate here\n").unwrap();
        let err = format!("{:#}", client_config(Some(&empty)).unwrap_err());
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );

        let missing = dir.join("missing.pem");
        let err = format!("{:#}", client_config(Some(&missing)).unwrap_err());
        assert!(err.contains("missing.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificate_hints_name_the_problem() {
        let unknown = "Connection error: invalid peer certificate: UnknownIssuer";
        assert!(certificate_hint(unknown, "h").unwrap().contains("--ca"));
        let ca = "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        assert!(certificate_hint(ca, "h").unwrap().contains("CA:TRUE"));
        let name = "invalid peer certificate: NotValidForNameContext { .. }";
        assert!(
            certificate_hint(name, "mail.example.test")
                .unwrap()
                .contains("mail.example.test")
        );
        assert_eq!(
            certificate_hint("Connection refused (os error 111)", "h"),
            None
        );
    }

    #[test]
    fn builds_without_a_ca_file() {
        assert!(client_config(None).is_ok());
    }
}
