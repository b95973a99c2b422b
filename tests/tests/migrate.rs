//! Migrate and clone against the real services: package checks for the reference's four
//! cases, an upgrade that changes the site's schema and keeps its content, rename, clone,
//! features, a batch, and the sagas: every action twice, and a failure at each step unwinds.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tests::{id, Stack, StackOptions};

const DOMAIN: &str = "move.acme.example";

/// The reference's platforms: the site's guestbook is at schema 6003; A offers 6002, B lacks
/// it, C offers 6003, D 6004 with an update that changes the site's database.
async fn reference_platforms(stack: &Stack) {
    let gb = "[[packages]]\nname = \"guestbook\"\ntype = \"module\"\nversion = \"1.0.0\"\nschema_version = 6003\n";
    stack
        .fixture_platform("a", |m| {
            m.replace(
                "version = \"1.0.0\"\nschema_version = 6003",
                "version = \"0.9.0\"\nschema_version = 6002",
            )
        })
        .await;
    stack
        .fixture_platform("b", move |m| m.replace(gb, ""))
        .await;
    stack.fixture_platform("c", |m| m).await;
    stack
        .fixture_platform("d", |m| {
            m.replace(
                "version = \"1.0.0\"\nschema_version = 6003",
                "version = \"1.1.0\"\nschema_version = 6004",
            )
        })
        .await;
    // D's code is the next release: it declares guestbook 6004, so its update runs.
    let app = stack.dir.join("platforms/d/lib/app.php");
    let code = std::fs::read_to_string(&app).expect("d's app.php");
    let newer = code.replace(
        "'guestbook' => ['module', '1.0.0', 6003]",
        "'guestbook' => ['module', '1.1.0', 6004]",
    );
    assert_ne!(
        code, newer,
        "the example's package list moved; update this fixture"
    );
    std::fs::write(&app, newer).expect("writing d's app.php");
}

fn root(stack: &Stack, platform: &str) -> PathBuf {
    if platform == "example" {
        stack.example_root.clone()
    } else {
        stack.dir.join("platforms").join(platform)
    }
}

