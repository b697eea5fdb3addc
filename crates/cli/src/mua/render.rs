//! Terminal output for the MUA (the mailbox table and one message) and saving attachments to
//! disk under names that cannot escape the target directory.
//!
//! Everything shown comes from other people's mail, so control characters are replaced before
//! printing: an escape sequence in a subject must not be able to drive the terminal.
//! Column widths count characters, not terminal cells, so East Asian wide characters can shift
//! a row; that is accepted rather than pulling in a Unicode width table.
//! Deliberately not done here: colours, paging, and any I/O besides writing attachments.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{ReadMessage, Summary};

const FROM_WIDTH: usize = 24;
const SUBJECT_WIDTH: usize = 50;
/// Longest file name we write, in bytes; common file systems allow 255.
const MAX_FILENAME_BYTES: usize = 200;

/// Replaces every control character except those in `keep` with a space (tabs with spaces
/// too, unless kept), so that mail content cannot emit escape sequences.
fn printable(text: &str, keep: &[char]) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && !keep.contains(&c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Cuts `text` to `width` characters, marking a cut with an ellipsis, and pads it to `width`.
fn fit(text: &str, width: usize) -> String {
    let clean = printable(text, &[]);
    let count = clean.chars().count();
    if count > width {
        let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        format!("{clean}{}", " ".repeat(width - count))
    }
}

/// One letter per interesting flag: N(ew, i.e. not \Seen), A(nswered), F(lagged), D(eleted).
fn flag_letters(flags: &[String]) -> String {
    let has = |name: &str| flags.iter().any(|f| f.eq_ignore_ascii_case(name));
    let mut letters = String::new();
    if !has("\\Seen") {
        letters.push('N');
    }
    if has("\\Answered") {
        letters.push('A');
    }
    if has("\\Flagged") {
        letters.push('F');
    }
    if has("\\Deleted") {
        letters.push('D');
    }
    letters
}

/// The mailbox listing: `#`, date, from, subject and flags in aligned columns.
pub fn render_summary_table(list: &[Summary]) -> String {
    if list.is_empty() {
        return "No messages.\n".to_string();
    }
    let number_width = list
        .iter()
        .map(|s| s.seq.to_string().len())
        .max()
        .unwrap_or(1)
        .max(1);
    let date_width = list
        .iter()
        .map(|s| s.date.chars().count())
        .max()
        .unwrap_or(0)
        .max("Date".len());
    let mut out = String::new();
    let mut row = |number: &str, date: &str, from: &str, subject: &str, flags: &str| {
        let line = format!(
            "{number:>number_width$}  {}  {}  {}  {flags}",
            fit(date, date_width),
            fit(from, FROM_WIDTH),
            fit(subject, SUBJECT_WIDTH),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    };
    row("#", "Date", "From", "Subject", "Flags");
    for summary in list {
        row(
            &summary.seq.to_string(),
            &summary.date,
            &summary.from,
            &summary.subject,
            &flag_letters(&summary.flags),
        );
    }
    out
}

fn human_size(bytes: usize) -> String {
    // Sizes are shown, not computed with, so the float conversion's rounding is harmless.
    let value = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if value < 1024.0 * 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{:.1} MiB", value / (1024.0 * 1024.0))
    }
}

/// One message: its headers, a blank line, the text, and a list of attachments.
pub fn render_message(msg: &ReadMessage) -> String {
    let mut out = String::new();
    for (name, value) in &msg.headers {
        let _ = writeln!(out, "{name}: {}", printable(value, &[]));
    }
    out.push('\n');
    let text = printable(&msg.text.replace("\r\n", "\n"), &['\n', '\t']);
    out.push_str(&text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
    if !msg.attachments.is_empty() {
        out.push_str("\nAttachments:\n");
        for (i, attachment) in msg.attachments.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {}. {} ({}, {})",
                i + 1,
                printable(&attachment.filename, &[]),
                printable(&attachment.content_type, &[]),
                human_size(attachment.data.len())
            );
        }
    }
    out
}

