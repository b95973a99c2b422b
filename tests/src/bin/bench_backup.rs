//! The backup benchmark, run by `make bench` after the dispatch benchmark: backup and restore
//! of a generated site (about 100 MB: thousands of small code files and a few hundred
//! incompressible media files, plus a database of about 50 MB), against the floor measured in
//! the same run on the same data: `tar -c | zstd -3` of the directory and
//! `mariadb-dump | zstd -3` of the database in parallel (the slower is the floor), and the
//! matching `zstd -d | tar -x` and import. Each is measured five times, taking turns, each
//! time from a settled disk (see `settle`).

use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{Stack, MYSQL_ADMIN_URL};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const ROUNDS: usize = 5;

#[derive(Default)]
struct Samples {
    tar: Vec<f64>,
    dump: Vec<f64>,
    untar: Vec<f64>,
    import: Vec<f64>,
    backup: Vec<f64>,
    unpack: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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

/// Waits until the disk has caught up with what ran before: the kernel's dirty pages written
/// (`sync`) and InnoDB's dirty pages flushed (its redo log checkpointed). Without it an import
/// pays for the previous import's writes, and which side pays depends on the order; every
/// measurement, the floor's and ours, starts from here.
async fn settle(pool: &sqlx::MySqlPool) -> anyhow::Result<()> {
    let before: f64 = sqlx::query_scalar("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
        .fetch_one(pool)
        .await?;
    sqlx::raw_sql("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        .execute(pool)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, dirty): (String, String) =
            sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                .fetch_one(pool)
                .await?;
        if dirty.trim() == "0" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET GLOBAL innodb_max_dirty_pages_pct = {before}"
    )))
    .execute(pool)
    .await?;
    shell("sync")?;
    Ok(())
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

/// A journaled ext4 file system, loop-mounted for the run, where the stack keeps its sites and
/// backups. A hosting server's ext4 has a journal; this machine's root file system has none,
/// and ext4 without a journal makes every file it creates scan past each inode freed in the
/// last one to six minutes (`recently_deleted` in fs/ext4/ialloc.c). Unpacking the same 4,300
/// files there took from 0.3 s to 5 s depending on what was deleted before, on both sides,
/// which measured the file system's history rather than the two restores.
struct JournaledDisk {
    image: std::path::PathBuf,
    mount: std::path::PathBuf,
}

impl JournaledDisk {
    /// `None` (with a note) where this cannot be done: not root, no loop devices.
    fn mount() -> Option<Self> {
        let disk = Self {
            image: "/var/tmp/hosting-bench-ext4.img".into(),
            mount: "/tmp/hosting-bench-fs".into(),
        };
        let (i, m) = (disk.image.display(), disk.mount.display());
        let made = shell(&format!(
            "(umount {m} 2>/dev/null; true) && truncate -s 6G {i} && mkfs.ext4 -q -F {i} && mkdir -p {m} && mount -o loop {i} {m} && chmod 755 {m}"
        ));
        match made {
            Ok(_) => Some(disk),
            Err(e) => {
                eprintln!(
                    "note: no journaled scratch file system ({e}); measuring on the default one"
                );
                let _ = std::fs::remove_file(&disk.image);
                None
            }
        }
    }
}

impl Drop for JournaledDisk {
    fn drop(&mut self) {
        let _ = shell(&format!("umount {}", self.mount.display()));
        let _ = std::fs::remove_file(&self.image);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let disk = JournaledDisk::mount();
    let stack = Stack::spawn_with(tests::StackOptions {
        root: disk.as_ref().map(|d| d.mount.clone()),
        ..Default::default()
    })
    .await;
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

    // The floor and the control plane take turns going first, ROUNDS times, on the same data,
    // each from a settled disk: what one run leaves behind (MariaDB's dirty pages, freed
    // inodes) slows whatever runs next, and taking turns gives both sides the same share of
    // what settling does not remove. Medians are compared; every sample is printed.
    let scratch = stack.dir.join("floor");
    // The floor unpacks beside the site, where a restore unpacks: on this machine's ext4
    // creating thousands of files costs from 0.3 s to 4 s depending on the block group's
    // history of deleted inodes, so both must create theirs in the same place.
    let floor_untar = site_dir.with_file_name(".bench-floor-untar");
    let (s, sc, fu) = (site_dir.display(), scratch.display(), floor_untar.display());
    let root_dump = "mariadb-dump --single-transaction --quick --routines --triggers --hex-blob";
    let mut samples = Samples::default();
    let mut dump_bytes = 0;
    let mut size = 0;
    let (mut restore_total, mut safety_t) = (0.0, 0.0);
    for round in 0..ROUNDS * 2 {
        // Each round both sides run once, taking turns at going first.
        let floor_turn = (round % 2 == 0) == (round / 2 % 2 == 0);
        if round % 2 == 0 {
            eprintln!("round {}/{ROUNDS}...", round / 2 + 1);
        }
        if floor_turn {
            // Each restore gives the site a new database: dump the one it has now.
            let (_, now) = stack.call("GET", &format!("/sites/{id}"), None).await;
            let db = now["db_name"].as_str().unwrap_or_default().to_owned();
            std::fs::create_dir_all(&scratch)?;
            std::fs::create_dir_all(&floor_untar)?;
            settle(&pool).await?;
            let (tar_t, dump_t) = parallel(
                &format!("tar -C {s} -cf - . | zstd -3 -q -c > {sc}/site.tar.zst"),
                &format!("{root_dump} {db} | zstd -3 -q -c > {sc}/db.sql.zst"),
            )?;
            dump_bytes = std::fs::metadata(scratch.join("db.sql.zst"))?.len();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}_floor`")))
                .execute(&pool)
                .await?;
            settle(&pool).await?;
            let (untar_t, import_t) = parallel(
                &format!("zstd -d -q -c {sc}/site.tar.zst | tar -C {fu} -xf -"),
                &format!("zstd -d -q -c {sc}/db.sql.zst | mariadb {db}_floor"),
            )?;
            // Dropped and removed as a restore's cleanup drops and removes the old copy.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}_floor`")))
                .execute(&pool)
                .await?;
            std::fs::remove_dir_all(&scratch)?;
            std::fs::remove_dir_all(&floor_untar)?;
            eprintln!(
                "  floor: tar -c | zstd {:.2} s, dump | zstd {:.2} s; zstd -d | tar -x {:.2} s, import {:.2} s",
                tar_t.as_secs_f64(),
                dump_t.as_secs_f64(),
                untar_t.as_secs_f64(),
                import_t.as_secs_f64()
            );
            samples.tar.push(tar_t.as_secs_f64());
            samples.dump.push(dump_t.as_secs_f64());
            samples.untar.push(untar_t.as_secs_f64());
            samples.import.push(import_t.as_secs_f64());
        } else {
            settle(&pool).await?;
            let backup = stack.run_site_task(id, json!({"type": "backup"})).await;
            anyhow::ensure!(backup["status"] == "success", "backup failed: {backup}");
            settle(&pool).await?;
            let restore = stack
                .run_site_task(
                    id,
                    json!({"type": "restore", "backup": backup["result"]["backup"]}),
                )
                .await;
            anyhow::ensure!(restore["status"] == "success", "restore failed: {restore}");
            let restore_id = restore["id"].as_i64().unwrap_or_default();
            let backup_t = (ts(&backup, "finished") - ts(&backup, "started")).as_seconds_f64();
            let unpack_t = step_seconds(&stack, restore_id, "unpack").await;
            eprintln!("  control plane: backup task {backup_t:.2} s; restore's unpack+import step {unpack_t:.2} s");
            samples.backup.push(backup_t);
            samples.unpack.push(unpack_t);
            restore_total = (ts(&restore, "finished") - ts(&restore, "started")).as_seconds_f64();
            safety_t = step_seconds(&stack, restore_id, "safety-backup").await;
            size = backup["result"]["size"].as_i64().unwrap_or_default();
        }
    }
    pool.close().await;
    stack.teardown().await;
    let where_ = match &disk {
        Some(_) => "a journaled ext4 (loop-mounted for the run)",
        None => "the default file system",
    };
    drop(disk);

