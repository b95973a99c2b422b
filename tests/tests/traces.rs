//! One trace per task: the services export their spans over OTLP/HTTP to a receiver in this
//! test, and an install's spans from the gateway, its relay, the installer, dbprov and webconf
//! share one trace id, each parented by the one before, with the task and the site as
//! attributes and no secret in any attribute.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tests::{id, password_from_settings, Stack, StackOptions};

#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

type Received = Arc<Mutex<Vec<Span>>>;

fn text(v: &Option<AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// An OTLP/HTTP receiver (protobuf, as the services' exporter sends it) on a free port.
async fn receiver() -> (u16, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut spans = Vec::new();
                for rs in request.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|a| a.key == "service.name")
                        .map(|a| text(&a.value.as_ref().and_then(|v| v.value.clone())))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            spans.push(Span {
                                service: service.clone(),
                                trace: hex::encode(&s.trace_id),
                                id: hex::encode(&s.span_id),
                                parent: hex::encode(&s.parent_span_id),
                                name: s.name.clone(),
                                attributes: s
                                    .attributes
                                    .iter()
                                    .map(|a| {
                                        (
                                            a.key.clone(),
                                            text(&a.value.as_ref().and_then(|v| v.value.clone())),
                                        )
                                    })
                                    .collect(),
                            });
                        }
                    }
                }
                if let Ok(mut all) = store.lock() {
                    all.extend(spans);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the receiver");
    let port = listener.local_addr().expect("an address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_is_one_trace_across_the_services() {
    let (port, received) = receiver().await;
    let options = StackOptions {
        env: vec![
            (
                "*",
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            // Exported within a fifth of a second rather than five.
            ("*", "OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ],
        ..Default::default()
    };
    let stack = Stack::spawn_with(options).await;
    stack.create_client("acme").await;
    let (site, task) = stack
        .create_site("traced.acme.example", "acme", "example")
        .await;
    let done = stack.wait_task(id(&task), Duration::from_secs(60)).await;
    stack.assert_success(&done).await;
    let (task, site) = (id(&task).to_string(), id(&site).to_string());

    // The installer's span of the task, and every span of its trace once the agents' are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (trace, spans) = loop {
        let all = received.lock().map(|s| s.clone()).unwrap_or_default();
        let found = all
            .iter()
            .find(|s| {
                s.service == "installer"
                    && s.attributes.get("hosting.task.id") == Some(&task)
                    && s.name.contains("install")
            })
            .map(|s| s.trace.clone());
        if let Some(trace) = found {
            let spans: Vec<Span> = all.iter().filter(|s| s.trace == trace).cloned().collect();
            let services: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            // A span is exported when it ends, a parent after its children: the trace is
            // whole once every service's spans are in and only one span lacks its parent.
            let ids: Vec<&str> = spans.iter().map(|s| s.id.as_str()).collect();
            let orphans = spans
                .iter()
                .filter(|s| !ids.contains(&s.parent.as_str()))
                .count();
            if orphans == 1
                && ["gateway", "installer", "dbprov", "webconf"]
                    .iter()
                    .all(|s| services.contains(s))
            {
                break (trace, spans);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no whole trace holds the install's spans from every service: {:#?}",
            all.iter()
                .map(|s| (&s.service, &s.name, &s.trace, &s.attributes))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    // The ancestors of a span, nearest first, as "service: name".
    let chain = |s: &Span| {
        let mut out = Vec::new();
        let mut at = by_id.get(s.parent.as_str()).copied();
        while let Some(p) = at {
            out.push(format!("{}: {}", p.service, p.name));
            at = by_id.get(p.parent.as_str()).copied();
        }
        out
    };

    // One root: the gateway's request that accepted the site.
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| !by_id.contains_key(s.parent.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "trace {trace}: {roots:#?}");
    assert_eq!(roots[0].service, "gateway", "{roots:#?}");
    assert_eq!(
        roots[0].attributes.get("path").map(String::as_str),
        Some("/api/v1/sites")
    );

    // The task's span: under the installer's message, the relay's dispatch, the request.
    let task_span = spans
        .iter()
        .find(|s| {
            s.service == "installer"
                && s.attributes.get("hosting.task.id") == Some(&task)
                && s.name.contains("install")
        })
        .expect("the task's span");
    assert_eq!(
        task_span.attributes.get("hosting.site.id"),
        Some(&site),
        "{task_span:?}"
    );
    let up = chain(task_span);
    let expected = [
        "installer: message",
        "gateway: dispatch task",
        "gateway: http",
    ];
    assert_eq!(up, expected, "the task's span's ancestors");

    // The agents' spans hang under the task's, and say which task they served.
    for agent in ["dbprov", "webconf"] {
        let served: Vec<&Span> = spans.iter().filter(|s| s.service == agent).collect();
        assert!(!served.is_empty(), "{agent}");
        for s in served {
            let up = chain(s);
            assert!(
                up.first().is_some_and(|p| p.starts_with("installer: ")),
                "{agent}'s span {} is not the installer's child: {up:?}",
                s.name
            );
            assert!(up.iter().any(|p| p == "installer: install task"), "{up:?}");
            if s.name == "message" {
                assert_eq!(s.attributes.get("hosting.task.id"), Some(&task), "{s:?}");
            }
        }
    }

    // No secret in any attribute of any span: not the site's database password, not the
    // admin token.
    let settings = std::fs::read_to_string(
        stack
            .example_root
            .join("sites/traced.acme.example/settings.php"),
    )
    .expect("settings");
    let password = password_from_settings(&settings).expect("a password in the settings");
    let all = received.lock().map(|s| s.clone()).unwrap_or_default();
    for s in &all {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains(&password) && !v.contains(&stack.token),
                "a secret in {}'s span {} attribute {k}",
                s.service,
                s.name
            );
        }
    }
    stack.teardown().await;
}
