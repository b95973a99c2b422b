//! The rest of a site's life against the real services: one-time login links through the
//! gateway, the welcome mail over SMTP, disable and enable, delete and force delete, the
//! rules on which task may run, cancel and retry, and client tokens.

use serde_json::{json, Value};
use std::time::Duration;
use tests::smtp::SmtpListener;
use tests::{id, Stack, StackOptions};

fn tasks_of(site: &Value) -> Vec<String> {
    site["available_tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn welcome_mail_and_login_reset_give_links_that_open_once() {
    let smtp = SmtpListener::start().await;
    let stack = Stack::spawn_with(StackOptions {
        env: vec![
            ("installer", "HOSTING_SMTP_HOST".into(), "127.0.0.1".into()),
            (
                "installer",
                "HOSTING_SMTP_PORT".into(),
                smtp.port.to_string(),
            ),
            (
                "installer",
                "HOSTING_SMTP_USERNAME".into(),
                "relay-user".into(),
            ),
            (
                "installer",
                "HOSTING_SMTP_PASSWORD".into(),
                "relay-secret".into(),
            ),
            (
                "installer",
                "HOSTING_SMTP_FROM".into(),
                "noreply@panel.example".into(),
            ),
        ],
        ..Default::default()
    })
    .await;
    stack.create_client("acme").await;
    let s = stack.install_site("mail.acme.example", "acme").await;

    // The welcome mail reached the relay, from the configured sender, with the site's link.
    let mail = smtp
        .wait_for("acme@clients.example.org", Duration::from_secs(20))
        .await;
    assert_eq!(mail.from, "noreply@panel.example");
    assert_eq!(
        mail.auth,
        Some(("relay-user".to_owned(), "relay-secret".to_owned()))
    );
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.contains("mail.acme.example")),
        "{}",
        mail.data
    );
    let link = mail
        .body()
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}/login/", stack.api)))
        .unwrap_or_else(|| panic!("no login link in the mail:\n{}", mail.data))
        .to_owned();
    assert_eq!(s["link"]["url"], link.as_str(), "{s}");
    let (gateway, page) = stack.open_link(&link).await;
    assert_eq!(gateway.status, 302, "{}", gateway.body);
    let page = page.expect("redirected to the site");
    assert!(page.body.contains("Logged in"), "{}", page.body);
    assert_eq!(stack.site(id(&s)).await["link"]["kind"], "go-to");

    // login-reset: a fresh link that opens once, then the site shows go-to again.
    let done = stack
        .run_site_task(id(&s), json!({"type": "login-reset"}))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    let now = stack.site(id(&s)).await;
    assert_eq!(now["link"]["kind"], "login", "{now}");
    assert_eq!(now["link"]["requested_by"], "token:admin", "{now}");
    let url = now["link"]["url"].as_str().unwrap_or_default().to_owned();
    // The link lives where the site's link lives: not in the task's result or log.
    assert!(!done.to_string().contains(&url), "{done}");
    assert!(!stack.task_log_text(id(&done)).await.contains(&url));
    // Asked again before it was used: only the newest link opens.
    let newer = stack
        .run_site_task(id(&s), json!({"type": "login-reset"}))
        .await;
    assert_eq!(newer["status"], "success", "{newer}");
    let (old, _) = stack.open_link(&url).await;
    assert_eq!(
        old.status, 410,
        "a superseded link must not open: {}",
        old.body
    );
    let newest = stack.site(id(&s)).await["link"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let newest = newest.as_str();
    let (gateway, page) = stack.open_link(newest).await;
    assert_eq!(gateway.status, 302, "{}", gateway.body);
    assert_eq!(page.map(|p| p.status), Some(200));
    let (again, _) = stack.open_link(newest).await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("Login link expired"), "{}", again.body);
    assert_eq!(stack.site(id(&s)).await["link"]["kind"], "go-to");
    stack.teardown().await;
}

#[tokio::test]
async fn without_a_relay_the_install_succeeds_and_says_the_mail_was_skipped() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let (_, task) = stack
        .create_site("nomail.acme.example", "acme", "example")
        .await;
    let done = stack.wait_task(id(&task), Duration::from_secs(60)).await;
    assert_eq!(done["status"], "success", "{done}");
    let log = stack.task_log_text(id(&task)).await;
    assert!(log.contains("the welcome mail was skipped"), "{log}");

    // Links expire: an expired one does not open, and the site shows go-to.
    let s = stack.site(done["site"].as_i64().unwrap_or_default()).await;
    let url = s["link"]["url"].as_str().unwrap_or_default().to_owned();
    stack
        .state_exec("UPDATE login_links SET expires_at = now() - interval '1 second'")
        .await;
    let (gateway, _) = stack.open_link(&url).await;
    assert_eq!(gateway.status, 410);
    assert_eq!(stack.site(id(&s)).await["link"]["kind"], "go-to");
    stack.teardown().await;
}

