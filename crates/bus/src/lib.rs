//! The only code that touches RabbitMQ.
//!
//! - Publishing is `mandatory`, persistent and waits for the broker's confirm: a message the
//!   broker did not take (nack, unroutable, connection lost) is an error for the caller.
//! - Consumers ack only after the handler says the outcome is stored; a message the handler
//!   cannot even read is rejected to the dead-letter exchange.
//! - RPC uses a reply queue per process, correlation ids and a timeout.
//! - Connections are made lazily and remade with backoff after a failure.
//! - W3C trace context travels in the message headers.

pub mod admin;
pub mod agent;
mod consumer;
pub mod fence;
mod rpc;
mod trace;

pub use consumer::{Disposition, Handler, Incoming};
pub use rpc::{RpcClient, RpcError, Serve};
pub use trace::{current_traceparent, span_with_traceparent};

use contract::Topology;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the message broker is unreachable: {0}")]
    Unreachable(String),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key '{0}' on exchange '{1}'")]
    Unroutable(String, String),
    #[error("broker error: {0}")]
    Protocol(#[from] lapin::Error),
}

/// One message of a [`Bus::publish_batch`].
pub struct OutgoingMessage<'a> {
    pub routing_key: &'a str,
    pub message_type: &'a str,
    pub body: &'a [u8],
    /// The W3C trace context the message continues.
    pub traceparent: Option<&'a str>,
}

struct Live {
    connection: Connection,
    publisher: Channel,
}

/// When this process last found the broker unreachable: work that failed around then may have
/// failed only because of it (see [`outage_since`]).
pub(crate) static OUTAGES: domain::outage::OutageClock = domain::outage::OutageClock::new();

/// Whether this process lost the broker at or after `t`.
pub fn outage_since(t: std::time::Instant) -> bool {
    OUTAGES.since(t)
}

/// The broker refused a declaration because the existing entity differs (406).
fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 406)
}

/// The arguments of a queue that hosts can publish into (a caller's reply queue, the
/// gateway's heartbeat queue): bounded, the oldest dropped first, so a hostile agent flooding
/// it cannot fill the broker's memory.
pub(crate) fn bounded_queue_args(max_messages: i64, max_bytes: i64) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(max_messages));
    args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(max_bytes),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    args
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 404)
}

/// An AMQP URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// What a caught panic said (its `&str` or `String` payload), for a log line or a task's error.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A handle on the broker for one installation (one topology prefix). Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

/// What the task, RPC and dead-letter queues are declared as (`HOSTING_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated (Raft), with a delivery limit: the default, for production.
    Quorum,
    /// Durable classic queues, without a delivery limit: for brokers that make and drop
    /// queues by the hundred (the test suite's shared broker).
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }

    fn from_env() -> Self {
        match std::env::var("HOSTING_QUEUE_TYPE").as_deref() {
            Ok("classic") => QueueType::Classic,
            Ok("quorum") | Err(_) => QueueType::Quorum,
            Ok(other) => {
                tracing::warn!(
                    value = other,
                    "HOSTING_QUEUE_TYPE is quorum or classic; using quorum"
                );
                QueueType::Quorum
            }
        }
    }
}

struct BusInner {
    /// The broker's nodes, tried in turn: one URL, or a cluster's nodes.
    urls: Vec<String>,
    queue_type: QueueType,
    /// The node to try first: the one that answered last.
    preferred: std::sync::atomic::AtomicUsize,
    name: String,
    topology: Topology,
    live: Mutex<Option<Arc<Live>>>,
    /// An agent on a host of its own may not publish to the dead-letter exchange (a host must
    /// not be able to fail other hosts' tasks or plant messages for an operator to replay):
    /// its consumers reject poison messages instead, and the broker dead-letters them through
    /// the queue's own dead-letter exchange, which the control plane declared.
    reject_dead_letters: std::sync::atomic::AtomicBool,
}

