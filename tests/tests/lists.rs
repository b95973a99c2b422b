//! Paged lists and the retention of finished tasks. The sites and tasks are written into the
//! stack's state database directly (hundreds of installs would take minutes and test nothing
//! more here); everything is then read and purged through the API.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tests::{http, Stack, StackOptions};

/// GETs an API path, with the paging headers.
async fn get(stack: &Stack, path: &str) -> (u16, Vec<Value>, Option<i64>, Option<String>) {
    let auth = format!("Bearer {}", stack.token);
    let r = http::request(
        "GET",
        &format!("{}{path}", stack.api),
        None,
        &[("Authorization", &auth)],
    )
    .await
    .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    let items = serde_json::from_str(&r.body).unwrap_or_default();
    let total = r.header("x-total-count").and_then(|t| t.parse().ok());
    let next = r.header("link").map(|l| {
        assert!(l.ends_with("; rel=\"next\""), "{l}");
        l.trim_start_matches('<')
            .split('>')
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    (r.status, items, total, next)
}

/// Follows the next links from `path` and returns every id seen, in order.
async fn walk(stack: &Stack, path: &str) -> (Vec<i64>, i64, usize) {
    let mut ids = Vec::new();
    let mut next = Some(path.to_owned());
    let mut pages = 0;
    let mut total = -1;
    while let Some(path) = next {
        let (status, items, t, n) = get(stack, &path).await;
        assert_eq!(status, 200, "{path}");
        total = t.expect("X-Total-Count");
        ids.extend(items.iter().filter_map(|i| i["id"].as_i64()));
        next = n;
        pages += 1;
        assert!(pages < 100, "the pages do not end");
    }
    (ids, total, pages)
}

async fn fill(stack: &Stack, sites: i64) {
    let platform = stack
        .state_query("SELECT id::text FROM platforms WHERE name = 'example'")
        .await;
    let db = stack
        .state_query("SELECT id::text FROM servers WHERE kind = 'db' ORDER BY id LIMIT 1")
        .await;
    stack
        .state_exec(&format!(
            "INSERT INTO sites (domain, client_id, platform_id, profile, language, db_server_id,
                                db_name, db_user, system_user, status)
               SELECT 'p' || g || '.pages.example', (SELECT id FROM clients WHERE name = 'pager'),
                      {}, 'standard', 'en', {}, 'pg_' || g, 'pg_' || g, 'pg_' || g,
                      CASE WHEN g % 4 = 0 THEN 'disabled' ELSE 'enabled' END
               FROM generate_series(1, {sites}) g;
             INSERT INTO tasks (type, site_id, status, requested_by, created_at, started_at, finished_at)
               SELECT 'verify', s.id, 'success', 'test', now() - make_interval(days => t * 30),
                      now() - make_interval(days => t * 30), now() - make_interval(days => t * 30)
               FROM sites s CROSS JOIN generate_series(0, 4) t WHERE s.domain LIKE '%.pages.example';",
            platform[0], db[0]
        ))
        .await;
}

#[tokio::test]
async fn every_list_pages_with_a_cursor_a_total_and_a_next_link() {
    let stack = Stack::spawn().await;
    stack.create_client("pager").await;
    fill(&stack, 250).await;
    let ours: BTreeSet<i64> = stack
        .state_query("SELECT id::text FROM sites WHERE domain LIKE '%.pages.example'")
        .await
        .iter()
        .filter_map(|i| i.parse().ok())
        .collect();

    // The default page is 100; following next links gives every site once, in order.
    let (status, first, total, next) = get(&stack, "/api/v1/sites").await;
    assert_eq!((status, first.len(), total), (200, 100, Some(250)));
    assert!(next.is_some());
    let (ids, total, pages) = walk(&stack, "/api/v1/sites?limit=60").await;
    assert_eq!((total, pages), (250, 5));
    assert_eq!(ids.len(), 250);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "not in id order");
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), ours);

    // A filter is kept on every page, and the total counts what it matches.
    let (ids, total, _) = walk(&stack, "/api/v1/sites?status=disabled&limit=20").await;
    assert_eq!((ids.len(), total), (62, 62));
    let (ids, total, _) = walk(&stack, "/api/v1/sites?client=pager&search=7&limit=10").await;
    let expected = (1..=250)
        .filter(|g: &i32| g.to_string().contains('7'))
        .count();
    assert_eq!((ids.len(), total), (expected, expected as i64));
    let (_, one, total, next) = get(&stack, "/api/v1/sites?domain=p42.pages.example").await;
    assert_eq!((one.len(), total, next), (1, Some(1), None));
    assert_eq!(one[0]["domain"], "p42.pages.example");
    // LIKE's wildcards in a search are plain characters.
    let (_, none, total, _) = get(&stack, "/api/v1/sites?search=%25_").await;
    assert_eq!((none.len(), total), (0, Some(0)));

    // Tasks: newest first, the cursor is `before`.
    let (ids, total, _) = walk(&stack, "/api/v1/tasks?status=success&limit=300").await;
    assert_eq!(ids.len() as i64, total);
    assert!(ids.len() >= 1250);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "not newest first");
    let site = *ours.iter().next().unwrap();
    let (ids, total, _) = walk(&stack, &format!("/api/v1/tasks?site={site}&limit=2")).await;
    assert_eq!((ids.len(), total), (5, 5));

    // The short lists page the same way.
    for path in [
        "/api/v1/clients",
        "/api/v1/servers",
        "/api/v1/platforms",
        "/api/v1/tokens",
    ] {
        let (all, total, _) = walk(&stack, &format!("{path}?limit=1")).await;
        assert_eq!(all.len() as i64, total, "{path}");
        assert!(total >= 1, "{path}");
    }

    // Page sizes out of bounds are refused, naming the bound.
    for bad in ["limit=0", "limit=1001", "limit=-3"] {
        for path in ["/sites", "/tasks", "/clients", "/dead-letters"] {
            let (status, body) = stack.call("GET", &format!("{path}?{bad}"), None).await;
            assert_eq!(status, 422, "{path}?{bad}: {body}");
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(message.contains("1000"), "{body}");
        }
    }
    let long = "x".repeat(300);
    let (status, body) = stack
        .call("GET", &format!("/sites?search={long}"), None)
        .await;
    assert_eq!(status, 422, "{body}");
    // A NUL byte (PostgreSQL cannot hold one in text) is refused, not a 500; in a name
    // filter too.
    for query in [
        "search=a%00b",
        "client=a%00b",
        "platform=%00",
        "domain=a%00.example",
    ] {
        let (status, body) = stack.call("GET", &format!("/sites?{query}"), None).await;
        assert!(status == 422 || status == 404, "{query}: {status} {body}");
    }
    stack.teardown().await;
}

