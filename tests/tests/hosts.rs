//! The test topology of real hosts: the control plane on the machine, and `web2` and `db2`,
//! each in a network namespace of its own with its own address, its own data root that no
//! other host's processes see, and its own nginx and php-fpm (web2) or MariaDB (db2), reached
//! by their agents under broker users of their own.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::hosts::{Host, Topology, HOST_ROOT};
use tests::{id, password_from_settings};

/// What a process sees at `path` from inside its mount namespace (`ls -A`), or None when the
/// path is not there for it.
fn seen_by(pid: u32, path: &Path) -> Option<String> {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--", "ls", "-A"])
        .arg(path)
        .output()
        .expect("nsenter");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_of_their_own_run_their_agents_and_hold_a_sites_database() {
    let topology = Topology::start().await;
    let (stack, web2, db2) = (&topology.stack, &topology.web2, &topology.db2);
    let (web2_server, db2_server) = (&topology.web2_server, &topology.db2_server);

    // Each host's verify asks its own agent, which answers for its own software.
    let web_log = stack.verify_server(id(web2_server)).await;
    assert!(web_log.contains("nginx: nginx version"), "{web_log}");
    assert!(web_log.contains("php_pools: 8"), "{web_log}");
    let db_log = stack.verify_server(id(db2_server)).await;
    assert!(db_log.contains("MariaDB"), "{db_log}");

    // web2's own nginx answers at web2's address (a name it serves no site for: 404).
    let answer = tests::http::request("GET", &format!("http://{}:8088/", web2.address), None, &[])
        .await
        .expect("web2's nginx answers at web2's address");
    assert_eq!(answer.status, 404, "{}", answer.body);

    // A site on the control plane's web server with its database on db2: made by db2's
    // agent in db2's MariaDB, and the site serves what it reads from there.
    stack.create_client("acme").await;
    let (site, task) = stack
        .create_site_on("far.acme.example", "acme", "example", "db2")
        .await;
    let done = stack.wait_task(id(&task), Duration::from_secs(120)).await;
    stack.assert_success(&done).await;
    let site = stack.site(id(&site)).await;
    let page = stack.page("far.acme.example", "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Hello! This page was stored in the site&#039;s own database"),
        "{}",
        page.body
    );
    let db_name = site["db_name"].as_str().unwrap_or_default().to_owned();
    let settings = std::fs::read_to_string(
        stack
            .example_root
            .join("sites/far.acme.example/settings.php"),
    )
    .expect("settings");
    let password = password_from_settings(&settings).expect("a password in the settings");
    let on_db2 = sqlx::MySqlPool::connect(&format!(
        "mysql://{db_name}:{password}@{}:3306/{db_name}",
        db2.address
    ))
    .await
    .expect("the site's database is on db2");
    let tables: Vec<String> = sqlx::query_scalar("SHOW TABLES")
        .fetch_all(&on_db2)
        .await
        .expect("SHOW TABLES");
    assert!(tables.contains(&"example_config".to_owned()), "{tables:?}");
    on_db2.close().await;
    assert!(
        !on_the_machines_mariadb(&db_name).await,
        "the site's database is on the control plane's MariaDB too"
    );

    // Each host's processes see their own data root and nothing of the other hosts' or of
    // the control plane's files.
    let webconf = stack.pid("webconf-web2").expect("webconf on web2");
    let dbprov = stack.pid("dbprov-db2").expect("dbprov on db2");
    let web_root = seen_by(webconf, Path::new(HOST_ROOT)).unwrap_or_default();
    assert!(web_root.contains("webconf"), "{web_root}");
    assert!(!web_root.contains("mysql"), "{web_root}");
    let db_root = seen_by(dbprov, Path::new(HOST_ROOT)).unwrap_or_default();
    assert!(
        db_root.contains("mysql") && !db_root.contains("webconf"),
        "{db_root}"
    );
    for pid in [webconf, dbprov] {
        for hidden in [&web2.root, &db2.root, &stack.dir] {
            let seen = seen_by(pid, hidden);
            assert!(
                seen.as_deref().is_none_or(str::is_empty),
                "process {pid} sees {}: {seen:?}",
                hidden.display()
            );
        }
    }
    // And they hold no key to the state database.
    let environ = std::fs::read(format!("/proc/{webconf}/environ")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&environ).contains("HOSTING_DATABASE_URL"));

    // Two sites on web2 are cells there too: each PHP pool runs as its own site's user and
    // reads its own settings, and nothing of its neighbour's nor of web2's agent.
    let root = topology.platform_on_web2().await;
    std::fs::write(
        web2.root.join("platforms/example/public/probe.php"),
        tests::PHP_PROBE,
    )
    .expect("the probe on web2");
    let mut cells = Vec::new();
    for domain in ["a.acme.example", "b.acme.example"] {
        let (site, task) = stack
            .create_site_on(domain, "acme", "example-web2", "db2")
            .await;
        let done = stack.wait_task(id(&task), Duration::from_secs(120)).await;
        stack.assert_success(&done).await;
        let site = stack.site(id(&site)).await;
        let user = site["system_user"].as_str().unwrap_or_default().to_owned();
        let (uid, _) = tests::user_ids(&user).unwrap_or_else(|| panic!("no user {user}"));
        cells.push((domain, format!("{root}/sites/{domain}"), uid));
    }
    let [(a, a_dir, a_uid), (b, b_dir, b_uid)] = [cells[0].clone(), cells[1].clone()];
    assert!(
        a_uid != b_uid && a_uid != 0 && b_uid != 0,
        "two sites, two users of their own: {a_uid} {b_uid}"
    );
    let own = probe_on(web2, a, &format!("{a_dir}/settings.php")).await;
    assert_eq!(
        (&own["uid"], &own["read"]),
        (&json!(a_uid), &json!(true)),
        "{own}"
    );
    // The probe lists what its site may list, so a `false` below means refused.
    let own_dir = probe_on(web2, a, &format!("{a_dir}/files")).await;
    assert_eq!(own_dir["list"], json!(true), "{own_dir}");
    assert_eq!(
        probe_on(web2, b, "").await["uid"],
        b_uid,
        "B's pool runs as B"
    );
    web2.run(&format!("echo secret > {b_dir}/files/upload.txt"))
        .expect("a file of B's");
    for path in [
        format!("{b_dir}/settings.php"),
        format!("{b_dir}/files"),
        format!("{b_dir}/files/upload.txt"),
        format!("{b_dir}/private"),
        b_dir.clone(),
        format!("{HOST_ROOT}/webconf"),
        format!("{HOST_ROOT}/webconf/agent.key"),
        format!("/proc/{webconf}/environ"),
    ] {
        let seen = probe_on(web2, a, &path).await;
        assert_eq!(
            (&seen["read"], &seen["list"]),
            (&json!(false), &json!(false)),
            "site A's PHP on web2 reached {path}: {seen}"
        );
    }

    topology.teardown().await;
}