/// Turns a sender-chosen attachment name into a safe file name: only the last path component,
/// no control or reserved characters, no leading dots (so no `..` and no hidden files), and
/// not too long. An empty result becomes `attachment-N`.
pub(super) fn sanitize_filename(name: &str, index: usize) -> String {
    let last = name
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_control() || "<>:\"|?*".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    if trimmed.is_empty() {
        return format!("attachment-{index}");
    }
    if trimmed.len() <= MAX_FILENAME_BYTES {
        return trimmed.to_string();
    }
    // Keep a short extension so the file still opens with the right program.
    let (stem, extension) = match trimmed.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() <= 10 => (stem, Some(ext)),
        _ => (trimmed, None),
    };
    let budget = MAX_FILENAME_BYTES - extension.map_or(0, |e| e.len() + 1);
    let mut end = budget.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    match extension {
        Some(ext) => format!("{}.{ext}", &stem[..end]),
        None => stem[..end].to_string(),
    }
}

/// `name` if nothing is at `dir/name` yet, otherwise `stem-1.ext`, `stem-2.ext`, ...
fn unused_path(dir: &Path, name: &str, taken: &[PathBuf]) -> PathBuf {
    let candidate = dir.join(name);
    if !candidate.exists() && !taken.contains(&candidate) {
        return candidate;
    }
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    let mut n = 1u32;
    loop {
        let candidate = dir.join(format!("{stem}-{n}{extension}"));
        if !candidate.exists() && !taken.contains(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// Writes every attachment into `dir` (created if missing) under a sanitized name, never
/// overwriting an existing file; returns the paths written, in attachment order.
pub fn save_attachments(msg: &ReadMessage, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create directory {} for attachments", dir.display()))?;
    let mut written = Vec::with_capacity(msg.attachments.len());
    let bytes: usize = msg.attachments.iter().map(|a| a.data.len()).sum();
    let mut progress = super::Progress::new(
        "saving attachments",
        msg.attachments.len() as u64,
        bytes > 1_000_000,
    );
    for (i, attachment) in msg.attachments.iter().enumerate() {
        let name = sanitize_filename(&attachment.filename, i + 1);
        let path = unused_path(dir, &name, &written);
        // create_new refuses to follow or replace anything that appeared since the check.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        std::io::Write::write_all(&mut file, &attachment.data)
            .with_context(|| format!("write {}", path.display()))?;
        written.push(path);
        progress.inc(1);
    }
    progress.finish();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::super::Attachment;
    use super::*;

    fn summary(seq: u32, from: &str, subject: &str, flags: &[&str]) -> Summary {
        Summary {
            seq,
            uid: seq + 100,
            date: "2024-05-07 09:05".into(),
            from: from.into(),
            subject: subject.into(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            size: 100,
        }
    }

    #[test]
    fn table_aligns_columns_and_marks_unseen() {
        let list = vec![
            summary(12, "Alice Example", "Lunch?", &[]),
            summary(
                9,
                "a-very-long-sender-name@example.test",
                "Quarterly report",
                &["\\Seen", "\\Answered", "\\Flagged"],
            ),
        ];
        let table = render_summary_table(&list);
        let expected = format!(
            " #  Date              From                      Subject{}  Flags\n\
12  2024-05-07 09:05  Alice Example             Lunch?{}  N\n \
9  2024-05-07 09:05  a-very-long-sender-name…  Quarterly report{}  AF\n",
            " ".repeat(SUBJECT_WIDTH - "Subject".len()),
            " ".repeat(SUBJECT_WIDTH - "Lunch?".len()),
            " ".repeat(SUBJECT_WIDTH - "Quarterly report".len()),
        );
        assert_eq!(table, expected);
        let widths: Vec<usize> = table
            .lines()
            .map(|l| l.find("Flags").unwrap_or(0))
            .collect();
        assert!(widths[0] > 0);
    }

    #[test]
    fn table_neutralizes_escape_sequences() {
        let list = vec![summary(1, "x\u{1b}[31mred", "a\r\nb", &["\\Seen"])];
        let table = render_summary_table(&list);
        assert!(!table.contains('\u{1b}'));
        assert_eq!(table.lines().count(), 2, "{table}");
    }

    #[test]
    fn empty_table_says_so() {
        assert_eq!(render_summary_table(&[]), "No messages.\n");
    }

    #[test]
    fn message_rendering() {
        let msg = ReadMessage {
            uid: 1,
            headers: vec![
                ("From".into(), "Alice <alice@example.test>".into()),
                ("Subject".into(), "Report\u{1b}]0;pwned\u{7}".into()),
            ],
            text: "Line one\r\n\tindented\r\nend".into(),
            attachments: vec![
                Attachment {
                    filename: "r.pdf".into(),
                    content_type: "application/pdf".into(),
                    data: vec![0; 2048],
                },
                Attachment {
                    filename: "tiny.txt".into(),
                    content_type: "text/plain".into(),
                    data: b"hi".to_vec(),
                },
            ],
            raw: Vec::new(),
        };
        assert_eq!(
            render_message(&msg),
            "From: Alice <alice@example.test>\n\
Subject: Report ]0;pwned \n\
\n\
Line one\n\tindented\nend\n\
\n\
Attachments:\n  1. r.pdf (application/pdf, 2.0 KiB)\n  2. tiny.txt (text/plain, 2 B)\n"
        );
    }

    #[test]
    fn filenames_cannot_escape() {
        assert_eq!(sanitize_filename("report.pdf", 1), "report.pdf");
        assert_eq!(sanitize_filename("../../etc/passwd", 1), "passwd");
        assert_eq!(sanitize_filename("..\\..\\boot.ini", 1), "boot.ini");
        assert_eq!(sanitize_filename("/abs/path/x.txt/", 1), "x.txt");
        assert_eq!(sanitize_filename("..", 2), "attachment-2");
        assert_eq!(sanitize_filename("", 3), "attachment-3");
        assert_eq!(sanitize_filename(".bashrc", 1), "bashrc");
        assert_eq!(sanitize_filename("a\0b\nc:d?.txt", 1), "a_b_c_d_.txt");
        assert_eq!(
            sanitize_filename("Übersicht März.pdf", 1),
            "Übersicht März.pdf"
        );
        let long = format!("{}.pdf", "é".repeat(300));
        let short = sanitize_filename(&long, 1);
        assert!(short.len() <= MAX_FILENAME_BYTES, "{}", short.len());
        assert!(short.ends_with("é.pdf"), "{short}");
    }

    #[test]
    fn saves_attachments_without_overwriting() {
        let dir = std::env::temp_dir().join(format!("tern-mua-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let attachment = |name: &str, data: &[u8]| Attachment {
            filename: name.into(),
            content_type: "application/octet-stream".into(),
            data: data.to_vec(),
        };
        let msg = ReadMessage {
            uid: 1,
            headers: Vec::new(),
            text: String::new(),
            attachments: vec![
                attachment("../escape.txt", b"one"),
                attachment("escape.txt", b"two"),
                attachment("", b"three"),
            ],
            raw: Vec::new(),
        };
        let paths = save_attachments(&msg, &dir.join("out")).unwrap();
        let out = dir.join("out");
        assert_eq!(
            paths,
            vec![
                out.join("escape.txt"),
                out.join("escape-1.txt"),
                out.join("attachment-3"),
            ]
        );
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"one");
        assert_eq!(std::fs::read(&paths[1]).unwrap(), b"two");
        assert_eq!(std::fs::read(&paths[2]).unwrap(), b"three");
        assert!(!dir.join("escape.txt").exists());

        // A second save keeps the first files and picks new names.
        let again = save_attachments(&msg, &out).unwrap();
        assert_eq!(again[0], out.join("escape-2.txt"));
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"one");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
