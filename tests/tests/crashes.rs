//! A crash at every step of every saga: the service that runs the saga aborts (as SIGKILL
//! would) right before and right after each step's action, the harness restarts it, and the
//! task ends in success or a clean undo, with the site serving (or cleanly gone) and nothing
//! left over or made twice: no database, database user, unix user, directory, vhost, PHP pool,
//! half-written archive or backup record that its sites and records do not account for.

use contract::steps::{DeleteStep, InstallStep, MoveStep, RestoreStep, SagaStep};
use serde_json::{json, Value};
use std::time::Duration;
use tests::{id, Stack, StackOptions};

const BACKUP: &[(&str, &str)] = &[
    ("archive", "before"),
    ("archive", "after"),
    ("record", "after"),
];

fn points<S: SagaStep>(steps: &[S]) -> Vec<(String, &'static str)> {
    let steps = tests::step_names(steps);
    steps
        .iter()
        .flat_map(|s| [(s.to_string(), "before"), (s.to_string(), "after")])
        .collect()
}

async fn stack() -> Stack {
    Stack::spawn_with(StackOptions {
        env: vec![("*", "HOSTING_LEASE_SECS".into(), "5".into())],
        ..Default::default()
    })
    .await
}

/// Restarts `service` to crash at `point`, posts the task, waits for the crash, restarts the
/// service as it normally runs, and returns the task once it ended.
async fn crash_then_resume(
    stack: &mut Stack,
    service: &'static str,
    point: &str,
    path: &str,
    body: Value,
) -> Value {
    stack.kill(service);
    stack
        .start_with(service, &[("HOSTING_SAGA_CRASH_AT", point)])
        .expect("starting the service to crash");
    let (status, r) = stack.call("POST", path, Some(body.clone())).await;
    assert_eq!(status, 202, "{body}: {r}");
    let task = id(&r["task"]);
    assert!(
        stack.wait_exit(service, Duration::from_secs(90)).await,
        "{service} never reached {point}"
    );
    stack.start(service).expect("restarting the service");
    let done = stack.wait_task(task, Duration::from_secs(180)).await;
    let status = done["status"].as_str().unwrap_or_default();
    assert!(
        status == "success" || status == "error",
        "at {point}: {done}"
    );
    if status == "error" {
        // A clean undo says so; anything else (an undo that failed) is a leftover.
        let log = stack.task_log_text(task).await;
        assert!(
            !log.contains("could not be undone") && !log.contains("undo failed"),
            "at {point} the undo did not finish:\n{log}"
        );
    }
    done
}

async fn assert_clean(stack: &Stack, point: &str) {
    let left = stack.leftovers().await;
    assert!(left.is_empty(), "after a crash at {point}: {left:#?}");
}

