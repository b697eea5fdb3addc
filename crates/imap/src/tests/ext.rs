//! Transcripts for LIST-EXTENDED / LIST-STATUS / SPECIAL-USE, QUOTA, APPENDLIMIT,
//! UTF8=ACCEPT and COMPRESS=DEFLATE.

use super::*;

#[test]
fn list_selection_and_return_options() {
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a LIST (SUBSCRIBED) \"\" \"*\"\r\n",
                "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"\r\n\
                 * LIST (\\HasNoChildren \\Subscribed \\Archive) \"/\" \"Archive/2024\"\r\n\
                 * LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" \"Sent\"\r\n\
                 a OK LIST completed\r\n",
            ),
            (
                "b LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"\r\n",
                "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"\r\n\
                 * LIST (\\Noselect \\HasChildren) \"/\" \"Archive\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n\
                 * LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" \"Sent\"\r\n\
                 b OK LIST completed\r\n",
            ),
            (
                "c LIST \"\" (\"INBOX\" Sent \"Archive\") RETURN (STATUS (MESSAGES UNSEEN))\r\n",
                "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
                 * STATUS \"INBOX\" (MESSAGES 3 UNSEEN 2)\r\n\
                 * LIST (\\Noselect \\HasChildren) \"/\" \"Archive\"\r\n\
                 * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n\
                 * STATUS \"Sent\" (MESSAGES 0 UNSEEN 0)\r\n\
                 c OK LIST completed\r\n",
            ),
            (
                "d list (special-use) \"\" * return (special-use)\r\n",
                "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive/2024\"\r\n\
                 * LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"\r\n\
                 * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n\
                 d OK LIST completed\r\n",
            ),
            (
                "e LIST \"\" % RETURN (SUBSCRIBED CHILDREN)\r\n",
                "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"\r\n\
                 * LIST (\\Noselect \\HasChildren) \"/\" \"Archive\"\r\n\
                 * LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"\r\n\
                 * LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" \"Sent\"\r\n\
                 e OK LIST completed\r\n",
            ),
            ("f SUBSCRIBE Gone\r\n", "f OK SUBSCRIBE completed\r\n"),
            (
                "g LIST (SUBSCRIBED) \"\" {2+}\r\nG*\r\n",
                "* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\"\r\ng OK LIST completed\r\n",
            ),
            (
                "h LIST (RECURSIVEMATCH) \"\" *\r\n",
                "h BAD RECURSIVEMATCH needs another selection option\r\n",
            ),
            (
                "i LIST (FOO) \"\" *\r\n",
                "i BAD Unknown LIST selection option\r\n",
            ),
            (
                "j LIST \"\" * RETURN (STATUS (BOGUS))\r\n",
                "j BAD Unknown STATUS item\r\n",
            ),
            ("k LIST () \"\" \"\"\r\n", "k OK LIST completed\r\n"),
            (
                "l LIST \"\" \"\"\r\n",
                "* LIST (\\Noselect) \"/\" \"\"\r\nl OK LIST completed\r\n",
            ),
        ],
    );

    let (mut s, _) = session();
    transcript(
        &mut s,
        &[(
            "a LIST (SUBSCRIBED) \"\" *\r\n",
            "a BAD LIST requires authentication\r\n",
        )],
    );
}

