//! Sieve (RFC 5228) at delivery: compiling scripts when they are uploaded, caching compiled
//! scripts per account, and turning a script's run over one message into a [`Decision`]
//! (which mailboxes with which flags, reject, redirects, a vacation reply).
//!
//! [`evaluate`] is a pure function of the script, the message, the envelope and the [`Facts`]
//! it is given, so the decision mapping is tested without a store. What a script asks about
//! the world (does this mailbox exist, did this sender get a vacation reply lately) comes
//! back as [`Question`]s; the caller answers them from the store and evaluates again. Scripts
//! are deterministic, so the second run takes the same path with the right answers.
//!
//! Deliberately not done here: storing anything, sending anything. Actions are carried out by
//! `delivery` only after every copy is stored, and only when the run finished without error:
//! RFC 5228 §2.10.6 says a failed script falls back to the implicit keep, so a runtime error
//! or an exhausted CPU budget delivers to INBOX and is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sieve::compiler::grammar::{Capability, Comparator};
use sieve::runtime::RuntimeError;
use sieve::{Compiler, Envelope as SieveEnvelope, Event, Input, Mailbox, Recipient, Runtime};
use tern_store::sieve::ActiveScript;
use tern_store::{NewMessage, Notify, RecipientDsn, Store};

/// Instructions one run may execute before it is stopped (and the message kept in INBOX).
const CPU_LIMIT: usize = 20_000;

/// Compiled scripts kept per process; past this the cache starts again from empty.
const MAX_CACHED_SCRIPTS: usize = 10_000;

/// RFC 5230 §4.1: the default period between two replies to one sender is 7 days.
pub const DEFAULT_VACATION_DAYS: u64 = 7;

/// The longest reject reason kept in the SMTP reply (the rest of a long text is cut).
const MAX_REASON_CHARS: usize = 400;

/// Extensions a script may not use because nothing here backs them: duplicate tracking,
/// notifications, includes, external lists, spam and virus tests and metadata. A script that
/// uses one fails at run time and falls back to the implicit keep.
const DISABLED: &[Capability] = &[
    Capability::Duplicate,
    Capability::Enotify,
    Capability::Include,
    Capability::ExtLists,
    Capability::SpamTest,
    Capability::SpamTestPlus,
    Capability::VirusTest,
    Capability::ImapSieve,
    Capability::MboxMetadata,
    Capability::ServerMetadata,
];

/// Redirects one script run may make (the `MAXREDIRECTS` ManageSieve capability).
pub const MAX_REDIRECTS: u32 = 4;

/// Compiles `source`, or explains why not with its line and column.
pub fn compile(source: &str) -> Result<Arc<sieve::Sieve>, String> {
    Compiler::new()
        .compile(source.as_bytes())
        .map(Arc::new)
        .map_err(|e| format!("line {}, column {}: {}", e.line_num(), e.line_pos(), e))
}

/// What an uploaded script must pass (Admin `PutSieveScript`, ManageSieve `PUTSCRIPT` and
/// `CHECKSCRIPT`): it compiles, and it requires no extension this server has switched off.
/// The compiler accepts every extension it knows; the interpreter refuses a disabled one when
/// it reaches the `require`, which comes before any other command (RFC 5228 §3.2), so one
/// step over an empty message finds it without running anything else of the script.
pub fn check(source: &str) -> Result<Arc<sieve::Sieve>, String> {
    let script = compile(source)?;
    let runtime = runtime("localhost");
    let mut ctx = runtime.filter(b"");
    match ctx.run(Input::script("check", script.clone())) {
        Some(Err(RuntimeError::CapabilityNotAllowed(c))) => {
            Err(format!("extension \"{c}\" is not available on this server"))
        }
        Some(Err(RuntimeError::CapabilityNotSupported(c))) => {
            Err(format!("extension \"{c}\" is not supported"))
        }
        _ => Ok(script),
    }
}

/// The Sieve extensions scripts may require here, space-separated, as ManageSieve's `SIEVE`
/// capability lists them: every one sieve-rs implements, less [`DISABLED`] (and RFC 5228's
/// joke comparator).
pub fn extensions() -> String {
    Capability::all()
        .iter()
        .filter(|c| {
            !DISABLED.contains(c) && !matches!(c, Capability::Comparator(Comparator::Elbonia))
        })
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The envelope of one delivery, as the script's `envelope` test sees it.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// MAIL FROM; empty for the null sender.
    pub from: &'a str,
    /// The recipient as addressed (`bob+tag@…`, so `:detail` works), before alias resolution.
    pub to: &'a str,
    /// The account the copy belongs to (the vacation "user address").
    pub account: &'a str,
}

