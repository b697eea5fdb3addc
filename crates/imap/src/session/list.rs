//! Extended LIST: LIST-EXTENDED (RFC 5258) selection and return options, several patterns,
//! LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154).
//!
//! imap-codec 2.0.0-alpha.10 parses only the basic `LIST reference pattern` (its
//! `ext_list_extended` feature has the response types but no command grammar), so the
//! extended command is read here with a small tokenizer over the framed command bytes
//! (literals already joined in by the framer). The basic form goes through the same
//! evaluation, so `LIST "" "*"` and `LIST () "" ("*")` answer alike. Which names a command
//! returns, and with which attributes, is decided by [`select`], a pure function of the
//! mailboxes, the subscriptions and the options.

use std::collections::BTreeSet;

use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::status::StatusDataItemName;

use super::{DELIMITER, Session, backend_error, normalize_inbox, wildcard_match};
use crate::response::{bad, ok};
use crate::{Backend, MailboxEntry};

/// The special-use attributes of RFC 6154 §2 (and `\All`, `\Flagged` we never assign).
const SPECIAL_USES: [&str; 7] = [
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
];

/// A LIST command with its options, as the client wrote it (names still on the wire's
/// encoding: the session decodes them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ListCommand {
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    pub options: Options,
}

/// Selection and return options (RFC 5258 §3, §4; RFC 5819; RFC 6154 §5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Options {
    /// Selection options or a RETURN clause were given: the empty pattern no longer asks for
    /// the delimiter alone when selection options are present (RFC 5258 §3).
    pub select_given: bool,
    pub select_subscribed: bool,
    pub select_special_use: bool,
    pub recursive: bool,
    pub return_subscribed: bool,
    pub return_special_use: bool,
    /// `RETURN (STATUS (...))`: the items for a STATUS response after each selectable name.
    pub status: Option<Vec<StatusDataItemName>>,
}

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub name: String,
    pub attributes: Vec<String>,
    /// The selection criterion to name in a `CHILDINFO` item (RFC 5258 §3.5), if any.
    pub childinfo: Option<&'static str>,
    /// The mailbox exists and can be selected (so STATUS may be returned for it).
    pub selectable: bool,
}

/// Parses `tag LIST ...` when imap-codec could not: `Ok(None)` when it is not a LIST at all,
/// `Err(text)` for a malformed one (answered BAD with that text).
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<(Tag<'static>, ListCommand)>, &'static str> {
    let mut t = Tokens { bytes, pos: 0 };
    let Some(tag) = t.atom().and_then(|raw| Tag::try_from(raw).ok()) else {
        return Ok(None);
    };
    let tag = tag.into_static();
    if !t.space()
        || !t
            .atom()
            .is_some_and(|verb| verb.eq_ignore_ascii_case(b"LIST"))
    {
        return Ok(None);
    }
    let mut cmd = ListCommand::default();
    if !t.space() {
        return Err("Missing LIST arguments");
    }
    if t.peek() == Some(b'(') {
        cmd.options.select_given = true;
        for option in t.atom_list()? {
            match option.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => cmd.options.select_subscribed = true,
                b"SPECIAL-USE" => cmd.options.select_special_use = true,
                b"RECURSIVEMATCH" => cmd.options.recursive = true,
                // No remote mailboxes here: REMOTE changes nothing (RFC 5258 §3.3).
                b"REMOTE" => {}
                _ => return Err("Unknown LIST selection option"),
            }
        }
        if !t.space() {
            return Err("Missing LIST reference");
        }
    }
    if cmd.options.recursive && !cmd.options.select_subscribed && !cmd.options.select_special_use {
        // RFC 5258 §3.5: RECURSIVEMATCH alone is an error.
        return Err("RECURSIVEMATCH needs another selection option");
    }
    // RFC 5258 §3.1: SUBSCRIBED selection implies the SUBSCRIBED return option.
    cmd.options.return_subscribed = cmd.options.select_subscribed;
    cmd.reference = t.astring().ok_or("Invalid LIST reference")?;
    if !t.space() {
        return Err("Missing LIST pattern");
    }
    if t.peek() == Some(b'(') {
        t.pos += 1;
        loop {
            cmd.patterns
                .push(t.list_mailbox().ok_or("Invalid LIST pattern")?);
            match t.next_byte() {
                Some(b' ') => {}
                Some(b')') => break,
                _ => return Err("Invalid LIST pattern list"),
            }
        }
    } else {
        cmd.patterns
            .push(t.list_mailbox().ok_or("Invalid LIST pattern")?);
    }
    if t.space() {
        if !t.atom().is_some_and(|w| w.eq_ignore_ascii_case(b"RETURN")) || !t.space() {
            return Err("Expected RETURN options");
        }
        if t.next_byte() != Some(b'(') {
            return Err("Expected RETURN options");
        }
        if t.peek() == Some(b')') {
            t.pos += 1;
        } else {
            loop {
                let option = t.atom().ok_or("Invalid RETURN option")?;
                match option.to_ascii_uppercase().as_slice() {
                    b"SUBSCRIBED" => cmd.options.return_subscribed = true,
                    b"SPECIAL-USE" => cmd.options.return_special_use = true,
                    // \HasChildren / \HasNoChildren are always returned (RFC 5258 §4).
                    b"CHILDREN" => {}
                    b"STATUS" => {
                        if !t.space() || cmd.options.status.is_some() {
                            return Err("Invalid STATUS return option");
                        }
                        let mut items = Vec::new();
                        for item in t.atom_list()? {
                            items.push(status_item(&item).ok_or("Unknown STATUS item")?);
                        }
                        if items.is_empty() {
                            return Err("Empty STATUS return option");
                        }
                        cmd.options.status = Some(items);
                    }
                    _ => return Err("Unknown LIST return option"),
                }
                match t.next_byte() {
                    Some(b' ') => {}
                    Some(b')') => break,
                    _ => return Err("Invalid RETURN options"),
                }
            }
        }
    }
    if !t.crlf() {
        return Err("Unexpected data after LIST arguments");
    }
    Ok(Some((tag, cmd)))
}