#[test]
fn quota_commands_and_overquota() {
    let (mut s, backend) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a GETQUOTAROOT INBOX\r\n",
                "* QUOTAROOT \"INBOX\"\r\na OK GETQUOTAROOT completed\r\n",
            ),
            (
                "b GETQUOTA \"\"\r\n",
                "b NO [NONEXISTENT] No such quota root\r\n",
            ),
        ],
    );
    *backend.limits.lock().unwrap() = (Some(10 * 1024), Some(3));
    let used_kib = (MSG1.len() + MSG2.len() + MSG3.len()).div_ceil(1024);
    let quota = format!("* QUOTA \"\" (STORAGE {used_kib} 10 MESSAGE 3 3)\r\n");
    transcript(
        &mut s,
        &[
            (
                "c GETQUOTAROOT inbox\r\n",
                &format!("* QUOTAROOT \"INBOX\" \"\"\r\n{quota}c OK GETQUOTAROOT completed\r\n"),
            ),
            (
                "d GETQUOTA \"\"\r\n",
                &format!("{quota}d OK GETQUOTA completed\r\n"),
            ),
            (
                "e GETQUOTA \"other\"\r\n",
                "e NO [NONEXISTENT] No such quota root\r\n",
            ),
            (
                "f SETQUOTA \"\" (STORAGE 100)\r\n",
                "f NO [NOPERM] Quotas are set by the administrator\r\n",
            ),
            (
                "g APPEND INBOX {5+}\r\nhello\r\n",
                "g NO [OVERQUOTA] Quota exceeded\r\n",
            ),
            (
                "h GETQUOTAROOT Nope\r\n",
                "h NO [NONEXISTENT] No such mailbox\r\n",
            ),
        ],
    );
    // DELETED-STORAGE (RFC 9208 §4.3) counts what EXPUNGE would free, in KiB.
    transcript(
        &mut s,
        &[(
            "j STATUS INBOX (DELETED DELETED-STORAGE)\r\n",
            "* STATUS \"INBOX\" (DELETED 0 DELETED-STORAGE 0)\r\nj OK STATUS completed\r\n",
        )],
    );
    feed(&mut s, "k SELECT INBOX\r\n");
    feed(&mut s, "l STORE 1 +FLAGS.SILENT (\\Deleted)\r\n");
    transcript(
        &mut s,
        &[(
            "m STATUS INBOX (DELETED-STORAGE DELETED)\r\n",
            "* STATUS \"INBOX\" (DELETED-STORAGE 1 DELETED 1)\r\nm OK STATUS completed\r\n",
        )],
    );

    let (mut s, _) = session();
    transcript(
        &mut s,
        &[(
            "a GETQUOTAROOT INBOX\r\n",
            "a BAD GETQUOTAROOT requires authentication\r\n",
        )],
    );
}

#[test]
fn appendlimit_refuses_before_the_literal() {
    let (mut s, _) = logged_in();
    let big = "x".repeat(2000);
    transcript(
        &mut s,
        &[
            // Synchronizing: refused instead of "+", so the client never sends the data.
            (
                "a APPEND INBOX {2000}\r\n",
                "a NO [TOOBIG] Literal exceeds the size limit\r\n",
            ),
            // LITERAL+: the data is on its way; it is skipped, then refused.
            ("b APPEND INBOX {2000+}\r\n", ""),
            (&big[..1000], ""),
            (
                &format!("{}\r\nc NOOP\r\n", &big[1000..]),
                "b NO [TOOBIG] Literal exceeds the size limit\r\nc OK Completed\r\n",
            ),
        ],
    );
}

#[test]
fn utf8_accept_names_and_append() {
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a APPEND INBOX UTF8 (~{5+}\r\nhello)\r\n",
                "a BAD Unknown command or invalid arguments\r\n",
            ),
            (
                "b ENABLE UTF8=ACCEPT\r\n",
                "* ENABLED UTF8=ACCEPT\r\nb OK ENABLE completed\r\n",
            ),
            (
                "c LIST \"\" Entw*\r\n",
                "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw\u{fc}rfe\"\r\nc OK LIST completed\r\n",
            ),
            (
                // After UTF8=ACCEPT a name is UTF-8 as written, even when it would be valid
                // modified UTF-7.
                "d CREATE \"\u{dc}n\u{ef}/&-\"\r\n",
                "d OK CREATE completed\r\n",
            ),
            (
                "e LIST \"\" \"\u{dc}n\u{ef}*\"\r\n",
                "* LIST (\\HasChildren) \"/\" \"\u{dc}n\u{ef}\"\r\n\
                 * LIST (\\HasNoChildren) \"/\" \"\u{dc}n\u{ef}/&-\"\r\n\
                 e OK LIST completed\r\n",
            ),
            (
                "f STATUS \"\u{dc}n\u{ef}\" (MESSAGES)\r\n",
                "* STATUS \"\u{dc}n\u{ef}\" (MESSAGES 0)\r\nf OK STATUS completed\r\n",
            ),
        ],
    );
    let out = feed(
        &mut s,
        "g APPEND \"\u{dc}n\u{ef}\" UTF8 (~{7+}\r\nhi\0 \u{e9}!)\r\n",
    );
    let text = String::from_utf8_lossy(&out.bytes);
    assert!(text.starts_with("g OK [APPENDUID "), "{text}");
    transcript(
        &mut s,
        &[(
            "h STATUS \"\u{dc}n\u{ef}\" (MESSAGES)\r\n",
            "* STATUS \"\u{dc}n\u{ef}\" (MESSAGES 1)\r\nh OK STATUS completed\r\n",
        )],
    );
}