/// After a batch: it made `children` child tasks, and every site (`{prefix}{n}.acme.example`)
/// is on `platform` and serves.
async fn assert_batch_left(
    stack: &Stack,
    batch: i64,
    children: usize,
    sites: &[i64],
    platform: &str,
    prefix: &str,
) {
    let (_, tasks) = stack
        .call("GET", &format!("/tasks?parent={batch}"), None)
        .await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(children), "{tasks}");
    for (n, sid) in sites.iter().enumerate() {
        assert_eq!(stack.site(*sid).await["platform"], platform);
        assert_eq!(
            stack
                .page(&format!("{prefix}{n}.acme.example"), "/")
                .await
                .status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_checks_upgrade_rename_and_clone() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let s = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&s);
    let old_db = s["db_name"].as_str().unwrap_or_default().to_owned();
    stack
        .mariadb_exec(&format!(
            "INSERT INTO `{old_db}`.guestbook_entries (author, message) VALUES ('ada', 'first!')"
        ))
        .await;
    reference_platforms(&stack).await;

    // The package checks: A is an error, B a warning, C the same, D an upgrade.
    let (status, targets) = stack
        .call("GET", &format!("/sites/{sid}/migrate-targets"), None)
        .await;
    assert_eq!(status, 200, "{targets}");
    let target = |name: &str| {
        targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["platform"]["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no target {name}: {targets}"))
    };
    let guestbook = |t: &Value| {
        t["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "guestbook"))
            .map(|p| p["status"].clone())
            .unwrap_or(Value::Null)
    };
    for (name, selectable, status, count) in [
        ("a", false, "error", "error"),
        ("b", true, "warning", "warning"),
        ("c", true, "same", "same"),
        ("d", true, "upgrade", "upgrade"),
    ] {
        let t = target(name);
        assert_eq!(t["selectable"], selectable, "{name}: {t}");
        assert_eq!(guestbook(&t), status, "{name}: {t}");
        assert!(t["counts"][count].as_u64() >= Some(1), "{name}: {t}");
    }
    assert_eq!(target("example")["current"], true);

    // A migrate to A is refused with the reason.
    let (status, r) = stack
        .post_site_task(sid, json!({"type": "migrate", "platform": "a"}))
        .await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("guestbook"), "{r}");

    // To D: the site's schema changes, its content stays, it serves from D's root.
    let done = stack
        .run_site_task(sid, json!({"type": "migrate", "platform": "d"}))
        .await;
    stack.assert_success(&done).await;
    let moved = stack.site(sid).await;
    assert_eq!(moved["platform"], "d");
    let new_db = moved["db_name"].as_str().unwrap_or_default().to_owned();
    // The migrated tables took the place of the old ones: the database keeps its name (an
    // application may take its identity from it), its user and its password.
    assert_eq!(new_db, old_db);
    let columns = stack.mariadb_query(
        &format!("SELECT column_name FROM information_schema.columns WHERE table_schema = '{new_db}' AND table_name = 'guestbook_entries' AND column_name = 'approved'"),
    )
    .await;
    assert_eq!(columns, ["approved"], "the 6004 update did not run");
    let entries = stack
        .mariadb_query(&format!("SELECT message FROM `{new_db}`.guestbook_entries"))
        .await;
    assert_eq!(entries, ["first!"]);
    assert!(
        moved["packages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "guestbook"
                && p["schema_version"] == 6004
                && p["version"] == "1.1.0")),
        "{moved}"
    );
    let vhost = std::fs::read_to_string(stack.vhost_path(DOMAIN)).expect("vhost");
    assert!(
        vhost.contains(&format!("root {}/public;", root(&stack, "d").display())),
        "{vhost}"
    );
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&new_db), "{}", page.body);
    // The old copy is gone only now.
    assert!(!stack.site_dir(&root(&stack, "example"), DOMAIN).exists());
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert_eq!((dbs, users), (vec![old_db.clone()], vec![old_db.clone()]));
    let backups = stack.backups(sid).await;
    assert!(backups
        .to_string()
        .contains("Generated before being migrated"));

    // Rename on the same platform: the old domain stops serving the site.
    let done = stack
        .run_site_task(
            sid,
            json!({"type": "migrate", "platform": "d", "domain": "renamed.acme.example"}),
        )
        .await;
    stack.assert_success(&done).await;
    assert_eq!(stack.page(DOMAIN, "/").await.status, 404);
    let page = stack.page("renamed.acme.example", "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<h1>renamed.acme.example</h1>"),
        "fix_paths renamed the site: {}",
        page.body
    );
    assert_eq!(stack.site(sid).await["domain"], "renamed.acme.example");

    // Clone: a new site at its own domain; the original is untouched.
    let (status, r) = stack
        .post_site_task(
            sid,
            json!({"type": "clone", "platform": "d", "domain": "copy.acme.example"}),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let copy = id(&r["site"]);
    assert_ne!(copy, sid);
    let done = stack
        .wait_task(id(&r["task"]), Duration::from_secs(120))
        .await;
    stack.assert_success(&done).await;
    let copied = stack.site(copy).await;
    assert_eq!(copied["status"], "enabled", "{copied}");
    assert_eq!(copied["aliases"], json!([]));
    let page = stack.page("copy.acme.example", "/").await;
    assert!(
        page.body.contains("<h1>copy.acme.example</h1>"),
        "{}",
        page.body
    );
    let original = stack.page("renamed.acme.example", "/").await;
    assert!(original.body.contains("<h1>renamed.acme.example</h1>"));
    let copy_db = copied["db_name"].as_str().unwrap_or_default();
    let entries = stack
        .mariadb_query(&format!(
            "SELECT message FROM `{copy_db}`.guestbook_entries"
        ))
        .await;
    assert_eq!(entries, ["first!"], "the clone has the original's content");

    // Features: with migrate and clone off they are not offered, and asking is a 409.
    stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"features": {"migrate": false, "clone": false}})),
        )
        .await;
    let now = stack.site(sid).await;
    let offered = now["available_tasks"].to_string();
    assert!(
        !offered.contains("migrate") && !offered.contains("clone"),
        "{now}"
    );
    let (status, r) = stack
        .post_site_task(sid, json!({"type": "migrate", "platform": "c"}))
        .await;
    assert_eq!(status, 409, "{r}");
    // Switching clone on switches migrate on.
    let (_, settings) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"features": {"clone": true}})),
        )
        .await;
    assert_eq!(
        settings["features"],
        json!({"clone": true, "migrate": true})
    );
    stack.teardown().await;
}

