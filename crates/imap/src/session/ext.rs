//! Extensions kept out of the main dispatch: QUOTA (RFC 9208), APPENDLIMIT (RFC 7889),
//! UTF8=ACCEPT (RFC 6855), COMPRESS=DEFLATE (RFC 4978), and the entry to extended LIST
//! (`list.rs`) for the commands imap-codec cannot parse.
//!
//! Quota: the account is the one quota root, named `""`, holding every mailbox; its resources
//! are STORAGE (in units of 1024 octets: usage rounded up, limit down) and MESSAGE. An
//! account without limits has no quota root. Limits are an administrator's business
//! (`tern account quota`): SETQUOTA is refused.

use std::borrow::Cow;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::utf8::Utf8Kind;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};

use super::list::{self, ListCommand};
use super::{Session, State, backend_error, decode_name, leading_tag, normalize_inbox};
use crate::response::{self, bad, code_other, no, ok};
use crate::{Action, Backend, QuotaInfo, mutf7};

impl ListCommand {
    /// The basic `LIST reference pattern` as imap-codec parsed it.
    pub(crate) fn basic(reference: &Mailbox<'_>, pattern: &ListMailbox<'_>) -> Self {
        let reference = match reference {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(other) => other.as_ref().to_vec(),
        };
        let pattern = match pattern {
            ListMailbox::Token(token) => token.as_ref().to_vec(),
            ListMailbox::String(string) => string.as_ref().to_vec(),
        };
        Self {
            reference,
            patterns: vec![pattern],
            options: list::Options::default(),
        }
    }
}

/// The `QUOTA` response for the account's root, or None when it has no limits.
fn quota_response(quota: &QuotaInfo) -> Option<Vec<u8>> {
    let mut resources = Vec::new();
    if let Some(limit) = quota.storage_limit {
        resources.push(format!(
            "STORAGE {} {}",
            quota.storage_used.div_ceil(1024),
            limit / 1024
        ));
    }
    if let Some(limit) = quota.message_limit {
        resources.push(format!("MESSAGE {} {limit}", quota.messages_used));
    }
    (!resources.is_empty())
        .then(|| format!("* QUOTA \"\" ({})\r\n", resources.join(" ")).into_bytes())
}

/// Takes `UTF8 (~{n}...)` apart in an APPEND (RFC 6855 §4, which imap-codec does not parse):
/// the same command with a plain `~{n}` literal8, or None when it is not that form.
fn unwrap_utf8_append(bytes: &[u8]) -> Option<Vec<u8>> {
    let line_end = bytes.iter().position(|&b| b == b'\n')? + 1;
    let line = &bytes[..line_end];
    let mut words = line.split(|&b| b == b' ');
    words.next()?;
    if !words.next()?.eq_ignore_ascii_case(b"APPEND") {
        return None;
    }
    const MARK: &[u8] = b" UTF8 (~{";
    let at = line
        .windows(MARK.len())
        .rposition(|w| w.eq_ignore_ascii_case(MARK))?;
    let close = line[at..].iter().position(|&b| b == b'}')? + at;
    if !matches!(&line[close + 1..], b"\r\n" | b"\n") {
        return None;
    }
    let digits = &line[at + MARK.len()..close];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let data_end = line_end.checked_add(n)?;
    let tail = bytes.get(data_end..)?.strip_prefix(b")")?;
    let mut out = line[..=at].to_vec();
    out.extend_from_slice(&line[at + b" UTF8 (".len()..]);
    out.extend_from_slice(&bytes[line_end..data_end]);
    out.extend_from_slice(tail);
    Some(out)
}

