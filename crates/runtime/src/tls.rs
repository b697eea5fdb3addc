//! TLS for every listener: rustls with the ring provider, TLS 1.2 and 1.3 only, certificates from
//! PEM files, and a self-signed certificate generated for `tern up` and for tests.
//!
//! Server certificates are reloaded without a restart: every acceptor made by [`acceptor`]
//! serves whatever [`ReloadingCert`] holds, and a background task re-reads the files every
//! [`RELOAD_INTERVAL`] and at once on SIGHUP. A new pair that cannot be read, parsed, or whose
//! key does not match the certificate is refused with a warning and the old certificate stays
//! in service, so a half-finished renewal (certificate written, key not yet) never breaks a
//! handshake. Connections already open keep the certificate they started with.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How often the certificate files are checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

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

/// Builds the server side from PEM files; the certificate is reloaded when the files change
/// (see the module comment). Fails when the files cannot be loaded now. Called inside a Tokio
/// runtime it starts the reloading task, which ends once every acceptor from this call is gone.
pub fn acceptor(files: &CertFiles) -> anyhow::Result<TlsAcceptor> {
    let cert = ReloadingCert::load(files)?;
    if tokio::runtime::Handle::try_current().is_ok() {
        cert.spawn_watcher(RELOAD_INTERVAL);
    }
    cert.acceptor()
}

/// A server certificate that follows its PEM files: rustls asks it for the certificate at each
/// handshake ([`ResolvesServerCert`]), and [`ReloadingCert::reload`] swaps in the files'
/// current contents when they form a valid pair.
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// A fingerprint of the file contents in service, so an unchanged pair is not parsed again.
    loaded: u64,
    /// Why the files were last refused, so that the reloading task warns once per problem
    /// rather than every tick.
    refused: Option<String>,
}

impl std::fmt::Debug for ReloadingCert {
    /// Names the files, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// What [`ReloadingCert::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what is already in service.
    Unchanged,
    /// A new certificate is in service.
    Replaced,
}

fn fingerprint(cert: &[u8], key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    cert.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

/// Parses a certificate chain and its key, checking that the key belongs to the certificate.
fn certified_key(files: &CertFiles, cert: &[u8], key: &[u8]) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse certificate {}", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate found in {}", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .with_context(|| format!("read private key {}", files.key.display()))?;
    CertifiedKey::from_der(certs, key, &provider()).with_context(|| {
        format!(
            "certificate {} and key {} do not match",
            files.cert.display(),
            files.key.display()
        )
    })
}

fn read_pair(files: &CertFiles) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let cert = std::fs::read(&files.cert)
        .with_context(|| format!("read certificate {}", files.cert.display()))?;
    let key = std::fs::read(&files.key)
        .with_context(|| format!("read private key {}", files.key.display()))?;
    Ok((cert, key))
}

impl ReloadingCert {
    /// Loads the files; an error here is a configuration error.
    pub fn load(files: &CertFiles) -> anyhow::Result<Arc<ReloadingCert>> {
        let (cert, key) = read_pair(files)?;
        let current = certified_key(files, &cert, &key)?;
        Ok(Arc::new(ReloadingCert {
            files: files.clone(),
            current: RwLock::new(Arc::new(current)),
            seen: Mutex::new(Seen {
                loaded: fingerprint(&cert, &key),
                refused: None,
            }),
        }))
    }

    /// A TLS acceptor (TLS 1.2 and 1.3) serving this certificate, reloads included.
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-reads the files now. On an error the certificate in service stays, and the error
    /// says why the new files were refused. Blocking file I/O: small, but call it off the
    /// async workers in a server.
    pub fn reload(&self) -> anyhow::Result<Reload> {
        let (cert, key) = read_pair(&self.files)?;
        let print = fingerprint(&cert, &key);
        if print == self.lock_seen().loaded {
            return Ok(Reload::Unchanged);
        }
        let new = certified_key(&self.files, &cert, &key)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
        self.lock_seen().loaded = print;
        Ok(Reload::Replaced)
    }

