//! `tern token create|list|revoke`: API tokens for the gRPC Submission service, through the
//! Admin gRPC service.
//!
//! A token's secret is printed once, by `create`; the server keeps only its hash, so a lost
//! token is revoked and replaced, never recovered. This command deliberately stores no token
//! anywhere: where a program keeps its token is the program's business.

use std::path::Path;

use clap::{Args, Subcommand};
use tern_rpc::v1;

use crate::admin::{self, Target, explain};

/// Where the Admin service is, and the admin token (not to be confused with the API tokens
/// these commands manage).
#[derive(Args, Clone)]
pub struct TokenAdminArgs {
    /// Admin gRPC address (default: the local system's MDA).
    #[arg(long, env = "TERN_ADMIN_URL")]
    admin_url: Option<String>,
    /// Admin token (default: DATA/admin-token).
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token for ACCOUNT and print it (shown only this once).
    Create {
        account: String,
        /// What the token is for, to recognise it in `tern token list`.
        #[arg(long, default_value = "")]
        name: String,
        /// Expire after this many days (default: never).
        #[arg(long)]
        expires_days: Option<u32>,
        #[command(flatten)]
        a: TokenAdminArgs,
    },
    /// List ACCOUNT's tokens (never their secrets).
    List {
        account: String,
        #[command(flatten)]
        a: TokenAdminArgs,
    },
    /// Revoke a token by the id `tern token list` shows; it stops working at once.
    Revoke {
        id: i64,
        #[command(flatten)]
        a: TokenAdminArgs,
    },
}

fn target(data: &Path, a: TokenAdminArgs) -> anyhow::Result<Target> {
    // The queue address is unused here (see dkim_cmd): any value does.
    Target::resolve(data, a.admin_url, Some(String::new()), a.admin_token)
}

fn when(ms: i64) -> String {
    if ms == 0 {
        "-".to_string()
    } else {
        tern_runtime::mailfmt::rfc5322_date(ms / 1000)
    }
}

/// One line per token: id, prefix, name, created, last used, expiry.
pub fn token_line(t: &v1::ApiToken) -> String {
    let name = if t.name.is_empty() { "-" } else { &t.name };
    let expires = if t.expires_at_ms == 0 {
        "never".to_string()
    } else if t.expires_at_ms <= tern_store::now_ms() {
        format!("{} (expired)", when(t.expires_at_ms))
    } else {
        when(t.expires_at_ms)
    };
    format!(
        "{}\t{}…\t{}\tcreated {}\tlast used {}\texpires {}",
        t.id,
        t.prefix,
        name,
        when(t.created_at_ms),
        when(t.last_used_ms),
        expires
    )
}

/// Runs one `tern token` subcommand against the server found from `data` or the flags.
pub async fn run(data: &Path, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            account,
            name,
            expires_days,
            a,
        } => {
            let created = admin::admin(&target(data, a)?)
                .await?
                .create_token(v1::CreateTokenRequest {
                    address: account,
                    name,
                    expires_in_days: expires_days.unwrap_or(0),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let token = created.token.unwrap_or_default();
            println!("{}", created.secret);
            eprintln!(
                "API token {} for {} created. It is shown only once: store it now.\n\
                 Programs send it as gRPC metadata `authorization: Bearer <token>` to the \
                 Submission service.",
                token.id, token.address
            );
        }
        TokenCmd::List { account, a } => {
            let list = admin::admin(&target(data, a)?)
                .await?
                .list_tokens(v1::ListTokensRequest { address: account })
                .await
                .map_err(explain)?
                .into_inner();
            if list.tokens.is_empty() {
                println!("no tokens");
            }
            for t in &list.tokens {
                println!("{}", token_line(t));
            }
        }
        TokenCmd::Revoke { id, a } => {
            let t = admin::admin(&target(data, a)?)
                .await?
                .revoke_token(v1::RevokeTokenRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            println!("token {} ({}…) of {} revoked", t.id, t.prefix, t.address);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_show_times_or_dashes() {
        let t = v1::ApiToken {
            id: 7,
            address: "a@x.test".into(),
            name: String::new(),
            prefix: "tern_1234abcd".into(),
            created_at_ms: 1_700_000_000_000,
            last_used_ms: 0,
            expires_at_ms: 1_000,
        };
        let line = token_line(&t);
        assert!(line.starts_with("7\ttern_1234abcd…\t-\tcreated "), "{line}");
        assert!(line.contains("last used -"), "{line}");
        assert!(line.ends_with("(expired)"), "{line}");
        let never = token_line(&v1::ApiToken {
            expires_at_ms: 0,
            ..t
        });
        assert!(never.ends_with("expires never"), "{never}");
    }
}
