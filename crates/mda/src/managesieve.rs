//! The ManageSieve listener (RFC 5804, port 4190): users edit their own Sieve scripts with
//! standard clients. The protocol is `tern_managesieve::Session`; this module is its backend
//! over the store (the same scripts as Admin `PutSieveScript` and `tern sieve`), with scripts
//! checked by `sieve::check` before they are stored.
//!
//! Logins go through `Store::authenticate` and the MSA's failed-login throttle
//! (`tern_msa::throttle`: a growing delay, then a block per client address and per account,
//! counted per process), logged in the same `auth failed` / `auth blocked` shape so one
//! fail2ban rule covers SMTP and ManageSieve. AUTHENTICATE is refused before STARTTLS unless
//! the listener is configured otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_managesieve::{AuthOutcome, Backend, BackendError, Quota, ScriptEntry, Session};
use tern_msa::throttle::Throttle;
use tern_runtime::Shutdown;
use tern_runtime::config::ManageSieveLimits;
use tern_runtime::net::{ConnectionLimits, Listener, Timeouts, serve_sessions};
use tern_runtime::sessions::ManageSieveConnection;
use tern_store::Store;
use tern_store::sieve::{MAX_SCRIPT_BYTES, MAX_SCRIPTS_PER_ACCOUNT};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// One connection's view of the store: who logged in, from where.
pub struct SieveBackend {
    store: Store,
    throttle: Arc<Throttle>,
    peer: SocketAddr,
    account: Option<String>,
}

impl SieveBackend {
    fn address(&self) -> Result<&str, BackendError> {
        // The session calls script methods only after a successful login.
        self.account
            .as_deref()
            .ok_or_else(|| BackendError::Refused("not authenticated".into()))
    }
}

/// Store errors as ManageSieve answers; `conflict` is what a `Conflict` means for this call.
fn store_error(e: tern_store::Error, conflict: BackendError) -> BackendError {
    match e {
        tern_store::Error::NotFound(_) => BackendError::NonExistent,
        tern_store::Error::Conflict(_) => conflict,
        tern_store::Error::Invalid(why) => BackendError::Refused(why),
        e => {
            tracing::warn!(error = %e, "managesieve: store trouble");
            BackendError::TryLater(e.to_string())
        }
    }
}

fn too_many_scripts() -> BackendError {
    BackendError::Quota(
        Quota::MaxScripts,
        format!("At most {MAX_SCRIPTS_PER_ACCOUNT} scripts per account"),
    )
}

impl Backend for SieveBackend {
    async fn authenticate(&mut self, authzid: &str, user: &str, password: &str) -> AuthOutcome {
        let ip = Some(self.peer.ip());
        if self.throttle.blocked(ip, user).is_some() {
            return AuthOutcome::Blocked;
        }
        // No proxy authorization: an authzid must name the user logging in.
        let authorized = authzid.is_empty() || authzid.eq_ignore_ascii_case(user);
        let checked = if authorized {
            self.store.authenticate(user, password).await
        } else {
            Ok(None)
        };
        match checked {
            Ok(Some(account)) => {
                self.throttle.success(ip, user);
                tracing::info!(user = %account.address, "managesieve login");
                self.account = Some(account.address);
                AuthOutcome::Success
            }
            Ok(None) => {
                let client = self.peer.ip().to_string();
                tracing::warn!(client.address = %client, user = %user, "auth failed");
                let failure = self.throttle.failure(ip, user);
                for key in &failure.blocked {
                    tracing::warn!(client.address = %client, user = %user, blocked = key.kind(), "auth blocked");
                }
                tokio::time::sleep(failure.delay).await;
                AuthOutcome::Failed
            }
            Err(e) => {
                tracing::warn!(error = %e, "managesieve: checking credentials failed");
                AuthOutcome::TryLater
            }
        }
    }

    fn unauthenticate(&mut self) {
        self.account = None;
    }

    fn owner(&self) -> Option<String> {
        self.account.clone()
    }

    fn check(&mut self, source: &str) -> Result<(), String> {
        crate::sieve::check(source).map(|_| ())
    }

