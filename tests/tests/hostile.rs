//! Hostile input: a seeded corpus of bad requests over every endpoint, each answered with a
//! JSON 4xx that creates nothing and stops no service; token scopes as a matrix; refusals the
//! router makes; rate-limited guessing; any valid domain through a whole life; schedules the
//! code cannot read; restores refused by size; early refusals of what cannot work.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tests::{id, Stack, StackOptions};

/// A small seeded generator (xorshift), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// What a field holds, so that a hostile value is chosen that is invalid for it.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Name,
    Domain,
    Path,
    Email,
    Duration,
    Id,
    Hours,
    Bool,
    Text,
}

fn deep(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

/// Values none of which a field of `kind` accepts.
fn hostile_values(kind: Kind, rng: &mut Rng) -> Vec<Value> {
    let long = "a".repeat(5000);
    let mut v = vec![
        json!(null),
        json!([]),
        json!({}),
        json!([1, 2]),
        json!({"$ne": 1}),
        deep(40),
    ];
    match kind {
        Kind::Name | Kind::Domain | Kind::Email | Kind::Path => v.extend([
            json!(""),
            json!(" "),
            json!("a\u{0000}b"),
            json!("a\nb"),
            json!("../../etc/passwd"),
            json!("é\u{202e}xe.php"),
            json!("$(reboot)"),
            json!("a;rm -rf /"),
            json!("'; DROP TABLE sites; --"),
            json!("%s%s%n"),
            json!(long.clone()),
            json!(12345),
            json!(1e308),
            json!(true),
            json!("🦀🦀"),
            json!("<script>alert(1)</script>"),
        ]),
        Kind::Duration => v.extend([
            json!("é"),
            json!("1é"),
            json!("9223372036854775807w"),
            json!("1000000w"),
            json!(-1),
            json!(0),
            json!(1e308),
            json!("soon"),
            json!(""),
            json!(i64::MAX),
            json!("1.5h"),
        ]),
        Kind::Id => v.extend([
            json!("abc"),
            json!(-1),
            json!(0),
            json!(1.5),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1e308),
            json!(true),
        ]),
        Kind::Hours => v.extend([
            json!(0),
            json!(-1),
            json!(721),
            json!(1e308),
            json!("2"),
            json!(true),
        ]),
        Kind::Bool => v.extend([json!("yes"), json!(1), json!("true")]),
        Kind::Text => v.extend([json!(long), json!("a\u{0007}b"), json!(5), json!(true)]),
    }
    // A few more picked at random from the same pool, in another order.
    let extra: Vec<Value> = (0..3).map(|_| rng.pick(&v).clone()).collect();
    v.extend(extra);
    v
}