/// One copy to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub mailbox: String,
    pub flags: Vec<String>,
    /// `fileinto :create` (RFC 5490 §3.2): make the mailbox first if it is missing.
    pub create: bool,
    /// The message as the script changed it (editheader), or `None` for the original.
    pub content: Option<Vec<u8>>,
}

/// A vacation reply (RFC 5230) the script wants sent, subject to the once-per-period check
/// made when it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacation {
    /// The original envelope sender, who gets the reply.
    pub to: String,
    /// What identifies "the same vacation message" for the once-per-period rule.
    pub handle: String,
    pub period_secs: u64,
    /// The whole reply (headers and body) as the interpreter built it.
    pub message: Vec<u8>,
}

/// What the script decided for one copy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Where copies go; empty means discarded (unless `reject` is set).
    pub targets: Vec<Target>,
    /// RFC 5429: refuse the message; the full SMTP reply (`550 5.7.1 …`).
    pub reject: Option<String>,
    /// RFC 5228 §4.2: addresses to send the message on to, with the content to send.
    pub redirects: Vec<(String, Option<Vec<u8>>)>,
    pub vacation: Option<Vacation>,
}

impl Decision {
    /// No script, or a script that failed: one copy in INBOX, nothing else.
    pub fn implicit_keep() -> Decision {
        Decision {
            targets: vec![Target {
                mailbox: "INBOX".into(),
                flags: Vec::new(),
                create: false,
                content: None,
            }],
            ..Decision::default()
        }
    }
}

/// Something the script asked that only the store can answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Question {
    /// Did a vacation reply with this id go out within `period_secs`?
    VacationSent { id: String, period_secs: u64 },
    /// Does this mailbox exist (`mailboxexists`, RFC 5490 §3.1)?
    MailboxExists(String),
}

/// Answers to [`Question`]s; anything not answered counts as "no" and is asked.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub answers: HashMap<Question, bool>,
    /// False when the message must not get an automatic reply whatever the script says
    /// (see [`auto_reply_allowed`]).
    pub auto_reply_allowed: bool,
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Decided(Decision),
    /// Answer these and evaluate again.
    Ask(Vec<Question>),
    /// The script failed; the caller keeps the message in INBOX and logs this.
    Failed(String),
}

/// The interpreter settings shared by every run; `hostname` names the host in the Message-ID
/// of vacation replies.
pub fn runtime(hostname: &str) -> Runtime {
    let mut runtime = Runtime::new()
        .with_cpu_limit(CPU_LIMIT)
        .with_max_redirects(MAX_REDIRECTS as usize)
        .with_max_out_messages(3)
        .with_default_vacation_expiry(DEFAULT_VACATION_DAYS * 86_400)
        .with_vacation_default_subject("Automated reply")
        .with_vacation_subject_prefix("Auto: ")
        .with_local_hostname(hostname.to_string())
        // editheader (RFC 5293 §6) must not remove trace fields or our delivery headers.
        .with_protected_header("Received")
        .with_protected_header("Auto-Submitted")
        .with_protected_header("Return-Path")
        .with_protected_header("Delivered-To");
    for cap in DISABLED {
        runtime.unset_capability(cap.clone());
    }
    runtime
}

/// RFC 5230 §4.6 and RFC 3834 §2: no automatic reply to the null sender, to daemons and list
/// software (`MAILER-DAEMON`, `owner-*`, `*-request`), to messages that are themselves
/// automatic (`Auto-Submitted` other than `no`) or come from a list (`List-Id` and the other
/// RFC 2369 fields, `Precedence: bulk/list/junk`). The interpreter checks some of this too;
/// this is the whole rule in one place.
pub fn auto_reply_allowed(return_path: &str, content: &[u8]) -> bool {
    let sender = return_path.trim().to_ascii_lowercase();
    let Some((local, _domain)) = sender.rsplit_once('@') else {
        return false;
    };
    if local.is_empty()
        || local == "mailer-daemon"
        || local == "postmaster"
        || local == "listserv"
        || local == "majordomo"
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.starts_with("noreply")
        || local.starts_with("no-reply")
    {
        return false;
    }
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(content) else {
        return true;
    };
    for header in parsed.headers() {
        let name = header.name().to_ascii_lowercase();
        let value = header
            .value()
            .as_text()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "list-id" | "list-post" | "list-unsubscribe" | "list-subscribe" | "list-help"
            | "list-owner" | "list-archive" => return false,
            "auto-submitted" if value != "no" && !value.starts_with("no;") => return false,
            "precedence" if matches!(value.as_str(), "bulk" | "list" | "junk") => return false,
            _ => {}
        }
    }
    true
}

