use crate::{trace, Bus, BusError};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A delivered message, as a handler sees it.
#[derive(Debug)]
pub struct Incoming {
    pub data: Vec<u8>,
    pub message_type: Option<String>,
    pub redelivered: bool,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// The claim of the task this message was sent for, if it was sent under one.
    pub fence: Option<crate::fence::Fence>,
    /// Its headers with text or boolean values, as text (`x-hosting-reason`, ...).
    pub headers: std::collections::BTreeMap<String, String>,
}

fn text_headers(table: Option<&FieldTable>) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(t) = table {
        for (k, v) in t.inner() {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::Boolean(b) => b.to_string(),
                _ => continue,
            };
            out.insert(k.as_str().to_owned(), text);
        }
    }
    out
}

/// What to do with a message once the handler is done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The outcome is stored: remove the message.
    Ack,
    /// A passing failure (the state database unreachable): the consumer keeps the message
    /// and hands it to the handler again after a pause (1 s, growing to 5 s), for up to
    /// `RETRY_HOLD`; then it goes back to the queue. Held rather than returned, an outage
    /// does not count against the queue's delivery limit.
    Retry,
    /// The message cannot be processed, ever (unreadable, unknown type): dead-letter it.
    Reject,
    /// As `Reject`, with the reason, which the dead-letter queue keeps for an operator; and
    /// whether the task the message names (if it names a real one) fails with it: yes when
    /// this was that task's own message and it cannot be processed, no when the message only
    /// claims to be about it (a wrong type, a wrong queue).
    DeadLetter { reason: String, fail_task: bool },
}

impl Disposition {
    pub fn dead_letter(reason: impl Into<String>, fail_task: bool) -> Self {
        Disposition::DeadLetter {
            reason: reason.into(),
            fail_task,
        }
    }
}

/// How long a consumer keeps a message that its handler asks to retry, before it goes back to
/// the queue: inside RabbitMQ's consumer timeout (30 minutes), past which the broker would
/// close the channel. With the queues' delivery limit of 10, an outage of the state database
/// would have to last about four hours before a task's message is dead-lettered.
const RETRY_HOLD: Duration = Duration::from_secs(25 * 60);

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: Incoming) -> impl Future<Output = Disposition> + Send;
}