/// An endpoint with a valid body and the kinds of its fields.
struct Endpoint {
    method: &'static str,
    path: String,
    body: Value,
    fields: Vec<(&'static str, Kind)>,
}

async fn counts(stack: &Stack) -> Vec<usize> {
    let mut out = Vec::new();
    for path in [
        "/sites",
        "/clients",
        "/platforms",
        "/servers",
        "/tokens",
        "/tasks?limit=1000",
    ] {
        let (_, v) = stack.call("GET", path, None).await;
        out.push(v.as_array().map(Vec::len).unwrap_or(usize::MAX));
    }
    let (_, settings) = stack.call("GET", "/settings", None).await;
    out.push(settings.to_string().len());
    out
}

fn assert_json_4xx(what: &str, status: u16, body: &str) {
    assert!(
        (400..500).contains(&status),
        "{what}: answered {status}: {body}"
    );
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
    assert!(
        v["error"]["code"].is_string()
            && v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
        "{what}: not the error shape: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_corpus_of_hostile_inputs_is_refused_with_json() {
    let mut stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let site = stack.install_site("corpus.acme.example", "acme").await;
    let sid = id(&site);
    let platform = stack.platform_id("example").await;
    let before = counts(&stack).await;
    let mut rng = Rng(0x5eed_1234_abcd_0001);

    let site_body = json!({"domain": "new.acme.example", "client": "acme", "platform": "example",
        "profile": "standard", "language": "en", "db_server": "local"});
    let endpoints = vec![
        Endpoint {
            method: "POST",
            path: "/sites".into(),
            body: site_body.clone(),
            fields: vec![
                ("domain", Kind::Domain),
                ("client", Kind::Name),
                ("platform", Kind::Name),
                ("profile", Kind::Name),
                ("language", Kind::Name),
                ("db_server", Kind::Name),
                ("aliases", Kind::Domain),
            ],
        },
        Endpoint {
            method: "POST",
            path: "/clients".into(),
            body: json!({"name": "newclient", "email": "new@acme.example"}),
            fields: vec![("name", Kind::Name), ("email", Kind::Email)],
        },
        Endpoint {
            method: "POST",
            path: "/servers".into(),
            body: json!({"name": "web9", "kind": "web", "host": "10.0.0.9", "port": 8088}),
            fields: vec![
                ("name", Kind::Name),
                ("kind", Kind::Name),
                ("host", Kind::Name),
                ("port", Kind::Id),
            ],
        },
        Endpoint {
            method: "POST",
            path: "/platforms".into(),
            body: json!({"name": "p9", "server": "local", "root": stack.example_root.to_string_lossy(), "driver": "hooks"}),
            fields: vec![
                ("name", Kind::Name),
                ("server", Kind::Name),
                ("root", Kind::Path),
                ("driver", Kind::Name),
            ],
        },
        Endpoint {
            method: "POST",
            path: format!("/platforms/{platform}/tasks"),
            body: json!({"type": "migrate-sites", "target": "example", "concurrency": 2}),
            fields: vec![
                ("type", Kind::Name),
                ("target", Kind::Name),
                ("concurrency", Kind::Id),
                ("failure_budget", Kind::Id),
                ("db_server", Kind::Name),
            ],
        },
        Endpoint {
            method: "POST",
            path: format!("/sites/{sid}/tasks"),
            body: json!({"type": "backup", "description": "ok"}),
            fields: vec![("type", Kind::Name), ("description", Kind::Text)],
        },
        Endpoint {
            method: "POST",
            path: format!("/sites/{sid}/tasks"),
            body: json!({"type": "migrate", "platform": "example", "domain": "x.acme.example"}),
            fields: vec![
                ("platform", Kind::Name),
                ("domain", Kind::Domain),
                ("db_server", Kind::Name),
            ],
        },
        Endpoint {
            method: "POST",
            path: format!("/sites/{sid}/tasks"),
            body: json!({"type": "backup-delete", "backups": [1]}),
            fields: vec![("backups", Kind::Id)],
        },
        Endpoint {
            method: "PUT",
            path: format!("/sites/{sid}/backup-schedule"),
            body: json!({"schedule": {"interval": "daily", "window": [1, 5], "jitter": "1h"}}),
            fields: vec![("schedule", Kind::Duration)],
        },
        Endpoint {
            method: "PATCH",
            path: "/settings".into(),
            body: json!({"login_link_ttl_hours": 2}),
            fields: vec![
                ("login_link_ttl_hours", Kind::Hours),
                ("require_disable_before_delete", Kind::Bool),
                ("backup_interval_floor", Kind::Duration),
                ("backup_schedule", Kind::Duration),
                ("backup_retention", Kind::Duration),
                ("features", Kind::Bool),
            ],
        },
        Endpoint {
            method: "POST",
            path: "/tokens".into(),
            body: json!({"name": "t9", "client": "acme", "task_types": ["backup"]}),
            fields: vec![
                ("name", Kind::Name),
                ("client", Kind::Name),
                ("task_types", Kind::Name),
            ],
        },
    ];

    // Fields that may be left out (or null): a null there is valid, so it is not sent.
    let optional = [
        "description",
        "db_server",
        "domain",
        "client",
        "host",
        "port",
        "concurrency",
        "failure_budget",
    ];
    let mut cases: Vec<(String, String, String)> = Vec::new();
    for e in &endpoints {
        for (field, kind) in &e.fields {
            for bad in hostile_values(*kind, &mut rng) {
                if bad.is_null() && optional.contains(field) && e.path != "/sites" {
                    continue;
                }
                let mut body = e.body.clone();
                // Some valid values of a kind are left out above; these are never valid:
                let bad = match (*field, &bad) {
                    // A schedule's interval, not the schedule object itself.
                    ("schedule", v) => json!({"interval": v}),
                    ("backup_schedule", v) => json!({"interval": v}),
                    ("backup_retention", v) => {
                        json!({"rules": [{"older_than": v, "keep_one_per": "1d"}]})
                    }
                    ("features", v) => json!({"clone": v}),
                    ("aliases", v) => json!([v]),
                    ("backups", v) => json!([v]),
                    ("task_types", v) => json!([v]),
                    _ => bad,
                };
                body[*field] = bad;
                cases.push((e.method.into(), e.path.clone(), body.to_string()));
            }
        }
        // Whole bodies: not JSON, the wrong shape, unknown fields, nested too deeply, huge.
        for raw in [
            "".to_owned(),
            "{".to_owned(),
            "[]".to_owned(),
            "null".to_owned(),
            "\"str\"".to_owned(),
            "{\"\u{0000}\": 1}".to_owned(),
            json!({"unknown_field": 1}).to_string(),
            deep(200).to_string(),
            format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20)),
            "{\"a\":1}{\"b\":2}".to_owned(),
        ] {
            cases.push((e.method.into(), e.path.clone(), raw));
        }
    }
    // Paths and queries.
    for path in [
        "/sites/abc",
        "/sites/-1",
        "/sites/0",
        "/sites/99999999999999999999999",
        "/sites/1.5",
        "/sites/%00",
        "/sites/%2e%2e%2f",
        "/tasks/1e3",
        "/tasks/999999999",
        "/platforms/x",
        "/sites?limit=abc",
        "/sites?status=zzz",
        "/sites?domain=%ff%fe",
        "/sites?domain=a..b",
        "/tasks?limit=-5x",
        "/tasks?site=abc",
        "/tasks?type=explode",
        "/tasks?status=done",
        "/nope",
        "/sites/1/nope",
    ] {
        cases.push(("GET".into(), path.into(), String::new()));
    }
    for (method, path) in [
        ("PUT", "/sites"),
        ("DELETE", "/settings"),
        ("PATCH", "/sites/1"),
        ("POST", "/tasks"),
        ("DELETE", "/sites/1/tasks"),
        ("TRACE", "/sites"),
    ] {
        cases.push((method.into(), path.into(), String::new()));
    }
    assert!(cases.len() >= 500, "only {} hostile inputs", cases.len());

