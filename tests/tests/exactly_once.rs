//! Every effect exactly once: a task's message delivered many times at once runs the task
//! once; a worker stopped past its lease (SIGSTOP) changes nothing once it resumes, while
//! another finishes the task; a site's tasks run in order across services, even while the
//! service that owns the earlier one is down; messages that do not match the task they name
//! are dead-lettered with a reason and kept for an operator.

use serde_json::{json, Value};
use std::time::Duration;
use tests::{id, Stack, StackOptions};

/// How many extra copies of each task's message the broker "redelivers".
const COPIES: usize = 4;

/// Posts a task, sends `COPIES` more copies of its message at once, waits for it to end, and
/// checks it ran once: one claim, and each of its steps started once.
async fn once(stack: &Stack, path: &str, body: Value) -> Value {
    let (status, r) = stack.call("POST", path, Some(body.clone())).await;
    assert_eq!(status, 202, "{body}: {r}");
    let task = r["task"].clone();
    stack.duplicate_task_message(&task, COPIES).await;
    let done = stack.wait_task(id(&task), Duration::from_secs(180)).await;
    assert_eq!(
        done["attempts"], 1,
        "{} ran more than once: {done}",
        task["type"]
    );
    let log = stack.task_log_text(id(&task)).await;
    let mut started: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("step '") && l.ends_with("' started"))
        .collect();
    let all = started.len();
    started.sort();
    started.dedup();
    assert_eq!(all, started.len(), "a step ran twice:\n{log}");
    done
}

async fn once_ok(stack: &Stack, path: &str, body: Value) -> Value {
    let done = once(stack, path, body).await;
    stack.assert_success(&done).await;
    done
}

