use crate::consumer::{Disposition, Handler, Incoming};
use crate::{Bus, BusError};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("no answer from '{0}' within {1:?}")]
    Timeout(String, Duration),
    #[error("'{0}' answered: {1}")]
    Remote(String, String),
    #[error("could not read the answer of '{0}': {1}")]
    Decode(String, String),
    #[error("not sent to '{0}': this worker's lease on task {1} has expired (another worker may run it now)")]
    LeaseExpired(String, domain::TaskId),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// Calls services on one host (`<service>.<server>`) and waits for their answer on this
/// process's own reply queue.
#[derive(Clone)]
pub struct RpcClient {
    bus: Bus,
    pending: Pending,
    reply_queue: Arc<Mutex<Option<(String, lapin::Channel)>>>,
}

impl RpcClient {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            pending: Arc::default(),
            reply_queue: Arc::default(),
        }
    }

    /// The reply queue is exclusive to this process and disappears with its connection; it is
    /// made again on the first call after a reconnect.
    async fn reply_queue(&self) -> Result<String, BusError> {
        let mut guard = self.reply_queue.lock().await;
        if let Some((name, ch)) = guard.as_ref() {
            if ch.status().connected() {
                return Ok(name.clone());
            }
        }
        let ch = self.bus.channel().await?;
        let name = format!(
            "{}.reply.{}",
            self.bus.topology().prefix,
            uuid::Uuid::new_v4().simple()
        );
        let opts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        ch.queue_declare(name.as_str().into(), opts, FieldTable::default())
            .await?;
        // Replies are consumed without acks: losing one only means the caller times out, and
        // every RPC is idempotent, so the caller may simply ask again.
        let mut consumer = ch
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending = self.pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                if let Some(id) = delivery.properties.correlation_id() {
                    if let Some(tx) = pending.lock().await.remove(id.as_str()) {
                        let _ = tx.send(delivery.data);
                    }
                }
            }
        });
        *guard = Some((name.clone(), ch));
        Ok(name)
    }

    /// Sends `request` to `<service>.<server>` and decodes the `RpcReply<T>` it answers.
    pub async fn call<Req: Serialize, T: DeserializeOwned>(
        &self,
        service: &str,
        server: &domain::Name,
        message_type: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<T, RpcError> {
        let target = contract::Topology::rpc_routing_key(service, server);
        if !crate::fence::still_held() {
            let task = crate::fence::current()
                .map(|f| f.task)
                .unwrap_or(domain::TaskId(0));
            return Err(RpcError::LeaseExpired(target, task));
        }
        let reply_to = self.reply_queue().await?;
        let correlation = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(correlation.clone(), tx);
        let body = serde_json::to_vec(request)
            .map_err(|e| RpcError::Decode(target.clone(), e.to_string()))?;
        let props = self
            .bus
            .properties(message_type)
            .with_correlation_id(correlation.as_str().into())
            .with_reply_to(reply_to.as_str().into())
            .with_expiration(timeout.as_millis().to_string().into());
        let exchange = self.bus.topology().rpc_exchange();
        if let Err(e) = self
            .bus
            .publish_with(&exchange, &target, &body, props)
            .await
        {
            self.pending.lock().await.remove(&correlation);
            return Err(e.into());
        }
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(bytes)) => bytes,
            _ => {
                self.pending.lock().await.remove(&correlation);
                return Err(RpcError::Timeout(target, timeout));
            }
        };
        match serde_json::from_slice::<contract::RpcReply<T>>(&answer) {
            Ok(contract::RpcReply::Ok { body }) => Ok(body),
            Ok(contract::RpcReply::Error { message }) => Err(RpcError::Remote(target, message)),
            Err(e) => Err(RpcError::Decode(target, e.to_string())),
        }
    }
}

/// The callee's side: decode a request, act, answer. `None` means the request could not be
/// read at all and goes to the dead-letter queue.
pub trait RpcHandler: Send + Sync + 'static {
    fn answer(&self, message: &Incoming) -> impl Future<Output = Option<Vec<u8>>> + Send;
}

struct RpcServer<H> {
    bus: Bus,
    handler: H,
    seen: crate::fence::Seen,
}

impl<H: RpcHandler> Handler for RpcServer<H> {
    async fn handle(&self, message: Incoming) -> Disposition {
        // A request made under an older claim than one seen for its task comes from a worker
        // that lost its lease: refused, with nothing done.
        let answer = match message.fence {
            Some(f) => match self.seen.admit(f) {
                Ok(()) => crate::fence::scope(f, self.handler.answer(&message)).await,
                Err(newest) => serde_json::to_vec(&contract::RpcReply::<()>::Error {
                    message: format!(
                        "refused: this request for task {} comes under lease epoch {}, and epoch {newest} has been seen since (another worker runs the task now)",
                        f.task, f.epoch
                    ),
                })
                .ok(),
            },
            None => self.handler.answer(&message).await,
        };
        let Some(answer) = answer else {
            return Disposition::dead_letter("the request does not parse", false);
        };
        let (Some(reply_to), Some(correlation)) = (&message.reply_to, &message.correlation_id)
        else {
            return Disposition::Ack; // nobody waits for an answer
        };
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(correlation.as_str().into());
        match self.bus.publish_with("", reply_to, &answer, props).await {
            // The caller went away (its reply queue is gone): the work is done and idempotent,
            // so there is nothing to retry.
            Ok(()) | Err(BusError::Unroutable(..)) => Disposition::Ack,
            Err(e) => {
                tracing::warn!(error = %e, "could not answer an RPC; it will be redelivered");
                Disposition::Retry
            }
        }
    }
}

impl Bus {
    /// Serves RPCs for `<service>.<server>` forever.
    pub async fn serve_rpc<H: RpcHandler>(
        &self,
        service: &str,
        server: &domain::Name,
        prefetch: u16,
        handler: H,
    ) {
        let queue = loop {
            match self.declare_rpc_queue(service, server).await {
                Ok(q) => break q,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot declare the RPC queue yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let server = Arc::new(RpcServer {
            bus: self.clone(),
            handler,
            seen: Default::default(),
        });
        self.consume(&queue, prefetch, server).await
    }
}
