//! Real WordPress sites, from Debian's packages, through the whole life: install, one-time
//! login, backup and restore, disable, enable and delete; clone; migrate to a second
//! WordPress platform with an extra plugin.

use serde_json::{json, Value};
use std::time::Duration;
use tests::{id, Stack};

async fn install(stack: &Stack, domain: &str) -> Value {
    let (site, task) = stack.create_site(domain, "acme", "wordpress").await;
    let done = stack.wait_task(id(&task), Duration::from_secs(120)).await;
    stack.assert_success(&done).await;
    let (_, site) = stack
        .call("GET", &format!("/sites/{}", id(&site)), None)
        .await;
    site
}

async fn publish(stack: &Stack, db: &str, title: &str) {
    stack
        .mariadb_exec(&format!(
            "INSERT INTO `{db}`.wp_posts (post_author, post_date, post_date_gmt, post_content, post_title,
               post_excerpt, post_status, comment_status, ping_status, post_password, post_name, to_ping,
               pinged, post_modified, post_modified_gmt, post_content_filtered, post_parent, guid,
               menu_order, post_type, post_mime_type, comment_count)
             VALUES (1, NOW(), UTC_TIMESTAMP(), '<p>Published by the test.</p>', '{title}', '', 'publish',
               'open', 'open', '', 'a-post-to-lose', '', '', NOW(), UTC_TIMESTAMP(), '', 0, '', 0, 'post', '', 0)"
        ))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wordpress_site_installs_logs_in_restores_and_goes() {
    const DOMAIN: &str = "blog.acme.example";
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let platform = stack.wordpress_platform("wordpress", |_| {}).await;
    let packages = platform["packages"].to_string();
    for expected in [
        r#""name":"wordpress""#,
        r#""name":"akismet""#,
        r#""name":"twentytwentythree""#,
    ] {
        assert!(packages.contains(expected), "{expected} in {packages}");
    }

    // Install: the home page answers with the site's title; wp-login.php answers.
    let site = install(&stack, DOMAIN).await;
    let sid = id(&site);
    let db = site["db_name"].as_str().unwrap_or_default().to_owned();
    let home = stack.page(DOMAIN, "/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(
        home.body.contains(&format!("<title>{DOMAIN}")),
        "{}",
        home.body
    );
    assert_eq!(stack.page(DOMAIN, "/wp-login.php").await.status, 200);
    assert!(
        site["packages"]
            .to_string()
            .contains(r#""schema_version":53496"#),
        "core's database version is the site's schema version: {site}"
    );

    // login-reset: the link opens WordPress's set-password form.
    let done = stack
        .run_site_task(sid, json!({"type": "login-reset"}))
        .await;
    stack.assert_success(&done).await;
    let link = stack.site(sid).await["link"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let link = link.as_str();
    let (gateway, landing) = stack.open_link(link).await;
    assert_eq!(gateway.status, 302, "{}", gateway.body);
    assert!(
        gateway
            .header("location")
            .is_some_and(|l| l.contains("wp-login.php?action=rp&key=")),
        "{:?}",
        gateway.headers
    );
    let landing = landing.expect("redirected to the site");
    // WordPress keeps the key in a cookie and shows the form at a clean address.
    assert_eq!(landing.status, 302, "{}", landing.body);
    let cookie = landing
        .headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("wp-resetpass-"))
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
        .expect("the reset cookie");
    let form = stack
        .page_with(DOMAIN, "/wp-login.php?action=rp", &[("Cookie", &cookie)])
        .await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("resetpassform"), "{}", form.body);

    // Backup → publish a post → restore → the post is gone.
    let backup = stack.run_site_task(sid, json!({"type": "backup"})).await;
    stack.assert_success(&backup).await;
    publish(&stack, &db, "A post to lose").await;
    assert!(stack
        .page(DOMAIN, "/")
        .await
        .body
        .contains("A post to lose"));
    let restored = stack
        .run_site_task(
            sid,
            json!({"type": "restore", "backup": backup["result"]["backup"]}),
        )
        .await;
    stack.assert_success(&restored).await;
    let home = stack.page(DOMAIN, "/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(!home.body.contains("A post to lose"), "{}", home.body);
    assert!(home.body.contains(&format!("<title>{DOMAIN}")));

    // Disable, enable and delete behave as on the example platform.
    let disabled = stack.run_site_task(sid, json!({"type": "disable"})).await;
    stack.assert_success(&disabled).await;
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 302);
    assert_eq!(
        page.header("location"),
        Some(format!("{}/disabled/{DOMAIN}", stack.api).as_str())
    );
    let enabled = stack.run_site_task(sid, json!({"type": "enable"})).await;
    stack.assert_success(&enabled).await;
    assert_eq!(stack.page(DOMAIN, "/").await.status, 200);
    let disabled = stack.run_site_task(sid, json!({"type": "disable"})).await;
    stack.assert_success(&disabled).await;
    let deleted = stack.run_site_task(sid, json!({"type": "delete"})).await;
    stack.assert_success(&deleted).await;
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert!(dbs.is_empty() && users.is_empty(), "{dbs:?} {users:?}");
    assert!(!stack
        .site_dir(&stack.dir.join("platforms/wordpress"), DOMAIN)
        .exists());
    assert!(!stack.vhost_path(DOMAIN).exists());
    stack.teardown().await;
}

