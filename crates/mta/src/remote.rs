//! Delivery to other domains: routing (DNS MX, or a configured smarthost), a small pool of
//! reusable SMTP connections, and per-destination concurrency limits.
//!
//! One SMTP transaction carries every recipient of a message for one domain; hosts are tried in
//! MX order (each address of each host) until one gives an answer for the recipients. This file
//! decides where and how to connect; the SMTP conversation is `outbound`, the policy of what an
//! answer means for the queue is `runner`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::outbound::{ClientSettings, Connection, TlsPolicy};
use crate::route::{Resolver, Route, RouteError};

/// How to use TLS towards a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// RFC 7435: use STARTTLS when offered, without verifying the certificate; plaintext if the
    /// handshake fails.
    #[default]
    Opportunistic,
    /// STARTTLS with a verified certificate, or no delivery (the attempt is deferred).
    Required,
    /// Never STARTTLS.
    Disabled,
}

impl TlsMode {
    fn policy(self) -> TlsPolicy {
        match self {
            TlsMode::Opportunistic => TlsPolicy::Opportunistic,
            TlsMode::Required => TlsPolicy::Required,
            TlsMode::Disabled => TlsPolicy::Disabled,
        }
    }
}

/// A relay host that takes all (or one domain's) outbound mail instead of MX routing.
#[derive(Debug, Clone, Deserialize)]
pub struct Smarthost {
    pub host: String,
    #[serde(default = "default_smarthost_port")]
    pub port: u16,
    #[serde(default = "required")]
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<String>,
}

fn default_smarthost_port() -> u16 {
    587
}
fn required() -> TlsMode {
    TlsMode::Required
}

/// Outbound delivery settings (`[outbound]` in the MTA's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OutboundConfig {
    /// Port of remote MX hosts (25; tests use another).
    pub port: u16,
    /// TLS towards MX hosts by default.
    pub tls: TlsMode,
    /// Domains whose MX hosts must offer verified TLS.
    pub require_tls_domains: Vec<String>,
    /// Extra trust anchors (PEM) for verified TLS, besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// Ask this DNS server instead of the system's (tests, split-horizon setups).
    pub nameserver: Option<SocketAddr>,
    /// Send everything through this relay instead of MX routing.
    pub smarthost: Option<Smarthost>,
    /// Per-domain relays, overriding `smarthost` and MX routing for those domains.
    pub domain_smarthosts: HashMap<String, Smarthost>,
    /// Concurrent connections to one destination domain.
    pub max_per_destination: usize,
    /// Addresses tried for one attempt before deferring (like Postfix's smtp_mx_address_limit,
    /// but high enough that every MX host of an ordinary domain gets its turn).
    pub max_addresses: usize,
    /// Idle connections are kept this long for reuse.
    pub idle_reuse_secs: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            port: 25,
            tls: TlsMode::Opportunistic,
            require_tls_domains: Vec::new(),
            ca_file: None,
            nameserver: None,
            smarthost: None,
            domain_smarthosts: HashMap::new(),
            max_per_destination: 10,
            max_addresses: 20,
            idle_reuse_secs: 30,
        }
    }
}

/// Where to connect for one domain, in order, and how.
pub struct Plan {
    pub targets: Vec<(SocketAddr, String)>,
    pub tls: TlsMode,
    pub auth: Option<(String, String)>,
}

/// Why no plan could be made.
pub enum NoRoute {
    /// Try again later (DNS trouble).
    Temporary(String),
    /// Never deliverable (no such domain, null MX): an SMTP-style reply for the bounce.
    Permanent(String),
}

type PoolKey = (SocketAddr, TlsMode);

