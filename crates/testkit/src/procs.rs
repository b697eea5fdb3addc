//! The four agents as separate processes (the real binaries), configured through `TERN_*`
//! environment variables, each reporting the addresses it bound in its JSON log.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the running test executable (`target/<profile>/NAME`).
/// The workspace test command builds every binary first; a missing one is a loud failure.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let mut dir = exe
        .parent()
        .expect("test executable directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found: build the workspace first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A spawned agent; killed on drop.
pub struct Agent {
    pub name: String,
    child: Child,
    /// Fields of the agent's "... serving" log event, e.g. "grpc.address".
    pub addresses: HashMap<String, String>,
    log: PathBuf,
}

impl Agent {
    /// Starts `binary` with `env`, waits for its "serving" log event and records its addresses.
    /// Its stderr is kept in `log_dir/<name>.log` for post-mortems.
    pub fn spawn(name: &str, env: &[(&str, String)], log_dir: &Path) -> Agent {
        let log = log_dir.join(format!("{name}.log"));
        let mut cmd = Command::new(binary(name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERN_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        // Owned by the guard from here on, so a panic below still kills and reaps the process.
        let mut agent = Agent {
            name: name.into(),
            child,
            addresses: HashMap::new(),
            log: log.clone(),
        };
        let stderr = agent.child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel::<String>();
        let log_path = log.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(&log_path).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addresses) = serving_fields(&line) {
                        // Keep draining the pipe so the agent never blocks on a full stderr.
                        std::thread::spawn(move || for _ in rx {});
                        agent.addresses = addresses;
                        return agent;
                    }
                    seen.push(line);
                }
                Err(_) => {
                    panic!(
                        "{name} did not report serving within 30 s; its log:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    pub fn address(&self, field: &str) -> String {
        self.addresses
            .get(field)
            .cloned()
            .unwrap_or_else(|| panic!("{} did not log {field}", self.name))
    }

    /// SIGKILL: the process dies at once, holding whatever it held (leases, connections).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not stop within 30 s of SIGTERM; log at {}",
                    self.name,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The string fields of a JSON log line whose message ends in "serving".
fn serving_fields(line: &str) -> Option<HashMap<String, String>> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?.as_object()?;
    let msg = fields.get("message")?.as_str()?;
    if !msg.ends_with("serving") {
        return None;
    }
    Some(
        fields
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_line_fields_are_read() {
        let line = r#"{"timestamp":"x","level":"INFO","fields":{"message":"mda serving","grpc.address":"127.0.0.1:4242"},"target":"tern_mda"}"#;
        let f = serving_fields(line).unwrap();
        assert_eq!(f["grpc.address"], "127.0.0.1:4242");
        assert!(serving_fields(r#"{"fields":{"message":"other"}}"#).is_none());
        assert!(serving_fields("not json").is_none());
    }
}
