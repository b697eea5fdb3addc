//! Managing messages and folders over IMAP, so that it works against any server (Dovecot as
//! well as Tern): list the folders with their counts (LIST and STATUS, RFC 3501 §6.3.8 and
//! §6.3.10, special-use attributes from RFC 6154), move a message (MOVE from RFC 6851 when
//! the server offers it, else COPY + STORE `\Deleted` + UID EXPUNGE from RFC 4315, or plain
//! EXPUNGE without UIDPLUS), and delete one (move it to the `\Trash` folder, or mark and
//! expunge it for good).
//!
//! Messages are named by sequence number as `tern inbox` shows them, and are turned into UIDs
//! at once so that every later command addresses the same message even if others vanish.
//!
//! Deliberately not done here: creating, renaming or deleting folders, moving several messages
//! at once, and the `[TRYCREATE]` dance (a missing target folder is reported, not created).

use anyhow::{Context, Result, anyhow, bail};
use async_imap::error::Error as ImapError;
use async_imap::types::{Capabilities, Fetch, Name, NameAttribute};
use futures::TryStreamExt;

use super::Server;
use super::imap::{ImapSession, connect, logout, mailbox_error, step};

/// One line of `tern folders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    pub name: String,
    /// The RFC 6154 special use, e.g. `\Trash`, when the server announces one.
    pub special_use: Option<String>,
    /// `None` for a `\Noselect` name (a mere level of the hierarchy) or a failed STATUS.
    pub messages: Option<u32>,
    pub unseen: Option<u32>,
}

/// What [`delete`] did with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Moved into this trash folder, from where it can be restored.
    MovedTo(String),
    /// Removed for good.
    Expunged,
}

/// Logs in and out again: proves the server is reachable and the credentials right.
pub async fn verify_login(server: &Server) -> Result<()> {
    let session = connect(server).await?;
    logout(session).await;
    Ok(())
}

fn special_use(attributes: &[NameAttribute<'_>]) -> Option<String> {
    attributes.iter().find_map(|a| {
        Some(
            match a {
                NameAttribute::All => "\\All",
                NameAttribute::Archive => "\\Archive",
                NameAttribute::Drafts => "\\Drafts",
                NameAttribute::Flagged => "\\Flagged",
                NameAttribute::Junk => "\\Junk",
                NameAttribute::Sent => "\\Sent",
                NameAttribute::Trash => "\\Trash",
                _ => return None,
            }
            .to_string(),
        )
    })
}

async fn list_names(session: &mut ImapSession, at: &str) -> Result<Vec<Name>> {
    step(|| format!("LIST on {at}"), async {
        session
            .list(Some(""), Some("*"))
            .await
            .context("list folders")?
            .try_collect()
            .await
            .context("read the folder list")
    })
    .await
}

/// Lists every folder with its message and unseen counts.
pub async fn folders(server: &Server) -> Result<Vec<Folder>> {
    let mut session = connect(server).await?;
    let at = format!("{}:{}", server.host, server.port);
    let names = list_names(&mut session, &at).await?;
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        let selectable = !name
            .attributes()
            .iter()
            .any(|a| matches!(a, NameAttribute::NoSelect));
        let status = if selectable {
            // A folder that refuses STATUS still belongs in the list, without counts.
            step(|| format!("STATUS {} on {at}", name.name()), async {
                Ok(session.status(name.name(), "(MESSAGES UNSEEN)").await.ok())
            })
            .await?
        } else {
            None
        };
        out.push(Folder {
            name: name.name().to_string(),
            special_use: special_use(name.attributes()),
            messages: status.as_ref().map(|s| s.exists),
            unseen: status.and_then(|s| s.unseen),
        });
    }
    logout(session).await;
    Ok(out)
}

