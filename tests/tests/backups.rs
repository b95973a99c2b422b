//! Backups that can be trusted: backup, change, restore; hostile archives refused; a failure
//! at each restore step leaves the site as it was.

use serde_json::json;
use std::io::Write;
use tests::{Stack, StackOptions};

const DOMAIN: &str = "data.acme.example";

/// Installs a site with a file in files/; returns (stack site id, site dir).
async fn site_with_a_file(stack: &Stack) -> (i64, std::path::PathBuf) {
    stack.create_client("acme").await;
    let site = stack.install_site(DOMAIN, "acme").await;
    let dir = stack.example_root.join("sites").join(DOMAIN);
    std::fs::write(dir.join("files/note.txt"), "before").expect("writing a site file");
    (site["id"].as_i64().unwrap_or_default(), dir)
}

async fn change_the_site(stack: &Stack, site: i64, dir: &std::path::Path) {
    let (_, s) = stack.call("GET", &format!("/sites/{site}"), None).await;
    let db = s["db_name"].as_str().unwrap_or_default().to_owned();
    stack
        .mariadb_exec(&format!(
            "UPDATE `{db}`.example_config SET value = 'Changed name' WHERE name = 'site_name'"
        ))
        .await;
    std::fs::write(dir.join("files/note.txt"), "after").expect("changing a site file");
}

async fn serves(stack: &Stack, name: &str, note: &str) {
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(&format!("<h1>{name}</h1>")),
        "expected {name:?}: {}",
        page.body
    );
    let file = stack.page(DOMAIN, "/files/note.txt").await;
    assert_eq!((file.status, file.body.as_str()), (200, note));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_change_restore_serves_the_original_again() {
    let stack = Stack::spawn().await;
    let (site, dir) = site_with_a_file(&stack).await;
    let done = stack.run_site_task(site, json!({"type": "backup"})).await;
    assert_eq!(done["status"], "success", "{done}");
    let backups = stack.backups(site).await;
    let first = backups[0].clone();
    assert_eq!(first["description"], "Generated on request");
    assert!(first["size"].as_i64().unwrap_or_default() > 0);
    assert_eq!(first["checksum"].as_str().unwrap_or_default().len(), 64);
    let archive = stack
        .backup_dir()
        .join(first["key"].as_str().unwrap_or_default());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&archive)
            .expect("the archive exists")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "archives hold credentials");
    // An ordinary .tar.zst: the standard tools read it (the dump's frames spliced in between
    // the files' included).
    let listing = std::process::Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(format!("zstd -d -q -c '{}' | tar -tf -", archive.display()))
        .output()
        .expect("zstd and tar run");
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for entry in ["site/", "database/dump-00001.sql", "hosting-backup.json"] {
        assert!(
            listing.lines().any(|l| l.starts_with(entry)),
            "{entry} missing from:\n{listing}"
        );
    }

    change_the_site(&stack, site, &dir).await;
    serves(&stack, "Changed name", "after").await;
    let done = stack
        .run_site_task(site, json!({"type": "restore", "backup": first["id"]}))
        .await;
    assert_eq!(
        done["status"],
        "success",
        "{done}\n{}",
        stack
            .task_log_text(done["id"].as_i64().unwrap_or_default())
            .await
    );
    serves(&stack, DOMAIN, "before").await;

    let backups = stack.backups(site).await;
    assert_eq!(backups.as_array().map(Vec::len), Some(2));
    assert_eq!(
        backups[0]["description"],
        "Generated before being restored to a previous version"
    );
    assert!(backups[0]["created"].as_str() > first["created"].as_str());
    // The old database is gone; only the restored one is left, and no scratch directories.
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert_eq!((dbs.len(), users.len()), (1, 1), "{dbs:?} {users:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().expect("sites dir"))
        .expect("sites")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.') && n.to_string_lossy() != ".gitkeep")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Restoring the safety backup brings the change back; backup-delete removes archives.
    let done = stack
        .run_site_task(site, json!({"type": "restore", "backup": backups[0]["id"]}))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    serves(&stack, "Changed name", "after").await;
    let done = stack
        .run_site_task(
            site,
            json!({"type": "backup-delete", "backups": [first["id"]]}),
        )
        .await;
    assert_eq!(done["status"], "success", "{done}");
    assert!(!archive.exists());
    let backups = stack.backups(site).await;
    assert!(backups
        .as_array()
        .is_some_and(|b| b.iter().all(|b| b["id"] != first["id"])));
    // Arguments are checked: another site's or an unknown backup is refused.
    let (status, r) = stack
        .post_site_task(site, json!({"type": "restore", "backup": 999999}))
        .await;
    assert_eq!(status, 422, "{r}");
    stack.teardown().await;
}