#[test]
fn compress_switches_once_and_hands_back_pipelined_input() {
    let (mut s, _) = session();
    transcript(
        &mut s,
        &[(
            "a COMPRESS DEFLATE\r\n",
            "a BAD COMPRESS requires authentication\r\n",
        )],
    );
    let (mut s, _) = logged_in();
    let out = feed(&mut s, "b COMPRESS DEFLATE\r\n\x01\x02compressed");
    assert_eq!(out.bytes, b"b OK DEFLATE active\r\n");
    assert_eq!(out.action, Action::Compress);
    assert_eq!(s.compression_started(), b"\x01\x02compressed");
    transcript(
        &mut s,
        &[
            (
                "c COMPRESS DEFLATE\r\n",
                "c NO [COMPRESSIONACTIVE] DEFLATE is already active\r\n",
            ),
            (
                "d COMPRESS GZIP\r\n",
                "d BAD Unknown command or invalid arguments\r\n",
            ),
        ],
    );
    let caps = feed(&mut s, "e CAPABILITY\r\n");
    assert!(!String::from_utf8_lossy(&caps.bytes).contains("COMPRESS"));
}

#[test]
fn sort_and_thread() {
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[(
            "a SORT (SUBJECT) UTF-8 ALL\r\n",
            "a BAD SORT requires a selected mailbox\r\n",
        )],
    );
    let (mut s, backend) = selected();
    transcript(
        &mut s,
        &[
            (
                "a SORT (SUBJECT) UTF-8 ALL\r\n",
                "* SORT 1 2 3\r\na OK SORT completed\r\n",
            ),
            (
                "b SORT (REVERSE FROM) UTF-8 ALL\r\n",
                "* SORT 3 2 1\r\nb OK SORT completed\r\n",
            ),
            (
                "c UID SORT (SIZE) US-ASCII ALL\r\n",
                "* SORT 5 2 1\r\nc OK SORT completed\r\n",
            ),
            (
                "d SORT (DATE) UTF-8 SUBJECT second\r\n",
                "* SORT 2\r\nd OK SORT completed\r\n",
            ),
            (
                "e SORT (ARRIVAL) ISO-8859-1 ALL\r\n",
                "e NO [BADCHARSET (UTF-8 US-ASCII)] Only UTF-8 and US-ASCII are supported\r\n",
            ),
            (
                "f THREAD ORDEREDSUBJECT UTF-8 ALL\r\n",
                "* THREAD (1)(2)(3)\r\nf OK THREAD completed\r\n",
            ),
            (
                "g THREAD REFERENCES UTF-8 ALL\r\n",
                "* THREAD (1)(2)(3)\r\ng OK THREAD completed\r\n",
            ),
            (
                "h SORT (SUBJECT) UTF-8 SUBJECT nothing-like-this\r\n",
                "* SORT\r\nh OK SORT completed\r\n",
            ),
        ],
    );
    // Replies join their original's thread (base subject "hello"), whatever the case.
    backend.add(
        "INBOX",
        6,
        b"From: Eve <eve@example.com>\r\nSubject: [list] RE: hello (fwd)\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n\r\nyes\r\n",
    );
    backend.add(
        "INBOX",
        7,
        b"From: Zed <a@example.com>\r\nSubject: Re: Hello\r\nDate: Wed, 3 Jan 2024 10:00:00 +0000\r\nMessage-ID: <7@example.com>\r\nReferences: <1@example.com>\r\n\r\nno\r\n",
    );
    transcript(
        &mut s,
        &[
            ("i NOOP\r\n", "* 5 EXISTS\r\ni OK Completed\r\n"),
            (
                "j THREAD ORDEREDSUBJECT UTF-8 ALL\r\n",
                "* THREAD (1 (4)(5))(2)(3)\r\nj OK THREAD completed\r\n",
            ),
            (
                "k UID THREAD ORDEREDSUBJECT UTF-8 NOT SUBJECT Second\r\n",
                "* THREAD (1 (6)(7))(5)\r\nk OK THREAD completed\r\n",
            ),
            // 5 names 1 in References; 4 joins by subject as a reply.
            (
                "kk THREAD REFERENCES UTF-8 ALL\r\n",
                "* THREAD (1 (4)(5))(2)(3)\r\nkk OK THREAD completed\r\n",
            ),
            (
                "l SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n",
                "* SORT 5 4 1 2 3\r\nl OK SORT completed\r\n",
            ),
            (
                "m SORT (DISPLAYFROM) UTF-8 ALL\r\n",
                "* SORT 1 2 3 4 5\r\nm OK SORT completed\r\n",
            ),
            (
                "n SORT (FROM) UTF-8 ALL\r\n",
                "* SORT 5 1 2 3 4\r\nn OK SORT completed\r\n",
            ),
        ],
    );
}

