//! Transcripts for ENABLE, CONDSTORE and QRESYNC (RFC 7162), ESEARCH (RFC 4731) and the full
//! set of SEARCH keys (RFC 9051 §6.4.4), against the in-memory backend of `tests.rs`, whose
//! mailboxes keep mod-sequences and expunged UIDs the way the store does.

use super::*;

fn out(session: &mut Session<MemBackend>, input: &str) -> String {
    String::from_utf8_lossy(&feed(session, input).bytes).into_owned()
}

/// The part of a SELECT answer after its HIGHESTMODSEQ line (what QRESYNC adds, and the OK).
fn after_highest(text: &str) -> &str {
    let at = text.find("] Highest\r\n").expect("HIGHESTMODSEQ line") + "] Highest\r\n".len();
    &text[at..]
}

#[test]
fn enable_lists_only_what_it_newly_enabled() {
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[(
            "z ENABLE CONDSTORE\r\n",
            "z BAD ENABLE requires authentication\r\n",
        )],
    );
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a ENABLE CONDSTORE\r\n",
                "* ENABLED CONDSTORE\r\na OK ENABLE completed\r\n",
            ),
            (
                "b ENABLE condstore X-UNKNOWN\r\n",
                "* ENABLED\r\nb OK ENABLE completed\r\n",
            ),
            (
                "c ENABLE QRESYNC CONDSTORE\r\n",
                "* ENABLED QRESYNC\r\nc OK ENABLE completed\r\n",
            ),
            (
                "d ENABLE IMAP4rev2 QRESYNC\r\n",
                "* ENABLED IMAP4rev2\r\nd OK ENABLE completed\r\n",
            ),
        ],
    );
    // QRESYNC implies CONDSTORE, which is then not newly enabled.
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a ENABLE QRESYNC\r\n",
                "* ENABLED QRESYNC\r\na OK ENABLE completed\r\n",
            ),
            (
                "b ENABLE CONDSTORE\r\n",
                "* ENABLED\r\nb OK ENABLE completed\r\n",
            ),
        ],
    );
}

#[test]
fn condstore_fetch_store_search_and_status() {
    let (mut s, b) = logged_in();
    let select = out(&mut s, "s SELECT INBOX (CONDSTORE)\r\n");
    assert!(
        select.ends_with(
            "* OK [UIDNEXT 6] Predicted next UID\r\n* OK [HIGHESTMODSEQ 1] Highest\r\n\
             s OK [READ-WRITE] SELECT completed\r\n"
        ),
        "{select}"
    );
    transcript(
        &mut s,
        &[
            (
                "a FETCH 1:* (FLAGS MODSEQ)\r\n",
                "* 1 FETCH (FLAGS () MODSEQ (1))\r\n* 2 FETCH (FLAGS (\\Seen) MODSEQ (1))\r\n\
                 * 3 FETCH (FLAGS (\\Flagged) MODSEQ (1))\r\na OK FETCH completed\r\n",
            ),
            // Under CONDSTORE the new MODSEQ comes with the flags.
            (
                "b STORE 1 +FLAGS (\\Answered)\r\n",
                "* 1 FETCH (FLAGS (\\Answered) MODSEQ (2))\r\nb OK STORE completed\r\n",
            ),
            // UID 1 changed after mod-sequence 1: left alone and named in MODIFIED; UID 2 is
            // changed, and even .SILENT reports its new MODSEQ.
            (
                "c UID STORE 1,2 (UNCHANGEDSINCE 1) +FLAGS.SILENT (\\Flagged)\r\n",
                "* 2 FETCH (UID 2 MODSEQ (3))\r\nc OK [MODIFIED 1] Conditional STORE failed\r\n",
            ),
            // UNCHANGEDSINCE 0 always fails; STORE names sequence numbers.
            (
                "d STORE 1:3 (UNCHANGEDSINCE 0) -FLAGS (\\Seen)\r\n",
                "d OK [MODIFIED 1:3] Conditional STORE failed\r\n",
            ),
            (
                "e FETCH 1:* (FLAGS) (CHANGEDSINCE 1)\r\n",
                "* 1 FETCH (FLAGS (\\Answered) MODSEQ (2))\r\n\
                 * 2 FETCH (FLAGS (\\Seen \\Flagged) MODSEQ (3))\r\ne OK FETCH completed\r\n",
            ),
            (
                "f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 2)\r\n",
                "* 2 FETCH (UID 2 FLAGS (\\Seen \\Flagged) MODSEQ (3))\r\nf OK FETCH completed\r\n",
            ),
            (
                "g SEARCH MODSEQ 2\r\n",
                "* SEARCH 1 2 (MODSEQ 3)\r\ng OK SEARCH completed\r\n",
            ),
            (
                "h SEARCH MODSEQ \"/flags/\\\\draft\" all 4\r\n",
                "* SEARCH\r\nh OK SEARCH completed\r\n",
            ),
            (
                "i STATUS INBOX (HIGHESTMODSEQ MESSAGES)\r\n",
                "* STATUS \"INBOX\" (HIGHESTMODSEQ 3 MESSAGES 3)\r\ni OK STATUS completed\r\n",
            ),
        ],
    );
    // Another client's change arrives with its MODSEQ.
    b.set_flags("INBOX", 5, &["$Junk"]);
    transcript(
        &mut s,
        &[
            (
                "j NOOP\r\n",
                "* 3 FETCH (UID 5 FLAGS ($Junk) MODSEQ (4))\r\nj OK Completed\r\n",
            ),
            // \Seen set by FETCH BODY[] is a change too: FLAGS and MODSEQ come along.
            (
                "k FETCH 1 (BODY[TEXT])\r\n",
                "* 1 FETCH (BODY[TEXT] {8}\r\nHi Bob\r\n FLAGS (\\Answered \\Seen) MODSEQ (5))\r\n\
                 k OK FETCH completed\r\n",
            ),
        ],
    );
}

