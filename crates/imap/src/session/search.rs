//! SEARCH and UID SEARCH (RFC 9051 §6.4.4) with every search key, ESEARCH result options
//! (RFC 4731: `RETURN (MIN MAX ALL COUNT)`, and IMAP4rev2's ESEARCH-only answers) and
//! CONDSTORE's `MODSEQ` key (RFC 7162 §3.1.5).
//!
//! String keys match case-insensitively as substrings of the *decoded* text: header fields
//! with their RFC 2047 encoded words decoded and addresses as `name <address>`, and body parts
//! after their transfer encoding and charset are undone (mail-parser does the decoding).
//! Date keys compare calendar dates only: the internal date's in UTC, the zone INTERNALDATE is
//! shown in, and the Date header's as written in its own zone ("disregarding time and
//! timezone"); a message without a usable Date header is compared by its internal date, as
//! SORT does (RFC 5256 §2.2).
//!
//! imap-codec does not parse `RETURN (...)`, so [`split_return`] takes it off the command
//! before parsing. `RETURN (SAVE)` keeps what was found for `$` (SEARCHRES, `searchres.rs`).
//! Charsets other than UTF-8 and US-ASCII are refused (`NO [BADCHARSET]`).

use imap_codec::imap_types::core::{Charset, Tag};
use imap_codec::imap_types::datetime::NaiveDate;
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::search::SearchKey;
use mail_parser::{HeaderValue, MessageParser, PartType};

use super::view::{Meta, View};
use super::{Session, State, backend_error, in_set, uid_set};
use crate::response::{no, ok};
use crate::{Backend, MessageMeta, message};

/// ESEARCH result options (RFC 4731 §3.1). `RETURN ()` means ALL.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReturnOptions {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// SEARCHRES (RFC 5182): keep the result for `$`.
    pub save: bool,
}

/// Takes `RETURN (...)` out of a `[UID] SEARCH` command. `Ok(None)`: not such a command, parse
/// it as it is. `Ok(Some((command, options)))`: the command without the RETURN clause, and the
/// options. `Err(text)`: a RETURN clause we refuse (answered BAD).
pub(super) fn split_return(bytes: &[u8]) -> Result<Option<(Vec<u8>, ReturnOptions)>, &'static str> {
    let Some(space) = bytes.iter().position(|&b| b == b' ') else {
        return Ok(None);
    };
    let (tag, rest) = (&bytes[..space], &bytes[space + 1..]);
    let mut verb_len = 0;
    if starts_with_ci(rest, b"UID ") {
        verb_len += 4;
    }
    if !starts_with_ci(&rest[verb_len..], b"SEARCH RETURN (") {
        return Ok(None);
    }
    let verb = &rest[..verb_len + b"SEARCH".len()];
    let after = &rest[verb_len + b"SEARCH RETURN (".len()..];
    let Some(close) = after.iter().position(|&b| b == b')') else {
        return Err("Unterminated RETURN options");
    };
    let mut options = ReturnOptions::default();
    for word in after[..close]
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
    {
        match word.to_ascii_uppercase().as_slice() {
            b"MIN" => options.min = true,
            b"MAX" => options.max = true,
            b"ALL" => options.all = true,
            b"COUNT" => options.count = true,
            b"SAVE" => options.save = true,
            _ => return Err("Unknown RETURN option"),
        }
    }
    if options == ReturnOptions::default() {
        // RFC 4731 §3.1: an empty list means ALL.
        options.all = true;
    }
    let Some(criteria) = after[close + 1..].strip_prefix(b" ") else {
        return Err("Missing search criteria");
    };
    let mut command = tag.to_vec();
    command.push(b' ');
    command.extend_from_slice(verb);
    command.push(b' ');
    command.extend_from_slice(criteria);
    Ok(Some((command, options)))
}