/// How many times a quorum queue hands out one message before the broker dead-letters it: a
/// message that kills its consumer every time (a poison message) stops there. Outages do not
/// count against it: a consumer holds a message it could not handle yet and tries again
/// itself (see `Disposition::Retry`), so only crashes and lost connections return it.
pub const DELIVERY_LIMIT: i64 = 10;

impl Bus {
    /// Does not connect: the first use does. A gateway must start (and accept tasks into its
    /// outbox) while the broker is down. `url` is one AMQP URL or several separated by
    /// commas (a cluster's nodes): connections go to the first that answers, and move to
    /// another when it goes away.
    pub fn new(url: &str, topology: Topology, connection_name: &str) -> Self {
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            inner: Arc::new(BusInner {
                urls,
                queue_type: QueueType::from_env(),
                preferred: std::sync::atomic::AtomicUsize::new(0),
                name: connection_name.to_owned(),
                topology,
                live: Mutex::new(None),
                reject_dead_letters: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    async fn live(&self) -> Result<Arc<Live>, BusError> {
        let mut guard = self.inner.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.connection.status().connected() && live.publisher.status().connected() {
                return Ok(live.clone());
            }
        }
        *guard = None;
        let connection = self.open_connection().await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let live = Arc::new(Live {
            connection,
            publisher,
        });
        *guard = Some(live.clone());
        Ok(live)
    }

    /// Connects to the node that answered last, or else to the next that answers.
    async fn open_connection(&self) -> Result<Connection, BusError> {
        use std::sync::atomic::Ordering;
        let urls = &self.inner.urls;
        if urls.is_empty() {
            return Err(BusError::Unreachable("no broker URL is configured".into()));
        }
        let first = self.inner.preferred.load(Ordering::Relaxed);
        // With several nodes, a dead one must not hold the others up for long.
        let timeout = if urls.len() > 1 {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(10)
        };
        let mut errors = Vec::new();
        for i in (0..urls.len()).map(|k| (first + k) % urls.len()) {
            let props = ConnectionProperties::default()
                .with_connection_name(self.inner.name.clone().into());
            match tokio::time::timeout(timeout, Connection::connect(&urls[i], props)).await {
                Ok(Ok(c)) => {
                    if i != first {
                        tracing::info!(node = %redact(&urls[i]), "connected to another broker node");
                    }
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(c);
                }
                Ok(Err(e)) => errors.push(format!("{}: {e}", redact(&urls[i]))),
                Err(_) => errors.push(format!(
                    "{}: connection attempt timed out",
                    redact(&urls[i])
                )),
            }
        }
        OUTAGES.noticed();
        // The next attempt starts with the node after the one that failed first.
        self.inner
            .preferred
            .store((first + 1) % urls.len(), Ordering::Relaxed);
        Err(BusError::Unreachable(errors.join("; ")))
    }

    /// Whether the broker answers now (a connection is made if there is none), within 2 s.
    pub async fn reachable(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.live()).await,
            Ok(Ok(_))
        )
    }

