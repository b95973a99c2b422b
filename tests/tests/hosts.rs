//! The test topology of real hosts: the control plane on the machine, and `web2` and `db2`,
//! each in a network namespace of its own with its own address, its own data root that no
//! other host's processes see, and its own nginx and php-fpm (web2) or MariaDB (db2), reached
//! by their agents under broker users of their own.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::hosts::{Host, MariaDb, Network, HOST_MARIADB_SOCKET, HOST_ROOT};
use tests::{id, password_from_settings, Stack, StackOptions};

/// Registers a server; answers it with its agent's environment.
async fn register(stack: &Stack, body: Value) -> (Value, Vec<(String, String)>) {
    let (status, server) = stack.call("POST", "/servers", Some(body)).await;
    assert_eq!(status, 201, "{server}");
    let env = server["agent_credentials"]["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    (server, env)
}

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
    let mut net = Network::create().expect("the test network");
    // The broker listens on loopback only, as a control plane's would behind its firewall;
    // the hosts reach it at the bridge's address.
    net.forward(5672, "127.0.0.1:5672".parse().expect("an address"))
        .await
        .expect("the broker forwarded");
    let options = StackOptions {
        env: vec![
            (
                "gateway",
                "HOSTING_BROKER_ADMIN_URL".into(),
                tests::BROKER_ADMIN_URL.into(),
            ),
            (
                "gateway",
                "HOSTING_AGENT_AMQP_URL".into(),
                format!("amqp://{}:5672/%2f", net.gateway),
            ),
            ("*", "HOSTING_HEARTBEAT_SECS".into(), "1".into()),
        ],
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;
    let web2 = net.add_host("web2", &stack.dir).expect("web2");
    let db2 = net.add_host("db2", &stack.dir).expect("db2");
    let mariadb = MariaDb::start(&db2).await.expect("db2's own MariaDB");

    let (web2_server, web2_env) = register(
        &stack,
        json!({"name": "web2", "kind": "web", "host": web2.address.to_string(), "port": 8088}),
    )
    .await;
    let (db2_server, db2_env) = register(
        &stack,
        json!({"name": "db2", "kind": "db", "host": db2.address.to_string(), "port": 3306}),
    )
    .await;
    assert!(
        web2_env
            .iter()
            .any(|(k, v)| k == "HOSTING_AMQP_URL" && v.contains(&net.gateway.to_string())),
        "{web2_env:?}"
    );
    start_agent(
        &mut stack,
        &web2,
        "webconf-web2",
        "webconf",
        &web2_env,
        &[
            ("HOSTING_WEBCONF_DIR", format!("{HOST_ROOT}/webconf")),
            ("HOSTING_HTTP_LISTEN", format!("{}:8088", web2.address)),
        ],
    );
    start_agent(
        &mut stack,
        &db2,
        "dbprov-db2",
        "dbprov",
        &db2_env,
        &[
            (
                "HOSTING_MYSQL_ADMIN_URL",
                format!("mysql://root@localhost/?socket={HOST_MARIADB_SOCKET}"),
            ),
            ("HOSTING_DBPROV_KEY_FILE", format!("{HOST_ROOT}/dbprov.key")),
        ],
    );
    stack
        .wait_server(id(&web2_server), |v| v["agent"]["state"] == "connected")
        .await;
    stack
        .wait_server(id(&db2_server), |v| v["agent"]["state"] == "connected")
        .await;

    // Each host's verify asks its own agent, which answers for its own software.
    let web_log = stack.verify_server(id(&web2_server)).await;
    assert!(web_log.contains("nginx: nginx version"), "{web_log}");
    assert!(web_log.contains("php_pools: 8"), "{web_log}");
    let db_log = stack.verify_server(id(&db2_server)).await;
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
    let machine = sqlx::MySqlPool::connect(tests::MYSQL_ADMIN_URL)
        .await
        .expect("the machine's MariaDB");
    let here: Option<String> = sqlx::query_scalar(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(&db_name)
    .fetch_optional(&machine)
    .await
    .expect("a query");
    assert_eq!(
        here, None,
        "the site's database is on the control plane's MariaDB too"
    );
    machine.close().await;

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

    stack.teardown().await;
    drop(mariadb);
    drop(net);
}

fn start_agent(
    stack: &mut Stack,
    host: &Host,
    name: &'static str,
    bin: &'static str,
    credentials: &[(String, String)],
    extra: &[(&str, String)],
) {
    let env: Vec<(&str, &str)> = credentials
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .collect();
    stack
        .start_on(host, name, bin, &env)
        .unwrap_or_else(|e| panic!("{bin} on {}: {e:#}", host.name));
}
