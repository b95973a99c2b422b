//! `make bench`: task dispatch latency and throughput, beside their floors measured on the same
//! broker and database in the same run.
//!
//! - The control plane alone, with the bench's `noop` task (its handler does nothing; the
//!   gateway takes it only with `HOSTING_BENCH_TASKS=true`):
//!   - paced: 500 tasks, one every 10 ms: dispatch latency = the task's `started` minus its
//!     `created` (accepted by the API, committed, relayed, published, delivered, claimed),
//!     p50 and p99;
//!   - burst: 5,000 tasks from 8 clients at once: tasks/s from the first accepted to the
//!     last finished.
//! - Verify, a real task (the site's cell checked, its vhost, its packages action run as the
//!   site's user, a request through nginx): 200 paced over 20 sites, then 1,000 at once.
//! - Floors: what the dispatch path must pay at least: a persistent publish to a quorum queue
//!   with its confirm and its delivery to a consumer, plus the two PostgreSQL commits on the
//!   path before the worker starts (the API's task with its outbox row, the relay's claim of
//!   the row), each measured one at a time. And a bare lapin request/reply pair, for scale.

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use std::time::{Duration, Instant};
use tests::{Stack, StackOptions, AMQP_URL};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const SITES: usize = 20;
const PACED: usize = 200;
const BURST: usize = 1000;
const NOOP_PACED: usize = 500;
const NOOP_BURST: usize = 5000;
const NOOP_CLIENTS: usize = 8;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ts(v: &serde_json::Value, key: &str) -> OffsetDateTime {
    OffsetDateTime::parse(v[key].as_str().unwrap_or_default(), &Rfc3339)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

async fn submit(stack: &Stack, site: i64) -> i64 {
    let (status, r) = stack
        .call(
            "POST",
            &format!("/sites/{site}/tasks"),
            Some(json!({"type": "verify"})),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    r["task"]["id"].as_i64().unwrap_or_default()
}

async fn submit_noop(api: &str, token: &str) -> i64 {
    let r = tests::http::request(
        "POST",
        &format!("{api}/api/v1/tasks"),
        Some(r#"{"type": "noop"}"#),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap_or_else(|e| panic!("POST /tasks: {e:#}"));
    assert_eq!(r.status, 202, "{}", r.body);
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["id"].as_i64())
        .unwrap_or_default()
}

/// Started minus created, in ms, sorted.
fn latencies(tasks: &[serde_json::Value]) -> Vec<f64> {
    let mut l: Vec<f64> = tasks
        .iter()
        .map(|t| (ts(t, "started") - ts(t, "created")).as_seconds_f64() * 1000.0)
        .collect();
    l.sort_by(|a, b| a.total_cmp(b));
    l
}

/// One confirmed persistent publish to a quorum queue and its delivery to a consumer, one at
/// a time: p50 and p99 in ms.
async fn publish_floor(url: &str) -> anyhow::Result<(f64, f64)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let name = format!("bench.publish.{}", uuid::Uuid::new_v4().simple());
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    let consumer_ch = conn.create_channel().await?;
    let mut deliveries = consumer_ch
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
    let mut ms = Vec::new();
    for i in 0..1000 {
        let t0 = Instant::now();
        let body = format!("{{\"task\":{i},\"type\":\"noop\"}}");
        ch.basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
        deliveries
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("delivery stream ended"))??;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

/// One small INSERT committed on the state database, one at a time: p50 and p99 in ms.
async fn commit_floor(database_url: &str) -> anyhow::Result<(f64, f64)> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_commit_floor (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .execute(&pool)
        .await?;
    let mut ms = Vec::new();
    for _ in 0..1000 {
        let t0 = Instant::now();
        sqlx::query("INSERT INTO bench_commit_floor DEFAULT VALUES")
            .execute(&pool)
            .await?;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    sqlx::query("DROP TABLE bench_commit_floor")
        .execute(&pool)
        .await?;
    pool.close().await;
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

async fn collect(stack: &Stack, ids: &[i64]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for id in ids {
        let t = stack.wait_task(*id, Duration::from_secs(600)).await;
        assert_eq!(t["status"], "success", "{t}");
        out.push(t);
    }
    out
}

async fn floor() -> anyhow::Result<(f64, f64, f64)> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let server = conn.create_channel().await?;
    let client = conn.create_channel().await?;
    server
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    client
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let name = format!("bench.floor.{}", uuid::Uuid::new_v4().simple());
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    // A quorum queue, as the task queues are.
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    server
        .queue_declare(name.as_str().into(), queue, args)
        .await?;
    server.basic_qos(64, BasicQosOptions::default()).await?;
    let reply_q = client
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let reply_name = reply_q.name().as_str().to_owned();
    let mut requests = server
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let responder = tokio::spawn(async move {
        while let Some(Ok(d)) = requests.next().await {
            let reply_to = d
                .properties
                .reply_to()
                .clone()
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default();
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_correlation_id(d.properties.correlation_id().clone().unwrap_or_default());
            if let Ok(confirm) = server
                .basic_publish(
                    "".into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &d.data,
                    props,
                )
                .await
            {
                let _ = confirm.await;
            }
            let _ = d.ack(BasicAckOptions::default()).await;
        }
    });
    let mut replies = client
        .basic_consume(
            reply_name.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let send = {
        let (client, name, reply_name) = (client.clone(), name.clone(), reply_name.clone());
        move |i: usize| {
            let client = client.clone();
            let (name, reply_name) = (name.clone(), reply_name.clone());
            async move {
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_reply_to(reply_name.as_str().into())
                    .with_correlation_id(i.to_string().as_str().into());
                let body = format!("{{\"task\":{i},\"type\":\"verify\"}}");
                client
                    .basic_publish(
                        "".into(),
                        name.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body.as_bytes(),
                        props,
                    )
                    .await?
                    .await?;
                anyhow::Ok(())
            }
        }
    };
    // Round trip, one at a time.
    let mut rtts = Vec::new();
    for i in 0..1000 {
        let t0 = Instant::now();
        send(i).await?;
        replies
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("reply stream ended"))??;
        rtts.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    // Pipelined: up to 64 in flight.
    let n = 5000;
    let t0 = Instant::now();
    let sender = {
        let send = send.clone();
        tokio::spawn(async move {
            let mut pending = futures_util::stream::iter(0..n)
                .map(send)
                .buffer_unordered(64);
            while let Some(r) = pending.next().await {
                r?;
            }
            anyhow::Ok(())
        })
    };
    for _ in 0..n {
        replies
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("reply stream ended"))??;
    }
    sender.await??;
    let throughput = n as f64 / t0.elapsed().as_secs_f64();
    responder.abort();
    // Best effort: the aborted responder's consumer may be cancelled while the queue goes,
    // and lapin can take the broker's late cancel-ok as a protocol error; the figures are in.
    let _ = client
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    Ok((percentile(&rtts, 0.5), percentile(&rtts, 0.99), throughput))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (f50, f99, fthroughput) = floor().await?;
    let (pub50, pub99) = publish_floor(AMQP_URL).await?;
    // A real-world sweep interval: tasks are dispatched by the relay, not rescued by sweeps.
    let options = StackOptions {
        env: vec![
            ("gateway", "HOSTING_SWEEP_INTERVAL_SECS".into(), "5".into()),
            ("gateway", "HOSTING_BENCH_TASKS".into(), "true".into()),
        ],
        ..Default::default()
    };
    let stack = Stack::spawn_with(options).await;
    let (c50, c99) = commit_floor(&stack.state_db_url).await?;
    let (floor50, floor99) = (pub50 + 2.0 * c50, pub99 + 2.0 * c99);

    eprintln!("noop, paced: {NOOP_PACED} tasks, one every 10 ms...");
    let mut ids = Vec::new();
    for _ in 0..NOOP_PACED {
        ids.push(submit_noop(&stack.api, &stack.token).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let noop_latency = latencies(&collect(&stack, &ids).await);

    eprintln!("noop, burst: {NOOP_BURST} tasks from {NOOP_CLIENTS} clients...");
    let per_client = NOOP_BURST / NOOP_CLIENTS;
    let clients: Vec<_> = (0..NOOP_CLIENTS)
        .map(|_| {
            let (api, token) = (stack.api.clone(), stack.token.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..per_client {
                    ids.push(submit_noop(&api, &token).await);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await?);
    }
    let noop_burst = collect(&stack, &ids).await;
    let (noop_throughput, noop_accept) = throughput(&noop_burst);

    stack.create_client("bench").await;
    eprintln!("installing {SITES} example sites...");
    let mut sites = Vec::new();
    let mut installs = Vec::new();
    for i in 0..SITES {
        let (site, task) = stack
            .create_site(&format!("site{i}.bench.example"), "bench", "example")
            .await;
        sites.push(site["id"].as_i64().unwrap_or_default());
        installs.push(task["id"].as_i64().unwrap_or_default());
    }
    collect(&stack, &installs).await;

    eprintln!("verify, paced: {PACED} tasks, one every 20 ms...");
    let mut paced = Vec::new();
    for i in 0..PACED {
        paced.push(submit(&stack, sites[i % SITES]).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latency = latencies(&collect(&stack, &paced).await);

    eprintln!("verify, burst: {BURST} tasks...");
    let mut burst = Vec::new();
    for i in 0..BURST {
        burst.push(submit(&stack, sites[i % SITES]).await);
    }
    let burst = collect(&stack, &burst).await;
    let (verify_throughput, accept_secs) = throughput(&burst);
    stack.teardown().await;

    println!(
        "\n== task dispatch (API accepts -> outbox -> relay -> RabbitMQ -> a worker claims it)"
    );
    println!(
        "floor: confirmed persistent publish to a quorum queue + delivery  p50 {pub50:.2} ms  p99 {pub99:.2} ms;  PostgreSQL commit  p50 {c50:.2} ms  p99 {c99:.2} ms"
    );
    println!("floor of the path (publish + 2 commits):  p50 {floor50:.2} ms   p99 {floor99:.2} ms");
    println!(
        "noop, paced, {NOOP_PACED} tasks:  p50 {:.2} ms ({:.1}x the floor)   p99 {:.2} ms ({:.1}x the floor)",
        percentile(&noop_latency, 0.5),
        percentile(&noop_latency, 0.5) / floor50,
        percentile(&noop_latency, 0.99),
        percentile(&noop_latency, 0.99) / floor99,
    );
    println!("noop, {NOOP_BURST} tasks from {NOOP_CLIENTS} clients:  {noop_throughput:.0} tasks/s (all accepted in {noop_accept:.1} s)");
    println!(
        "verify, paced, {PACED} tasks on {SITES} sites:  p50 {:.1} ms   p99 {:.1} ms (a site's tasks wait for each other)",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99)
    );
    println!("verify, {BURST} tasks on {SITES} sites:  {verify_throughput:.1} tasks/s (all accepted in {accept_secs:.1} s)");
    println!(
        "== for scale: bare lapin request/reply, persistent + confirmed, same broker, same run"
    );
    println!("round trip, one at a time, 1000 requests:  p50 {f50:.2} ms   p99 {f99:.2} ms");
    println!("pipelined throughput, 64 in flight, 5000 requests:  {fthroughput:.0} req/s");
    Ok(())
}

/// Tasks per second from the first accepted to the last finished, and how long accepting
/// them all took.
fn throughput(tasks: &[serde_json::Value]) -> (f64, f64) {
    let first = tasks
        .iter()
        .map(|t| ts(t, "created"))
        .min()
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let last = tasks
        .iter()
        .map(|t| ts(t, "finished"))
        .max()
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let accepted = tasks
        .iter()
        .map(|t| ts(t, "created"))
        .max()
        .unwrap_or(first);
    (
        tasks.len() as f64 / (last - first).as_seconds_f64(),
        (accepted - first).as_seconds_f64(),
    )
}
