//! The Queue gRPC service: list, show, retry and delete queued messages (admin token required).

use tern_rpc::v1::queue_server::Queue;
use tern_rpc::v1::{
    QueueActionResponse, QueueListRequest, QueueListResponse, QueueMessage, QueueMessageRequest,
    QueueRecipient,
};
use tern_runtime::grpc::check_bearer;
use tern_store::{QueuedMessage, RecipientState, Store};
use tonic::{Request, Response, Status};

pub struct QueueService {
    store: Store,
    token: String,
}

impl QueueService {
    pub fn new(store: Store, token: String) -> Self {
        Self { store, token }
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

#[tonic::async_trait]
impl Queue for QueueService {
    async fn list(
        &self,
        req: Request<QueueListRequest>,
    ) -> Result<Response<QueueListResponse>, Status> {
        check_bearer(&req, &self.token)?;
        let r = req.get_ref();
        let state = if r.state.is_empty() {
            None
        } else {
            Some(r.state.parse::<RecipientState>().map_err(|_| {
                Status::invalid_argument(format!(
                    "unknown state {:?} (queued, delivered, failed)",
                    r.state
                ))
            })?)
        };
        let limit = if r.limit == 0 {
            100
        } else {
            r.limit.min(10_000)
        };
        let list = self.store.queue_list(state, limit).await.map_err(status)?;
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
}
