//! TLS for every listener: rustls with the ring provider, TLS 1.2 and 1.3 only, certificates from
//! PEM files, and a self-signed certificate generated for `tern up` and for tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Paths of a certificate chain and its private key, both PEM.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a self-signed certificate for `names` into `dir` unless one is already there, and
/// returns its paths. The key file is created readable by its owner only.
pub fn ensure_self_signed(dir: &Path, names: &[String]) -> anyhow::Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .context("generate self-signed certificate")?;
    write_private(&files.key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, generated.cert.pem())
        .with_context(|| format!("write {}", files.cert.display()))?;
    Ok(files)
}

/// Writes a file that only its owner may read (keys, tokens).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Builds the server side from PEM files.
pub fn acceptor(files: &CertFiles) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("read certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse certificate {}", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate found in {}", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("read private key {}", files.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client that trusts exactly the certificates in `ca_pem` (tests, and `tern` against a local
/// `tern up`).
pub fn connector_trusting(ca_pem: &Path) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("read {}", ca_pem.display()))?
    {
        roots
            .add(cert.context("parse CA certificate")?)
            .context("add CA certificate")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn self_signed_certificate_serves_a_handshake() {
        let dir = tempdir();
        let files = ensure_self_signed(&dir, &["localhost".into()]).unwrap();
        let again = ensure_self_signed(&dir, &["localhost".into()]).unwrap();
        assert_eq!(
            std::fs::read(&files.cert).unwrap(),
            std::fs::read(&again.cert).unwrap(),
            "kept, not regenerated"
        );
        let acceptor = acceptor(&files).unwrap();
        let connector = connector_trusting(&files.cert).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut tls, b"hi")
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::shutdown(&mut tls).await.unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf)
            .await
            .unwrap();
        assert_eq!(buf, b"hi");
        server.await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tern-tls-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
}
