//! Runs the real Python mail clients in `py/mailclient.py` (smtplib, imaplib, poplib) and
//! returns their JSON report. A client that fails is a test failure with its stderr shown.

use std::process::Command;

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/mailclient.py");

/// Runs `mailclient.py <args>` off the async runtime and parses its JSON output.
pub async fn mailclient(args: Vec<String>) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("python3")
            .arg(SCRIPT)
            .args(&args)
            .output()
            .expect("run python3 (is it installed?)");
        assert!(
            out.status.success(),
            "mailclient.py {} failed:\n{}",
            args.first().map(String::as_str).unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "mailclient.py printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    })
    .await
    .expect("python task")
}

/// Builder for the common arguments.
pub struct Client {
    args: Vec<String>,
}

impl Client {
    pub fn new(command: &str, port: u16, ca: &std::path::Path, user: &str, password: &str) -> Self {
        let args = vec![
            command.to_string(),
            "--port".into(),
            port.to_string(),
            "--ca".into(),
            ca.display().to_string(),
            "--user".into(),
            user.into(),
            "--password".into(),
            password.into(),
        ];
        Self { args }
    }

    pub fn arg(mut self, name: &str, value: impl ToString) -> Self {
        self.args.push(name.into());
        self.args.push(value.to_string());
        self
    }

    pub fn flag(mut self, name: &str) -> Self {
        self.args.push(name.into());
        self
    }

    pub async fn run(self) -> serde_json::Value {
        mailclient(self.args).await
    }
}
