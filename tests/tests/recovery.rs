//! Tasks survive crashes: a worker killed mid-task, a broker that is down when a task is
//! accepted, and a gateway that dies between its commit and the publish.

use std::time::Duration;
use tests::proxy::Proxy;
use tests::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installer_killed_mid_install_resumes_the_task() {
    let options = StackOptions {
        env: vec![("*", "HOSTING_LEASE_SECS".into(), "3".into())],
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;
    stack.create_client("acme").await;
    stack
        .fixture_platform("slow", |m| {
            m.replace(
                r#"install = ["php", "bin/site.php", "install"]"#,
                r#"install = ["sh", "-c", "sleep 2 && exec php bin/site.php install"]"#,
            )
        })
        .await;
    let (site, task) = stack
        .create_site("crash.acme.example", "acme", "slow")
        .await;
    let id = task["id"].as_i64().unwrap_or_default();
    stack
        .wait_log(id, "step 'install' started", Duration::from_secs(30))
        .await;
    stack.kill("installer");
    let (_, during) = stack.call("GET", &format!("/tasks/{id}"), None).await;
    assert_eq!(during["status"], "processing", "{during}");
    stack.start("installer").expect("restarting the installer");

    let done = stack.wait_task(id, Duration::from_secs(60)).await;
    stack.assert_success(&done).await;
    assert!(done["attempts"].as_i64().unwrap_or_default() >= 2, "{done}");
    assert!(stack
        .task_log_text(id)
        .await
        .contains("resuming step 'install'"));
    let (_, site) = stack
        .call("GET", &format!("/sites/{}", site["id"]), None)
        .await;
    assert_eq!(site["status"], "enabled");
    assert_eq!(stack.page("crash.acme.example", "/").await.status, 200);
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_accepted_while_the_broker_is_unreachable_runs_when_it_returns() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let options = StackOptions {
        gateway_amqp_url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port)),
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;
    stack.create_client("acme").await;

    // The broker is down for the gateway: the task is accepted and waits in the outbox.
    proxy.down();
    let (_, task) = stack
        .create_site("outage.acme.example", "acme", "example")
        .await;
    let id = task["id"].as_i64().unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, t) = stack.call("GET", &format!("/tasks/{id}"), None).await;
    assert_eq!(t["status"], "queued", "{t}");
    let ready = tests::http::request("GET", &format!("{}/readyz", stack.api), None, &[])
        .await
        .expect("readyz");
    assert!(
        ready.body.contains("\"outbox_pending\":1"),
        "{}",
        ready.body
    );
    proxy.up();
    let done = stack.wait_task(id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "success", "{done}");

    // The gateway dies after committing a task and before publishing it: the next gateway
    // publishes it.
    proxy.down();
    let (_, task) = stack
        .create_site("crash-relay.acme.example", "acme", "example")
        .await;
    let id = task["id"].as_i64().unwrap_or_default();
    stack.kill("gateway");
    proxy.up();
    stack.start("gateway").expect("restarting the gateway");
    stack.wait_healthy().await.expect("the gateway is back");
    let done = stack.wait_task(id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(
        stack.page("crash-relay.acme.example", "/").await.status,
        200
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrator_killed_mid_migrate_resumes_it() {
    let options = StackOptions {
        env: vec![("*", "HOSTING_LEASE_SECS".into(), "3".into())],
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;
    stack.create_client("acme").await;
    let site = stack.install_site("moving.acme.example", "acme").await;
    let sid = site["id"].as_i64().unwrap_or_default();
    stack
        .fixture_platform("slow", |m| {
            m.replace(
                r#"update_db = ["php", "bin/site.php", "update-db"]"#,
                r#"update_db = ["sh", "-c", "sleep 2 && exec php bin/site.php update-db"]"#,
            )
        })
        .await;
    let (status, r) = stack
        .post_site_task(
            sid,
            serde_json::json!({"type": "migrate", "platform": "slow"}),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let id = r["task"]["id"].as_i64().unwrap_or_default();
    stack
        .wait_log(id, "step 'update-db' started", Duration::from_secs(60))
        .await;
    stack.kill("migrator");
    stack.start("migrator").expect("restarting the migrator");
    let done = stack.wait_task(id, Duration::from_secs(120)).await;
    stack.assert_success(&done).await;
    assert!(done["attempts"].as_i64().unwrap_or_default() >= 2, "{done}");
    assert!(stack
        .task_log_text(id)
        .await
        .contains("resuming step 'update-db'"));
    let (_, now) = stack.call("GET", &format!("/sites/{sid}"), None).await;
    assert_eq!(now["platform"], "slow");
    assert_eq!(stack.page("moving.acme.example", "/").await.status, 200);
    // One database: the new one; the old was removed after the switch.
    let (dbs, _) = stack.mariadb_leftovers().await;
    assert_eq!(
        dbs,
        [now["db_name"].as_str().unwrap_or_default().to_owned()]
    );
    stack.teardown().await;
}
