//! Forwarding to alias targets in other domains, exactly once per delivery key.
//!
//! The MDA turns a recipient whose alias points outside our domains into a new queue message.
//! The forward is recorded under the recipient's delivery key in the same transaction as that
//! queue message, so a delivery retried after a lost reply (or run twice by racing MTAs) finds
//! the record and queues nothing more. What the forward's envelope looks like (the SRS
//! rewrite of its sender) is the caller's business.

use sqlx::Row;

use crate::queue::{NewMessage, Prepared, Ret, insert_prepared};
use crate::{Error, Result, Store, write_tx};

/// A forward queued by [`Store::enqueue_forward`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub queue_id: String,
    /// True when the key had been forwarded before and nothing was queued this time;
    /// `queue_id` then names the first forward.
    pub duplicate: bool,
}

impl Store {
    /// Queues `msg` as the forward of delivery `delivery_key`, unless that key was forwarded
    /// before. On PostgreSQL a concurrent second call waits for the first transaction on the
    /// primary key and then finds its row.
    pub async fn enqueue_forward(
        &self,
        delivery_key: &str,
        msg: NewMessage<'_>,
    ) -> Result<Forwarded> {
        if delivery_key.is_empty() {
            return Err(Error::Invalid("empty delivery key".into()));
        }
        let prepared = Prepared::new(msg)?;
        let forwarded = write_tx!(self, |tx, _backend| {
            let claimed = sqlx::query(
                "INSERT INTO forwards (delivery_key, queue_id, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(delivery_key)
            .bind(&prepared.id)
            .bind(prepared.now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                let row = sqlx::query("SELECT queue_id FROM forwards WHERE delivery_key = $1")
                    .bind(delivery_key)
                    .fetch_one(&mut *tx)
                    .await?;
                Forwarded {
                    queue_id: row.try_get("queue_id")?,
                    duplicate: true,
                }
            } else {
                insert_prepared!(tx, &prepared);
                Forwarded {
                    queue_id: prepared.id.clone(),
                    duplicate: false,
                }
            }
        });
        Ok(forwarded)
    }
}
