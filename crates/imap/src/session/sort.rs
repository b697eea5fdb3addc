//! SORT (RFC 5256 §3, with RFC 5957 DISPLAYFROM/DISPLAYTO) and THREAD=ORDEREDSUBJECT /
//! THREAD=REFERENCES (RFC 5256 §3; the REFERENCES algorithm is in `thread.rs`): SEARCH with
//! an order.
//!
//! Header fields are read with mail-parser (RFC 2047 words decoded, dates parsed); the base
//! subject of RFC 5256 §2.1 is computed here. Strings compare with i;ascii-casemap (ASCII
//! letters folded), ties go to the lower message sequence number. A message without a usable
//! Date header sorts by its internal date.

use std::cmp::Ordering;

use imap_codec::imap_types::core::{Charset, Tag};
use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::search::SearchKey;
use mail_parser::{Address, MessageParser};

use super::thread::{self, ThreadMessage};
use super::{Session, State, backend_error, search};
use crate::response::{code_other, no, ok};
use crate::{Backend, MessageMeta};

/// What sorting and threading read from one message.
struct Keys {
    seq: u32,
    uid: u32,
    modseq: u64,
    size: u64,
    arrival_ms: i64,
    /// Sent date (seconds), or the internal date when the Date header is missing or bad.
    date: i64,
    subject: String,
    /// The subject carried a reply or forward marker (RFC 5256 §2.2 step 5).
    reply: bool,
    message_id: Option<String>,
    /// References, or else In-Reply-To.
    references: Vec<String>,
    from: String,
    to: String,
    cc: String,
    display_from: String,
    display_to: String,
}

impl Keys {
    fn new(seq: u32, meta: &MessageMeta, header: Option<&[u8]>) -> Self {
        let parsed = header.and_then(|b| MessageParser::default().parse_headers(b));
        let parsed = parsed.as_ref();
        let (subject, reply) = subject_base(parsed.and_then(|m| m.subject()).unwrap_or_default());
        let ids = |v: &mail_parser::HeaderValue<'_>| -> Vec<String> {
            v.as_text_list()
                .map(|l| l.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        };
        let mut references = parsed.map(|m| ids(m.references())).unwrap_or_default();
        if references.is_empty() {
            references = parsed
                .map(|m| ids(m.in_reply_to()))
                .unwrap_or_default()
                .into_iter()
                .take(1)
                .collect();
        }
        let mailbox = |a: Option<&Address<'_>>| {
            a.and_then(Address::first)
                .and_then(|a| a.address.as_deref())
                .map(|addr| addr.split('@').next().unwrap_or_default().to_string())
                .unwrap_or_default()
        };
        // RFC 5957 §2: the display name, else the address.
        let display = |a: Option<&Address<'_>>| {
            a.and_then(Address::first)
                .map(|a| {
                    a.name
                        .as_deref()
                        .filter(|n| !n.trim().is_empty())
                        .or(a.address.as_deref())
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap_or_default()
        };
        Self {
            seq,
            uid: meta.uid,
            modseq: meta.modseq,
            size: meta.size,
            arrival_ms: meta.internal_date_ms,
            date: parsed
                .and_then(|m| m.date())
                .map_or(meta.internal_date_ms.div_euclid(1000), |d| d.to_timestamp()),
            subject,
            reply,
            message_id: parsed.and_then(|m| m.message_id()).map(str::to_string),
            references,
            from: mailbox(parsed.and_then(|m| m.from())),
            to: mailbox(parsed.and_then(|m| m.to())),
            cc: mailbox(parsed.and_then(|m| m.cc())),
            display_from: display(parsed.and_then(|m| m.from())),
            display_to: display(parsed.and_then(|m| m.to())),
        }
    }
}

/// i;ascii-casemap comparison (RFC 4790 §9.2).
fn casemap(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|c| c.to_ascii_uppercase())
        .cmp(b.bytes().map(|c| c.to_ascii_uppercase()))
}