    /// One check by the reloading task: reloads, and logs a replacement, or a refusal once per
    /// problem (every time when `asked`, i.e. on SIGHUP).
    fn check(&self, asked: bool) {
        let cert = self.files.cert.display();
        let outcome = self.reload();
        let mut seen = self.lock_seen();
        match outcome {
            Ok(Reload::Replaced) => {
                seen.refused = None;
                tracing::info!(%cert, "tls certificate reloaded");
            }
            Ok(Reload::Unchanged) => {
                seen.refused = None;
                if asked {
                    tracing::info!(%cert, "tls certificate unchanged");
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                if asked || seen.refused.as_ref() != Some(&error) {
                    tracing::warn!(%cert, %error, "tls certificate not reloaded, keeping the old one");
                }
                seen.refused = Some(error);
            }
        }
    }

    /// Starts the task that calls [`ReloadingCert::reload`] every `interval` and on SIGHUP.
    /// It holds only a weak reference and ends once the certificate is dropped.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<ReloadingCert> = Arc::downgrade(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                #[cfg(unix)]
                let asked = tokio::select! {
                    _ = ticks.tick() => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                #[cfg(not(unix))]
                let asked = {
                    ticks.tick().await;
                    false
                };
                let Some(cert) = weak.upgrade() else {
                    return;
                };
                // File reads and parsing stay off the async workers.
                if tokio::task::spawn_blocking(move || cert.check(asked))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Each update is two plain writes; a poisoned lock holds nothing inconsistent.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
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

    /// A fresh self-signed certificate for "localhost": (certificate PEM, key PEM, DER).
    fn generated() -> (String, String, Vec<u8>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (
            generated.cert.pem(),
            generated.signing_key.serialize_pem(),
            generated.cert.der().to_vec(),
        )
    }

    /// Makes one handshake and returns the end-entity certificate the server presented.
    async fn served(acceptor: &TlsAcceptor, connector: &TlsConnector) -> Vec<u8> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            tokio::io::AsyncWriteExt::shutdown(&mut tls).await.unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        server.await.unwrap();
        presented
    }

    #[tokio::test]
    async fn certificate_is_replaced_by_reload_and_broken_files_keep_the_old_one() {
        let dir = tempdir();
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let (a_cert, a_key, a_der) = generated();
        let (b_cert, b_key, b_der) = generated();
        std::fs::write(dir.join("ca.pem"), format!("{a_cert}{b_cert}")).unwrap();
        let connector = connector_trusting(&dir.join("ca.pem")).unwrap();
        std::fs::write(&files.cert, &a_cert).unwrap();
        std::fs::write(&files.key, &a_key).unwrap();

        let cert = ReloadingCert::load(&files).unwrap();
        let acceptor = cert.acceptor().unwrap();
        assert_eq!(served(&acceptor, &connector).await, a_der);
        assert_eq!(cert.reload().unwrap(), Reload::Unchanged);

        std::fs::write(&files.cert, &b_cert).unwrap();
        std::fs::write(&files.key, &b_key).unwrap();
        assert_eq!(cert.reload().unwrap(), Reload::Replaced);
        assert_eq!(served(&acceptor, &connector).await, b_der);
        assert_eq!(cert.reload().unwrap(), Reload::Unchanged);

        // A certificate with someone else's key, garbage, a missing key: all refused, and B
        // stays in service.
        std::fs::write(&files.cert, &a_cert).unwrap();
        let error = cert.reload().unwrap_err();
        assert!(format!("{error:#}").contains("do not match"), "{error:#}");
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(cert.reload().is_err());
        std::fs::write(&files.cert, &b_cert).unwrap();
        std::fs::remove_file(&files.key).unwrap();
        assert!(cert.reload().is_err());
        assert_eq!(served(&acceptor, &connector).await, b_der);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_reloading_task_notices_new_files() {
        let dir = tempdir();
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let (a_cert, a_key, a_der) = generated();
        let (b_cert, b_key, b_der) = generated();
        std::fs::write(dir.join("ca.pem"), format!("{a_cert}{b_cert}")).unwrap();
        let connector = connector_trusting(&dir.join("ca.pem")).unwrap();
        std::fs::write(&files.cert, &a_cert).unwrap();
        std::fs::write(&files.key, &a_key).unwrap();
        let cert = ReloadingCert::load(&files).unwrap();
        cert.spawn_watcher(Duration::from_millis(20));
        let acceptor = cert.acceptor().unwrap();
        assert_eq!(served(&acceptor, &connector).await, a_der);
        std::fs::write(&files.key, &b_key).unwrap();
        std::fs::write(&files.cert, &b_cert).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while served(&acceptor, &connector).await != b_der {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
