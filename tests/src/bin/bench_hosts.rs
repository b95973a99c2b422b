//! `make bench`, moving sites between hosts: in the test topology (web2 and db2 each in a
//! network and mount namespace of their own, with their own nginx, php-fpm and MariaDB), example
//! sites with a payload of their own are moved web1+db1 -> web2+db2 by one `migrate-sites`
//! batch at the default concurrency, back the same way, then again one at a time, with the
//! median time of each saga step in that last batch. Each move is
//! a whole migrate saga (maintenance, a backup, the database, the deploy through web2's agent and
//! the store's door, the update, the switch, the cleanup of the old host).
//!
//! The floor, measured in the same run between the same namespaces, is a raw transfer of the
//! same bytes, site by site: `tar | zstd` piped over a socket into `zstd -d | tar -x` on web2,
//! and `mariadb-dump | mariadb` over a socket into a new database on db2.
//!
//! `BENCH_HOSTS_SITES` sets the number of sites (100).

use anyhow::Context;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::hosts::{Host, Topology, HOST_MARIADB_SOCKET, HOST_ROOT};
use tests::Stack;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Where the machine's own MariaDB (db1) takes root.
const MACHINE_MARIADB_SOCKET: &str = "/run/mysqld/mysqld.sock";
/// The gateway's default for `concurrency` in migrate-sites.
const DEFAULT_CONCURRENCY: i64 = 4;
/// Each site's own files beside the platform's: half noise, half text, as uploads are.
const PAYLOAD_BYTES: usize = 1 << 20;

/// A task's timestamp; a finished task has them all, so a missing one is a broken bench.
fn ts(v: &serde_json::Value, key: &str) -> OffsetDateTime {
    OffsetDateTime::parse(v[key].as_str().unwrap_or_default(), &Rfc3339)
        .unwrap_or_else(|e| panic!("{key} of {v}: {e}"))
}