fn starts_with_ci(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// True when evaluating `key` needs the message itself, not only its metadata.
/// What of a message `key` reads, in increasing order of cost: header keys need only the
/// header section, BODY and TEXT the whole message.
pub(super) fn reads(key: &SearchKey<'_>) -> Read {
    match key {
        SearchKey::And(keys) => keys
            .as_ref()
            .iter()
            .map(reads)
            .max()
            .unwrap_or(Read::Nothing),
        SearchKey::Not(key) => reads(key),
        SearchKey::Or(a, b) => reads(a).max(reads(b)),
        SearchKey::Bcc(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Subject(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => Read::Header,
        SearchKey::Body(_) | SearchKey::Text(_) => Read::Message,
        _ => Read::Nothing,
    }
}

/// How much of a message a search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Read {
    Nothing,
    Header,
    Message,
}

/// True when `key` uses CONDSTORE's MODSEQ (the response then carries the highest one).
pub(super) fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Not(key) => uses_modseq(key),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}

/// A calendar date as (year, month, day), comparable.
type Ymd = (i64, i64, i64);

fn ymd(date: &NaiveDate) -> Ymd {
    // chrono writes a NaiveDate of years 0..=9999 (all IMAP allows) as YYYY-MM-DD.
    let text = date.as_ref().to_string();
    let mut parts = text.split('-').map(|p| p.parse::<i64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// One message as the search keys see it.
struct Candidate<'a> {
    seq: u32,
    meta: Meta<'a>,
    parsed: Option<mail_parser::Message<'a>>,
}

struct Context {
    largest_seq: u32,
    largest_uid: u32,
}

impl Context {
    fn matches(&self, key: &SearchKey<'_>, msg: &Candidate<'_>) -> bool {
        let internal = || message::civil_date(msg.meta.internal_date_ms);
        let sent = || {
            msg.parsed
                .as_ref()
                .and_then(|m| {
                    root_headers(m)
                        .iter()
                        .find(|h| h.name.as_str().eq_ignore_ascii_case("Date"))
                })
                .and_then(|h| h.value.as_datetime())
                .filter(|d| d.is_valid())
                .map(|d| (i64::from(d.year), i64::from(d.month), i64::from(d.day)))
                .unwrap_or_else(internal)
        };
        let header = |name: &str, needle: &[u8]| {
            msg.parsed
                .as_ref()
                .is_some_and(|m| header_contains(m, name, needle))
        };
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.matches(k, msg)),
            SearchKey::Not(key) => !self.matches(key, msg),
            SearchKey::Or(a, b) => self.matches(a, msg) || self.matches(b, msg),
            SearchKey::All => true,
            SearchKey::SequenceSet(set) => in_set(set, msg.seq, self.largest_seq),
            SearchKey::Uid(set) => in_set(set, msg.meta.uid, self.largest_uid),
            SearchKey::Answered => msg.meta.has_flag("\\Answered"),
            SearchKey::Unanswered => !msg.meta.has_flag("\\Answered"),
            SearchKey::Deleted => msg.meta.has_flag("\\Deleted"),
            SearchKey::Undeleted => !msg.meta.has_flag("\\Deleted"),
            SearchKey::Draft => msg.meta.has_flag("\\Draft"),
            SearchKey::Undraft => !msg.meta.has_flag("\\Draft"),
            SearchKey::Flagged => msg.meta.has_flag("\\Flagged"),
            SearchKey::Unflagged => !msg.meta.has_flag("\\Flagged"),
            SearchKey::Seen => msg.meta.has_flag("\\Seen"),
            SearchKey::Unseen => !msg.meta.has_flag("\\Seen"),
            // No message is ever \Recent here (IMAP4rev2 dropped it; RFC 9051 §2.3.2), so NEW
            // (RECENT UNSEEN) and RECENT match nothing and OLD (NOT RECENT) everything.
            SearchKey::New | SearchKey::Recent => false,
            SearchKey::Old => true,
            SearchKey::Keyword(atom) => msg.meta.has_flag(atom.as_ref()),
            SearchKey::Unkeyword(atom) => !msg.meta.has_flag(atom.as_ref()),
            SearchKey::Larger(n) => msg.meta.size > u64::from(*n),
            SearchKey::Smaller(n) => msg.meta.size < u64::from(*n),
            SearchKey::Before(date) => internal() < ymd(date),
            SearchKey::On(date) => internal() == ymd(date),
            SearchKey::Since(date) => internal() >= ymd(date),
            SearchKey::SentBefore(date) => sent() < ymd(date),
            SearchKey::SentOn(date) => sent() == ymd(date),
            SearchKey::SentSince(date) => sent() >= ymd(date),
            SearchKey::Bcc(s) => header("Bcc", s.as_ref()),
            SearchKey::Cc(s) => header("Cc", s.as_ref()),
            SearchKey::From(s) => header("From", s.as_ref()),
            SearchKey::To(s) => header("To", s.as_ref()),
            SearchKey::Subject(s) => header("Subject", s.as_ref()),
            SearchKey::Header(name, s) => {
                std::str::from_utf8(name.as_ref()).is_ok_and(|name| header(name, s.as_ref()))
            }
            SearchKey::Body(s) => msg
                .parsed
                .as_ref()
                .is_some_and(|m| body_contains(m, &needle(s.as_ref()))),
            SearchKey::Text(s) => msg.parsed.as_ref().is_some_and(|m| {
                let needle = needle(s.as_ref());
                headers_contain(m, &needle) || body_contains(m, &needle)
            }),
            // Every flag of a message shares its mod-sequence, so the entry name does not
            // narrow anything (RFC 7162 §3.1.5).
            SearchKey::ModSequence { modseq, .. } => msg.meta.modseq >= *modseq,
        }
    }
}

