//! Site install and verify, end to end against PostgreSQL, RabbitMQ, MariaDB, nginx and
//! php-fpm.

use serde_json::json;
use std::time::Duration;
use tests::{password_from_settings, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_site_is_served_from_its_own_database() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let site = stack.install_site("shop.acme.example", "acme").await;

    assert_eq!(site["status"], "enabled");
    assert_eq!(
        site["link"]["kind"], "login",
        "the install's one-time login link is the site's link: {site}"
    );
    let login = site["link"]["url"].as_str().unwrap_or_default().to_owned();
    assert!(
        login.starts_with(&format!("{}/login/", stack.api)),
        "{login}"
    );
    assert!(
        site["available_tasks"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("verify"))),
        "{site}"
    );

    let page = stack.page("shop.acme.example", "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let db_name = site["db_name"].as_str().unwrap_or_default();
    assert!(
        page.body.contains("<h1>shop.acme.example</h1>"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("Hello! This page was stored in the site&#039;s own database"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!("Read from database <code>{db_name}</code>")),
        "{}",
        page.body
    );

    // The one-time login link works once: the gateway redirects to the site's own link.
    let (gateway, page) = stack.open_link(&login).await;
    assert_eq!(gateway.status, 302, "{}", gateway.body);
    let page = page.expect("redirected to the site");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Logged in"), "{}", page.body);
    let (again, _) = stack.open_link(&login).await;
    assert_eq!(again.status, 410, "{}", again.body);

    // A host nobody installed is not served.
    assert_eq!(stack.page("nobody.acme.example", "/").await.status, 404);

    // The platform's registry came from its manifest.
    let (_, platforms) = stack.call("GET", "/platforms", None).await;
    let example = &platforms[0];
    assert_eq!(example["status"], "enabled");
    assert!(example["verified_at"].is_string());
    let packages = example["packages"].as_array().cloned().unwrap_or_default();
    assert!(
        packages.iter().any(|p| p["name"] == "guestbook"
            && p["type"] == "module"
            && p["schema_version"] == 6003),
        "{example}"
    );
    assert!(example["profiles"].as_array().is_some_and(|p| p
        .iter()
        .any(|p| p["name"] == "standard" && p["languages"] == json!(["en", "fr", "de"]))));
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_database_user_reaches_its_own_database_and_no_other() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let one = stack.install_site("one.acme.example", "acme").await;
    let two = stack.install_site("two.acme.example", "acme").await;
    let settings = std::fs::read_to_string(
        stack
            .example_root
            .join("sites/one.acme.example/settings.php"),
    )
    .expect("settings");
    let password = password_from_settings(&settings).expect("a password in the settings");
    let user = one["db_name"].as_str().unwrap_or_default();
    let url = format!("mysql://{user}:{password}@127.0.0.1:3306/{user}");
    let pool = sqlx::MySqlPool::connect(&url)
        .await
        .expect("the site user connects to its own database");
    let tables: Vec<String> = sqlx::query_scalar("SHOW TABLES")
        .fetch_all(&pool)
        .await
        .expect("SHOW TABLES");
    assert!(tables.contains(&"example_config".to_owned()), "{tables:?}");

    let other = two["db_name"].as_str().unwrap_or_default();
    let denied = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM `{other}`.example_config"
    )))
    .execute(&pool)
    .await;
    assert!(denied.is_err(), "site one's user read site two's database");
    let dbs: Vec<String> = sqlx::query_scalar("SHOW DATABASES")
        .fetch_all(&pool)
        .await
        .expect("SHOW DATABASES");
    assert_eq!(
        dbs.iter()
            .filter(|d| *d != "information_schema")
            .collect::<Vec<_>>(),
        vec![user],
        "visible databases"
    );
    assert!(
        sqlx::MySqlPool::connect(&format!("mysql://{user}:{password}@127.0.0.1:3306/{other}"))
            .await
            .is_err()
    );
    pool.close().await;
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_rewrites_only_what_drifted() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let site = stack.install_site("verify.acme.example", "acme").await;
    let id = site["id"].as_i64().unwrap_or_default();
    let settings_path = stack
        .example_root
        .join("sites/verify.acme.example/settings.php");
    let vhost_path = stack.vhost_path("verify.acme.example");
    let mtimes = || {
        (
            std::fs::metadata(&settings_path)
                .and_then(|m| m.modified())
                .expect("settings"),
            std::fs::metadata(&vhost_path)
                .and_then(|m| m.modified())
                .expect("vhost"),
        )
    };
    let before = mtimes();

    let run_verify = || async {
        let (status, r) = stack.post_site_task(id, json!({"type": "verify"})).await;
        assert_eq!(status, 202, "{r}");
        let task = stack
            .wait_task(
                r["task"]["id"].as_i64().unwrap_or_default(),
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(task["status"], "success", "{task}");
        task
    };
    let first = run_verify().await;
    assert_eq!(first["result"]["settings_changed"], false, "{first}");
    assert_eq!(first["result"]["vhost_changed"], false, "{first}");
    assert_eq!(first["result"]["packages"], 2, "{first}");
    assert_eq!(mtimes(), before, "an idempotent verify touched the files");

    // Drift: someone edits the settings by hand and deletes the vhost. Verify restores both.
    let original = std::fs::read_to_string(&settings_path).expect("settings");
    std::fs::write(&settings_path, "<?php return [];").expect("tampering");
    std::fs::remove_file(&vhost_path).expect("removing the vhost");
    let second = run_verify().await;
    assert_eq!(second["result"]["settings_changed"], true);
    assert_eq!(second["result"]["vhost_changed"], true);
    assert_eq!(
        std::fs::read_to_string(&settings_path).expect("settings"),
        original
    );
    assert_eq!(stack.page("verify.acme.example", "/").await.status, 200);
    let third = run_verify().await;
    assert_eq!(
        (
            third["result"]["settings_changed"].clone(),
            third["result"]["vhost_changed"].clone()
        ),
        (json!(false), json!(false))
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_one_site_never_overlap() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let site = stack.install_site("serial.acme.example", "acme").await;
    let id = site["id"].as_i64().unwrap_or_default();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (status, r) = stack.post_site_task(id, json!({"type": "verify"})).await;
        assert_eq!(status, 202, "{r}");
        ids.push(r["task"]["id"].as_i64().unwrap_or_default());
    }
    let mut spans = Vec::new();
    for t in ids {
        let task = stack.wait_task(t, Duration::from_secs(60)).await;
        assert_eq!(task["status"], "success", "{task}");
        let parse = |k: &str| {
            time::OffsetDateTime::parse(
                task[k].as_str().unwrap_or_default(),
                &time::format_description::well_known::Rfc3339,
            )
            .expect(k)
        };
        spans.push((parse("started"), parse("finished")));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two tasks ran on the site at once: {pair:?}"
        );
    }
    stack.teardown().await;
}
