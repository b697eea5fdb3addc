//! Group commit for the queue on PostgreSQL: concurrent `enqueue` calls share one transaction.
//!
//! Every accepted message must be committed before its 250 goes out, and on PostgreSQL a commit
//! (WAL flush) is the expensive part of a small insert. One task takes the first waiting
//! message, adds whatever else is already waiting (never waiting for more), and writes them
//! all in one transaction; each caller hears back only after that commit. At low load a batch
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

async fn write_all(pool: &PgPool, jobs: &[Job]) -> Result<()> {
    let mut tx = pool.begin().await?;
    for job in jobs {
        insert(&mut *tx, &job.row).await?;
    }
    tx.commit().await?;
    Ok(())
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
