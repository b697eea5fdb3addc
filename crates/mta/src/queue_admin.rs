//! The Queue gRPC service: list (with filters), show, retry, delete, bounce and stats; admin
//! token required.

use tern_rpc::v1::queue_server::Queue;
use tern_rpc::v1::{
    DomainCount, QueueActionResponse, QueueListRequest, QueueListResponse, QueueMessage,
    QueueMessageRequest, QueueRecipient, QueueStatsRequest, QueueStatsResponse, StateCount,
};
use tern_runtime::grpc::check_bearer;
use tern_store::{QueueFilter, QueuedMessage, RecipientState, Store};
use tonic::{Request, Response, Status};

use crate::runner::Bouncer;

pub struct QueueService {
    store: Store,
    token: String,
    bouncer: Bouncer,
}

impl QueueService {
    pub fn new(store: Store, token: String, bouncer: Bouncer) -> Self {
        Self {
            store,
            token,
            bouncer,
        }
    }
}

fn to_proto(m: QueuedMessage) -> QueueMessage {
    QueueMessage {
        id: m.id,
        sender: m.sender,
        size: m.size,
        created_at_ms: m.created_at_ms,
        recipients: m
            .recipients
            .into_iter()
            .map(|r| QueueRecipient {
                address: r.address,
                state: r.state.as_str().to_string(),
                attempts: r.attempts,
                next_attempt_at_ms: r.next_attempt_at_ms,
                last_reply: r.last_reply,
            })
            .collect(),
    }
}

fn status(e: tern_store::Error) -> Status {
    match e {
        tern_store::Error::NotFound(m) => Status::not_found(m),
        tern_store::Error::Invalid(m) => Status::invalid_argument(m),
        other => {
            tracing::error!(error = %other, "store error");
            Status::unavailable("store unavailable")
        }
    }
}

fn parse_state(s: &str) -> Result<Option<RecipientState>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<RecipientState>().map(Some).map_err(|_| {
        Status::invalid_argument(format!("unknown state {s:?} (queued, delivered, failed)"))
    })
}

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

#[tonic::async_trait]
impl Queue for QueueService {
    async fn list(
        &self,
        req: Request<QueueListRequest>,
    ) -> Result<Response<QueueListResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let r = req.get_ref();
        let filter = QueueFilter {
            state: parse_state(&r.state)?,
            domain: non_empty(&r.domain),
            sender: non_empty(&r.sender),
            older_than_ms: (r.older_than_secs > 0)
                .then(|| (r.older_than_secs as i64).saturating_mul(1000)),
            limit: if r.limit == 0 {
                100
            } else {
                r.limit.min(10_000)
            },
        };
        let list = self.store.queue_filter(&filter).await.map_err(status)?;
        Ok(Response::new(QueueListResponse {
            messages: list.into_iter().map(to_proto).collect(),
        }))
    }

    async fn show(
        &self,
        req: Request<QueueMessageRequest>,
    ) -> Result<Response<QueueMessage>, Status> {
        check_bearer(&req, &self.token)?;
        let id = &req.get_ref().id;
        match self.store.queue_show(id).await.map_err(status)? {
            Some(m) => Ok(Response::new(to_proto(m))),
            None => Err(Status::not_found(format!("no queued message {id}"))),
        }
    }

    async fn retry(
        &self,
        req: Request<QueueMessageRequest>,
    ) -> Result<Response<QueueActionResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let n = self
            .store
            .queue_retry(&req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(QueueActionResponse { affected: n as u32 }))
    }

    async fn delete(
        &self,
        req: Request<QueueMessageRequest>,
    ) -> Result<Response<QueueActionResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let n = self
            .store
            .queue_delete(&req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(QueueActionResponse { affected: n as u32 }))
    }

    async fn bounce(
        &self,
        req: Request<QueueMessageRequest>,
    ) -> Result<Response<QueueActionResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let id = &req.get_ref().id;
        let n = self.bouncer.bounce_now(id).await.map_err(status)?;
        tracing::info!(queue.id = %id, recipients = n, "bounced by the administrator");
        Ok(Response::new(QueueActionResponse { affected: n as u32 }))
    }

    async fn stats(
        &self,
        req: Request<QueueStatsRequest>,
    ) -> Result<Response<QueueStatsResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let s = self.store.queue_stats().await.map_err(status)?;
        Ok(Response::new(QueueStatsResponse {
            by_state: s
                .by_state
                .into_iter()
                .map(|(state, n)| StateCount {
                    state: state.as_str().to_string(),
                    recipients: n,
                })
                .collect(),
            by_domain: s
                .by_domain
                .into_iter()
                .map(|(domain, queued)| DomainCount { domain, queued })
                .collect(),
            oldest_queued_ms: s.oldest_queued_ms.unwrap_or(0),
        }))
    }
}