#[test]
fn fetch_modseq_alone_enables_condstore() {
    let (mut s, _) = selected();
    transcript(
        &mut s,
        &[
            (
                "a STORE 1 +FLAGS.SILENT (\\Seen)\r\n",
                "a OK STORE completed\r\n",
            ),
            (
                "b FETCH 1 MODSEQ\r\n",
                "* 1 FETCH (MODSEQ (2))\r\nb OK FETCH completed\r\n",
            ),
            (
                "c STORE 1 -FLAGS.SILENT (\\Seen)\r\n",
                "* 1 FETCH (MODSEQ (3))\r\nc OK STORE completed\r\n",
            ),
        ],
    );
}

#[test]
fn qresync_reports_vanished_and_changes_since_a_modseq() {
    let (mut s, b) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a SELECT INBOX (QRESYNC (42 1))\r\n",
                "a BAD QRESYNC must be enabled first\r\n",
            ),
            (
                "b ENABLE QRESYNC\r\n",
                "* ENABLED QRESYNC\r\nb OK ENABLE completed\r\n",
            ),
        ],
    );
    assert!(out(&mut s, "c SELECT INBOX\r\n").ends_with("c OK [READ-WRITE] SELECT completed\r\n"));
    // Meanwhile another client changes UID 2 (mod-sequence 2), expunges UID 1 (3) and a
    // message arrives (UID 6, mod-sequence 4).
    b.set_flags("INBOX", 2, &["\\Seen", "\\Answered"]);
    b.expunge_uids("INBOX", &[1]);
    b.add("INBOX", 6, b"Subject: six\r\n\r\nsix\r\n");
    transcript(
        &mut s,
        &[(
            "d NOOP\r\n",
            "* VANISHED 1\r\n* 1 FETCH (UID 2 FLAGS (\\Seen \\Answered) MODSEQ (2))\r\n\
             * 3 EXISTS\r\nd OK Completed\r\n",
        )],
    );
    // A client that last saw mod-sequence 1 learns exactly what changed.
    let resync = out(&mut s, "e SELECT INBOX (QRESYNC (42 1))\r\n");
    assert!(resync.starts_with("* OK [CLOSED]"), "{resync}");
    assert!(
        resync.contains("* OK [HIGHESTMODSEQ 4] Highest\r\n"),
        "{resync}"
    );
    assert_eq!(
        after_highest(&resync),
        "* VANISHED (EARLIER) 1\r\n\
         * 1 FETCH (UID 2 FLAGS (\\Seen \\Answered) MODSEQ (2))\r\n\
         * 3 FETCH (UID 6 FLAGS () MODSEQ (4))\r\n\
         e OK [READ-WRITE] SELECT completed\r\n"
    );
    // The expunge happened at 3: nothing vanished after it.
    let resync = out(&mut s, "f SELECT INBOX (QRESYNC (42 3 2:5))\r\n");
    assert_eq!(
        after_highest(&resync),
        "* 3 FETCH (UID 6 FLAGS () MODSEQ (4))\r\nf OK [READ-WRITE] SELECT completed\r\n"
    );
    // Known UIDs limit VANISHED to what the client knew of.
    let resync = out(&mut s, "g EXAMINE INBOX (QRESYNC (42 1 2:5 (1:2 2:5)))\r\n");
    assert_eq!(
        after_highest(&resync),
        "* 1 FETCH (UID 2 FLAGS (\\Seen \\Answered) MODSEQ (2))\r\n\
         * 3 FETCH (UID 6 FLAGS () MODSEQ (4))\r\ng OK [READ-ONLY] EXAMINE completed\r\n"
    );
    // Another UIDVALIDITY: the client's cache is void, nothing incremental is sent.
    let resync = out(&mut s, "h SELECT INBOX (QRESYNC (99 1))\r\n");
    assert_eq!(
        after_highest(&resync),
        "h OK [READ-WRITE] SELECT completed\r\n"
    );
    transcript(
        &mut s,
        &[
            (
                "i UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
                "* VANISHED (EARLIER) 1\r\n\
                 * 1 FETCH (UID 2 FLAGS (\\Seen \\Answered) MODSEQ (2))\r\n\
                 * 3 FETCH (UID 6 FLAGS () MODSEQ (4))\r\ni OK FETCH completed\r\n",
            ),
            (
                "j UID FETCH 3:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
                "* 3 FETCH (UID 6 FLAGS () MODSEQ (4))\r\nj OK FETCH completed\r\n",
            ),
            (
                "k FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
                "k BAD VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC\r\n",
            ),
            (
                "l UID FETCH 1:* (FLAGS) (VANISHED)\r\n",
                "l BAD VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC\r\n",
            ),
            (
                "m UID STORE 6 +FLAGS.SILENT (\\Deleted)\r\n",
                "* 3 FETCH (UID 6 MODSEQ (5))\r\nm OK STORE completed\r\n",
            ),
            // Our own EXPUNGE is reported as VANISHED too.
            (
                "n EXPUNGE\r\n",
                "* VANISHED 6\r\nn OK EXPUNGE completed\r\n",
            ),
            // Under QRESYNC every FETCH carries the UID, even for STORE.
            (
                "o STORE 1 FLAGS (\\Draft)\r\n",
                "* 1 FETCH (UID 2 FLAGS (\\Draft) MODSEQ (7))\r\no OK STORE completed\r\n",
            ),
            // ... and a \\Seen set by FETCH BODY[] comes with FLAGS, MODSEQ and UID.
            (
                "p FETCH 1 (BODY[TEXT])\r\n",
                "* 1 FETCH (BODY[TEXT] {20}\r\nLine one\r\nLine two\r\n FLAGS (\\Draft \\Seen) MODSEQ (8) UID 2)\r\n\
                 p OK FETCH completed\r\n",
            ),
        ],
    );
}