fn status_item(atom: &[u8]) -> Option<StatusDataItemName> {
    Some(match atom.to_ascii_uppercase().as_slice() {
        b"MESSAGES" => StatusDataItemName::Messages,
        b"RECENT" => StatusDataItemName::Recent,
        b"UIDNEXT" => StatusDataItemName::UidNext,
        b"UIDVALIDITY" => StatusDataItemName::UidValidity,
        b"UNSEEN" => StatusDataItemName::Unseen,
        b"DELETED" => StatusDataItemName::Deleted,
        b"DELETED-STORAGE" => StatusDataItemName::DeletedStorage,
        // RFC 7162 §3.1.2 (CONDSTORE); answered, like the rest, by `status_response`.
        b"HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
        _ => return None,
    })
}

/// A cursor over one framed command.
struct Tokens<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Tokens<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn space(&mut self) -> bool {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn crlf(&mut self) -> bool {
        &self.bytes[self.pos..] == b"\r\n" || &self.bytes[self.pos..] == b"\n"
    }

    /// An atom, allowing the list wildcards and `]` (RFC 9051 `list-char`, `ATOM-CHAR`).
    fn atom(&mut self) -> Option<Vec<u8>> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b <= b' ' || b >= 0x7f || matches!(b, b'(' | b')' | b'{' | b'"' | b'\\') {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then(|| self.bytes[start..self.pos].to_vec())
    }