#[tokio::test]
async fn finished_tasks_older_than_the_retention_are_purged_by_a_task() {
    let stack = Stack::spawn().await;
    stack.create_client("pager").await;
    fill(&stack, 20).await;
    // A backup made by an old task keeps its record when the task goes.
    stack
        .state_exec(
            "INSERT INTO task_log (task_id, level, message)
               SELECT id, 'info', 'an old line' FROM tasks WHERE requested_by = 'test';
             INSERT INTO backups (site_id, task_id, key, size, checksum, description)
               SELECT site_id, id, 'old/backup.tar.zst', 1, 'x', 'old'
               FROM tasks WHERE requested_by = 'test' AND finished_at < now() - interval '100 days' LIMIT 1;",
        )
        .await;
    let (status, body) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"task_retention_days": 0})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"task_retention_days": 45})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack
        .call("POST", "/tasks", Some(json!({"type": "noop"})))
        .await;
    assert_eq!(
        status, 422,
        "the bench's task is refused outside the bench: {body}"
    );
    let (status, task) = stack
        .call("POST", "/tasks", Some(json!({"type": "purge-tasks"})))
        .await;
    assert_eq!(status, 202, "{task}");
    let done = stack
        .wait_task(task["id"].as_i64().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "success", "{done}");
    // Of each site's five tasks (0, 30, 60, 90, 120 days old), two are within 45 days.
    assert_eq!(done["result"]["removed"], 60, "{done}");
    let left = stack
        .state_query("SELECT count(*)::text FROM tasks WHERE requested_by = 'test'")
        .await;
    assert_eq!(left, vec!["40"]);
    let old_logs = stack
        .state_query("SELECT count(*)::text FROM task_log WHERE message = 'an old line'")
        .await;
    assert_eq!(old_logs, vec!["40"]);
    let backup = stack
        .state_query(
            "SELECT coalesce(task_id::text, 'none') FROM backups WHERE description = 'old'",
        )
        .await;
    assert_eq!(backup, vec!["none"]);
    // A client token cannot start it.
    let (_, client_token) = stack
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "pager-token", "client": "pager"})),
        )
        .await;
    let (status, _) = stack
        .call_as(
            client_token["token"].as_str().unwrap_or(""),
            "POST",
            "/tasks",
            Some(json!({"type": "purge-tasks"})),
        )
        .await;
    assert_eq!(status, 403);
    stack.teardown().await;
}