    for (n, (method, path, body)) in cases.iter().enumerate() {
        let content =
            (!body.is_empty() || method != "GET").then_some(("application/json", body.as_str()));
        let r = stack
            .raw(method, &format!("/api/v1{path}"), content, &[])
            .await;
        assert_json_4xx(
            &format!(
                "case {n}: {method} {path} {}",
                body.chars().take(200).collect::<String>()
            ),
            r.status,
            &r.body,
        );
    }
    assert!(
        stack.exited().is_empty(),
        "services stopped: {:?}",
        stack.exited()
    );
    assert_eq!(stack.raw("GET", "/healthz", None, &[]).await.status, 200);
    assert_eq!(
        counts(&stack).await,
        before,
        "a refused request changed something"
    );
    stack.teardown().await;
}

/// One principal's answer to one request: its status.
async fn status_as(
    stack: &Stack,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> u16 {
    stack.call_as(token, method, path, body).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_do_exactly_what_they_say() {
    let stack = Stack::spawn().await;
    stack.create_client("a").await;
    stack.create_client("b").await;
    let site_a = stack.install_site("site.a.example", "a").await;
    let site_b = stack.install_site("site.b.example", "b").await;
    let (sa, sb) = (id(&site_a), id(&site_b));
    let make = |body: Value| {
        let stack = &stack;
        async move {
            let (status, r) = stack.call("POST", "/tokens", Some(body)).await;
            assert_eq!(status, 201, "{r}");
            (r["token"].as_str().unwrap_or_default().to_owned(), id(&r))
        }
    };
    let (client_a, _) = make(json!({"name": "a", "client": "a"})).await;
    let (client_b, _) = make(json!({"name": "b", "client": "b"})).await;
    let (restricted, _) =
        make(json!({"name": "ra", "client": "a", "task_types": ["backup"]})).await;
    let (restricted_admin, _) = make(json!({"name": "radmin", "task_types": ["verify"]})).await;
    let (revoked, revoked_id) = make(json!({"name": "gone", "client": "a"})).await;
    assert_eq!(
        stack
            .call("DELETE", &format!("/tokens/{revoked_id}"), None)
            .await
            .0,
        200
    );
    let admin = stack.token.clone();
    // A task of each client's site.
    let task_a = id(&stack.run_site_task(sa, json!({"type": "verify"})).await);
    let task_b = id(&stack.run_site_task(sb, json!({"type": "verify"})).await);
    let platform = stack.platform_id("example").await;

    // Reads: everyone but the revoked may read; another client's things are "not found".
    for (token, own_site, other_site, own_task, other_task) in [
        (&client_a, sa, sb, task_a, task_b),
        (&client_b, sb, sa, task_b, task_a),
        (&restricted, sa, sb, task_a, task_b),
    ] {
        for path in [
            format!("/sites/{own_site}"),
            format!("/sites/{own_site}/backups"),
            format!("/sites/{own_site}/backup-schedule"),
            format!("/sites/{own_site}/migrate-targets"),
            format!("/tasks/{own_task}"),
            format!("/tasks/{own_task}/log"),
            "/sites".into(),
            "/tasks".into(),
            "/platforms".into(),
            "/clients".into(),
        ] {
            assert_eq!(
                status_as(&stack, token, "GET", &path, None).await,
                200,
                "{path}"
            );
        }
        for path in [
            format!("/sites/{other_site}"),
            format!("/sites/{other_site}/backups"),
            format!("/sites/{other_site}/backup-schedule"),
            format!("/sites/{other_site}/migrate-targets"),
            format!("/tasks/{other_task}"),
            format!("/tasks/{other_task}/log"),
        ] {
            let (status, theirs) = stack.call_as(token, "GET", &path, None).await;
            let missing = path
                .replace(&other_site.to_string(), "999999")
                .replace(&other_task.to_string(), "999999");
            let (status_missing, nothing) = stack.call_as(token, "GET", &missing, None).await;
            assert_eq!((status, status_missing), (404, 404), "{path}");
            assert_eq!(
                theirs["error"]["code"], nothing["error"]["code"],
                "{path}: another client's answer tells it apart from a missing one"
            );
        }
        // Lists show only the own client's; naming another client or a missing one is alike.
        let (_, theirs) = stack.call_as(token, "GET", "/sites?client=b", None).await;
        let (_, missing) = stack
            .call_as(token, "GET", "/sites?client=nobody", None)
            .await;
        if token != &client_b {
            assert_eq!((theirs.clone(), missing.clone()), (json!([]), json!([])));
        }
        let (_, clients) = stack.call_as(token, "GET", "/clients", None).await;
        assert_eq!(clients.as_array().map(Vec::len), Some(1), "{clients}");
        // A site for another client, or for a missing one: the same refusal.
        let site_for = |client: &str| json!({"domain": "x.example.org", "client": client, "platform": "example", "profile": "standard", "language": "en", "db_server": "local"});
        let (s1, r1) = stack
            .call_as(
                token,
                "POST",
                "/sites",
                Some(site_for(if token == &client_b { "a" } else { "b" })),
            )
            .await;
        let (s2, r2) = stack
            .call_as(token, "POST", "/sites", Some(site_for("nobody")))
            .await;
        assert_eq!(s1, s2, "{r1} {r2}");
        if token != &restricted {
            assert_eq!(r1["error"]["message"], r2["error"]["message"]);
        }
    }
    for path in ["/settings", "/servers"] {
        for token in [&client_a, &restricted, &admin] {
            assert_eq!(
                status_as(&stack, token, "GET", path, None).await,
                200,
                "{path}"
            );
        }
    }

    // Admin writes need an admin token that no scope list narrows.
    let admin_writes: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/clients".into(),
            json!({"name": "c", "email": "c@example.org"}),
        ),
        (
            "POST",
            "/servers".into(),
            json!({"name": "web7", "kind": "web"}),
        ),
        (
            "PATCH",
            "/servers/1".into(),
            json!({"platform_dirs": ["/srv/platforms"]}),
        ),
        (
            "POST",
            "/platforms".into(),
            json!({"name": "p", "server": "local", "root": "/srv/platforms/p", "driver": "hooks"}),
        ),
        (
            "POST",
            format!("/platforms/{platform}/tasks"),
            json!({"type": "lock"}),
        ),
        (
            "PATCH",
            "/settings".into(),
            json!({"login_link_ttl_hours": 3}),
        ),
        ("POST", "/tokens".into(), json!({"name": "x"})),
        ("GET", "/tokens".into(), Value::Null),
        ("DELETE", "/tokens/1".into(), Value::Null),
        ("POST", "/tasks".into(), json!({"type": "purge-tasks"})),
        ("GET", "/dead-letters".into(), Value::Null),
    ];
    for (method, path, body) in &admin_writes {
        let body = (!body.is_null()).then(|| body.clone());
        for token in [&client_a, &restricted, &restricted_admin] {
            assert_eq!(
                status_as(&stack, token, method, path, body.clone()).await,
                403,
                "{method} {path}"
            );
        }
        assert_eq!(
            status_as(&stack, &revoked, method, path, body.clone()).await,
            401
        );
    }

    // Site writes follow the token's scopes.
    let (s, r) = stack
        .call_as(
            &restricted,
            "POST",
            &format!("/sites/{sa}/tasks"),
            Some(json!({"type": "backup"})),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let backup_task = id(&r["task"]);
    stack.wait_task(backup_task, Duration::from_secs(60)).await;
    for (body, why) in [
        (json!({"type": "verify"}), "verify"),
        (json!({"type": "disable"}), "disable"),
        (json!({"type": "login-reset"}), "login-reset"),
    ] {
        let (s, r) = stack
            .call_as(
                &restricted,
                "POST",
                &format!("/sites/{sa}/tasks"),
                Some(body),
            )
            .await;
        assert_eq!(s, 403, "{why}: {r}");
    }
    let site_body = json!({"domain": "r.a.example", "client": "a", "platform": "example", "profile": "standard", "language": "en", "db_server": "local"});
    assert_eq!(
        status_as(
            &stack,
            &restricted,
            "POST",
            "/sites",
            Some(site_body.clone())
        )
        .await,
        403
    );
    assert_eq!(
        status_as(
            &stack,
            &restricted,
            "PUT",
            &format!("/sites/{sa}/backup-schedule"),
            Some(json!({"schedule": "off"}))
        )
        .await,
        403
    );
    assert_eq!(
        status_as(
            &stack,
            &restricted,
            "POST",
            &format!("/tasks/{task_a}/retry"),
            None
        )
        .await,
        403
    );
    // A client's token: its own sites only, and schedules within what clients are allowed.
    assert_eq!(
        status_as(
            &stack,
            &client_a,
            "POST",
            &format!("/sites/{sb}/tasks"),
            Some(json!({"type": "verify"}))
        )
        .await,
        404
    );
    let (s, r) = stack
        .call_as(
            &client_a,
            "PUT",
            &format!("/sites/{sa}/backup-schedule"),
            Some(json!({"schedule": {"interval": "30m"}})),
        )
        .await;
    assert_eq!(
        s, 422,
        "a client may not back up more often than hourly: {r}"
    );
    assert!(
        r.to_string().contains("client_backup_interval_floor"),
        "{r}"
    );
    assert_eq!(
        status_as(
            &stack,
            &client_a,
            "PUT",
            &format!("/sites/{sa}/backup-schedule"),
            Some(json!({"schedule": {"interval": "daily"}}))
        )
        .await,
        200
    );
    // The revoked token: nothing at all.
    for path in ["/sites", &format!("/sites/{sa}"), "/tasks", "/platforms"] {
        assert_eq!(status_as(&stack, &revoked, "GET", path, None).await, 401);
    }
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_the_router_makes_are_json_too() {
    let stack = Stack::spawn().await;
    /// (method, path, body with its content type, status, what the message says)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/api/v1/sites/abc", None, 400, "not an id"),
        ("GET", "/api/v1/tasks?limit=abc", None, 400, "limit"),
        ("GET", "/api/v1/tasks?bogus=1", None, 400, "bogus"),
        ("GET", "/api/v1/nothing-here", None, 404, "no such endpoint"),
        ("GET", "/elsewhere", None, 404, "/api/v1"),
        ("DELETE", "/api/v1/settings", None, 405, "allowed"),
        ("POST", "/api/v1/clients", Some(("application/json", "x".repeat(2 << 20))), 413, "bytes"),
        ("POST", "/api/v1/clients", Some(("text/plain", "{}".into())), 415, "Content-Type"),
        ("POST", "/api/v1/clients", Some(("application/x-www-form-urlencoded", "name=x".into())), 415, "JSON"),
        ("POST", "/api/v1/clients", Some(("application/json", deep(100).to_string())), 422, "32 levels"),
        ("POST", "/api/v1/clients", Some(("application/json", "{\"name\": 5, \"email\": \"a@b.example\"}".into())), 400, "name"),
        ("POST", "/api/v1/sites", Some(("application/json", json!({"domain": "d.example.org", "client": "exampel", "platform": "example", "profile": "standard", "language": "en", "db_server": "local"}).to_string())), 422, "'exampel'"),
    ];
    for (method, path, body, want, says) in cases {
        let r = stack
            .raw(
                method,
                path,
                body.as_ref().map(|(t, b)| (*t, b.as_str())),
                &[],
            )
            .await;
        assert_eq!(r.status, want, "{method} {path}: {}", r.body);
        assert_json_4xx(&format!("{method} {path}"), r.status, &r.body);
        assert!(
            r.body.contains(says),
            "{method} {path}: {} should say {says:?}",
            r.body
        );
        assert!(!r.body.contains("Name(\""), "Rust's debug form: {}", r.body);
    }
    // A platform task's db_server: only for migrate-sites, and only a db server that exists.
    let platform = stack.platform_id("example").await;
    let platform_tasks = format!("/platforms/{platform}/tasks");
    stack.fixture_platform("other", |m| m).await;
    for (body, says) in [
        (
            json!({"type": "verify", "db_server": "local"}),
            "are for migrate-sites",
        ),
        (
            json!({"type": "migrate-sites", "target": "other", "db_server": "nowhere"}),
            "nowhere",
        ),
        (
            json!({"type": "migrate-sites", "target": "other", "db_server": 987654}),
            "no db server",
        ),
    ] {
        let (status, r) = stack
            .call("POST", &platform_tasks, Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}: {r}");
        assert!(
            r.to_string().contains(says),
            "{body}: {r} should say {says:?}"
        );
    }
    // A body `curl -d` sends as a form but that is JSON is read as JSON.
    let r = stack
        .raw(
            "POST",
            "/api/v1/clients",
            Some((
                "application/x-www-form-urlencoded",
                json!({"name": "curl", "email": "c@curl.example"})
                    .to_string()
                    .as_str(),
            )),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ready = stack.raw("GET", "/readyz", None, &[]).await;
    let ready: Value = serde_json::from_str(&ready.body).expect("readyz JSON");
    assert_eq!(
        (&ready["database"], &ready["broker"]),
        (&json!("ok"), &json!("ok")),
        "{ready}"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_tokens_is_slow_and_does_not_slow_the_good() {
    let stack = Stack::spawn_with(StackOptions {
        env: vec![(
            "gateway",
            "HOSTING_AUTH_FAILURES_PER_MINUTE".into(),
            "10".into(),
        )],
        ..Default::default()
    })
    .await;
    // The admin's token authenticated before the guessing starts.
    assert_eq!(stack.call("GET", "/sites", None).await.0, 200);
    let mut answers = Vec::new();
    for n in 0..20 {
        let r = stack
            .raw(
                "GET",
                "/api/v1/sites",
                None,
                &[("Authorization", &format!("Bearer hst_guess{n}"))],
            )
            .await;
        answers.push((r.status, r.header("retry-after").map(str::to_owned)));
        assert_json_4xx("a guess", r.status, &r.body);
    }
    assert!(answers[..10].iter().all(|(s, _)| *s == 401), "{answers:?}");
    assert!(
        answers[10..].iter().all(|(s, retry)| *s == 429
            && retry
                .as_deref()
                .is_some_and(|r| r.parse::<u64>().is_ok_and(|r| r >= 1))),
        "{answers:?}"
    );
    // The good token is not held up, while the guesses stay refused.
    let started = Instant::now();
    assert_eq!(stack.call("GET", "/sites", None).await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_valid_domain_works_through_a_whole_life() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    // 253 characters, the most a domain may have; and one past nginx's default hash bucket.
    let long = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(long.len(), 253);
    let medium = format!("{}.acme.example", "m".repeat(50));
    for domain in [medium.as_str(), long.as_str()] {
        let site = stack.install_site(domain, "acme").await;
        let sid = id(&site);
        let page = stack.page(domain, "/").await;
        assert_eq!(page.status, 200, "{domain}: {}", page.body);
        for task in [
            json!({"type": "verify"}),
            json!({"type": "backup"}),
            json!({"type": "login-reset"}),
        ] {
            let done = stack.run_site_task(sid, task.clone()).await;
            stack.assert_success(&done).await;
        }
        let backup = stack.backups(sid).await[0]["id"].clone();
        for task in [
            json!({"type": "restore", "backup": backup}),
            json!({"type": "verify-backup", "backup": backup}),
            json!({"type": "disable"}),
            json!({"type": "enable"}),
            json!({"type": "disable"}),
            json!({"type": "delete"}),
        ] {
            let done = stack.run_site_task(sid, task.clone()).await;
            stack.assert_success(&done).await;
        }
        assert_eq!(stack.site(sid).await["status"], "deleted");
        let done = stack
            .run_site_task(sid, json!({"type": "delete", "force": true}))
            .await;
        stack.assert_success(&done).await;
    }
    // nginx holds the names without a warning about its server-name hash.
    let errors =
        std::fs::read_to_string(stack.dir.join("webconf/logs/error.log")).unwrap_or_default();
    assert!(!errors.contains("server_names_hash"), "{errors}");
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_the_code_cannot_read_are_marked_and_skipped() {
    let mut stack = Stack::spawn_with(StackOptions {
        env: vec![(
            "backupper",
            "HOSTING_SCHEDULER_TICK_SECS".into(),
            "0.3".into(),
        )],
        ..Default::default()
    })
    .await;
    stack.create_client("acme").await;
    let a = id(&stack.install_site("a.acme.example", "acme").await);
    let b = id(&stack.install_site("b.acme.example", "acme").await);
    // Through the API, the durations that crashed services before: refused with what to fix.
    for interval in [
        json!("é"),
        json!("9223372036854775807w"),
        json!("1000000w"),
        json!(1),
    ] {
        let (status, r) = stack
            .call(
                "PUT",
                &format!("/sites/{a}/backup-schedule"),
                Some(json!({"schedule": {"interval": interval, "jitter": 1}})),
            )
            .await;
        assert_eq!(status, 422, "{interval}: {r}");
        let (status, r) = stack
            .call(
                "PATCH",
                "/settings",
                Some(json!({"backup_schedule": {"interval": interval}})),
            )
            .await;
        assert_eq!(status, 422, "{interval}: {r}");
    }
    // Stored behind the API's back (an older version, a hand edit): marked, skipped, and the
    // other site's schedule goes on.
    stack
        .state_exec(&format!(
            "INSERT INTO backup_schedules (site_id, overridden, schedule) VALUES ({a}, true, '{{\"interval\": \"1000000w\", \"jitter\": 1}}')
             ON CONFLICT (site_id) DO UPDATE SET overridden = true, schedule = EXCLUDED.schedule"
        ))
        .await;
    stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"backup_interval_floor": 1})),
        )
        .await;
    let (status, r) = stack
        .call(
            "PUT",
            &format!("/sites/{b}/backup-schedule"),
            Some(json!({"schedule": {"interval": 2, "jitter": 1}})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, schedule) = stack
            .call("GET", &format!("/sites/{a}/backup-schedule"), None)
            .await;
        let b_backups = stack.backups(b).await.as_array().map(Vec::len).unwrap_or(0);
        if schedule["invalid"].is_string() && b_backups >= 1 {
            assert!(
                schedule["invalid"].to_string().contains("ten years"),
                "{schedule}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a: {schedule}, b has {b_backups} backups"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stack.exited().is_empty(), "{:?}", stack.exited());
    // Setting it again clears the mark.
    let (status, _) = stack
        .call(
            "PUT",
            &format!("/sites/{a}/backup-schedule"),
            Some(json!({"schedule": "off"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, schedule) = stack
        .call("GET", &format!("/sites/{a}/backup-schedule"), None)
        .await;
    assert!(schedule["invalid"].is_null(), "{schedule}");
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_is_refused_by_size_before_it_writes() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    const DOMAIN: &str = "bomb.acme.example";
    let site = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&site);
    let done = stack.run_site_task(sid, json!({"type": "backup"})).await;
    stack.assert_success(&done).await;
    let record = stack.backups(sid).await[0].clone();
    let archive = stack
        .backup_dir()
        .join(record["key"].as_str().unwrap_or_default());
    // The same archive with a 2 GiB file of zeros added to the site (a few MB compressed),
    // checksum and size recorded as an attacker with the store and the database would.
    let work = stack.dir.join("bomb");
    std::fs::create_dir_all(&work).expect("work");
    let script = format!(
        "set -e; zstd -d -q -c '{a}' | tar -x -C '{w}'; truncate -s 2G '{w}/site/files/zeros.bin'; tar -C '{w}' -c site database hosting-backup.json | zstd -q -1 -T2 -o '{w}/bomb.tar.zst'",
        a = archive.display(),
        w = work.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    assert!(out.status.success(), "{out:?}");
    let bomb = work.join("bomb.tar.zst");
    let bytes = std::fs::read(&bomb).expect("bomb");
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let key = bomb
        .strip_prefix(stack.backup_dir().parent().unwrap_or(&stack.dir))
        .map(|k| format!("../{}", k.display()))
        .unwrap_or_default();
    let manifest = stack
        .state_query(&format!(
            "SELECT manifest::text FROM backups WHERE id = {}",
            record["id"]
        ))
        .await;
    stack
        .state_exec(&format!(
            "INSERT INTO backups (site_id, key, size, checksum, description, manifest) VALUES ({sid}, '{key}', {}, '{sha}', 'bomb', '{}')",
            bytes.len(),
            manifest[0].replace('\'', "''")
        ))
        .await;
    let bomb_id = stack
        .backups(sid)
        .await
        .as_array()
        .and_then(|l| l.iter().find(|b| b["description"] == "bomb").map(id))
        .expect("the bomb's record");
    let started = Instant::now();
    let done = stack
        .run_site_task(sid, json!({"type": "verify-backup", "backup": bomb_id}))
        .await;
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        done["status"] == "error" && error.contains("what its backup record says it holds"),
        "{done}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let page = stack.page(DOMAIN, "/").await;
    assert_eq!(page.status, 200);
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_work_is_refused_early() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    let site = stack.install_site("early.acme.example", "acme").await;
    let sid = id(&site);
    let missing = stack.dir.join("platforms/not-there");
    let cases = vec![
        (
            "/platforms",
            json!({"name": "etc", "server": "local", "root": "/etc", "driver": "hooks"}),
            422,
            "system directory",
        ),
        (
            "/platforms",
            json!({"name": "proc", "server": "local", "root": "/proc/1", "driver": "hooks"}),
            422,
            "system directory",
        ),
        (
            "/platforms",
            json!({"name": "store", "server": "local", "root": stack.backup_dir().to_string_lossy(), "driver": "hooks"}),
            422,
            "control plane",
        ),
        (
            "/platforms",
            json!({"name": "gone", "server": "local", "root": missing.to_string_lossy(), "driver": "hooks"}),
            422,
            "does not exist",
        ),
        (
            "/platforms",
            json!({"name": "far", "server": "local", "root": "/opt/elsewhere/x", "driver": "hooks"}),
            422,
            "platform directory",
        ),
        (
            "/servers",
            json!({"name": "db9", "kind": "db", "host": "-h"}),
            422,
            "host",
        ),
        (
            "/servers",
            json!({"name": "db9", "kind": "db", "host": "--skip-ssl"}),
            422,
            "host",
        ),
        (
            "/servers",
            json!({"name": "web9", "kind": "web", "platform_dirs": ["/etc"]}),
            422,
            "system directory",
        ),
        (
            "/clients",
            json!({"name": "x", "email": "a<b>@example.org"}),
            422,
            "e-mail",
        ),
        (
            "/clients",
            json!({"name": "x", "email": "a,b@example.org"}),
            422,
            "e-mail",
        ),
    ];
    for (path, body, want, says) in cases {
        let (status, r) = stack.call("POST", path, Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {r}");
        assert!(
            r.to_string().contains(says),
            "{body}: {r} should say {says:?}"
        );
    }
    let aliases: Vec<String> = (0..101).map(|n| format!("a{n}.acme.example")).collect();
    let (status, r) = stack
        .call("POST", "/sites", Some(json!({"domain": "many.acme.example", "client": "acme", "platform": "example", "profile": "standard", "language": "en", "db_server": "local", "aliases": aliases})))
        .await;
    assert_eq!(status, 422, "{r}");
    assert!(r.to_string().contains("100 aliases"), "{r}");
    let (status, r) = stack
        .call(
            "PATCH",
            "/settings",
            Some(json!({"login_link_ttl_hours": 1e308})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    let (status, r) = stack
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "p", "task_types": ["platform-verify"]})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    let (status, r) = stack
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "p", "task_types": ["backup", "backup"]})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    // A platform with sites is not deleted; a restore without backups says why.
    let platform = stack.platform_id("example").await;
    let (status, r) = stack
        .call(
            "POST",
            &format!("/platforms/{platform}/tasks"),
            Some(json!({"type": "delete"})),
        )
        .await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("early.acme.example"), "{r}");
    let (status, r) = stack
        .post_site_task(sid, json!({"type": "restore", "backup": 1}))
        .await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("no backups"), "{r}");
    // A forced delete of an enabled, healthy site follows require_disable_before_delete.
    let (status, r) = stack
        .post_site_task(sid, json!({"type": "delete", "force": true}))
        .await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("disable it first"), "{r}");
    assert_eq!(stack.page("early.acme.example", "/").await.status, 200);
    stack.teardown().await;
}
