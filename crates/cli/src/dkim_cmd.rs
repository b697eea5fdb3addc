//! `tern dkim generate DOMAIN` and `tern dkim list`: DKIM keys through the Admin gRPC service.
//!
//! The key is generated and kept on the server; this command only prints the DNS TXT record an
//! operator must publish before receivers can verify the signatures. It deliberately does not
//! touch DNS itself, nor import or export private keys.

use std::path::Path;

use clap::{Args, Subcommand};
use tern_rpc::v1;

use crate::admin::{self, Target, explain};

/// Where the Admin service is, and its token (the same flags as the other admin commands).
#[derive(Args, Clone)]
pub struct DkimAdminArgs {
    /// Admin gRPC address (default: the local system's MDA).
    #[arg(long, env = "TERN_ADMIN_URL")]
    admin_url: Option<String>,
    /// Admin token (default: DATA/admin-token).
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
pub enum DkimCmd {
    /// Create a signing key for DOMAIN and print the TXT record to publish.
    Generate {
        domain: String,
        /// Selector naming the key in DNS (default: tern<yyyymm>).
        #[arg(long)]
        selector: Option<String>,
        /// rsa (RSA-2048, verified by every receiver) or ed25519 (RFC 8463).
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
        #[command(flatten)]
        a: DkimAdminArgs,
    },
    /// List keys with their TXT records.
    List {
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        a: DkimAdminArgs,
    },
}

fn target(data: &Path, a: DkimAdminArgs) -> anyhow::Result<Target> {
    // The queue address is unused here; resolving it from `tern up` state would make the
    // command fail needlessly against a remote server, so any value does.
    Target::resolve(data, a.admin_url, Some(String::new()), a.token)
}

/// Runs one `tern dkim` subcommand against the server found from `data` or the flags.
pub async fn run(data: &Path, cmd: DkimCmd) -> anyhow::Result<()> {
    match cmd {
        DkimCmd::Generate {
            domain,
            selector,
            algorithm,
            a,
        } => {
            let key = admin::admin(&target(data, a)?)
                .await?
                .generate_dkim_key(v1::GenerateDkimKeyRequest {
                    domain,
                    selector: selector.unwrap_or_default(),
                    algorithm,
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "DKIM key {} ({}) for {} is active. Publish this TXT record:\n",
                key.selector, key.algorithm, key.domain
            );
            println!("{}", zone_line(&key.dns_name, &key.dns_value));
            println!(
                "\nName:  {}\nValue: {}\n\nReceivers cannot verify the signatures until the record is published.",
                key.dns_name, key.dns_value
            );
        }
        DkimCmd::List { domain, a } => {
            let list = admin::admin(&target(data, a)?)
                .await?
                .list_dkim_keys(v1::ListDkimKeysRequest {
                    domain: domain.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            for key in list.keys {
                let state = if key.active { "active" } else { "inactive" };
                println!(
                    "{}\t{}\t{}\t{}\t{} TXT \"{}\"",
                    key.domain, key.selector, key.algorithm, state, key.dns_name, key.dns_value
                );
            }
        }
    }
    Ok(())
}

/// A zone-file line for the record. A TXT character-string holds at most 255 octets (RFC 1035
/// §3.3.14), and an RSA-2048 record is longer, so the value is split into several strings,
/// which verifiers concatenate (RFC 6376 §3.6.2.2).
pub fn zone_line(name: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{name}. IN TXT ( {} )", strings.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_records_are_split_into_255_octet_strings() {
        let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
        let line = zone_line("s._domainkey.example.test", &value);
        assert!(line.starts_with("s._domainkey.example.test. IN TXT ( \"v=DKIM1; k=rsa; p=AAA"));
        let strings: Vec<&str> = line
            .trim_start_matches(|c| c != '(')
            .trim_matches(|c| c == '(' || c == ')' || c == ' ')
            .split("\" \"")
            .collect();
        assert_eq!(strings.len(), 2, "{line}");
        assert_eq!(strings.concat().replace('"', ""), value);
        assert_eq!(
            zone_line("n", "v=DKIM1; k=ed25519; p=QUJD"),
            "n. IN TXT ( \"v=DKIM1; k=ed25519; p=QUJD\" )"
        );
    }
}