/// Turns RFC 5429 reject text into one SMTP reply line.
fn reject_reply(reason: &str) -> String {
    let mut text: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() > MAX_REASON_CHARS {
        text = text.chars().take(MAX_REASON_CHARS).collect();
    }
    if text.is_empty() {
        text = "rejected by the recipient's filter".into();
    }
    format!("550 5.7.1 {text}")
}

/// Runs `script` over `message` and maps the events it produces to a [`Decision`].
pub fn evaluate(
    runtime: &Runtime,
    script: Arc<sieve::Sieve>,
    message: &[u8],
    envelope: Envelope<'_>,
    facts: &Facts,
) -> Outcome {
    let mut ctx = runtime
        .filter(message)
        .with_user_address(envelope.account)
        .with_envelope(SieveEnvelope::To, envelope.to);
    if !envelope.from.is_empty() {
        ctx.set_envelope(SieveEnvelope::From, envelope.from);
    }

    let mut created: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut decision = Decision::default();
    let mut asked: Vec<Question> = Vec::new();
    let mut kept = false;
    // The vacation test answered "not sent yet": the next message sent is that reply.
    let mut pending_vacation: Option<(String, u64)> = None;
    let mut input = Input::script("active", script);

    let content_of = |created: &HashMap<usize, Vec<u8>>, id: usize| -> Option<Vec<u8>> {
        if id == 0 {
            None
        } else {
            created.get(&id).cloned()
        }
    };

    while let Some(result) = ctx.run(input) {
        input = Input::True;
        let event = match result {
            Ok(event) => event,
            Err(e) => return Outcome::Failed(format!("{e:?}")),
        };
        match event {
            Event::Keep { flags, message_id } => {
                kept = true;
                push_target(
                    &mut decision.targets,
                    Target {
                        mailbox: "INBOX".into(),
                        flags,
                        create: false,
                        content: content_of(&created, message_id),
                    },
                );
            }
            Event::FileInto {
                folder,
                flags,
                create,
                message_id,
                ..
            } => push_target(
                &mut decision.targets,
                Target {
                    mailbox: folder,
                    flags,
                    create,
                    content: content_of(&created, message_id),
                },
            ),
            Event::Discard => {}
            Event::Reject { reason, .. } => {
                decision.reject = Some(reject_reply(&reason));
            }
            Event::CreatedMessage {
                message_id,
                message,
            } => {
                created.insert(message_id, message);
            }
            Event::SendMessage {
                recipient,
                message_id,
                ..
            } => {
                let address = match recipient {
                    Recipient::Address(a) => a,
                    Recipient::List(a) => a,
                    Recipient::Group(mut all) => {
                        if all.is_empty() {
                            continue;
                        }
                        all.remove(0)
                    }
                };
                match pending_vacation.take() {
                    Some((handle, period_secs)) if message_id != 0 => {
                        decision.vacation = Some(Vacation {
                            to: address,
                            handle,
                            period_secs,
                            message: created.get(&message_id).cloned().unwrap_or_default(),
                        });
                    }
                    _ => decision
                        .redirects
                        .push((address, content_of(&created, message_id))),
                }
            }
            Event::DuplicateId { id, expiry, .. } => {
                // Only the vacation test asks this (the duplicate extension is disabled).
                let question = Question::VacationSent {
                    id: id.clone(),
                    period_secs: expiry,
                };
                let sent = if !facts.auto_reply_allowed {
                    true
                } else if let Some(answer) = facts.answers.get(&question) {
                    *answer
                } else {
                    asked.push(question);
                    false
                };
                if !sent {
                    pending_vacation = Some((id, expiry));
                }
                input = sent.into();
            }
            Event::MailboxExists { mailboxes, .. } => {
                let mut all = true;
                for mailbox in mailboxes {
                    let Mailbox::Name(name) = mailbox else {
                        all = false;
                        continue;
                    };
                    let question = Question::MailboxExists(name);
                    match facts.answers.get(&question) {
                        Some(answer) => all &= *answer,
                        None => {
                            asked.push(question);
                            all = false;
                        }
                    }
                }
                input = all.into();
            }
            Event::ListContains { .. } => input = false.into(),
            Event::IncludeScript { .. } => input = Input::False,
            Event::SetEnvelope { .. } => {}
            Event::Function { .. } => input = Input::result(String::new().into()),
            Event::Notify { .. } => {}
        }
    }

    if !asked.is_empty() {
        asked.dedup();
        return Outcome::Ask(asked);
    }
    // RFC 5429 §2.1 (and §2.2): reject cannot be combined with keep, fileinto, redirect or
    // vacation; a script that does both has failed.
    if decision.reject.is_some()
        && (kept
            || !decision.targets.is_empty()
            || !decision.redirects.is_empty()
            || decision.vacation.is_some())
    {
        return Outcome::Failed("reject combined with keep, fileinto, redirect or vacation".into());
    }
    Outcome::Decided(decision)
}

