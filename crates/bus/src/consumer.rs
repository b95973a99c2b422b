use crate::{trace, Bus, BusError};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
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
}

/// What to do with a message once the handler is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The outcome is stored: remove the message.
    Ack,
    /// A passing failure (database or broker unreachable): put it back, after a pause so a
    /// broken dependency does not turn into a hot loop.
    Retry,
    /// The message cannot be processed, ever (unreadable, unknown type): dead-letter it.
    Reject,
}

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
            match self.consume_once(queue, prefetch, handler.clone()).await {
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
            let parent = trace::context_from_headers(delivery.properties.headers().as_ref());
            let span = tracing::info_span!("message", queue, message_type = tracing::field::Empty);
            trace::set_parent(&span, parent);
            tokio::spawn(
                async move {
                    let props = &delivery.properties;
                    let incoming = Incoming {
                        data: delivery.data.clone(),
                        message_type: props.kind().as_ref().map(|k| k.as_str().to_owned()),
                        redelivered: delivery.redelivered,
                        correlation_id: props
                            .correlation_id()
                            .as_ref()
                            .map(|c| c.as_str().to_owned()),
                        reply_to: props.reply_to().as_ref().map(|r| r.as_str().to_owned()),
                    };
                    if let Some(kind) = &incoming.message_type {
                        tracing::Span::current().record("message_type", kind.as_str());
                    }
                    // A handler that panics (a bug) ends this message, never the consumer:
                    // the message goes to the dead-letter queue with the reason in the log.
                    let outcome = match std::panic::AssertUnwindSafe(handler.handle(incoming))
                        .catch_unwind()
                        .await
                    {
                        Ok(d) => d,
                        Err(panic) => {
                            tracing::error!(
                                panic = %crate::panic_message(&panic),
                                "a message handler panicked; the message is dead-lettered"
                            );
                            Disposition::Reject
                        }
                    };
                    let result = match outcome {
                        Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
                        Disposition::Retry => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
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