/// The statements the gateway ran for one request, from its log (sqlx logs each statement
/// inside the request's span), the token's lookup aside: the gateway keeps a token's
/// principal for a second, so whether a request looks it up depends on the clock.
async fn statements_for(stack: &Stack, path: &str) -> usize {
    let log = stack.dir.join("logs/gateway.log");
    let count = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("sqlx::query") && l.contains("http{"))
            .filter(|l| !l.contains("api_tokens"))
            .count()
    };
    let before = count();
    let (status, _, _, _) = get(stack, path).await;
    assert_eq!(status, 200, "{path}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    count() - before
}

#[tokio::test]
async fn a_page_costs_the_same_queries_whatever_its_length() {
    let stack = Stack::spawn_with(StackOptions {
        env: vec![(
            "gateway",
            "RUST_LOG".into(),
            "info,sqlx::query=debug,lapin=warn".into(),
        )],
        ..Default::default()
    })
    .await;
    stack.create_client("pager").await;
    fill(&stack, 250).await;
    // Backups and an open delete for some of them: what available_tasks depends on.
    stack
        .state_exec(
            "INSERT INTO backups (site_id, key, size, checksum, description)
               SELECT id, 'k' || id, 1, 'x', 'a backup' FROM sites WHERE id % 3 = 0;",
        )
        .await;
    let mut costs = Vec::new();
    for limit in [1, 10, 100, 250] {
        costs.push(statements_for(&stack, &format!("/api/v1/sites?limit={limit}")).await);
    }
    eprintln!("statements for pages of 1, 10, 100, 250 sites: {costs:?}");
    assert!(costs[0] > 0, "no statement seen in the log: {costs:?}");
    assert!(costs.iter().all(|c| *c == costs[0]), "{costs:?}");
    assert!(costs[0] <= 10, "{costs:?}");
    let one = statements_for(&stack, "/api/v1/sites/1").await;
    assert!(one <= 10, "GET /sites/1 ran {one} statements");
    let mut task_costs = Vec::new();
    for limit in [1, 100, 1000] {
        task_costs.push(statements_for(&stack, &format!("/api/v1/tasks?limit={limit}")).await);
    }
    assert!(
        task_costs.iter().all(|c| *c == task_costs[0]),
        "{task_costs:?}"
    );
    stack.teardown().await;
}

#[tokio::test]
async fn the_backupper_queues_the_retention_purge_when_tasks_are_old_enough() {
    let stack = Stack::spawn_with(StackOptions {
        env: vec![(
            "backupper",
            "HOSTING_SCHEDULER_TICK_SECS".into(),
            "1".into(),
        )],
        ..Default::default()
    })
    .await;
    stack.create_client("pager").await;
    fill(&stack, 3).await;
    // The default retention is 90 days: of each site's tasks (0, 30, 60, 90 and 120 days old),
    // the last two go. One purge is queued, and no second one while it is recent.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let purge = loop {
        let done = stack
            .state_query(
                "SELECT id::text FROM tasks WHERE type = 'purge-tasks' AND status = 'success'",
            )
            .await;
        if let Some(id) = done.first() {
            break id.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no purge-tasks task ran within a minute"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (_, task) = stack.call("GET", &format!("/tasks/{purge}"), None).await;
    assert_eq!(task["result"]["removed"], 6, "{task}");
    assert_eq!(task["requested_by"], "retention", "{task}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let purges = stack
        .state_query("SELECT count(*)::text FROM tasks WHERE type = 'purge-tasks'")
        .await;
    assert_eq!(purges, vec!["1"], "a purge per tick");
    let left = stack
        .state_query("SELECT count(*)::text FROM tasks WHERE requested_by = 'test'")
        .await;
    assert_eq!(left, vec!["9"]);
    stack.teardown().await;
}