#[tokio::test]
async fn disable_enable_and_delete_follow_the_rules() {
    const DOMAIN: &str = "life.acme.example";
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let s = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&s);
    let db_name = s["db_name"].as_str().unwrap_or_default().to_owned();
    let dir = stack.site_dir(&stack.example_root, DOMAIN);
    assert_eq!(
        tasks_of(&s),
        [
            "backup",
            "clone",
            "disable",
            "login-reset",
            "migrate",
            "verify"
        ],
        "{s}"
    );

    // Delete is refused while the site is enabled.
    let (status, r) = stack.post_site_task(sid, json!({"type": "delete"})).await;
    assert_eq!(status, 409, "{r}");
    assert!(r["error"].to_string().contains("disable it first"), "{r}");

    // Disable: a pre-disable backup, and visitors end at the "Site disabled" page.
    let done = stack.run_site_task(sid, json!({"type": "disable"})).await;
    assert_eq!(done["status"], "success", "{done}");
    let page = stack.page(DOMAIN, "/some/page").await;
    assert_eq!(page.status, 302, "{}", page.body);
    let location = page.header("location").unwrap_or_default().to_owned();
    assert_eq!(location, format!("{}/disabled/{DOMAIN}", stack.api));
    let (landing, _) = stack.open_link(&location).await;
    assert_eq!(landing.status, 200);
    assert!(landing.body.contains("Site disabled"), "{}", landing.body);
    // Certificates can still be renewed.
    let acme = stack
        .page(DOMAIN, "/.well-known/acme-challenge/token-1")
        .await;
    assert_eq!(acme.status, 404, "{}", acme.body);
    let backups = stack.backups(sid).await;
    assert!(
        backups
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["description"] == "Pre-disable backup")),
        "{backups}"
    );
    let now = stack.site(sid).await;
    assert_eq!(now["status"], "disabled");
    assert_eq!(
        tasks_of(&now),
        [
            "backup",
            "backup-delete",
            "delete",
            "enable",
            "verify-backup"
        ],
        "{now}"
    );
    let (status, r) = stack
        .post_site_task(sid, json!({"type": "login-reset"}))
        .await;
    assert_eq!(status, 409, "login-reset is for enabled sites: {r}");

    // Enable: the site serves again.
    let done = stack.run_site_task(sid, json!({"type": "enable"})).await;
    assert_eq!(done["status"], "success", "{done}");
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("<h1>{DOMAIN}</h1>")));

    // Disable and delete: nothing of the site remains but its record and backups.
    assert_eq!(
        stack.run_site_task(sid, json!({"type": "disable"})).await["status"],
        "success"
    );
    let (status, r) = stack.post_site_task(sid, json!({"type": "delete"})).await;
    assert_eq!(status, 202, "{r}");
    // Nothing is offered while the delete is pending.
    let pending = stack.site(sid).await;
    if pending["status"] == "disabled" {
        assert!(tasks_of(&pending).is_empty(), "{pending}");
    }
    let done = stack
        .wait_task(id(&r["task"]), Duration::from_secs(120))
        .await;
    stack.assert_success(&done).await;
    let gone = stack.site(sid).await;
    assert_eq!(gone["status"], "deleted");
    assert!(tasks_of(&gone).is_empty());
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert!(!dbs.contains(&db_name), "database left: {dbs:?}");
    assert!(!users.contains(&db_name), "user left: {users:?}");
    assert!(!dir.exists(), "site directory left");
    assert!(!stack.vhost_path(DOMAIN).exists(), "vhost left");
    assert_eq!(stack.page(DOMAIN, "/").await.status, 404);
    let backups = stack.backups(sid).await;
    assert!(
        backups
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["description"] == "Pre-delete backup")),
        "{backups}"
    );
    let (_, history) = stack.call("GET", &format!("/tasks?site={sid}"), None).await;
    assert!(
        history.as_array().is_some_and(|h| h.len() >= 5),
        "{history}"
    );

    // The domain can be used again.
    let again = stack.install_site(DOMAIN, "acme").await;
    assert_ne!(id(&again), sid);
    assert_eq!(stack.page(DOMAIN, "/").await.status, 200);
    stack.teardown().await;
}