pub struct Remote {
    cfg: OutboundConfig,
    resolver: Resolver,
    settings: ClientSettings,
    pool: Mutex<HashMap<PoolKey, Vec<(Connection, Instant)>>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Remote {
    pub fn new(cfg: OutboundConfig, helo: String) -> anyhow::Result<Remote> {
        let resolver = match cfg.nameserver {
            Some(addr) => Resolver::with_nameserver(addr),
            None => Resolver::system()?,
        };
        let settings = crate::outbound::client_settings(helo, cfg.ca_file.as_deref())?;
        Ok(Remote {
            cfg,
            resolver,
            settings,
            pool: Mutex::default(),
            limits: Mutex::default(),
        })
    }

    /// Waits for a connection slot towards `domain`.
    pub async fn permit(&self, domain: &str) -> OwnedSemaphorePermit {
        let sem = {
            let mut map = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(domain.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.cfg.max_per_destination.max(1))))
                .clone()
        };
        // The semaphore is never closed, so acquiring cannot fail.
        sem.acquire_owned()
            .await
            .expect("destination semaphore is never closed")
    }

    /// Where mail for `domain` goes.
    pub async fn plan(&self, domain: &str) -> Result<Plan, NoRoute> {
        let domain = domain.to_ascii_lowercase();
        let relay = self
            .cfg
            .domain_smarthosts
            .get(&domain)
            .or(self.cfg.smarthost.as_ref());
        if let Some(relay) = relay {
            return self.relay_plan(relay).await;
        }
        let tls = if self
            .cfg
            .require_tls_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            TlsMode::Required
        } else {
            self.cfg.tls
        };
        let route = self.resolver.route(&domain).await.map_err(|e| match e {
            RouteError::Temporary(m) => {
                NoRoute::Temporary(format!("451 4.4.3 cannot route to {domain}: {m}"))
            }
            RouteError::Permanent(m) => {
                NoRoute::Permanent(format!("550 5.1.2 cannot route to {domain}: {m}"))
            }
        })?;
        let hosts = match route {
            // RFC 7505 §4.2: a null MX means the domain accepts no mail.
            Route::NullMx => {
                return Err(NoRoute::Permanent(format!(
                    "556 5.1.10 {domain} does not accept mail (null MX)"
                )));
            }
            Route::Hosts(h) => h,
        };
        let mut targets = Vec::new();
        for host in hosts {
            for ip in host.addrs {
                targets.push((SocketAddr::new(ip, self.cfg.port), host.name.clone()));
            }
        }
        targets.truncate(self.cfg.max_addresses.max(1));
        if targets.is_empty() {
            return Err(NoRoute::Temporary(format!(
                "451 4.4.4 no address found for the mail hosts of {domain}"
            )));
        }
        Ok(Plan {
            targets,
            tls,
            auth: None,
        })
    }

    async fn relay_plan(&self, relay: &Smarthost) -> Result<Plan, NoRoute> {
        let addrs: Vec<SocketAddr> = match relay.host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, relay.port)],
            Err(_) => tokio::net::lookup_host((relay.host.as_str(), relay.port))
                .await
                .map_err(|e| {
                    NoRoute::Temporary(format!(
                        "451 4.4.3 cannot resolve smarthost {}: {e}",
                        relay.host
                    ))
                })?
                .collect(),
        };
        let auth = match (&relay.username, &relay.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        Ok(Plan {
            targets: addrs.into_iter().map(|a| (a, relay.host.clone())).collect(),
            tls: relay.tls,
            auth,
        })
    }

    /// A pooled connection to `addr` if one is idle and fresh, else a new one.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        plan: &Plan,
    ) -> Result<Connection, crate::outbound::TransferError> {
        let key = (addr, plan.tls);
        let max_idle = Duration::from_secs(self.cfg.idle_reuse_secs);
        loop {
            let pooled = {
                let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                pool.get_mut(&key).and_then(Vec::pop)
            };
            match pooled {
                Some((conn, since)) if since.elapsed() < max_idle && conn.is_reusable() => {
                    return Ok(conn);
                }
                Some((conn, _)) => conn.quit().await,
                None => break,
            }
        }
        let mut settings = self.settings.clone();
        settings.tls = plan.tls.policy();
        settings.auth = plan.auth.clone();
        Connection::connect(addr, server_name, &settings).await
    }

    /// Returns a connection for reuse by the next message to the same host.
    pub async fn release(&self, addr: SocketAddr, tls: TlsMode, conn: Connection) {
        if !conn.is_reusable() {
            return conn.quit().await;
        }
        let surplus = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry((addr, tls)).or_default();
            if list.len() < self.cfg.max_per_destination.max(1) {
                list.push((conn, Instant::now()));
                None
            } else {
                Some(conn)
            }
        };
        if let Some(conn) = surplus {
            conn.quit().await;
        }
    }

    /// Closes every pooled connection (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Connection> = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.drain()
                .flat_map(|(_, v)| v.into_iter().map(|(c, _)| c))
                .collect()
        };
        for c in all {
            c.quit().await;
        }
    }
}
