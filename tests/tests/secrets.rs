//! Database passwords never appear in process arguments, logs, task logs or API responses.

use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tests::{password_from_settings, Stack};

fn snapshot_processes(seen: &Mutex<HashSet<String>>) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(e.path().join(file)) {
                if !bytes.is_empty() {
                    if let Ok(mut s) = seen.lock() {
                        s.insert(String::from_utf8_lossy(&bytes).replace('\0', " "));
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_passwords_stay_secret() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                snapshot_processes(&seen);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let domains = ["s1.acme.example", "s2.acme.example", "s3.acme.example"];
    let mut tasks = Vec::new();
    for d in domains {
        let (_, t) = stack.create_site(d, "acme", "example").await;
        tasks.push(t["id"].as_i64().unwrap_or_default());
    }
    let mut responses = String::new();
    for t in &tasks {
        let done = stack.wait_task(*t, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "success", "{done}");
        responses.push_str(&done.to_string());
        let log = stack.call("GET", &format!("/tasks/{t}/log"), None).await.1;
        responses.push_str(&log.to_string());
    }
    // Backups and restores run mariadb-dump and mariadb with the site's credentials.
    let settings_of = |d: &str| {
        let path = stack
            .example_root
            .join("sites")
            .join(d)
            .join("settings.php");
        let text = std::fs::read_to_string(path).expect("settings");
        password_from_settings(&text).expect("a password in the settings")
    };
    let mut passwords = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        passwords.push(settings_of(d));
        let site = i as i64 + 1;
        let backup = stack.run_site_task(site, json!({"type": "backup"})).await;
        assert_eq!(backup["status"], "success", "{backup}");
        let id = backup["result"]["backup"].clone();
        let restore = stack
            .run_site_task(site, json!({"type": "restore", "backup": id}))
            .await;
        assert_eq!(restore["status"], "success", "{restore}");
        for t in [&backup, &restore] {
            responses.push_str(&t.to_string());
            let log = stack
                .call("GET", &format!("/tasks/{}/log", t["id"]), None)
                .await
                .1;
            responses.push_str(&log.to_string());
        }
        let backups = stack.backups(site).await;
        responses.push_str(&backups.to_string());
        // The restored tables took the place of the old ones: the site keeps its database, user
        // and password. The restore's own import user had a password of its own.
        let restored = settings_of(d);
        assert_eq!(restored, passwords[passwords.len() - 1]);
        let import = stack
            .state_query(&format!(
                "SELECT value FROM task_secrets WHERE task_id = {} AND name = 'restore-db-password'",
                restore["id"]
            ))
            .await;
        assert_eq!(
            import.len(),
            1,
            "the import's password was kept for the task"
        );
        passwords.extend(import);
    }
    stop.store(true, Ordering::SeqCst);
    scanner.join().expect("scanner");
    responses.push_str(&stack.call("GET", "/sites", None).await.1.to_string());
    responses.push_str(&stack.call("GET", "/tasks", None).await.1.to_string());

    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for program in [
        "bin/site.php install",
        "mariadb-dump --defaults-extra-file=/dev/fd/3",
    ] {
        assert!(
            seen.iter().any(|c| c.contains(program)),
            "the scanner never saw {program} run"
        );
    }
    assert!(
        seen.iter()
            .any(|c| c.starts_with("mariadb --defaults-extra-file=/dev/fd/3")),
        "the scanner never saw an import run"
    );
    let logs = stack.logs();
    assert_eq!(passwords.len(), 6);
    for password in passwords {
        assert_eq!(password.len(), 32);
        let in_proc = seen.iter().any(|c| c.contains(&password));
        assert!(!in_proc, "a password showed in /proc/*/cmdline or environ");
        assert!(
            !logs.contains(&password),
            "a password is in the service logs"
        );
        assert!(
            !responses.contains(&password),
            "a password is in an API response or task log"
        );
    }
    stack.teardown().await;
}
