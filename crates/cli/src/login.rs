//! The saved login of the `tern` mail commands: `tern login` writes the server and the
//! credentials to `$XDG_CONFIG_HOME/tern/config.toml` (or `~/.config/tern/config.toml`), and
//! `send`, `inbox`, `read` and the other mail commands read it back, with flags and the
//! `TERN_USER` / `TERN_PASSWORD` / `TERN_HOST` / `TERN_CA` environment overriding it, field by
//! field: flags > environment > file.
//!
//! The file holds a password, so it is written with mode 0600 inside a 0700 directory, replaced
//! atomically (write a new file, then rename), and a file that others can read is refused on
//! load, as ssh refuses a readable private key. Several accounts live side by side under
//! `[accounts.NAME]`; "default" is the one used without `--account`.
//!
//! Deliberately not done here: any keyring or encryption of the password (the file is the
//! keyring, protected by the file system as `~/.netrc` is), OAuth tokens, and talking to a
//! server: verifying a login before saving it is the caller's business (`main.rs` does it over
//! IMAP). The environment is passed in as a lookup function so tests never touch the process
//! environment.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use tern::mua::{Security, Server};
use tern::up::State;

/// The account name used when `--account` is not given.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
}

/// One saved account: where its server is and how to log in.
///
/// Either `host` is set (a server anywhere, with its ports) or `data` is (a local `tern up`,
/// whose ports are read from its `state.json` each time, since `--ephemeral-ports` changes them
/// at every start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user: String,
    /// The password or app token, in clear: the file's permissions are its protection.
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    #[serde(default = "default_starttls")]
    pub smtp_security: Security,
    #[serde(default = "default_imap_port")]
    pub imap_port: u16,
    #[serde(default = "default_starttls")]
    pub imap_security: Security,
    /// Extra CA certificate (PEM) to trust for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_imap_port() -> u16 {
    143
}
fn default_starttls() -> Security {
    Security::Starttls
}

/// The conventional port for a protocol and security (RFC 6409 587, RFC 8314 465 and 993,
/// RFC 3501 143).
pub fn default_port(purpose: Purpose, security: Security) -> u16 {
    match (purpose, security) {
        (Purpose::Submission, Security::Tls) => 465,
        (Purpose::Submission, _) => 587,
        (Purpose::Imap, Security::Tls) => 993,
        (Purpose::Imap, _) => 143,
    }
}

/// Which of the account's two servers a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Submission,
    Imap,
}

/// Where the configuration file lives: `$XDG_CONFIG_HOME/tern/config.toml` when that variable
/// is an absolute path (the XDG Base Directory spec says to ignore a relative one), else
/// `$HOME/.config/tern/config.toml`.
pub fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    if let Some(xdg) = env("XDG_CONFIG_HOME").filter(|v| Path::new(v).is_absolute()) {
        return Ok(Path::new(&xdg).join("tern").join("config.toml"));
    }
    match env("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(Path::new(&home)
            .join(".config")
            .join("tern")
            .join("config.toml")),
        None => bail!("neither XDG_CONFIG_HOME nor HOME is set: cannot find the tern config file"),
    }
}

impl Config {
    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Config> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "{} holds a password but others can read it: run chmod 600 {} (or tern login again)",
                path.display(),
                path.display()
            );
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// Writes the file with mode 0600 in a directory with mode 0700, replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .with_context(|| format!("{} has no parent directory", path.display()))?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
        // The directory may predate us with looser permissions; it is ours, so tighten it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("set permissions of {}", dir.display()))?;
        let text = toml::to_string(self).context("serialize the tern config")?;
        let tmp = dir.join(format!(".config.toml.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))
    }

    /// Removes one account; deletes the file when none is left. Returns whether it existed.
    pub fn remove(path: &Path, name: &str) -> Result<bool> {
        let mut config = Config::load(path)?;
        if config.accounts.remove(name).is_none() {
            return Ok(false);
        }
        if config.accounts.is_empty() {
            std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
        } else {
            config.save(path)?;
        }
        Ok(true)
    }
}

/// The server settings given on a mail command's command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: bool,
    pub ca: Option<PathBuf>,
}

