//! Building a reply to a message read from the server, as RFC 5322 §3.6.4 describes: the
//! reply goes to Reply-To (or From when there is none), "Re: " is put in front of the subject
//! once, In-Reply-To names the original's Message-ID, and References carries the thread (the
//! original's References, or its In-Reply-To when it has no References, plus its Message-ID).
//! Replying to all adds the original To and Cc as Cc, without ourselves and without duplicates.
//!
//! Pure: it takes the raw message and returns a [`Compose`], so it is tested without a server.
//! Deliberately not done here: fetching, sending and flagging `\Answered` (the caller's job),
//! attribution in other languages, and HTML replies.

use anyhow::{Result, bail};
use mail_parser::{Address, HeaderValue, MessageParser};

use super::Compose;

/// What the person asked for in `tern reply`.
#[derive(Debug, Clone)]
pub struct ReplyOptions {
    /// Our own address: the From of the reply, and never one of its recipients.
    pub me: String,
    pub all: bool,
    pub text: String,
    /// Quote the original text below an attribution line.
    pub quote: bool,
}

fn mailboxes(address: Option<&Address<'_>>) -> Vec<(String, String)> {
    address
        .map(|a| {
            a.iter()
                .filter_map(|addr| {
                    let email = addr.address()?.to_string();
                    let shown = match addr.name() {
                        Some(name) if !name.trim().is_empty() => {
                            // Quote the display name so a comma in it cannot split the address.
                            let name = name.replace(['"', '\\'], "");
                            format!("\"{name}\" <{email}>")
                        }
                        _ => email.clone(),
                    };
                    Some((email.to_ascii_lowercase(), shown))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The bare address inside `Name <addr>` or `addr`, lowercased, for comparisons.
fn bare_address(entry: &str) -> String {
    let entry = entry.trim();
    let inner = match (entry.rfind('<'), entry.rfind('>')) {
        (Some(open), Some(close)) if open < close => &entry[open + 1..close],
        _ => entry,
    };
    inner.trim().to_ascii_lowercase()
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Builds the reply to `raw` (the original message as the server sent it).
pub fn build_reply(raw: &[u8], opts: &ReplyOptions) -> Result<Compose> {
    let Some(original) = MessageParser::default().parse(raw) else {
        bail!("the original message cannot be parsed, so there is nothing to reply to");
    };
    let me = bare_address(&opts.me);
    let mut to = mailboxes(original.reply_to());
    if to.is_empty() {
        to = mailboxes(original.from());
    }
    // Answering our own message (from the Sent folder) goes to its recipients instead.
    if !to.is_empty() && to.iter().all(|(addr, _)| *addr == me) {
        to = mailboxes(original.to());
    }
    if to.is_empty() {
        bail!("the original message has no From or Reply-To address to reply to");
    }
    let mut cc = Vec::new();
    if opts.all {
        for (addr, shown) in mailboxes(original.to())
            .into_iter()
            .chain(mailboxes(original.cc()))
        {
            let taken = addr == me
                || to.iter().any(|(a, _)| *a == addr)
                || cc.iter().any(|(a, _): &(String, String)| *a == addr);
            if !taken {
                cc.push((addr, shown));
            }
        }
    }
    to.dedup_by(|a, b| a.0 == b.0);

    let subject = original.subject().unwrap_or_default().trim().to_string();
    let subject = if subject
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"))
    {
        subject
    } else {
        format!("Re: {subject}")
    };

    let message_id = original.message_id().map(str::to_string);
    let mut references = ids(original.references());
    if references.is_empty() {
        references = ids(original.in_reply_to());
    }
    references.extend(message_id.clone());

    let mut text = opts.text.clone();
    if opts.quote {
        let who = mailboxes(original.from())
            .into_iter()
            .next()
            .map(|(_, shown)| shown)
            .unwrap_or_else(|| "someone".to_string());
        let when = original
            .header_raw("Date")
            .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "));
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        match when {
            Some(when) => text.push_str(&format!("On {when}, {who} wrote:\n")),
            None => text.push_str(&format!("{who} wrote:\n")),
        }
        let body = original.body_text(0).unwrap_or_default();
        for line in body.lines() {
            if line.is_empty() {
                text.push_str(">\n");
            } else {
                text.push_str(&format!("> {line}\n"));
            }
        }
    }

    Ok(Compose {
        from: opts.me.clone(),
        to: to.into_iter().map(|(_, shown)| shown).collect(),
        cc: cc.into_iter().map(|(_, shown)| shown).collect(),
        bcc: Vec::new(),
        subject,
        text,
        html: None,
        attachments: Vec::new(),
        in_reply_to: message_id,
        references,
    })
}

#[cfg(test)]
mod tests {
    use super::super::build_message;
    use super::*;

    const ORIGINAL: &[u8] = b"From: Bob <bob@example.test>\r\n\
To: alice@example.test, Carol <carol@example.test>\r\n\
Cc: Dave <DAVE@example.test>, Alice <Alice@Example.test>\r\n\
Subject: Lunch\r\n\
Date: Tue, 07 May 2024 09:05:00 +0200\r\n\
Message-ID: <m2@example.test>\r\n\
References: <m0@example.test> <m1@example.test>\r\n\
\r\n\
Noon?\r\n\
\r\n\
Bob\r\n";

    fn opts(all: bool, quote: bool) -> ReplyOptions {
        ReplyOptions {
            me: "alice@example.test".into(),
            all,
            text: "Yes.".into(),
            quote,
        }
    }

    #[test]
    fn reply_goes_to_the_sender_and_threads() {
        let reply = build_reply(ORIGINAL, &opts(false, false)).unwrap();
        assert_eq!(reply.to, vec!["\"Bob\" <bob@example.test>"]);
        assert!(reply.cc.is_empty());
        assert_eq!(reply.subject, "Re: Lunch");
        assert_eq!(reply.in_reply_to.as_deref(), Some("m2@example.test"));
        assert_eq!(
            reply.references,
            vec!["m0@example.test", "m1@example.test", "m2@example.test"]
        );
        assert_eq!(reply.text, "Yes.");
        let raw = String::from_utf8(build_message(&reply).unwrap()).unwrap();
        assert!(raw.contains("In-Reply-To: <m2@example.test>"), "{raw}");
        assert!(
            raw.contains("<m0@example.test>") && raw.contains("References:"),
            "{raw}"
        );
    }

    #[test]
    fn reply_all_copies_everyone_but_me() {
        let reply = build_reply(ORIGINAL, &opts(true, false)).unwrap();
        assert_eq!(reply.to, vec!["\"Bob\" <bob@example.test>"]);
        assert_eq!(
            reply.cc,
            vec![
                "\"Carol\" <carol@example.test>",
                "\"Dave\" <DAVE@example.test>"
            ]
        );
    }

    #[test]
    fn reply_to_header_wins_and_re_is_not_doubled() {
        let raw = b"From: bob@example.test\r\nReply-To: list@example.test\r\n\
Subject: RE: Lunch\r\nIn-Reply-To: <m1@example.test>\r\nMessage-ID: <m2@example.test>\r\n\r\nx\r\n";
        let reply = build_reply(raw, &opts(false, false)).unwrap();
        assert_eq!(reply.to, vec!["list@example.test"]);
        assert_eq!(reply.subject, "RE: Lunch");
        assert_eq!(reply.references, vec!["m1@example.test", "m2@example.test"]);
    }

    #[test]
    fn quoting_adds_an_attribution_and_prefixes() {
        let reply = build_reply(ORIGINAL, &opts(false, true)).unwrap();
        assert_eq!(
            reply.text,
            "Yes.\n\nOn Tue, 07 May 2024 09:05:00 +0200, \"Bob\" <bob@example.test> wrote:\n\
             > Noon?\n>\n> Bob\n"
        );
    }

    #[test]
    fn a_message_without_sender_cannot_be_answered() {
        let err = build_reply(b"Subject: x\r\n\r\nbody\r\n", &opts(false, false)).unwrap_err();
        assert!(err.to_string().contains("no From"), "{err}");
    }
}
