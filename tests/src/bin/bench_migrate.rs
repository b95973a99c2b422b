//! `make bench`, fleet migration: 200 example sites moved from one platform to another by a
//! `migrate-sites` batch with the default concurrency, then moved back one at a time
//! (concurrency 1), in the same run on the same stack. Each move is a whole migrate saga:
//! maintenance, backup, new database, deploy, update, switch, cleanup.

use serde_json::json;
use std::time::Duration;
use tests::Stack;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const SITES: usize = 200;
/// The gateway's default for `concurrency` in migrate-sites.
const DEFAULT_CONCURRENCY: i64 = 4;

fn ts(v: &serde_json::Value, key: &str) -> OffsetDateTime {
    OffsetDateTime::parse(v[key].as_str().unwrap_or_default(), &Rfc3339)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Runs a batch; returns (seconds from accepted to finished, its result).
async fn batch(
    stack: &Stack,
    from: &str,
    to: &str,
    concurrency: Option<i64>,
) -> (f64, serde_json::Value) {
    let mut body = json!({"type": "migrate-sites", "target": to});
    if let Some(c) = concurrency {
        body["concurrency"] = json!(c);
    }
    let done = stack
        .run_platform_task(from, body, Duration::from_secs(3600))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    let secs = (ts(&done, "finished") - ts(&done, "created")).as_seconds_f64();
    (secs, done["result"].clone())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::spawn().await;
    stack.create_client("bench").await;
    stack.fixture_platform("next", |m| m).await;
    eprintln!("installing {SITES} example sites...");
    let mut installs = Vec::new();
    for i in 0..SITES {
        let (_, task) = stack
            .create_site(&format!("fleet{i}.bench.example"), "bench", "example")
            .await;
        installs.push(task["id"].as_i64().unwrap_or_default());
    }
    for id in installs {
        let t = stack.wait_task(id, Duration::from_secs(600)).await;
        assert_eq!(t["status"], "success", "{t}");
    }

    eprintln!("migrating {SITES} sites with the default concurrency ({DEFAULT_CONCURRENCY})...");
    let (parallel, r1) = batch(&stack, "example", "next", None).await;
    assert_eq!(r1["migrated"], SITES, "{r1}");
    eprintln!("migrating them back one at a time...");
    let (serial, r2) = batch(&stack, "next", "example", Some(1)).await;
    assert_eq!(r2["migrated"], SITES, "{r2}");

    println!("fleet migration of {SITES} example sites (each a whole migrate saga)");
    println!(
        "  concurrency {DEFAULT_CONCURRENCY} (default): {parallel:.1} s ({:.0} ms per site, {:.1} sites/min)",
        parallel * 1000.0 / SITES as f64,
        SITES as f64 * 60.0 / parallel
    );
    println!(
        "  one at a time:           {serial:.1} s ({:.0} ms per site, {:.1} sites/min)",
        serial * 1000.0 / SITES as f64,
        SITES as f64 * 60.0 / serial
    );
    println!("  speed-up: {:.2}x", serial / parallel);
    stack.teardown().await;
    Ok(())
}