/// RFC 5228 §4.1: filing into the same mailbox twice stores one copy; the flags of both are
/// kept.
fn push_target(targets: &mut Vec<Target>, target: Target) {
    if let Some(existing) = targets
        .iter_mut()
        .find(|t| same_mailbox(&t.mailbox, &target.mailbox) && t.content == target.content)
    {
        for flag in target.flags {
            if !existing.flags.iter().any(|f| f.eq_ignore_ascii_case(&flag)) {
                existing.flags.push(flag);
            }
        }
        existing.create |= target.create;
        return;
    }
    targets.push(target);
}

fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// Compiled scripts by script id, each with the `updated_at` it was compiled from: a changed
/// script has a new `updated_at` and is compiled again; a deleted one simply stops being asked
/// for.
#[derive(Default)]
pub struct ScriptCache {
    scripts: Mutex<HashMap<i64, (i64, Arc<sieve::Sieve>)>>,
}

impl ScriptCache {
    pub fn get(&self, active: ActiveScript) -> Option<Arc<sieve::Sieve>> {
        let scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        scripts
            .get(&active.id)
            .filter(|(updated, _)| *updated == active.updated_at_ms)
            .map(|(_, s)| s.clone())
    }

    pub fn insert(&self, active: ActiveScript, script: Arc<sieve::Sieve>) {
        let mut scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        if scripts.len() >= MAX_CACHED_SCRIPTS {
            scripts.clear();
        }
        scripts.insert(active.id, (active.updated_at_ms, script));
    }
}

/// The forward key of one redirect: the delivery key (one per queue recipient), the account
/// (an alias fans one key out to several accounts, each with its own script) and the target
/// (RFC 5228 §4.2: redirecting twice to one address sends one message). Alias forwards use
/// the bare delivery key, which never contains `>`.
fn redirect_key(delivery_key: &str, account_id: i64, to: &str) -> String {
    format!(
        "{delivery_key}>sieve:{account_id}:{}",
        to.to_ascii_lowercase()
    )
}

/// One account copy to decide for.
#[derive(Debug, Clone, Copy)]
pub struct CopyRef<'a> {
    pub account_id: i64,
    pub envelope: Envelope<'a>,
    /// The message as it will be stored (with Return-Path and Delivered-To).
    pub content: &'a [u8],
}

/// Sieve at delivery, store side: finds each account's active script, compiles it once per
/// version, answers the script's questions from the store, and carries out what a decision
/// asks beyond storing (redirects, vacation replies).
pub struct Filter {
    store: Store,
    cache: ScriptCache,
    dkim: tern_msa::dkim::Dkim,
}

/// Question rounds per message before unanswered questions count as "no" (each round answers
/// every question the run asked, so a script needs more only if answers change its path).
const MAX_ROUNDS: usize = 4;

impl Filter {
    pub fn new(store: Store) -> Filter {
        Filter {
            store,
            cache: ScriptCache::default(),
            dkim: tern_msa::dkim::Dkim::new(),
        }
    }