/// The `TERN_*` variables that override the saved account.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Option<String>,
    pub ca: Option<PathBuf>,
}

impl Env {
    /// Reads the variables through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Env {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        Env {
            user: get("TERN_USER"),
            password: get("TERN_PASSWORD"),
            host: get("TERN_HOST"),
            ca: get("TERN_CA").map(PathBuf::from),
        }
    }
}

/// Turns flags, environment and the saved account into the [`Server`] to use, field by field
/// with flags first. `fallback_user` is the last resort for the account (`tern send --from`);
/// `local_data` is the `--data` directory used when nothing names a server.
pub fn resolve(
    flags: &Flags,
    env: &Env,
    saved: Option<&Account>,
    fallback_user: Option<&str>,
    purpose: Purpose,
    local_data: &Path,
    load_state: &dyn Fn(&Path) -> Result<State>,
) -> Result<Server> {
    let user = flags
        .user
        .clone()
        .or_else(|| env.user.clone())
        .or_else(|| saved.map(|a| a.user.clone()))
        .or_else(|| fallback_user.map(str::to_string))
        .context("give the account with --user or TERN_USER, or save one with tern login")?;
    // The saved password belongs to the saved user only: never send it for another account.
    let saved_password = saved.filter(|a| a.user == user).map(|a| a.password.clone());
    let password = flags
        .password
        .clone()
        .or_else(|| env.password.clone())
        .or(saved_password)
        .with_context(|| {
            format!("give the password of {user} with --password or TERN_PASSWORD, or save it with tern login")
        })?;
    let flag_security = flags.tls.then_some(Security::Tls);
    let ca = flags.ca.clone().or_else(|| env.ca.clone());

    // An explicit host (flag or environment) replaces the saved server altogether.
    if let Some(host) = flags.host.clone().or_else(|| env.host.clone()) {
        let security = flag_security.unwrap_or(Security::Starttls);
        return Ok(Server {
            host,
            port: flags.port.unwrap_or(default_port(purpose, security)),
            security,
            user,
            password,
            ca_file: ca,
        });
    }
    match saved {
        Some(account) if account.host.is_some() => {
            let (saved_port, saved_security) = match purpose {
                Purpose::Submission => (account.smtp_port, account.smtp_security),
                Purpose::Imap => (account.imap_port, account.imap_security),
            };
            let security = flag_security.unwrap_or(saved_security);
            let port = flags.port.unwrap_or(if security == saved_security {
                saved_port
            } else {
                default_port(purpose, security)
            });
            Ok(Server {
                host: account.host.clone().unwrap_or_default(),
                port,
                security,
                user,
                password,
                ca_file: ca.or_else(|| account.ca.clone()),
            })
        }
        _ => {
            let data = saved.and_then(|a| a.data.as_deref()).unwrap_or(local_data);
            let state = load_state(data).with_context(|| {
                "no server given: pass --host (or TERN_HOST), save one with tern login --host, \
                 or start a local system with tern up"
            })?;
            let tls = flags.tls;
            let addr = match (purpose, tls) {
                (Purpose::Submission, false) => state.submission,
                (Purpose::Submission, true) => state.submissions,
                (Purpose::Imap, false) => state.imap,
                (Purpose::Imap, true) => state.imaps,
            };
            Ok(Server {
                host: addr.ip().to_string(),
                port: flags.port.unwrap_or(addr.port()),
                security: if tls {
                    Security::Tls
                } else {
                    Security::Starttls
                },
                user,
                password,
                ca_file: ca.or(Some(state.cert)),
            })
        }
    }
}

