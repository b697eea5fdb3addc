//! LSUB (RFC 3501 §6.3.9, kept by RFC 9051 clients): which subscribed names a pattern lists,
//! and with which attributes.
//!
//! Subscriptions are names, not mailboxes: a subscribed name whose mailbox is gone is listed
//! `\Noselect`. When `%` stops a pattern above a subscribed name ("foo/bar" subscribed, "foo"
//! not, pattern "%"), the unsubscribed ancestor is listed `\Noselect` so the client can
//! descend. LIST-EXTENDED's `(SUBSCRIBED)` selection is in `session/list.rs`.

use std::collections::BTreeSet;

/// The LSUB lines for `pattern` (already joined with the reference and INBOX-normalised):
/// (name, `\Noselect`) in order, INBOX first. `matches` is the session's wildcard matcher.
pub fn lsub(
    pattern: &str,
    subscribed: &[String],
    existing: &[String],
    matches: impl Fn(&str, &str) -> bool,
) -> Vec<(String, bool)> {
    let subscribed_set: BTreeSet<&str> = subscribed.iter().map(String::as_str).collect();
    let exists = |name: &str| existing.iter().any(|e| e == name);
    let mut out: Vec<(String, bool)> = Vec::new();
    let push = |name: &str, noselect: bool, out: &mut Vec<(String, bool)>| {
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), noselect));
        }
    };
    for name in subscribed {
        if matches(pattern, name) {
            push(name, !exists(name), &mut out);
            continue;
        }
        let mut end = 0;
        while let Some(pos) = name[end..].find('/') {
            let ancestor = &name[..end + pos];
            if !subscribed_set.contains(ancestor) && matches(pattern, ancestor) {
                push(ancestor, true, &mut out);
            }
            end += pos + 1;
        }
    }
    out.sort_by(|a, b| (a.0 != "INBOX", &a.0).cmp(&(b.0 != "INBOX", &b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// `*` matches anything, `%` anything but "/" (enough for these cases).
    fn simple(pattern: &str, name: &str) -> bool {
        match pattern {
            "*" => true,
            "%" => !name.contains('/'),
            p => p == name,
        }
    }

    #[test]
    fn gone_and_ancestors_are_noselect() {
        let subscribed = names(&["INBOX", "foo/bar", "Gone", "Work"]);
        let existing = names(&["INBOX", "foo", "foo/bar", "Work"]);
        assert_eq!(
            lsub("%", &subscribed, &existing, simple),
            vec![
                ("INBOX".to_string(), false),
                ("Gone".to_string(), true),
                ("Work".to_string(), false),
                ("foo".to_string(), true),
            ]
        );
        assert_eq!(
            lsub("*", &subscribed, &existing, simple),
            vec![
                ("INBOX".to_string(), false),
                ("Gone".to_string(), true),
                ("Work".to_string(), false),
                ("foo/bar".to_string(), false),
            ]
        );
    }
}
