//! The selected mailbox's messages as a session keeps them between commands.
//!
//! An IMAP client in IDLE holds its session for hours, and a server holds thousands of them:
//! the view is most of what such a session costs. So each message is 32 bytes here — its UID,
//! size, dates and mod-sequence, and the index of its flag list in a table the view shares
//! among its messages (a mailbox has a handful of distinct flag lists: none, `\Seen`,
//! `\Seen \Answered`, …) — rather than a [`MessageMeta`] of 56 bytes with a heap-allocated
//! list of flag strings of its own.

use std::collections::HashMap;

use crate::MessageMeta;

/// One message's metadata, borrowed from the view or from a [`MessageMeta`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta<'a> {
    pub uid: u32,
    pub flags: &'a [String],
    pub size: u64,
    pub internal_date_ms: i64,
    pub modseq: u64,
}

impl MessageMeta {
    pub(crate) fn borrowed(&self) -> Meta<'_> {
        Meta {
            uid: self.uid,
            flags: &self.flags,
            size: self.size,
            internal_date_ms: self.internal_date_ms,
            modseq: self.modseq,
        }
    }
}

impl Meta<'_> {
    pub(crate) fn owned(self) -> MessageMeta {
        MessageMeta {
            uid: self.uid,
            flags: self.flags.to_vec(),
            size: self.size,
            internal_date_ms: self.internal_date_ms,
            modseq: self.modseq,
        }
    }

    pub(crate) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// The top bit of [`Entry::flags`]: expunged in the store but not yet announced.
const GONE: u32 = 1 << 31;

/// One message of the view (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub uid: u32,
    /// Index into [`View::lists`], with [`GONE`] on top.
    flags: u32,
    pub size: u64,
    pub internal_date_ms: i64,
    pub modseq: u64,
}

impl Entry {
    /// Expunged in the store but not yet announced to this client.
    pub fn gone(&self) -> bool {
        self.flags & GONE != 0
    }
}

/// The messages of the selected mailbox in UID order; index + 1 is the message sequence
/// number.
#[derive(Debug, Default)]
pub(crate) struct View {
    entries: Vec<Entry>,
    /// Distinct flag lists, as the store spelled and ordered them; index 0 is the empty list
    /// once any message is in.
    lists: Vec<Box<[String]>>,
    index: HashMap<Box<[String]>, u32>,
}

impl View {
    /// A view of `messages`, which must be in ascending UID order.
    pub fn new(messages: Vec<MessageMeta>) -> View {
        let mut view = View::default();
        view.entries.reserve_exact(messages.len());
        for meta in messages {
            view.push(meta);
        }
        view
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    pub fn last(&self) -> Option<&Entry> {
        self.entries.last()
    }

    /// The index of the message with `uid`, or where it would be.
    pub fn find(&self, uid: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&uid, |e| e.uid)
    }

    pub fn flags(&self, entry: &Entry) -> &[String] {
        self.lists
            .get((entry.flags & !GONE) as usize)
            .map_or(&[], |l| l)
    }