/// Selects `mailbox`, checks that message `n` exists and returns its UID with the server's
/// capabilities (asked after login, when they may differ from the greeting's).
async fn open_message(
    session: &mut ImapSession,
    server: &Server,
    mailbox: &str,
    n: u32,
) -> Result<(u32, Capabilities)> {
    let at = format!("{}:{}", server.host, server.port);
    let caps = step(|| format!("CAPABILITY on {at}"), async {
        session.capabilities().await.context("ask for capabilities")
    })
    .await?;
    let status = step(|| format!("SELECT {mailbox} on {at}"), async {
        session
            .select(mailbox)
            .await
            .map_err(|e| mailbox_error(e, mailbox, server))
    })
    .await?;
    if n == 0 || n > status.exists {
        bail!(
            "message {n} does not exist in {mailbox} ({} messages): see tern inbox for the numbers",
            status.exists
        );
    }
    let fetches: Vec<Fetch> = step(|| format!("FETCH {n} UID on {at}"), async {
        session
            .fetch(n.to_string(), "UID")
            .await
            .context("fetch the message's UID")?
            .try_collect()
            .await
            .context("read the message's UID")
    })
    .await?;
    let uid = fetches
        .iter()
        .filter(|f| f.message == n)
        .find_map(|f| f.uid)
        .ok_or_else(|| anyhow!("the server sent no UID for message {n} in {mailbox}"))?;
    Ok((uid, caps))
}

/// Explains a refused COPY or MOVE: a server without them answers BAD (unknown command) or
/// NO with a "not implemented" text, which is not the person's fault.
fn transfer_error(error: ImapError, dest: &str) -> anyhow::Error {
    let unsupported = match &error {
        ImapError::Bad(_) => true,
        ImapError::No(text) => {
            let t = text.to_ascii_lowercase();
            t.contains("not implemented") || t.contains("not supported") || t.contains("unknown")
        }
        _ => false,
    };
    if unsupported {
        anyhow::Error::new(error).context("the server does not support COPY/MOVE")
    } else {
        anyhow::Error::new(error).context(format!(
            "the server refused to put the message into {dest:?}: does that folder exist? \
             (see tern folders)"
        ))
    }
}

/// Marks `uid` `\Deleted` and expunges it: with UIDPLUS only that message (RFC 4315 §2.1);
/// without it EXPUNGE, which also removes any other message already marked `\Deleted`.
async fn expunge_uid(session: &mut ImapSession, caps: &Capabilities, uid: u32) -> Result<()> {
    let _: Vec<Fetch> = session
        .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)")
        .await
        .context("mark the message \\Deleted")?
        .try_collect()
        .await
        .context("mark the message \\Deleted")?;
    if caps.has_str("UIDPLUS") {
        let _: Vec<u32> = session
            .uid_expunge(uid.to_string())
            .await
            .context("UID EXPUNGE the message")?
            .try_collect()
            .await
            .context("UID EXPUNGE the message")?;
    } else {
        let _: Vec<u32> = session
            .expunge()
            .await
            .context("EXPUNGE the mailbox")?
            .try_collect()
            .await
            .context("EXPUNGE the mailbox")?;
    }
    Ok(())
}

async fn transfer(
    session: &mut ImapSession,
    caps: &Capabilities,
    uid: u32,
    dest: &str,
) -> Result<()> {
    if caps.has_str("MOVE") {
        return session
            .uid_mv(uid.to_string(), dest)
            .await
            .map_err(|e| transfer_error(e, dest));
    }
    session
        .uid_copy(uid.to_string(), dest)
        .await
        .map_err(|e| transfer_error(e, dest))?;
    expunge_uid(session, caps, uid).await
}

/// Moves message `n` of `mailbox` into `dest`.
pub async fn move_message(server: &Server, mailbox: &str, n: u32, dest: &str) -> Result<()> {
    let mut session = connect(server).await?;
    let at = format!("{}:{}", server.host, server.port);
    let result = async {
        let (uid, caps) = open_message(&mut session, server, mailbox, n).await?;
        step(|| format!("moving message {n} on {at}"), async {
            transfer(&mut session, &caps, uid, dest).await
        })
        .await
    }
    .await;
    logout(session).await;
    result
}