    /// `"(" [atom *(SP atom)] ")"`.
    fn atom_list(&mut self) -> Result<Vec<Vec<u8>>, &'static str> {
        if self.next_byte() != Some(b'(') {
            return Err("Expected an option list");
        }
        let mut atoms = Vec::new();
        if self.peek() == Some(b')') {
            self.pos += 1;
            return Ok(atoms);
        }
        loop {
            atoms.push(self.atom().ok_or("Invalid option")?);
            match self.next_byte() {
                Some(b' ') => {}
                Some(b')') => return Ok(atoms),
                _ => return Err("Invalid option list"),
            }
        }
    }

    /// A quoted string (UTF-8 allowed, RFC 6855) with `\"` and `\\` escapes.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.next_byte()? {
                b'"' => return Some(out),
                b'\\' => match self.next_byte()? {
                    b @ (b'"' | b'\\') => out.push(b),
                    _ => return None,
                },
                b'\r' | b'\n' | 0 => return None,
                b => out.push(b),
            }
        }
    }

    /// `{n}` / `{n+}` CRLF and n bytes, as the framer joined them.
    fn literal(&mut self) -> Option<Vec<u8>> {
        if self.peek() != Some(b'{') {
            return None;
        }
        let close = self.bytes[self.pos..].iter().position(|&b| b == b'}')? + self.pos;
        let digits = &self.bytes[self.pos + 1..close];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let mut at = close + 1;
        if self.bytes.get(at) == Some(&b'\r') {
            at += 1;
        }
        if self.bytes.get(at) != Some(&b'\n') {
            return None;
        }
        let data = self.bytes.get(at + 1..at + 1 + n)?.to_vec();
        self.pos = at + 1 + n;
        Some(data)
    }

    fn astring(&mut self) -> Option<Vec<u8>> {
        match self.peek()? {
            b'"' => self.quoted(),
            b'{' => self.literal(),
            _ => self.atom(),
        }
    }

    /// `list-mailbox = 1*list-char / string`.
    fn list_mailbox(&mut self) -> Option<Vec<u8>> {
        self.astring()
    }
}

/// Which names a LIST answers and with which attributes (RFC 5258 §3–4, RFC 6154).
///
/// `entries` are the account's mailboxes, `subscribed` its subscriptions (only consulted for
/// the SUBSCRIBED options), `patterns` the reference-joined, INBOX-normalised patterns.
/// Names that only exist as the parent of another mailbox are `\Noselect`; names the
/// selection asks for that do not exist at all are `\NonExistent`. INBOX comes first.
pub(crate) fn select(
    entries: &[MailboxEntry],
    subscribed: &[String],
    patterns: &[String],
    options: &Options,
) -> Vec<Listed> {
    let existing: Vec<(String, Option<&str>)> = entries
        .iter()
        .map(|e| (normalize_inbox(&e.name), e.special_use.as_deref()))
        .collect();
    let exists = |name: &str| existing.iter().any(|(n, _)| n == name);
    let special = |name: &str| {
        existing
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| *s)
            .filter(|s| SPECIAL_USES.iter().any(|k| k.eq_ignore_ascii_case(s)))
    };
    // Every name in the hierarchy: the mailboxes and the parents their names imply.
    let mut universe: BTreeSet<String> = BTreeSet::new();
    for (name, _) in &existing {
        universe.insert(name.clone());
        let mut end = 0;
        while let Some(pos) = name[end..].find(DELIMITER) {
            universe.insert(name[..end + pos].to_string());
            end += pos + 1;
        }
    }
    let subscribed: BTreeSet<String> = subscribed.iter().map(|s| normalize_inbox(s)).collect();
    let matches = |name: &str| patterns.iter().any(|p| wildcard_match(p, name));

    // The names that satisfy the selection criteria, whether or not they match a pattern.
    let (criteria, childinfo): (BTreeSet<String>, Option<&'static str>) =
        if options.select_subscribed {
            (subscribed.clone(), Some("SUBSCRIBED"))
        } else if options.select_special_use {
            let names = existing
                .iter()
                .filter(|(n, _)| special(n).is_some())
                .map(|(n, _)| n.clone())
                .collect();
            (names, Some("SPECIAL-USE"))
        } else {
            (universe.clone(), None)
        };

    let mut chosen: BTreeSet<String> = criteria.iter().filter(|n| matches(n)).cloned().collect();
    // RFC 5258 §3.5: with RECURSIVEMATCH, a matching name with a satisfying descendant that
    // the patterns miss is returned too, with CHILDINFO.
    let mut with_childinfo: BTreeSet<String> = BTreeSet::new();
    if options.recursive {
        for name in criteria.iter().filter(|n| !matches(n)) {
            let mut end = 0;
            while let Some(pos) = name[end..].find(DELIMITER) {
                let ancestor = &name[..end + pos];
                if matches(ancestor) {
                    chosen.insert(ancestor.to_string());
                    with_childinfo.insert(ancestor.to_string());
                }
                end += pos + 1;
            }
        }
    }

    let mut names: Vec<String> = chosen.into_iter().collect();
    names.sort_by(|a, b| (a != "INBOX", a).cmp(&(b != "INBOX", b)));
    names
        .into_iter()
        .map(|name| {
            let real = exists(&name);
            let implied = !real && universe.contains(&name);
            let mut attributes = Vec::new();
            if !real && !implied {
                attributes.push("\\NonExistent".to_string());
            } else {
                if implied {
                    attributes.push("\\Noselect".to_string());
                }
                let prefix = format!("{name}{DELIMITER}");
                let children = universe.iter().any(|n| n.starts_with(&prefix));
                attributes.push(
                    if children {
                        "\\HasChildren"
                    } else {
                        "\\HasNoChildren"
                    }
                    .into(),
                );
            }
            if options.return_subscribed && subscribed.contains(&name) {
                attributes.push("\\Subscribed".to_string());
            }
            // Special-use attributes are always returned (RFC 6154 §2 allows it without the
            // SPECIAL-USE return option), so RETURN (SPECIAL-USE) changes nothing.
            if let Some(use_) = special(&name) {
                attributes.push(use_.to_string());
            }
            Listed {
                childinfo: with_childinfo
                    .contains(&name)
                    .then_some(childinfo)
                    .flatten(),
                selectable: real,
                name,
                attributes,
            }
        })
        .collect()
}

