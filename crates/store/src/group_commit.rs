//! Group commit for the queue on PostgreSQL: concurrent `enqueue` calls share one transaction.
//!
//! Every accepted message must be committed before its 250 goes out, and on PostgreSQL a commit
//! (WAL flush) is the expensive part of a small insert. One task takes the first waiting
//! message, adds whatever else is already waiting (never waiting for more), and writes them
//! all in one statement, so one transaction; each caller hears back only after that commit. At low load a batch
//! is one message and nothing is delayed. If the shared transaction fails, each message is
//! written on its own, so one bad message cannot fail the others.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Error, Result};

/// Messages written in one transaction at most.
const MAX_BATCH: usize = 64;

/// One queued message, owned, ready for the one-statement insert.
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) sender: String,
    pub(crate) content: Vec<u8>,
    pub(crate) size: i64,
    pub(crate) now: i64,
    pub(crate) envid: Option<String>,
    pub(crate) ret: Option<&'static str>,
    pub(crate) requiretls: bool,
    pub(crate) addresses: Vec<String>,
    pub(crate) notify: Vec<Option<String>>,
    pub(crate) orcpt: Vec<Option<String>>,
    pub(crate) trace_context: Option<String>,
}

struct Job {
    row: Row,
    done: oneshot::Sender<Result<()>>,
}

/// The handle `enqueue` sends to; the writer task ends when the last handle is dropped.
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer tasks on the current tokio runtime. Two of them, so that one batch can
    /// be built while the other waits for its commit.
    pub(crate) fn start(pool: PgPool) -> GroupCommit {
        let (jobs, rx) = mpsc::channel::<Job>(1024);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..2 {
            tokio::spawn(writer(pool.clone(), rx.clone()));
        }
        GroupCommit { jobs }
    }

    /// Writes `row`, returning once it is committed.
    pub(crate) async fn write(&self, row: Row) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job { row, done })
            .await
            .map_err(|_| Error::Internal("queue writer stopped".into()))?;
        wait.await
            .map_err(|_| Error::Internal("queue writer stopped".into()))?
    }
}

async fn writer(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        if jobs.len() > 1 && write_all(&pool, &jobs).await.is_ok() {
            for job in jobs {
                let _ = job.done.send(Ok(()));
            }
            continue;
        }
        for job in jobs {
            let result = insert(&pool, &job.row).await;
            let _ = job.done.send(result);
        }
    }
}

/// Every message of the batch and all their recipients in one statement (and so one
/// implicit transaction): columns are bound as arrays and unnested.
async fn write_all(pool: &PgPool, jobs: &[Job]) -> Result<()> {
    let c = Columns::of(jobs);
    sqlx::query(
        "WITH m AS (INSERT INTO queue_messages \
           (id, sender, content, size, created_at, envid, ret, requiretls, trace_context) \
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::bigint[], \
             $5::bigint[], $6::text[], $7::text[], $8::bool[], $9::text[])) \
         INSERT INTO queue_recipients (message_id, address, next_attempt_at, notify, orcpt) \
         SELECT * FROM UNNEST($10::text[], $11::text[], $12::bigint[], $13::text[], \
           $14::text[])",
    )
    .bind(c.ids)
    .bind(c.senders)
    .bind(c.contents)
    .bind(c.sizes)
    .bind(c.created)
    .bind(c.envids)
    .bind(c.rets)
    .bind(c.requiretls)
    .bind(c.traces)
    .bind(c.rcpt_message)
    .bind(c.rcpt_address)
    .bind(c.rcpt_due)
    .bind(c.rcpt_notify)
    .bind(c.rcpt_orcpt)
    .execute(pool)
    .await?;
    Ok(())
}

/// A batch's messages and recipients as one array per column.
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<&'a str>,
    senders: Vec<&'a str>,
    contents: Vec<&'a [u8]>,
    sizes: Vec<i64>,
    created: Vec<i64>,
    envids: Vec<Option<&'a str>>,
    rets: Vec<Option<&'static str>>,
    requiretls: Vec<bool>,
    traces: Vec<Option<&'a str>>,
    rcpt_message: Vec<&'a str>,
    rcpt_address: Vec<&'a str>,
    rcpt_due: Vec<i64>,
    rcpt_notify: Vec<Option<&'a str>>,
    rcpt_orcpt: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(jobs: &'a [Job]) -> Self {
        let mut c = Columns::default();
        for r in jobs.iter().map(|j| &j.row) {
            c.ids.push(&r.id);
            c.senders.push(&r.sender);
            c.contents.push(&r.content);
            c.sizes.push(r.size);
            c.created.push(r.now);
            c.envids.push(r.envid.as_deref());
            c.rets.push(r.ret);
            c.requiretls.push(r.requiretls);
            c.traces.push(r.trace_context.as_deref());
            for ((address, notify), orcpt) in r.addresses.iter().zip(&r.notify).zip(&r.orcpt) {
                c.rcpt_message.push(&r.id);
                c.rcpt_address.push(address);
                c.rcpt_due.push(r.now);
                c.rcpt_notify.push(notify.as_deref());
                c.rcpt_orcpt.push(orcpt.as_deref());
            }
        }
        c
    }
}