impl Context {
    /// The value of `key` for a message decided without parsing it, from its metadata and the
    /// raw bytes of its header section; `None` when only the full matcher can tell. It never
    /// contradicts [`Context::matches`]: a header string key is decided `false` only when the
    /// needle is not in the raw field although every character the decoded text can have came
    /// verbatim from it (see [`raw_rules_out`]). Most messages of a SEARCH FROM are settled
    /// here, and mail-parser runs only for the rest.
    fn quick(
        &self,
        key: &SearchKey<'_>,
        msg: &Candidate<'_>,
        header: Option<&[u8]>,
    ) -> Option<bool> {
        let rules_out = |name: &[u8], needle: &[u8]| -> Option<bool> {
            raw_rules_out(header?, name, needle).then_some(false)
        };
        match key {
            SearchKey::And(keys) => {
                let mut all = Some(true);
                for key in keys.as_ref() {
                    match self.quick(key, msg, header) {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => all = None,
                    }
                }
                all
            }
            SearchKey::Or(a, b) => match (self.quick(a, msg, header), self.quick(b, msg, header)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            SearchKey::Not(key) => self.quick(key, msg, header).map(|v| !v),
            SearchKey::Bcc(s) => rules_out(b"Bcc", s.as_ref()),
            SearchKey::Cc(s) => rules_out(b"Cc", s.as_ref()),
            SearchKey::From(s) => rules_out(b"From", s.as_ref()),
            SearchKey::To(s) => rules_out(b"To", s.as_ref()),
            SearchKey::Subject(s) => rules_out(b"Subject", s.as_ref()),
            SearchKey::Header(name, s) => rules_out(name.as_ref(), s.as_ref()),
            key if reads(key) == Read::Nothing => Some(self.matches(key, msg)),
            _ => None,
        }
    }
}

/// True when no field `name` of the raw header section can contain `needle` once decoded:
/// the needle (non-empty, without white space or the characters that quoting, comments and
/// address syntax add or remove) is not in any such field's raw value, and each of those
/// values is one printable ASCII line without quotes, escapes, comments or encoded words, so
/// that its decoded text is made only of verbatim runs of it.
fn raw_rules_out(header: &[u8], name: &[u8], needle: &[u8]) -> bool {
    let plain_needle = !needle.is_empty()
        && needle.iter().all(|&b| {
            b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'(' | b')' | b'<' | b'>' | b',')
        });
    if !plain_needle {
        return false;
    }
    for field in message::fields(header) {
        if !field.name.eq_ignore_ascii_case(name) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', field.raw) else {
            return false;
        };
        let value = &field.raw[colon + 1..];
        let value = value
            .strip_suffix(b"\r\n")
            .or_else(|| value.strip_suffix(b"\n"))
            .unwrap_or(value);
        let verbatim = value.iter().all(|&b| {
            (b.is_ascii_graphic() || b == b' ' || b == b'\t') && !matches!(b, b'"' | b'\\' | b'(')
        }) && memchr::memmem::find(value, b"=?").is_none();
        // Header values are short: a plain scan, with no allocation.
        let found = value
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle));
        if !verbatim || found {
            return false;
        }
    }
    true
}