impl<B: Backend> Session<B> {
    /// Answers LIST in any form (basic, LIST-EXTENDED, LIST-STATUS).
    pub(super) async fn list_extended(
        &mut self,
        tag: &Tag<'_>,
        cmd: &ListCommand,
        out: &mut Vec<u8>,
    ) {
        let reference = if cmd.reference.eq_ignore_ascii_case(b"INBOX") {
            "INBOX".to_string()
        } else {
            self.decode_name(&cmd.reference).unwrap_or_default()
        };
        let mut patterns = Vec::new();
        for raw in &cmd.patterns {
            let Some(pattern) = self.decode_name(raw) else {
                out.extend(bad(Some(tag), "Invalid mailbox pattern"));
                return;
            };
            if pattern.is_empty() {
                // RFC 9051 §6.3.9 / RFC 5258 §3: the empty pattern (without selection
                // options) asks for the hierarchy delimiter.
                if !cmd.options.select_given && cmd.patterns.len() == 1 {
                    out.extend(
                        format!("* LIST (\\Noselect) \"{DELIMITER}\" \"\"\r\n").into_bytes(),
                    );
                    out.extend(ok(tag, None, "LIST completed"));
                    return;
                }
                continue;
            }
            patterns.push(normalize_inbox(&format!("{reference}{pattern}")));
        }
        let entries = match self.backend.list_mailboxes().await {
            Ok(entries) => entries,
            Err(err) => {
                out.extend(backend_error(tag, &err));
                return;
            }
        };
        let subscribed = if cmd.options.return_subscribed || cmd.options.select_subscribed {
            match self.backend.subscriptions().await {
                Ok(names) => names,
                Err(err) => {
                    out.extend(backend_error(tag, &err));
                    return;
                }
            }
        } else {
            Vec::new()
        };
        for item in select(&entries, &subscribed, &patterns, &cmd.options) {
            let mut line =
                format!("* LIST ({}) \"{DELIMITER}\" ", item.attributes.join(" ")).into_bytes();
            line.extend(self.wire_name(&item.name));
            if let Some(criterion) = item.childinfo {
                line.extend(format!(" (\"CHILDINFO\" (\"{criterion}\"))").into_bytes());
            }
            line.extend_from_slice(b"\r\n");
            out.extend(line);
            // RFC 5819 §2: STATUS follows the mailbox's LIST line; none for \Noselect or
            // \NonExistent names. A mailbox that vanished meanwhile is skipped.
            if let Some(items) = &cmd.options.status
                && item.selectable
            {
                match self.backend.mailbox(&item.name).await {
                    Ok(Some(entry)) => match self.status_response(&entry, items).await {
                        Ok(status) => out.extend(status),
                        Err(err) => {
                            out.extend(backend_error(tag, &err));
                            return;
                        }
                    },
                    Ok(None) => {}
                    Err(err) => {
                        out.extend(backend_error(tag, &err));
                        return;
                    }
                }
            }
        }
        out.extend(ok(tag, None, "LIST completed"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, special_use: Option<&str>) -> MailboxEntry {
        MailboxEntry {
            name: name.to_string(),
            special_use: special_use.map(str::to_string),
            uid_validity: 1,
            uid_next: 1,
            messages: 0,
            unseen: 0,
            highest_modseq: 1,
        }
    }

    fn parsed(input: &str) -> ListCommand {
        parse(input.as_bytes()).unwrap().unwrap().1
    }

    #[test]
    fn parses_every_form() {
        let cmd = parsed("a LIST \"\" %\r\n");
        assert_eq!(cmd.patterns, vec![b"%".to_vec()]);
        assert!(!cmd.options.select_given);

        let cmd = parsed(
            "a list (subscribed RECURSIVEMATCH remote) \"\" (\"INBOX\" Foo/*) RETURN (CHILDREN STATUS (MESSAGES UNSEEN) SPECIAL-USE)\r\n",
        );
        assert!(cmd.options.select_subscribed && cmd.options.recursive);
        assert!(cmd.options.return_subscribed && cmd.options.return_special_use);
        assert_eq!(cmd.patterns, vec![b"INBOX".to_vec(), b"Foo/*".to_vec()]);
        assert_eq!(
            cmd.options.status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::Unseen
            ])
        );

        let cmd = parsed("a LIST () {0}\r\n {3+}\r\na\"b RETURN ()\r\n");
        assert_eq!(cmd.reference, b"");
        assert_eq!(cmd.patterns, vec![b"a\"b".to_vec()]);

        assert_eq!(parse(b"a FETCH 1 FLAGS\r\n"), Ok(None));
        for bad in [
            "a LIST (RECURSIVEMATCH) \"\" *\r\n",
            "a LIST (BOGUS) \"\" *\r\n",
            "a LIST \"\" * RETURN (BOGUS)\r\n",
            "a LIST \"\" * RETURN (STATUS ())\r\n",
            "a LIST \"\" * RETURN (STATUS (SIZZLE))\r\n",
            "a LIST \"\" (* \r\n",
            "a LIST \"\" * extra\r\n",
            "a LIST \"\" {5}\r\nab\r\n",
            "a LIST\r\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn selection_and_attributes() {
        let entries = [
            entry("INBOX", None),
            entry("Sent", Some("\\Sent")),
            entry("Foo/Bar", None),
            entry("Foo/Baz", None),
            entry("Tofu", None),
        ];
        let subscribed = ["INBOX".to_string(), "Foo/Bar".to_string(), "Gone".into()];
        let all = ["*".to_string()];
        let top = ["%".to_string()];
        let names = |items: &[Listed]| -> Vec<String> {
            items
                .iter()
                .map(|i| format!("{} ({})", i.name, i.attributes.join(" ")))
                .collect()
        };

        let basic = select(&entries, &[], &top, &Options::default());
        assert_eq!(
            names(&basic),
            [
                "INBOX (\\HasNoChildren)",
                "Foo (\\Noselect \\HasChildren)",
                "Sent (\\HasNoChildren \\Sent)",
                "Tofu (\\HasNoChildren)"
            ]
        );

        let opts = Options {
            select_subscribed: true,
            return_subscribed: true,
            ..Options::default()
        };
        assert_eq!(
            names(&select(&entries, &subscribed, &all, &opts)),
            [
                "INBOX (\\HasNoChildren \\Subscribed)",
                "Foo/Bar (\\HasNoChildren \\Subscribed)",
                "Gone (\\NonExistent \\Subscribed)"
            ]
        );

        let recursive = Options {
            recursive: true,
            ..opts.clone()
        };
        let got = select(&entries, &subscribed, &top, &recursive);
        assert_eq!(
            names(&got),
            [
                "INBOX (\\HasNoChildren \\Subscribed)",
                "Foo (\\Noselect \\HasChildren)",
                "Gone (\\NonExistent \\Subscribed)"
            ]
        );
        assert_eq!(got[1].childinfo, Some("SUBSCRIBED"));
        assert!(!got[1].selectable && got[0].selectable);

        let special = Options {
            select_special_use: true,
            ..Options::default()
        };
        assert_eq!(
            names(&select(&entries, &[], &all, &special)),
            ["Sent (\\HasNoChildren \\Sent)"]
        );

        // Several patterns: each name once.
        let two = ["INBOX".to_string(), "*".to_string()];
        assert_eq!(select(&entries, &[], &two, &Options::default()).len(), 6);
    }
}