/// Logs into wp-admin as the administrator, as a browser does: the session's cookies.
async fn log_in(stack: &Stack, domain: &str, db: &str) -> String {
    // A known password for the administrator (WordPress takes an MD5 hash and rehashes it on
    // the first login).
    stack
        .mariadb_exec(&format!(
            "UPDATE `{db}`.wp_users SET user_pass = MD5('hosting-test-password') WHERE user_login = 'admin'"
        ))
        .await;
    let response = stack
        .post_form(
            domain,
            "/wp-login.php",
            "log=admin&pwd=hosting-test-password&testcookie=1&wp-submit=Log+In",
            &[("Cookie", "wordpress_test_cookie=WP%20Cookie%20check")],
        )
        .await;
    assert_eq!(response.status, 302, "{}", response.body);
    let cookies: Vec<String> = response
        .headers
        .iter()
        .filter(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("wordpress_"))
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
        .filter(|c| !c.ends_with('='))
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("wordpress_logged_in_")),
        "{:?}",
        response.headers
    );
    cookies.join("; ")
}

/// Whether the session's cookies open wp-admin (a logged-out browser is sent to the login).
async fn opens_wp_admin(stack: &Stack, domain: &str, cookies: &str) -> bool {
    let page = stack
        .page_with(domain, "/wp-admin/", &[("Cookie", cookies)])
        .await;
    page.status == 200 && page.body.contains("wp-admin-bar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wordpress_site_clones_and_migrates_to_a_platform_with_another_plugin() {
    const DOMAIN: &str = "shop.acme.example";
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    stack.wordpress_platform("wordpress", |_| {}).await;
    let plus = stack
        .wordpress_platform("wordpress-plus", |root| {
            let dir = root.join("wordpress/wp-content/plugins/hosting-hello");
            std::fs::create_dir_all(&dir).expect("plugin dir");
            std::fs::write(
                dir.join("hosting-hello.php"),
                "<?php\n/*\n * Plugin Name: Hosting Hello\n * Version: 1.2.3\n */\n",
            )
            .expect("plugin");
        })
        .await;
    assert!(plus["packages"].to_string().contains("hosting-hello"));
    let site = install(&stack, DOMAIN).await;
    let sid = id(&site);
    let cookies = log_in(&stack, DOMAIN, site["db_name"].as_str().unwrap_or_default()).await;
    assert!(opens_wp_admin(&stack, DOMAIN, &cookies).await);
    assert!(
        !opens_wp_admin(&stack, DOMAIN, "").await,
        "the check can fail"
    );

    // Clone to a new domain: both sites serve, each its own title.
    let (status, r) = stack
        .post_site_task(
            sid,
            json!({"type": "clone", "platform": "wordpress", "domain": "copy.acme.example"}),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let done = stack
        .wait_task(id(&r["task"]), Duration::from_secs(180))
        .await;
    stack.assert_success(&done).await;
    let original = stack.page(DOMAIN, "/").await;
    assert!(
        original.body.contains(&format!("<title>{DOMAIN}")),
        "{}",
        original.body
    );
    let copy = stack.page("copy.acme.example", "/").await;
    assert_eq!(copy.status, 200, "{}", copy.body);
    assert!(
        copy.body.contains("<title>copy.acme.example"),
        "{}",
        copy.body
    );
    assert!(!copy.body.contains(&format!("<title>{DOMAIN}")));

    // Migrate to the second platform: served from its root, the plugin in the packages.
    let done = stack
        .run_site_task(
            sid,
            json!({"type": "migrate", "platform": "wordpress-plus"}),
        )
        .await;
    stack.assert_success(&done).await;
    let (_, now) = stack.call("GET", &format!("/sites/{sid}"), None).await;
    assert_eq!(now["platform"], "wordpress-plus");
    assert!(
        now["packages"]
            .to_string()
            .contains(r#""name":"hosting-hello""#),
        "{now}"
    );
    let vhost = std::fs::read_to_string(stack.vhost_path(DOMAIN)).expect("vhost");
    assert!(
        vhost.contains("platforms/wordpress-plus/wordpress;"),
        "{vhost}"
    );
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("<title>{DOMAIN}")));
    // Nobody was logged out: the session from before the migrate still opens wp-admin, and
    // after a backup and restore too.
    assert!(
        opens_wp_admin(&stack, DOMAIN, &cookies).await,
        "the migrate logged the administrator out"
    );
    let backup = stack.run_site_task(sid, json!({"type": "backup"})).await;
    stack.assert_success(&backup).await;
    let restored = stack
        .run_site_task(
            sid,
            json!({"type": "restore", "backup": backup["result"]["backup"]}),
        )
        .await;
    stack.assert_success(&restored).await;
    assert!(
        opens_wp_admin(&stack, DOMAIN, &cookies).await,
        "the restore logged the administrator out"
    );
    stack.teardown().await;
}