/// Deletes message `n` of `mailbox`: into the `\Trash` folder when the server has one and the
/// message is not already there, else (or with `expunge`) for good.
pub async fn delete(server: &Server, mailbox: &str, n: u32, expunge: bool) -> Result<Deleted> {
    let mut session = connect(server).await?;
    let at = format!("{}:{}", server.host, server.port);
    let result = async {
        let trash = if expunge {
            None
        } else {
            list_names(&mut session, &at)
                .await?
                .iter()
                .find(|n| n.attributes().contains(&NameAttribute::Trash))
                .map(|n| n.name().to_string())
        };
        let (uid, caps) = open_message(&mut session, server, mailbox, n).await?;
        step(|| format!("deleting message {n} on {at}"), async {
            match trash {
                Some(trash) if trash != mailbox => {
                    transfer(&mut session, &caps, uid, &trash).await?;
                    Ok(Deleted::MovedTo(trash))
                }
                _ => {
                    expunge_uid(&mut session, &caps, uid).await?;
                    Ok(Deleted::Expunged)
                }
            }
        })
        .await
    }
    .await;
    logout(session).await;
    result
}

#[cfg(test)]
mod tests {
    use super::super::Security;
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// Plays a server: for each step, reads one client line, checks it (without its tag)
    /// against the expectation, and answers with the lines given, `TAG` replaced by the
    /// client's tag. Returns the address and a handle that fails if the client strayed.
    async fn scripted(
        script: Vec<(&'static str, &'static str)>,
    ) -> (Server, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut read = BufReader::new(read);
            write
                .write_all(b"* OK scripted IMAP ready\r\n")
                .await
                .unwrap();
            let mut seen = Vec::new();
            for (expect, answer) in script {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap() == 0 {
                    panic!("client hung up, expected {expect:?}; saw {seen:?}");
                }
                let line = line.trim_end().to_string();
                let (tag, rest) = line.split_once(' ').unwrap();
                assert_eq!(rest, expect, "after {seen:?}");
                seen.push(rest.to_string());
                write
                    .write_all(answer.replace("TAG", tag).as_bytes())
                    .await
                    .unwrap();
            }
            seen
        });
        let server = Server {
            host: "127.0.0.1".into(),
            port,
            security: Security::Plain,
            user: "alice@example.test".into(),
            password: "pw".into(),
            ca_file: None,
        };
        (server, handle)
    }

    const LOGIN: (&str, &str) = (
        "LOGIN \"alice@example.test\" \"pw\"",
        "TAG OK logged in\r\n",
    );
    const LOGOUT: (&str, &str) = ("LOGOUT", "* BYE bye\r\nTAG OK done\r\n");
    const LIST: (&str, &str) = (
        "LIST \"\" *",
        "* LIST (\\HasNoChildren) \"/\" INBOX\r\n\
         * LIST (\\HasNoChildren \\Trash) \"/\" Bin\r\n\
         * LIST (\\Noselect) \"/\" Old\r\n\
         TAG OK done\r\n",
    );
    const SELECT: (&str, &str) = (
        "SELECT \"INBOX\"",
        "* 3 EXISTS\r\n* OK [UIDVALIDITY 1] x\r\nTAG OK [READ-WRITE] done\r\n",
    );
    const FETCH_UID: (&str, &str) = ("FETCH 2 UID", "* 2 FETCH (UID 42)\r\nTAG OK done\r\n");

    #[tokio::test]
    async fn folders_show_counts_and_special_use() {
        let (server, handle) = scripted(vec![
            LOGIN,
            LIST,
            (
                "STATUS \"INBOX\" (MESSAGES UNSEEN)",
                "* STATUS INBOX (MESSAGES 3 UNSEEN 1)\r\nTAG OK done\r\n",
            ),
            (
                "STATUS \"Bin\" (MESSAGES UNSEEN)",
                "TAG NO no such thing\r\n",
            ),
            LOGOUT,
        ])
        .await;
        let list = folders(&server).await.unwrap();
        handle.await.unwrap();
        assert_eq!(
            list,
            vec![
                Folder {
                    name: "INBOX".into(),
                    special_use: None,
                    messages: Some(3),
                    unseen: Some(1)
                },
                Folder {
                    name: "Bin".into(),
                    special_use: Some("\\Trash".into()),
                    messages: None,
                    unseen: None
                },
                Folder {
                    name: "Old".into(),
                    special_use: None,
                    messages: None,
                    unseen: None
                },
            ]
        );
    }

    #[tokio::test]
    async fn delete_moves_to_trash_with_move() {
        let (server, handle) = scripted(vec![
            LOGIN,
            LIST,
            (
                "CAPABILITY",
                "* CAPABILITY IMAP4rev1 MOVE UIDPLUS\r\nTAG OK done\r\n",
            ),
            SELECT,
            FETCH_UID,
            ("UID MOVE 42 \"Bin\"", "TAG OK moved\r\n"),
            LOGOUT,
        ])
        .await;
        let done = delete(&server, "INBOX", 2, false).await.unwrap();
        handle.await.unwrap();
        assert_eq!(done, Deleted::MovedTo("Bin".into()));
    }

    #[tokio::test]
    async fn move_without_move_copies_marks_and_uid_expunges() {
        let (server, handle) = scripted(vec![
            LOGIN,
            (
                "CAPABILITY",
                "* CAPABILITY IMAP4rev1 UIDPLUS\r\nTAG OK done\r\n",
            ),
            SELECT,
            FETCH_UID,
            ("UID COPY 42 \"Archive\"", "TAG OK copied\r\n"),
            (
                "UID STORE 42 +FLAGS.SILENT (\\Deleted)",
                "TAG OK stored\r\n",
            ),
            ("UID EXPUNGE 42", "* 2 EXPUNGE\r\nTAG OK expunged\r\n"),
            LOGOUT,
        ])
        .await;
        move_message(&server, "INBOX", 2, "Archive").await.unwrap();
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn expunge_without_uidplus_uses_expunge() {
        let (server, handle) = scripted(vec![
            LOGIN,
            ("CAPABILITY", "* CAPABILITY IMAP4rev1\r\nTAG OK done\r\n"),
            SELECT,
            FETCH_UID,
            (
                "UID STORE 42 +FLAGS.SILENT (\\Deleted)",
                "TAG OK stored\r\n",
            ),
            ("EXPUNGE", "* 2 EXPUNGE\r\nTAG OK expunged\r\n"),
            LOGOUT,
        ])
        .await;
        let done = delete(&server, "INBOX", 2, true).await.unwrap();
        handle.await.unwrap();
        assert_eq!(done, Deleted::Expunged);
    }

    #[tokio::test]
    async fn a_server_without_copy_gets_a_clear_error() {
        // What Tern's own server answers today.
        let (server, handle) = scripted(vec![
            LOGIN,
            ("CAPABILITY", "* CAPABILITY IMAP4rev1\r\nTAG OK done\r\n"),
            SELECT,
            FETCH_UID,
            (
                "UID COPY 42 \"Archive\"",
                "TAG NO [CANNOT] UID COPY is not implemented\r\n",
            ),
            LOGOUT,
        ])
        .await;
        let err = move_message(&server, "INBOX", 2, "Archive")
            .await
            .unwrap_err();
        handle.await.unwrap();
        assert!(
            format!("{err:#}").contains("the server does not support COPY/MOVE"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn a_missing_message_is_refused_before_anything_changes() {
        let (server, handle) = scripted(vec![
            LOGIN,
            ("CAPABILITY", "* CAPABILITY IMAP4rev1\r\nTAG OK done\r\n"),
            SELECT,
            LOGOUT,
        ])
        .await;
        let err = move_message(&server, "INBOX", 9, "Archive")
            .await
            .unwrap_err();
        handle.await.unwrap();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
