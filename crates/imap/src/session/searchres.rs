//! SEARCHRES (RFC 5182, part of IMAP4rev2: RFC 9051 §6.4.4.1-2): `SEARCH RETURN (SAVE)` keeps
//! the messages it found, and `$` stands for them as the sequence set of any later command.
//!
//! The session keeps the saved messages as UIDs: an expunged message then simply drops out,
//! as the RFC requires, and `$` means the same messages whatever their sequence numbers
//! become. imap-codec does not know `$`, so [`expand`] rewrites a command that uses it before
//! parsing, with the saved messages spelled as the command needs them:
//! - the set of FETCH, STORE, COPY, MOVE: UIDs in their UID form, sequence numbers
//!   otherwise; when nothing is saved, the command becomes its UID form naming a UID that no
//!   message has, which matches nothing, as an empty `$` must;
//! - a SEARCH, SORT or THREAD key: `UID <uids>` (or just `<uids>` after a `UID` key).
//!
//! `$` is recognised only as a whole sequence set (RFC 5182 §3, `seq-last-command`): after a
//! space or `(` and before a space, `)` or the line's end, outside quoted strings and
//! literals. Anywhere else it stays as it is and the parser refuses the command.

use super::uid_set;
use super::view::View;

/// A UID no message has (UIDs are below it), for an empty `$`.
const NO_SUCH_UID: u32 = u32::MAX;