#[test]
fn esearch_result_options_and_imap4rev2() {
    let (mut s, _) = selected();
    transcript(
        &mut s,
        &[
            (
                "a SEARCH RETURN (MIN MAX COUNT) UNSEEN\r\n",
                "* ESEARCH (TAG \"a\") MIN 1 MAX 3 COUNT 2\r\na OK SEARCH completed\r\n",
            ),
            (
                "b UID SEARCH RETURN () ALL\r\n",
                "* ESEARCH (TAG \"b\") UID ALL 1:2,5\r\nb OK SEARCH completed\r\n",
            ),
            (
                "c SEARCH RETURN (ALL) 1:2\r\n",
                "* ESEARCH (TAG \"c\") ALL 1:2\r\nc OK SEARCH completed\r\n",
            ),
            (
                "d SEARCH RETURN (MIN MAX ALL COUNT) DELETED\r\n",
                "* ESEARCH (TAG \"d\") COUNT 0\r\nd OK SEARCH completed\r\n",
            ),
            (
                // SEARCHRES (RFC 5182 §2.1): SAVE alone asks for no ESEARCH response.
                "e SEARCH RETURN (SAVE) ALL\r\n",
                "e OK SEARCH completed\r\n",
            ),
            (
                "f UID SEARCH RETURN (COUNT) MODSEQ 1\r\n",
                "* ESEARCH (TAG \"f\") UID COUNT 3 MODSEQ 1\r\nf OK SEARCH completed\r\n",
            ),
            (
                "g SEARCH RETURN (MAX) CHARSET UTF-8 SUBJECT second\r\n",
                "* ESEARCH (TAG \"g\") MAX 2\r\ng OK SEARCH completed\r\n",
            ),
            (
                "h ENABLE IMAP4rev2\r\n",
                "* ENABLED IMAP4rev2\r\nh OK ENABLE completed\r\n",
            ),
            // IMAP4rev2 answers SEARCH with ESEARCH only (RFC 9051 §6.4.4).
            (
                "i SEARCH SEEN\r\n",
                "* ESEARCH (TAG \"i\") ALL 2\r\ni OK SEARCH completed\r\n",
            ),
            (
                "j UID SEARCH DELETED\r\n",
                "* ESEARCH (TAG \"j\") UID\r\nj OK SEARCH completed\r\n",
            ),
        ],
    );
    // IMAP4rev2's SELECT: a LIST response, no RECENT and no UNSEEN.
    let select = out(&mut s, "k SELECT INBOX\r\n");
    assert!(
        select.starts_with(
            "* OK [CLOSED] Previous mailbox closed\r\n\
             * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
             * 3 EXISTS\r\n* LIST () \"/\" \"INBOX\"\r\n* OK [PERMANENTFLAGS"
        ),
        "{select}"
    );
    assert!(!select.contains("RECENT") && !select.contains("UNSEEN"));
}

