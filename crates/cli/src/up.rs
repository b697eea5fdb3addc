//! `tern up`: every agent in one process, on SQLite by default, with a self-signed certificate
//! and an admin token in the data directory.
//!
//! The agents still talk to each other over gRPC on loopback, exactly as separate processes do,
//! so what a newcomer runs is the same system an operator deploys. The addresses actually bound
//! are written to `state.json` in the data directory, which is how `tern` finds a local system.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tern_runtime::Shutdown;
use tern_runtime::config::SmtpLimits;
use tern_runtime::tls::CertFiles;
use tern_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Ports of a local system. `Ports::DEFAULT` are the documented ones; `Ports::EPHEMERAL` asks the
/// kernel for free ports (tests).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub pop3: u16,
    pub pop3s: u16,
    /// LMTP into the MDA (RFC 2033), for other MTAs on this machine.
    pub lmtp: u16,
    /// ManageSieve (RFC 5804; 4190 in production), for editing Sieve scripts with a client.
    pub managesieve: u16,
    /// gRPC ports are `grpc_base` (MSA), +1 (MTA), +2 (MDA), +3 (MAA); 0 for ephemeral.
    pub grpc_base: u16,
    /// HTTP `/metrics`, `/healthz` and `/readyz` for all agents of the process.
    pub http: u16,
}

impl Ports {
    pub const DEFAULT: Ports = Ports {
        smtp: 2525,
        submission: 2587,
        submissions: 2465,
        imap: 2143,
        imaps: 2993,
        pop3: 2110,
        pop3s: 2995,
        lmtp: 2024,
        managesieve: 24190,
        grpc_base: 50051,
        http: 2980,
    };
    pub const EPHEMERAL: Ports = Ports {
        smtp: 0,
        submission: 0,
        submissions: 0,
        imap: 0,
        imaps: 0,
        pop3: 0,
        pop3s: 0,
        lmtp: 0,
        managesieve: 0,
        grpc_base: 0,
        http: 0,
    };

    fn grpc(&self, offset: u16) -> u16 {
        if self.grpc_base == 0 {
            0
        } else {
            self.grpc_base + offset
        }
    }
}

/// What `tern up` is asked to run.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    /// Defaults to `sqlite://<data_dir>/tern.db`.
    pub database_url: Option<String>,
    pub bind_ip: IpAddr,
    pub ports: Ports,
    pub hostname: String,
    /// Queue runner settings; the poll interval is short by default so a local system feels
    /// instant.
    pub queue: tern_mta::RunnerConfig,
    /// Outbound delivery (DNS, smarthost, TLS) for mail to other domains.
    pub outbound: tern_mta::OutboundConfig,
    /// Non-local domains the MTA accepts on its SMTP port for onward delivery.
    pub relay_domains: Vec<String>,
    /// Submission policy: failed-login throttling and per-account limits.
    pub msa: tern_msa::Policy,
    /// Delivery policy: sub-addressing (also used by the MTA's RCPT check), over-quota replies.
    pub delivery: tern_mda::DeliverySettings,
}

impl UpOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database_url: None,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports::DEFAULT,
            hostname: "localhost".into(),
            queue: tern_mta::RunnerConfig {
                poll_interval_ms: 200,
                ..Default::default()
            },
            outbound: tern_mta::OutboundConfig::default(),
            relay_domains: Vec::new(),
            msa: tern_msa::Policy::default(),
            delivery: tern_mda::DeliverySettings::default(),
        }
    }
}

/// The addresses a running local system listens on, as written to `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub database_url: String,
    pub cert: PathBuf,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub lmtp: SocketAddr,
    /// ManageSieve (absent in state files of older versions).
    #[serde(default)]
    pub managesieve: Option<SocketAddr>,
    pub grpc_msa: SocketAddr,
    pub grpc_mta: SocketAddr,
    pub grpc_mda: SocketAddr,
    pub grpc_maa: SocketAddr,
    /// The metrics and health endpoint (absent in state files of older versions).
    #[serde(default)]
    pub http: Option<SocketAddr>,
}