/// What a site looks like from outside: its record, its page, the databases and the site
/// directories of every platform.
async fn assert_as_before(stack: &Stack, sid: i64, db: &str, context: &str) {
    let now = stack.site(sid).await;
    assert_eq!(now["platform"], "example", "{context}: {now}");
    assert_eq!(now["domain"], DOMAIN, "{context}");
    assert_eq!(now["db_name"], db, "{context}");
    assert_eq!(now["status"], "enabled", "{context}");
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{context}: {}", page.body);
    assert!(
        page.body.contains(&format!("<h1>{DOMAIN}</h1>")),
        "{context}: {}",
        page.body
    );
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert_eq!(dbs, [db.to_owned()], "{context}: databases");
    assert_eq!(users, [db.to_owned()], "{context}: users");
    // Nothing was left on the target, nor beside the site on its own platform (a staging or
    // moved-aside directory).
    let target = tests::entries_in(&root(stack, "c").join("sites"));
    assert!(target.is_empty(), "{context}: left on c: {target:?}");
    let own = tests::entries_in(&root(stack, "example").join("sites"));
    assert_eq!(own, [DOMAIN], "{context}: beside the site");
    assert!(
        !stack.vhost_path("copy.acme.example").exists(),
        "{context}: the clone's vhost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_step_unwinds_and_every_action_can_run_twice() {
    let mut stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let s = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&s);
    let db = s["db_name"].as_str().unwrap_or_default().to_owned();
    stack.fixture_platform("c", |m| m).await;

    // Cleanup is left out: it runs after the site serves from its target and cannot fail
    // (what it cannot remove is logged); an injected failure there would test the injector.
    use contract::steps::{MoveStep, SagaStep};
    let migrate: Vec<&str> = MoveStep::MIGRATE
        .iter()
        .filter(|s| **s != MoveStep::Cleanup)
        .map(|s| s.name())
        .collect();
    let clone = tests::step_names(MoveStep::CLONE);
    let cases = migrate
        .iter()
        .map(|s| ("migrate", *s))
        .chain(clone.iter().map(|s| ("clone", *s)));
    for (saga, step) in cases {
        stack.kill("migrator");
        let fault = format!("{saga}:{step}");
        stack
            .start_with("migrator", &[("HOSTING_SAGA_FAIL_AT", &fault)])
            .expect("migrator");
        let body = if saga == "migrate" {
            json!({"type": "migrate", "platform": "c"})
        } else {
            json!({"type": "clone", "platform": "c", "domain": "copy.acme.example"})
        };
        let done = stack.run_site_task(sid, body).await;
        assert_eq!(done["status"], "error", "{fault}: {done}");
        assert!(
            done["error"].to_string().contains("injected"),
            "{fault}: {done}"
        );
        assert_as_before(&stack, sid, &db, &fault).await;
        if saga == "clone" {
            let (_, copies) = stack
                .call("GET", "/sites?domain=copy.acme.example", None)
                .await;
            assert!(
                copies
                    .as_array()
                    .is_some_and(|c| c.iter().all(|c| c["status"] == "deleted")),
                "{fault}: {copies}"
            );
        }
    }

    // Every action run twice: both sagas still succeed.
    stack.kill("migrator");
    stack
        .start_with("migrator", &[("HOSTING_SAGA_REPEAT_ACTIONS", "1")])
        .expect("migrator");
    let done = stack
        .run_site_task(
            sid,
            json!({"type": "clone", "platform": "c", "domain": "copy.acme.example"}),
        )
        .await;
    stack.assert_success(&done).await;
    assert_eq!(stack.page("copy.acme.example", "/").await.status, 200);
    let done = stack
        .run_site_task(sid, json!({"type": "migrate", "platform": "c"}))
        .await;
    stack.assert_success(&done).await;
    let now = stack.site(sid).await;
    assert_eq!(now["platform"], "c");
    assert_eq!(now["db_name"], db, "the database keeps its name");
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(&format!("<code>{db}</code>")),
        "{}",
        page.body
    );
    let (dbs, _) = stack.mariadb_leftovers().await;
    assert_eq!(dbs.len(), 2, "the site's and its clone's: {dbs:?}");
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_moves_every_site_of_a_platform() {
    let stack = Stack::spawn_with(StackOptions::default()).await;
    stack.create_client("acme").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(id(&stack
            .install_site(&format!("s{n}.acme.example"), "acme")
            .await));
    }
    stack.fixture_platform("c", |m| m).await;
    let done = stack
        .run_platform_task(
            "example",
            json!({"type": "migrate-sites", "target": "c", "concurrency": 2}),
            Duration::from_secs(300),
        )
        .await;
    stack.assert_success(&done).await;
    assert_eq!(done["result"]["migrated"], 5, "{done}");
    assert_batch_left(&stack, id(&done), 5, &ids, "c", "s").await;
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drupal_codebase_is_scanned_into_the_registry() {
    let stack = Stack::spawn().await;
    let root = stack.dir.join("platforms/drupal-10");
    let files = [
        (
            "web/core/lib/Drupal.php",
            "<?php\nfinal class Drupal {\n  const VERSION = '10.1.5';\n}\n",
        ),
        (
            "web/core/modules/node/node.info.yml",
            "name: Node\ntype: module\npackage: Core\nversion: VERSION\n",
        ),
        (
            "web/core/modules/node/node.install",
            "<?php\nfunction node_update_10001() {}\nfunction node_update_10100() {}\n",
        ),
        (
            "web/core/profiles/standard/standard.info.yml",
            "name: Standard\ntype: profile\nversion: VERSION\n",
        ),
        (
            "web/modules/contrib/pathauto/pathauto.info.yml",
            "name: Pathauto\ntype: module\nversion: '8.x-1.11'\n",
        ),
        (
            "web/modules/contrib/pathauto/pathauto.install",
            "<?php\nfunction pathauto_update_8108() {}\n",
        ),
        (
            "web/themes/contrib/gin/gin.info.yml",
            "name: Gin\ntype: theme\nversion: 8.x-3.0-rc6\n",
        ),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    let body = json!({"name": "drupal-10", "server": "local", "root": root.to_string_lossy(), "driver": "drupal"});
    let (status, r) = stack.call("POST", "/platforms", Some(body)).await;
    assert_eq!(status, 202, "{r}");
    let p = stack.wait_platform("drupal-10").await.expect("verified");
    assert_eq!(p["driver"], "drupal");
    let packages = p["packages"].to_string();
    for expected in [
        json!({"name": "drupal", "type": "core", "version": "10.1.5", "schema_version": null}),
        json!({"name": "node", "type": "module", "version": "10.1.5", "schema_version": 10100}),
        json!({"name": "pathauto", "type": "module", "version": "8.x-1.11", "schema_version": 8108}),
        json!({"name": "gin", "type": "theme", "version": "8.x-3.0-rc6", "schema_version": null}),
    ] {
        assert!(
            p["packages"]
                .as_array()
                .is_some_and(|list| list.contains(&expected)),
            "{expected} not in {packages}"
        );
    }
    assert_eq!(
        p["profiles"],
        json!([{"name": "standard", "languages": ["en"]}])
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stops_starting_sites_once_its_failure_budget_is_spent() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(id(&stack
            .install_site(&format!("b{n}.acme.example"), "acme")
            .await));
    }
    // A target whose database update always fails: every migrate to it unwinds.
    stack
        .fixture_platform("broken", |m| {
            m.replace(
                r#"update_db = ["php", "bin/site.php", "update-db"]"#,
                r#"update_db = ["sh", "-c", "echo 'schema conflict' >&2; exit 3"]"#,
            )
        })
        .await;
    let done = stack
        .run_platform_task(
            "example",
            json!({"type": "migrate-sites", "target": "broken", "concurrency": 1, "failure_budget": 1}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(done["status"], "error", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(error.contains("stopped after 1 failures"), "{error}");
    assert!(error.contains(r#""not_started":2"#), "{error}");
    assert_batch_left(&stack, id(&done), 1, &ids, "example", "b").await;
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_a_trigger_is_repointed_not_moved() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let s = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&s);
    let db = s["db_name"].as_str().unwrap_or_default().to_owned();
    // RENAME TABLE cannot carry a trigger to another database: restore and migrate point the
    // site at their new database instead.
    // Made as an application makes one: in its own database, defined by its own user.
    stack
        .mariadb_exec(&format!(
            "USE `{db}`; CREATE DEFINER = `{db}`@`%` TRIGGER keep_names BEFORE UPDATE ON example_config FOR EACH ROW SET NEW.name = NEW.name"
        ))
        .await;
    let backup = stack.run_site_task(sid, json!({"type": "backup"})).await;
    stack.assert_success(&backup).await;
    let restored = stack
        .run_site_task(
            sid,
            json!({"type": "restore", "backup": backup["result"]["backup"]}),
        )
        .await;
    stack.assert_success(&restored).await;
    let after_restore = stack.site(sid).await["db_name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(after_restore, db);
    stack.fixture_platform("c", |m| m).await;
    let done = stack
        .run_site_task(sid, json!({"type": "migrate", "platform": "c"}))
        .await;
    stack.assert_success(&done).await;
    let now = stack.site(sid).await;
    let after_migrate = now["db_name"].as_str().unwrap_or_default().to_owned();
    assert_ne!(after_migrate, after_restore);
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("<code>{after_migrate}</code>")));
    let triggers = stack
        .mariadb_query(&format!(
            "SELECT CAST(TRIGGER_NAME AS CHAR) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{after_migrate}'"
        ))
        .await;
    assert_eq!(triggers, ["keep_names"], "the trigger came along");
    let (dbs, _) = stack.mariadb_leftovers().await;
    assert_eq!(dbs, [after_migrate], "only the site's database is left");
    stack.teardown().await;
}
