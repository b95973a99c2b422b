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

/// Calls waiting for their answer, by correlation id, with the reply queue (its generation)
/// the answer comes to: when that queue's consumer ends (the connection was lost), its calls
/// learn it at once and ask again on a new one.
type Pending = Arc<Mutex<HashMap<String, (u64, oneshot::Sender<Vec<u8>>)>>>;

/// Calls services on one host (`<service>.<server>`) and waits for their answer on this
/// process's own reply queue.
#[derive(Clone)]
pub struct RpcClient {
    bus: Bus,
    pending: Pending,
    reply_queue: Arc<Mutex<Option<ReplyQueue>>>,
}

struct ReplyQueue {
    name: String,
    channel: lapin::Channel,
    generation: u64,
}

/// How one attempt at a call ended, when it did not answer.
enum Attempt {
    /// The connection to the broker was lost before the answer came: ask again.
    Lost(RpcError),
    Failed(RpcError),
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
    async fn reply_queue(&self) -> Result<(String, u64), BusError> {
        let mut guard = self.reply_queue.lock().await;
        if let Some(q) = guard.as_ref() {
            if q.channel.status().connected() {
                return Ok((q.name.clone(), q.generation));
            }
        }
        let generation = guard.as_ref().map_or(0, |q| q.generation + 1);
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
        // Answers are small and taken at once; more than this waiting is a flood.
        let args = crate::bounded_queue_args(10_000, 64 << 20);
        ch.queue_declare(name.as_str().into(), opts, args).await?;
        ch.queue_bind(
            name.as_str().into(),
            self.bus.topology().replies_exchange().as_str().into(),
            name.as_str().into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        // Replies are consumed without acks: losing one only means the caller asks again
        // (every RPC is idempotent).
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
                    if let Some((_, tx)) = pending.lock().await.remove(id.as_str()) {
                        let _ = tx.send(delivery.data);
                    }
                }
            }
            // The queue is gone with its connection: the calls waiting on it ask again.
            pending.lock().await.retain(|_, (g, _)| *g != generation);
        });
        *guard = Some(ReplyQueue {
            name: name.clone(),
            channel: ch,
            generation,
        });
        Ok((name, generation))
    }

    /// Asks `R`'s service on `server` and waits for its reply (see [`RpcClient::call`]).
    pub async fn ask<R: contract::Rpc>(
        &self,
        server: &domain::Name,
        request: &R::Request,
        timeout: Duration,
    ) -> Result<R::Reply, RpcError> {
        let asked = std::time::Instant::now();
        let reply = self
            .call(R::SERVICE, server, R::MESSAGE_TYPE, request, timeout)
            .await;
        let outcome = match &reply {
            Ok(_) => "ok",
            Err(RpcError::Remote(..)) => "error",
            Err(_) => "unanswered",
        };
        telemetry::metrics::rpc_finished(R::SERVICE, R::MESSAGE_TYPE, outcome, asked.elapsed());
        reply
    }

    /// Sends `request` to `<service>.<server>` and decodes the `RpcReply<T>` it answers. If
    /// the connection to the broker is lost before the answer comes (a broker restart), the
    /// request is sent again once the broker is back, until `timeout` is spent: every RPC is
    /// idempotent, so a request handled twice does no harm.
    async fn call<Req: Serialize, T: DeserializeOwned>(
        &self,
        service: &str,
        server: &domain::Name,
        message_type: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<T, RpcError> {
        let target = contract::Topology::rpc_routing_key(service, server);
        let body = serde_json::to_vec(request)
            .map_err(|e| RpcError::Decode(target.clone(), e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(200);
        loop {
            match self
                .attempt(&target, message_type, &body, deadline, timeout)
                .await
            {
                Ok(answer) => {
                    return match serde_json::from_slice::<contract::RpcReply<T>>(&answer) {
                        Ok(contract::RpcReply::Ok { body }) => Ok(body),
                        Ok(contract::RpcReply::Error { message }) => {
                            Err(RpcError::Remote(target, message))
                        }
                        Err(e) => Err(RpcError::Decode(target, e.to_string())),
                    }
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Lost(e)) => {
                    if tokio::time::Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(%target, error = %e, "the broker connection was lost during a call; asking again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn attempt(
        &self,
        target: &str,
        message_type: &str,
        body: &[u8],
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, Attempt> {
        if !crate::fence::still_held() {
            let task = crate::fence::current()
                .map(|f| f.task)
                .unwrap_or(domain::TaskId(0));
            return Err(Attempt::Failed(RpcError::LeaseExpired(target.into(), task)));
        }
        let (reply_to, generation) = self
            .reply_queue()
            .await
            .map_err(|e| Attempt::Lost(e.into()))?;
        let correlation = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .await
            .insert(correlation.clone(), (generation, tx));
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let props = self
            .bus
            .properties(message_type)
            .with_correlation_id(correlation.as_str().into())
            .with_reply_to(reply_to.as_str().into())
            // Not handled after the caller stopped waiting.
            .with_expiration(left.as_millis().max(1).to_string().into());
        let exchange = self.bus.topology().rpc_exchange();
        if let Err(e) = self.bus.publish_with(&exchange, target, body, props).await {
            self.pending.lock().await.remove(&correlation);
            return Err(match e {
                // A nack: the queue has no leader for a moment (a node died, an election
                // runs); asked again like a lost connection.
                BusError::Unreachable(_) | BusError::Protocol(_) | BusError::Nacked => {
                    Attempt::Lost(e.into())
                }
                other => Attempt::Failed(other.into()),
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(bytes)) => Ok(bytes),
            // The reply queue's consumer ended: the connection was lost.
            Ok(Err(_)) => Err(Attempt::Lost(RpcError::Bus(BusError::Unreachable(
                "the connection closed before the answer came".into(),
            )))),
            Err(_) => {
                self.pending.lock().await.remove(&correlation);
                Err(Attempt::Failed(RpcError::Timeout(target.into(), timeout)))
            }
        }
    }
}

/// The callee's side of `R`: act on a request and answer, or say why not (the caller sees the
/// message as the error). Decoding, the version check, the lease check and the reply are
/// [`Bus::serve`]'s, written once for every service.
pub trait Serve<R: contract::Rpc>: Send + Sync + 'static {
    fn handle(&self, request: R::Request) -> impl Future<Output = Result<R::Reply, String>> + Send;
}

struct RpcServer<R, H> {
    bus: Bus,
    handler: H,
    seen: crate::fence::Seen,
    rpc: std::marker::PhantomData<fn() -> R>,
}

impl<R: contract::Rpc, H: Serve<R>> RpcServer<R, H> {
    /// The request, if it is one this service reads: of its message type (and version), and
    /// parsing. Checked before anything else, the lease epoch among it: a message that is
    /// not a request must not move the fence.
    fn read(message: &Incoming) -> Result<R::Request, String> {
        match message.message_type.as_deref() {
            Some(t) if t == R::MESSAGE_TYPE => {}
            other => {
                return Err(format!(
                    "message type {:?} is not one this {} reads ({}): a sender of another version, or a message sent to the wrong queue",
                    other.unwrap_or(""),
                    R::SERVICE,
                    R::MESSAGE_TYPE
                ))
            }
        }
        serde_json::from_slice(&message.data)
            .map_err(|e| format!("the {} request does not parse: {e}", R::MESSAGE_TYPE))
    }

    async fn answer(&self, request: R::Request) -> Vec<u8> {
        let reply = match self.handler.handle(request).await {
            Ok(body) => contract::RpcReply::Ok { body },
            Err(message) => {
                tracing::error!(error = %message, service = R::SERVICE, "request failed");
                contract::RpcReply::Error { message }
            }
        };
        encode(&reply)
    }

    /// Sends `answer` to the caller, if one waits; whether the message is done with.
    async fn reply(&self, message: &Incoming, answer: &[u8]) -> Disposition {
        let (Some(reply_to), Some(correlation)) = (&message.reply_to, &message.correlation_id)
        else {
            return Disposition::Ack; // nobody waits for an answer
        };
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(correlation.as_str().into());
        let replies = self.bus.topology().replies_exchange();
        match self
            .bus
            .publish_with(&replies, reply_to, answer, props)
            .await
        {
            // The caller went away (its reply queue is gone): the work is done and idempotent,
            // so there is nothing to retry.
            Ok(()) | Err(BusError::Unroutable(..)) => Disposition::Ack,
            // Not answered (the broker went away): the caller asks again, as it does after a
            // lost connection. Handling this copy again later could undo a newer request
            // of the same task that was answered meanwhile, so it is not kept.
            Err(e) => {
                tracing::warn!(error = %e, "could not answer an RPC; the caller asks again");
                Disposition::Ack
            }
        }
    }
}

fn encode<T: serde::Serialize>(reply: &contract::RpcReply<T>) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_else(|e| {
        format!(r#"{{"outcome":"error","message":"the reply does not encode: {e}"}}"#).into_bytes()
    })
}

impl<R: contract::Rpc, H: Serve<R>> Handler for RpcServer<R, H> {
    async fn handle(&self, message: Incoming) -> Disposition {
        let request = match Self::read(&message) {
            Ok(r) => r,
            Err(reason) => {
                // The caller learns at once why, rather than at its timeout; the message is
                // kept as a dead letter.
                tracing::error!(%reason, service = R::SERVICE, "unreadable request dead-lettered");
                let refusal = encode(&contract::RpcReply::<()>::Error {
                    message: reason.clone(),
                });
                self.reply(&message, &refusal).await;
                return Disposition::dead_letter(reason, false);
            }
        };
        // A request made under an older claim than one seen for its task comes from a worker
        // that lost its lease: refused, with nothing done.
        let answer = match message.fence {
            Some(f) => match self.seen.admit(f) {
                Ok(()) => crate::fence::scope(f, self.answer(request)).await,
                Err(newest) => encode(&contract::RpcReply::<()>::Error {
                    message: format!(
                        "refused: this request for task {} comes under lease epoch {}, and epoch {newest} has been seen since (another worker runs the task now)",
                        f.task, f.epoch
                    ),
                }),
            },
            None => self.answer(request).await,
        };
        self.reply(&message, &answer).await
    }
}

impl Bus {
    /// Serves `R` for `server` forever.
    pub async fn serve<R: contract::Rpc, H: Serve<R>>(
        &self,
        server: &domain::Name,
        prefetch: u16,
        handler: H,
    ) {
        let queue = loop {
            match self.find_rpc_queue(R::SERVICE, server).await {
                Ok(q) => break q,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot find or declare the RPC queue yet (a host of its own needs its server registered)");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let server = Arc::new(RpcServer::<R, H> {
            bus: self.clone(),
            handler,
            seen: Default::default(),
            rpc: std::marker::PhantomData,
        });
        self.consume(&queue, prefetch, server).await
    }
}
