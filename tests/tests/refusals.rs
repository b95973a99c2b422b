//! Bad input is refused with a 4xx that says what to fix, and creates nothing.

use serde_json::json;
use tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_create_nothing() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    stack.install_site("taken.acme.example", "acme").await;
    let count = |stack: &Stack| {
        let api = stack.api.clone();
        let token = stack.token.clone();
        async move {
            let s = Stack::count(&api, &token).await;
            s
        }
    };
    let before = count(&stack).await;
    let site = |domain: &str, platform: &str| json!({"domain": domain, "client": "acme", "platform": platform, "profile": "standard", "language": "en", "db_server": "local"});

    let cases = [
        (site("under_score.acme.example", "example"), 422, "domain"),
        (site("no-dot", "example"), 422, "single label"),
        (
            site(&format!("{}.example", "a".repeat(64)), "example"),
            422,
            "1 to 63",
        ),
        (site("evil;.acme.example", "example"), 422, "domain"),
        (site("TAKEN.acme.example", "example"), 409, "already used"),
        (site("new.acme.example", "nope"), 422, "no platform"),
        (
            json!({"domain": "x.acme.example", "client": "acme", "platform": "example", "profile": "fancy", "language": "en", "db_server": "local"}),
            422,
            "standard",
        ),
        (
            json!({"domain": "x.acme.example", "client": "acme", "platform": "example", "profile": "minimal", "language": "fr", "db_server": "local"}),
            422,
            "language",
        ),
        (
            json!({"domain": "x.acme.example", "client": "ghost", "platform": "example", "profile": "standard", "language": "en", "db_server": "local"}),
            422,
            "client",
        ),
        (json!({"domain": "x.acme.example"}), 400, "missing field"),
    ];
    for (body, want, says) in cases {
        let (status, r) = stack.call("POST", "/sites", Some(body.clone())).await;
        assert_eq!(status, want, "{body} -> {r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{body} -> {message:?} should mention {says:?}"
        );
    }

    // Without a token, or with a wrong one: 401, with a hint.
    let r = tests::http::request("GET", &format!("{}/api/v1/sites", stack.api), None, &[])
        .await
        .expect("request");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Authorization: Bearer"), "{}", r.body);
    let (status, _) = stack.call_as("wrong", "GET", "/sites", None).await;
    assert_eq!(status, 401);
    // Malformed JSON: 400; unknown ids: 404; a task type a site cannot run now: 409.
    let r = tests::http::request(
        "POST",
        &format!("{}/api/v1/sites", stack.api),
        Some("{nope"),
        &[("Authorization", &format!("Bearer {}", stack.token))],
    )
    .await
    .expect("request");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(stack.call("GET", "/sites/999999", None).await.0, 404);
    assert_eq!(stack.call("GET", "/tasks/999999", None).await.0, 404);
    assert_eq!(
        stack
            .call(
                "POST",
                "/sites/999999/tasks",
                Some(json!({"type": "verify"}))
            )
            .await
            .0,
        404
    );
    let (status, r) = stack
        .call("POST", "/sites/1/tasks", Some(json!({"type": "restore"})))
        .await;
    assert_eq!(status, 409, "{r}");
    let (status, r) = stack
        .call("POST", "/sites/1/tasks", Some(json!({"type": "explode"})))
        .await;
    assert_eq!(status, 422, "{r}");

    assert_eq!(
        count(&stack).await,
        before,
        "a refused request created something"
    );
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert_eq!(
        (dbs.len(), users.len()),
        (1, 1),
        "only the one installed site has a database: {dbs:?} {users:?}"
    );
    stack.teardown().await;
}