/// Where in the command each `$` stands, outside quoted strings and literals.
fn markers(command: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < command.len() {
        match command[i] {
            b'"' => {
                i += 1;
                while i < command.len() && command[i] != b'"' {
                    if command[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'{' => {
                // `{n}`, `{n+}` (or `~{n}`) and CRLF, then n bytes of literal.
                let digits = command[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let mut j = i + 1 + digits;
                if command.get(j) == Some(&b'+') {
                    j += 1;
                }
                let n: Option<usize> = std::str::from_utf8(&command[i + 1..i + 1 + digits])
                    .ok()
                    .and_then(|s| s.parse().ok());
                match (digits > 0, command.get(j), n) {
                    (true, Some(b'}'), Some(n)) => {
                        let data = j
                            + 1
                            + if command[j + 1..].starts_with(b"\r\n") {
                                2
                            } else {
                                1
                            };
                        i = data.saturating_add(n);
                    }
                    _ => i += 1,
                }
            }
            b'$' => {
                let before = i.checked_sub(1).map(|p| command[p]);
                let after = command.get(i + 1).copied();
                if matches!(before, Some(b' ' | b'('))
                    && matches!(after, None | Some(b' ' | b')' | b'\r' | b'\n'))
                {
                    found.push(i);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    found
}

/// The command's words up to its first argument: (tag, whether it is a UID command, verb,
/// where the first argument starts).
fn head(command: &[u8]) -> Option<(bool, Vec<u8>, usize)> {
    let mut words = Vec::new();
    let mut start = 0;
    for (i, &b) in command.iter().enumerate() {
        if b == b' ' {
            words.push((start, i));
            start = i + 1;
            if words.len() == 3 {
                break;
            }
        }
    }
    let word = |n: usize| {
        words
            .get(n)
            .map(|&(a, b)| command[a..b].to_ascii_uppercase())
    };
    let second = word(1)?;
    if second == b"UID" {
        let verb = word(2)?;
        Some((true, verb, words[2].1 + 1))
    } else {
        Some((false, second, words[1].1 + 1))
    }
}

/// `command` with every `$` standing for the saved messages (see the module docs), or None
/// when it has none.
pub(super) fn expand(command: &[u8], saved: &[u32], view: &View) -> Option<Vec<u8>> {
    let found = markers(command);
    if found.is_empty() {
        return None;
    }
    let (uid, verb, first_arg) = head(command)?;
    let uids = || {
        if saved.is_empty() {
            NO_SUCH_UID.to_string()
        } else {
            uid_set(saved)
        }
    };
    let searching = matches!(verb.as_slice(), b"SEARCH" | b"SORT" | b"THREAD");
    let mut out = Vec::with_capacity(command.len() + 32);
    let mut copied = 0;
    for at in found {
        let replacement = if searching {
            let after_uid_key = at >= 4
                && command[at - 1] == b' '
                && command[at - 4..at - 1].eq_ignore_ascii_case(b"UID")
                && (at == 4 || matches!(command[at - 5], b' ' | b'('));
            if after_uid_key {
                uids()
            } else {
                format!("UID {}", uids())
            }
        } else if at != first_arg {
            // Not where a sequence set goes: left for the parser to refuse.
            continue;
        } else if uid {
            uids()
        } else {
            let mut seqs: Vec<u32> = saved
                .iter()
                .filter_map(|&u| view.find(u).ok())
                .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
                .collect();
            if seqs.is_empty() {
                // Nothing to name by number: the UID form with a UID no message has.
                let verb_at = first_arg - verb.len() - 1;
                out.extend_from_slice(&command[copied..verb_at]);
                out.extend_from_slice(b"UID ");
                out.extend_from_slice(&command[verb_at..at]);
                out.extend_from_slice(NO_SUCH_UID.to_string().as_bytes());
                copied = at + 1;
                continue;
            }
            seqs.sort_unstable();
            uid_set(&seqs)
        };
        out.extend_from_slice(&command[copied..at]);
        out.extend_from_slice(replacement.as_bytes());
        copied = at + 1;
    }
    out.extend_from_slice(&command[copied..]);
    Some(out)
}

/// What `SEARCH RETURN (... SAVE)` saves (RFC 5182 §2.1, RFC 9051 §6.4.4.1): with MIN or MAX
/// and neither ALL nor COUNT, only the lowest and/or highest message found; otherwise all.
/// `found` is (UID) in any order.
pub(super) fn to_save(mut found: Vec<u32>, min: bool, max: bool, all_or_count: bool) -> Vec<u32> {
    found.sort_unstable();
    if all_or_count || !(min || max) || found.is_empty() {
        return found;
    }
    let mut kept = Vec::new();
    if min {
        kept.push(found[0]);
    }
    if max && (!min || found.len() > 1) {
        kept.push(found[found.len() - 1]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageMeta;

    fn view(uids: &[u32]) -> View {
        View::new(
            uids.iter()
                .map(|&uid| MessageMeta {
                    uid,
                    flags: Vec::new(),
                    size: 1,
                    internal_date_ms: 0,
                    modseq: 1,
                })
                .collect(),
        )
    }

    fn x(command: &str, saved: &[u32], v: &View) -> Option<String> {
        expand(command.as_bytes(), saved, v).map(|c| String::from_utf8(c).unwrap())
    }

    #[test]
    fn dollar_becomes_the_saved_messages() {
        let v = view(&[3, 5, 7, 9, 11]);
        let saved = [5, 7, 9, 20];
        assert_eq!(
            x("a FETCH $ FLAGS\r\n", &saved, &v).unwrap(),
            "a FETCH 2:4 FLAGS\r\n"
        );
        assert_eq!(
            x("a uid fetch $ FLAGS\r\n", &saved, &v).unwrap(),
            "a uid fetch 5,7,9,20 FLAGS\r\n"
        );
        assert_eq!(
            x("a COPY $ Trash\r\n", &saved, &v).unwrap(),
            "a COPY 2:4 Trash\r\n"
        );
        assert_eq!(
            x("a SEARCH $ SEEN\r\n", &saved, &v).unwrap(),
            "a SEARCH UID 5,7,9,20 SEEN\r\n"
        );
        assert_eq!(
            x("a UID SEARCH OR UID $ (DELETED $)\r\n", &saved, &v).unwrap(),
            "a UID SEARCH OR UID 5,7,9,20 (DELETED UID 5,7,9,20)\r\n"
        );
    }

    #[test]
    fn an_empty_dollar_matches_nothing() {
        let v = view(&[3, 5]);
        assert_eq!(
            x("a FETCH $ (FLAGS)\r\n", &[], &v).unwrap(),
            "a UID FETCH 4294967295 (FLAGS)\r\n"
        );
        assert_eq!(
            x("a STORE $ +FLAGS (\\Seen)\r\n", &[9], &v).unwrap(),
            "a UID STORE 4294967295 +FLAGS (\\Seen)\r\n"
        );
        assert_eq!(
            x("a UID MOVE $ Junk\r\n", &[], &v).unwrap(),
            "a UID MOVE 4294967295 Junk\r\n"
        );
        assert_eq!(
            x("a SEARCH $\r\n", &[], &v).unwrap(),
            "a SEARCH UID 4294967295\r\n"
        );
    }

    #[test]
    fn dollar_elsewhere_is_left_alone() {
        let v = view(&[1]);
        assert_eq!(x("a SEARCH SUBJECT \"$\"\r\n", &[1], &v), None);
        assert_eq!(x("a SEARCH SUBJECT {3}\r\n $ \r\n", &[1], &v), None);
        assert_eq!(x("a SEARCH SUBJECT {3+}\r\n $  SEEN\r\n", &[1], &v), None);
        assert_eq!(x("a SEARCH SUBJECT a$b\r\n", &[1], &v), None);
        assert_eq!(x("a NOOP\r\n", &[1], &v), None);
        // Not the sequence set: unchanged, and the parser refuses it.
        assert_eq!(
            x("a STORE 1 FLAGS $\r\n", &[1], &v).unwrap(),
            "a STORE 1 FLAGS $\r\n"
        );
    }

    #[test]
    fn what_save_keeps() {
        assert_eq!(to_save(vec![9, 3, 5], false, false, false), [3, 5, 9]);
        assert_eq!(to_save(vec![9, 3, 5], true, false, false), [3]);
        assert_eq!(to_save(vec![9, 3, 5], false, true, false), [9]);
        assert_eq!(to_save(vec![9, 3, 5], true, true, false), [3, 9]);
        assert_eq!(to_save(vec![4], true, true, false), [4]);
        assert_eq!(to_save(vec![9, 3, 5], true, false, true), [3, 5, 9]);
        assert_eq!(to_save(Vec::new(), true, true, false), Vec::<u32>::new());
    }
}