impl<B: Backend> Session<B> {
    /// Capabilities of the extensions in this file and `list.rs`.
    pub(super) fn extension_capabilities(&self) -> Vec<Cow<'static, str>> {
        let mut caps: Vec<Cow<'static, str>> = [
            "LIST-EXTENDED",
            "LIST-STATUS",
            "SPECIAL-USE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
            "UTF8=ACCEPT",
            "SORT",
            "SORT=DISPLAY",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
        ]
        .map(Cow::Borrowed)
        .to_vec();
        if !self.compressed {
            caps.push("COMPRESS=DEFLATE".into());
        }
        caps.push(format!("APPENDLIMIT={}", self.config.max_literal).into());
        caps
    }

    /// ENABLE of one capability (RFC 5161) other than CONDSTORE, QRESYNC and IMAP4rev2: its
    /// name for the ENABLED response when this call newly enabled it, `None` when it is not
    /// one we enable or was on already.
    pub(super) fn enable_extension(
        &mut self,
        capability: &CapabilityEnable<'_>,
    ) -> Option<&'static str> {
        match capability {
            CapabilityEnable::Utf8(Utf8Kind::Accept) => {
                let newly = !self.utf8;
                self.utf8 = true;
                newly.then_some("UTF8=ACCEPT")
            }
            _ => None,
        }
    }

    /// Call after the agent switched the connection to DEFLATE ([`Action::Compress`]): returns
    /// the compressed bytes the client sent after COMPRESS, for the agent to inflate and feed.
    pub fn compression_started(&mut self) -> Vec<u8> {
        self.framer.take_pending()
    }

    /// A client's mailbox name (or pattern) as the backend's UTF-8 name: UTF-8 after
    /// UTF8=ACCEPT (RFC 6855 §3), modified UTF-7 (or stray UTF-8) otherwise.
    pub(super) fn decode_name(&self, raw: &[u8]) -> Option<String> {
        if self.utf8 {
            String::from_utf8(raw.to_vec()).ok()
        } else {
            decode_name(raw)
        }
    }

    pub(super) fn mailbox_name(&self, mailbox: &Mailbox<'_>) -> Option<String> {
        match mailbox {
            Mailbox::Inbox => Some("INBOX".to_string()),
            Mailbox::Other(other) => self
                .decode_name(other.as_ref())
                .map(|name| normalize_inbox(&name)),
        }
    }

    /// A mailbox name as a response writes it: a UTF-8 quoted string after UTF8=ACCEPT,
    /// modified UTF-7 otherwise.
    pub(super) fn wire_name(&self, name: &str) -> Vec<u8> {
        if !self.utf8 {
            return response::string(mutf7::encode(name).as_bytes());
        }
        let quotable = name.len() <= 1024 && !name.chars().any(char::is_control);
        if !quotable {
            return response::literal(name.as_bytes());
        }
        let mut out = Vec::with_capacity(name.len() + 2);
        out.push(b'"');
        for &b in name.as_bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        out
    }

    /// Commands imap-codec could not parse but we know: extended LIST, and APPEND with a
    /// `UTF8 (...)` literal. None when it is neither (the caller answers BAD).
    pub(super) async fn extended_command(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Action> {
        match list::parse(bytes) {
            Ok(Some((tag, cmd))) => {
                self.verbs.push("LIST");
                if matches!(self.state, State::NotAuthenticated) {
                    out.extend(bad(Some(&tag), "LIST requires authentication"));
                } else {
                    self.list_extended(&tag, &cmd, out).await;
                }
                return Some(Action::Continue);
            }
            Err(text) => {
                self.verbs.push("LIST");
                out.extend(bad(leading_tag(bytes).as_ref(), text));
                return Some(Action::Continue);
            }
            Ok(None) => {}
        }
        // RFC 6855 §4: the UTF8 APPEND form is only for clients that enabled UTF8=ACCEPT.
        if !self.utf8 {
            return None;
        }
        let unwrapped = unwrap_utf8_append(bytes)?;
        let Ok((&[], command)) = CommandCodec::default().decode(&unwrapped) else {
            return None;
        };
        self.verbs.push(command.name());
        Some(self.dispatch(command, out).await)
    }

    /// The commands of this file; None for any other command.
    pub(super) async fn dispatch_ext(
        &mut self,
        tag: &Tag<'_>,
        body: &CommandBody<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Action> {
        let authenticated = !matches!(self.state, State::NotAuthenticated);
        match body {
            CommandBody::GetQuota { .. }
            | CommandBody::GetQuotaRoot { .. }
            | CommandBody::SetQuota { .. }
            | CommandBody::Compress { .. }
            | CommandBody::Sort { .. }
            | CommandBody::Thread { .. }
                if !authenticated =>
            {
                out.extend(bad(
                    Some(tag),
                    &format!("{} requires authentication", body.name()),
                ));
            }
            CommandBody::Sort { .. } | CommandBody::Thread { .. }
                if !matches!(self.state, State::Selected(_)) =>
            {
                out.extend(bad(
                    Some(tag),
                    &format!("{} requires a selected mailbox", body.name()),
                ));
            }
            CommandBody::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => {
                self.sort(
                    tag,
                    sort_criteria.as_ref(),
                    charset,
                    search_criteria.as_ref(),
                    *uid,
                    out,
                )
                .await;
            }
            CommandBody::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => {
                self.thread(tag, algorithm, charset, search_criteria.as_ref(), *uid, out)
                    .await;
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                let Some(entry) = self.existing_mailbox(tag, mailbox, out).await else {
                    return Some(Action::Continue);
                };
                match self.backend.quota().await {
                    Ok(quota) => {
                        let root = quota_response(&quota);
                        let mut line = b"* QUOTAROOT ".to_vec();
                        line.extend(self.wire_name(&entry.name));
                        if root.is_some() {
                            line.extend_from_slice(b" \"\"");
                        }
                        line.extend_from_slice(b"\r\n");
                        out.extend(line);
                        out.extend(root.unwrap_or_default());
                        out.extend(ok(tag, None, "GETQUOTAROOT completed"));
                    }
                    Err(err) => out.extend(backend_error(tag, &err)),
                }
            }
            CommandBody::GetQuota { root } => match self.backend.quota().await {
                Ok(quota) => match quota_response(&quota) {
                    Some(line) if root.as_ref().is_empty() => {
                        out.extend(line);
                        out.extend(ok(tag, None, "GETQUOTA completed"));
                    }
                    _ => out.extend(no(
                        tag,
                        Some(code_other("NONEXISTENT")),
                        "No such quota root",
                    )),
                },
                Err(err) => out.extend(backend_error(tag, &err)),
            },
            CommandBody::SetQuota { .. } => {
                out.extend(no(
                    tag,
                    Some(code_other("NOPERM")),
                    "Quotas are set by the administrator",
                ));
            }
            CommandBody::Compress { .. } => {
                if self.compressed {
                    out.extend(no(
                        tag,
                        Some(code_other("COMPRESSIONACTIVE")),
                        "DEFLATE is already active",
                    ));
                } else {
                    out.extend(ok(tag, None, "DEFLATE active"));
                    self.compressed = true;
                    return Some(Action::Compress);
                }
            }
            _ => return None,
        }
        Some(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_resources_in_kib() {
        let none = QuotaInfo::default();
        assert_eq!(quota_response(&none), None);
        let both = QuotaInfo {
            storage_limit: Some(10 * 1024 + 1000),
            storage_used: 1025,
            message_limit: Some(5),
            messages_used: 2,
        };
        assert_eq!(
            quota_response(&both).unwrap(),
            b"* QUOTA \"\" (STORAGE 2 10 MESSAGE 2 5)\r\n"
        );
    }

    #[test]
    fn utf8_append_is_unwrapped() {
        assert_eq!(
            unwrap_utf8_append(b"a APPEND INBOX (\\Seen) utf8 (~{3}\r\nabc)\r\n").unwrap(),
            b"a APPEND INBOX (\\Seen) ~{3}\r\nabc\r\n"
        );
        assert_eq!(
            unwrap_utf8_append(b"a APPEND INBOX UTF8 (~{3+}\r\nabc)\r\n").unwrap(),
            b"a APPEND INBOX ~{3+}\r\nabc\r\n"
        );
        assert_eq!(
            unwrap_utf8_append(b"a APPEND INBOX UTF8 (~{3}\r\nabc\r\n"),
            None
        );
        assert_eq!(
            unwrap_utf8_append(b"a APPEND INBOX UTF8 (~{9}\r\nabc)\r\n"),
            None
        );
        assert_eq!(unwrap_utf8_append(b"a APPEND INBOX {3}\r\nabc\r\n"), None);
        assert_eq!(unwrap_utf8_append(b"a NOOP UTF8 (~{3}\r\nabc)\r\n"), None);
    }
}