/// The search string, lower-cased for comparison (UTF-8 or US-ASCII: CHARSET was checked).
fn needle(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).to_lowercase()
}

fn contains(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || haystack.to_lowercase().contains(needle)
}

/// The decoded text of one header value: addresses as `name <address>`, text as decoded,
/// unfolded (RFC 5322 §2.2.3: a line break before white space is not part of the value).
fn header_text(raw: &[u8], header: &mail_parser::Header<'_>) -> String {
    let text = match &header.value {
        HeaderValue::Address(address) => address
            .iter()
            .map(|addr| match (&addr.name, &addr.address) {
                (Some(name), Some(address)) => format!("{name} <{address}>"),
                (Some(name), None) => name.to_string(),
                (None, Some(address)) => address.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        HeaderValue::Text(text) => text.to_string(),
        HeaderValue::TextList(list) => list.join(", "),
        // Dates, content types, Received: the field as written.
        _ => {
            let start = header.offset_start as usize;
            let end = (header.offset_end as usize).min(raw.len());
            String::from_utf8_lossy(raw.get(start..end).unwrap_or_default())
                .trim()
                .to_string()
        }
    };
    text.replace("\r\n", "").replace('\n', "")
}

/// HEADER / FROM / TO / ... : a field called `name` whose decoded value contains `needle`; an
/// empty needle matches any message with such a field (RFC 9051 §6.4.4).
fn header_contains(msg: &mail_parser::Message<'_>, name: &str, needle: &[u8]) -> bool {
    let needle = self::needle(needle);
    root_headers(msg)
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .any(|h| contains(&header_text(&msg.raw_message, h), &needle))
}

/// The message's own header fields (mail-parser's `headers()` indexes without checking).
fn root_headers<'a>(msg: &'a mail_parser::Message<'_>) -> &'a [mail_parser::Header<'a>] {
    msg.parts
        .first()
        .map_or(&[], |part| part.headers.as_slice())
}

fn headers_contain(msg: &mail_parser::Message<'_>, needle: &str) -> bool {
    root_headers(msg).iter().any(|h| {
        contains(h.name.as_str(), needle) || contains(&header_text(&msg.raw_message, h), needle)
    })
}

/// BODY: the decoded text of any part (a message inside counts with its own header and
/// parts); a part that is not text is matched as bytes if they are UTF-8.
fn body_contains(msg: &mail_parser::Message<'_>, needle: &str) -> bool {
    msg.parts.iter().any(|part| match &part.body {
        PartType::Text(text) | PartType::Html(text) => contains(text, needle),
        PartType::Binary(data) | PartType::InlineBinary(data) => {
            std::str::from_utf8(data).is_ok_and(|text| contains(text, needle))
        }
        PartType::Message(inner) => headers_contain(inner, needle) || body_contains(inner, needle),
        PartType::Multipart(_) => false,
    })
}

/// `NO [BADCHARSET (UTF-8 US-ASCII)]` unless the charset is one we search in; true when it is.
pub(super) fn check_charset(tag: &Tag<'_>, charset: &str, out: &mut Vec<u8>) -> bool {
    if charset.eq_ignore_ascii_case("UTF-8") || charset.eq_ignore_ascii_case("US-ASCII") {
        return true;
    }
    let allowed = ["UTF-8", "US-ASCII"]
        .into_iter()
        .filter_map(|c| Charset::try_from(c).ok())
        .collect();
    out.extend(no(
        tag,
        Some(Code::badcharset(allowed)),
        "Only UTF-8 and US-ASCII are supported",
    ));
    false
}

impl<B: Backend> Session<B> {
    /// The messages of the selected mailbox that match every key of `criteria` (ANDed), as
    /// (sequence number, metadata) in sequence order; None after answering the client with a
    /// backend failure. SEARCH uses it, and so can any command that searches first (SORT).
    pub(super) async fn matching(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
        out: &mut Vec<u8>,
    ) -> Option<Vec<(u32, MessageMeta)>> {
        if criteria.iter().any(uses_modseq) {
            // RFC 7162 §3.1: SEARCH MODSEQ is a CONDSTORE-enabling command.
            self.enabled.condstore = true;
        }
        if let Err(err) = self.refresh(false, false, out).await {
            out.extend(backend_error(tag, &err));
            return None;
        }
        let State::Selected(sel) = &mut self.state else {
            return None;
        };
        let ctx = Context {
            largest_seq: sel.count(),
            largest_uid: sel.largest_uid(),
        };
        // The view is lent out for the scan (nothing else touches it meanwhile), so that only
        // the matches are copied.
        let view = std::mem::take(&mut sel.view);
        let name = sel.name.clone();
        let found = self.scan(tag, criteria, &ctx, &view, &name, out).await;
        if let State::Selected(sel) = &mut self.state {
            sel.view = view;
        }
        found
    }

    /// [`Session::matching`]'s scan through the selected mailbox's view.
    async fn scan(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
        ctx: &Context,
        view: &View,
        name: &str,
        out: &mut Vec<u8>,
    ) -> Option<Vec<(u32, MessageMeta)>> {
        let read = criteria.iter().map(reads).max().unwrap_or(Read::Nothing);
        let mut found = Vec::new();
        for (i, entry) in view.iter().enumerate() {
            if entry.gone() {
                continue;
            }
            let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let meta = view.meta_of(entry);
            let content = if read != Read::Nothing {
                let content = if read == Read::Header {
                    self.backend.header(name, meta.uid).await
                } else {
                    self.backend.body(name, meta.uid).await
                };
                match content {
                    Ok(Some(content)) => Some(content),
                    Ok(None) => continue,
                    Err(err) => {
                        out.extend(backend_error(tag, &err));
                        return None;
                    }
                }
            } else {
                None
            };
            let mut candidate = Candidate {
                seq,
                meta,
                parsed: None,
            };
            let header = (read == Read::Header)
                .then_some(content.as_deref())
                .flatten();
            match criteria
                .iter()
                .map(|key| ctx.quick(key, &candidate, header))
                .try_fold(true, |all, v| match v {
                    Some(false) => Err(()),
                    Some(true) => Ok(all),
                    None => Ok(false),
                }) {
                // Some key is false: no match, nothing to parse.
                Err(()) => continue,
                // Every key is true.
                Ok(true) => {
                    found.push((seq, meta.owned()));
                    continue;
                }
                Ok(false) => {}
            }
            candidate.parsed = content
                .as_deref()
                .and_then(|c| MessageParser::default().parse(c));
            if criteria.iter().all(|key| ctx.matches(key, &candidate)) {
                found.push((seq, meta.owned()));
            }
        }
        Some(found)
    }

    /// SEARCH / UID SEARCH. `options` is the RETURN clause (RFC 4731); without one the answer
    /// is `* SEARCH`, or under IMAP4rev2 `* ESEARCH ... ALL` (RFC 9051 §6.4.4).
    pub(super) async fn search(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
        uid: bool,
        options: Option<ReturnOptions>,
        out: &mut Vec<u8>,
    ) {
        let with_modseq = criteria.iter().any(uses_modseq);
        // `$` was emptied before parsing (`Session::command`); set only once this succeeds.
        let save = options.filter(|o| o.save);
        let Some(found) = self.matching(tag, criteria, out).await else {
            return;
        };
        if let Some(o) = save
            && let State::Selected(sel) = &mut self.state
        {
            let uids = found.iter().map(|(_, meta)| meta.uid).collect();
            sel.saved = super::searchres::to_save(uids, o.min, o.max, o.all || o.count);
        }
        // (the number reported, the message's mod-sequence)
        let hits: Vec<(u32, u64)> = found
            .iter()
            .map(|(seq, meta)| (if uid { meta.uid } else { *seq }, meta.modseq))
            .collect();
        let options = match options {
            Some(options) => Some(options),
            None if self.enabled.rev2 => Some(ReturnOptions {
                all: true,
                ..ReturnOptions::default()
            }),
            None => None,
        };
        match options {
            // RFC 5182 §2.1: SAVE alone asks for no ESEARCH response.
            Some(ReturnOptions {
                save: true,
                min: false,
                max: false,
                all: false,
                count: false,
            }) => {}
            Some(options) => out.extend(esearch(tag, uid, &options, &hits, with_modseq)),
            None => {
                let mut line = b"* SEARCH".to_vec();
                for (hit, _) in &hits {
                    line.extend(format!(" {hit}").into_bytes());
                }
                // RFC 7162 §3.1.5: with MODSEQ, the highest mod-sequence of what was found.
                if let Some(highest) = hits.iter().map(|h| h.1).max().filter(|_| with_modseq) {
                    line.extend(format!(" (MODSEQ {highest})").into_bytes());
                }
                line.extend_from_slice(b"\r\n");
                out.extend(line);
            }
        }
        out.extend(ok(tag, None, "SEARCH completed"));
    }
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n] [MODSEQ n]` (RFC 4731 §3.1,
/// §3.2). With no match, MIN, MAX and ALL are left out and COUNT is 0.
fn esearch(
    tag: &Tag<'_>,
    uid: bool,
    options: &ReturnOptions,
    hits: &[(u32, u64)],
    with_modseq: bool,
) -> Vec<u8> {
    // A tag never holds `"` or `\` (RFC 9051 §9 `tag`), so it can be quoted as it is.
    let mut line = format!("* ESEARCH (TAG \"{}\")", tag.as_ref());
    if uid {
        line.push_str(" UID");
    }
    let min = hits.iter().min_by_key(|h| h.0);
    let max = hits.iter().max_by_key(|h| h.0);
    if options.min
        && let Some(min) = min
    {
        line.push_str(&format!(" MIN {}", min.0));
    }
    if options.max
        && let Some(max) = max
    {
        line.push_str(&format!(" MAX {}", max.0));
    }
    if options.all && !hits.is_empty() {
        let mut numbers: Vec<u32> = hits.iter().map(|h| h.0).collect();
        numbers.sort_unstable();
        line.push_str(&format!(" ALL {}", uid_set(&numbers)));
    }
    if options.count {
        line.push_str(&format!(" COUNT {}", hits.len()));
    }
    if with_modseq {
        // RFC 4731 §3.2: over everything found when ALL or COUNT was asked for, otherwise
        // over the messages MIN and MAX name.
        let highest = if options.all || options.count {
            hits.iter().map(|h| h.1).max()
        } else {
            [min, max].into_iter().flatten().map(|h| h.1).max()
        };
        if let Some(highest) = highest {
            line.push_str(&format!(" MODSEQ {highest}"));
        }
    }
    line.push_str("\r\n");
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_clause_is_taken_off() {
        let (command, options) = split_return(b"a1 UID SEARCH RETURN (MIN count) UNSEEN")
            .unwrap()
            .unwrap();
        assert_eq!(command, b"a1 UID SEARCH UNSEEN");
        assert!(options.min && options.count && !options.max && !options.all);
        let (command, options) = split_return(b"b search return () 1:* DELETED")
            .unwrap()
            .unwrap();
        assert_eq!(command, b"b search 1:* DELETED");
        assert!(options.all);
        assert_eq!(split_return(b"c SEARCH ALL").unwrap(), None);
        assert_eq!(split_return(b"d FETCH 1 RETURN").unwrap(), None);
        let (command, options) = split_return(b"e SEARCH RETURN (SAVE) ALL")
            .unwrap()
            .unwrap();
        assert_eq!(command, b"e SEARCH ALL");
        assert!(options.save && !options.all);
        assert!(split_return(b"e SEARCH RETURN (BOGUS) ALL").is_err());
        assert!(split_return(b"e SEARCH RETURN (MIN").is_err());
        assert!(split_return(b"e SEARCH RETURN (MIN)").is_err());
    }

    #[test]
    fn decoded_headers_and_bodies_match() {
        let raw = b"From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.com>\r\n\
            Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\
            Content-Transfer-Encoding: base64\r\n\r\nw5xiZXJncsO2w59l\r\n";
        let msg = MessageParser::default().parse(&raw[..]).unwrap();
        assert!(header_contains(&msg, "from", "jürgen".as_bytes()));
        assert!(header_contains(&msg, "FROM", b"J@EXAMPLE"));
        assert!(header_contains(&msg, "Subject", "GRÜßE".as_bytes()));
        assert!(header_contains(&msg, "Subject", b""));
        assert!(!header_contains(&msg, "X-Missing", b""));
        assert!(body_contains(&msg, &needle("übergröße".as_bytes())));
        assert!(body_contains(&msg, &needle("ÜBERgröße".as_bytes())));
        // The base64 text is not searched as written.
        assert!(!body_contains(&msg, &needle(b"w5xiZXJn")));
    }

    /// The quick pre-check never contradicts the full matcher, over headers made to trip it:
    /// encoded words, quotes, escapes, comments, folding, 8-bit text, repeated fields, group
    /// syntax, and needles with spaces, quotes and address punctuation.
    #[test]
    fn the_quick_check_agrees_with_the_full_matcher() {
        let headers: &[&[u8]] = &[
            b"From: Sender 7 <sender7@bench.test>\r\nSubject: Message 1: hi\r\n\r\n",
            b"From: \"Send\"er <x@y.test>\r\n\r\n",
            b"From: Se\\nder <x@y.test>\r\n\r\n",
            b"From: \"Se\\nder\" <x@y.test>\r\n\r\n",
            b"From: x@y.test (Sender Seven)\r\n\r\n",
            b"From: =?UTF-8?Q?Sender_7?= <x@y.test>\r\n\r\n",
            b"From: Sender\r\n 7 <x@y.test>\r\n\r\n",
            b"From: Sender  7 <x@y.test>\r\n\r\n",
            "From: S\u{e9}nder <x@y.test>\r\n\r\n".as_bytes(),
            b"From: a@b.test\r\nFrom: Sender <sender@c.test>\r\n\r\n",
            b"To: undisclosed-recipients:;\r\n\r\n",
            b"To: Team: a@b.test, Sender <s@c.test>;\r\n\r\n",
            b"Subject: =?ISO-8859-1?Q?Gr=FC=DFe?= sender\r\n\r\n",
            b"Subject:sender7\r\n\r\n",
            b"X-Thing: Sender-7 value\r\n\r\n",
            b"\r\n",
        ];
        let needles: &[&[u8]] = &[
            b"sender7@bench.test",
            b"sender",
            b"SENDER",
            b"sender 7",
            b"der <x",
            b"\"send",
            b"x@y",
            "s\u{e9}nder".as_bytes(),
            "gr\u{fc}".as_bytes(),
            b"team",
            b"undisclosed",
            b"",
            b"7",
        ];
        let ctx = Context {
            largest_seq: 1,
            largest_uid: 1,
        };
        let meta = MessageMeta {
            uid: 1,
            flags: vec![],
            size: 10,
            internal_date_ms: 0,
            modseq: 1,
        };
        for header in headers {
            for needle in needles {
                let n =
                    || imap_codec::imap_types::core::AString::try_from(needle.to_vec()).unwrap();
                let keys = [
                    SearchKey::From(n()),
                    SearchKey::To(n()),
                    SearchKey::Subject(n()),
                    SearchKey::Header(
                        imap_codec::imap_types::core::AString::try_from("X-Thing").unwrap(),
                        n(),
                    ),
                    SearchKey::Not(Box::new(SearchKey::From(n()))),
                    SearchKey::Or(Box::new(SearchKey::Seen), Box::new(SearchKey::To(n()))),
                ];
                for key in keys {
                    let bare = Candidate {
                        seq: 1,
                        meta: meta.borrowed(),
                        parsed: None,
                    };
                    let quick = ctx.quick(&key, &bare, Some(header));
                    let full = Candidate {
                        seq: 1,
                        meta: meta.borrowed(),
                        parsed: MessageParser::default().parse(*header),
                    };
                    let want = ctx.matches(&key, &full);
                    assert!(
                        quick.is_none_or(|q| q == want),
                        "{key:?} on {:?}: quick {quick:?}, full {want}",
                        String::from_utf8_lossy(header)
                    );
                }
            }
        }
        // And it does settle the common case.
        let header = headers[0];
        let bare = Candidate {
            seq: 1,
            meta: meta.borrowed(),
            parsed: None,
        };
        let from = |s: &'static str| {
            SearchKey::From(imap_codec::imap_types::core::AString::try_from(s).unwrap())
        };
        assert_eq!(
            ctx.quick(&from("sender8@bench.test"), &bare, Some(header)),
            Some(false)
        );
        assert_eq!(
            ctx.quick(&from("sender7@bench.test"), &bare, Some(header)),
            None
        );
    }
}
