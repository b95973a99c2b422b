//! The web dashboard in a real browser: Debian's Chromium driven by playwright-core (both
//! installed by `make test`, through scripts/test-deps.sh) runs `tests/browser/dashboard.mjs`
//! against a stack of its own. The admin switches features on in the settings, installs a
//! site through the form (its platform and language lists narrowed by the profile), opens it
//! through its Login to link, backs it up from its button while the log streams, migrates it
//! through the platform comparison (an older platform cannot be chosen), restores it from the
//! list of backups, disables and deletes it, each confirmed, and verifies a platform; a
//! client's session then sees its own site only. Screenshots of each page are written to
//! `target/test-screenshots/dashboard/`.

use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tests::{repo_root, Stack};

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(|d| repo_root().join(d))
        .unwrap_or_else(|_| repo_root().join("target"))
}

fn playwright_dir() -> PathBuf {
    std::env::var("HOSTING_PLAYWRIGHT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir().join("playwright"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_a_site_life_in_a_browser_and_a_client_sees_only_its_own() {
    let chromium = PathBuf::from("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is needed (scripts/test-deps.sh installs it)"
    );
    let playwright = playwright_dir();
    assert!(
        playwright.join("node_modules/playwright-core").exists(),
        "playwright-core is needed in {} (scripts/test-deps.sh installs it)",
        playwright.display()
    );
    let stack = Stack::spawn().await;
    let prefix = stack.prefix.replace('_', "-");

    // A platform with newer packages and without the 'minimal' profile (a migrate target that
    // the site form leaves out for that profile), and one with an older schema (not a target).
    let newer = format!("newer{}", &prefix[prefix.len().saturating_sub(6)..]);
    stack
        .fixture_platform(&newer, |m| {
            m.replace("schema_version = 6003", "schema_version = 6004")
                .replace(
                    "[[profiles]]\nname = \"minimal\"\nlanguages = [\"en\"]\n",
                    "",
                )
        })
        .await;
    let older = format!("older{}", &prefix[prefix.len().saturating_sub(6)..]);
    stack
        .fixture_platform(&older, |m| {
            m.replace("schema_version = 6003", "schema_version = 6002")
        })
        .await;

    // Two clients: the admin installs for alpha in the browser; beta has a site and a token.
    stack.create_client("alpha").await;
    stack.create_client("beta").await;
    let domain = format!("shop-{prefix}.test");
    let other = format!("beta-{prefix}.test");
    stack.install_site(&other, "beta").await;
    let (status, made) = stack
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "beta-browser", "client": "beta"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let client_token = made["token"].as_str().unwrap_or_default().to_owned();

    let shots = target_dir().join("test-screenshots/dashboard");
    let _ = std::fs::remove_dir_all(&shots);
    let script = repo_root().join("tests/browser/dashboard.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("DASHBOARD_URL", &stack.api)
        .env("ADMIN_TOKEN", &stack.token)
        .env("CLIENT_TOKEN", &client_token)
        .env("CLIENT", "alpha")
        .env("DOMAIN", &domain)
        .env("OTHER_DOMAIN", &other)
        .env("TARGET_PLATFORM", &newer)
        .env("OLDER_PLATFORM", &older)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT", &playwright)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the browser run ends within 15 minutes")
        .expect("node runs (scripts/test-deps.sh installs it)");
    let text = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser run failed (screenshots in {}):\n{text}\n{}",
        shots.display(),
        stack.logs()
    );
    println!("{text}");

    // What the browser did, as the API sees it: the site was installed for alpha, backed up,
    // moved, and is gone.
    let site_id: i64 = std::fs::read_to_string(shots.join("site-id"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("the script wrote the site's id");
    let site = stack.site(site_id).await;
    assert_eq!(site["domain"], domain.as_str(), "{site}");
    assert_eq!(site["client"], "alpha", "{site}");
    assert_eq!(site["status"], "deleted", "{site}");
    assert_eq!(site["platform"], newer.as_str(), "{site}");
    for page in [
        "01-login",
        "04-site-form",
        "06-site",
        "08-backup-live-log",
        "09-migrate-compare",
        "10-restore-form",
        "12-task-queue",
        "19-client-sites",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "a screenshot of {page}"
        );
    }
    stack.teardown().await;
}

/// What a hostile page or a careless form can send the dashboard: each gets a page that says
/// what to fix, with the security headers, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refuses_cross_site_forms_and_bad_input_with_pages() {
    use tests::http::request_typed;
    let stack = Stack::spawn().await;
    let ui = |path: &str| format!("{}{path}", stack.api);
    let form = "application/x-www-form-urlencoded";
    let admin = stack.token.clone();
    let cookie = format!("hosting_session={admin}");

    // Another site's page signing the browser in (with the attacker's token) is refused,
    // whether the browser says so in Sec-Fetch-Site or in Origin.
    let login = format!("token={admin}");
    for headers in [
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Origin", "http://evil.test")],
        vec![("Origin", "null")],
    ] {
        let r = request_typed("POST", &ui("/ui/login"), Some((form, &login)), &headers)
            .await
            .expect("POST /ui/login");
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(
            r.header("set-cookie").is_none(),
            "no session from {headers:?}"
        );
        assert!(r.body.contains("another site"), "{}", r.body);
    }
    // The dashboard's own page signs in.
    let own_origin = stack.api.clone();
    let r = request_typed(
        "POST",
        &ui("/ui/login"),
        Some((form, &login)),
        &[
            ("Origin", own_origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    )
    .await
    .expect("POST /ui/login");
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("HttpOnly") && c.contains("SameSite=Strict")),
        "{:?}",
        r.headers
    );

    // A form without the session's token is refused, and nothing is made.
    let r = request_typed(
        "POST",
        &ui("/ui/clients"),
        Some((form, "name=sneaky&email=s%40x.example")),
        &[("Cookie", cookie.as_str())],
    )
    .await
    .expect("POST /ui/clients");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("out of date"), "{}", r.body);
    let (_, clients) = stack.call("GET", "/clients", None).await;
    assert!(!clients.to_string().contains("sneaky"), "{clients}");

    // A token form naming a client that does not exist makes no token (never an admin one).
    let csrf = {
        let page = request_typed(
            "GET",
            &ui("/ui/tokens"),
            None,
            &[("Cookie", cookie.as_str())],
        )
        .await
        .expect("GET /ui/tokens");
        let at = page
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        page.body[at..at + 64].to_owned()
    };
    let r = request_typed(
        "POST",
        &ui("/ui/tokens"),
        Some((
            form,
            &format!("csrf={csrf}&name=typo&client=no-such-client&task_types="),
        )),
        &[("Cookie", cookie.as_str())],
    )
    .await
    .expect("POST /ui/tokens");
    assert_eq!(r.status, 422, "{}", r.body);
    let (_, tokens) = stack.call("GET", "/tokens", None).await;
    assert!(!tokens.to_string().contains("\"typo\""), "{tokens}");

    // Bad paths, missing fields, wrong methods and a revoked cookie: pages, with the CSP.
    for (method, path, body, status) in [
        ("GET", "/ui/sites/abc", None, 400),
        ("GET", "/ui/sites/99999999999999999999", None, 400),
        ("GET", "/ui/nothing-here", None, 404),
        ("GET", "/ui/logout", None, 405),
        (
            "POST",
            "/ui/clients",
            Some(format!("csrf={csrf}&name=x")),
            422,
        ),
    ] {
        let r = request_typed(
            method,
            &ui(path),
            body.as_deref().map(|b| (form, b)),
            &[("Cookie", cookie.as_str())],
        )
        .await
        .expect("a dashboard request");
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{method} {path}: a page, not {:?}",
            r.header("content-type")
        );
        assert!(
            r.header("content-security-policy").is_some(),
            "{method} {path}"
        );
    }
    let r = request_typed(
        "GET",
        &ui("/ui/sites"),
        None,
        &[(
            "Cookie",
            "hosting_session=hst_0000000000000000; hosting_session=bad*value",
        )],
    )
    .await
    .expect("GET /ui/sites");
    assert_eq!(r.status, 303, "an unknown session goes to the sign-in page");
    assert_eq!(r.header("location"), Some("/ui/login"));
    // A second cookie of the name (one a neighbouring site set) does not hide the real one.
    let both = format!("hosting_session=hst_0000000000000000; {cookie}");
    let r = request_typed("GET", &ui("/ui/sites"), None, &[("Cookie", both.as_str())])
        .await
        .expect("GET /ui/sites");
    assert_eq!(r.status, 200, "{}", r.body);
    // A revoked token's session ends: to the sign-in page, its cookie cleared.
    let (_, made) = stack
        .call("POST", "/tokens", Some(json!({"name": "soon-revoked"})))
        .await;
    let revoked = format!(
        "hosting_session={}",
        made["token"].as_str().unwrap_or_default()
    );
    let (status, r) = stack
        .call("DELETE", &format!("/tokens/{}", made["id"]), None)
        .await;
    assert_eq!(status, 200, "{r}");
    let r = request_typed(
        "GET",
        &ui("/ui/sites"),
        None,
        &[("Cookie", revoked.as_str())],
    )
    .await
    .expect("GET /ui/sites");
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0")),
        "{:?}",
        r.headers
    );
    stack.teardown().await;
}
