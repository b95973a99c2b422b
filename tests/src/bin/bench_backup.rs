//! The backup benchmark, run by `make bench` after the dispatch benchmark: backup and restore
//! of a generated site (about 100 MB: thousands of small code files and a few hundred
//! incompressible media files, plus a database of about 50 MB), against the floor measured in
//! the same run on the same data: `tar -c | zstd -3` of the directory and
//! `mariadb-dump | zstd -3` of the database in parallel (the slower is the floor), and the
//! matching `zstd -d | tar -x` and import.

use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{Stack, MYSQL_ADMIN_URL};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn shell(script: &str) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let status = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .status()?;
    anyhow::ensure!(status.success(), "{script} failed");
    Ok(t0.elapsed())
}

/// Runs two pipelines at once; returns both durations.
fn parallel(a: &str, b: &str) -> anyhow::Result<(Duration, Duration)> {
    let (a, b) = (a.to_owned(), b.to_owned());
    let ta = std::thread::spawn(move || shell(&a));
    let tb = shell(&b)?;
    let ta = ta.join().map_err(|_| anyhow::anyhow!("thread"))??;
    Ok((ta, tb))
}

fn ts(v: &serde_json::Value, key: &str) -> OffsetDateTime {
    OffsetDateTime::parse(v[key].as_str().unwrap_or_default(), &Rfc3339)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Deterministic pseudo-random bytes (xorshift): incompressible, no dependency.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn step_seconds(stack: &Stack, task: i64, step: &str) -> f64 {
    let pool = sqlx::PgPool::connect(&stack.state_db_url)
        .await
        .expect("state db");
    let rows: Vec<(String, OffsetDateTime)> =
        sqlx::query_as("SELECT event, at FROM saga_events WHERE task_id = $1 AND step = $2")
            .bind(task)
            .bind(step)
            .fetch_all(&pool)
            .await
            .expect("saga events");
    pool.close().await;
    let at = |e: &str| {
        rows.iter()
            .find(|(ev, _)| ev == e)
            .map(|(_, t)| *t)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    (at("done") - at("started")).as_seconds_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::spawn().await;
    stack.create_client("bench").await;
    let domain = "big.bench.example";
    let site = stack.install_site(domain, "bench").await;
    let id = site["id"].as_i64().unwrap_or_default();
    let db = site["db_name"].as_str().unwrap_or_default().to_owned();
    let site_dir = stack.example_root.join("sites").join(domain);

    eprintln!("generating the site: 4,000 code files and 300 media files...");
    let code = site_dir.join("files/code");
    for d in 0..40 {
        let dir = code.join(format!("module{d}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..100 {
            let body: String = (0..60).map(|l| format!("    $value_{l} = compute_{d}_{f}($input, {l}); // line {l} of a generated file\n")).collect();
            std::fs::write(
                dir.join(format!("file{f}.php")),
                format!("<?php\nfunction f{d}_{f}($input) {{\n{body}}}\n"),
            )?;
        }
    }
    let media = site_dir.join("files/media");
    std::fs::create_dir_all(&media)?;
    for m in 0..300u64 {
        std::fs::write(media.join(format!("photo{m}.jpg")), noise(m + 1, 270_000))?;
    }
    eprintln!("generating the database (about 50 MB)...");
    let pool = sqlx::MySqlPool::connect(MYSQL_ADMIN_URL).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE `{db}`.bench_rows (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(200), body TEXT) ENGINE=InnoDB;
         INSERT INTO `{db}`.bench_rows (title, body) SELECT CONCAT('row ', seq), CONCAT(SHA2(RAND(), 512), SHA2(RAND(), 512), SHA2(RAND(), 512), SHA2(RAND(), 512), SHA2(RAND(), 512), SHA2(RAND(), 512), SHA2(RAND(), 512), SHA2(RAND(), 512)) FROM `{db}`.seq_1_to_50000;"
    )))
    .execute(&pool)
    .await?;
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM `{db}`.bench_rows"
    )))
    .fetch_one(&pool)
    .await?;
    let site_bytes: u64 = shell(&format!(
        "du -sb {} > {}/du.txt",
        site_dir.display(),
        stack.dir.display()
    ))
    .map(|_| {
        std::fs::read_to_string(stack.dir.join("du.txt"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    })?;

    // Floor: the same data with the standard tools, the two halves in parallel.
    let scratch = stack.dir.join("floor");
    std::fs::create_dir_all(&scratch)?;
    let (s, sc) = (site_dir.display(), scratch.display());
    let root_dump = "mariadb-dump --single-transaction --quick --routines --triggers --hex-blob";
    let (tar_t, dump_t) = parallel(
        &format!("tar -C {s} -cf - . | zstd -3 -q -c > {sc}/site.tar.zst"),
        &format!("{root_dump} {db} | zstd -3 -q -c > {sc}/db.sql.zst"),
    )?;
    let backup_floor = tar_t.max(dump_t);
    let dump_bytes = std::fs::metadata(scratch.join("db.sql.zst"))?.len();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}_floor`")))
        .execute(&pool)
        .await?;
    std::fs::create_dir_all(scratch.join("untar"))?;
    let (untar_t, import_t) = parallel(
        &format!("zstd -d -q -c {sc}/site.tar.zst | tar -C {sc}/untar -xf -"),
        &format!("zstd -d -q -c {sc}/db.sql.zst | mariadb {db}_floor"),
    )?;
    let restore_floor = untar_t.max(import_t);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}_floor`")))
        .execute(&pool)
        .await?;
    pool.close().await;
    let _ = std::fs::remove_dir_all(&scratch);

    eprintln!("backup and restore through the control plane...");
    let backup = stack.run_site_task(id, json!({"type": "backup"})).await;
    anyhow::ensure!(backup["status"] == "success", "backup failed: {backup}");
    let backup_t = (ts(&backup, "finished") - ts(&backup, "started")).as_seconds_f64();
    let restore = stack
        .run_site_task(
            id,
            json!({"type": "restore", "backup": backup["result"]["backup"]}),
        )
        .await;
    anyhow::ensure!(restore["status"] == "success", "restore failed: {restore}");
    let restore_id = restore["id"].as_i64().unwrap_or_default();
    let restore_total = (ts(&restore, "finished") - ts(&restore, "started")).as_seconds_f64();
    let unpack_t = step_seconds(&stack, restore_id, "unpack").await;
    let safety_t = step_seconds(&stack, restore_id, "safety-backup").await;
    let size = backup["result"]["size"].as_i64().unwrap_or_default();
    stack.teardown().await;

    let f = |d: Duration| d.as_secs_f64();
    println!("\n== backup and restore: site {:.0} MB on disk, database {rows} rows (dump {:.1} MB compressed), archive {:.1} MB", site_bytes as f64 / 1e6, dump_bytes as f64 / 1e6, size as f64 / 1e6);
    println!(
        "floor, in parallel: tar -c | zstd -3 {:.2} s, mariadb-dump | zstd -3 {:.2} s",
        f(tar_t),
        f(dump_t)
    );
    println!(
        "backup task:  {backup_t:.2} s  vs floor {:.2} s  = {:.2}x",
        f(backup_floor),
        backup_t / f(backup_floor)
    );
    println!(
        "floor, in parallel: zstd -d | tar -x {:.2} s, zstd -d | mariadb import {:.2} s",
        f(untar_t),
        f(import_t)
    );
    println!(
        "restore unpack+import step: {unpack_t:.2} s  vs floor {:.2} s  = {:.2}x",
        f(restore_floor),
        unpack_t / f(restore_floor)
    );
    println!("restore task, whole (maintenance, safety backup {safety_t:.2} s, unpack+import, swap, verify, cleanup): {restore_total:.2} s");
    Ok(())
}