/// A one-line description of a saved account, without the password.
pub fn describe(name: &str, account: &Account) -> String {
    let sec = |s: Security| match s {
        Security::Starttls => "STARTTLS",
        Security::Tls => "TLS",
        Security::Plain => "no TLS",
    };
    let place = match (&account.host, &account.data) {
        (Some(host), _) => format!(
            "{host} (SMTP {} {}, IMAP {} {}{})",
            account.smtp_port,
            sec(account.smtp_security),
            account.imap_port,
            sec(account.imap_security),
            account
                .ca
                .as_ref()
                .map(|c| format!(", CA {}", c.display()))
                .unwrap_or_default()
        ),
        (None, Some(data)) => format!("the local tern up in {}", data.display()),
        (None, None) => "no server".to_string(),
    };
    format!("account {name}: {} at {place}", account.user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn remote() -> Account {
        Account {
            user: "alice@example.test".into(),
            password: "saved-secret".into(),
            host: Some("mail.example.test".into()),
            data: None,
            smtp_port: 587,
            smtp_security: Security::Starttls,
            imap_port: 993,
            imap_security: Security::Tls,
            ca: Some("/etc/ca.pem".into()),
        }
    }

    fn no_state(_: &Path) -> Result<State> {
        bail!("no state.json")
    }

    fn state(_: &Path) -> Result<State> {
        let a = |p: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], p)) };
        Ok(State {
            pid: 1,
            database_url: "sqlite://x".into(),
            cert: "/data/cert.pem".into(),
            smtp: a(25),
            submission: a(1587),
            submissions: a(1465),
            imap: a(1143),
            imaps: a(1993),
            pop3: a(110),
            pop3s: a(995),
            lmtp: a(24),
            managesieve: None,
            grpc_msa: a(1),
            grpc_mta: a(2),
            grpc_mda: a(3),
            grpc_maa: a(4),
            http: None,
        })
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-login-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn config_round_trips_with_private_permissions() {
        let dir = scratch("roundtrip");
        let path = dir.join("tern").join("config.toml");
        let mut config = Config::default();
        config.accounts.insert(DEFAULT_ACCOUNT.into(), remote());
        let mut local = remote();
        local.host = None;
        local.data = Some("/srv/tern-data".into());
        config.accounts.insert("local".into(), local);
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // A file others can read is refused rather than trusted.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        // Saving again repairs the permissions.
        config.save(&path).unwrap();
        assert_eq!(mode(&path), 0o600);

        assert!(Config::remove(&path, "local").unwrap());
        assert!(!Config::remove(&path, "local").unwrap());
        assert_eq!(Config::load(&path).unwrap().accounts.len(), 1);
        assert!(Config::remove(&path, DEFAULT_ACCOUNT).unwrap());
        assert!(!path.exists(), "the last logout removes the file");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_fields_take_the_standard_ports() {
        let config: Config = toml::from_str(
            "[accounts.default]\nuser = \"a@b.test\"\npassword = \"p\"\nhost = \"h.test\"\n",
        )
        .unwrap();
        let a = &config.accounts["default"];
        assert_eq!((a.smtp_port, a.smtp_security), (587, Security::Starttls));
        assert_eq!((a.imap_port, a.imap_security), (143, Security::Starttls));
        assert!(toml::from_str::<Config>("[accounts.x]\nuser = \"a\"\n").is_err());
    }

    #[test]
    fn config_path_prefers_absolute_xdg() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/a")]);
        assert_eq!(
            config_path(&both).unwrap(),
            PathBuf::from("/x/tern/config.toml")
        );
        let relative = env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/a")]);
        assert_eq!(
            config_path(&relative).unwrap(),
            PathBuf::from("/home/a/.config/tern/config.toml")
        );
        assert!(config_path(&env(&[])).is_err());
    }

    #[test]
    fn saved_account_is_used_when_nothing_overrides_it() {
        let s = resolve(
            &Flags::default(),
            &Env::default(),
            Some(&remote()),
            None,
            Purpose::Imap,
            Path::new("unused"),
            &no_state,
        )
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("mail.example.test", 993, Security::Tls)
        );
        assert_eq!(
            (s.user.as_str(), s.password.as_str()),
            ("alice@example.test", "saved-secret")
        );
        assert_eq!(s.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        let s = resolve(
            &Flags::default(),
            &Env::default(),
            Some(&remote()),
            None,
            Purpose::Submission,
            Path::new("unused"),
            &no_state,
        )
        .unwrap();
        assert_eq!((s.port, s.security), (587, Security::Starttls));
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let env = Env::from_lookup(&|k| match k {
            "TERN_USER" => Some("env@example.test".into()),
            "TERN_PASSWORD" => Some("env-secret".into()),
            "TERN_HOST" => Some("".into()),
            _ => None,
        });
        assert_eq!(env.host, None, "an empty variable counts as unset");
        let s = resolve(
            &Flags::default(),
            &env,
            Some(&remote()),
            None,
            Purpose::Imap,
            Path::new("unused"),
            &no_state,
        )
        .unwrap();
        assert_eq!(
            (s.user.as_str(), s.password.as_str()),
            ("env@example.test", "env-secret")
        );
        assert_eq!(s.host, "mail.example.test");

        let flags = Flags {
            user: Some("flag@example.test".into()),
            password: Some("flag-secret".into()),
            host: Some("other.test".into()),
            tls: true,
            ..Flags::default()
        };
        let s = resolve(
            &flags,
            &env,
            Some(&remote()),
            None,
            Purpose::Submission,
            Path::new("unused"),
            &no_state,
        )
        .unwrap();
        assert_eq!(
            (s.user.as_str(), s.password.as_str()),
            ("flag@example.test", "flag-secret")
        );
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("other.test", 465, Security::Tls)
        );
        assert_eq!(
            s.ca_file, None,
            "another host does not inherit the saved CA"
        );

        // --tls on the saved host switches to the implicit-TLS port; --port wins over that.
        let flags = Flags {
            tls: true,
            ..Flags::default()
        };
        let s = resolve(
            &flags,
            &Env::default(),
            Some(&remote()),
            None,
            Purpose::Submission,
            Path::new("unused"),
            &no_state,
        )
        .unwrap();
        assert_eq!((s.port, s.security), (465, Security::Tls));
        let flags = Flags {
            port: Some(2525),
            ..Flags::default()
        };
        let s = resolve(
            &flags,
            &Env::default(),
            Some(&remote()),
            None,
            Purpose::Submission,
            Path::new("unused"),
            &no_state,
        )
        .unwrap();
        assert_eq!(s.port, 2525);
    }

    #[test]
    fn saved_password_never_goes_to_another_user() {
        let flags = Flags {
            user: Some("mallory@example.test".into()),
            ..Flags::default()
        };
        let err = resolve(
            &flags,
            &Env::default(),
            Some(&remote()),
            None,
            Purpose::Imap,
            Path::new("unused"),
            &no_state,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("password of mallory@example.test"), "{err}");
    }

    #[test]
    fn local_system_is_read_from_state_json() {
        let flags = Flags {
            user: Some("a@b.test".into()),
            password: Some("p".into()),
            ..Flags::default()
        };
        let s = resolve(
            &flags,
            &Env::default(),
            None,
            None,
            Purpose::Imap,
            Path::new("d"),
            &state,
        )
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("127.0.0.1", 1143, Security::Starttls)
        );
        assert_eq!(s.ca_file, Some(PathBuf::from("/data/cert.pem")));
        let s = resolve(
            &Flags {
                tls: true,
                ..flags.clone()
            },
            &Env::default(),
            None,
            None,
            Purpose::Submission,
            Path::new("d"),
            &state,
        )
        .unwrap();
        assert_eq!((s.port, s.security), (1465, Security::Tls));

        // A saved local account reads its own data directory.
        let mut local = remote();
        local.host = None;
        local.data = Some("/srv/saved-data".into());
        let seen = std::cell::RefCell::new(PathBuf::new());
        let record = |p: &Path| {
            *seen.borrow_mut() = p.to_path_buf();
            state(p)
        };
        let s = resolve(
            &Flags::default(),
            &Env::default(),
            Some(&local),
            None,
            Purpose::Imap,
            Path::new("d"),
            &record,
        )
        .unwrap();
        assert_eq!(*seen.borrow(), PathBuf::from("/srv/saved-data"));
        assert_eq!(s.password, "saved-secret");

        let err = resolve(
            &flags,
            &Env::default(),
            None,
            None,
            Purpose::Imap,
            Path::new("d"),
            &no_state,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("tern login --host"), "{err:#}");
    }

    #[test]
    fn description_never_shows_the_password() {
        let text = describe(DEFAULT_ACCOUNT, &remote());
        assert!(!text.contains("saved-secret"), "{text}");
        assert!(
            text.contains("alice@example.test") && text.contains("IMAP 993 TLS"),
            "{text}"
        );
    }
}
