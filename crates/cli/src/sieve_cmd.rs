//! `tern sieve put|list|show|activate|deactivate|remove`: per-account Sieve scripts (RFC 5228)
//! through the Admin gRPC service.
//!
//! The server compiles a script before storing it, so `put` is also the syntax check: a broken
//! script is refused with the line and column of the error, and nothing is stored.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use tern_rpc::v1;

use crate::admin::{self, Target, explain};

/// Where the Admin service is, and the admin token.
#[derive(Args, Clone)]
pub struct SieveAdminArgs {
    /// Admin gRPC address (default: the local system's MDA).
    #[arg(long, env = "TERN_ADMIN_URL")]
    admin_url: Option<String>,
    /// Admin token (default: DATA/admin-token).
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Subcommand)]
pub enum SieveCmd {
    /// Upload FILE ("-" for standard input) as ACCOUNT's script NAME, replacing one of that name.
    Put {
        account: String,
        name: String,
        file: PathBuf,
        /// Make it the active script (the one run at delivery).
        #[arg(long)]
        activate: bool,
        #[command(flatten)]
        a: SieveAdminArgs,
    },
    /// List ACCOUNT's scripts; the active one is marked.
    List {
        account: String,
        #[command(flatten)]
        a: SieveAdminArgs,
    },
    /// Print script NAME.
    Show {
        account: String,
        name: String,
        #[command(flatten)]
        a: SieveAdminArgs,
    },
    /// Make NAME ACCOUNT's active script.
    Activate {
        account: String,
        name: String,
        #[command(flatten)]
        a: SieveAdminArgs,
    },
    /// Turn Sieve off for ACCOUNT (mail goes to INBOX); the scripts are kept.
    Deactivate {
        account: String,
        #[command(flatten)]
        a: SieveAdminArgs,
    },
    /// Delete script NAME (not the active one: deactivate it first).
    Remove {
        account: String,
        name: String,
        #[command(flatten)]
        a: SieveAdminArgs,
    },
}

fn target(data: &Path, a: SieveAdminArgs) -> anyhow::Result<Target> {
    // The queue address is unused here (see dkim_cmd): any value does.
    Target::resolve(data, a.admin_url, Some(String::new()), a.admin_token)
}

/// One line per script: a star for the active one, the name and when it last changed.
pub fn script_line(s: &v1::SieveScript) -> String {
    format!(
        "{} {}\tupdated {}",
        if s.active { "*" } else { " " },
        s.name,
        tern_runtime::mailfmt::rfc5322_date(s.updated_at_ms / 1000)
    )
}

fn read_source(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("read the script from standard input")
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))
    }
}

/// Runs one `tern sieve` subcommand against the server found from `data` or the flags.
pub async fn run(data: &Path, cmd: SieveCmd) -> anyhow::Result<()> {
    match cmd {
        SieveCmd::Put {
            account,
            name,
            file,
            activate,
            a,
        } => {
            let source = read_source(&file)?;
            let s = admin::admin(&target(data, a)?)
                .await?
                .put_sieve_script(v1::PutSieveScriptRequest {
                    address: account,
                    name,
                    source,
                    activate,
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "script {} of {} stored{}",
                s.name,
                s.address,
                if s.active { " (active)" } else { "" }
            );
        }
        SieveCmd::List { account, a } => {
            let list = admin::admin(&target(data, a)?)
                .await?
                .list_sieve_scripts(v1::AccountRequest { address: account })
                .await
                .map_err(explain)?
                .into_inner();
            if list.scripts.is_empty() {
                println!("no scripts");
            }
            for s in &list.scripts {
                println!("{}", script_line(s));
            }
        }
        SieveCmd::Show { account, name, a } => {
            let s = admin::admin(&target(data, a)?)
                .await?
                .get_sieve_script(v1::SieveScriptRequest {
                    address: account,
                    name,
                })
                .await
                .map_err(explain)?
                .into_inner();
            print!("{}", s.source);
            if !s.source.ends_with('\n') {
                println!();
            }
        }
        SieveCmd::Activate { account, name, a } => {
            admin::admin(&target(data, a)?)
                .await?
                .activate_sieve_script(v1::SieveScriptRequest {
                    address: account.clone(),
                    name: name.clone(),
                })
                .await
                .map_err(explain)?;
            println!("script {name} of {account} is active");
        }
        SieveCmd::Deactivate { account, a } => {
            admin::admin(&target(data, a)?)
                .await?
                .activate_sieve_script(v1::SieveScriptRequest {
                    address: account.clone(),
                    name: String::new(),
                })
                .await
                .map_err(explain)?;
            println!("Sieve is off for {account}");
        }
        SieveCmd::Remove { account, name, a } => {
            admin::admin(&target(data, a)?)
                .await?
                .delete_sieve_script(v1::SieveScriptRequest {
                    address: account.clone(),
                    name: name.clone(),
                })
                .await
                .map_err(explain)?;
            println!("script {name} of {account} removed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_script_is_starred() {
        let s = v1::SieveScript {
            address: "a@x.test".into(),
            name: "main".into(),
            source: String::new(),
            active: true,
            created_at_ms: 0,
            updated_at_ms: 1_700_000_000_000,
        };
        assert!(script_line(&s).starts_with("* main\tupdated "));
        let off = v1::SieveScript { active: false, ..s };
        assert!(script_line(&off).starts_with("  main\t"));
    }
}