    async fn list(&mut self) -> Result<Vec<ScriptEntry>, BackendError> {
        let address = self.address()?.to_string();
        let scripts = self
            .store
            .list_sieve_scripts(&address)
            .await
            .map_err(|e| store_error(e, BackendError::TryLater("conflict".into())))?;
        Ok(scripts
            .into_iter()
            .map(|s| ScriptEntry {
                name: s.name,
                active: s.active,
            })
            .collect())
    }

    async fn get(&mut self, name: &str) -> Result<String, BackendError> {
        let address = self.address()?.to_string();
        self.store
            .sieve_script(&address, name)
            .await
            .map(|s| s.source)
            .map_err(|e| store_error(e, BackendError::NonExistent))
    }

    async fn put(&mut self, name: &str, source: &str) -> Result<(), BackendError> {
        let address = self.address()?.to_string();
        let stored = self
            .store
            .put_sieve_script(&address, name, source, false)
            .await
            .map_err(|e| store_error(e, too_many_scripts()))?;
        tracing::info!(user = %address, script = %name, active = stored.active, "sieve script stored");
        Ok(())
    }

    async fn set_active(&mut self, name: Option<&str>) -> Result<(), BackendError> {
        let address = self.address()?.to_string();
        self.store
            .activate_sieve_script(&address, name)
            .await
            .map_err(|e| store_error(e, BackendError::NonExistent))?;
        tracing::info!(user = %address, script = name.unwrap_or(""), "sieve script activated");
        Ok(())
    }

    async fn delete(&mut self, name: &str) -> Result<(), BackendError> {
        let address = self.address()?.to_string();
        self.store
            .delete_sieve_script(&address, name)
            .await
            .map_err(|e| store_error(e, BackendError::Active))
    }

    async fn rename(&mut self, old: &str, new: &str) -> Result<(), BackendError> {
        let address = self.address()?.to_string();
        self.store
            .rename_sieve_script(&address, old, new)
            .await
            .map_err(|e| store_error(e, BackendError::AlreadyExists))
    }

    async fn have_space(&mut self, name: &str, size: u64) -> Result<(), BackendError> {
        if size > MAX_SCRIPT_BYTES as u64 {
            return Err(BackendError::Quota(
                Quota::MaxSize,
                format!("Scripts may have at most {MAX_SCRIPT_BYTES} octets"),
            ));
        }
        tern_store::sieve::check_script_name(name)
            .map_err(|e| store_error(e, BackendError::TryLater("conflict".into())))?;
        let scripts = self.list().await?;
        if scripts.len() >= MAX_SCRIPTS_PER_ACCOUNT && !scripts.iter().any(|s| s.name == name) {
            return Err(too_many_scripts());
        }
        Ok(())
    }
}

/// Serves ManageSieve on `listener` until shutdown. STARTTLS is offered when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ManageSieveLimits,
    throttle: Arc<Throttle>,
    store: Store,
    shutdown: Shutdown,
) {
    let timeouts = Timeouts {
        idle: Duration::from_secs(limits.idle_timeout_secs),
        handshake: Duration::from_secs(30),
    };
    let listener = Listener {
        name: "managesieve",
        listener,
        limits: ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip),
        implicit_tls: None,
        busy_reply: b"BYE (TRYLATER) \"Too many connections, try again later\"\r\n".to_vec(),
    };
    let config = tern_managesieve::Config {
        implementation: format!("Tern {}", env!("CARGO_PKG_VERSION")),
        sieve_extensions: crate::sieve::extensions(),
        max_redirects: Some(crate::sieve::MAX_REDIRECTS),
        tls_available: tls.is_some(),
        login_requires_tls: limits.login_requires_tls,
        max_failed_logins: limits.max_failed_logins,
        max_errors: limits.max_errors,
        max_line: limits.max_line,
        max_script_size: MAX_SCRIPT_BYTES,
    };
    serve_sessions(listener, shutdown, tls, timeouts, move |tls_active, peer| {
        let backend = SieveBackend {
            store: store.clone(),
            throttle: throttle.clone(),
            peer,
            account: None,
        };
        let session = ManageSieveConnection::new(Session::new(config.clone(), backend, tls_active));
        (
            session,
            tracing::info_span!("managesieve.session", client.address = %peer, tls = tls_active),
        )
    })
    .await;
}