    /// A fresh channel on the shared connection, for a consumer.
    pub(crate) async fn channel(&self) -> Result<Channel, BusError> {
        let live = self.live().await?;
        match live.connection.create_channel().await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.forget(&live).await;
                Err(e.into())
            }
        }
    }

    async fn forget(&self, dead: &Arc<Live>) {
        let mut guard = self.inner.live.lock().await;
        if guard.as_ref().is_some_and(|l| Arc::ptr_eq(l, dead)) {
            *guard = None;
        }
    }

    /// Waits until the broker answers, with exponential backoff (capped at 5 s).
    pub async fn wait_until_reachable(&self) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.live().await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "broker not reachable yet; retrying in {:?}", delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Declares the exchanges, the dead-letter queue and, for each service given, its durable
    /// task queue. Declarations are idempotent, so every service declares what it uses.
    pub async fn declare_topology(&self, task_services: &[&str]) -> Result<(), BusError> {
        let t = &self.inner.topology;
        let ch = self.channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            t.tasks_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.rpc_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.replies_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.events_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.dead_letter_exchange().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        let ch = self
            .declare_replicated_queue(ch, &t.dead_letter_queue(), FieldTable::default())
            .await?;
        ch.queue_bind(
            t.dead_letter_queue().into(),
            t.dead_letter_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let mut ch = ch;
        for service in task_services {
            ch = self
                .declare_bound_queue(ch, &t.task_queue(service), &t.tasks_exchange(), service)
                .await?;
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    /// What an agent on a host of its own declares: nothing, as its broker user may not (the
    /// control plane declared the exchanges); it only checks they are there. On a one-host
    /// install, where the agent shares the services' user and may start first, it declares
    /// what is missing as the others do.
    pub async fn declare_agent_topology(&self) -> Result<(), BusError> {
        let t = &self.inner.topology;
        // Only what the agent's user has permissions on (newer brokers want some permission
        // on a resource even for a passive check).
        for exchange in [t.replies_exchange(), t.events_exchange()] {
            let ch = self.channel().await?;
            let checked = ch
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match checked {
                Ok(()) => {
                    let _ = ch.close(200, "checked".into()).await;
                }
                Err(e) if is_not_found(&e) => return self.declare_topology(&[]).await,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The broker user this process connects as (the first URL's), which the broker checks
    /// against a message's `user_id`.
    pub fn user(&self) -> String {
        let first = self.inner.urls.first().map(String::as_str).unwrap_or("");
        url::Url::parse(first)
            .ok()
            .map(|u| {
                percent_encoding::percent_decode_str(u.username())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "guest".into())
    }

    /// Publishes an agent's heartbeat under its own broker user (which the broker checks
    /// against `user_id`). With no control plane listening yet it is unroutable, and simply
    /// not heard.
    pub async fn publish_heartbeat(&self, beat: &contract::Heartbeat) -> Result<(), BusError> {
        let body = serde_json::to_vec(beat)
            .map_err(|e| BusError::Unreachable(format!("could not encode a heartbeat: {e}")))?;
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(contract::HEARTBEAT_MESSAGE_TYPE.into())
            .with_user_id(self.user().into())
            .with_expiration("60000".into());
        let key = contract::heartbeat_routing_key(beat.kind, &beat.server);
        match self
            .publish_with(&self.inner.topology.events_exchange(), &key, &body, props)
            .await
        {
            Err(BusError::Unroutable(..)) => Ok(()),
            other => other,
        }
    }

    /// Makes this process an agent on a host of its own: see `reject_dead_letters`.
    pub fn act_as_agent(&self) {
        self.inner
            .reject_dead_letters
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn rejects_dead_letters(&self) -> bool {
        self.inner
            .reject_dead_letters
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The RPC queue of `<service>.<server>` as it is, or declared and bound when it is not
    /// there yet (a one-host install, whose agents share the services' user). On a host of
    /// its own the control plane declared and bound it at registration, and the agent's user
    /// may neither declare a queue nor bind one: it could otherwise bind its queue to another
    /// host's routing key and receive that host's requests.
    pub async fn find_rpc_queue(
        &self,
        service: &str,
        server: &domain::Name,
    ) -> Result<String, BusError> {
        let queue = self.inner.topology.rpc_queue(service, server);
        let ch = self.channel().await?;
        let found = ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match found {
            Ok(_) => {
                let _ = ch.close(200, "found".into()).await;
                Ok(queue)
            }
            Err(e) if is_not_found(&e) => self.declare_rpc_queue(service, server).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Declares a durable queue with the dead-letter exchange and binds it.
    pub async fn declare_rpc_queue(
        &self,
        service: &str,
        server: &domain::Name,
    ) -> Result<String, BusError> {
        let t = &self.inner.topology;
        let ch = self.channel().await?;
        let queue = t.rpc_queue(service, server);
        let ch = self
            .declare_bound_queue(
                ch,
                &queue,
                &t.rpc_exchange(),
                &Topology::rpc_routing_key(service, server),
            )
            .await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(queue)
    }

    /// Declares a replicated queue with the dead-letter exchange and the delivery limit, and
    /// binds it. Returns the channel to go on with (a refused declaration closes one).
    async fn declare_bound_queue(
        &self,
        ch: Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<Channel, BusError> {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.inner.topology.dead_letter_exchange().into()),
        );
        // Only quorum queues count deliveries.
        if self.inner.queue_type == QueueType::Quorum {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
        }
        let ch = self.declare_replicated_queue(ch, queue, args).await?;
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(ch)
    }

    /// A durable quorum queue (unless `HOSTING_QUEUE_TYPE=classic`): its messages are kept on
    /// a majority of the cluster's nodes, and it goes on with a new leader when one node dies
    /// (on one node, it is simply durable). A queue of the same name and another type (a
    /// classic queue an earlier version made) is replaced while it is idle; one in use is
    /// kept, with a warning (its tasks are re-dispatched anyway once their message is missed).
    async fn declare_replicated_queue(
        &self,
        ch: Channel,
        queue: &str,
        mut args: FieldTable,
    ) -> Result<Channel, BusError> {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(self.inner.queue_type.as_str().into()),
        );
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let refused = match ch.queue_declare(queue.into(), opts, args.clone()).await {
            Ok(_) => return Ok(ch),
            Err(e) if is_precondition_failed(&e) => e,
            Err(e) => return Err(e.into()),
        };
        // The broker closed the channel on the refusal. The queue as it is: replaced only
        // when nothing is in it and nobody consumes it (so no message is in flight either).
        let ch = self.channel().await?;
        let existing = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        if existing.message_count() > 0 || existing.consumer_count() > 0 {
            tracing::warn!(queue, error = %refused, messages = existing.message_count(), consumers = existing.consumer_count(), "the queue exists as a classic queue in use; it stays classic until it is idle and a service restarts");
            return Ok(ch);
        }
        let emptied = ch
            .queue_delete(
                queue.into(),
                lapin::options::QueueDeleteOptions {
                    if_empty: true,
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await;
        let ch = match emptied {
            Ok(_) => {
                tracing::info!(queue, "replacing an idle classic queue with a quorum queue");
                ch
            }
            // Taken meanwhile (another service started at once): declared as it now is.
            Err(_) => self.channel().await?,
        };
        match ch.queue_declare(queue.into(), opts, args).await {
            Ok(_) => Ok(ch),
            Err(e) if is_precondition_failed(&e) => {
                tracing::warn!(queue, error = %e, "the queue stays as it is");
                Ok(self.channel().await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes a persistent, mandatory message and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message_type: &str,
        body: &[u8],
    ) -> Result<(), BusError> {
        self.publish_with(exchange, routing_key, body, self.properties(message_type))
            .await
    }

    pub(crate) fn properties(&self, message_type: &str) -> BasicProperties {
        let mut headers = trace::current_context_headers();
        fence::insert(&mut headers);
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(message_type.into())
            .with_headers(headers)
    }

    pub(crate) async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BusError> {
        let live = self.live().await?;
        let result = async {
            let confirm = live
                .publisher
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    properties,
                )
                .await?;
            match tokio::time::timeout(Duration::from_secs(30), confirm).await {
                Err(_) => Err(BusError::Unreachable(
                    "no publisher confirm within 30 s".into(),
                )),
                Ok(Err(e)) => Err(e.into()),
                Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => Ok(()),
                Ok(Ok(Confirmation::Ack(Some(_)))) => {
                    Err(BusError::Unroutable(routing_key.into(), exchange.into()))
                }
                Ok(Ok(Confirmation::Nack(_))) => Err(BusError::Nacked),
            }
        }
        .await;
        if matches!(
            result,
            Err(BusError::Protocol(_)) | Err(BusError::Unreachable(_))
        ) {
            OUTAGES.noticed();
            self.forget(&live).await;
        } else if matches!(result, Err(BusError::Nacked)) {
            // A queue without a leader (an election after a node died) nacks; a channel that
            // saw that may keep nacking after the queue is back, so the next publish starts
            // on a fresh connection. It counts as a moment without the broker.
            OUTAGES.noticed();
            self.forget(&live).await;
        }
        result
    }

    /// Publishes several persistent, mandatory messages at once and then waits for all their
    /// confirms: a batch costs about one round trip to the broker, not one per message. Each
    /// message carries the trace context given with it. The results are in the batch's order.
    pub async fn publish_batch(
        &self,
        exchange: &str,
        messages: &[OutgoingMessage<'_>],
    ) -> Vec<Result<(), BusError>> {
        let live = match self.live().await {
            Ok(l) => l,
            Err(e) => {
                let why = e.to_string();
                return messages
                    .iter()
                    .map(|_| Err(BusError::Unreachable(why.clone())))
                    .collect();
            }
        };
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let props = {
                let span = span_with_traceparent("dispatch task", m.traceparent);
                let _entered = span.enter();
                self.properties(m.message_type)
            };
            let sent = live
                .publisher
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(m.routing_key),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    m.body,
                    props,
                )
                .await;
            pending.push(sent);
        }
        // One deadline for the whole batch's confirms.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut results = Vec::with_capacity(messages.len());
        for (sent, m) in pending.into_iter().zip(messages) {
            let result = match sent {
                Err(e) => Err(BusError::from(e)),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => Err(BusError::Unreachable(
                        "no publisher confirm within 30 s".into(),
                    )),
                    Ok(Err(e)) => Err(e.into()),
                    Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => Ok(()),
                    Ok(Ok(Confirmation::Ack(Some(_)))) => {
                        Err(BusError::Unroutable(m.routing_key.into(), exchange.into()))
                    }
                    Ok(Ok(Confirmation::Nack(_))) => Err(BusError::Nacked),
                },
            };
            results.push(result);
        }
        if results.iter().any(|r| {
            matches!(
                r,
                Err(BusError::Protocol(_)) | Err(BusError::Unreachable(_))
            )
        }) {
            OUTAGES.noticed();
            self.forget(&live).await;
        } else if results.iter().any(|r| matches!(r, Err(BusError::Nacked))) {
            // As in `publish_with`: a fresh connection after a nack.
            OUTAGES.noticed();
            self.forget(&live).await;
        }
        results
    }

    /// Publishes a task event. Events are for watchers; a failure is logged, not raised,
    /// because the state database (and the task log in it) is the record.
    pub async fn publish_event(&self, event: &contract::TaskEvent) {
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(e) => return tracing::warn!(error = %e, "could not encode an event"),
        };
        let exchange = self.inner.topology.events_exchange();
        let props = self.properties(contract::EVENT_MESSAGE_TYPE);
        // Events are not mandatory: nobody may be listening, which is fine.
        if let Ok(live) = self.live().await {
            if let Err(e) = live
                .publisher
                .basic_publish(
                    exchange.as_str().into(),
                    event.routing_key().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await
            {
                tracing::debug!(error = %e, "event not published");
            }
        }
    }

    /// Deletes this topology's exchanges and the given queues (tests and uninstall).
    pub async fn delete_queues_and_exchanges(&self, queues: &[String]) -> Result<(), BusError> {
        let t = &self.inner.topology;
        let ch = self.channel().await?;
        for q in queues {
            ch.queue_delete(q.as_str().into(), Default::default())
                .await?;
        }
        for ex in [
            t.tasks_exchange(),
            t.rpc_exchange(),
            t.replies_exchange(),
            t.events_exchange(),
            t.dead_letter_exchange(),
        ] {
            ch.exchange_delete(ex.as_str().into(), Default::default())
                .await?;
        }
        let _ = ch.close(200, "cleaned".into()).await;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(live) = self.inner.live.lock().await.take() {
            let _ = live.connection.close(200, "shutdown".into()).await;
        }
    }
}