fn compare(a: &Keys, b: &Keys, criteria: &[SortCriterion]) -> Ordering {
    for criterion in criteria {
        let order = match criterion.key {
            SortKey::Arrival => a.arrival_ms.cmp(&b.arrival_ms),
            SortKey::Date => a.date.cmp(&b.date),
            SortKey::Size => a.size.cmp(&b.size),
            SortKey::Subject => casemap(&a.subject, &b.subject),
            SortKey::From => casemap(&a.from, &b.from),
            SortKey::To => casemap(&a.to, &b.to),
            SortKey::Cc => casemap(&a.cc, &b.cc),
            SortKey::DisplayFrom => casemap(&a.display_from, &b.display_from),
            SortKey::DisplayTo => casemap(&a.display_to, &b.display_to),
        };
        let order = if criterion.reverse {
            order.reverse()
        } else {
            order
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.seq.cmp(&b.seq)
}

/// The base subject of RFC 5256 §2.1: without `Re:`/`Fw:`/`Fwd:` leaders, `[blob]`s,
/// `(fwd)` trailers and `[fwd: ...]` wrappers, whitespace collapsed.
#[cfg(test)]
fn base_subject(subject: &str) -> String {
    subject_base(subject).0
}

/// The base subject, and whether a reply/forward marker was removed on the way.
fn subject_base(subject: &str) -> (String, bool) {
    // (1) Whitespace runs (folding included) become one space.
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    loop {
        // (2) Trailing "(fwd)" and whitespace.
        loop {
            let trimmed = s.trim_end();
            let lower = trimmed.to_ascii_lowercase();
            if lower.ends_with("(fwd)") {
                s = trimmed[..trimmed.len() - 5].to_string();
                reply = true;
            } else {
                s = trimmed.to_string();
                break;
            }
        }
        // (3)-(4) Leading subj-leader (blobs, then re/fw/fwd with an optional blob and ":"),
        // and leading blobs when something remains after them.
        loop {
            let before = s.clone();
            s = s.trim_start().to_string();
            if let Some(rest) = strip_refwd(&s) {
                s = rest;
                reply = true;
            } else if let Some(rest) = strip_blob(&s)
                && !rest.trim().is_empty()
            {
                s = rest;
            }
            if s == before {
                break;
            }
        }
        // (5) "[fwd:" ... "]".
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].to_string();
            reply = true;
            continue;
        }
        return (s.trim().to_string(), reply);
    }
}

/// `"[" *BLOBCHAR "]" *WSP` at the start, or None.
fn strip_blob(s: &str) -> Option<String> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(['[', ']'])?;
    rest[end..]
        .starts_with(']')
        .then(|| rest[end + 1..].trim_start().to_string())
}

/// `*subj-blob ("re" / "fw" / "fwd") *WSP [subj-blob] ":"` at the start, or None.
fn strip_refwd(s: &str) -> Option<String> {
    let mut rest = s.to_string();
    while let Some(after) = strip_blob(&rest) {
        rest = after;
    }
    let lower = rest.to_ascii_lowercase();
    let word = ["re", "fwd", "fw"]
        .into_iter()
        .find(|w| lower.starts_with(w))?;
    let mut tail = rest[word.len()..].trim_start().to_string();
    if let Some(after) = strip_blob(&tail) {
        tail = after;
    }
    tail.strip_prefix(':').map(str::to_string)
}

/// THREAD=ORDEREDSUBJECT: messages grouped by base subject; each group sorted by sent date
/// (then sequence number), the first message the parent of the rest; groups ordered by the
/// date of their first message.
fn ordered_subject(mut keys: Vec<Keys>) -> String {
    keys.sort_by(|a, b| {
        casemap(&a.subject, &b.subject)
            .then(a.date.cmp(&b.date))
            .then(a.seq.cmp(&b.seq))
    });
    let mut threads: Vec<Vec<&Keys>> = Vec::new();
    for k in &keys {
        match threads.last_mut() {
            Some(t) if casemap(&t[0].subject, &k.subject) == Ordering::Equal => t.push(k),
            _ => threads.push(vec![k]),
        }
    }
    threads.sort_by(|a, b| a[0].date.cmp(&b[0].date).then(a[0].seq.cmp(&b[0].seq)));
    threads
        .iter()
        .map(|t| {
            // RFC 5256 §4: one child follows its parent; several are a `thread-nested` list.
            let mut out = format!("({}", t[0].seq);
            if t.len() == 2 {
                out.push_str(&format!(" {}", t[1].seq));
            } else if t.len() > 2 {
                out.push(' ');
                for child in &t[1..] {
                    out.push_str(&format!("({})", child.seq));
                }
            }
            out.push(')');
            out
        })
        .collect()
}

