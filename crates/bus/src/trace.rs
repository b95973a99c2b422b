//! W3C trace context in AMQP headers (`traceparent`, `tracestate`), through the globally
//! installed OpenTelemetry propagator.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers(HashMap<String, String>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

pub(crate) fn current_context_headers() -> FieldTable {
    let cx = tracing::Span::current().context();
    let mut headers = Headers(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
    let mut table = FieldTable::default();
    for (k, v) in headers.0 {
        table.insert(ShortString::from(k), AMQPValue::LongString(v.into()));
    }
    table
}

pub(crate) fn context_from_headers(table: Option<&FieldTable>) -> Context {
    let mut map = HashMap::new();
    if let Some(table) = table {
        for (k, v) in table.inner() {
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => continue,
            };
            map.insert(k.as_str().to_owned(), value);
        }
    }
    let headers = Headers(map);
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&headers))
}

pub(crate) fn set_parent(span: &tracing::Span, parent: Context) {
    let _ = span.set_parent(parent);
}

/// The current span's context as a W3C `traceparent` value, to store beside work that is
/// published later (the outbox).
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut headers = Headers(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
    headers.0.remove("traceparent")
}

/// A span whose parent is a stored `traceparent`, so a later publish joins the trace of the
/// request that caused it.
pub fn span_with_traceparent(name: &'static str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!("relay", otel.name = name);
    if let Some(tp) = traceparent {
        let headers = Headers(HashMap::from([("traceparent".to_owned(), tp.to_owned())]));
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&headers));
        set_parent(&span, cx);
    }
    span
}