impl State {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("state.json")
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<State> {
        let path = Self::path(data_dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no running Tern found at {} (start one with `tern up`, or pass --data DIR)",
                data_dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// The table `tern up` prints.
    pub fn table(&self) -> String {
        let rows = [
            ("SMTP (MTA, from other servers)", self.smtp.to_string()),
            ("Submission (STARTTLS)", self.submission.to_string()),
            ("Submission (TLS)", self.submissions.to_string()),
            ("IMAP (STARTTLS)", self.imap.to_string()),
            ("IMAP (TLS)", self.imaps.to_string()),
            ("POP3 (STLS)", self.pop3.to_string()),
            ("POP3 (TLS)", self.pop3s.to_string()),
            ("LMTP (MDA, local MTAs)", self.lmtp.to_string()),
            (
                "ManageSieve (STARTTLS)",
                self.managesieve
                    .map_or_else(|| "-".to_string(), |a| a.to_string()),
            ),
            ("gRPC MSA (Submission)", self.grpc_msa.to_string()),
            ("gRPC MTA (Queue)", self.grpc_mta.to_string()),
            ("gRPC MDA (Delivery, Admin)", self.grpc_mda.to_string()),
            ("gRPC MAA (Mailbox)", self.grpc_maa.to_string()),
            (
                "HTTP /metrics /healthz /readyz",
                self.http.map_or_else(|| "-".to_string(), |a| a.to_string()),
            ),
        ];
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (name, addr) in rows {
            out.push_str(&format!("  {name:<width$}  {addr}\n"));
        }
        out
    }
}

/// The admin token of a data directory, created on first use (readable by the owner only).
pub fn ensure_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    tern_runtime::tls::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

pub fn read_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    let t = std::fs::read_to_string(&path)
        .with_context(|| format!("read admin token {}", path.display()))?;
    Ok(t.trim().to_string())
}

/// A running local system.
pub struct Running {
    pub state: State,
    pub admin_token: String,
    pub store: Store,
    shutdown: Shutdown,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    data_dir: PathBuf,
}

async fn bind(ip: IpAddr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .with_context(|| {
            format!("bind {what} on {ip}:{port} (is another Tern or mail server running?)")
        })
}

/// Starts every agent. Returns once all listeners are bound and `state.json` is written.
pub async fn start(opts: UpOptions) -> anyhow::Result<Running> {
    let data = &opts.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("create data directory {}", data.display()))?;
    let database_url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data.join("tern.db").display()));
    let names = vec![
        opts.hostname.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let cert: CertFiles = tern_runtime::tls::ensure_self_signed(&data.join("tls"), &names)?;
    let admin_token = ensure_admin_token(data)?;
    let store = Store::connect(&database_url)
        .await
        .with_context(|| format!("open store {database_url}"))?;

    let ip = opts.bind_ip;
    let p = opts.ports;
    let smtp = bind(ip, p.smtp, "SMTP").await?;
    let submission = bind(ip, p.submission, "submission").await?;
    let submissions = bind(ip, p.submissions, "submissions").await?;
    let imap = bind(ip, p.imap, "IMAP").await?;
    let imaps = bind(ip, p.imaps, "IMAPS").await?;
    let pop3 = bind(ip, p.pop3, "POP3").await?;
    let pop3s = bind(ip, p.pop3s, "POP3S").await?;
    let lmtp = bind(ip, p.lmtp, "LMTP").await?;
    let managesieve = bind(ip, p.managesieve, "ManageSieve").await?;
    let grpc_msa = bind(ip, p.grpc(0), "gRPC (MSA)").await?;
    let grpc_mta = bind(ip, p.grpc(1), "gRPC (MTA)").await?;
    let grpc_mda = bind(ip, p.grpc(2), "gRPC (MDA)").await?;
    let grpc_maa = bind(ip, p.grpc(3), "gRPC (MAA)").await?;
    let http = bind(ip, p.http, "HTTP (metrics and health)").await?;

    let state = State {
        pid: std::process::id(),
        database_url: database_url.clone(),
        cert: cert.cert.clone(),
        smtp: smtp.local_addr()?,
        submission: submission.local_addr()?,
        submissions: submissions.local_addr()?,
        imap: imap.local_addr()?,
        imaps: imaps.local_addr()?,
        pop3: pop3.local_addr()?,
        pop3s: pop3s.local_addr()?,
        lmtp: lmtp.local_addr()?,
        managesieve: Some(managesieve.local_addr()?),
        grpc_msa: grpc_msa.local_addr()?,
        grpc_mta: grpc_mta.local_addr()?,
        grpc_mda: grpc_mda.local_addr()?,
        grpc_maa: grpc_maa.local_addr()?,
        http: Some(http.local_addr()?),
    };

    let shutdown = Shutdown::new();
    let s = store.clone();
    let probe = tern_runtime::ops::probe(move || {
        let s = s.clone();
        async move { s.ping().await }
    });
    tern_runtime::ops::spawn(Some(http), &shutdown, probe);
    let mut tasks = Vec::new();
    let limits = SmtpLimits::default();
    // IMAP APPEND takes what delivery takes (APPENDLIMIT).
    let append_limit = u32::try_from(limits.max_message_size).unwrap_or(u32::MAX);
    tasks.push((
        "mda",
        tokio::spawn(tern_mda::run(
            tern_mda::Parts {
                admin_token: admin_token.clone(),
                hostname: opts.hostname.clone(),
                lmtp: limits.clone(),
                delivery: opts.delivery.clone(),
                managesieve: tern_runtime::config::ManageSieveLimits::default(),
                tls: Some(cert.clone()),
                auth_limits: opts.msa.auth.clone(),
            },
            tern_mda::Listeners {
                grpc: grpc_mda,
                lmtp: Some(lmtp),
                managesieve: Some(managesieve),
            },
            store.clone(),
            shutdown.clone(),
        )),
    ));
    let mta_parts = tern_mta::Parts {
        hostname: opts.hostname.clone(),
        admin_token: admin_token.clone(),
        mda_url: format!("http://{}", state.grpc_mda),
        tls: Some(cert.clone()),
        smtp: limits.clone(),
        relay_domains: opts.relay_domains.clone(),
        recipient_delimiter: opts.delivery.recipient_delimiter.clone(),
        queue: opts.queue.clone(),
        outbound: opts.outbound.clone(),
    };
    tasks.push((
        "mta",
        tokio::spawn(tern_mta::run(
            mta_parts,
            tern_mta::Listeners {
                smtp,
                grpc: grpc_mta,
            },
            store.clone(),
            shutdown.clone(),
        )),
    ));
    tasks.push((
        "msa",
        tokio::spawn(tern_msa::run(
            opts.hostname.clone(),
            cert.clone(),
            limits,
            opts.msa.clone(),
            tern_msa::Listeners {
                submission,
                submissions,
                grpc: grpc_msa,
            },
            // The MSA checks that local recipients exist: with the same sub-addressing.
            store.with_recipient_delimiter(&opts.delivery.recipient_delimiter),
            shutdown.clone(),
        )),
    ));
    tasks.push((
        "maa",
        tokio::spawn(tern_maa::run(
            opts.hostname.clone(),
            cert.clone(),
            tern_maa::AccessLimits {
                max_message_size: append_limit,
                ..tern_maa::AccessLimits::default()
            },
            tern_maa::Listeners {
                imap,
                imaps,
                pop3,
                pop3s,
                grpc: grpc_maa,
            },
            store.clone(),
            shutdown.clone(),
        )),
    ));

    let json = serde_json::to_string_pretty(&state)?;
    std::fs::write(State::path(data), json)
        .with_context(|| format!("write {}", State::path(data).display()))?;
    Ok(Running {
        state,
        admin_token,
        store,
        shutdown,
        tasks,
        data_dir: data.clone(),
    })
}

impl Running {
    /// True while every agent task is still running.
    pub fn all_running(&self) -> bool {
        self.tasks.iter().all(|(_, t)| !t.is_finished())
    }

    /// Waits until an agent stops on its own (an error) and says which.
    pub async fn wait_any(&mut self) -> (&'static str, anyhow::Result<()>) {
        loop {
            if let Some(i) = self.tasks.iter().position(|(_, t)| t.is_finished()) {
                let (name, task) = self.tasks.remove(i);
                let result = match task.await {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
                };
                return (name, result);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every agent: listeners close, open sessions are told goodbye, queue leases are
    /// released, and `state.json` is removed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first_err = None;
        for (name, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e.context(format!("{name} failed")));
                }
                Err(e) => {
                    first_err.get_or_insert(anyhow::anyhow!("{name} panicked: {e}"));
                }
            }
        }
        if !self.shutdown.drain(Duration::from_secs(10)).await {
            tracing::warn!("sessions still open at the drain deadline");
        }
        self.store.close().await;
        let _ = std::fs::remove_file(State::path(&self.data_dir));
        first_err.map_or(Ok(()), Err)
    }
}