    /// The decision for every copy, in order. Accounts without an active script (one query for
    /// the whole batch) get the implicit keep; so does any copy whose script cannot be loaded
    /// or fails, with a warning, because a broken filter must never lose mail.
    pub async fn decide(&self, copies: &[CopyRef<'_>]) -> Vec<Decision> {
        let mut out = vec![Decision::implicit_keep(); copies.len()];
        if copies.is_empty() {
            return out;
        }
        let mut ids: Vec<i64> = copies.iter().map(|c| c.account_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let active = match self.store.active_sieve_scripts(&ids).await {
            Ok(active) => active,
            Err(e) => {
                tracing::warn!(error = %e, "sieve: looking up active scripts failed; delivering to INBOX");
                return out;
            }
        };
        if active.is_empty() {
            return out;
        }
        for (i, copy) in copies.iter().enumerate() {
            let Some(script) = active.get(&copy.account_id) else {
                continue;
            };
            let Some(compiled) = self.script(*script).await else {
                continue;
            };
            out[i] = self.run(copy, compiled).await;
        }
        out
    }

    async fn script(&self, active: ActiveScript) -> Option<Arc<sieve::Sieve>> {
        if let Some(s) = self.cache.get(active) {
            return Some(s);
        }
        let stored = match self.store.sieve_script_by_id(active.id).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, script = active.id, "sieve: loading script failed; delivering to INBOX");
                return None;
            }
        };
        match compile(&stored.source) {
            Ok(compiled) => {
                self.cache.insert(
                    ActiveScript {
                        id: stored.id,
                        updated_at_ms: stored.updated_at_ms,
                    },
                    compiled.clone(),
                );
                Some(compiled)
            }
            Err(e) => {
                tracing::warn!(script = active.id, error = %e, "sieve: stored script does not compile; delivering to INBOX");
                None
            }
        }
    }

    async fn run(&self, copy: &CopyRef<'_>, script: Arc<sieve::Sieve>) -> Decision {
        let domain = copy
            .envelope
            .account
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d);
        let runtime = runtime(domain);
        let mut facts = Facts {
            answers: HashMap::new(),
            auto_reply_allowed: auto_reply_allowed(copy.envelope.from, copy.content),
        };
        for _ in 0..MAX_ROUNDS {
            match evaluate(
                &runtime,
                script.clone(),
                copy.content,
                copy.envelope,
                &facts,
            ) {
                Outcome::Decided(d) => return d,
                Outcome::Failed(e) => {
                    tracing::warn!(account = %copy.envelope.account, error = %e, "sieve: script failed; implicit keep");
                    return Decision::implicit_keep();
                }
                Outcome::Ask(questions) => {
                    for q in questions {
                        let answer = self.answer(copy, &q).await;
                        facts.answers.insert(q, answer);
                    }
                }
            }
        }
        tracing::warn!(account = %copy.envelope.account, "sieve: script kept asking; implicit keep");
        Decision::implicit_keep()
    }

    /// Store trouble answers "yes, sent" for vacation (better no reply than two) and "no" for
    /// mailboxes (the message then goes to INBOX).
    async fn answer(&self, copy: &CopyRef<'_>, question: &Question) -> bool {
        match question {
            Question::VacationSent { id, period_secs } => {
                let period_ms = i64::try_from(period_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                let since = tern_store::now_ms().saturating_sub(period_ms);
                self.store
                    .vacation_sent_since(copy.account_id, copy.envelope.from, id, since)
                    .await
                    .unwrap_or(true)
            }
            Question::MailboxExists(name) => self
                .store
                .mailbox(copy.account_id, name)
                .await
                .ok()
                .flatten()
                .is_some(),
        }
    }

    /// Creates the mailboxes `fileinto :create` asked for (an existing one is fine). A failure
    /// is logged: the copy then lands in INBOX, which the store falls back to.
    pub async fn create_mailboxes(&self, account_id: i64, decision: &Decision) {
        for target in decision.targets.iter().filter(|t| t.create) {
            match self.store.create_mailbox(account_id, &target.mailbox).await {
                Ok(_) | Err(tern_store::Error::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, mailbox = %target.mailbox, "sieve: fileinto :create failed");
                }
            }
        }
    }

    /// Carries out what a decision asks beyond storing, once the copies are stored: redirects
    /// are queued from the original return path, each under its own key derived from the
    /// copy's delivery key (`Store::enqueue_forward`, as alias forwards), so a retried
    /// delivery queues none of them twice; an error is returned, so the caller answers with a
    /// temporary failure and the retry queues only what is missing. The vacation reply is
    /// claimed (once per sender, handle and period) and queued from the null sender, signed
    /// with the account domain's DKIM key when there is one. A failed vacation reply is only
    /// logged.
    pub async fn carry_out(
        &self,
        account_id: i64,
        delivery_key: &str,
        envelope: Envelope<'_>,
        original: &[u8],
        decision: &Decision,
    ) -> Result<Vec<String>, tern_store::Error> {
        let mut notes = Vec::new();
        for (to, content) in &decision.redirects {
            let recipients = [to.clone()];
            let forwarded = self
                .store
                .enqueue_forward(
                    &redirect_key(delivery_key, account_id, to),
                    NewMessage {
                        sender: envelope.from,
                        recipients: &recipients,
                        content: content.as_deref().unwrap_or(original),
                        ..Default::default()
                    },
                )
                .await?;
            tracing::info!(queue.id = %forwarded.queue_id, duplicate = forwarded.duplicate, "sieve: redirect queued");
            notes.push(format!(
                "redirected as {}{}",
                forwarded.queue_id,
                if forwarded.duplicate {
                    " (already queued)"
                } else {
                    ""
                }
            ));
        }
        if let Some(v) = &decision.vacation {
            let period_ms = i64::try_from(v.period_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            match self
                .store
                .claim_vacation(account_id, &v.to, &v.handle, period_ms)
                .await
            {
                Ok(true) => {
                    let domain = tern_msa::dkim::from_domain(&v.message, envelope.account);
                    let signed = self
                        .dkim
                        .sign_or_pass(&self.store, &domain, v.message.clone())
                        .await;
                    let recipients = [v.to.clone()];
                    // RFC 5230 §5.1: the reply's envelope sender is empty (<>), so it can
                    // never cause a bounce or another auto-reply, and NOTIFY=NEVER.
                    let dsn = [RecipientDsn {
                        notify: Notify {
                            never: true,
                            explicit: true,
                            ..Notify::default()
                        },
                        orcpt: None,
                    }];
                    match self
                        .store
                        .enqueue(NewMessage {
                            sender: "",
                            recipients: &recipients,
                            content: &signed,
                            rcpt_dsn: &dsn,
                            ..Default::default()
                        })
                        .await
                    {
                        Ok(id) => {
                            tracing::info!(queue.id = %id, "sieve: vacation reply queued");
                            notes.push(format!("vacation reply {id}"));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "sieve: queueing the vacation reply failed")
                        }
                    }
                }
                Ok(false) => tracing::debug!("sieve: vacation reply already sent in this period"),
                Err(e) => {
                    tracing::warn!(error = %e, "sieve: vacation bookkeeping failed; no reply")
                }
            }
        }
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Ann <ann@example.net>\r\nTo: bob@example.org\r\n\
        Subject: Quarterly report\r\nMessage-ID: <m1@example.net>\r\n\r\nThe numbers.\r\n";

    fn env() -> Envelope<'static> {
        Envelope {
            from: "ann@example.net",
            to: "bob+work@example.org",
            account: "bob@example.org",
        }
    }

    fn facts() -> Facts {
        Facts {
            answers: HashMap::new(),
            auto_reply_allowed: true,
        }
    }

    fn run_with(source: &str, message: &[u8], facts: &Facts) -> Outcome {
        let script = compile(source).unwrap_or_else(|e| panic!("compile: {e}"));
        evaluate(&runtime("mx.example.org"), script, message, env(), facts)
    }

    fn decide(source: &str) -> Decision {
        match run_with(source, MSG, &facts()) {
            Outcome::Decided(d) => d,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn inbox() -> Target {
        Decision::implicit_keep().targets.remove(0)
    }

    #[test]
    fn compile_errors_name_the_line() {
        let err = compile(
            "require \"fileinto\";\n\nif header :contains \"Subject\" {\n  fileinto \"x\";\n",
        )
        .unwrap_err();
        assert!(err.starts_with("line "), "{err}");
        let err = compile("keep;\nfileinto \"Work\";\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(compile("keep;").is_ok());
    }

    #[test]
    fn uploads_are_checked_for_disabled_extensions() {
        assert!(check("require \"fileinto\";\nfileinto \"A\";").is_ok());
        let err =
            check("require [\"fileinto\", \"duplicate\"];\nif duplicate { discard; }").unwrap_err();
        assert!(err.contains("\"duplicate\" is not available"), "{err}");
        assert!(
            check("keep;\nfileinto \"x\";")
                .unwrap_err()
                .contains("line 2")
        );
        let ext = extensions();
        let has = |name: &str| ext.split(' ').any(|e| e == name);
        for name in [
            "fileinto",
            "vacation",
            "reject",
            "comparator-i;ascii-numeric",
        ] {
            assert!(has(name), "{name} missing from {ext}");
        }
        for name in ["duplicate", "include", "enotify", "comparator-elbonia"] {
            assert!(!has(name), "{name} offered in {ext}");
        }
    }

    #[test]
    fn empty_script_is_implicit_keep() {
        assert_eq!(decide(""), Decision::implicit_keep());
        assert_eq!(decide("keep;"), Decision::implicit_keep());
    }

    #[test]
    fn fileinto_cancels_implicit_keep_unless_copy() {
        let d = decide(
            "require \"fileinto\";\nif header :contains \"subject\" \"report\" { fileinto \"Work\"; }",
        );
        assert_eq!(d.targets.len(), 1);
        assert_eq!(d.targets[0].mailbox, "Work");
        assert!(!d.targets[0].create);

        let d = decide("require [\"fileinto\", \"copy\"];\nfileinto :copy \"Work\";");
        let names: Vec<&str> = d.targets.iter().map(|t| t.mailbox.as_str()).collect();
        assert_eq!(names, ["Work", "INBOX"]);

        let d = decide("require [\"fileinto\", \"mailbox\"];\nfileinto :create \"New/Folder\";");
        assert!(d.targets[0].create);
        assert_eq!(d.targets[0].mailbox, "New/Folder");
    }

    #[test]
    fn same_mailbox_twice_is_one_copy() {
        let d = decide("require \"fileinto\";\nfileinto \"A\"; fileinto \"A\"; keep; keep;");
        let names: Vec<&str> = d.targets.iter().map(|t| t.mailbox.as_str()).collect();
        assert_eq!(names, ["A", "INBOX"]);
    }

    #[test]
    fn flags_from_imap4flags() {
        let d = decide(
            "require [\"imap4flags\", \"fileinto\"];\naddflag \"\\\\Flagged\";\nfileinto :flags \"$Work\" \"Work\";\nkeep;",
        );
        assert_eq!(d.targets[0].mailbox, "Work");
        assert_eq!(d.targets[0].flags, ["$Work"]);
        assert_eq!(d.targets[1].mailbox, "INBOX");
        assert_eq!(d.targets[1].flags, ["\\Flagged"]);
    }

    #[test]
    fn envelope_subaddress_and_variables() {
        let d = decide(
            "require [\"envelope\", \"subaddress\", \"fileinto\", \"variables\"];\n\
             set \"f\" \"Plain\";\n\
             if envelope :detail \"to\" \"work\" { set \"f\" \"Detail\"; }\n\
             if envelope :is \"from\" \"ann@example.net\" { fileinto \"${f}-ann\"; }",
        );
        assert_eq!(d.targets[0].mailbox, "Detail-ann");
    }

    #[test]
    fn body_test() {
        let d = decide(
            "require [\"body\", \"fileinto\"];\nif body :contains \"numbers\" { fileinto \"Numbers\"; }",
        );
        assert_eq!(d.targets[0].mailbox, "Numbers");
    }

    #[test]
    fn discard_and_stop() {
        assert!(decide("discard;").targets.is_empty());
        assert_eq!(decide("stop; discard;"), Decision::implicit_keep());
    }

    #[test]
    fn reject_and_ereject_become_550() {
        let d = decide("require \"reject\";\nreject \"I do not\r\nwant this\";");
        assert_eq!(d.reject.as_deref(), Some("550 5.7.1 I do not want this"));
        assert!(d.targets.is_empty());
        let d = decide("require \"ereject\";\nereject \"no thanks\";");
        assert_eq!(d.reject.as_deref(), Some("550 5.7.1 no thanks"));
    }

    #[test]
    fn reject_with_fileinto_fails_to_implicit_keep() {
        let out = run_with(
            "require [\"reject\", \"fileinto\"];\nfileinto \"A\";\nreject \"no\";",
            MSG,
            &facts(),
        );
        assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    }

    #[test]
    fn redirect_cancels_keep_unless_copy() {
        let d = decide("redirect \"carol@example.com\";");
        assert_eq!(d.redirects, [("carol@example.com".to_string(), None)]);
        assert!(d.targets.is_empty());
        let d = decide("require \"copy\";\nredirect :copy \"carol@example.com\";");
        assert_eq!(d.redirects.len(), 1);
        assert_eq!(d.targets, [inbox()]);
    }

    #[test]
    fn vacation_asks_then_replies() {
        let script = "require \"vacation\";\nvacation :days 3 :handle \"away\" :subject \"Away\" \"I am away.\";";
        let first = run_with(script, MSG, &facts());
        let Outcome::Ask(questions) = first else {
            panic!("expected a question, got {first:?}");
        };
        assert_eq!(questions.len(), 1);
        let Question::VacationSent { period_secs, .. } = &questions[0] else {
            panic!("{questions:?}");
        };
        assert_eq!(*period_secs, 3 * 86_400);

        // Not sent yet: a reply, and the implicit keep still holds.
        let mut answered = facts();
        answered.answers.insert(questions[0].clone(), false);
        let Outcome::Decided(d) = run_with(script, MSG, &answered) else {
            panic!("expected a decision");
        };
        assert_eq!(d.targets, [inbox()]);
        let v = d.vacation.expect("a vacation reply");
        assert_eq!(v.to, "ann@example.net");
        assert_eq!(v.period_secs, 3 * 86_400);
        let text = String::from_utf8_lossy(&v.message);
        assert!(text.contains("Subject: Away\r\n"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
        assert!(text.contains("In-Reply-To: <m1@example.net>"), "{text}");
        assert!(text.contains("References: <m1@example.net>"), "{text}");
        assert!(text.contains("I am away."), "{text}");

        // Sent within the period: no reply.
        answered.answers.insert(questions[0].clone(), true);
        let Outcome::Decided(d) = run_with(script, MSG, &answered) else {
            panic!("expected a decision");
        };
        assert!(d.vacation.is_none());
        assert_eq!(d.targets, [inbox()]);
    }

    #[test]
    fn vacation_never_to_lists_or_automated_senders() {
        let script = "require \"vacation\";\nvacation \"I am away.\";";
        let mut f = facts();
        f.auto_reply_allowed = false;
        let Outcome::Decided(d) = run_with(script, MSG, &f) else {
            panic!("expected a decision");
        };
        assert!(d.vacation.is_none());

        assert!(auto_reply_allowed("ann@example.net", MSG));
        assert!(!auto_reply_allowed("", MSG));
        assert!(!auto_reply_allowed("MAILER-DAEMON@example.net", MSG));
        assert!(!auto_reply_allowed("owner-list@example.net", MSG));
        assert!(!auto_reply_allowed("list-request@example.net", MSG));
        for header in [
            "List-Id: <x.example.net>",
            "Precedence: bulk",
            "Precedence: list",
            "Precedence: junk",
            "Auto-Submitted: auto-replied",
            "Auto-Submitted: auto-generated",
        ] {
            let msg = format!("{header}\r\nFrom: ann@example.net\r\n\r\nhi\r\n");
            assert!(
                !auto_reply_allowed("ann@example.net", msg.as_bytes()),
                "{header}"
            );
        }
        let msg = b"Auto-Submitted: no\r\nFrom: ann@example.net\r\n\r\nhi\r\n";
        assert!(auto_reply_allowed("ann@example.net", msg));
    }

    #[test]
    fn mailboxexists_is_asked() {
        let script = "require [\"mailbox\", \"fileinto\"];\nif mailboxexists \"Work\" { fileinto \"Work\"; }";
        let Outcome::Ask(q) = run_with(script, MSG, &facts()) else {
            panic!("expected a question");
        };
        assert_eq!(q, [Question::MailboxExists("Work".into())]);
        let mut f = facts();
        f.answers.insert(q[0].clone(), true);
        let Outcome::Decided(d) = run_with(script, MSG, &f) else {
            panic!("expected a decision");
        };
        assert_eq!(d.targets[0].mailbox, "Work");
        f.answers.insert(q[0].clone(), false);
        let Outcome::Decided(d) = run_with(script, MSG, &f) else {
            panic!("expected a decision");
        };
        assert_eq!(d, Decision::implicit_keep());
    }

    #[test]
    fn cpu_limit_fails_the_run() {
        let out = run_with(
            "require [\"variables\", \"vnd.stalwart.while\"];\nset \"i\" \"0\";\nwhile \"true\" { set \"i\" \"1\"; }",
            MSG,
            &facts(),
        );
        // Either the extension is unknown (compile error) or the loop runs out of CPU.
        assert!(!matches!(out, Outcome::Decided(_)), "{out:?}");
    }

    #[test]
    fn disabled_extension_fails_the_run() {
        let out = run_with(
            "require \"duplicate\";\nif duplicate { discard; }",
            MSG,
            &facts(),
        );
        assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    }

    #[test]
    fn cache_is_keyed_by_id_and_update_time() {
        let cache = ScriptCache::default();
        let v1 = ActiveScript {
            id: 1,
            updated_at_ms: 10,
        };
        let script = compile("keep;").unwrap();
        assert!(cache.get(v1).is_none());
        cache.insert(v1, script);
        assert!(cache.get(v1).is_some());
        assert!(
            cache
                .get(ActiveScript {
                    id: 1,
                    updated_at_ms: 11
                })
                .is_none()
        );
    }
}
