//! `tern`: the command line of Tern — run a local system, administer it, and send and read mail.
//!
//! Argument parsing and printing only; the work is in the library (`up`, `admin`, `mua`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tern::admin::{self, Target, explain};
use tern::mua::{self, Compose, Security, Server};
use tern::up::{self, Ports, State, UpOptions};

mod login;
use tern_rpc::v1;

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "Tern mail system: run it, administer it, send and read mail"
)]
struct Cli {
    /// Data directory of a local system (`tern up`).
    #[arg(long, global = true, env = "TERN_DATA", default_value = "tern-data")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every agent in one process on SQLite (Ctrl-C stops it).
    Up(UpArgs),
    /// Manage domains.
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Manage aliases.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Inspect and act on the queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// DKIM signing keys: generate one and print the DNS record to publish.
    #[command(subcommand)]
    Dkim(tern::dkim_cmd::DkimCmd),
    /// API tokens for programs using the gRPC Submission service.
    #[command(subcommand)]
    Token(tern::token_cmd::TokenCmd),
    /// Sieve filters per account: upload (checked), list, show, activate, remove.
    #[command(subcommand)]
    Sieve(tern::sieve_cmd::SieveCmd),
    /// Compose and submit a message (body from --body or standard input).
    Send(SendArgs),
    /// List a mailbox.
    Inbox(InboxArgs),
    /// Show one message.
    Read(ReadArgs),
    /// Save the server and credentials the mail commands use (checked over IMAP first).
    Login(LoginArgs),
    /// Forget a saved login.
    Logout {
        /// Which saved account.
        #[arg(long, default_value = login::DEFAULT_ACCOUNT)]
        account: String,
    },
    /// List the folders with their message and unseen counts.
    Folders {
        #[command(flatten)]
        server: MailServer,
    },
    /// Delete a message: into Trash when the server has one, else (or with --expunge) for good.
    Delete(DeleteArgs),
    /// Move a message into another folder.
    Move(MoveArgs),
    /// Answer a message (body from --body or standard input).
    Reply(ReplyArgs),
    /// Load generators (measure, not test).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Send many messages over SMTP and report messages per second and latency percentiles.
    Smtp(SmtpBenchArgs),
    /// Submissions per second over STARTTLS + AUTH, reusing sessions and with a new session
    /// per message (default: the local system's submission port and certificate).
    Submit(SubmitBenchArgs),
    /// Fill a mailbox over APPEND, then time SELECT, FETCH (flags, envelopes, bodies) and
    /// SEARCH over IMAPS (default: the local system's IMAPS port and certificate).
    Imap(ImapBenchArgs),
    /// Hold many IMAPS sessions in IDLE and report the server's resident memory.
    ImapIdle(ImapIdleArgs),
}