    pub fn meta_of<'a>(&'a self, entry: &Entry) -> Meta<'a> {
        Meta {
            uid: entry.uid,
            flags: self.flags(entry),
            size: entry.size,
            internal_date_ms: entry.internal_date_ms,
            modseq: entry.modseq,
        }
    }

    pub fn meta(&self, i: usize) -> Meta<'_> {
        self.meta_of(&self.entries[i])
    }

    /// Appends a message above every UID in the view.
    pub fn push(&mut self, meta: MessageMeta) {
        let flags = self.intern(meta.flags);
        self.entries.push(Entry {
            uid: meta.uid,
            flags,
            size: meta.size,
            internal_date_ms: meta.internal_date_ms,
            modseq: meta.modseq,
        });
    }

    /// Takes the store's new metadata for the message at `i` (same UID).
    pub fn update(&mut self, i: usize, meta: &MessageMeta) {
        let gone = self.entries[i].flags & GONE;
        let same = *self.flags(&self.entries[i]) == *meta.flags;
        let flags = if same {
            self.entries[i].flags & !GONE
        } else {
            self.intern(meta.flags.clone())
        };
        let e = &mut self.entries[i];
        e.flags = flags | gone;
        e.size = meta.size;
        e.internal_date_ms = meta.internal_date_ms;
        e.modseq = meta.modseq;
        self.compact();
    }

    pub fn mark_gone(&mut self, i: usize) {
        self.entries[i].flags |= GONE;
    }

    /// Drops the messages marked gone, calling `removed` with each one's index (as it was
    /// before any removal) from the last to the first.
    pub fn remove_gone(&mut self, mut removed: impl FnMut(usize, &Entry)) {
        for i in (0..self.entries.len()).rev() {
            if self.entries[i].gone() {
                removed(i, &self.entries[i]);
            }
        }
        self.entries.retain(|e| !e.gone());
        self.compact();
    }

    fn intern(&mut self, flags: Vec<String>) -> u32 {
        if let Some(&i) = self.index.get(flags.as_slice()) {
            return i;
        }
        let list: Box<[String]> = flags.into_boxed_slice();
        // More distinct lists than the top bit leaves room for cannot happen: each message
        // has one list and a mailbox holds far fewer than 2^31 messages.
        let i = u32::try_from(self.lists.len()).unwrap_or(GONE - 1) & !GONE;
        self.lists.push(list.clone());
        self.index.insert(list, i);
        i
    }

    /// Forgets flag lists no message uses any more, once they outnumber the messages (flags
    /// changed many times over a long session).
    fn compact(&mut self) {
        if self.lists.len() <= 2 * self.entries.len() + 16 {
            return;
        }
        let lists = std::mem::take(&mut self.lists);
        self.index.clear();
        let mut renumbered: Vec<Option<u32>> = vec![None; lists.len()];
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            let old = (e.flags & !GONE) as usize;
            let new = match renumbered[old] {
                Some(new) => new,
                None => {
                    let new = self.intern(lists[old].to_vec());
                    renumbered[old] = Some(new);
                    new
                }
            };
            self.entries[i].flags = new | (e.flags & GONE);
        }
    }

    /// After a command: the whole view becomes the session's only long-lived data, so it
    /// holds no spare capacity.
    pub fn trim(&mut self) {
        self.entries.shrink_to_fit();
        self.lists.shrink_to_fit();
        self.index.shrink_to_fit();
    }
}

impl std::ops::Index<usize> for View {
    type Output = Entry;
    fn index(&self, i: usize) -> &Entry {
        &self.entries[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, flags: &[&str]) -> MessageMeta {
        MessageMeta {
            uid,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            size: u64::from(uid) * 10,
            internal_date_ms: i64::from(uid) * 1000,
            modseq: u64::from(uid),
        }
    }

    #[test]
    fn entries_are_small_and_flag_lists_shared() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        let view = View::new((1..=100).map(|u| meta(u, &["\\Seen"])).collect());
        assert_eq!(view.lists.len(), 1);
        let m = view.meta(41);
        assert_eq!(
            (m.uid, m.size, m.internal_date_ms, m.modseq),
            (42, 420, 42_000, 42)
        );
        assert_eq!(m.flags, ["\\Seen"]);
        assert_eq!(view.find(42), Ok(41));
        assert_eq!(view.find(101), Err(100));
    }

    #[test]
    fn updates_keep_the_gone_mark_and_order_of_flags() {
        let mut view = View::new(vec![meta(1, &[]), meta(2, &["b", "a"])]);
        view.mark_gone(0);
        view.update(0, &meta(1, &["\\Flagged"]));
        assert!(view.iter().next().unwrap().gone());
        assert_eq!(view.meta(0).flags, ["\\Flagged"]);
        assert_eq!(view.meta(1).flags, ["b", "a"]);
        let mut removed = Vec::new();
        view.remove_gone(|i, e| removed.push((i, e.uid)));
        assert_eq!(removed, [(0, 1)]);
        assert_eq!(view.len(), 1);
        assert_eq!(view.meta(0).uid, 2);
    }

    #[test]
    fn unused_flag_lists_are_forgotten() {
        let mut view = View::new(vec![meta(1, &[]), meta(2, &["k"])]);
        for n in 0..1000 {
            view.update(0, &meta(1, &[&format!("k{n}")]));
            assert!(
                view.lists.len() <= 2 * 2 + 16 + 1,
                "{} lists kept",
                view.lists.len()
            );
        }
        assert_eq!(view.meta(0).flags, ["k999"]);
        assert_eq!(view.meta(1).flags, ["k"]);
        view.mark_gone(0);
        view.remove_gone(|_, _| {});
        assert_eq!(view.meta(0).flags, ["k"]);
        view.push(meta(3, &["k"]));
        assert_eq!(view.meta(1).flags, ["k"]);
        assert_eq!(
            view.flags(&view[1]).as_ptr(),
            view.flags(&view[0]).as_ptr(),
            "shared"
        );
    }
}