/// The message and its recipients in one statement (a data-modifying CTE).
async fn insert<'e, E>(exec: E, r: &Row) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query(
        "WITH m AS (INSERT INTO queue_messages \
           (id, sender, content, size, created_at, envid, ret, requiretls, trace_context) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $12)) \
         INSERT INTO queue_recipients (message_id, address, next_attempt_at, notify, orcpt) \
         SELECT $1, r.address, $5, r.notify, r.orcpt \
         FROM UNNEST($9::text[], $10::text[], $11::text[]) AS r (address, notify, orcpt)",
    )
    .bind(&r.id)
    .bind(&r.sender)
    .bind(&r.content)
    .bind(r.size)
    .bind(r.now)
    .bind(&r.envid)
    .bind(r.ret)
    .bind(r.requiretls)
    .bind(&r.addresses)
    .bind(&r.notify)
    .bind(&r.orcpt)
    .bind(&r.trace_context)
    .execute(exec)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Prepared;
    use crate::{NewMessage, Notify, RecipientDsn, Ret, Store};

    fn job(row: Row) -> Job {
        Job {
            row,
            done: oneshot::channel().0,
        }
    }

    /// The batched statement stores exactly what the one-message insert stores, every column
    /// and recipient included; the writer would silently fall back to one-by-one otherwise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_stores_what_single_inserts_store() {
        let db = tern_testkit::TestDb::new("postgres").await;
        let store = Store::connect(&db.url).await.unwrap();
        let crate::Pool::Pg(pool) = store.pool() else {
            panic!("not PostgreSQL")
        };
        let two = ["a@r.test".to_string(), "b@r.test".to_string()];
        let one = ["c@r.test".to_string()];
        let dsn = [
            RecipientDsn {
                notify: Notify {
                    never: true,
                    explicit: true,
                    ..Notify::default()
                },
                orcpt: Some("rfc822;a@r.test".into()),
            },
            RecipientDsn {
                notify: Notify::default(),
                orcpt: None,
            },
        ];
        let messages = || {
            [
                NewMessage {
                    sender: "s@example.org",
                    recipients: &two,
                    content: b"Subject: one\r\n\r\n\x00\xff body\r\n",
                    envid: Some("env-1"),
                    ret: Some(Ret::Headers),
                    rcpt_dsn: &dsn,
                    requiretls: true,
                    trace_context: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                },
                NewMessage {
                    sender: "",
                    recipients: &one,
                    content: b"Subject: two\r\n\r\nbody\r\n",
                    ..NewMessage::default()
                },
            ]
        };
        let batched: Vec<Prepared<'_>> = messages()
            .into_iter()
            .map(|m| Prepared::new(m).unwrap())
            .collect();
        let jobs: Vec<Job> = batched.iter().map(|p| job(p.group_row())).collect();
        write_all(pool, &jobs).await.unwrap();
        let single: Vec<Prepared<'_>> = messages()
            .into_iter()
            .map(|m| Prepared::new(m).unwrap())
            .collect();
        for p in &single {
            insert(pool, &p.group_row()).await.unwrap();
        }
        for (b, s) in batched.iter().zip(&single) {
            let mut b_shown = store.queue_show(&b.id).await.unwrap().unwrap();
            let s_shown = store.queue_show(&s.id).await.unwrap().unwrap();
            assert_eq!(b_shown.recipients.len(), b.recipients.len());
            b_shown.id.clone_from(&s_shown.id);
            b_shown.created_at_ms = s_shown.created_at_ms;
            for (br, sr) in b_shown.recipients.iter_mut().zip(&s_shown.recipients) {
                br.id = sr.id;
                br.next_attempt_at_ms = sr.next_attempt_at_ms;
            }
            assert_eq!(b_shown, s_shown);
            assert_eq!(
                store.message_content(&b.id).await.unwrap(),
                store.message_content(&s.id).await.unwrap()
            );
        }
        let traces = store
            .trace_contexts(&[batched[0].id.as_str()])
            .await
            .unwrap();
        assert_eq!(traces.len(), 1);
        store.close().await;
    }
}