/// Where the IMAP benchmarks connect, as whom.
#[derive(Args)]
struct ImapTargetArgs {
    /// IMAPS (implicit TLS) server (default: the local system's).
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    #[arg(long, env = "TERN_USER")]
    user: String,
    #[arg(long, env = "TERN_PASSWORD", hide_env_values = true)]
    password: String,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Trust this CA file (default: the local system's certificate).
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (self-signed servers; measuring only).
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
struct ImapBenchArgs {
    #[command(flatten)]
    target: ImapTargetArgs,
    /// Messages the mailbox should hold (missing ones are appended first).
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Sender to search for (the generated mail comes from sender0..sender49@bench.test).
    #[arg(long, default_value = "sender7@bench.test")]
    search_from: String,
    /// Only fill the mailbox.
    #[arg(long)]
    fill_only: bool,
}

#[derive(Args)]
struct ImapIdleArgs {
    #[command(flatten)]
    target: ImapTargetArgs,
    /// Sessions to hold in IDLE (raise `ulimit -n` for both client and server).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The server's process id (its descendants are counted too).
    #[arg(long)]
    pid: u32,
}

#[derive(Args)]
struct SubmitBenchArgs {
    /// Submission server (default: the local system's STARTTLS submission port).
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    /// Account to submit as; also the sender.
    #[arg(long, env = "TERN_USER")]
    user: String,
    #[arg(long, env = "TERN_PASSWORD", hide_env_values = true)]
    password: String,
    /// Recipient (repeatable; default: the account itself).
    #[arg(long)]
    to: Vec<String>,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Messages in each run.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Messages per session in the reuse run.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// Which runs: both, reuse or new.
    #[arg(long, default_value = "both", value_parser = ["both", "reuse", "new"])]
    runs: String,
    /// Trust this CA file (default: the local system's certificate).
    #[arg(long, conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (self-signed servers; measuring only).
    #[arg(long)]
    insecure: bool,
    /// Stop each run after this many seconds even if messages remain.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

#[derive(Args)]
struct SmtpBenchArgs {
    /// Server to load (default: the local system's port-25 listener).
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Messages in total.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Messages per connection before reconnecting (1: a new connection per message).
    #[arg(long, default_value_t = 1)]
    per_connection: usize,
    #[arg(long, default_value = "bench@load.test")]
    from: String,
    /// Recipient (repeatable).
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Use STARTTLS, trusting this CA file.
    #[arg(long)]
    starttls: Option<PathBuf>,
    /// AUTH PLAIN as this user (with --password).
    #[arg(long)]
    user: Option<String>,
    #[arg(long, env = "TERN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Stop after this many seconds even if messages remain.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

#[derive(Args)]
struct UpArgs {
    /// Store URL (default: SQLite file in the data directory).
    #[arg(long, env = "TERN_DATABASE_URL")]
    database_url: Option<String>,
    /// Bind every listener on a free port chosen by the system (see state.json).
    #[arg(long)]
    ephemeral_ports: bool,
    /// Host name used in greetings and Received headers.
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Messages one account may submit per hour (default: the MSA's default, 500).
    #[arg(long, env = "TERN_MESSAGES_PER_HOUR")]
    messages_per_hour: Option<u64>,
}

#[derive(Args, Clone)]
struct AdminArgs {
    /// Admin gRPC address (default: the local system's MDA).
    #[arg(long, env = "TERN_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    /// Queue gRPC address (default: the local system's MTA).
    #[arg(long, env = "TERN_QUEUE_URL", global = true)]
    queue_url: Option<String>,
    /// Admin token (default: DATA/admin-token).
    #[arg(long, env = "TERN_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum DomainCmd {
    Add {
        name: String,
        #[command(flatten)]
        a: AdminArgs,
    },
    List {
        #[command(flatten)]
        a: AdminArgs,
    },
    Remove {
        name: String,
        #[command(flatten)]
        a: AdminArgs,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    Add {
        address: String,
        #[command(flatten)]
        pw: PasswordArgs,
        #[command(flatten)]
        a: AdminArgs,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        a: AdminArgs,
    },
    Remove {
        address: String,
        #[command(flatten)]
        a: AdminArgs,
    },
    /// Set a new password.
    Passwd {
        address: String,
        #[command(flatten)]
        pw: PasswordArgs,
        #[command(flatten)]
        a: AdminArgs,
    },
    /// Show the quota and usage, or set limits (0 removes a limit; a limit not given is kept).
    Quota {
        address: String,
        /// Most bytes the account's messages may take, over all its mailboxes.
        #[arg(long)]
        bytes: Option<u64>,
        /// Most messages the account may hold.
        #[arg(long)]
        messages: Option<u64>,
        #[command(flatten)]
        a: AdminArgs,
    },
    /// Recompute the quota usage from the stored messages, repair it, and report any drift.
    Recount {
        address: String,
        #[command(flatten)]
        a: AdminArgs,
    },
}

/// "N" or "none" for a limit of 0.
fn limit(n: u64) -> String {
    if n == 0 {
        "none".to_string()
    } else {
        n.to_string()
    }
}

fn print_quota(q: &v1::QuotaInfo) {
    println!(
        "{}: {} bytes used (limit {}), {} messages (limit {})",
        q.address,
        q.used_bytes,
        limit(q.limit_bytes),
        q.used_messages,
        limit(q.limit_messages)
    );
}

#[derive(Args)]
struct PasswordArgs {
    /// The password (visible in the process list: prefer --password-stdin).
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    fn get(&self) -> anyhow::Result<String> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("read password from standard input")?;
            let p = line.trim_end_matches(['\r', '\n']).to_string();
            if p.is_empty() {
                bail!("empty password on standard input");
            }
            return Ok(p);
        }
        bail!("give a password with --password or --password-stdin")
    }
}

#[derive(Subcommand)]
enum AliasCmd {
    /// SOURCE is user@domain or @domain (catch-all); one or more TARGETS.
    Add {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        a: AdminArgs,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        a: AdminArgs,
    },
    Remove {
        source: String,
        #[command(flatten)]
        a: AdminArgs,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    List {
        /// queued, delivered or failed
        #[arg(long)]
        state: Option<String>,
        /// Recipient domain.
        #[arg(long)]
        domain: Option<String>,
        /// Part of the sender address.
        #[arg(long)]
        sender: Option<String>,
        /// Only messages older than this (e.g. 90s, 30m, 2h, 5d).
        #[arg(long, value_parser = parse_age)]
        older_than: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        a: AdminArgs,
    },
    /// Counts per state and per destination, and the oldest waiting message.
    Stats {
        #[command(flatten)]
        a: AdminArgs,
    },
    /// Fail the message's waiting recipients now and send the bounce.
    Bounce {
        id: String,
        #[command(flatten)]
        a: AdminArgs,
    },
    Show {
        id: String,
        #[command(flatten)]
        a: AdminArgs,
    },
    Retry {
        id: String,
        #[command(flatten)]
        a: AdminArgs,
    },
    Delete {
        id: String,
        #[command(flatten)]
        a: AdminArgs,
    },
}

/// Which server and which account the mail commands use. Unset flags fall back to TERN_USER,
/// TERN_PASSWORD, TERN_HOST and TERN_CA, then to the saved login (`tern login`), then to the
/// local system; `login::resolve` applies that order.
#[derive(Args, Clone)]
struct MailServer {
    /// Saved login to use (see tern login).
    #[arg(long, default_value = login::DEFAULT_ACCOUNT)]
    account: String,
    /// Account to log in as [env: TERN_USER] (default: the saved login, for send: --from).
    #[arg(long)]
    user: Option<String>,
    /// Password of the account [env: TERN_PASSWORD].
    #[arg(long)]
    password: Option<String>,
    /// Server host [env: TERN_HOST] (default: the saved login, else the local system).
    #[arg(long)]
    host: Option<String>,
    /// Port (default: the local system's submission or IMAP port, else 587 / 993).
    #[arg(long)]
    port: Option<u16>,
    /// Use implicit TLS instead of STARTTLS.
    #[arg(long)]
    tls: bool,
    /// Extra CA certificate to trust [env: TERN_CA] (default: the local system's certificate).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Args)]
struct LoginArgs {
    /// Name of this saved login; the mail commands use "default" unless given --account.
    #[arg(long, default_value = login::DEFAULT_ACCOUNT)]
    account: String,
    /// The account's address (or TERN_USER).
    #[arg(long)]
    user: Option<String>,
    /// Mail server (default: the local system started by tern up in --data).
    #[arg(long)]
    host: Option<String>,
    /// Submission port (default 587, or 465 with --smtp-tls).
    #[arg(long)]
    smtp_port: Option<u16>,
    /// Implicit TLS for submission instead of STARTTLS.
    #[arg(long)]
    smtp_tls: bool,
    /// IMAP port (default 143, or 993 with --imap-tls).
    #[arg(long)]
    imap_port: Option<u16>,
    /// Implicit TLS for IMAP instead of STARTTLS.
    #[arg(long)]
    imap_tls: bool,
    /// Extra CA certificate (PEM) to trust for this server.
    #[arg(long)]
    ca: Option<PathBuf>,
    #[command(flatten)]
    pw: PasswordArgs,
    /// Save without logging in first.
    #[arg(long)]
    no_verify: bool,
}

#[derive(Args)]
struct DeleteArgs {
    /// Message number as shown by `tern inbox`.
    n: u32,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Delete for good instead of moving to Trash.
    #[arg(long)]
    expunge: bool,
    #[command(flatten)]
    server: MailServer,
}

#[derive(Args)]
struct MoveArgs {
    /// Message number as shown by `tern inbox`.
    n: u32,
    /// Target folder (see tern folders).
    folder: String,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    #[command(flatten)]
    server: MailServer,
}

#[derive(Args)]
struct ReplyArgs {
    /// Message number as shown by `tern inbox`.
    n: u32,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Also reply to the original To and Cc (without yourself).
    #[arg(long)]
    all: bool,
    /// Text body (default: standard input).
    #[arg(long)]
    body: Option<String>,
    /// Quote the original below your text.
    #[arg(long)]
    quote: bool,
    /// Your address (default: the account).
    #[arg(long)]
    from: Option<String>,
    #[command(flatten)]
    server: MailServer,
}

#[derive(Args)]
struct SendArgs {
    /// Sender (default: the account).
    #[arg(long)]
    from: Option<String>,
    #[arg(long, required = true)]
    to: Vec<String>,
    #[arg(long)]
    cc: Vec<String>,
    #[arg(long)]
    bcc: Vec<String>,
    #[arg(long, default_value = "")]
    subject: String,
    /// Text body (default: standard input).
    #[arg(long)]
    body: Option<String>,
    /// HTML alternative from a file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Attach a file (repeatable).
    #[arg(long)]
    attach: Vec<PathBuf>,
    #[command(flatten)]
    server: MailServer,
}

#[derive(Args)]
struct InboxArgs {
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    #[arg(long, default_value_t = 1)]
    page: u32,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    server: MailServer,
}

#[derive(Args)]
struct ReadArgs {
    /// Message number as shown by `tern inbox`.
    n: u32,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Save attachments into this directory.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Print the raw message instead.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    server: MailServer,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("tern: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data = cli.data;
    match cli.command {
        Command::Up(args) => up_cmd(&data, args).await,
        Command::Domain(cmd) => domain_cmd(&data, cmd).await,
        Command::Account(cmd) => account_cmd(&data, cmd).await,
        Command::Alias(cmd) => alias_cmd(&data, cmd).await,
        Command::Queue(cmd) => queue_cmd(&data, cmd).await,
        Command::Dkim(cmd) => tern::dkim_cmd::run(&data, cmd).await,
        Command::Token(cmd) => tern::token_cmd::run(&data, cmd).await,
        Command::Sieve(cmd) => tern::sieve_cmd::run(&data, cmd).await,
        Command::Send(args) => send_cmd(&data, args).await,
        Command::Inbox(args) => inbox_cmd(&data, args).await,
        Command::Read(args) => read_cmd(&data, args).await,
        Command::Login(args) => login_cmd(&data, args).await,
        Command::Logout { account } => logout_cmd(&account),
        Command::Folders { server } => folders_cmd(&data, server).await,
        Command::Delete(args) => delete_cmd(&data, args).await,
        Command::Move(args) => move_cmd(&data, args).await,
        Command::Reply(args) => reply_cmd(&data, args).await,
        Command::Bench(BenchCmd::Smtp(args)) => bench_smtp(&data, args).await,
        Command::Bench(BenchCmd::Submit(args)) => bench_submit(&data, args).await,
        Command::Bench(BenchCmd::Imap(args)) => bench_imap(&data, args).await,
        Command::Bench(BenchCmd::ImapIdle(args)) => bench_imap_idle(&data, args).await,
    }
}

async fn up_cmd(data: &Path, args: UpArgs) -> anyhow::Result<()> {
    tern_runtime::telemetry::init(tern_runtime::telemetry::LogFormat::Text);
    let mut opts = UpOptions::new(data.to_path_buf());
    opts.database_url = args.database_url;
    opts.hostname = args.hostname;
    if let Some(n) = args.messages_per_hour {
        opts.msa.limits.messages_per_hour = n;
    }
    if args.ephemeral_ports {
        opts.ports = Ports::EPHEMERAL;
    }
    let mut running = up::start(opts).await?;
    println!(
        "Tern is running (data in {}). Listening on:",
        data.display()
    );
    print!("{}", running.state.table());
    println!(
        "Admin token: {}/admin-token   Certificate: {}",
        data.display(),
        running.state.cert.display()
    );
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        _ = tern_runtime::shutdown::signal() => {
            println!("Stopping...");
            running.stop().await?;
            println!("Stopped.");
            Ok(())
        }
        (name, result) = running.wait_any() => {
            let err = result.err().unwrap_or_else(|| anyhow::anyhow!("stopped unexpectedly"));
            let _ = running.stop().await;
            Err(err.context(format!("{name} stopped")))
        }
    }
}

fn target(data: &Path, a: AdminArgs) -> anyhow::Result<Target> {
    Target::resolve(data, a.admin_url, a.queue_url, a.token)
}

fn when(ms: i64) -> String {
    tern_runtime::mailfmt::rfc5322_date(ms / 1000)
}

async fn domain_cmd(data: &Path, cmd: DomainCmd) -> anyhow::Result<()> {
    match cmd {
        DomainCmd::Add { name, a } => {
            admin::admin(&target(data, a)?)
                .await?
                .add_domain(v1::DomainRequest { name: name.clone() })
                .await
                .map_err(explain)?;
            println!("domain {name} added");
        }
        DomainCmd::List { a } => {
            let list = admin::admin(&target(data, a)?)
                .await?
                .list_domains(v1::Empty {})
                .await
                .map_err(explain)?
                .into_inner();
            for d in list.domains {
                println!("{}\t{}", d.name, when(d.created_at_ms));
            }
        }
        DomainCmd::Remove { name, a } => {
            admin::admin(&target(data, a)?)
                .await?
                .remove_domain(v1::DomainRequest { name: name.clone() })
                .await
                .map_err(explain)?;
            println!("domain {name} removed");
        }
    }
    Ok(())
}

async fn account_cmd(data: &Path, cmd: AccountCmd) -> anyhow::Result<()> {
    match cmd {
        AccountCmd::Add { address, pw, a } => {
            let password = pw.get()?;
            let acc = admin::admin(&target(data, a)?)
                .await?
                .add_account(v1::AddAccountRequest { address, password })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "account {} added (mailboxes INBOX, Drafts, Sent, Trash, Junk, Archive)",
                acc.address
            );
        }
        AccountCmd::List { domain, a } => {
            let req = v1::ListAccountsRequest {
                domain: domain.unwrap_or_default(),
            };
            let list = admin::admin(&target(data, a)?)
                .await?
                .list_accounts(req)
                .await
                .map_err(explain)?
                .into_inner();
            for acc in list.accounts {
                println!("{}\t{}", acc.address, when(acc.created_at_ms));
            }
        }
        AccountCmd::Remove { address, a } => {
            admin::admin(&target(data, a)?)
                .await?
                .remove_account(v1::AccountRequest {
                    address: address.clone(),
                })
                .await
                .map_err(explain)?;
            println!("account {address} removed");
        }
        AccountCmd::Passwd { address, pw, a } => {
            let password = pw.get()?;
            admin::admin(&target(data, a)?)
                .await?
                .set_password(v1::SetPasswordRequest {
                    address: address.clone(),
                    password,
                })
                .await
                .map_err(explain)?;
            println!("password of {address} changed");
        }
        AccountCmd::Quota {
            address,
            bytes,
            messages,
            a,
        } => {
            let mut client = admin::admin(&target(data, a)?).await?;
            let q = if bytes.is_none() && messages.is_none() {
                client
                    .get_quota(v1::AccountRequest { address })
                    .await
                    .map_err(explain)?
                    .into_inner()
            } else {
                client
                    .set_quota(v1::SetQuotaRequest {
                        address,
                        bytes,
                        messages,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner()
            };
            print_quota(&q);
        }
        AccountCmd::Recount { address, a } => {
            let r = admin::admin(&target(data, a)?)
                .await?
                .recount_quota(v1::AccountRequest { address })
                .await
                .map_err(explain)?
                .into_inner();
            let q = r.quota.unwrap_or_default();
            if (r.recorded_bytes, r.recorded_messages) == (q.used_bytes, q.used_messages) {
                println!("{}: usage was exact", q.address);
            } else {
                println!(
                    "{}: usage repaired: was {} bytes / {} messages, now {} bytes / {} messages",
                    q.address, r.recorded_bytes, r.recorded_messages, q.used_bytes, q.used_messages
                );
            }
            print_quota(&q);
        }
    }
    Ok(())
}

async fn alias_cmd(data: &Path, cmd: AliasCmd) -> anyhow::Result<()> {
    match cmd {
        AliasCmd::Add { source, targets, a } => {
            let alias = admin::admin(&target(data, a)?)
                .await?
                .add_alias(v1::AddAliasRequest { source, targets })
                .await
                .map_err(explain)?
                .into_inner();
            println!("alias {} -> {}", alias.source, alias.targets.join(", "));
        }
        AliasCmd::List { domain, a } => {
            let req = v1::ListAliasesRequest {
                domain: domain.unwrap_or_default(),
            };
            let list = admin::admin(&target(data, a)?)
                .await?
                .list_aliases(req)
                .await
                .map_err(explain)?
                .into_inner();
            for alias in list.aliases {
                println!("{}\t{}", alias.source, alias.targets.join(", "));
            }
        }
        AliasCmd::Remove { source, a } => {
            admin::admin(&target(data, a)?)
                .await?
                .remove_alias(v1::AliasRequest {
                    source: source.clone(),
                })
                .await
                .map_err(explain)?;
            println!("alias {source} removed");
        }
    }
    Ok(())
}

fn print_queue_message(m: &v1::QueueMessage) {
    let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
    println!(
        "{}  {} bytes  from {}  queued {}",
        m.id,
        m.size,
        sender,
        when(m.created_at_ms)
    );
    for r in &m.recipients {
        println!(
            "    {:<9} {}  attempts {}  next {}  {}",
            r.state,
            r.address,
            r.attempts,
            when(r.next_attempt_at_ms),
            r.last_reply
        );
    }
}

async fn queue_cmd(data: &Path, cmd: QueueCmd) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::List {
            state,
            domain,
            sender,
            older_than,
            limit,
            a,
        } => {
            let req = v1::QueueListRequest {
                state: state.unwrap_or_default(),
                limit,
                domain: domain.unwrap_or_default(),
                sender: sender.unwrap_or_default(),
                older_than_secs: older_than.unwrap_or(0),
            };
            let list = admin::queue(&target(data, a)?)
                .await?
                .list(req)
                .await
                .map_err(explain)?
                .into_inner();
            if list.messages.is_empty() {
                println!("queue is empty");
            }
            for m in &list.messages {
                print_queue_message(m);
            }
        }
        QueueCmd::Show { id, a } => {
            let m = admin::queue(&target(data, a)?)
                .await?
                .show(v1::QueueMessageRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            print_queue_message(&m);
        }
        QueueCmd::Retry { id, a } => {
            let r = admin::queue(&target(data, a)?)
                .await?
                .retry(v1::QueueMessageRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            println!("{} recipient(s) scheduled now", r.affected);
        }
        QueueCmd::Stats { a } => {
            let s = admin::queue(&target(data, a)?)
                .await?
                .stats(v1::QueueStatsRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            println!("recipients by state:");
            for c in &s.by_state {
                println!("  {:<10} {}", c.state, c.recipients);
            }
            if !s.by_domain.is_empty() {
                println!("waiting by destination:");
                for d in &s.by_domain {
                    println!("  {:<30} {}", d.domain, d.queued);
                }
            }
            if s.oldest_queued_ms > 0 {
                let age = (tern_store::now_ms() - s.oldest_queued_ms).max(0) / 1000;
                println!(
                    "oldest waiting message: queued {} ({} ago)",
                    when(s.oldest_queued_ms),
                    human_age(age as u64)
                );
            } else {
                println!("nothing is waiting");
            }
        }
        QueueCmd::Bounce { id, a } => {
            let r = admin::queue(&target(data, a)?)
                .await?
                .bounce(v1::QueueMessageRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            println!("{} recipient(s) bounced", r.affected);
        }
        QueueCmd::Delete { id, a } => {
            let r = admin::queue(&target(data, a)?)
                .await?
                .delete(v1::QueueMessageRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            println!("{} recipient(s) removed", r.affected);
        }
    }
    Ok(())
}

async fn bench_smtp(data: &Path, a: SmtpBenchArgs) -> anyhow::Result<()> {
    let target = match a.target {
        Some(t) => t,
        None => State::load(data)?.smtp,
    };
    let auth = match (a.user, a.password) {
        (Some(u), Some(p)) => Some((u, p)),
        (Some(_), None) => bail!("--user needs --password (or TERN_PASSWORD)"),
        _ => None,
    };
    let bench = tern::bench::SmtpBench {
        target,
        connections: a.connections.max(1),
        messages: a.messages,
        size: a.size,
        recipients: a.to,
        from: a.from,
        per_connection: a.per_connection.max(1),
        starttls: a.starttls.map(tern::bench::Trust::Ca),
        auth,
        duration_limit: std::time::Duration::from_secs(a.max_seconds),
    };
    let report = tern::bench::run_smtp(&bench).await?;
    println!("{report}");
    Ok(())
}

fn imap_target(data: &Path, a: ImapTargetArgs) -> anyhow::Result<tern::bench_imap::ImapTarget> {
    let local = || State::load(data);
    let address = match a.target {
        Some(t) => t,
        None => local()?.imaps,
    };
    let trust = match (a.ca, a.insecure) {
        (_, true) => tern::bench::Trust::Insecure,
        (Some(ca), false) => tern::bench::Trust::Ca(ca),
        (None, false) => tern::bench::Trust::Ca(local()?.cert),
    };
    Ok(tern::bench_imap::ImapTarget {
        address,
        trust,
        user: a.user,
        password: a.password,
        mailbox: a.mailbox,
    })
}

async fn bench_imap(data: &Path, a: ImapBenchArgs) -> anyhow::Result<()> {
    let bench = tern::bench_imap::ImapBench {
        target: imap_target(data, a.target)?,
        messages: a.messages,
        runs: a.runs,
        search_from: a.search_from,
        fill_only: a.fill_only,
    };
    let report = tern::bench_imap::run_imap(&bench).await?;
    print!("{report}");
    Ok(())
}

async fn bench_imap_idle(data: &Path, a: ImapIdleArgs) -> anyhow::Result<()> {
    let bench = tern::bench_imap::IdleBench {
        target: imap_target(data, a.target)?,
        connections: a.connections,
        concurrency: a.concurrency,
        pid: a.pid,
    };
    let report = tern::bench_imap::run_idle(&bench).await?;
    print!("{report}");
    Ok(())
}

async fn bench_submit(data: &Path, a: SubmitBenchArgs) -> anyhow::Result<()> {
    let local = || State::load(data);
    let target = match a.target {
        Some(t) => t,
        None => local()?.submission,
    };
    let trust = match (a.ca, a.insecure) {
        (_, true) => tern::bench::Trust::Insecure,
        (Some(ca), false) => tern::bench::Trust::Ca(ca),
        (None, false) => tern::bench::Trust::Ca(local()?.cert),
    };
    let to = if a.to.is_empty() {
        vec![a.user.clone()]
    } else {
        a.to
    };
    let runs = match a.runs.as_str() {
        "reuse" => tern::bench::SubmitRuns::ReuseOnly,
        "new" => tern::bench::SubmitRuns::NewOnly,
        _ => tern::bench::SubmitRuns::Both,
    };
    let bench = tern::bench::SubmitBench {
        bench: tern::bench::SmtpBench {
            target,
            connections: a.connections.max(1),
            messages: a.messages,
            size: a.size,
            recipients: to,
            from: a.user.clone(),
            per_connection: 1,
            starttls: Some(trust),
            auth: Some((a.user, a.password)),
            duration_limit: std::time::Duration::from_secs(a.max_seconds),
        },
        reuse: a.per_connection.max(1),
        runs,
    };
    let report = tern::bench::run_submit(&bench).await?;
    print!("{report}");
    Ok(())
}

/// "90s", "30m", "2h", "5d" or plain seconds.
fn parse_age(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 90s, 30m, 2h or 5d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (s, m, h or d)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn human_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn config_path() -> anyhow::Result<PathBuf> {
    login::config_path(&env_var)
}

/// Flags, then TERN_* variables, then the saved login, then the local system.
fn mail_server(
    data: &Path,
    s: MailServer,
    default_user: Option<&str>,
    submission: bool,
) -> anyhow::Result<Server> {
    // Without HOME or XDG_CONFIG_HOME there is no saved login, but flags still work.
    let config = match config_path() {
        Ok(path) => login::Config::load(&path)?,
        Err(_) => login::Config::default(),
    };
    let saved = config.accounts.get(&s.account);
    if saved.is_none() && s.account != login::DEFAULT_ACCOUNT {
        bail!(
            "no saved login named {:?}: see tern login --account",
            s.account
        );
    }
    let flags = login::Flags {
        user: s.user,
        password: s.password,
        host: s.host,
        port: s.port,
        tls: s.tls,
        ca: s.ca,
    };
    let purpose = if submission {
        login::Purpose::Submission
    } else {
        login::Purpose::Imap
    };
    login::resolve(
        &flags,
        &login::Env::from_lookup(&env_var),
        saved,
        default_user,
        purpose,
        data,
        &|d| State::load(d),
    )
}

async fn login_cmd(data: &Path, args: LoginArgs) -> anyhow::Result<()> {
    let env = login::Env::from_lookup(&env_var);
    let user = args
        .user
        .or(env.user)
        .context("give the account with --user (or TERN_USER)")?;
    let password = if args.pw.password.is_some() || args.pw.password_stdin {
        args.pw.get()?
    } else {
        env.password
            .context("give the password with --password-stdin (or TERN_PASSWORD)")?
    };
    let sec = |tls: bool| {
        if tls {
            Security::Tls
        } else {
            Security::Starttls
        }
    };
    let (smtp_security, imap_security) = (sec(args.smtp_tls), sec(args.imap_tls));
    let account = login::Account {
        user,
        password,
        data: match &args.host {
            Some(_) => None,
            // The data directory is saved absolute, so the login works from any directory.
            None => Some(std::path::absolute(data).context("resolve the data directory")?),
        },
        host: args.host,
        smtp_port: args.smtp_port.unwrap_or(login::default_port(
            login::Purpose::Submission,
            smtp_security,
        )),
        smtp_security,
        imap_port: args
            .imap_port
            .unwrap_or(login::default_port(login::Purpose::Imap, imap_security)),
        imap_security,
        ca: match args.ca {
            Some(ca) => Some(std::path::absolute(&ca).context("resolve the CA file path")?),
            None => None,
        },
    };
    if !args.no_verify {
        let server = login::resolve(
            &login::Flags::default(),
            &login::Env::default(),
            Some(&account),
            None,
            login::Purpose::Imap,
            data,
            &|d| State::load(d),
        )?;
        mua::verify_login(&server)
            .await
            .context("not saved: the login did not work (use --no-verify to save anyway)")?;
    }
    let path = config_path()?;
    let mut config = login::Config::load(&path)?;
    let text = login::describe(&args.account, &account);
    config.accounts.insert(args.account, account);
    config.save(&path)?;
    println!("saved {text} in {}", path.display());
    Ok(())
}

fn logout_cmd(account: &str) -> anyhow::Result<()> {
    let path = config_path()?;
    if login::Config::remove(&path, account)? {
        println!("removed account {account} from {}", path.display());
    } else {
        println!("no saved account {account} in {}", path.display());
    }
    Ok(())
}

async fn folders_cmd(data: &Path, server: MailServer) -> anyhow::Result<()> {
    let server = mail_server(data, server, None, false)?;
    let folders = mua::folders(&server).await?;
    let width = folders
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0);
    let count = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    for f in &folders {
        println!(
            "{:<width$}  {:>6} messages  {:>6} unseen  {}",
            f.name,
            count(f.messages),
            count(f.unseen),
            f.special_use.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn delete_cmd(data: &Path, args: DeleteArgs) -> anyhow::Result<()> {
    let server = mail_server(data, args.server, None, false)?;
    match mua::delete(&server, &args.mailbox, args.n, args.expunge).await? {
        mua::Deleted::MovedTo(trash) => {
            println!("message {} moved from {} to {trash}", args.n, args.mailbox)
        }
        mua::Deleted::Expunged => println!("message {} deleted from {}", args.n, args.mailbox),
    }
    Ok(())
}

async fn move_cmd(data: &Path, args: MoveArgs) -> anyhow::Result<()> {
    let server = mail_server(data, args.server, None, false)?;
    mua::move_message(&server, &args.mailbox, args.n, &args.folder).await?;
    println!(
        "message {} moved from {} to {}",
        args.n, args.mailbox, args.folder
    );
    Ok(())
}

fn read_body(body: Option<String>) -> anyhow::Result<String> {
    match body {
        Some(b) => Ok(b),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("read message body from standard input")?;
            Ok(s)
        }
    }
}

/// "2.0.0 queued as X" without the RFC 3463 status code in front.
fn reply_text(reply: &str) -> &str {
    match reply.split_once(' ') {
        Some((code, rest))
            if code.split('.').count() == 3
                && code.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            rest
        }
        _ => reply,
    }
}

async fn reply_cmd(data: &Path, args: ReplyArgs) -> anyhow::Result<()> {
    let imap = mail_server(data, args.server.clone(), None, false)?;
    let original = mua::read(&imap, &args.mailbox, args.n).await?;
    let text = read_body(args.body)?;
    let me = args.from.unwrap_or_else(|| imap.user.clone());
    let mail = mua::build_reply(
        &original.raw,
        &mua::ReplyOptions {
            me: me.clone(),
            all: args.all,
            text,
            quote: args.quote,
        },
    )?;
    let submission = mail_server(data, args.server, Some(&me), true)?;
    let reply = mua::send(&submission, &mail).await?;
    println!("{}", reply_text(&reply));
    Ok(())
}

async fn send_cmd(data: &Path, args: SendArgs) -> anyhow::Result<()> {
    let text = read_body(args.body)?;
    let html = match &args.html {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
        }
        None => None,
    };
    let server = mail_server(data, args.server, args.from.as_deref(), true)?;
    let mail = Compose {
        from: args.from.unwrap_or_else(|| server.user.clone()),
        to: args.to,
        cc: args.cc,
        bcc: args.bcc,
        subject: args.subject,
        text,
        html,
        attachments: args.attach,
        in_reply_to: None,
        references: Vec::new(),
    };
    let reply = mua::send(&server, &mail).await?;
    println!("{}", reply_text(&reply));
    Ok(())
}

async fn inbox_cmd(data: &Path, args: InboxArgs) -> anyhow::Result<()> {
    let server = mail_server(data, args.server, None, false)?;
    let (list, total) = mua::inbox(&server, &args.mailbox, args.page, args.limit).await?;
    print!("{}", mua::render_summary_table(&list));
    let pages = total.div_ceil(args.limit.max(1)).max(1);
    println!(
        "{total} message(s) in {}, page {} of {pages}",
        args.mailbox, args.page
    );
    Ok(())
}

async fn read_cmd(data: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let server = mail_server(data, args.server, None, false)?;
    let msg = mua::read(&server, &args.mailbox, args.n).await?;
    if args.raw {
        use std::io::Write;
        std::io::stdout().write_all(&msg.raw)?;
    } else {
        print!("{}", mua::render_message(&msg));
    }
    if let Some(dir) = args.save {
        for p in mua::save_attachments(&msg, &dir)? {
            println!("saved {}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90"), Ok(90));
        assert_eq!(parse_age("90s"), Ok(90));
        assert_eq!(parse_age("30m"), Ok(1800));
        assert_eq!(parse_age("2h"), Ok(7200));
        assert_eq!(parse_age("5d"), Ok(432_000));
        assert!(parse_age("5w").is_err());
        assert!(parse_age("h").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }

    #[test]
    fn ages_print_readably() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(61), "1m");
        assert_eq!(human_age(3661), "1h1m");
        assert_eq!(human_age(90_000), "1d1h");
    }
}