/// CONDSTORE (RFC 7162) where it meets these extensions: one ENABLE for UTF8=ACCEPT and
/// CONDSTORE, HIGHESTMODSEQ as a LIST-STATUS item, and MODSEQ as a SORT/THREAD criterion.
#[test]
fn condstore_with_list_status_sort_and_thread() {
    let (mut s, _) = logged_in();
    transcript(
        &mut s,
        &[
            (
                "a ENABLE UTF8=ACCEPT CONDSTORE utf8=accept\r\n",
                "* ENABLED UTF8=ACCEPT CONDSTORE\r\na OK ENABLE completed\r\n",
            ),
            (
                "b ENABLE CONDSTORE UTF8=ACCEPT\r\n",
                "* ENABLED\r\nb OK ENABLE completed\r\n",
            ),
        ],
    );
    let (mut s, _) = selected();
    transcript(
        &mut s,
        &[
            (
                "a LIST \"\" (INBOX Sent) RETURN (STATUS (HIGHESTMODSEQ MESSAGES))\r\n",
                "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n* STATUS \"INBOX\" (HIGHESTMODSEQ 1 MESSAGES 3)\r\n* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n* STATUS \"Sent\" (HIGHESTMODSEQ 1 MESSAGES 0)\r\na OK LIST completed\r\n",
            ),
            // HIGHESTMODSEQ in LIST-STATUS enabled CONDSTORE, as STATUS would: MODSEQ follows.
            (
                "b STORE 1 +FLAGS (\\Answered)\r\n",
                "* 1 FETCH (FLAGS (\\Answered) MODSEQ (2))\r\nb OK STORE completed\r\n",
            ),
            (
                "c LIST \"\" INBOX RETURN (STATUS (HIGHESTMODSEQ))\r\n",
                "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n* STATUS \"INBOX\" (HIGHESTMODSEQ 2)\r\nc OK LIST completed\r\n",
            ),
            (
                "d SORT (SUBJECT) UTF-8 MODSEQ 2\r\n",
                "* SORT 1 (MODSEQ 2)\r\nd OK SORT completed\r\n",
            ),
            (
                "e UID SORT (SIZE) UTF-8 NOT MODSEQ 2\r\n",
                "* SORT 5 2 (MODSEQ 1)\r\ne OK SORT completed\r\n",
            ),
            (
                "f SORT (SIZE) UTF-8 SUBJECT nothing-like-this\r\n",
                "* SORT\r\nf OK SORT completed\r\n",
            ),
            (
                "g UID THREAD ORDEREDSUBJECT UTF-8 MODSEQ 2\r\n",
                "* THREAD (1)\r\ng OK THREAD completed\r\n",
            ),
        ],
    );
}