/// Writes a raw tar header with any name (the tar crate refuses to build hostile names).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let bytes = h.as_mut_bytes();
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes[157..157 + link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn hostile(entries: &[(&str, tar::EntryType, &str, Vec<u8>)]) -> Vec<u8> {
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "site/files/ok.txt",
        tar::EntryType::Regular,
        "",
        b"fine",
    );
    for (name, kind, link, data) in entries {
        raw_entry(&mut tar, name, *kind, link, data);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.write_all(&tar).expect("compressing");
    enc.finish().expect("zstd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_and_nothing_changes() {
    let options = StackOptions {
        env: vec![
            (
                "backupper",
                "HOSTING_RESTORE_MAX_ENTRIES".into(),
                "20".into(),
            ),
            (
                "backupper",
                "HOSTING_RESTORE_MAX_BYTES".into(),
                "1000000".into(),
            ),
        ],
        ..Default::default()
    };
    let stack = Stack::spawn_with(options).await;
    let (site, dir) = site_with_a_file(&stack).await;
    let canary = stack.dir.join("canary");
    let outside = canary.to_string_lossy().into_owned();
    let many: Vec<(String, tar::EntryType, &str, Vec<u8>)> = (0..30)
        .map(|i| {
            (
                format!("site/files/f{i}"),
                tar::EntryType::Regular,
                "",
                b"x".to_vec(),
            )
        })
        .collect();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            hostile(&[(
                "site/../../../../canary",
                tar::EntryType::Regular,
                "",
                b"pwned".to_vec(),
            )]),
            "climbs out with '..'",
        ),
        (
            "absolute",
            hostile(&[(
                outside.as_str(),
                tar::EntryType::Regular,
                "",
                b"pwned".to_vec(),
            )]),
            "absolute path",
        ),
        (
            "symlink-up",
            hostile(&[(
                "site/files/up",
                tar::EntryType::Symlink,
                "../../../../..",
                vec![],
            )]),
            "outside the site directory",
        ),
        (
            "symlink-absolute",
            hostile(&[("site/files/etc", tar::EntryType::Symlink, "/etc", vec![])]),
            "outside the site directory",
        ),
        (
            "write-through-symlink",
            hostile(&[
                ("site/files/here", tar::EntryType::Symlink, ".", vec![]),
                (
                    "site/files/here/x",
                    tar::EntryType::Regular,
                    "",
                    b"x".to_vec(),
                ),
            ]),
            "through the symlink",
        ),
        (
            "hardlink",
            hostile(&[("site/files/pw", tar::EntryType::Link, "/etc/passwd", vec![])]),
            "hard link",
        ),
        (
            "device",
            hostile(&[("site/files/dev", tar::EntryType::Char, "", vec![])]),
            "device file",
        ),
        (
            "fifo",
            hostile(&[("site/files/fifo", tar::EntryType::Fifo, "", vec![])]),
            "fifo",
        ),
        (
            "stray",
            hostile(&[("etc/cron.d/x", tar::EntryType::Regular, "", b"x".to_vec())]),
            "neither site data",
        ),
        (
            "too-big",
            hostile(&[(
                "site/files/big",
                tar::EntryType::Regular,
                "",
                vec![7u8; 1_200_000],
            )]),
            "more than 1000000 bytes",
        ),
    ];
    let refs: Vec<_> = many
        .iter()
        .map(|(n, k, l, d)| (n.as_str(), *k, *l, d.clone()))
        .collect();
    cases.push(("too-many", hostile(&refs), "more than 20 entries"));
    let before = std::fs::read_dir(&dir).expect("site dir").count();
    for (i, (label, bytes, says)) in cases.iter().enumerate() {
        let key = format!("{DOMAIN}/hostile-{label}.tar.zst");
        let path = stack.backup_dir().join(&key);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("backup dir");
        std::fs::write(&path, bytes).expect("writing the archive");
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        stack
            .state_exec(&format!(
                "INSERT INTO backups (site_id, key, size, checksum, description) VALUES ({site}, '{key}', {}, '{sha}', 'crafted {i}')",
                bytes.len()
            ))
            .await;
        let list = stack.backups(site).await;
        let id = list
            .as_array()
            .and_then(|l| l.iter().find(|b| b["key"] == key.as_str()))
            .map(|b| b["id"].clone())
            .expect("the crafted record");
        let done = stack
            .run_site_task(site, json!({"type": "restore", "backup": id}))
            .await;
        assert_eq!(done["status"], "error", "{label}: {done}");
        let error = done["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says),
            "{label}: {error:?} should say {says:?}"
        );
        assert!(
            !canary.exists(),
            "{label}: something was written outside the site directory"
        );
        serves(&stack, DOMAIN, "before").await;
        assert_eq!(
            std::fs::read_dir(&dir).expect("site dir").count(),
            before,
            "{label}"
        );
    }
    // A record whose checksum does not match its file.
    stack
        .state_exec("UPDATE backups SET checksum = repeat('0', 64) WHERE description = 'crafted 0'")
        .await;
    let list = stack.backups(site).await;
    let id = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["description"] == "crafted 0"))
        .map(|b| b["id"].clone())
        .expect("record");
    let done = stack
        .run_site_task(site, json!({"type": "restore", "backup": id}))
        .await;
    assert!(
        done["error"]
            .as_str()
            .unwrap_or_default()
            .contains("checksum"),
        "{done}"
    );
    serves(&stack, DOMAIN, "before").await;
    let (dbs, _) = stack.mariadb_leftovers().await;
    assert_eq!(dbs.len(), 1, "a refused restore left a database: {dbs:?}");
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_restore_step_leaves_the_site_serving_as_before() {
    let mut stack = Stack::spawn().await;
    let (site, dir) = site_with_a_file(&stack).await;
    let done = stack.run_site_task(site, json!({"type": "backup"})).await;
    let backup = done["result"]["backup"].clone();
    change_the_site(&stack, site, &dir).await;
    // Every step but the last: cleanup runs after the restored site serves and cannot fail
    // the restore (what it cannot remove is logged), so there is nothing to unwind there.
    let steps = tests::step_names(contract::steps::RestoreStep::ALL);
    for step in steps.iter().filter(|s| **s != "cleanup") {
        stack.signal("backupper", libc::SIGTERM);
        let fail_at = format!("restore:{step}");
        stack
            .start_with("backupper", &[("HOSTING_SAGA_FAIL_AT", &fail_at)])
            .expect("restarting the backupper");
        let done = stack
            .run_site_task(site, json!({"type": "restore", "backup": backup}))
            .await;
        assert_eq!(done["status"], "error", "{step}: {done}");
        assert!(
            done["error"]
                .as_str()
                .unwrap_or_default()
                .contains("failure injected"),
            "{done}"
        );
        serves(&stack, "Changed name", "after").await;
        let (dbs, users) = stack.mariadb_leftovers().await;
        assert_eq!(
            (dbs.len(), users.len()),
            (1, 1),
            "{step}: {dbs:?} {users:?}"
        );
        let scratch: Vec<_> = std::fs::read_dir(dir.parent().expect("sites"))
            .expect("sites")
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with('.') && e.file_name() != ".gitkeep"
            })
            .map(|e| e.file_name())
            .collect();
        assert!(scratch.is_empty(), "{step}: {scratch:?}");
    }
    stack.signal("backupper", libc::SIGTERM);
    stack
        .start_with("backupper", &[("HOSTING_SAGA_REPEAT_ACTIONS", "1")])
        .expect("restarting the backupper");
    let done = stack
        .run_site_task(site, json!({"type": "restore", "backup": backup}))
        .await;
    assert_eq!(done["status"], "success", "every action run twice: {done}");
    serves(&stack, DOMAIN, "before").await;
    // The database kept its name through all of it (an application may take its identity
    // from it, as MediaWiki does).
    assert_eq!(
        stack.site(site).await["db_name"],
        format!("{}_{site}", stack.prefix)
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_make_automated_backups_and_retention_keeps_exactly_the_expected_ones() {
    let options = StackOptions {
        env: vec![(
            "backupper",
            "HOSTING_SCHEDULER_TICK_SECS".into(),
            "0.3".into(),
        )],
        ..Default::default()
    };
    let stack = Stack::spawn_with(options).await;
    let (site, _) = site_with_a_file(&stack).await;
    let path = format!("/sites/{site}/backup-schedule");
    let (status, r) = stack
        .call(
            "PUT",
            &path,
            Some(json!({"schedule": {"interval": "soon"}})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    // Every two seconds is below the default floor (5 minutes): refused, naming the setting,
    // until the admin lowers the floor.
    let fast = json!({"schedule": {"interval": 2, "jitter": 1}});
    let (status, r) = stack.call("PUT", &path, Some(fast.clone())).await;
    assert_eq!(status, 422, "{r}");
    assert!(r.to_string().contains("backup_interval_floor"), "{r}");
    let (status, r) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"backup_interval_floor": 1})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = stack.call("PUT", &path, Some(fast)).await;
    assert_eq!((status, r["source"].as_str()), (200, Some("site")), "{r}");

    let automated = |list: &serde_json::Value| {
        list.as_array()
            .map(|l| {
                l.iter()
                    .filter(|b| b["description"] == "Automated backup")
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = stack.backups(site).await;
        if automated(&list) >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no automated backups: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, r) = stack
        .call("PUT", &path, Some(json!({"schedule": "off"})))
        .await;
    assert_eq!(r["source"], "off");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // a backup queued just before may finish
    let list = stack.backups(site).await;
    let count = list.as_array().map(Vec::len).unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let list = stack.backups(site).await;
    assert_eq!(
        list.as_array().map(Vec::len).unwrap_or(0),
        count,
        "backups went on after the schedule was switched off"
    );

    // Retention, with ages injected into the records: newest first, 0 h, 2 h, 26 h, 30 h,
    // 9 days, 10 days, ... Keep the newest; past 1 h keep one per day; past 7 days one per
    // 30 days: positions 0, 1, 2 and 4 stay.
    while list.as_array().map(Vec::len).unwrap_or(0) < 6 {
        let done = stack.run_site_task(site, json!({"type": "backup"})).await;
        assert_eq!(done["status"], "success");
        let l = stack.backups(site).await;
        if l.as_array().map(Vec::len).unwrap_or(0) >= 6 {
            break;
        }
    }
    let list = stack.backups(site).await;
    let ids: Vec<i64> = list
        .as_array()
        .map(|l| l.iter().filter_map(|b| b["id"].as_i64()).collect())
        .unwrap_or_default();
    for (i, id) in ids.iter().enumerate() {
        let hours = [0, 2, 26, 30, 216]
            .get(i)
            .copied()
            .unwrap_or(240 + i as i64);
        stack.state_exec(&format!("UPDATE backups SET created_at = now() - make_interval(hours => {hours}) WHERE id = {id}")).await;
    }
    let keep: Vec<i64> = [0, 1, 2, 4].iter().map(|i| ids[*i]).collect();
    let policy = json!({"keep_newest": 1, "rules": [{"older_than": "1h", "keep_one_per": "1d"}, {"older_than": "7d", "keep_one_per": "30d"}]});
    let (status, r) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"backup_retention": {"keep_newest": "all"}})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    let (status, r) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"backup_retention": policy})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let remaining = loop {
        let l = stack.backups(site).await;
        let now: Vec<i64> = l
            .as_array()
            .map(|l| l.iter().filter_map(|b| b["id"].as_i64()).collect())
            .unwrap_or_default();
        if now.len() == keep.len() || std::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(remaining, keep, "retention kept the wrong backups");
    // The records go before the purge task records its end: it is waited for.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let purges = loop {
        let (_, purges) = stack
            .call(
                "GET",
                &format!("/tasks?site={site}&type=backup-delete"),
                None,
            )
            .await;
        let ended = purges.as_array().is_some_and(|p| {
            p.iter().all(|t| {
                ["success", "warning", "error"].contains(&t["status"].as_str().unwrap_or(""))
            })
        });
        if ended || std::time::Instant::now() > deadline {
            break purges;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        purges.as_array().is_some_and(|p| !p.is_empty()
            && p.iter()
                .all(|t| t["requested_by"] == "retention" && t["status"] == "success")),
        "{purges}"
    );
    let archives = std::fs::read_dir(stack.backup_dir().join(DOMAIN))
        .expect("backup dir")
        .count();
    assert_eq!(
        archives,
        keep.len(),
        "purged archives are removed from the store"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_backup_proves_a_backup_restorable_and_cleans_up() {
    let stack = Stack::spawn().await;
    let (site, _) = site_with_a_file(&stack).await;
    let done = stack.run_site_task(site, json!({"type": "backup"})).await;
    let id = done["result"]["backup"].clone();
    let done = stack
        .run_site_task(site, json!({"type": "verify-backup", "backup": id}))
        .await;
    assert_eq!(
        done["status"],
        "success",
        "{done}\n{}",
        stack
            .task_log_text(done["id"].as_i64().unwrap_or_default())
            .await
    );
    assert!(
        done["result"]["tables"].as_i64().unwrap_or_default() >= 4,
        "{done}"
    );
    assert!(
        done["result"]["rows"].as_i64().unwrap_or_default() >= 3,
        "{done}"
    );
    assert_eq!(
        done["result"]["files"], 3,
        "settings.php, .hosting-site and files/note.txt: {done}"
    );
    let list = stack.backups(site).await;
    assert!(list[0]["verified"].is_string(), "{list}");
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert_eq!(
        (dbs.len(), users.len()),
        (1, 1),
        "scratch database left behind: {dbs:?}"
    );
    let scratch: Vec<_> = std::fs::read_dir(stack.backup_dir())
        .expect("store")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".verify"))
        .collect();
    assert!(scratch.is_empty());

    // A damaged archive is not proven.
    let done = stack.run_site_task(site, json!({"type": "backup"})).await;
    let damaged = done["result"]["backup"].clone();
    let list = stack.backups(site).await;
    let key = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["id"] == damaged))
        .map(|b| b["key"].as_str().unwrap_or_default().to_owned())
        .expect("record");
    let path = stack.backup_dir().join(key);
    let mut bytes = std::fs::read(&path).expect("archive");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).expect("damaging the archive");
    let done = stack
        .run_site_task(site, json!({"type": "verify-backup", "backup": damaged}))
        .await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap_or_default()
            .contains("checksum"),
        "{done}"
    );
    let list = stack.backups(site).await;
    assert!(list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["id"] == damaged))
        .is_some_and(|b| b["verified"].is_null()));
    let (dbs, _) = stack.mariadb_leftovers().await;
    assert_eq!(dbs.len(), 1, "{dbs:?}");
    stack.teardown().await;
}