impl<B: Backend> Session<B> {
    /// The messages of the selected mailbox that match `criteria` (found by SEARCH's matcher,
    /// so every SEARCH key works, MODSEQ included), with their sort keys; the header fields are
    /// read only when `headers`. None after answering the client.
    async fn sort_keys(
        &mut self,
        tag: &Tag<'_>,
        charset: &Charset<'_>,
        criteria: &[SearchKey<'_>],
        headers: bool,
        out: &mut Vec<u8>,
    ) -> Option<Vec<Keys>> {
        if !search::check_charset(tag, charset.as_ref(), out) {
            return None;
        }
        let found = self.matching(tag, criteria, out).await?;
        let State::Selected(sel) = &self.state else {
            return None;
        };
        let name = sel.name.clone();
        let mut keys = Vec::with_capacity(found.len());
        for (seq, meta) in found {
            let header = if headers {
                match self.backend.header(&name, meta.uid).await {
                    Ok(Some(header)) => Some(header),
                    // Expunged by another session since it matched.
                    Ok(None) => continue,
                    Err(err) => {
                        out.extend(backend_error(tag, &err));
                        return None;
                    }
                }
            } else {
                None
            };
            keys.push(Keys::new(seq, &meta, header.as_deref()));
        }
        Some(keys)
    }

    pub(super) async fn sort(
        &mut self,
        tag: &Tag<'_>,
        order: &[SortCriterion],
        charset: &Charset<'_>,
        criteria: &[SearchKey<'_>],
        uid: bool,
        out: &mut Vec<u8>,
    ) {
        let headers = order
            .iter()
            .any(|c| !matches!(c.key, SortKey::Arrival | SortKey::Size));
        let Some(mut keys) = self.sort_keys(tag, charset, criteria, headers, out).await else {
            return;
        };
        keys.sort_by(|a, b| compare(a, b, order));
        let mut line = b"* SORT".to_vec();
        for k in &keys {
            line.extend(format!(" {}", if uid { k.uid } else { k.seq }).into_bytes());
        }
        // RFC 7162 §3.1.5 (search-sort-mod-seq): with MODSEQ, the highest one found.
        if criteria.iter().any(search::uses_modseq)
            && let Some(highest) = keys.iter().map(|k| k.modseq).max()
        {
            line.extend(format!(" (MODSEQ {highest})").into_bytes());
        }
        line.extend_from_slice(b"\r\n");
        out.extend(line);
        out.extend(ok(tag, None, "SORT completed"));
    }

    pub(super) async fn thread(
        &mut self,
        tag: &Tag<'_>,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &Charset<'_>,
        criteria: &[SearchKey<'_>],
        uid: bool,
        out: &mut Vec<u8>,
    ) {
        if let ThreadingAlgorithm::Other(_) = algorithm {
            out.extend(no(
                tag,
                Some(code_other("CANNOT")),
                "Only ORDEREDSUBJECT and REFERENCES threading are supported",
            ));
            return;
        }
        let Some(mut keys) = self.sort_keys(tag, charset, criteria, true, out).await else {
            return;
        };
        if uid {
            // Threads name UIDs: render them in place of sequence numbers.
            for k in &mut keys {
                k.seq = k.uid;
            }
        }
        let threads = if let ThreadingAlgorithm::References = algorithm {
            let msgs: Vec<ThreadMessage> = keys
                .into_iter()
                .map(|k| ThreadMessage {
                    id: k.seq,
                    date: k.date,
                    subject: k.subject,
                    reply: k.reply,
                    message_id: k.message_id,
                    references: k.references,
                })
                .collect();
            thread::references(&msgs)
        } else {
            ordered_subject(keys)
        };
        let sep = if threads.is_empty() { "" } else { " " };
        out.extend(format!("* THREAD{sep}{threads}\r\n").into_bytes());
        out.extend(ok(tag, None, "THREAD completed"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (raw, base) in [
            ("Hello", "Hello"),
            ("Re: Hello", "Hello"),
            ("RE:  re: Fwd:Hello", "Hello"),
            ("[list] Re: [x] Hello (fwd)", "Hello"),
            ("Fw[2]: Hello (Fwd) (fwd)", "Hello"),
            ("[Fwd: Re: Hello]", "Hello"),
            ("[only a blob]", "[only a blob]"),
            ("Re:", ""),
            ("  spaced\t\r\n  out  ", "spaced out"),
            ("Reply needed", "Reply needed"),
        ] {
            assert_eq!(base_subject(raw), base, "{raw:?}");
        }
    }
}
