//! The only code that touches RabbitMQ.
//!
//! - Publishing is `mandatory`, persistent and waits for the broker's confirm: a message the
//!   broker did not take (nack, unroutable, connection lost) is an error for the caller.
//! - Consumers ack only after the handler says the outcome is stored; a message the handler
//!   cannot even read is rejected to the dead-letter exchange.
//! - RPC uses a reply queue per process, correlation ids and a timeout.
//! - Connections are made lazily and remade with backoff after a failure.
//! - W3C trace context travels in the message headers.

mod consumer;
pub mod fence;
mod rpc;
mod trace;

pub use consumer::{Disposition, Handler, Incoming};
pub use rpc::{RpcClient, RpcError, RpcHandler};
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

struct Live {
    connection: Connection,
    publisher: Channel,
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

struct BusInner {
    url: String,
    name: String,
    topology: Topology,
    live: Mutex<Option<Arc<Live>>>,
}

impl Bus {
    /// Does not connect: the first use does. A gateway must start (and accept tasks into its
    /// outbox) while the broker is down.
    pub fn new(url: &str, topology: Topology, connection_name: &str) -> Self {
        Self {
            inner: Arc::new(BusInner {
                url: url.to_owned(),
                name: connection_name.to_owned(),
                topology,
                live: Mutex::new(None),
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

    async fn open_connection(&self) -> Result<Connection, BusError> {
        let props =
            ConnectionProperties::default().with_connection_name(self.inner.name.clone().into());
        match tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&self.inner.url, props),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(BusError::Unreachable(e.to_string())),
            Err(_) => Err(BusError::Unreachable("connection attempt timed out".into())),
        }
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
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(t.dead_letter_queue().into(), queue, FieldTable::default())
            .await?;
        ch.queue_bind(
            t.dead_letter_queue().into(),
            t.dead_letter_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        for service in task_services {
            self.declare_bound_queue(&ch, &t.task_queue(service), &t.tasks_exchange(), service)
                .await?;
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
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
        self.declare_bound_queue(
            &ch,
            &queue,
            &t.rpc_exchange(),
            &Topology::rpc_routing_key(service, server),
        )
        .await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(queue)
    }

    async fn declare_bound_queue(
        &self,
        ch: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), BusError> {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.inner.topology.dead_letter_exchange().into()),
        );
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(queue.into(), opts, args).await?;
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(())
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
            self.forget(&live).await;
        }
        result
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