/// What the probe of a site on `host` answers for `path`.
async fn probe_on(host: &Host, domain: &str, path: &str) -> Value {
    let page = host.page(domain, &format!("/probe.php?path={path}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("probe: {}", page.body))
}

/// Whether the control plane's MariaDB (db1, the machine's) holds a database of that name.
async fn on_the_machines_mariadb(database: &str) -> bool {
    let machine = sqlx::MySqlPool::connect(tests::MYSQL_ADMIN_URL)
        .await
        .expect("the machine's MariaDB");
    let found: Option<String> = sqlx::query_scalar(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(database)
    .fetch_optional(&machine)
    .await
    .expect("a query");
    machine.close().await;
    found.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_on_web2_with_its_database_on_db2_lives_and_ends_there() {
    let topology = Topology::start().await;
    let (stack, web2, db2) = (&topology.stack, &topology.web2, &topology.db2);

    // A platform whose code is on web2's disk only: web2's agent reads it.
    let root = topology.platform_on_web2().await;

    stack.create_client("acme").await;
    let domain = "two.acme.example";
    let (site, task) = stack
        .create_site_on(domain, "acme", "example-web2", "db2")
        .await;
    let done = stack.wait_task(id(&task), Duration::from_secs(120)).await;
    stack.assert_success(&done).await;
    let site_id = id(&site);

    // web2's nginx serves it from db2; the control plane's web server does not.
    let page = web2.page(domain, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Hello! This page was stored in the site&#039;s own database"),
        "{}",
        page.body
    );
    let here = stack.page(domain, "/").await;
    assert!(
        !here.body.contains("This page was stored"),
        "the control plane's nginx serves the site too: {}",
        here.body
    );
    // Its directory and settings are on web2's disk, as a cell: settings root's and the
    // site group's only, the directory closed to others.
    let site_dir = web2.root.join(format!("platforms/example/sites/{domain}"));
    let settings = site_dir.join("settings.php");
    let listing = web2
        .run(&format!(
            "stat -c '%a %U %G' {root}/sites/{domain} {root}/sites/{domain}/settings.php"
        ))
        .expect("stat on web2");
    let record = stack.site(site_id).await;
    let user = record["system_user"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        vec![format!("710 {user} www-data"), format!("640 root {user}")],
        "{listing}"
    );
    assert!(
        !stack.example_root.join(format!("sites/{domain}")).exists(),
        "a site directory on the control plane's disk"
    );
    let password = password_from_settings(&std::fs::read_to_string(&settings).expect("settings"))
        .expect("a password in the settings");
    let db_name = record["db_name"].as_str().unwrap_or_default().to_owned();
    let on_db2 = sqlx::MySqlPool::connect(&format!(
        "mysql://{db_name}:{password}@{}:3306/{db_name}",
        db2.address
    ))
    .await
    .expect("the site's database is on db2");
    on_db2.close().await;

    // Verify, a login link, and the site's own PHP on web2 reading only its own files.
    let verified = stack
        .run_site_task(site_id, json!({"type": "verify"}))
        .await;
    stack.assert_success(&verified).await;
    let log = stack.task_log_text(id(&verified)).await;
    assert!(log.contains("settings file unchanged"), "{log}");
    let reset = stack
        .run_site_task(site_id, json!({"type": "login-reset"}))
        .await;
    stack.assert_success(&reset).await;
    let record = stack.site(site_id).await;
    assert_eq!(record["link"]["kind"], "login", "{record}");

    // A settings file changed by hand is put back by a verify, on web2.
    std::fs::write(&settings, "<?php // tampered\n").expect("tampering");
    let verified = stack
        .run_site_task(site_id, json!({"type": "verify"}))
        .await;
    stack.assert_success(&verified).await;
    let log = stack.task_log_text(id(&verified)).await;
    assert!(log.contains("settings file rewritten"), "{log}");
    assert_eq!(web2.page(domain, "/").await.status, 200);

    // A backup: the files streamed by web2's agent into the control plane's store, the
    // database dumped from db2; verify-backup proves it restorable.
    let files = format!("{root}/sites/{domain}/files");
    web2.run(&format!("echo kept > {files}/kept.txt"))
        .expect("a file in the site's files");
    let backup = stack
        .run_site_task(site_id, json!({"type": "backup"}))
        .await;
    stack.assert_success(&backup).await;
    let log = stack.task_log_text(id(&backup)).await;
    assert!(
        log.contains("the site's files come from web2's agent"),
        "{log}"
    );
    let backup_id = backup["result"]["backup"].clone();
    let checked = stack
        .run_site_task(
            site_id,
            json!({"type": "verify-backup", "backup": backup_id}),
        )
        .await;
    stack.assert_success(&checked).await;
    let archives = std::fs::read_dir(stack.backup_dir().join(domain))
        .expect("the site's archives in the control plane's store")
        .count();
    assert_eq!(archives, 1);

    // A restore on web2: the files come back from the store through web2's agent, the
    // database into db2, and what changed since is gone.
    web2.run(&format!(
        "rm {files}/kept.txt && echo later > {files}/later.txt"
    ))
    .expect("changing the site's files");
    let restored = stack
        .run_site_task(site_id, json!({"type": "restore", "backup": backup_id}))
        .await;
    stack.assert_success(&restored).await;
    let log = stack.task_log_text(id(&restored)).await;
    assert!(log.contains("web2's agent unpacked"), "{log}");
    let after = web2
        .run(&format!(
            "cat {files}/kept.txt; stat -c %U {files}/kept.txt; ls {files}"
        ))
        .expect("the restored files");
    assert_eq!(
        after.lines().collect::<Vec<_>>(),
        vec!["kept", user.as_str(), "kept.txt"],
        "{after}"
    );
    assert_eq!(web2.page(domain, "/").await.status, 200);
    let leftovers = web2
        .run(&format!("ls -A {root}/sites"))
        .expect("the platform's sites");
    let leftovers: Vec<&str> = leftovers.lines().filter(|l| *l != ".gitkeep").collect();
    assert_eq!(
        leftovers,
        vec![domain],
        "nothing of the restore is left beside the site"
    );

    // The store's door for site files lets nothing in without an upload's token.
    let door = format!("http://{}/v1/site-files", topology.upload);
    let bare = tests::http::request("PUT", &door, Some("x"), &[])
        .await
        .expect("the door");
    assert_eq!(bare.status, 401, "{}", bare.body);
    let forged = tests::http::request(
        "PUT",
        &door,
        Some("x"),
        &[("Authorization", "Bearer 0123456789abcdef0123456789abcdef")],
    )
    .await
    .expect("the door");
    assert_eq!(forged.status, 403, "{}", forged.body);

    // Disable (after its backup), enable, and delete, all on web2.
    let disabled = stack
        .run_site_task(site_id, json!({"type": "disable"}))
        .await;
    stack.assert_success(&disabled).await;
    let away = web2.page(domain, "/").await;
    assert!(
        (300..400).contains(&away.status) && !away.body.contains("This page was stored"),
        "{} {}",
        away.status,
        away.body
    );
    let enabled = stack
        .run_site_task(site_id, json!({"type": "enable"}))
        .await;
    stack.assert_success(&enabled).await;
    assert_eq!(web2.page(domain, "/").await.status, 200);
    let disabled = stack
        .run_site_task(site_id, json!({"type": "disable"}))
        .await;
    stack.assert_success(&disabled).await;
    let deleted = stack
        .run_site_task(site_id, json!({"type": "delete"}))
        .await;
    stack.assert_success(&deleted).await;
    assert!(!site_dir.exists(), "the site directory is still on web2");
    let gone = web2.page(domain, "/").await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    let databases = db2.databases().expect("db2's databases");
    assert!(
        !databases.contains(&db_name),
        "the database is still on db2: {databases:?}"
    );

    // A force delete of a site whose directory went missing on web2 removes what is left.
    let broken = "broken.acme.example";
    let (site, task) = stack
        .create_site_on(broken, "acme", "example-web2", "db2")
        .await;
    let done = stack.wait_task(id(&task), Duration::from_secs(120)).await;
    stack.assert_success(&done).await;
    web2.run(&format!("rm -rf {root}/sites/{broken}"))
        .expect("the directory removed behind the control plane's back");
    // Its disable would need a backup of files that are gone: deleted without one.
    let (status, r) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"require_disable_before_delete": false})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let forced = stack
        .run_site_task(id(&site), json!({"type": "delete", "force": true}))
        .await;
    stack.assert_success(&forced).await;
    assert_eq!(web2.page(broken, "/").await.status, 404);
    assert_eq!(stack.site(id(&site)).await["status"], "deleted");

    topology.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_moves_from_web1_and_db1_to_web2_and_db2_and_is_cloned_back_and_a_database_moves_alone(
) {
    let topology = Topology::start().await;
    let (stack, web2) = (&topology.stack, &topology.web2);
    let root = topology.platform_on_web2().await;
    stack.create_client("acme").await;
    let domain = "moving.acme.example";
    let site = stack.install_site(domain, "acme").await;
    let site_id = id(&site);
    let old_dir = stack.example_root.join(format!("sites/{domain}"));
    std::fs::write(old_dir.join("files/upload.txt"), "uploaded on web1").expect("an upload");
    let old_db = site["db_name"].as_str().unwrap_or_default().to_owned();

    // Both at once: web1 -> web2 and db1 -> db2.
    let moved = stack
        .run_site_task(
            site_id,
            json!({"type": "migrate", "platform": "example-web2", "db_server": "db2"}),
        )
        .await;
    stack.assert_success(&moved).await;
    let page = web2.page(domain, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("This page was stored"), "{}", page.body);
    let upload = web2
        .run(&format!("cat {root}/sites/{domain}/files/upload.txt"))
        .expect("the upload on web2");
    assert_eq!(upload, "uploaded on web1");
    // The old copy is gone from web1: its directory, its vhost and its database.
    assert!(!old_dir.exists(), "the old copy is still on web1");
    let here = stack.page(domain, "/").await;
    assert!(!here.body.contains("This page was stored"), "{}", here.body);
    let record = stack.site(site_id).await;
    assert_eq!(record["db_server"], "db2", "{record}");
    assert_eq!(record["platform"], "example-web2", "{record}");
    assert!(
        !on_the_machines_mariadb(&old_db).await,
        "the old database is still on db1"
    );

    // A restore on web2 from the backup made on web1 before the move.
    std::fs::write(
        web2.root
            .join(format!("platforms/example/sites/{domain}/files/upload.txt")),
        "changed on web2",
    )
    .expect("changing the upload on web2");
    let backups = stack.backups(site_id).await;
    let made_on_web1 = backups
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|b| b["description"] == "Generated before being migrated")
        })
        .map(|b| b["id"].clone())
        .unwrap_or_else(|| panic!("no pre-migrate backup: {backups}"));
    let restored = stack
        .run_site_task(site_id, json!({"type": "restore", "backup": made_on_web1}))
        .await;
    stack.assert_success(&restored).await;
    let upload = web2
        .run(&format!("cat {root}/sites/{domain}/files/upload.txt"))
        .expect("the upload on web2");
    assert_eq!(upload, "uploaded on web1");
    assert_eq!(web2.page(domain, "/").await.status, 200);

    // A clone from web2 back onto web1, as a site of its own.
    let copy = "copy.acme.example";
    let cloned = stack
        .run_site_task(
            site_id,
            json!({"type": "clone", "platform": "example", "domain": copy, "db_server": "local"}),
        )
        .await;
    stack.assert_success(&cloned).await;
    let page = stack.page(copy, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let copied = std::fs::read_to_string(
        stack
            .example_root
            .join(format!("sites/{copy}/files/upload.txt")),
    )
    .expect("the upload in the clone");
    assert_eq!(copied, "uploaded on web1");
    // The original still serves on web2.
    assert_eq!(web2.page(domain, "/").await.status, 200);

    // The database alone: a site stays on web1 (onto another platform there) and its database
    // moves from db1 to db2.
    stack.fixture_platform("example-next", |t| t).await;
    let stays = "dbmove.acme.example";
    let site = stack.install_site(stays, "acme").await;
    let old_db = site["db_name"].as_str().unwrap_or_default().to_owned();
    let moved = stack
        .run_site_task(
            id(&site),
            json!({"type": "migrate", "platform": "example-next", "db_server": "db2"}),
        )
        .await;
    stack.assert_success(&moved).await;
    let record = stack.site(id(&site)).await;
    assert_eq!(record["db_server"], "db2", "{record}");
    assert_eq!(record["platform"], "example-next", "{record}");
    let page = stack.page(stays, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("This page was stored"), "{}", page.body);
    assert_eq!(web2.page(stays, "/").await.status, 404);
    let new_db = record["db_name"].as_str().unwrap_or_default();
    assert!(
        topology
            .db2
            .databases()
            .expect("db2's databases")
            .iter()
            .any(|d| d == new_db),
        "{new_db} is not on db2"
    );
    assert!(
        !on_the_machines_mariadb(&old_db).await,
        "the old database is still on db1"
    );

    topology.teardown().await;
}

/// Where a site on web1 and db1 must still be after a move to web2 and db2 failed: its record
/// as it was, served by web1's nginx and not web2's, its directory alone on web1's platform and
/// nothing on web2's, its database on db1 and none on db2.
async fn assert_still_on_web1(topology: &Topology, before: &Value, context: &str) {
    let stack = &topology.stack;
    let domain = before["domain"].as_str().unwrap_or_default();
    let db = before["db_name"].as_str().unwrap_or_default();
    let now = stack.site(id(before)).await;
    for field in ["platform", "db_server", "db_name", "status", "domain"] {
        assert_eq!(now[field], before[field], "{context}: {field}: {now}");
    }
    let page = stack.page(domain, "/").await;
    assert_eq!(page.status, 200, "{context}: {}", page.body);
    assert!(
        page.body.contains("This page was stored"),
        "{context}: {}",
        page.body
    );
    assert_eq!(
        topology.web2.page(domain, "/").await.status,
        404,
        "{context}: web2 serves the site"
    );
    let own = tests::entries_in(&stack.example_root.join("sites"));
    assert_eq!(
        own,
        [domain.to_owned()],
        "{context}: beside the site on web1"
    );
    let there = tests::entries_in(&topology.web2.root.join("platforms/example/sites"));
    assert!(there.is_empty(), "{context}: left on web2: {there:?}");
    assert!(
        on_the_machines_mariadb(db).await,
        "{context}: db1 lost {db}"
    );
    let on_db2 = topology.db2.databases().expect("db2's databases");
    assert!(
        !on_db2
            .iter()
            .any(|d| d.starts_with(&stack.prefix) || d == db),
        "{context}: left on db2: {on_db2:?}"
    );
    let users = topology
        .db2
        .mariadb_users(&stack.prefix)
        .expect("db2's users");
    assert!(users.is_empty(), "{context}: users left on db2: {users:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_web2_failing_at_any_step_leaves_the_site_on_web1_and_a_batch_moves_a_platform() {
    let mut topology = Topology::start().await;
    let root = topology.platform_on_web2().await;
    topology.stack.create_client("acme").await;
    let domain = "stays.acme.example";
    let site = topology.stack.install_site(domain, "acme").await;
    let before = topology.stack.site(id(&site)).await;
    let both_at_once = json!({"type": "migrate", "platform": "example-web2", "db_server": "db2"});

    // Cleanup is left out, as in the one-host test: it runs once the site serves from its
    // target, and what it cannot remove is logged, not unwound.
    use contract::steps::{MoveStep, SagaStep};
    for step in MoveStep::MIGRATE
        .iter()
        .filter(|s| **s != MoveStep::Cleanup)
    {
        let fault = format!("migrate:{}", step.name());
        topology.stack.kill("migrator");
        topology
            .stack
            .start_with("migrator", &[("HOSTING_SAGA_FAIL_AT", &fault)])
            .expect("migrator");
        let done = topology
            .stack
            .run_site_task(id(&site), both_at_once.clone())
            .await;
        assert_eq!(done["status"], "error", "{fault}: {done}");
        assert!(
            done["error"].to_string().contains("injected"),
            "{fault}: {done}"
        );
        assert_still_on_web1(&topology, &before, &fault).await;
    }

    // Every action run twice, across hosts: the move still succeeds.
    topology.stack.kill("migrator");
    topology
        .stack
        .start_with("migrator", &[("HOSTING_SAGA_REPEAT_ACTIONS", "1")])
        .expect("migrator");
    let done = topology
        .stack
        .run_site_task(id(&site), both_at_once.clone())
        .await;
    topology.stack.assert_success(&done).await;
    let page = topology.web2.page(domain, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("This page was stored"), "{}", page.body);
    topology.stack.kill("migrator");
    topology.stack.start("migrator").expect("migrator");

    // migrate-sites with db_server: a platform's sites on web1 moved as one batch to the
    // platform on web2, their databases to db2: two from db1, one already on db2 (whose
    // database stays on its server).
    let stack = &topology.stack;
    let mut batch = Vec::new();
    for (n, db) in ["local", "local", "db2"].iter().enumerate() {
        let d = format!("b{n}.acme.example");
        let (s, task) = stack.create_site_on(&d, "acme", "example", db).await;
        let done = stack.wait_task(id(&task), Duration::from_secs(120)).await;
        stack.assert_success(&done).await;
        let db_name = stack.site(id(&s)).await["db_name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        batch.push((id(&s), d, db_name, *db == "db2"));
    }
    let done = stack
        .run_platform_task(
            "example",
            json!({"type": "migrate-sites", "target": "example-web2", "db_server": "db2",
                   "concurrency": 2}),
            Duration::from_secs(300),
        )
        .await;
    stack.assert_success(&done).await;
    assert_eq!(done["result"]["migrated"], 3, "{done}");
    let on_db2 = topology.db2.databases().expect("db2's databases");
    for (sid, d, old_db, was_on_db2) in &batch {
        let record = stack.site(*sid).await;
        assert_eq!(record["platform"], "example-web2", "{record}");
        assert_eq!(record["db_server"], "db2", "{record}");
        let new_db = record["db_name"].as_str().unwrap_or_default();
        assert!(
            on_db2.iter().any(|n| n == new_db),
            "{d}: {new_db} not on db2"
        );
        if *was_on_db2 {
            assert_eq!(new_db, old_db, "{d}: its database on db2 was not kept");
        } else {
            assert!(
                !on_the_machines_mariadb(old_db).await,
                "{d}: {old_db} is still on db1"
            );
        }
        let page = topology.web2.page(d, "/").await;
        assert_eq!(page.status, 200, "{d}: {}", page.body);
        assert!(
            page.body.contains("This page was stored"),
            "{d}: {}",
            page.body
        );
        assert!(
            topology
                .web2
                .run(&format!(
                    "test -f {root}/sites/{d}/settings.php && echo yes"
                ))
                .is_ok_and(|o| o.trim() == "yes"),
            "{d}: no settings on web2"
        );
    }
    let left = tests::entries_in(&stack.example_root.join("sites"));
    assert!(left.is_empty(), "left on web1: {left:?}");
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert!(dbs.is_empty(), "left on db1: {dbs:?}");
    assert!(users.is_empty(), "users left on db1: {users:?}");

    topology.teardown().await;
}