fn archives(stack: &Stack) -> Vec<String> {
    let mut all = Vec::new();
    for d in tests::entries_in(&stack.backup_dir()) {
        for f in tests::entries_in(&stack.backup_dir().join(&d)) {
            all.push(format!("{d}/{f}"));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_type_runs_once_however_often_its_message_comes() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    const DOMAIN: &str = "once.acme.example";

    // install
    let installed = once_ok(
        &stack,
        "/sites",
        json!({"domain": DOMAIN, "client": "acme", "platform": "example", "profile": "standard", "language": "en", "db_server": "local"}),
    )
    .await;
    let site = installed["site"].as_i64().unwrap_or_default();
    let tasks = format!("/sites/{site}/tasks");
    assert_eq!(stack.page(DOMAIN, "/").await.status, 200);

    for body in [
        json!({"type": "verify"}),
        json!({"type": "login-reset"}),
        json!({"type": "disable"}),
        json!({"type": "enable"}),
    ] {
        once_ok(&stack, &tasks, body).await;
    }

    // backup: one archive and one record (the disable made one before)
    let count = |v: Value| v.as_array().map(Vec::len).unwrap_or(0);
    let before = count(stack.backups(site).await);
    let backup = once_ok(&stack, &tasks, json!({"type": "backup"})).await;
    let backup_id = backup["result"]["backup"].clone();
    assert_eq!(count(stack.backups(site).await), before + 1);
    assert_eq!(archives(&stack).len(), before + 1, "{:?}", archives(&stack));
    once_ok(
        &stack,
        &tasks,
        json!({"type": "verify-backup", "backup": backup_id}),
    )
    .await;
    // restore makes its own safety backup: one more, not two
    once_ok(
        &stack,
        &tasks,
        json!({"type": "restore", "backup": backup_id}),
    )
    .await;
    assert_eq!(count(stack.backups(site).await), before + 2);
    assert_eq!(archives(&stack).len(), before + 2, "{:?}", archives(&stack));
    assert_eq!(stack.page(DOMAIN, "/").await.status, 200);

    // a platform of its own: verify, lock, unlock
    let root = stack.dir.join("platforms/second");
    tests::copy_dir(&tests::repo_root().join("platforms/example"), &root).expect("a platform");
    let registered = once_ok(
        &stack,
        "/platforms",
        json!({"name": "second", "server": "local", "root": root.to_string_lossy(), "driver": "hooks"}),
    )
    .await;
    let second = registered["platform"].as_i64().unwrap_or_default();
    let second_tasks = format!("/platforms/{second}/tasks");
    once_ok(&stack, &second_tasks, json!({"type": "lock"})).await;
    once_ok(&stack, &second_tasks, json!({"type": "unlock"})).await;

    // migrate, clone
    once_ok(
        &stack,
        &tasks,
        json!({"type": "migrate", "platform": "second"}),
    )
    .await;
    assert_eq!(stack.site(site).await["platform"], "second");
    assert_eq!(stack.page(DOMAIN, "/").await.status, 200);
    let cloned = once_ok(
        &stack,
        &tasks,
        json!({"type": "clone", "platform": "second", "domain": "twin.acme.example"}),
    )
    .await;
    assert_eq!(stack.page("twin.acme.example", "/").await.status, 200);
    let twin = cloned["result"]["site"]
        .as_i64()
        .or_else(|| cloned["result"]["clone"].as_i64());

    // a batch back to the example platform: one child per site, each run once
    let batch = once_ok(
        &stack,
        &second_tasks,
        json!({"type": "migrate-sites", "target": "example", "concurrency": 2}),
    )
    .await;
    let (_, children) = stack
        .call("GET", &format!("/tasks?parent={}", id(&batch)), None)
        .await;
    let children = children.as_array().cloned().unwrap_or_default();
    assert_eq!(children.len(), 2, "{children:?}");
    for child in &children {
        assert_eq!(child["attempts"], 1, "{child}");
        assert_eq!(child["status"], "success", "{child}");
    }

    // backup-delete of the first backup (migrates and clones made theirs meanwhile)
    let before = count(stack.backups(site).await);
    once_ok(
        &stack,
        &tasks,
        json!({"type": "backup-delete", "backups": [backup_id]}),
    )
    .await;
    assert_eq!(count(stack.backups(site).await), before - 1);

    // delete both sites (each makes one last backup), then the emptied platform
    once_ok(&stack, &tasks, json!({"type": "disable"})).await;
    once_ok(&stack, &tasks, json!({"type": "delete"})).await;
    let twin = twin.expect("the clone names its site");
    for body in [json!({"type": "disable"}), json!({"type": "delete"})] {
        once_ok(&stack, &format!("/sites/{twin}/tasks"), body).await;
    }
    once_ok(&stack, &second_tasks, json!({"type": "delete"})).await;
    assert_eq!(stack.page(DOMAIN, "/").await.status, 404);
    let left = stack.leftovers().await;
    assert!(left.is_empty(), "{left:#?}");
    stack.teardown().await;
}

/// A worker stopped (SIGSTOP) past its lease while it runs a task: another instance takes the
/// task over and finishes it; the stopped one, continued, records nothing, writes no archive
/// that stays, and stops.
async fn stopped_past_the_lease(service: &'static str, second: &'static str, slow: &str) {
    let options = StackOptions {
        env: vec![("*", "HOSTING_LEASE_SECS".into(), "2".into())],
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;
    stack.create_client("acme").await;
    let site = stack.install_site("paused.acme.example", "acme").await;
    let sid = id(&site);
    // The platform's hooks are slow enough for the stop to land inside the task.
    stack
        .fixture_platform("slow", |m| {
            m.replace(
                r#"update_db = ["php", "bin/site.php", "update-db"]"#,
                r#"update_db = ["sh", "-c", "sleep 3 && exec php bin/site.php update-db"]"#,
            )
        })
        .await;
    let body = match service {
        "migrator" => json!({"type": "migrate", "platform": "slow"}),
        _ => json!({"type": "backup"}),
    };
    if service == "backupper" {
        // Enough data that the archive takes a while to write.
        let files = stack
            .site_dir(&stack.example_root, "paused.acme.example")
            .join("files");
        let _ = std::fs::create_dir_all(&files);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..64 * 1024 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(files.join("big.bin"), &data).expect("a big file");
    }
    let before = stack
        .backups(sid)
        .await
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let (status, r) = stack.post_site_task(sid, body).await;
    assert_eq!(status, 202, "{r}");
    let task = id(&r["task"]);
    stack.wait_log(task, slow, Duration::from_secs(60)).await;
    stack.signal_only(service, libc::SIGSTOP);
    // A second instance takes the task over once the lease lapses, and finishes it.
    stack
        .start_as(second, service, &[])
        .expect("a second instance");
    let done = stack.wait_task(task, Duration::from_secs(180)).await;
    stack.assert_success(&done).await;
    assert!(done["attempts"].as_i64().unwrap_or_default() >= 2, "{done}");
    let log_before = stack.task_log_text(task).await;
    let records = stack.backups(sid).await;
    let kept = archives(&stack);

    // The first one comes back: it finds its lease gone and changes nothing.
    stack.signal_only(service, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = stack.call("GET", &format!("/tasks/{task}"), None).await.1;
    assert_eq!(after["status"], "success", "{after}");
    assert_eq!(after["finished"], done["finished"], "{after}");
    assert_eq!(stack.backups(sid).await, records);
    assert_eq!(
        records.as_array().map(Vec::len).unwrap_or(0),
        before + 1,
        "one backup for the task: {records}"
    );
    assert_eq!(archives(&stack), kept);
    assert_eq!(stack.task_log_text(task).await, log_before);
    let own_log =
        std::fs::read_to_string(stack.dir.join(format!("logs/{service}.log"))).unwrap_or_default();
    assert!(
        own_log.contains("lease expired") || own_log.contains("lost the task's lease"),
        "the stopped worker did not notice: {own_log}"
    );
    assert_eq!(stack.page("paused.acme.example", "/").await.status, 200);
    let left = stack.leftovers().await;
    assert!(left.is_empty(), "{left:#?}");
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backupper_stopped_past_its_lease_makes_no_second_backup() {
    stopped_past_the_lease("backupper", "backupper-2", "backing up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrator_stopped_past_its_lease_changes_nothing_more() {
    stopped_past_the_lease("migrator", "migrator-2", "step 'update-db' started").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_tasks_run_in_order_across_services() {
    let mut stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let site = stack.install_site("order.acme.example", "acme").await;
    let sid = id(&site);
    // The installer is down: the verify waits, and the backup after it waits for it.
    stack.kill("installer");
    let (_, verify) = stack.post_site_task(sid, json!({"type": "verify"})).await;
    let (_, backup) = stack.post_site_task(sid, json!({"type": "backup"})).await;
    let (verify, backup) = (id(&verify["task"]), id(&backup["task"]));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, b) = stack.call("GET", &format!("/tasks/{backup}"), None).await;
    assert_eq!(
        b["status"], "queued",
        "the backup ran before the verify: {b}"
    );
    assert!(stack
        .backups(sid)
        .await
        .as_array()
        .is_some_and(Vec::is_empty));
    stack.start("installer").expect("the installer again");
    let v = stack.wait_task(verify, Duration::from_secs(60)).await;
    let b = stack.wait_task(backup, Duration::from_secs(60)).await;
    stack.assert_success(&v).await;
    stack.assert_success(&b).await;
    assert!(
        b["started"].as_str() >= v["finished"].as_str(),
        "the backup started before the verify ended: {v} {b}"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_do_not_match_their_task_are_kept_as_dead_letters() {
    // No redispatch of a waiting task during the test: its lost message stays lost.
    let options = StackOptions {
        env: vec![(
            "gateway",
            "HOSTING_REDISPATCH_AFTER_SECS".into(),
            "600".into(),
        )],
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;
    stack.create_client("acme").await;
    let site = stack.install_site("letters.acme.example", "acme").await;
    let sid = id(&site);

    // A message of a version nobody speaks, naming a real (finished) task.
    let (_, r) = stack.post_site_task(sid, json!({"type": "verify"})).await;
    let verify = id(&r["task"]);
    let v1 = stack.wait_task(verify, Duration::from_secs(60)).await;
    stack.assert_success(&v1).await;
    stack
        .publish(
            "tasks",
            "installer",
            "task.v9",
            json!({"task": verify, "type": "verify"})
                .to_string()
                .as_bytes(),
        )
        .await;

    // A backup waits (the backupper is down); a message calling it a verify, sent to the
    // installer, must not touch it.
    stack.kill("backupper");
    let (_, r) = stack.post_site_task(sid, json!({"type": "backup"})).await;
    let backup = id(&r["task"]);
    let lie = json!({"task": backup, "type": "verify"}).to_string();
    stack
        .publish(
            "tasks",
            "installer",
            contract::TASK_MESSAGE_TYPE,
            lie.as_bytes(),
        )
        .await;

    // Both are kept, each with its reason.
    let letters = wait_letters(&stack, |l| l.len() >= 2).await;
    let about = |task: i64| {
        letters
            .iter()
            .filter(|l| l["task"] == task)
            .cloned()
            .collect::<Vec<_>>()
    };
    let lie_letters = about(backup);
    assert_eq!(lie_letters.len(), 1, "{letters:?}");
    assert!(
        lie_letters[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is a backup") && r.contains("verify")),
        "{letters:?}"
    );
    let version_letters = about(verify);
    assert_eq!(version_letters.len(), 1, "{letters:?}");
    assert!(
        version_letters[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("task.v9")),
        "{letters:?}"
    );
    // An RPC of a version the agent does not read is refused too, and kept (an agent may not
    // publish dead letters: it rejects, the broker dead-letters, and its log says why).
    stack
        .publish(
            "rpc",
            "webconf.local",
            "webconf.v2",
            br#"{"op": "php-info"}"#,
        )
        .await;
    let rpc_letters = wait_letters(&stack, |l| {
        l.iter().any(|x| x["message_type"] == "webconf.v2")
    })
    .await;
    assert!(
        rpc_letters.iter().any(|x| x["message_type"] == "webconf.v2"
            && x["queue"]
                .as_str()
                .is_some_and(|q| q.ends_with(".rpc.webconf.local"))
            && x["reason"].as_str().is_some_and(|r| r.contains("rejected"))),
        "{rpc_letters:?}"
    );
    let webconf_log =
        std::fs::read_to_string(stack.dir.join("logs/webconf.log")).unwrap_or_default();
    assert!(
        webconf_log.contains("webconf.v2") && webconf_log.contains("webconf.v1"),
        "webconf's log does not say why"
    );
    // The backup it lied about is untouched, and runs once the backupper is back.
    let (_, b) = stack.call("GET", &format!("/tasks/{backup}"), None).await;
    assert_eq!(b["status"], "queued", "{b}");
    stack.start("backupper").expect("the backupper again");
    let b = stack.wait_task(backup, Duration::from_secs(60)).await;
    stack.assert_success(&b).await;

    // A disable's own message is lost in transit and a garbled copy arrives instead: the task
    // fails with the reason, and the garbled message is kept.
    stack.kill("installer");
    let (_, r) = stack.post_site_task(sid, json!({"type": "disable"})).await;
    let garbled_task = id(&r["task"]);
    stack.wait_dispatched(garbled_task).await;
    stack.purge("tasks.installer").await;
    let garbled = format!("{{\"task\": {garbled_task}, \"type\": \"disable\", ");
    stack
        .publish(
            "tasks",
            "installer",
            contract::TASK_MESSAGE_TYPE,
            garbled.as_bytes(),
        )
        .await;
    stack.start("installer").expect("the installer again");
    let d = stack.wait_task(garbled_task, Duration::from_secs(60)).await;
    assert_eq!(d["status"], "error", "{d}");
    assert!(
        d["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not parse")),
        "{d}"
    );
    let all = wait_letters(&stack, |l| l.iter().any(|x| x["task"] == garbled_task)).await;
    assert!(
        all.iter()
            .any(|x| x["task"] == garbled_task && x["body"].as_str() == Some(garbled.as_str())),
        "{all:?}"
    );
    assert_eq!(stack.site(sid).await["status"], "enabled");

    // Replayed and dropped by an operator.
    let lie_id = lie_letters[0]["id"].as_i64().unwrap_or_default();
    let (status, r) = stack
        .call("POST", &format!("/dead-letters/{lie_id}/replay"), None)
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, _) = stack
        .call("DELETE", &format!("/dead-letters/{lie_id}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = stack
        .call("DELETE", &format!("/dead-letters/{lie_id}"), None)
        .await;
    assert_eq!(status, 404);
    // The replayed lie is dead-lettered again, and still leaves the backup alone.
    wait_letters(&stack, |l| {
        l.iter().any(|x| x["task"] == backup && x["id"] != lie_id)
    })
    .await;
    assert_eq!(stack.backups(sid).await.as_array().map(Vec::len), Some(1));
    stack.teardown().await;
}

/// The dead letters once `enough` holds for them (within 30 s).
async fn wait_letters(stack: &Stack, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, letters) = stack.call("GET", "/dead-letters", None).await;
        assert_eq!(status, 200, "{letters}");
        let letters = letters.as_array().cloned().unwrap_or_default();
        if enough(&letters) {
            return letters;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead letters are not as expected: {letters:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
