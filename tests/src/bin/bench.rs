//! `make bench`: task dispatch latency and throughput, against the floor of a bare lapin
//! request/reply pair on the same broker in the same run.
//!
//! - Paced: 200 verify tasks, one every 20 ms, spread over the sites, so none waits behind
//!   another: dispatch latency = the task's `started` minus its `created` (accepted by the
//!   API → a worker starts it), p50 and p99.
//! - Burst: 1,000 verify tasks accepted as fast as the API takes them; sustained throughput
//!   = tasks / (last finished − first accepted).
//! - Floor: a persistent, confirmed request to a durable queue, a consumer that acks and
//!   answers with a persistent, confirmed reply: round trip p50/p99 one at a time, and
//!   throughput with 64 in flight.

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
    server
        .queue_declare(name.as_str().into(), queue, FieldTable::default())
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
    client
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok((percentile(&rtts, 0.5), percentile(&rtts, 0.99), throughput))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (f50, f99, fthroughput) = floor().await?;
    // A real-world sweep interval: tasks are dispatched by the relay, not rescued by sweeps.
    let options = StackOptions {
        env: vec![("gateway", "HOSTING_SWEEP_INTERVAL_SECS".into(), "5".into())],
        ..Default::default()
    };
    let stack = Stack::spawn_with(options).await;
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

    eprintln!("paced: {PACED} verify tasks, one every 20 ms...");
    let mut paced = Vec::new();
    for i in 0..PACED {
        paced.push(submit(&stack, sites[i % SITES]).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paced = collect(&stack, &paced).await;
    let mut latency: Vec<f64> = paced
        .iter()
        .map(|t| (ts(t, "started") - ts(t, "created")).as_seconds_f64() * 1000.0)
        .collect();
    latency.sort_by(|a, b| a.total_cmp(b));

    eprintln!("burst: {BURST} verify tasks...");
    let mut burst = Vec::new();
    for i in 0..BURST {
        burst.push(submit(&stack, sites[i % SITES]).await);
    }
    let burst = collect(&stack, &burst).await;
    let first = burst
        .iter()
        .map(|t| ts(t, "created"))
        .min()
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let last = burst
        .iter()
        .map(|t| ts(t, "finished"))
        .max()
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let throughput = BURST as f64 / (last - first).as_seconds_f64();
    let accept_secs = (burst
        .iter()
        .map(|t| ts(t, "created"))
        .max()
        .unwrap_or(first)
        - first)
        .as_seconds_f64();
    stack.teardown().await;

    println!("\n== task dispatch (gateway -> outbox -> RabbitMQ -> installer claims the task)");
    println!(
        "dispatch latency, paced, {PACED} verify tasks:  p50 {:.1} ms   p99 {:.1} ms",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99)
    );
    println!("sustained throughput, {BURST} verify tasks on {SITES} sites:  {throughput:.1} tasks/s (all accepted in {accept_secs:.1} s)");
    println!("== floor: bare lapin request/reply, persistent + confirmed, same broker, same run");
    println!("round trip, one at a time, 1000 requests:  p50 {f50:.2} ms   p99 {f99:.2} ms");
    println!("pipelined throughput, 64 in flight, 5000 requests:  {fthroughput:.0} req/s");
    Ok(())
}