/// A message with its own internal date and flags, as APPEND would store it.
fn add_dated(b: &MemBackend, uid: u32, body: &[u8], internal_date_ms: i64, flags: &[&str]) {
    b.with_box("INBOX", |bx| {
        let mut m = meta(uid, flags, body);
        m.internal_date_ms = internal_date_ms;
        m.modseq = bx.bump();
        bx.messages.push(MemMessage {
            meta: m,
            body: body.to_vec(),
        });
    });
}

const MSG6: &[u8] = b"Date: Sun, 31 Dec 2023 23:30:00 -0500\r\n\
From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.com>\r\nTo: x@example.com\r\n\
Subject: =?UTF-8?B?w5xiZXJncsO2w59l?=\r\nX-Tag: blue\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\
\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n";

#[test]
fn search_every_key() {
    let (mut s, b) = selected();
    // 2024-03-15 12:00:00 UTC; its Date header says 31 Dec 2023 in its own zone (-0500), which
    // is 1 Jan 2024 in UTC: SENT* keys go by the date as written.
    add_dated(&b, 6, MSG6, 1_710_504_000_000, &["$Work"]);
    let steps: &[(&str, &str)] = &[
        ("n NOOP\r\n", "* 4 EXISTS\r\nn OK Completed\r\n"),
        ("a SEARCH SENTON 31-Dec-2023\r\n", "* SEARCH 4\r\n"),
        ("b SEARCH SENTBEFORE 1-Jan-2024\r\n", "* SEARCH 4\r\n"),
        // Without a Date header (2 and 3), the internal date stands in.
        ("c SEARCH SENTSINCE 1-Jan-2024\r\n", "* SEARCH 1 2 3\r\n"),
        ("d SEARCH BEFORE 2-Jan-2024\r\n", "* SEARCH 1 2 3\r\n"),
        ("e SEARCH ON 15-Mar-2024\r\n", "* SEARCH 4\r\n"),
        (
            "f SEARCH SINCE 2-Jan-2024 BEFORE 16-Mar-2024\r\n",
            "* SEARCH 4\r\n",
        ),
        // Encoded words and transfer encodings are decoded; matching ignores case.
        (
            "g SEARCH CHARSET UTF-8 FROM {7+}\r\nJürgen\r\n",
            "* SEARCH 4\r\n",
        ),
        (
            "h SEARCH CHARSET UTF-8 SUBJECT {12+}\r\nÜBERGRÖßE\r\n",
            "* SEARCH 4\r\n",
        ),
        (
            "i SEARCH CHARSET UTF-8 BODY {5+}\r\nKÖLN\r\n",
            "* SEARCH 4\r\n",
        ),
        ("j SEARCH BODY \"C3=B6\"\r\n", "* SEARCH\r\n"),
        ("k SEARCH TEXT x-tag\r\n", "* SEARCH 4\r\n"),
        ("l SEARCH HEADER X-Tag \"\"\r\n", "* SEARCH 4\r\n"),
        ("m SEARCH HEADER x-tag BLUE\r\n", "* SEARCH 4\r\n"),
        ("o SEARCH HEADER X-Long \"a b\"\r\n", "* SEARCH 2\r\n"),
        ("p SEARCH LARGER 100 SMALLER 200\r\n", "* SEARCH 1\r\n"),
        ("q SEARCH LARGER 200\r\n", "* SEARCH 4\r\n"),
        ("r SEARCH KEYWORD $work\r\n", "* SEARCH 4\r\n"),
        ("s SEARCH UNKEYWORD $Work\r\n", "* SEARCH 1 2 3\r\n"),
        (
            "t SEARCH OR (SEEN UNFLAGGED) NOT OR 1 KEYWORD $Work\r\n",
            "* SEARCH 2 3\r\n",
        ),
        ("u SEARCH NEW\r\n", "* SEARCH\r\n"),
        ("v SEARCH RECENT\r\n", "* SEARCH\r\n"),
        ("w SEARCH OLD\r\n", "* SEARCH 1 2 3 4\r\n"),
        ("x UID SEARCH UID 2:* 1:3\r\n", "* SEARCH 2 5\r\n"),
        (
            "y SEARCH CHARSET US-ASCII SUBJECT hello\r\n",
            "* SEARCH 1\r\n",
        ),
        ("z SEARCH CC nobody TO bob\r\n", "* SEARCH\r\n"),
        ("A SEARCH TO BOB\r\n", "* SEARCH 1\r\n"),
        ("B SEARCH BCC x\r\n", "* SEARCH\r\n"),
        ("C SEARCH ANSWERED\r\n", "* SEARCH\r\n"),
        (
            "D SEARCH UNANSWERED UNDRAFT UNDELETED\r\n",
            "* SEARCH 1 2 3 4\r\n",
        ),
        ("E SEARCH DRAFT\r\n", "* SEARCH\r\n"),
        ("F SEARCH ALL\r\n", "* SEARCH 1 2 3 4\r\n"),
    ];
    for (client, server) in steps {
        let tag = client.split(' ').next().unwrap();
        let expected = if tag == "n" {
            server.to_string()
        } else {
            format!("{server}{tag} OK SEARCH completed\r\n")
        };
        assert_eq!(out(&mut s, client), expected, "after {client:?}");
    }
    transcript(
        &mut s,
        &[(
            "G SEARCH CHARSET ISO-8859-1 ALL\r\n",
            "G NO [BADCHARSET (UTF-8 US-ASCII)] Only UTF-8 and US-ASCII are supported\r\n",
        )],
    );
}

#[test]
fn search_survives_messages_that_are_not_mail() {
    let (mut s, b) = selected();
    add_dated(&b, 6, b"\0\xff no header at all", 0, &[]);
    add_dated(
        &b,
        7,
        b"Date: not a date\r\nSubject: =?x?Q?broken?=\r\n\r\n=?",
        0,
        &[],
    );
    transcript(
        &mut s,
        &[
            ("a NOOP\r\n", "* 5 EXISTS\r\na OK Completed\r\n"),
            // Both fall back to their internal date, 1 Jan 1970.
            (
                "b SEARCH SENTBEFORE 2-Jan-1970\r\n",
                "* SEARCH 4 5\r\nb OK SEARCH completed\r\n",
            ),
            // 4's text says "no header at all"; 5's subject is left as written.
            (
                "c SEARCH OR HEADER Subject broken TEXT header\r\n",
                "* SEARCH 4 5\r\nc OK SEARCH completed\r\n",
            ),
            (
                "d SEARCH HEADER Subject \"\"\r\n",
                "* SEARCH 1 2 3 5\r\nd OK SEARCH completed\r\n",
            ),
        ],
    );
}