#[tokio::test]
async fn force_delete_cleans_sites_broken_in_any_way() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"require_disable_before_delete": false, "delete_backups_with_site": true})),
        )
        .await;
    let broken = [
        "nodir.acme.example",
        "nodb.acme.example",
        "novhost.acme.example",
        "half.acme.example",
        "nouser.acme.example",
    ];
    let mut sites = Vec::new();
    for d in broken {
        sites.push(stack.install_site(d, "acme").await);
    }
    let db = |s: &Value| s["db_name"].as_str().unwrap_or_default().to_owned();

    // Broken by hand: the directory gone; the database gone; the vhost and the user gone;
    // and one recorded as a failed install with everything still in place.
    std::fs::remove_dir_all(stack.site_dir(&stack.example_root, broken[0])).expect("rm dir");
    stack
        .mariadb_exec(&format!("DROP DATABASE `{}`", db(&sites[1])))
        .await;
    std::fs::remove_file(stack.vhost_path(broken[2])).expect("rm vhost");
    stack
        .mariadb_exec(&format!(
            "DROP USER IF EXISTS `{}`@`%`, `{}`@`localhost`, `{}`@`127.0.0.1`",
            db(&sites[2]),
            db(&sites[2]),
            db(&sites[2])
        ))
        .await;
    stack
        .state_exec(&format!(
            "UPDATE sites SET status = 'failed' WHERE id = {}",
            id(&sites[3])
        ))
        .await;
    // The last one's unix user removed behind the control plane's back (its pool stays).
    let user = sites[4]["system_user"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let out = std::process::Command::new("userdel")
        .args(["--force", &user])
        .output()
        .expect("userdel");
    assert!(out.status.success(), "{out:?}");

    // A plain delete of a site whose database is gone fails at its backup and changes
    // nothing: the vhost and directory are still there.
    let failed = stack
        .run_site_task(id(&sites[1]), json!({"type": "delete"}))
        .await;
    assert_eq!(failed["status"], "error", "{failed}");
    assert!(stack.vhost_path(broken[1]).exists());
    assert!(stack.site_dir(&stack.example_root, broken[1]).exists());
    assert_eq!(stack.site(id(&sites[1])).await["status"], "enabled");

    // A failed site offers delete, which removes whatever exists.
    assert_eq!(tasks_of(&stack.site(id(&sites[3])).await), ["delete"]);
    for (s, domain) in sites.iter().zip(broken) {
        let args = if domain.starts_with("half") {
            json!({"type": "delete"})
        } else {
            json!({"type": "delete", "force": true})
        };
        let done = stack.run_site_task(id(s), args).await;
        assert!(
            done["status"] == "success" || done["status"] == "warning",
            "{domain}: {done}\n{}",
            stack.task_log_text(id(&done)).await
        );
        assert_eq!(stack.site(id(s)).await["status"], "deleted", "{domain}");
        assert!(
            !stack.site_dir(&stack.example_root, domain).exists(),
            "{domain}"
        );
        assert!(!stack.vhost_path(domain).exists(), "{domain}");
        // Twice is harmless.
        let twice = stack
            .run_site_task(id(s), json!({"type": "delete", "force": true}))
            .await;
        assert_eq!(twice["status"], "success", "{domain}: {twice}");
    }
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert!(
        dbs.is_empty() && users.is_empty(),
        "left: {dbs:?} {users:?}"
    );
    assert!(
        tests::site_users(&stack.prefix).is_empty(),
        "system users left: {:?}",
        tests::site_users(&stack.prefix)
    );
    assert!(
        tests::entries_in(&stack.dir.join("webconf/pools")).is_empty(),
        "pools left"
    );
    // With delete_backups_with_site on, the pre-delete backup of the one site that could
    // still be backed up went too, by a backup-delete task.
    let half = id(&sites[3]);
    let (_, purges) = stack
        .call(
            "GET",
            &format!("/tasks?site={half}&type=backup-delete"),
            None,
        )
        .await;
    let purge = id(&purges[0]);
    assert_eq!(
        stack.wait_task(purge, Duration::from_secs(60)).await["status"],
        "success"
    );
    let backups = stack.backups(half).await;
    assert_eq!(backups, json!([]));
    // No directory of any of them was left aside either.
    let leftovers = tests::entries_in(&stack.example_root.join("sites"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
    stack.teardown().await;
}

#[tokio::test]
async fn cancel_a_queued_task_and_retry_a_failed_one() {
    let mut stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let s = stack.install_site("retry.acme.example", "acme").await;

    // With the installer stopped, a verify waits in the queue and can be cancelled.
    stack.kill("installer");
    let (status, r) = stack
        .call(
            "POST",
            &format!("/sites/{}/tasks", id(&s)),
            Some(json!({"type": "verify"})),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let verify = id(&r["task"]);
    let (status, c) = stack
        .call("POST", &format!("/tasks/{verify}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["status"], "error");
    assert_eq!(c["cancelled_by"], "token:admin");
    let (status, _) = stack
        .call("POST", &format!("/tasks/{verify}/cancel"), None)
        .await;
    assert_eq!(status, 409);

    // A clone cancelled before it ran frees its new site's domain; it is not retried.
    stack.kill("migrator");
    let (status, r) = stack
        .call(
            "POST",
            &format!("/sites/{}/tasks", id(&s)),
            Some(json!({"type": "clone", "platform": "example", "domain": "twin.acme.example"})),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let (status, _) = stack
        .call("POST", &format!("/tasks/{}/cancel", id(&r["task"])), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(stack.site(id(&r["site"])).await["status"], "deleted");
    let (status, _) = stack
        .call("POST", &format!("/tasks/{}/retry", id(&r["task"])), None)
        .await;
    assert_eq!(status, 409);
    stack.start("migrator").expect("migrator");

    // An install that fails (injected at its vhost step) leaves a failed site; a retry
    // with the fault gone installs it.
    stack
        .start_with("installer", &[("HOSTING_SAGA_FAIL_AT", "install:vhost")])
        .expect("installer");
    let (bad, task) = stack
        .create_site("again.acme.example", "acme", "example")
        .await;
    let failed = stack.wait_task(id(&task), Duration::from_secs(60)).await;
    assert_eq!(failed["status"], "error", "{failed}");
    assert_eq!(stack.site(id(&bad)).await["status"], "failed");
    // The cancelled verify was never run by the restarted installer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, v) = stack.call("GET", &format!("/tasks/{verify}"), None).await;
    assert_eq!(v["status"], "error");
    assert!(v["started"].is_null(), "{v}");

    stack.kill("installer");
    stack.start("installer").expect("installer");
    let (status, r) = stack
        .call("POST", &format!("/tasks/{}/retry", id(&task)), None)
        .await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["task"]["retry_of"], id(&task));
    let done = stack
        .wait_task(id(&r["task"]), Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(stack.site(id(&bad)).await["status"], "enabled");
    assert_eq!(stack.page("again.acme.example", "/").await.status, 200);
    // A retried task cannot be retried again, nor a successful one.
    let (status, _) = stack
        .call("POST", &format!("/tasks/{}/retry", id(&done)), None)
        .await;
    assert_eq!(status, 409);
    // The cancelled verify can be retried.
    let (status, r) = stack
        .call("POST", &format!("/tasks/{verify}/retry"), None)
        .await;
    assert_eq!(status, 202, "{r}");
    let done = stack
        .wait_task(id(&r["task"]), Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    stack.teardown().await;
}

#[tokio::test]
async fn client_tokens_see_their_own_sites_and_only_their_task_types() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    stack.create_client("globex").await;
    let mine = stack.install_site("www.acme.example", "acme").await;
    let theirs = stack.install_site("www.globex.example", "globex").await;

    let (status, t) = stack
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "acme-portal", "client": "acme"})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let acme = t["token"].as_str().unwrap_or_default().to_owned();
    let (status, limited) = stack
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "acme-backups", "client": "acme", "task_types": ["backup", "login-reset"]})),
        )
        .await;
    assert_eq!(status, 201, "{limited}");
    let backup_only = limited["token"].as_str().unwrap_or_default().to_owned();

    // The client's token sees its own site only; the other client's answer 404.
    let (_, list) = stack.call_as(&acme, "GET", "/sites", None).await;
    let domains: Vec<&str> = list
        .as_array()
        .map(|l| l.iter().filter_map(|s| s["domain"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(domains, ["www.acme.example"]);
    let other = id(&theirs);
    for (method, path, body) in [
        ("GET", format!("/sites/{other}"), None),
        ("GET", format!("/sites/{other}/backups"), None),
        (
            "POST",
            format!("/sites/{other}/tasks"),
            Some(json!({"type": "backup"})),
        ),
    ] {
        let (status, r) = stack.call_as(&acme, method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {r}");
    }
    let (_, their_tasks) = stack
        .call("GET", &format!("/tasks?site={other}"), None)
        .await;
    let their_task = id(&their_tasks[0]);
    let (status, _) = stack
        .call_as(&acme, "GET", &format!("/tasks/{their_task}"), None)
        .await;
    assert_eq!(status, 404);
    let (_, visible) = stack.call_as(&acme, "GET", "/tasks", None).await;
    assert!(
        visible
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["site"] == id(&mine))),
        "{visible}"
    );
    // Only the admin manages tokens.
    let (status, _) = stack
        .call_as(&acme, "POST", "/tokens", Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, 403);

    // A token limited to backup and login-reset cannot disable.
    let path = format!("/sites/{}/tasks", id(&mine));
    let (status, r) = stack
        .call_as(
            &backup_only,
            "POST",
            &path,
            Some(json!({"type": "disable"})),
        )
        .await;
    assert_eq!(status, 403, "{r}");
    let (status, r) = stack
        .call_as(&backup_only, "POST", &path, Some(json!({"type": "backup"})))
        .await;
    assert_eq!(status, 202, "{r}");

    // Tokens are stored hashed and listed without their secret.
    let (_, tokens) = stack.call("GET", "/tokens", None).await;
    assert!(!tokens.to_string().contains(&acme), "{tokens}");
    let pool = sqlx::PgPool::connect(&stack.state_db_url)
        .await
        .expect("state db");
    let plain: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE token_hash = $1")
        .bind(&acme)
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(plain, 0);
    pool.close().await;

    // A revoked token stops working at once.
    let (status, r) = stack
        .call("DELETE", &format!("/tokens/{}", id(&t)), None)
        .await;
    assert_eq!(status, 200, "{r}");
    assert!(r["revoked"].is_string(), "{r}");
    let (status, _) = stack.call_as(&acme, "GET", "/sites", None).await;
    assert_eq!(status, 401);
    stack.teardown().await;
}

#[tokio::test]
async fn a_delete_that_fails_before_the_database_leaves_the_site_serving() {
    const DOMAIN: &str = "keep.acme.example";
    let mut stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let s = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&s);
    assert_eq!(
        stack.run_site_task(sid, json!({"type": "disable"})).await["status"],
        "success"
    );
    for step in ["backup", "vhost", "site-directory"] {
        stack.kill("installer");
        let fault = format!("delete:{step}");
        stack
            .start_with("installer", &[("HOSTING_SAGA_FAIL_AT", &fault)])
            .expect("installer");
        let done = stack.run_site_task(sid, json!({"type": "delete"})).await;
        assert_eq!(done["status"], "error", "{step}: {done}");
        assert!(
            done["error"].to_string().contains("put back"),
            "{step}: {done}"
        );
        let now = stack.site(sid).await;
        assert_eq!(now["status"], "disabled", "{step}");
        assert!(stack.vhost_path(DOMAIN).exists(), "{step}: vhost");
        assert!(
            stack.site_dir(&stack.example_root, DOMAIN).exists(),
            "{step}: directory"
        );
        // Still disabled, as it was: enable brings it back.
        let page = stack.page(DOMAIN, "/").await;
        assert_eq!(page.status, 302, "{step}: {}", page.body);
    }
    assert_eq!(
        stack.run_site_task(sid, json!({"type": "enable"})).await["status"],
        "success"
    );
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);

    // Past the point of no return the delete goes forward only: a force delete finishes it.
    stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"require_disable_before_delete": false})),
        )
        .await;
    stack.kill("installer");
    stack
        .start_with("installer", &[("HOSTING_SAGA_FAIL_AT", "delete:database")])
        .expect("installer");
    let done = stack.run_site_task(sid, json!({"type": "delete"})).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(done["error"].to_string().contains("force"), "{done}");
    stack.kill("installer");
    stack.start("installer").expect("installer");
    let done = stack
        .run_site_task(sid, json!({"type": "delete", "force": true}))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(stack.site(sid).await["status"], "deleted");
    assert!(!stack.vhost_path(DOMAIN).exists());
    assert!(!stack.site_dir(&stack.example_root, DOMAIN).exists());
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert!(
        dbs.is_empty() && users.is_empty(),
        "left: {dbs:?} {users:?}"
    );
    stack.teardown().await;
}
