//! A failed install leaves nothing behind: no database, user, directory, vhost, system user or
//! PHP pool; the site is failed and the task's log says why.

use std::time::Duration;
use tests::Stack;

async fn assert_nothing_left(stack: &Stack, root: &std::path::Path, domain: &str) {
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert!(
        dbs.is_empty() && users.is_empty(),
        "databases {dbs:?} and users {users:?} were left behind"
    );
    assert!(
        !stack.site_dir(root, domain).exists(),
        "the site directory was left behind"
    );
    assert!(
        !stack.vhost_path(domain).exists(),
        "the vhost was left behind"
    );
    assert!(
        tests::site_users(&stack.prefix).is_empty(),
        "system users were left behind: {:?}",
        tests::site_users(&stack.prefix)
    );
    assert!(
        tests::entries_in(&stack.dir.join("webconf/pools")).is_empty(),
        "PHP pools were left behind"
    );
    assert_eq!(
        stack.page(domain, "/").await.status,
        404,
        "nginx still serves {domain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_install_action_is_undone() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    // The platform's install command creates its tables, then fails.
    stack
        .fixture_platform("broken", |m| {
            m.replace(
                r#"install = ["php", "bin/site.php", "install"]"#,
                r#"install = ["sh", "-c", "php bin/site.php install > /dev/null && echo 'disk quota exceeded' >&2 && exit 3"]"#,
            )
        })
        .await;
    let root = stack.dir.join("platforms/broken");
    let (site, task) = stack
        .create_site("broken.acme.example", "acme", "broken")
        .await;
    let id = task["id"].as_i64().unwrap_or_default();
    let done = stack.wait_task(id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "error");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("disk quota exceeded") && error.contains("exit status: 3"),
        "{error}"
    );
    let log = stack.task_log_text(id).await;
    for line in [
        "undoing step 'site-directory'",
        "step 'database' undone",
        "warning: disk quota exceeded",
    ] {
        assert!(log.contains(line), "the log lacks {line:?}:\n{log}");
    }
    let (_, site) = stack
        .call("GET", &format!("/sites/{}", site["id"]), None)
        .await;
    assert_eq!(site["status"], "failed");
    assert_nothing_left(&stack, &root, "broken.acme.example").await;
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_install_step_unwinds_cleanly() {
    let mut stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let root = stack.example_root.clone();
    for (n, step) in tests::step_names(contract::steps::InstallStep::ALL)
        .iter()
        .enumerate()
    {
        stack.signal("installer", libc::SIGTERM);
        let fail_at = format!("install:{step}");
        stack
            .start_with("installer", &[("HOSTING_SAGA_FAIL_AT", &fail_at)])
            .expect("restarting the installer");
        let domain = format!("step{n}.acme.example");
        let (site, task) = stack.create_site(&domain, "acme", "example").await;
        let done = stack
            .wait_task(
                task["id"].as_i64().unwrap_or_default(),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(done["status"], "error", "{step}: {done}");
        assert!(
            done["error"]
                .as_str()
                .unwrap_or_default()
                .contains("failure injected"),
            "{done}"
        );
        let (_, site) = stack
            .call("GET", &format!("/sites/{}", site["id"]), None)
            .await;
        assert_eq!(site["status"], "failed", "{step}");
        assert_nothing_left(&stack, &root, &domain).await;
    }
    // Every action run twice is harmless: the install still succeeds.
    stack.signal("installer", libc::SIGTERM);
    stack
        .start_with("installer", &[("HOSTING_SAGA_REPEAT_ACTIONS", "1")])
        .expect("restarting the installer");
    stack.install_site("twice.acme.example", "acme").await;
    assert_eq!(stack.page("twice.acme.example", "/").await.status, 200);
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_ends_its_task_never_the_service() {
    let mut stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let root = stack.example_root.clone();
    // A bug in a saga step: the step fails, the install unwinds, nothing is left.
    stack.signal("installer", libc::SIGTERM);
    stack
        .start_with(
            "installer",
            &[
                ("HOSTING_SAGA_PANIC_AT", "install:vhost"),
                ("HOSTING_PANIC_IN_TASK", "verify"),
            ],
        )
        .expect("restarting the installer");
    let (_, task) = stack
        .create_site("panic.acme.example", "acme", "example")
        .await;
    let done = stack
        .wait_task(
            task["id"].as_i64().unwrap_or_default(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["error"].to_string().contains("internal error"),
        "{done}"
    );
    assert_nothing_left(&stack, &root, "panic.acme.example").await;
    // A bug in a task handler: that task fails, saying so; the installer runs on.
    stack.signal("installer", libc::SIGTERM);
    stack
        .start_with("installer", &[("HOSTING_PANIC_IN_TASK", "verify")])
        .expect("restarting the installer");
    let site = stack.install_site("calm.acme.example", "acme").await;
    let sid = site["id"].as_i64().unwrap_or_default();
    let verify = stack
        .run_site_task(sid, serde_json::json!({"type": "verify"}))
        .await;
    assert_eq!(verify["status"], "error", "{verify}");
    assert!(
        verify["error"].to_string().contains("internal error"),
        "{verify}"
    );
    assert!(stack.exited().is_empty(), "{:?}", stack.exited());
    let backup = stack
        .run_site_task(sid, serde_json::json!({"type": "disable"}))
        .await;
    assert_eq!(backup["status"], "success", "{backup}");
    stack.teardown().await;
}