fn backups(v: &Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_install_and_delete_step_is_recovered() {
    let mut stack = stack().await;
    stack.create_client("acme").await;
    for (n, (step, when)) in points(InstallStep::ALL).into_iter().enumerate() {
        let point = format!("install:{step}:{when}");
        let domain = format!("i{n}.acme.example");
        let done = crash_then_resume(
            &mut stack,
            "installer",
            &point,
            "/sites",
            json!({"domain": domain, "client": "acme", "platform": "example", "profile": "standard", "language": "en", "db_server": "local"}),
        )
        .await;
        if done["status"] == "success" {
            assert_eq!(stack.page(&domain, "/").await.status, 200, "{point}");
        }
        assert_clean(&stack, &point).await;
    }
    for (n, (step, when)) in points(DeleteStep::ALL).into_iter().enumerate() {
        let point = format!("delete:{step}:{when}");
        let domain = format!("d{n}.acme.example");
        let site = id(&stack.install_site(&domain, "acme").await);
        let disabled = stack.run_site_task(site, json!({"type": "disable"})).await;
        stack.assert_success(&disabled).await;
        let done = crash_then_resume(
            &mut stack,
            "installer",
            &point,
            &format!("/sites/{site}/tasks"),
            json!({"type": "delete"}),
        )
        .await;
        if done["status"] == "success" {
            assert_eq!(stack.page(&domain, "/").await.status, 404, "{point}");
            assert_eq!(stack.site(site).await["status"], "deleted", "{point}");
        }
        assert_clean(&stack, &point).await;
    }
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_backup_and_restore_step_is_recovered() {
    let mut stack = stack().await;
    stack.create_client("acme").await;
    const DOMAIN: &str = "b.acme.example";
    let site = id(&stack.install_site(DOMAIN, "acme").await);
    let tasks = format!("/sites/{site}/tasks");
    for (step, when) in BACKUP {
        let point = format!("backup:{step}:{when}");
        let before = backups(&stack.backups(site).await);
        let done = crash_then_resume(
            &mut stack,
            "backupper",
            &point,
            &tasks,
            json!({"type": "backup"}),
        )
        .await;
        stack.assert_success(&done).await;
        assert_eq!(
            backups(&stack.backups(site).await),
            before + 1,
            "one backup for {point}"
        );
        assert_clean(&stack, &point).await;
    }
    let (_, list) = stack
        .call("GET", &format!("/sites/{site}/backups"), None)
        .await;
    let backup = list[0]["id"].clone();
    for (step, when) in points(RestoreStep::ALL) {
        let point = format!("restore:{step}:{when}");
        let before = backups(&stack.backups(site).await);
        let done = crash_then_resume(
            &mut stack,
            "backupper",
            &point,
            &tasks,
            json!({"type": "restore", "backup": backup}),
        )
        .await;
        assert_eq!(stack.page(DOMAIN, "/").await.status, 200, "{point}: {done}");
        assert_eq!(stack.site(site).await["status"], "enabled", "{point}");
        let after = backups(&stack.backups(site).await);
        assert!(
            after == before + 1 || (done["status"] == "error" && after <= before + 1),
            "{point}: {before} backups before, {after} after"
        );
        assert_clean(&stack, &point).await;
    }
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_migrate_and_clone_step_is_recovered() {
    let mut stack = stack().await;
    stack.create_client("acme").await;
    const DOMAIN: &str = "m.acme.example";
    let site = id(&stack.install_site(DOMAIN, "acme").await);
    stack.fixture_platform("second", |m| m).await;
    let tasks = format!("/sites/{site}/tasks");
    for (step, when) in points(MoveStep::MIGRATE) {
        let point = format!("migrate:{step}:{when}");
        let from = stack.site(site).await["platform"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let to = if from == "example" {
            "second"
        } else {
            "example"
        };
        let before = backups(&stack.backups(site).await);
        let done = crash_then_resume(
            &mut stack,
            "migrator",
            &point,
            &tasks,
            json!({"type": "migrate", "platform": to}),
        )
        .await;
        let now = stack.site(site).await;
        let expected = if done["status"] == "success" {
            to
        } else {
            from.as_str()
        };
        assert_eq!(now["platform"], expected, "{point}: {done}");
        assert_eq!(now["status"], "enabled", "{point}");
        assert_eq!(stack.page(DOMAIN, "/").await.status, 200, "{point}");
        assert_eq!(
            backups(&stack.backups(site).await),
            before + 1,
            "one backup for {point}"
        );
        assert_clean(&stack, &point).await;
    }
    for (n, (step, when)) in points(MoveStep::CLONE).into_iter().enumerate() {
        let point = format!("clone:{step}:{when}");
        let copy = format!("c{n}.acme.example");
        let done = crash_then_resume(
            &mut stack,
            "migrator",
            &point,
            &tasks,
            json!({"type": "clone", "platform": "second", "domain": copy}),
        )
        .await;
        assert_eq!(stack.page(DOMAIN, "/").await.status, 200, "{point}");
        if done["status"] == "success" {
            assert_eq!(stack.page(&copy, "/").await.status, 200, "{point}");
        }
        assert_clean(&stack, &point).await;
    }
    stack.teardown().await;
}

/// Webconf killed after it wrote a vhost and before nginx loaded it: the change is live once
/// webconf is back and the install it was for ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_written_but_not_loaded_is_loaded_on_retry() {
    let mut stack = stack().await;
    stack.create_client("acme").await;
    stack.kill("webconf");
    stack
        .start_with("webconf", &[("HOSTING_WEBCONF_CRASH_AT", "vhost-written")])
        .expect("webconf, to crash");
    let (_, task) = stack
        .create_site("late.acme.example", "acme", "example")
        .await;
    assert!(
        stack.wait_exit("webconf", Duration::from_secs(90)).await,
        "webconf never wrote the vhost"
    );
    stack.start("webconf").expect("webconf again");
    let done = stack.wait_task(id(&task), Duration::from_secs(180)).await;
    stack.assert_success(&done).await;
    assert_eq!(stack.page("late.acme.example", "/").await.status, 200);
    assert_clean(&stack, "webconf:vhost-written").await;
    stack.teardown().await;
}