    let m = median;
    let backup_floor: Vec<f64> = samples
        .tar
        .iter()
        .zip(&samples.dump)
        .map(|(a, b)| a.max(*b))
        .collect();
    let restore_floor: Vec<f64> = samples
        .untar
        .iter()
        .zip(&samples.import)
        .map(|(a, b)| a.max(*b))
        .collect();
    println!("\n== backup and restore: site {:.0} MB on disk, database {rows} rows (dump {:.1} MB compressed), archive {:.1} MB; {ROUNDS} rounds, medians; on {where_}", site_bytes as f64 / 1e6, dump_bytes as f64 / 1e6, size as f64 / 1e6);
    println!(
        "floor, in parallel: tar -c | zstd -3 {:.2} s, mariadb-dump | zstd -3 {:.2} s  (floor per round: {})",
        m(&samples.tar),
        m(&samples.dump),
        list(&backup_floor)
    );
    println!(
        "backup task:  {:.2} s  vs floor {:.2} s  = {:.2}x  (per round: {})",
        m(&samples.backup),
        m(&backup_floor),
        m(&samples.backup) / m(&backup_floor),
        list(&samples.backup)
    );
    println!(
        "floor, in parallel: zstd -d | tar -x {:.2} s, zstd -d | mariadb import {:.2} s  (floor per round: {})",
        m(&samples.untar),
        m(&samples.import),
        list(&restore_floor)
    );
    println!(
        "restore unpack+import step: {:.2} s  vs floor {:.2} s  = {:.2}x  (per round: {})",
        m(&samples.unpack),
        m(&restore_floor),
        m(&samples.unpack) / m(&restore_floor),
        list(&samples.unpack)
    );
    println!("restore task, whole, last round (maintenance, safety backup {safety_t:.2} s, unpack+import, swap, verify, cleanup): {restore_total:.2} s");
    Ok(())
}