fn payload(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(PAYLOAD_BYTES);
    while out.len() < PAYLOAD_BYTES / 2 {
        // xorshift64: incompressible enough for zstd.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    let line = format!("upload {seed}: the quick brown fox jumps over the lazy dog\n");
    while out.len() < PAYLOAD_BYTES {
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(PAYLOAD_BYTES);
    out
}

/// Bytes of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Runs `receiver` on `host` (it listens, for 60 s at most), then `sender` on the machine (it
/// connects, retrying until the receiver listens), and waits for both. Both run under bash's
/// `pipefail`, so a failing stage anywhere fails the transfer. The sender's `args` are its `$1`…
/// (paths and names reach the shell as arguments, never pasted into the script).
fn pipe(host: &Host, receiver: &str, sender: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut rx = host
        .command(Path::new("/bin/bash"), &["-o", "pipefail", "-c", receiver])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let tx = Command::new("/bin/bash")
        .args(["-o", "pipefail", "-c", sender, "send"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    if !tx.status.success() {
        // The receiver would wait for a sender that gave up.
        let _ = rx.kill();
    }
    let rx_out = rx.wait_with_output()?;
    anyhow::ensure!(
        rx_out.status.success() && tx.status.success(),
        "on {}: {receiver}: {}\n{sender}: {}",
        host.name,
        String::from_utf8_lossy(&rx_out.stderr).trim(),
        String::from_utf8_lossy(&tx.stderr).trim()
    );
    Ok(())
}

/// The raw transfer of one site's files to web2 and its database to db2.
fn raw_transfer(
    topology: &Topology,
    n: usize,
    site_dir: &Path,
    database: &str,
) -> anyhow::Result<()> {
    let (web2, db2) = (&topology.web2, &topology.db2);
    let port = 20_000 + n;
    let into = format!("{HOST_ROOT}/raw/{n}");
    pipe(
        web2,
        &format!(
            "mkdir -p {into} && socat -u TCP-LISTEN:{port},bind={},reuseaddr,accept-timeout=60 STDOUT | zstd -d -q | tar -x -C {into}",
            web2.address
        ),
        &format!(
            "tar -C \"$1\" -cf - . | zstd -q -c | socat -u STDIN TCP:{}:{port},retry=500,interval=0.01",
            web2.address
        ),
        &[site_dir.to_str().context("a site directory in UTF-8")?],
    )?;
    let mariadb = format!("mariadb --socket={HOST_MARIADB_SOCKET} -u root");
    pipe(
        db2,
        &format!(
            "{mariadb} -e 'CREATE DATABASE raw_{n}' && socat -u TCP-LISTEN:{port},bind={},reuseaddr,accept-timeout=60 STDOUT | {mariadb} raw_{n}",
            db2.address
        ),
        &format!(
            // Over the socket: a fresh Debian's root logs in there only.
            "mariadb-dump --socket={MACHINE_MARIADB_SOCKET} -u root --single-transaction \"$1\" | socat -u STDIN TCP:{}:{port},retry=500,interval=0.01",
            db2.address
        ),
        &[database],
    )?;
    Ok(())
}

/// Runs a batch; answers its task and the seconds from accepted to finished.
async fn batch(stack: &Stack, from: &str, body: serde_json::Value, sites: usize) -> (i64, f64) {
    let done = stack
        .run_platform_task(from, body, Duration::from_secs(4 * 3600))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["result"]["migrated"], sites, "{done}");
    (
        tests::id(&done),
        (ts(&done, "finished") - ts(&done, "created")).as_seconds_f64(),
    )
}

/// The median milliseconds of each saga step over a batch's child tasks, in the order the
/// steps ran.
async fn step_medians(stack: &Stack, batch: i64) -> anyhow::Result<Vec<(String, f64)>> {
    let pool = sqlx::PgPool::connect(&stack.state_db_url).await?;
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT s.step, percentile_cont(0.5) WITHIN GROUP \
             (ORDER BY extract(epoch FROM d.at - s.at) * 1000)::float8 \
         FROM saga_events s JOIN saga_events d \
           ON d.task_id = s.task_id AND d.step = s.step AND d.event = 'done' \
         WHERE s.event = 'started' \
           AND s.task_id IN (SELECT id FROM tasks WHERE parent_id = $1) \
         GROUP BY s.step ORDER BY min(s.at)",
    )
    .bind(batch)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(rows)
}

async fn served_by(host: &Host, domain: &str) -> bool {
    let page = host.page(domain, "/").await;
    page.status == 200 && page.body.contains("This page was stored")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sites: usize = match std::env::var("BENCH_HOSTS_SITES") {
        Err(_) => 100,
        Ok(v) => v.parse().ok().filter(|&n| n > 0).with_context(|| {
            format!("BENCH_HOSTS_SITES={v:?}: give a number of sites, 1 or more")
        })?,
    };
    let topology = Topology::start().await;
    topology.platform_on_web2().await;
    let stack = &topology.stack;
    stack.create_client("bench").await;
    eprintln!("installing {sites} example sites on web1 with their databases on db1...");
    let mut installs = Vec::new();
    for i in 0..sites {
        let (site, task) = stack
            .create_site(&format!("move{i}.bench.example"), "bench", "example")
            .await;
        installs.push((site, task["id"].as_i64().unwrap_or_default()));
    }
    let mut records = Vec::new();
    for (i, (site, task)) in installs.into_iter().enumerate() {
        let t = stack.wait_task(task, Duration::from_secs(900)).await;
        assert_eq!(t["status"], "success", "{t}");
        let domain = site["domain"].as_str().unwrap_or_default().to_owned();
        let dir = stack.example_root.join(format!("sites/{domain}"));
        std::fs::write(dir.join("files/payload.bin"), payload(i as u64))?;
        records.push((dir, site["db_name"].as_str().unwrap_or_default().to_owned()));
    }
    let file_bytes: u64 = records.iter().map(|(d, _)| bytes_under(d)).sum();

    eprintln!("raw transfer of the same bytes, site by site...");
    let started = Instant::now();
    for (n, (dir, db)) in records.iter().enumerate() {
        raw_transfer(&topology, n, dir, db)?;
    }
    let raw = started.elapsed().as_secs_f64();
    // What arrived, checked outside the timing: every file byte, and every table.
    for (n, (dir, db)) in records.iter().enumerate() {
        let (sent, got) = (
            bytes_under(dir),
            bytes_under(&topology.web2.root.join(format!("raw/{n}"))),
        );
        anyhow::ensure!(
            sent == got,
            "raw transfer {n}: {sent} bytes sent, {got} arrived"
        );
        let count = |table_schema: &str| {
            format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{table_schema}'")
        };
        let tables = topology.db2.run(&format!(
            "mariadb --socket={HOST_MARIADB_SOCKET} -u root -N -e \"{}\"",
            count(&format!("raw_{n}"))
        ))?;
        let source = Command::new("mariadb")
            .args(["-u", "root", "-N", "-e", &count(db)])
            .output()?;
        let source = String::from_utf8_lossy(&source.stdout);
        anyhow::ensure!(
            tables.trim() == source.trim() && tables.trim() != "0",
            "raw transfer {n}: {} tables arrived of {}",
            tables.trim(),
            source.trim()
        );
    }
    topology.web2.run(&format!("rm -rf {HOST_ROOT}/raw"))?;
    topology.db2.run(&format!(
        "for n in $(seq 0 {}); do mariadb --socket={HOST_MARIADB_SOCKET} -u root -e \"DROP DATABASE raw_$n\"; done",
        records.len().saturating_sub(1)
    ))?;

    eprintln!("migrating {sites} sites web1+db1 -> web2+db2 with the default concurrency ({DEFAULT_CONCURRENCY})...");
    let (_, parallel) = batch(
        stack,
        "example",
        json!({"type": "migrate-sites", "target": "example-web2", "db_server": "db2"}),
        sites,
    )
    .await;
    assert!(
        served_by(&topology.web2, "move0.bench.example").await,
        "web2 does not serve a moved site"
    );
    eprintln!("moving them back web2+db2 -> web1+db1 with the default concurrency...");
    let (_, back) = batch(
        stack,
        "example-web2",
        json!({"type": "migrate-sites", "target": "example", "db_server": "local"}),
        sites,
    )
    .await;
    assert_eq!(stack.page("move0.bench.example", "/").await.status, 200);
    eprintln!("migrating {sites} sites web1+db1 -> web2+db2 one at a time...");
    let (serial_batch, serial) = batch(
        stack,
        "example",
        json!({"type": "migrate-sites", "target": "example-web2", "db_server": "db2",
               "concurrency": 1}),
        sites,
    )
    .await;
    assert!(
        served_by(&topology.web2, "move0.bench.example").await,
        "web2 does not serve a moved site"
    );

    let per = |secs: f64| secs * 1000.0 / sites as f64;
    println!(
        "moving {sites} example sites between hosts ({:.1} MiB of files, each site a whole migrate saga)",
        file_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  floor, raw transfer one site at a time (tar|zstd over a socket to web2, mariadb-dump|mariadb to db2): {raw:.1} s ({:.0} ms per site)",
        per(raw)
    );
    println!(
        "  web1+db1 -> web2+db2, concurrency {DEFAULT_CONCURRENCY} (default): {parallel:.1} s ({:.0} ms per site, {:.1}x the floor)",
        per(parallel),
        parallel / raw
    );
    println!(
        "  web1+db1 -> web2+db2, one at a time: {serial:.1} s ({:.0} ms per site, {:.1}x the floor)",
        per(serial),
        serial / raw
    );
    let steps = step_medians(stack, serial_batch).await?;
    println!(
        "    its steps, median per site: {}",
        steps
            .iter()
            .map(|(step, ms)| format!("{step} {ms:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  (back web2+db2 -> web1+db1, concurrency {DEFAULT_CONCURRENCY}: {back:.1} s, {:.0} ms per site)",
        per(back)
    );
    topology.teardown().await;
    Ok(())
}
