//! ENABLE (RFC 5161, RFC 9051 §6.3.1) and the parts of CONDSTORE and QRESYNC (RFC 7162) that
//! are more than a line in the command handlers: which extensions a client has turned on,
//! SELECT's QRESYNC resynchronisation and the `VANISHED` response.
//!
//! Mod-sequences come from the backend: every message carries the mod-sequence of its last
//! change and the store remembers expunged UIDs with theirs ([`Backend::vanished`]). The session
//! only filters and reports. Deliberately absent: per-flag mod-sequences (the `MODSEQ` search
//! key's entry name is accepted and ignored: every flag of a message shares its mod-sequence,
//! as RFC 7162 §3.1.5 allows) and `NOMODSEQ` (every mailbox keeps mod-sequences).

use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::sequence::SequenceSet;

use super::{Session, State, in_set, uid_set};
use crate::response::ok;
use crate::{Backend, BackendError};

/// What the client has turned on, with ENABLE or (CONDSTORE) implicitly by a CONDSTORE-enabling
/// command (RFC 7162 §3.1: SELECT/EXAMINE (CONDSTORE), FETCH MODSEQ or CHANGEDSINCE, SEARCH
/// MODSEQ, STORE UNCHANGEDSINCE, STATUS HIGHESTMODSEQ).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Enabled {
    /// MODSEQ in every FETCH caused by a flag change, and after STORE even when `.SILENT`.
    pub condstore: bool,
    /// `VANISHED` instead of `EXPUNGE`; SELECT (QRESYNC ...) and UID FETCH (... VANISHED).
    pub qresync: bool,
    /// IMAP4rev2 (RFC 9051): SEARCH answers ESEARCH; SELECT sends LIST and neither RECENT
    /// nor UNSEEN.
    pub rev2: bool,
}

/// `* VANISHED [(EARLIER) ]uid-set` (RFC 7162 §3.2.10), or nothing for no UIDs.
pub(super) fn vanished_line(uids: &[u32], earlier: bool) -> Vec<u8> {
    if uids.is_empty() {
        return Vec::new();
    }
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let earlier = if earlier { "(EARLIER) " } else { "" };
    format!("* VANISHED {earlier}{}\r\n", uid_set(&sorted)).into_bytes()
}

/// `MODSEQ (n)`, the FETCH data item (RFC 7162 §3.1.4.1).
pub(super) fn modseq_item(modseq: u64) -> String {
    format!("MODSEQ ({modseq})")
}

impl<B: Backend> Session<B> {
    /// ENABLE: turns on what we implement among the named extensions and lists, in the
    /// untagged ENABLED response, only those this command newly enabled (RFC 5161 §3.1).
    /// Unknown names are ignored, not refused. QRESYNC implies CONDSTORE (RFC 7162 §3.2.3)
    /// without listing it unless the client named it too. Extensions outside RFC 7162 and
    /// IMAP4rev2 are asked of [`Session::enable_extension`].
    pub(super) fn enable(
        &mut self,
        tag: &imap_codec::imap_types::core::Tag<'_>,
        capabilities: &[CapabilityEnable<'_>],
        out: &mut Vec<u8>,
    ) {
        let before = self.enabled;
        let mut newly: Vec<&'static str> = Vec::new();
        for capability in capabilities {
            let name = capability.to_string().to_ascii_uppercase();
            let (wanted, was): (&'static str, bool) = match name.as_str() {
                "CONDSTORE" => ("CONDSTORE", before.condstore),
                "QRESYNC" => ("QRESYNC", before.qresync),
                "IMAP4REV2" => ("IMAP4rev2", before.rev2),
                _ => {
                    // The other extensions' ENABLE (UTF8=ACCEPT, RFC 6855).
                    if let Some(name) = self.enable_extension(capability)
                        && !newly.contains(&name)
                    {
                        newly.push(name);
                    }
                    continue;
                }
            };
            match wanted {
                "CONDSTORE" => self.enabled.condstore = true,
                "QRESYNC" => {
                    self.enabled.qresync = true;
                    self.enabled.condstore = true;
                }
                _ => self.enabled.rev2 = true,
            }
            if !was && !newly.contains(&wanted) {
                newly.push(wanted);
            }
        }
        let mut line = b"* ENABLED".to_vec();
        for name in newly {
            line.push(b' ');
            line.extend_from_slice(name.as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        out.extend(line);
        out.extend(ok(tag, None, "ENABLE completed"));
    }

    /// The QRESYNC part of SELECT/EXAMINE (RFC 7162 §3.2.5), once the mailbox is selected:
    /// nothing when the UIDVALIDITY differs (the client must resynchronise from scratch);
    /// otherwise `VANISHED (EARLIER)` for the UIDs expunged after `modseq` (only those in
    /// `known_uids` when given), then `FETCH (UID FLAGS MODSEQ)` for every message changed
    /// after `modseq`. Seq-match data is not needed: every expunge is remembered.
    pub(super) async fn qresync_select(
        &mut self,
        uid_validity: u32,
        current_validity: u32,
        modseq: u64,
        known_uids: Option<&SequenceSet>,
        out: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        if uid_validity != current_validity {
            return Ok(());
        }
        let State::Selected(sel) = &self.state else {
            return Ok(());
        };
        let name = sel.name.clone();
        let vanished: Vec<u32> = self
            .backend
            .vanished(&name, modseq)
            .await?
            .into_iter()
            .filter(|&uid| known_uids.is_none_or(|set| in_set(set, uid, u32::MAX)))
            .collect();
        out.extend(vanished_line(&vanished, true));
        let State::Selected(sel) = &self.state else {
            return Ok(());
        };
        for (i, entry) in sel.view.iter().enumerate() {
            if entry.modseq > modseq {
                out.extend(
                    format!(
                        "* {} FETCH (UID {} FLAGS ({}) {})\r\n",
                        i + 1,
                        entry.uid,
                        sel.view.flags(entry).join(" "),
                        modseq_item(entry.modseq)
                    )
                    .into_bytes(),
                );
            }
        }
        Ok(())
    }

    /// UID FETCH's VANISHED modifier (RFC 7162 §3.2.6): the UIDs of `set` expunged after
    /// `since`, as `VANISHED (EARLIER)`, sent before the FETCH responses.
    pub(super) async fn vanished_earlier(
        &mut self,
        set: &SequenceSet,
        since: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let State::Selected(sel) = &self.state else {
            return Ok(());
        };
        let name = sel.name.clone();
        // `*` stands for the largest UID in use; an expunged one above it still counts.
        let largest = sel.largest_uid();
        let vanished: Vec<u32> = self
            .backend
            .vanished(&name, since)
            .await?
            .into_iter()
            .filter(|&uid| in_set(set, uid, largest.max(uid)))
            .collect();
        out.extend(vanished_line(&vanished, true));
        Ok(())
    }
}