impl Bus {
    /// Consumes `queue` forever: up to `prefetch` messages are handled at once, each acked
    /// only after its handler returns. When the connection drops, it reconnects with backoff
    /// and the broker redelivers what was not acked.
    pub async fn consume<H: Handler>(&self, queue: &str, prefetch: u16, handler: Arc<H>) {
        let mut delay = Duration::from_millis(200);
        loop {
            let consumed_since = std::time::Instant::now();
            let result = self.consume_once(queue, prefetch, handler.clone()).await;
            crate::OUTAGES.noticed();
            if consumed_since.elapsed() > Duration::from_secs(10) {
                // It ran a while: this is a new outage, retried from the shortest delay.
                delay = Duration::from_millis(200);
            }
            match result {
                Ok(()) => tracing::warn!(queue, "consumer stream ended; reconnecting"),
                Err(e) => {
                    tracing::warn!(queue, error = %e, "consumer failed; reconnecting in {:?}", delay)
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn consume_once<H: Handler>(
        &self,
        queue: &str,
        prefetch: u16,
        handler: Arc<H>,
    ) -> Result<(), BusError> {
        let channel = self.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("{}-{}", queue, uuid::Uuid::new_v4().simple());
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue, prefetch, "consuming");
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            let handler = handler.clone();
            let (bus, queue_name) = (self.clone(), queue.to_owned());
            let parent = trace::context_from_headers(delivery.properties.headers().as_ref());
            let span = tracing::info_span!(
                "message",
                queue,
                message_type = tracing::field::Empty,
                hosting.task.id = tracing::field::Empty,
            );
            trace::set_parent(&span, parent);
            tokio::spawn(
                async move {
                    let props = &delivery.properties;
                    let held = std::time::Instant::now();
                    let mut pause = Duration::from_secs(1);
                    let outcome = loop {
                    let incoming = Incoming {
                        data: delivery.data.clone(),
                        message_type: props.kind().as_ref().map(|k| k.as_str().to_owned()),
                        redelivered: delivery.redelivered,
                        correlation_id: props
                            .correlation_id()
                            .as_ref()
                            .map(|c| c.as_str().to_owned()),
                        reply_to: props.reply_to().as_ref().map(|r| r.as_str().to_owned()),
                        fence: crate::fence::from_headers(props.headers().as_ref()),
                        headers: text_headers(props.headers().as_ref()),
                    };
                    if let Some(kind) = &incoming.message_type {
                        tracing::Span::current().record("message_type", kind.as_str());
                    }
                    if let Some(f) = incoming.fence {
                        tracing::Span::current().record("hosting.task.id", f.task.0);
                    }
                    // A handler that panics (a bug) ends this message, never the consumer:
                    // the message goes to the dead-letter queue with the reason in the log.
                    let outcome = match std::panic::AssertUnwindSafe(handler.handle(incoming))
                        .catch_unwind()
                        .await
                    {
                        Ok(d) => d,
                        Err(panic) => {
                            let why = crate::panic_message(&panic);
                            tracing::error!(panic = %why, "a message handler panicked; the message is dead-lettered");
                            Disposition::dead_letter(format!("its handler failed on an internal error: {why}"), true)
                        }
                    };
                    if outcome != Disposition::Retry || held.elapsed() + pause > RETRY_HOLD {
                        break outcome;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    };
                    let result = match outcome.clone() {
                        Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
                        Disposition::Retry => {
                            delivery
                                .nack(BasicNackOptions {
                                    requeue: true,
                                    ..Default::default()
                                })
                                .await
                        }
                        Disposition::Reject => {
                            delivery.reject(BasicRejectOptions { requeue: false }).await
                        }
                        // Published to the dead-letter exchange as it came, with why and from
                        // where, then taken off this queue; if that publish fails, the broker's
                        // own dead-lettering (without the reason) takes it.
                        Disposition::DeadLetter { reason, .. } if bus.rejects_dead_letters() => {
                            tracing::warn!(queue = %queue_name, %reason, "rejecting a message (the broker dead-letters it)");
                            telemetry::metrics::message_dead_lettered(&queue_name);
                            delivery.reject(BasicRejectOptions { requeue: false }).await
                        }
                        Disposition::DeadLetter { reason, fail_task } => {
                            tracing::warn!(queue = %queue_name, %reason, "dead-lettering a message");
                            telemetry::metrics::message_dead_lettered(&queue_name);
                            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
                            headers.insert("x-hosting-reason".into(), AMQPValue::LongString(reason.as_str().into()));
                            headers.insert("x-hosting-fail-task".into(), AMQPValue::Boolean(fail_task));
                            headers.insert("x-hosting-queue".into(), AMQPValue::LongString(queue_name.as_str().into()));
                            headers.insert(
                                "x-hosting-routing-key".into(),
                                AMQPValue::LongString(delivery.routing_key.as_str().into()),
                            );
                            headers.insert(
                                "x-hosting-exchange".into(),
                                AMQPValue::LongString(delivery.exchange.as_str().into()),
                            );
                            let props = delivery.properties.clone().with_headers(headers);
                            let dlx = bus.topology().dead_letter_exchange();
                            match bus.publish_with(&dlx, "", &delivery.data, props).await {
                                Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                                Err(_) => delivery.reject(BasicRejectOptions { requeue: false }).await,
                            }
                        }
                    };
                    if let Err(e) = result {
                        // The channel is gone: the broker redelivers the message to the next
                        // consumer, and handlers are idempotent.
                        tracing::warn!(error = %e, ?outcome, "could not settle a message");
                    }
                }
                .instrument(span),
            );
        }
        Ok(())
    }
}
